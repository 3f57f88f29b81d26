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

pub(crate) fn from_db_time(at: NaiveDateTime) -> DateTime<Utc> {
    at.and_utc()
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
    pub(crate) created_at: NaiveDateTime,
    pub(crate) updated_at: NaiveDateTime,
    pub(crate) deleted_at: Option<NaiveDateTime>,
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
            created_at: to_db_time(c.created_at),
            updated_at: to_db_time(c.updated_at),
            deleted_at: c.deleted_at.map(to_db_time),
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
