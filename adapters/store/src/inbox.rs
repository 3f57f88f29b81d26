//! The intake inbox: every lead delivery, stored raw before it is acknowledged, with the job
//! that processes it queued in the same transaction. Processing finishes the entry in the
//! transaction that stores the lead ([`crate::effects::Effect::FinishInbox`]), so an entry is
//! either still waiting for its job or done with its result — never half done.

use crate::{
    db::{Db, with_conn},
    effects::WriteEffects as _,
    error::{StoreError, StoreResult},
    jobs::{self, JobRow, NewJob},
    rows::{from_db_time, to_db_time},
    schema::inbox,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use crm_domain::JobId;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::{
    collections::{HashMap, HashSet, VecDeque, hash_map::Entry},
    fmt,
    str::FromStr,
};
use tokio::sync::oneshot;

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
///
/// Deliveries are stored by group commit: those that arrive while a transaction is being
/// written wait in the [`Queue`] and are stored together in the next one, so a burst of
/// deliveries costs one transaction (and one flush to disk) per batch instead of one each.
/// Each caller's answer comes after the transaction holding its delivery committed. If a
/// batch cannot be stored, its deliveries are stored one by one, so one bad delivery fails
/// only itself.
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
    let (reply, stored) = oneshot::channel();
    let delivery = Delivery {
        row,
        job,
        now,
        reply,
    };
    if db.inbox_queue().push(delivery) {
        let writer = Writer {
            db: db.clone(),
            done: false,
        };
        tokio::spawn(write_queued(writer));
    }
    stored.await.map_err(|_| {
        StoreError::Unavailable("the inbox writer stopped before storing the delivery".into())
    })?
}

/// Most deliveries one transaction stores.
const BATCH_MAX: usize = 256;
/// Most payload bytes one transaction stores (a larger delivery goes alone).
const BATCH_MAX_BYTES: usize = 8 << 20;

/// A delivery waiting for the writer, with the caller's answer.
struct Delivery {
    row: InboxRow,
    job: NewJob,
    now: DateTime<Utc>,
    reply: oneshot::Sender<StoreResult<Received>>,
}

/// The deliveries waiting to be stored, and whether a writer is at work on them. One writer
/// at a time: on PostgreSQL, four in flight were no faster than one (BENCHMARKS.md).
#[derive(Default)]
pub(crate) struct Queue(std::sync::Mutex<Waiting>);

#[derive(Default)]
struct Waiting {
    deliveries: VecDeque<Delivery>,
    writing: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a delivery; true if no writer is at work, so the caller must start one.
    fn push(&self, delivery: Delivery) -> bool {
        let mut waiting = self.lock();
        waiting.deliveries.push_back(delivery);
        !std::mem::replace(&mut waiting.writing, true)
    }

    /// The next batch, in arrival order; empty, with the writer done, if none waits.
    fn take(&self) -> Vec<Delivery> {
        let mut waiting = self.lock();
        // A caller that gave up (its request timed out or its client left) got no answer: its
        // sender delivers again, so its delivery is not stored now.
        waiting.deliveries.retain(|d| !d.reply.is_closed());
        let mut bytes = 0;
        let count = waiting
            .deliveries
            .iter()
            .take(BATCH_MAX)
            .take_while(|d| {
                bytes += d.row.payload.len();
                bytes <= BATCH_MAX_BYTES
            })
            .count()
            .max(1)
            .min(waiting.deliveries.len());
        if count == 0 {
            waiting.writing = false;
        }
        waiting.deliveries.drain(..count).collect()
    }

    /// The writer stopped before the queue ran empty (cancelled with its runtime, or it
    /// panicked): the deliveries still waiting are answered with an error (their senders
    /// retry), and the next delivery starts a new writer.
    fn abandon(&self) {
        let mut waiting = self.lock();
        waiting.writing = false;
        waiting.deliveries.clear();
    }
}

/// The running writer. Dropped before the queue ran empty (its task cancelled, even before its
/// first poll, or panicked), it abandons the queue.
struct Writer {
    db: Db,
    done: bool,
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            self.db.inbox_queue().abandon();
        }
    }
}

/// Stores batches until no delivery waits.
async fn write_queued(mut writer: Writer) {
    loop {
        let batch = writer.db.inbox_queue().take();
        if batch.is_empty() {
            writer.done = true;
            return;
        }
        store_batch(&writer.db, batch).await;
    }
}

/// Stores a batch in one transaction and answers each delivery. A batch the database refuses
/// is stored again one delivery at a time, so that a bad delivery fails only itself; a
/// database that cannot be reached fails the batch at once (each delivery would wait for it
/// again).
async fn store_batch(db: &Db, batch: Vec<Delivery>) {
    if batch.len() > 1 {
        let repeats = repeats(&batch);
        match insert(db, &batch, &repeats).await {
            Ok(inserted) => return answer(db, batch, &repeats, &inserted).await,
            Err(StoreError::Unavailable(reason)) => {
                for delivery in batch {
                    let _ = delivery
                        .reply
                        .send(Err(StoreError::Unavailable(reason.clone())));
                }
                return;
            }
            Err(error) => tracing::warn!(
                %error,
                deliveries = batch.len(),
                "Cannot store a batch of deliveries in one transaction; storing each alone."
            ),
        }
    }
    for delivery in batch {
        let one = vec![delivery];
        match insert(db, &one, &[None]).await {
            Ok(inserted) => answer(db, one, &[None], &inserted).await,
            Err(error) => {
                if let Some(delivery) = one.into_iter().next() {
                    let _ = delivery.reply.send(Err(error));
                }
            }
        }
    }
}

/// For each delivery of a batch, the earlier delivery with the same idempotency key, if any:
/// only the first of each key is written, later ones repeat it.
fn repeats(batch: &[Delivery]) -> Vec<Option<usize>> {
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    (0..)
        .zip(batch)
        .map(|(i, d)| {
            let key = d.row.idempotency_key.as_deref()?;
            match first_of.entry(key) {
                Entry::Occupied(first) => Some(*first.get()),
                Entry::Vacant(slot) => {
                    slot.insert(i);
                    None
                }
            }
        })
        .collect()
}

/// Stores the deliveries that repeat no earlier one of the batch and whose idempotency key is
/// new, with their jobs, in one transaction; returns the ids of the entries stored.
async fn insert(
    db: &Db,
    batch: &[Delivery],
    repeats: &[Option<usize>],
) -> StoreResult<HashSet<String>> {
    let written: Vec<&Delivery> = batch
        .iter()
        .zip(repeats)
        .filter(|(_, repeat)| repeat.is_none())
        .map(|(d, _)| d)
        .collect();
    let inserted: HashSet<String> = with_conn!(
        db,
        postgres | conn | insert_postgres(conn, &written).await?,
        sqlite | conn | {
            conn.transaction(async |conn| {
                let mut inserted = HashSet::new();
                for d in &written {
                    let rows = diesel::insert_into(inbox::table)
                        .values(&d.row)
                        .on_conflict_do_nothing()
                        .execute(conn)
                        .await?;
                    if rows == 1 {
                        conn.enqueue_jobs(std::slice::from_ref(&d.job), d.now)
                            .await?;
                        inserted.insert(d.row.id.clone());
                    }
                }
                Ok::<_, diesel::result::Error>(inserted)
            })
            .await?
        }
    );
    Ok(inserted)
}

/// Answers each delivery of a stored batch: new, or a repeat of the entry stored first under
/// its key (in this batch or before). Runs after the commit: a failure to read an earlier
/// entry fails only the repeats that need it.
async fn answer(
    db: &Db,
    batch: Vec<Delivery>,
    repeats: &[Option<usize>],
    inserted: &HashSet<String>,
) {
    if !inserted.is_empty() {
        db.committed(true, false);
    }
    let known: Vec<&str> = batch
        .iter()
        .filter(|d| !inserted.contains(&d.row.id))
        .filter_map(|d| d.row.idempotency_key.as_deref())
        .collect();
    let stored: StoreResult<HashMap<String, InboxRow>> = async {
        if known.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<InboxRow> = with_conn!(db, |conn| {
            inbox::table
                .filter(inbox::idempotency_key.eq_any(&known))
                .select(InboxRow::as_select())
                .load(conn)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|row| (row.idempotency_key.clone().unwrap_or_default(), row))
            .collect())
    }
    .await;
    let first_entry = |d: &Delivery| -> StoreResult<InboxEntry> {
        if inserted.contains(&d.row.id) {
            return d.row.clone().try_into();
        }
        let key = d.row.idempotency_key.as_deref().unwrap_or_default();
        match &stored {
            Ok(stored) => stored
                .get(key)
                .cloned()
                .ok_or_else(|| StoreError::NotFound {
                    entity: "inbox entry",
                    id: key.to_owned(),
                })?
                .try_into(),
            Err(error) => Err(StoreError::Unavailable(format!(
                "cannot read the first delivery of `{key}`: {error}"
            ))),
        }
    };
    let outcomes: Vec<StoreResult<Received>> = batch
        .iter()
        .zip(repeats)
        .map(|(d, repeat)| match repeat {
            Some(first) => first_entry(&batch[*first]).map(Received::Repeat),
            None if inserted.contains(&d.row.id) => first_entry(d).map(Received::New),
            None => first_entry(d).map(Received::Repeat),
        })
        .collect();
    for (delivery, outcome) in batch.into_iter().zip(outcomes) {
        let _ = delivery.reply.send(outcome);
    }
}

/// PostgreSQL: stores the entries whose idempotency key is new, with their jobs, in one
/// statement (atomic on its own: no `BEGIN` and `COMMIT` round trips) over one array per
/// column; returns the ids of the entries stored.
async fn insert_postgres(
    conn: &mut diesel_async::AsyncPgConnection,
    written: &[&Delivery],
) -> QueryResult<HashSet<String>> {
    use crate::bulk::col;
    use diesel::sql_types::{Array, Integer, Nullable, Text, Timestamp};
    #[derive(QueryableByName)]
    struct Stored {
        #[diesel(sql_type = Text)]
        id: String,
    }
    const SQL: &str = "WITH entries AS ( \
           INSERT INTO inbox (id, channel, source, idempotency_key, content_type, payload, \
             status, received_at) \
           SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::timestamp[]) \
           ON CONFLICT DO NOTHING RETURNING id), \
         queued AS ( \
           INSERT INTO jobs (id, kind, payload, dedupe_key, priority, status, run_at, attempts, \
             max_attempts, created_at, updated_at) \
           SELECT j.id, j.kind, j.payload, j.dedupe_key, j.priority, j.status, j.run_at, \
             j.attempts, j.max_attempts, j.created_at, j.updated_at \
           FROM UNNEST($9::text[], $10::text[], $11::text[], $12::text[], $13::text[], \
             $14::int4[], $15::text[], $16::timestamp[], $17::int4[], $18::int4[], \
             $19::timestamp[], $20::timestamp[]) \
             AS j(entry, id, kind, payload, dedupe_key, priority, status, run_at, attempts, \
               max_attempts, created_at, updated_at) \
           WHERE j.entry IN (SELECT id FROM entries) \
           ON CONFLICT DO NOTHING) \
         SELECT id FROM entries";
    let jobs: Vec<JobRow> = written
        .iter()
        .map(|d| jobs::row(JobId::new(), &d.job, d.now))
        .collect();
    let stored: Vec<Stored> = diesel::sql_query(SQL)
        .bind::<Array<Text>, _>(col(written, |d| d.row.id.as_str()))
        .bind::<Array<Text>, _>(col(written, |d| d.row.channel.as_str()))
        .bind::<Array<Text>, _>(col(written, |d| d.row.source.as_str()))
        .bind::<Array<Nullable<Text>>, _>(col(written, |d| d.row.idempotency_key.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(col(written, |d| d.row.content_type.as_deref()))
        .bind::<Array<Text>, _>(col(written, |d| d.row.payload.as_str()))
        .bind::<Array<Text>, _>(col(written, |d| d.row.status.as_str()))
        .bind::<Array<Timestamp>, _>(col(written, |d| d.row.received_at))
        .bind::<Array<Text>, _>(col(written, |d| d.row.id.as_str()))
        .bind::<Array<Text>, _>(col(&jobs, |j| j.id.as_str()))
        .bind::<Array<Text>, _>(col(&jobs, |j| j.kind.as_str()))
        .bind::<Array<Text>, _>(col(&jobs, |j| j.payload.as_str()))
        .bind::<Array<Nullable<Text>>, _>(col(&jobs, |j| j.dedupe_key.as_deref()))
        .bind::<Array<Integer>, _>(col(&jobs, |j| j.priority))
        .bind::<Array<Text>, _>(col(&jobs, |j| j.status.as_str()))
        .bind::<Array<Timestamp>, _>(col(&jobs, |j| j.run_at.0))
        .bind::<Array<Integer>, _>(col(&jobs, |j| j.attempts))
        .bind::<Array<Integer>, _>(col(&jobs, |j| j.max_attempts))
        .bind::<Array<Timestamp>, _>(col(&jobs, |j| j.created_at.0))
        .bind::<Array<Timestamp>, _>(col(&jobs, |j| j.updated_at.0))
        .load(conn)
        .await?;
    Ok(stored.into_iter().map(|s| s.id).collect())
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
