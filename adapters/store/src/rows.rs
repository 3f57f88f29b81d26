//! Row structs and their conversion to and from domain types. Values read back were validated
//! before they were written, so they are rebuilt with `from_stored` instead of being re-parsed.

use crate::{
    error::StoreError,
    schema::{customers, interactions},
};
use chrono::{DateTime, NaiveDateTime, SubsecRound as _, Utc};
use crm_domain::{CountryCode, Customer, Email, Interaction, Language, Phone, Tag, TimeZone};
use diesel::prelude::*;

/// Timestamps are stored with microsecond precision (PostgreSQL's); truncate before writing so
/// that what we return equals what a later read returns.
pub(crate) fn to_db_time(at: DateTime<Utc>) -> NaiveDateTime {
    at.trunc_subsecs(6).naive_utc()
}

pub(crate) fn from_db_time(at: impl Into<NaiveDateTime>) -> DateTime<Utc> {
    at.into().and_utc()
}

/// A timestamp column of the rows that imports write by the thousand. It is stored exactly as
/// diesel stores a `NaiveDateTime` (on SQLite the text `%F %T%.f`, which queries compare as
/// text), but written on SQLite without parsing that format string on every bind: chrono's
/// formatter was a tenth of the import writer's time.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Timestamp)]
pub(crate) struct DbTime(pub(crate) NaiveDateTime);

impl From<NaiveDateTime> for DbTime {
    fn from(at: NaiveDateTime) -> Self {
        Self(at)
    }
}

impl From<DbTime> for NaiveDateTime {
    fn from(at: DbTime) -> Self {
        at.0
    }
}

impl DbTime {
    /// The text diesel's `NaiveDateTime` is stored as on SQLite (`%F %T%.f`: no fraction, or
    /// 3, 6 or 9 digits, whichever is shortest without loss).
    pub(crate) fn sqlite_text(self) -> String {
        use chrono::{Datelike as _, Timelike as _};
        let at = self.0;
        let nanos = at.nanosecond();
        if !(0..=9999).contains(&at.year()) || nanos >= 1_000_000_000 {
            return at.format("%F %T%.f").to_string(); // Signed years, leap seconds.
        }
        fn digits(out: &mut String, value: u32, width: u32) {
            for place in (0..width).rev() {
                out.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
            }
        }
        let mut out = String::with_capacity(29);
        digits(&mut out, at.year().unsigned_abs(), 4);
        out.push('-');
        digits(&mut out, at.month(), 2);
        out.push('-');
        digits(&mut out, at.day(), 2);
        out.push(' ');
        digits(&mut out, at.hour(), 2);
        out.push(':');
        digits(&mut out, at.minute(), 2);
        out.push(':');
        digits(&mut out, at.second(), 2);
        if nanos != 0 {
            out.push('.');
            if nanos.is_multiple_of(1_000_000) {
                digits(&mut out, nanos / 1_000_000, 3);
            } else if nanos.is_multiple_of(1_000) {
                digits(&mut out, nanos / 1_000, 6);
            } else {
                digits(&mut out, nanos, 9);
            }
        }
        out
    }
}

impl diesel::serialize::ToSql<diesel::sql_types::Timestamp, diesel::sqlite::Sqlite> for DbTime {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::sqlite::Sqlite>,
    ) -> diesel::serialize::Result {
        out.set_value(self.sqlite_text());
        Ok(diesel::serialize::IsNull::No)
    }
}

impl diesel::serialize::ToSql<diesel::sql_types::Timestamp, diesel::pg::Pg> for DbTime {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        diesel::serialize::ToSql::<diesel::sql_types::Timestamp, diesel::pg::Pg>::to_sql(
            &self.0, out,
        )
    }
}

impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Timestamp, DB> for DbTime
where
    DB: diesel::backend::Backend,
    NaiveDateTime: diesel::deserialize::FromSql<diesel::sql_types::Timestamp, DB>,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
        NaiveDateTime::from_sql(bytes).map(Self)
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset, QueryableByName)]
#[diesel(table_name = customers, treat_none_as_null = true, treat_none_as_default_value = false)]
pub(crate) struct CustomerRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) email: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) company: Option<String>,
    pub(crate) status: String,
    pub(crate) source: Option<String>,
    pub(crate) language: Option<String>,
    pub(crate) country: Option<String>,
    pub(crate) time_zone: Option<String>,
    pub(crate) owner: Option<String>,
    pub(crate) tags: String,
    pub(crate) consent_email: bool,
    pub(crate) consent_call: bool,
    pub(crate) consent_sms: bool,
    pub(crate) notes: Option<String>,
    pub(crate) search_text: String,
    pub(crate) created_at: DbTime,
    pub(crate) updated_at: DbTime,
    pub(crate) deleted_at: Option<DbTime>,
}

impl From<&Customer> for CustomerRow {
    fn from(c: &Customer) -> Self {
        let tags: Vec<&str> = c.tags.iter().map(Tag::as_str).collect();
        Self {
            id: c.id.to_string(),
            name: c.name.clone(),
            email: c.email.as_ref().map(|e| e.as_str().to_owned()),
            phone: c.phone.as_ref().map(|p| p.as_str().to_owned()),
            company: c.company.clone(),
            status: c.status.as_str().to_owned(),
            source: c.source.clone(),
            language: c.language.as_ref().map(|l| l.as_str().to_owned()),
            country: c.country.as_ref().map(|c| c.as_str().to_owned()),
            time_zone: c.time_zone.map(|z| z.name().to_owned()),
            owner: c.owner.clone(),
            tags: serde_json::to_string(&tags).unwrap_or_else(|_| "[]".to_owned()),
            consent_email: c.consent_email,
            consent_call: c.consent_call,
            consent_sms: c.consent_sms,
            notes: c.notes.clone(),
            search_text: c.search_text(),
            created_at: DbTime(to_db_time(c.created_at)),
            updated_at: DbTime(to_db_time(c.updated_at)),
            deleted_at: c.deleted_at.map(|at| DbTime(to_db_time(at))),
        }
    }
}

impl TryFrom<CustomerRow> for Customer {
    type Error = StoreError;

    fn try_from(row: CustomerRow) -> Result<Self, Self::Error> {
        let corrupt = |reason: String| StoreError::Corrupt {
            entity: "customer",
            id: row.id.clone(),
            reason,
        };
        let tags: Vec<String> =
            serde_json::from_str(&row.tags).map_err(|e| corrupt(format!("tags: {e}")))?;
        Ok(Customer {
            id: row.id.parse().map_err(|e| corrupt(format!("id: {e}")))?,
            status: row
                .status
                .parse()
                .map_err(|e| corrupt(format!("status: {e}")))?,
            time_zone: row
                .time_zone
                .as_deref()
                .map(TimeZone::parse)
                .transpose()
                .map_err(|e| corrupt(format!("time_zone: {e}")))?,
            name: row.name,
            email: row.email.map(Email::from_stored),
            phone: row.phone.map(Phone::from_stored),
            company: row.company,
            source: row.source,
            language: row.language.map(Language::from_stored),
            country: row.country.map(CountryCode::from_stored),
            owner: row.owner,
            tags: tags.into_iter().map(Tag::from_stored).collect(),
            consent_email: row.consent_email,
            consent_call: row.consent_call,
            consent_sms: row.consent_sms,
            notes: row.notes,
            created_at: from_db_time(row.created_at),
            updated_at: from_db_time(row.updated_at),
            deleted_at: row.deleted_at.map(from_db_time),
        })
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset, QueryableByName)]
#[diesel(table_name = interactions, treat_none_as_null = true, treat_none_as_default_value = false)]
pub(crate) struct InteractionRow {
    pub(crate) id: String,
    pub(crate) customer_id: String,
    pub(crate) kind: String,
    pub(crate) direction: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) body: Option<String>,
    pub(crate) outcome: Option<String>,
    pub(crate) occurred_at: NaiveDateTime,
    pub(crate) duration_seconds: Option<i32>,
    pub(crate) author: Option<String>,
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
}

impl From<&Interaction> for InteractionRow {
    fn from(i: &Interaction) -> Self {
        Self {
            id: i.id.to_string(),
            customer_id: i.customer_id.to_string(),
            kind: i.kind.as_str().to_owned(),
            direction: i.direction.map(|d| d.as_str().to_owned()),
            subject: i.subject.clone(),
            body: i.body.clone(),
            outcome: i.outcome.clone(),
            occurred_at: to_db_time(i.occurred_at),
            duration_seconds: i.duration_seconds,
            author: i.author.clone(),
            created_at: to_db_time(i.created_at),
            updated_at: to_db_time(i.updated_at),
        }
    }
}

impl TryFrom<InteractionRow> for Interaction {
    type Error = StoreError;

    fn try_from(row: InteractionRow) -> Result<Self, Self::Error> {
        let corrupt = |reason: String| StoreError::Corrupt {
            entity: "interaction",
            id: row.id.clone(),
            reason,
        };
        Ok(Interaction {
            id: row.id.parse().map_err(|e| corrupt(format!("id: {e}")))?,
            customer_id: row
                .customer_id
                .parse()
                .map_err(|e| corrupt(format!("customer_id: {e}")))?,
            kind: row
                .kind
                .parse()
                .map_err(|e| corrupt(format!("kind: {e}")))?,
            direction: row
                .direction
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| corrupt(format!("direction: {e}")))?,
            subject: row.subject,
            body: row.body,
            outcome: row.outcome,
            occurred_at: from_db_time(row.occurred_at),
            duration_seconds: row.duration_seconds,
            author: row.author,
            created_at: from_db_time(row.created_at),
            updated_at: from_db_time(row.updated_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::DbTime;
    use chrono::{NaiveDate, NaiveDateTime};

    /// Stored timestamps are compared as text on SQLite: the fast writer must give exactly
    /// diesel's (chrono's `%F %T%.f`) text.
    #[test]
    fn sqlite_timestamps_are_written_as_diesel_writes_them() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let mut times: Vec<NaiveDateTime> = vec![
            day(2026, 12, 6).and_hms_opt(0, 0, 0).unwrap(),
            day(2026, 1, 2).and_hms_milli_opt(3, 4, 5, 60).unwrap(),
            day(1999, 12, 31)
                .and_hms_micro_opt(23, 59, 59, 999_999)
                .unwrap(),
            day(2026, 6, 7).and_hms_micro_opt(8, 9, 10, 1_000).unwrap(),
            day(2026, 6, 7).and_hms_nano_opt(8, 9, 10, 1).unwrap(),
            day(2026, 6, 30)
                .and_hms_milli_opt(23, 59, 59, 1_500)
                .unwrap(), // a leap second
            day(12, 3, 4).and_hms_micro_opt(5, 6, 7, 80).unwrap(),
            day(-44, 3, 15).and_hms_opt(12, 0, 0).unwrap(),
            day(10_000, 1, 1).and_hms_opt(0, 0, 0).unwrap(),
        ];
        // And a spread of ordinary ones, with every kind of fraction.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..10_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let secs = (seed % 4_102_444_800) as i64; // 1970 to 2100
            let nanos = match seed % 4 {
                0 => 0,
                1 => (seed % 1_000) as u32 * 1_000_000,
                2 => (seed % 1_000_000) as u32 * 1_000,
                _ => (seed % 1_000_000_000) as u32,
            };
            times.push(
                chrono::DateTime::from_timestamp(secs, nanos)
                    .unwrap()
                    .naive_utc(),
            );
        }
        for at in times {
            assert_eq!(DbTime(at).sqlite_text(), at.format("%F %T%.f").to_string());
        }
    }
}
