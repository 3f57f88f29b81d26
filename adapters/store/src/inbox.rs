//! The intake inbox: every lead delivery, stored raw before it is acknowledged, with the job
//! that processes it queued in the same transaction. Processing finishes the entry in the
//! transaction that stores the lead ([`crate::effects::Effect::FinishInbox`]), so an entry is
//! either still waiting for its job or done with its result — never half done.

use crate::{
    db::{Db, with_conn},
    effects::WriteEffects as _,
    error::{StoreError, StoreResult},
    jobs::NewJob,
    rows::{from_db_time, to_db_time},
    schema::inbox,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::{fmt, str::FromStr};

/// Where an inbox entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxStatus {
    /// Stored; its job is queued.
    Received,
    /// Processed: the result says what became of it.
    Processed,
    /// Could not be processed (its result says why); the raw payload is kept.
    Failed,
}

impl InboxStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Processed => "processed",
            Self::Failed => "failed",
        }
    }
}

impl FromStr for InboxStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Received, Self::Processed, Self::Failed]
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown inbox status `{s}`"))
    }
}

impl fmt::Display for InboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEntry {
    /// Identity (a UUID).
    pub id: String,
    /// How it came (`webhook`, `form`, `api`, `file`).
    pub channel: String,
    /// Who sent it (the webhook source, the form).
    pub source: String,
    /// The sender's delivery id, if it gave one.
    pub idempotency_key: Option<String>,
    /// The payload's media type.
    pub content_type: Option<String>,
    /// The payload exactly as received.
    pub payload: String,
    /// Where it stands.
    pub status: InboxStatus,
    /// What became of it (JSON), once processed.
    pub result: Option<String>,
    /// Received.
    pub received_at: DateTime<Utc>,
    /// Processed.
    pub processed_at: Option<DateTime<Utc>>,
}

/// A delivery to store.
#[derive(Debug, Clone)]
pub struct NewInboxEntry {
    /// How it came.
    pub channel: String,
    /// Who sent it.
    pub source: String,
    /// The sender's delivery id (unique per sender: prefix it with the source).
    pub idempotency_key: Option<String>,
    /// The payload's media type.
    pub content_type: Option<String>,
    /// The payload exactly as received.
    pub payload: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = inbox, treat_none_as_default_value = false)]
struct InboxRow {
    id: String,
    channel: String,
    source: String,
    idempotency_key: Option<String>,
    content_type: Option<String>,
    payload: String,
    status: String,
    result: Option<String>,
    received_at: NaiveDateTime,
    processed_at: Option<NaiveDateTime>,
}

impl TryFrom<InboxRow> for InboxEntry {
    type Error = StoreError;

    fn try_from(row: InboxRow) -> Result<Self, Self::Error> {
        Ok(InboxEntry {
            status: row.status.parse().map_err(|reason| StoreError::Corrupt {
                entity: "inbox entry",
                id: row.id.clone(),
                reason,
            })?,
            id: row.id,
            channel: row.channel,
            source: row.source,
            idempotency_key: row.idempotency_key,
            content_type: row.content_type,
            payload: row.payload,
            result: row.result,
            received_at: from_db_time(row.received_at),
            processed_at: row.processed_at.map(from_db_time),
        })
    }
}

/// The outcome of storing a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// Stored now, its job queued.
    New(InboxEntry),
    /// Delivered before (same idempotency key): the first delivery's entry, unchanged.
    Repeat(InboxEntry),
}

/// Stores a delivery and queues `job(id)` to process it, in one transaction; a delivery whose
/// idempotency key is known returns the first one instead.
pub async fn receive(
    db: &Db,
    new: NewInboxEntry,
    job: impl FnOnce(&str) -> NewJob,
    now: DateTime<Utc>,
) -> StoreResult<Received> {
    let row = InboxRow {
        id: uuid::Uuid::now_v7().to_string(),
        channel: new.channel,
        source: new.source,
        idempotency_key: new.idempotency_key,
        content_type: new.content_type,
        payload: new.payload,
        status: InboxStatus::Received.as_str().to_owned(),
        result: None,
        received_at: to_db_time(now),
        processed_at: None,
    };
    let job = job(&row.id);
    let key = row.idempotency_key.clone();
    let lane = db.sqlite_write_lane().await;
    let stored: Option<InboxRow> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let inserted = diesel::insert_into(inbox::table)
                .values(&row)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if inserted == 1 {
                conn.enqueue_jobs(std::slice::from_ref(&job), now).await?;
                return Ok::<_, diesel::result::Error>(None);
            }
            let first = inbox::table
                .filter(inbox::idempotency_key.eq(&key))
                .select(InboxRow::as_select())
                .first(conn)
                .await?;
            Ok(Some(first))
        })
        .await?
    });
    drop(lane);
    match stored {
        None => {
            db.committed(true, false);
            Ok(Received::New(row.try_into()?))
        }
        Some(first) => Ok(Received::Repeat(first.try_into()?)),
    }
}

/// The entry with this id.
pub async fn get(db: &Db, id: &str) -> StoreResult<Option<InboxEntry>> {
    let row: Option<InboxRow> = with_conn!(db, |conn| {
        inbox::table
            .find(id)
            .select(InboxRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    row.map(InboxEntry::try_from).transpose()
}

/// Finishes an entry that has no lead to store with it (it failed, or it was a dry run).
/// False if it was finished already.
pub async fn finish(
    db: &Db,
    id: &str,
    status: InboxStatus,
    result: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let finished = with_conn!(db, |conn| {
        conn.finish_inbox(id, status, result, now).await?
    });
    Ok(finished)
}
