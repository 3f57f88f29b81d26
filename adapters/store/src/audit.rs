//! The audit log: append-only, hash-chained.
//!
//! Entry `n` stores `hash_n = SHA-256(hash_{n-1} ‖ the entry's fields ‖ SHA-256(payload))`, with
//! `seq` numbered 1, 2, 3 … without gaps. [`verify`] recomputes the chain: a changed field, a
//! deleted or reordered entry breaks it. The payload (changed values, possibly personal) is
//! covered through its hash only, so it can be erased without breaking the chain.
//!
//! Entries are appended inside the transaction of the change they record ([`AppendAudit`]).
//! Appends are serialized so two writers never fork the chain: on SQLite by the write lock that
//! the transaction's first write took, on PostgreSQL by a transaction-scoped advisory lock.

use crate::{
    db::{Db, with_conn},
    error::StoreResult,
    rows::{from_db_time, to_db_time},
    schema::audit_log,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use crm_domain::hex::encode as hex;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use sha2::{Digest as _, Sha256};

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Lock key of the PostgreSQL advisory lock that serializes appends.
const APPEND_LOCK: i64 = 0x0063_726d_6175_6469; // "crmaudi"

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    /// A person with a token.
    User,
    /// An API key.
    ApiKey,
    /// The server itself (jobs, scheduler, start-up).
    System,
}

impl ActorKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::ApiKey => "api_key",
            Self::System => "system",
        }
    }
}

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Kind of actor.
    pub actor_kind: ActorKind,
    /// User subject, key id or job name.
    pub actor: String,
    /// What (`customer.create`, `api_key.revoke`, …).
    pub action: String,
    /// Kind of the thing acted on (`customer`).
    pub target_type: Option<String>,
    /// Its id.
    pub target_id: Option<String>,
    /// The HTTP request id.
    pub request_id: Option<String>,
    /// JSON of the changed fields (`{"field": {"before": …, "after": …}}`), already redacted.
    pub payload: Option<String>,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_log, treat_none_as_default_value = false)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Identity.
    pub id: String,
    /// When.
    pub at: NaiveDateTime,
    /// `user`, `api_key` or `system`.
    pub actor_kind: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Kind of target.
    pub target_type: Option<String>,
    /// Target id.
    pub target_id: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Changed fields (may be erased).
    pub payload: Option<String>,
    /// SHA-256 of the payload as written.
    pub payload_hash: String,
    /// Hash of the previous entry.
    pub prev_hash: String,
    /// Hash of this entry.
    pub hash: String,
}

impl AuditEntry {
    /// When, in UTC.
    pub fn at_utc(&self) -> DateTime<Utc> {
        from_db_time(self.at)
    }

    /// The hash this entry must have, given its fields.
    pub fn expected_hash(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.prev_hash.as_str(),
            &self.seq.to_string(),
            &self.id,
            &self.at.and_utc().timestamp_micros().to_string(),
            &self.actor_kind,
            &self.actor,
            &self.action,
            self.target_type.as_deref().unwrap_or(""),
            self.target_id.as_deref().unwrap_or(""),
            self.request_id.as_deref().unwrap_or(""),
            &self.payload_hash,
        ] {
            // Length-prefixed, so that moving a boundary between fields changes the hash.
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex(&h.finalize())
    }
}

/// SHA-256 of a payload (`""` for none).
pub fn payload_hash(payload: Option<&str>) -> String {
    hex(&Sha256::digest(payload.unwrap_or("").as_bytes()))
}

fn chain(new: &NewAuditEntry, head: Option<(i64, String)>) -> AuditEntry {
    let (prev_seq, prev_hash) = head.unwrap_or((0, GENESIS.to_owned()));
    let mut entry = AuditEntry {
        seq: prev_seq + 1,
        id: uuid::Uuid::now_v7().to_string(),
        at: to_db_time(new.at),
        actor_kind: new.actor_kind.as_str().to_owned(),
        actor: new.actor.clone(),
        action: new.action.clone(),
        target_type: new.target_type.clone(),
        target_id: new.target_id.clone(),
        request_id: new.request_id.clone(),
        payload: new.payload.clone(),
        payload_hash: payload_hash(new.payload.as_deref()),
        prev_hash,
        hash: String::new(),
    };
    entry.hash = entry.expected_hash();
    entry
}

/// Appends to the chain from inside a transaction that the caller runs, so that an entry
/// commits or rolls back together with the change it records. Implemented for both backends'
/// connections, so one query body can call it in either arm of `with_conn!`.
pub(crate) trait AppendAudit {
    /// Appends `new` at the head of the chain. Must run inside a transaction; on SQLite that
    /// transaction must already have written (so it holds the write lock before this reads).
    fn append_audit<'a>(
        &'a mut self,
        new: &'a NewAuditEntry,
    ) -> futures_util::future::BoxFuture<'a, diesel::QueryResult<AuditEntry>>;
}

impl AppendAudit for diesel_async::AsyncPgConnection {
    fn append_audit<'a>(
        &'a mut self,
        new: &'a NewAuditEntry,
    ) -> futures_util::future::BoxFuture<'a, diesel::QueryResult<AuditEntry>> {
        Box::pin(async move {
            // Serializes appenders until this transaction ends, so the chain cannot fork.
            diesel::sql_query(format!("SELECT pg_advisory_xact_lock({APPEND_LOCK})"))
                .execute(self)
                .await?;
            let head: Option<(i64, String)> = audit_log::table
                .order_by(audit_log::seq.desc())
                .select((audit_log::seq, audit_log::hash))
                .first(self)
                .await
                .optional()?;
            let entry = chain(new, head);
            diesel::insert_into(audit_log::table)
                .values(&entry)
                .execute(self)
                .await?;
            Ok(entry)
        })
    }
}

impl AppendAudit for crate::db::SqliteConn {
    fn append_audit<'a>(
        &'a mut self,
        new: &'a NewAuditEntry,
    ) -> futures_util::future::BoxFuture<'a, diesel::QueryResult<AuditEntry>> {
        let new = new.clone();
        Box::pin(self.spawn_blocking(move |conn| append_sync(conn, &new)))
    }
}

/// Entries appended in a row after `head`, each chained to the one before.
pub(crate) fn chain_many(
    new: &[NewAuditEntry],
    mut head: Option<(i64, String)>,
) -> Vec<AuditEntry> {
    new.iter()
        .map(|entry| {
            let chained = chain(entry, head.take());
            head = Some((chained.seq, chained.hash.clone()));
            chained
        })
        .collect()
}

/// Chained entries as columns, for [`crate::bulk`].
fn columns(rows: &[AuditEntry]) -> crate::bulk::Columns<'_> {
    use crate::bulk::{Values as V, col};
    crate::bulk::Columns::new("audit_log")
        .with("seq", V::BigInt(col(rows, |r| r.seq)))
        .with("id", V::Text(col(rows, |r| r.id.as_str())))
        .with("at", V::Time(col(rows, |r| r.at)))
        .with("actor_kind", V::Text(col(rows, |r| r.actor_kind.as_str())))
        .with("actor", V::Text(col(rows, |r| r.actor.as_str())))
        .with("action", V::Text(col(rows, |r| r.action.as_str())))
        .with(
            "target_type",
            V::OptText(col(rows, |r| r.target_type.as_deref())),
        )
        .with(
            "target_id",
            V::OptText(col(rows, |r| r.target_id.as_deref())),
        )
        .with(
            "request_id",
            V::OptText(col(rows, |r| r.request_id.as_deref())),
        )
        .with("payload", V::OptText(col(rows, |r| r.payload.as_deref())))
        .with(
            "payload_hash",
            V::Text(col(rows, |r| r.payload_hash.as_str())),
        )
        .with("prev_hash", V::Text(col(rows, |r| r.prev_hash.as_str())))
        .with("hash", V::Text(col(rows, |r| r.hash.as_str())))
}

/// Appends many entries with one head read and multi-row inserts, on PostgreSQL (inside the
/// caller's transaction, under the chain's lock).
pub(crate) async fn append_many_pg(
    conn: &mut diesel_async::AsyncPgConnection,
    new: &[NewAuditEntry],
) -> diesel::QueryResult<()> {
    if new.is_empty() {
        return Ok(());
    }
    diesel::sql_query(format!("SELECT pg_advisory_xact_lock({APPEND_LOCK})"))
        .execute(conn)
        .await?;
    let head: Option<(i64, String)> = audit_log::table
        .order_by(audit_log::seq.desc())
        .select((audit_log::seq, audit_log::hash))
        .first(conn)
        .await
        .optional()?;
    columns(&chain_many(new, head)).insert(conn).await
}

/// The same on SQLite's sync connection (inside the caller's write transaction).
pub(crate) fn append_many_sync(
    conn: &mut diesel::SqliteConnection,
    new: &[NewAuditEntry],
) -> diesel::QueryResult<()> {
    if new.is_empty() {
        return Ok(());
    }
    let head: Option<(i64, String)> = diesel::RunQueryDsl::first(
        audit_log::table
            .order_by(audit_log::seq.desc())
            .select((audit_log::seq, audit_log::hash)),
        conn,
    )
    .optional()?;
    // Row by row through one cached prepared statement (see `customers::insert_leads`).
    for entry in chain_many(new, head) {
        diesel::RunQueryDsl::execute(diesel::insert_into(audit_log::table).values(&entry), conn)?;
    }
    Ok(())
}

/// The SQLite append on the sync connection (inside the caller's write transaction).
pub(crate) fn append_sync(
    conn: &mut diesel::SqliteConnection,
    new: &NewAuditEntry,
) -> diesel::QueryResult<AuditEntry> {
    let head: Option<(i64, String)> = diesel::RunQueryDsl::first(
        audit_log::table
            .order_by(audit_log::seq.desc())
            .select((audit_log::seq, audit_log::hash)),
        conn,
    )
    .optional()?;
    let entry = chain(new, head);
    diesel::RunQueryDsl::execute(diesel::insert_into(audit_log::table).values(&entry), conn)?;
    Ok(entry)
}

/// Which entries a list returns.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Actor equals.
    pub actor: Option<String>,
    /// Action equals.
    pub action: Option<String>,
    /// Target id equals.
    pub target_id: Option<String>,
    /// At or after.
    pub from: Option<DateTime<Utc>>,
    /// Before.
    pub to: Option<DateTime<Utc>>,
}

/// Entries newest first, `limit + 1` of them before `before_seq` (to detect a next page).
pub async fn list(
    db: &Db,
    filter: &AuditFilter,
    before_seq: Option<i64>,
    limit: usize,
) -> StoreResult<Vec<AuditEntry>> {
    let probe = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    Ok(with_conn!(db, |conn| {
        let mut query = audit_log::table
            .select(AuditEntry::as_select())
            .into_boxed();
        if let Some(actor) = &filter.actor {
            query = query.filter(audit_log::actor.eq(actor.clone()));
        }
        if let Some(action) = &filter.action {
            query = query.filter(audit_log::action.eq(action.clone()));
        }
        if let Some(target) = &filter.target_id {
            query = query.filter(audit_log::target_id.eq(target.clone()));
        }
        if let Some(from) = filter.from {
            query = query.filter(audit_log::at.ge(to_db_time(from)));
        }
        if let Some(to) = filter.to {
            query = query.filter(audit_log::at.lt(to_db_time(to)));
        }
        if let Some(seq) = before_seq {
            query = query.filter(audit_log::seq.lt(seq));
        }
        query
            .order_by(audit_log::seq.desc())
            .limit(probe)
            .load(conn)
            .await?
    }))
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every entry links to the one before and hashes right.
    Intact {
        /// Entries checked.
        entries: u64,
    },
    /// The first entry where the chain breaks, and why.
    Broken {
        /// The sequence number where it breaks.
        seq: i64,
        /// What is wrong.
        reason: String,
    },
}

/// Walks the whole chain from the first entry.
pub async fn verify(db: &Db) -> StoreResult<Verification> {
    const PAGE: i64 = 5_000;
    let mut expected_seq = 1;
    let mut prev_hash = GENESIS.to_owned();
    loop {
        let after = expected_seq - 1;
        let page: Vec<AuditEntry> = with_conn!(db, |conn| {
            audit_log::table
                .filter(audit_log::seq.gt(after))
                .order_by(audit_log::seq.asc())
                .limit(PAGE)
                .select(AuditEntry::as_select())
                .load(conn)
                .await?
        });
        if page.is_empty() {
            let entries = u64::try_from(expected_seq - 1).unwrap_or(0);
            return Ok(Verification::Intact { entries });
        }
        for entry in page {
            let broken = |reason: String| {
                Ok(Verification::Broken {
                    seq: entry.seq,
                    reason,
                })
            };
            if entry.seq != expected_seq {
                return broken(format!(
                    "entry {expected_seq} is missing (next is {})",
                    entry.seq
                ));
            }
            if entry.prev_hash != prev_hash {
                return broken("does not link to the previous entry".into());
            }
            if entry.payload.is_some()
                && payload_hash(entry.payload.as_deref()) != entry.payload_hash
            {
                return broken("the payload was changed".into());
            }
            if entry.expected_hash() != entry.hash {
                return broken("the entry was changed".into());
            }
            prev_hash = entry.hash;
            expected_seq += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_two_lowercase_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(
            payload_hash(Some("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
