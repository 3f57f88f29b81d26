//! Lead files (CSV, JSON, NDJSON) read as a stream and imported by the `import-file` job.
//!
//! - The file is read on a blocking thread, one record at a time, and handed over through a
//!   bounded channel: it is never held in memory whole, and a slow database slows the reader.
//! - CSV: UTF-8 with or without BOM; `,`, `;` or tab detected from the header line; quoted fields
//!   with newlines; headers mapped through the synonyms of [`LeadField`] (English, German,
//!   Bosnian/Serbian) or an explicit mapping.
//! - JSON: an array of lead objects (or one object); NDJSON: one object per line.
//! - Progress and every row's problems are recorded batch by batch; a job that is retried after
//!   a crash resumes after the last recorded batch.

use crate::{
    intake::{CustomerAudit, ImportOptions, Intake, Issue, Outcome, lead_from_json, owned_by},
    runner::{JobError, JobHandler, RetryPolicy},
};
use async_trait::async_trait;
use crm_domain::{
    Clock, CustomerScope,
    lead::{LeadField, LeadValue, RawLead},
};
use crm_store::{
    Db,
    imports::{self, RowIssue},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};
use tokio::sync::mpsc;

/// The job kind.
pub const IMPORT_FILE: &str = "import-file";

/// Most fields a row may have.
pub const MAX_FIELDS: usize = 1_000;
/// Longest field (characters); longer ones are usually an unterminated quote.
pub const MAX_FIELD_LEN: usize = 10_000;
/// Most bytes one record (a CSV row, an NDJSON line, a JSON element) may take: beyond it the
/// file is refused instead of read into memory (an unclosed quote swallows the rest of a file).
pub const MAX_RECORD_BYTES: u64 = 1024 * 1024;
/// Whether a batch is written while the one before it completes (see [`ImportFile::begin`]):
/// on PostgreSQL, with connections to spare (the waiting batch holds one, the batch before
/// needs others). SQLite has one writer: one batch after the other.
fn overlapping(db: &crm_store::Db) -> bool {
    db.backend() == crm_store::Backend::Postgres && db.max_connections() >= 4
}

/// Rows per recorded batch. Overlapping, three batches are in memory at once: smaller ones
/// keep the peak RSS where two batches of 2,000 had it.
fn batch_size(overlapping: bool) -> usize {
    if overlapping { 1_000 } else { 2_000 }
}
/// How long a batch's transaction waits for the batch before it to complete.
const WAIT_FOR_BATCH_BEFORE: std::time::Duration = std::time::Duration::from_secs(60);

/// A lead file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-, semicolon- or tab-separated values with a header row.
    Csv,
    /// A JSON array of lead objects.
    Json,
    /// One JSON lead object per line.
    Ndjson,
}

impl Format {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
            Self::Ndjson => "ndjson",
        }
    }

    /// The format of a file, from its name, its media type, or its first bytes.
    pub fn detect(file_name: &str, content_type: Option<&str>, head: &[u8]) -> Option<Self> {
        let name = file_name.to_lowercase();
        let media = content_type.unwrap_or_default().to_lowercase();
        if name.ends_with(".ndjson") || name.ends_with(".jsonl") || media.contains("ndjson") {
            return Some(Self::Ndjson);
        }
        if name.ends_with(".json") || media.contains("application/json") {
            return Some(Self::Json);
        }
        if name.ends_with(".csv") || name.ends_with(".txt") || media.contains("csv") {
            return Some(Self::Csv);
        }
        let text = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
        match text.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => Some(Self::Json),
            Some(b'{') => Some(Self::Ndjson),
            Some(_) if std::str::from_utf8(text).is_ok() => Some(Self::Csv),
            _ => None,
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Csv, Self::Json, Self::Ndjson]
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown file format `{s}`"))
    }
}

/// One record of a file.
#[derive(Debug)]
pub enum Record {
    /// A lead, at its row (data rows count from 1).
    Lead(i32, RawLead),
    /// A row that could not be read.
    Bad(i32, Issue),
}

fn issue(field: &str, code: &str, message: impl Into<String>) -> Issue {
    Issue {
        field: field.into(),
        code: code.into(),
        message: message.into(),
    }
}

/// Reads `reader` as `format`, sending every record; stops early if the receiver is gone.
/// `mapping` overrides header mapping (`column → field`). Fails for a file that cannot be read
/// at all (no header, no known column, not the format, a record over [`MAX_RECORD_BYTES`]).
pub fn read(
    format: Format,
    reader: impl Read,
    mapping: &[(String, LeadField)],
    tx: &mpsc::Sender<Record>,
) -> Result<(), String> {
    let mark = Mark::default();
    let reader = Bounded {
        inner: reader,
        mark: mark.clone(),
    };
    match format {
        Format::Csv => read_csv(reader, &mark, mapping, tx),
        Format::Ndjson => read_ndjson(reader, &mark, tx),
        Format::Json => read_json(reader, &mark, tx),
    }
}

/// Bytes read so far, and where the current record began.
#[derive(Debug, Clone, Default)]
struct Mark(Arc<(AtomicU64, AtomicU64)>);

impl Mark {
    /// A record ended: the next one starts here.
    fn next_record(&self) {
        self.0
            .1
            .store(self.0.0.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// A reader that fails once a record runs past [`MAX_RECORD_BYTES`] (counting read-ahead, which
/// is far smaller).
struct Bounded<R> {
    inner: R,
    mark: Mark,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.mark.0.0.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total - self.mark.0.1.load(Ordering::Relaxed) > MAX_RECORD_BYTES {
            return Err(std::io::Error::other(format!(
                "a record runs past {} KiB (an unclosed quote?)",
                MAX_RECORD_BYTES / 1024
            )));
        }
        Ok(n)
    }
}

fn send(tx: &mpsc::Sender<Record>, record: Record) -> bool {
    tx.blocking_send(record).is_ok()
}

/// The delimiter of a header line: the most frequent of `,` `;` tab outside quotes.
fn delimiter(header: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in header {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            b'\n' if !quoted => break,
            _ => {}
        }
    }
    let best = (0..3).max_by_key(|&i| (counts[i], 3 - i)).unwrap_or(0);
    [b',', b';', b'\t'][best]
}

fn read_csv(
    reader: impl Read,
    mark: &Mark,
    mapping: &[(String, LeadField)],
    tx: &mpsc::Sender<Record>,
) -> Result<(), String> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let head = reader
        .fill_buf()
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if head.is_empty() {
        return Err("the file is empty".into());
    }
    let bom = head.starts_with(b"\xef\xbb\xbf");
    let delimiter = delimiter(if bom { &head[3..] } else { head });
    if bom {
        reader.consume(3);
    }
    let mut csv = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(reader);
    let headers = csv
        .headers()
        .map_err(|e| format!("the header row cannot be read: {e}"))?
        .clone();
    let columns: Vec<Option<LeadField>> = headers
        .iter()
        .map(|h| {
            mapping
                .iter()
                .find(|(column, _)| column.trim().eq_ignore_ascii_case(h.trim()))
                .map(|(_, field)| *field)
                .or_else(|| LeadField::from_header(h))
        })
        .collect();
    let known = |f: LeadField| columns.contains(&Some(f));
    if ![LeadField::Email, LeadField::Phone].into_iter().any(known) {
        let found: Vec<&str> = headers.iter().take(20).collect();
        return Err(format!(
            "no column holds an email or a phone (columns: {}); name them (Email, E-Mail, Phone, Telefon …) or pass a mapping",
            found.join(", ")
        ));
    }
    let mut record = csv::StringRecord::new();
    let mut row = 0i32;
    loop {
        row += 1;
        mark.next_record();
        match csv.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(error) if matches!(error.kind(), csv::ErrorKind::Io(_)) => {
                return Err(format!("row {row}: {error}"));
            }
            Err(error) => {
                let message = match error.kind() {
                    csv::ErrorKind::Utf8 { .. } => "the row is not valid UTF-8".to_owned(),
                    _ => format!("the row cannot be read: {error}"),
                };
                if !send(
                    tx,
                    Record::Bad(row, issue("lead", "unreadable_row", message)),
                ) {
                    return Ok(());
                }
                continue;
            }
        }
        let outcome = if record.len() > MAX_FIELDS {
            Record::Bad(
                row,
                issue(
                    "lead",
                    "too_many_fields",
                    format!("{} fields; at most {MAX_FIELDS}", record.len()),
                ),
            )
        } else if let Some(long) = record
            .iter()
            .position(|f| f.chars().count() > MAX_FIELD_LEN)
        {
            let column = headers.get(long).unwrap_or("?");
            Record::Bad(
                row,
                issue(
                    column,
                    "field_too_long",
                    format!(
                        "more than {MAX_FIELD_LEN} characters; is a quote left open before it?"
                    ),
                ),
            )
        } else {
            let mut lead = RawLead::default();
            for (value, column) in record.iter().zip(&columns) {
                if let Some(field) = column
                    && !value.trim().is_empty()
                {
                    lead.set_field(*field, LeadValue::Text(value.to_owned()));
                }
            }
            if lead.fields.is_empty() {
                row -= 1; // An empty line is not a row.
                continue;
            }
            Record::Lead(row, lead)
        };
        if !send(tx, outcome) {
            return Ok(());
        }
    }
}

fn read_ndjson(reader: impl Read, mark: &Mark, tx: &mpsc::Sender<Record>) -> Result<(), String> {
    let reader = BufReader::with_capacity(64 * 1024, reader);
    let mut row = 0i32;
    for line in reader.lines() {
        let line = line.map_err(|e| format!("line {}: {e}", row + 1))?;
        mark.next_record();
        let line = line.trim().trim_start_matches('\u{feff}');
        if line.is_empty() {
            continue;
        }
        row += 1;
        let record = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) => match lead_from_json(&value) {
                Ok(lead) => Record::Lead(row, lead),
                Err(issue) => Record::Bad(row, issue),
            },
            Err(e) => Record::Bad(row, issue("lead", "invalid_json", e.to_string())),
        };
        if !send(tx, record) {
            return Ok(());
        }
    }
    if row == 0 {
        return Err("the file holds no lead".into());
    }
    Ok(())
}

fn read_json(reader: impl Read, mark: &Mark, tx: &mpsc::Sender<Record>) -> Result<(), String> {
    use serde::de::{Deserializer as _, SeqAccess, Visitor};

    struct Leads<'a>(&'a mpsc::Sender<Record>, &'a Mark);

    impl<'de> Visitor<'de> for Leads<'_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of lead objects")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut row = 0i32;
            while let Some(value) = seq.next_element::<serde_json::Value>()? {
                self.1.next_record();
                row += 1;
                let record = match lead_from_json(&value) {
                    Ok(lead) => Record::Lead(row, lead),
                    Err(issue) => Record::Bad(row, issue),
                };
                if !send(self.0, record) {
                    break;
                }
            }
            Ok(())
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
            let value =
                serde_json::Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
            let record = match lead_from_json(&value) {
                Ok(lead) => Record::Lead(1, lead),
                Err(issue) => Record::Bad(1, issue),
            };
            send(self.0, record);
            Ok(())
        }
    }

    let reader = BufReader::with_capacity(64 * 1024, reader);
    let mut de = serde_json::Deserializer::from_reader(reader);
    de.deserialize_any(Leads(tx, mark))
        .map_err(|e| format!("the file is not a JSON array of leads: {e}"))
}

/// The payload of `import-file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportFilePayload {
    /// The import (its file is `<import_dir>/<id>`).
    pub import_id: String,
}

/// What an import was asked to do, as stored with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StoredOptions {
    /// The import options.
    pub options: ImportOptions,
    /// Column → field overrides.
    pub mapping: Vec<(String, String)>,
}

/// A scope as stored with an import.
pub fn scope_to_string(scope: &CustomerScope) -> Option<String> {
    match scope {
        CustomerScope::All => None,
        CustomerScope::OwnedBy(s) => Some(format!("own:{s}")),
        CustomerScope::OwnedByOrUnassigned(s) => Some(format!("own_or_unassigned:{s}")),
    }
}

fn scope_from_string(raw: Option<&str>) -> CustomerScope {
    match raw.and_then(|r| r.split_once(':')) {
        Some(("own", s)) => CustomerScope::OwnedBy(s.to_owned()),
        Some(("own_or_unassigned", s)) => CustomerScope::OwnedByOrUnassigned(s.to_owned()),
        _ => CustomerScope::All,
    }
}

/// `import-file`: imports one uploaded file, recording progress as it goes.
pub struct ImportFile {
    db: Db,
    clock: Arc<dyn Clock>,
    intake: Intake,
    dir: PathBuf,
    audit: Arc<dyn CustomerAudit>,
}

impl std::fmt::Debug for ImportFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportFile")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ImportFile {
    /// The handler; files are read from `dir`.
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        intake: Intake,
        dir: PathBuf,
        audit: Arc<dyn CustomerAudit>,
    ) -> Self {
        Self {
            db,
            clock,
            intake,
            dir,
            audit,
        }
    }

    async fn fail(&self, id: &str, reason: &str) -> Result<(), JobError> {
        imports::finish(&self.db, id, Some(reason), self.clock.now())
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
        let _ = std::fs::remove_file(self.dir.join(id));
        Ok(())
    }
}

#[async_trait]
impl JobHandler for ImportFile {
    fn kind(&self) -> &'static str {
        IMPORT_FILE
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 30,
            ..RetryPolicy::default()
        }
    }

    async fn dead(&self, payload: &str, error: &str) {
        if let Ok(job) = serde_json::from_str::<ImportFilePayload>(payload) {
            let _ = self
                .fail(&job.import_id, &format!("the import job failed: {error}"))
                .await;
        }
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        let job: ImportFilePayload = serde_json::from_str(payload)
            .map_err(|e| JobError::Fatal(format!("the payload does not deserialize: {e}")))?;
        let import = imports::get(&self.db, &job.import_id)
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?
            .ok_or_else(|| JobError::Fatal(format!("import {} does not exist", job.import_id)))?;
        if import.finished_at.is_some() {
            return Ok(());
        }
        let stored: StoredOptions = serde_json::from_str(&import.options).unwrap_or_default();
        let mut mapping = Vec::new();
        for (column, field) in &stored.mapping {
            match LeadField::from_header(field) {
                Some(f) => mapping.push((column.clone(), f)),
                None => {
                    return self
                        .fail(
                            &import.id,
                            &format!("mapping: `{field}` is not a lead field"),
                        )
                        .await;
                }
            }
        }
        let Ok(format) = import.format.parse::<Format>() else {
            return self.fail(&import.id, "unknown file format").await;
        };
        let path = self.dir.join(&import.id);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                return self
                    .fail(&import.id, &format!("the uploaded file is gone: {e}"))
                    .await;
            }
        };
        // One worker at a time: a job whose lease ran out while this import still runs is
        // claimed by another worker, which must wait instead of importing the file again.
        let runner = uuid::Uuid::new_v4().to_string();
        let now = self.clock.now();
        let claimed = imports::claim(
            &self.db,
            &import.id,
            &runner,
            now,
            now - chrono::Duration::minutes(2),
        )
        .await
        .map_err(|e| JobError::Retryable(e.to_string()))?;
        if !claimed {
            return Err(JobError::Retryable(
                "another worker is importing this file".into(),
            ));
        }
        let scope = scope_from_string(import.owner_scope.as_deref());
        let (tx, mut rx) = mpsc::channel::<Record>(1024);
        let reader = tokio::task::spawn_blocking(move || read(format, file, &mapping, &tx));

        // Resume after the last recorded batch.
        let resume = import.rows_done;
        let mut state = BatchState {
            counts: import.counts,
            done: resume,
            timings: Timings::default(),
        };
        let started = std::time::Instant::now();
        // Records are taken in batches: a batch's new, distinct leads are stored together (one
        // transaction of multi-row statements); the others, one by one. Batches overlap: the
        // next batch is validated and its rows built on two threads ([`Preparers`]) while
        // this one is written, so the two cores share the work. On PostgreSQL a batch's rows
        // are also inserted while the batch before completes; its audit entries, events and
        // commit wait for that one, so the chain, the event stream and the recorded progress
        // stay in file order. A lead repeating one of an earlier batch is found as a
        // duplicate: by the look-up once that batch has committed, by its contacts in memory
        // before.
        let context = Arc::new(PrepareContext {
            intake: self.intake.clone(),
            audit: self.audit.clone(),
            clock: self.clock.clone(),
            options: stored.options.clone(),
            scope: scope.clone(),
            import: (import.id.clone(), import.created_at),
            overlapping: overlapping(&self.db),
        });
        let preparers = Preparers::start(&context, self.db.backend())
            .map_err(|e| JobError::Retryable(format!("cannot start the import's threads: {e}")))?;
        let batch = batch_size(context.overlapping);
        let mut records = Vec::with_capacity(batch);
        let mut preparing = None;
        let mut writing: Option<InFlight> = None;
        let mut open = true;
        while open {
            match rx.recv().await {
                Some(Record::Lead(row, _) | Record::Bad(row, _)) if row <= resume => continue,
                Some(record) => {
                    records.push(record);
                    if records.len() < batch {
                        continue;
                    }
                }
                None => open = false,
            }
            let next = (!records.is_empty()).then(|| {
                let records = std::mem::replace(&mut records, Vec::with_capacity(batch));
                tokio::spawn(preparers.prepare(context.clock.now(), records))
            });
            let previous = std::mem::replace(&mut preparing, next);
            if let Some(previous) = previous
                && !self
                    .store_prepared(previous, &context, &runner, &mut state, &mut writing)
                    .await?
            {
                return Ok(()); // Another worker took over (this one stalled): it goes on.
            }
        }
        if let Some(last) = preparing.take()
            && !self
                .store_prepared(last, &context, &runner, &mut state, &mut writing)
                .await?
        {
            return Ok(());
        }
        if let Some(last) = writing.take()
            && !self.complete(last, &context, &runner, &mut state).await?
        {
            return Ok(());
        }
        let BatchState {
            counts,
            done,
            timings,
        } = state;
        tracing::debug!(
            import_id = %import.id,
            total_ms = started.elapsed().as_millis(),
            wait_prepare_ms = timings.wait_prepare.as_millis(),
            lookup_ms = timings.lookup.as_millis(),
            insert_ms = timings.insert.as_millis(),
            one_by_one_ms = timings.one_by_one.as_millis(),
            progress_ms = timings.progress.as_millis(),
            "Import phases."
        );
        let read = reader
            .await
            .map_err(|e| JobError::Retryable(format!("the reader failed: {e}")))?;
        match read {
            Ok(()) => {
                imports::finish(&self.db, &import.id, None, self.clock.now())
                    .await
                    .map_err(|e| JobError::Retryable(e.to_string()))?;
                let _ = std::fs::remove_file(&path);
                tracing::info!(import_id = %import.id, rows = done, created = counts.created, invalid = counts.invalid, "File import completed.");
                Ok(())
            }
            Err(reason) => self.fail(&import.id, &reason).await,
        }
    }
}

/// The id of the customer row `row` of an import creates: time-ordered (the import's start),
/// then ordered by row, and derived from the import and the row, so a replay of the row finds
/// its own customer. Ordered by row so that an import's customers (and the indexes keyed by
/// customer: runs, audit entries, consents) are appended at the end of their B-trees instead
/// of written all over them, which on a large database costs a page read and write per index.
fn row_customer_id(
    (import, started): (&str, chrono::DateTime<chrono::Utc>),
    row: i32,
) -> crm_domain::CustomerId {
    let digest = Sha256::digest(format!("{import}:{row}").as_bytes());
    let r = u32::try_from(row).unwrap_or_default();
    // UUIDv7 after its 48-bit time: 4 version bits, 12 bits, 2 variant bits, 62 bits. The row
    // takes the 32 bits after the time (skipping version and variant), the digest the rest.
    let bytes = r.to_be_bytes();
    let random = [
        bytes[0] >> 4,
        (bytes[0] << 4) | (bytes[1] >> 4),
        ((bytes[1] & 0x0f) << 2) | (bytes[2] >> 6),
        (bytes[2] << 2) | (bytes[3] >> 6),
        (bytes[3] << 2) | (digest[0] & 0x03),
        digest[1],
        digest[2],
        digest[3],
        digest[4],
        digest[5],
    ];
    let millis = u64::try_from(started.timestamp_millis()).unwrap_or_default();
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .into()
}

/// What to do with one record of a batch.
enum Plan {
    /// Decided already (invalid).
    Done(Outcome),
    /// New and distinct: stored with the batch.
    Fast(Box<FastLead>),
    /// Duplicates a customer or an earlier lead of the batch: imported on its own.
    Slow(RawLead),
}

/// What a worker needs to prepare batches away from the job's task.
struct PrepareContext {
    intake: Intake,
    audit: Arc<dyn CustomerAudit>,
    clock: Arc<dyn Clock>,
    options: ImportOptions,
    scope: CustomerScope,
    /// The import's id and start (see [`row_customer_id`]).
    import: (String, chrono::DateTime<chrono::Utc>),
    /// Whether batches are written while the one before completes ([`overlapping`]).
    overlapping: bool,
}

/// Where an import validates batches and builds their rows ([`PrepareContext::prepare`]),
/// half of each batch on each of two threads (validation, phone numbers above all, is the
/// costly part).
enum Preparers {
    /// SQLite: two threads of the import's own, which end with it. The rows are the bulk of
    /// what an import allocates, and glibc keeps freed memory in the arena of the thread that
    /// allocated it: built on whichever blocking threads were idle, batches spread over a
    /// dozen arenas that each kept one (10–30 MiB of SQLite's peak RSS at 1,000,000 rows,
    /// see BENCHMARKS.md); built here, they stay in two. The import is a little slower.
    Own([std::sync::mpsc::Sender<PrepareWork>; 2]),
    /// PostgreSQL: tokio's blocking pool. Its peak RSS is far from the limit, and its own
    /// threads measured 17 % slower there.
    Pool(Arc<PrepareContext>),
}

/// Half a batch to prepare, and where to send it prepared.
type PrepareWork = (
    Vec<Record>,
    chrono::DateTime<chrono::Utc>,
    tokio::sync::oneshot::Sender<Prepared>,
);

impl Preparers {
    fn start(context: &Arc<PrepareContext>, backend: crm_store::Backend) -> std::io::Result<Self> {
        if backend == crm_store::Backend::Postgres {
            return Ok(Self::Pool(context.clone()));
        }
        let start = || {
            let (tx, rx) = std::sync::mpsc::channel::<PrepareWork>();
            let context = context.clone();
            std::thread::Builder::new()
                .name("crm-import".into())
                .spawn(move || {
                    for (records, now, reply) in rx {
                        let _ = reply.send(context.prepare(records, now));
                    }
                })?;
            Ok::<_, std::io::Error>(tx)
        };
        Ok(Self::Own([start()?, start()?]))
    }

    /// Prepares `records`, half on each thread.
    fn prepare(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        mut records: Vec<Record>,
    ) -> impl std::future::Future<Output = Result<Prepared, String>> + Send + use<> {
        let second = records.split_off(records.len() / 2);
        // Either way a half comes back through a oneshot, dropped unsent if its thread failed.
        let replies: Vec<tokio::sync::oneshot::Receiver<Prepared>> = [records, second]
            .into_iter()
            .enumerate()
            .map(|(i, half)| {
                let (reply, prepared) = tokio::sync::oneshot::channel();
                match self {
                    Self::Own(threads) => {
                        let _ = threads[i].send((half, now, reply));
                    }
                    Self::Pool(context) => {
                        let context = context.clone();
                        tokio::task::spawn_blocking(move || {
                            let _ = reply.send(context.prepare(half, now));
                        });
                    }
                }
                prepared
            })
            .collect();
        async move {
            let mut plans = Vec::new();
            for prepared in replies {
                let prepared = prepared
                    .await
                    .map_err(|_| "a thread preparing the batch stopped".to_owned())?;
                plans.extend(prepared.plans);
            }
            Ok(Prepared { plans, now })
        }
    }
}

/// A batch validated, with the rows of its leads built: what is left is database work.
struct Prepared {
    plans: Vec<(i32, Plan)>,
    now: chrono::DateTime<chrono::Utc>,
}

/// A new lead as the fast path writes it.
struct FastLead {
    customer: crm_domain::Customer,
    lead: RawLead,
    /// Its rows, its run, audit entry and consents included (none in a dry run).
    rows: Option<crm_store::customers::LeadRows>,
}

/// A batch being written: its fast leads' transaction runs on a task of its own while the
/// batch before it completes (see [`crm_store::customers::insert_leads`]).
struct InFlight {
    plans: Vec<(i32, Plan)>,
    /// Every email and phone of its leads, stored or not yet: the next batch is looked up
    /// before this one has committed, so a lead of the next batch that repeats one of these
    /// goes the careful way.
    contacts: std::collections::HashSet<String>,
    /// The fast path's transaction (none in a dry run).
    insert: Option<tokio::task::JoinHandle<Result<bool, crm_store::StoreError>>>,
}

/// What an import has done so far, carried from batch to batch.
struct BatchState {
    counts: imports::Counts,
    done: i32,
    timings: Timings,
}

/// Where an import's time went (logged at debug level when it completes).
#[derive(Default)]
struct Timings {
    /// Waiting for the next batch to be validated.
    wait_prepare: std::time::Duration,
    /// Looking up held and erased contacts.
    lookup: std::time::Duration,
    /// The fast path's multi-row transaction.
    insert: std::time::Duration,
    /// Duplicates and fallbacks, one by one.
    one_by_one: std::time::Duration,
    /// Recording progress and issues.
    progress: std::time::Duration,
}

impl PrepareContext {
    fn import(&self) -> (&str, chrono::DateTime<chrono::Utc>) {
        (&self.import.0, self.import.1)
    }

    /// Validates records and builds what their new leads write (CPU only: no database).
    fn prepare(&self, records: Vec<Record>, now: chrono::DateTime<chrono::Utc>) -> Prepared {
        let plans = records
            .into_iter()
            .map(|record| match record {
                Record::Bad(row, issue) => (
                    row,
                    Plan::Done(Outcome::Invalid {
                        issues: vec![issue],
                    }),
                ),
                Record::Lead(row, mut lead) => match owned_by(&mut lead, &self.scope) {
                    Some(issue) => (
                        row,
                        Plan::Done(Outcome::Invalid {
                            issues: vec![issue],
                        }),
                    ),
                    None => match self.intake.parse(&lead, &self.options, now) {
                        Ok(mut customer) => {
                            customer.id = row_customer_id(self.import(), row);
                            (row, Plan::Fast(Box::new(self.fast(customer, lead, now))))
                        }
                        Err(issues) => (row, Plan::Done(Outcome::Invalid { issues })),
                    },
                },
            })
            .collect();
        Prepared { plans, now }
    }

    /// The rows a new lead writes: the customer, its pipeline run and event, consents and
    /// audit entry, built here so that the batch's writer only writes them.
    fn fast(
        &self,
        customer: crm_domain::Customer,
        lead: RawLead,
        now: chrono::DateTime<chrono::Utc>,
    ) -> FastLead {
        if self.options.dry_run {
            return FastLead {
                customer,
                lead,
                rows: None,
            };
        }
        let (mut runs, mut events, mut consents) = (Vec::new(), Vec::new(), Vec::new());
        for effect in self.intake.run_effects(&customer, "import", now) {
            match effect {
                crm_store::effects::Effect::StartRun(run) => runs.push(run),
                crm_store::effects::Effect::Event(event) => events.push(event),
                _ => {}
            }
        }
        for effect in Intake::consent_effects(&customer, "file import") {
            if let crm_store::effects::Effect::Consent(consent) = effect {
                consents.push(consent);
            }
        }
        let audit = self.audit.customer("customer.import", None, &customer);
        let rows =
            crm_store::customers::LeadRows::new(&customer, &runs, events, audit, &consents, now);
        FastLead {
            customer,
            lead,
            rows: Some(rows),
        }
    }
}

impl ImportFile {
    /// Waits for a prepared batch and starts writing it, then completes the batch before it
    /// (its transaction, duplicates, progress) and lets this one commit. False if another
    /// worker took the import over.
    async fn store_prepared(
        &self,
        prepared: tokio::task::JoinHandle<Result<Prepared, String>>,
        context: &PrepareContext,
        runner: &str,
        state: &mut BatchState,
        writing: &mut Option<InFlight>,
    ) -> Result<bool, JobError> {
        let waited = std::time::Instant::now();
        let prepared = prepared
            .await
            .map_err(|e| JobError::Retryable(format!("validating a batch failed: {e}")))?
            .map_err(|e| JobError::Retryable(format!("validating a batch failed: {e}")))?;
        state.timings.wait_prepare += waited.elapsed();
        // Until it is sent, this batch's transaction does not append to the audit chain or
        // commit; dropped unsent (the batch before failed, or this worker lost the import),
        // it rolls back.
        let (before_done, after) = tokio::sync::oneshot::channel::<()>();
        let flight = self
            .begin(
                prepared,
                context,
                writing.as_ref().map(|w| &w.contacts),
                after,
                &mut state.timings,
            )
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
        if let Some(before) = writing.take()
            && !self.complete(before, context, runner, state).await?
        {
            return Ok(false);
        }
        let _ = before_done.send(());
        if !context.overlapping {
            return self.complete(flight, context, runner, state).await;
        }
        *writing = Some(flight);
        Ok(true)
    }

    /// Completes a batch: waits for its transaction, stores its other leads one by one and
    /// records its progress. False if another worker took the import over.
    async fn complete(
        &self,
        flight: InFlight,
        context: &PrepareContext,
        runner: &str,
        state: &mut BatchState,
    ) -> Result<bool, JobError> {
        let outcomes = self
            .finish_batch(flight, context, &mut state.timings)
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
        let mut issues: Vec<RowIssue> = Vec::new();
        let counts = &mut state.counts;
        for (row, outcome) in outcomes {
            match &outcome {
                Outcome::Created { .. } => counts.created += 1,
                Outcome::Updated { .. } => counts.updated += 1,
                Outcome::Merged { .. } => counts.merged += 1,
                Outcome::Skipped { .. } => counts.skipped += 1,
                Outcome::Invalid { issues: found } => {
                    counts.invalid += 1;
                    issues.extend(found.iter().map(|i| RowIssue {
                        row,
                        field: i.field.clone(),
                        code: i.code.clone(),
                        message: i.message.clone(),
                    }));
                }
            }
            state.done = state.done.max(row);
        }
        let recording = std::time::Instant::now();
        let kept = imports::progress(
            &self.db,
            &context.import.0,
            runner,
            state.done,
            state.counts,
            &issues,
            self.clock.now(),
        )
        .await
        .map_err(|e| JobError::Retryable(e.to_string()))?;
        state.timings.progress += recording.elapsed();
        Ok(kept)
    }

    /// Looks up a prepared batch's contacts and starts the transaction of its new, distinct
    /// leads, which commits once `after` is sent. A lead whose email or phone is held already,
    /// repeats one of the batch before (`before`: not committed yet) or of an earlier lead of
    /// this batch, goes the careful way in [`ImportFile::finish_batch`].
    async fn begin(
        &self,
        prepared: Prepared,
        context: &PrepareContext,
        before: Option<&std::collections::HashSet<String>>,
        after: tokio::sync::oneshot::Receiver<()>,
        timings: &mut Timings,
    ) -> Result<InFlight, crm_store::StoreError> {
        let Prepared { mut plans, now } = prepared;
        let looking = std::time::Instant::now();
        let contacts = |c: &crm_domain::Customer| {
            [
                c.email.as_ref().map(|e| e.as_str().to_owned()),
                c.phone.as_ref().map(|p| p.as_str().to_owned()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<String>>()
        };
        let (mut emails, mut phones) = (Vec::new(), Vec::new());
        for (_, plan) in &plans {
            if let Plan::Fast(fast) = plan {
                let c = &fast.customer;
                emails.extend(c.email.as_ref().map(|e| e.as_str().to_owned()));
                phones.extend(c.phone.as_ref().map(|p| p.as_str().to_owned()));
            }
        }
        let mut taken = crm_store::customers::taken_contacts(&self.db, &emails, &phones).await?;
        // Erased people go the careful way too, where intake refuses them.
        taken.extend(crm_store::gdpr::erased_among(&self.db, &emails, &phones, now).await?);
        let mut seen = std::collections::HashSet::new();
        for (_, plan) in &mut plans {
            if let Plan::Fast(fast) = plan {
                let keys = contacts(&fast.customer);
                let held = keys.iter().any(|k| {
                    taken.contains(k)
                        || seen.contains(k)
                        || before.is_some_and(|before| before.contains(k))
                });
                seen.extend(keys);
                if held {
                    *plan = Plan::Slow(std::mem::take(&mut fast.lead));
                }
            }
        }
        timings.lookup += looking.elapsed();
        let insert = (!context.options.dry_run).then(|| {
            let leads: Vec<_> = plans
                .iter_mut()
                .filter_map(|(_, plan)| match plan {
                    Plan::Fast(fast) => fast.rows.take(),
                    _ => None,
                })
                .collect();
            let db = self.db.clone();
            // Bounded, so that no wait can close a cycle: the batch before's one-by-one leads
            // could wait for a concurrent writer that waits for one of this batch's contacts.
            // Past it, this batch rolls back and its leads go one by one.
            let before_done = async {
                tokio::time::timeout(WAIT_FOR_BATCH_BEFORE, after)
                    .await
                    .is_ok_and(|sent| sent.is_ok())
            };
            tokio::spawn(async move {
                crm_store::customers::insert_leads(&db, leads, now, before_done).await
            })
        });
        Ok(InFlight {
            plans,
            contacts: seen,
            insert,
        })
    }

    /// Waits for a batch's transaction and stores its other leads one by one; returns each
    /// row's outcome. The import (its id and start) names the customers the batch creates, so
    /// a batch replayed after a crash (stored, but its progress not yet recorded) recognizes
    /// them and counts them as created again rather than as duplicates.
    async fn finish_batch(
        &self,
        flight: InFlight,
        context: &PrepareContext,
        timings: &mut Timings,
    ) -> Result<Vec<(i32, Outcome)>, crm_store::StoreError> {
        let InFlight {
            mut plans, insert, ..
        } = flight;
        let (options, scope, import) = (&context.options, &context.scope, context.import());
        if let Some(insert) = insert {
            let inserting = std::time::Instant::now();
            let stored = insert.await.map_err(|e| {
                crm_store::StoreError::Unavailable(format!("the batch's writer failed: {e}"))
            })??;
            if !stored {
                // A concurrent writer took one of the contacts: store them one by one.
                for (_, plan) in &mut plans {
                    if let Plan::Fast(fast) = plan {
                        *plan = Plan::Slow(std::mem::take(&mut fast.lead));
                    }
                }
            }
            timings.insert += inserting.elapsed();
        }
        let one_by_one = std::time::Instant::now();
        let mut outcomes = Vec::with_capacity(plans.len());
        // Freed on a blocking thread, not on the path the import waits on.
        let mut freed = Vec::with_capacity(plans.len());
        for (row, plan) in plans {
            let outcome = match plan {
                Plan::Done(outcome) => outcome,
                Plan::Fast(fast) => {
                    let customer_id = fast.customer.id;
                    freed.push(fast);
                    Outcome::Created { customer_id }
                }
                Plan::Slow(lead) => {
                    // Created one by one, the row's customer has the id it has in a batch.
                    let id = row_customer_id(import, row);
                    let outcome = self
                        .intake
                        .import_reported(&lead, options, scope, self.audit.as_ref(), Some(id))
                        .await;
                    match outcome {
                        // This import created it, in a batch whose progress a crash lost.
                        Outcome::Updated { customer_id }
                        | Outcome::Merged { customer_id }
                        | Outcome::Skipped { customer_id, .. }
                            if customer_id == id =>
                        {
                            Outcome::Created { customer_id }
                        }
                        other => other,
                    }
                }
            };
            outcomes.push((row, outcome));
        }
        timings.one_by_one += one_by_one.elapsed();
        drop(tokio::task::spawn_blocking(move || drop(freed)));
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(format: Format, text: &str) -> (Vec<Record>, Result<(), String>) {
        let (tx, mut rx) = mpsc::channel(10_000);
        let bytes = text.as_bytes().to_vec();
        let result = std::thread::spawn(move || read(format, &bytes[..], &[], &tx))
            .join()
            .unwrap();
        let mut out = Vec::new();
        while let Ok(record) = rx.try_recv() {
            out.push(record);
        }
        (out, result)
    }

    #[test]
    fn a_messy_csv_is_read_row_by_row() {
        let csv = "\u{feff}Name;E-Mail;Telefon;Firma;Notiz\n\
                   Jürgen Müller;J.Mueller@Firma.de;030 123456;Müller GmbH;\"zwei\nZeilen; mit Semikolon\"\n\
                   \n\
                   Иван Петровић;ivan@firma.rs;;;\n\
                   ;;;;\n";
        let (records, result) = records(Format::Csv, csv);
        assert_eq!(result, Ok(()));
        assert_eq!(records.len(), 2, "{records:?}");
        let Record::Lead(1, first) = &records[0] else {
            panic!("{records:?}")
        };
        assert_eq!(
            first.fields.get(&LeadField::Notes),
            Some(&LeadValue::Text("zwei\nZeilen; mit Semikolon".into()))
        );
        assert_eq!(
            first.fields.get(&LeadField::Email),
            Some(&LeadValue::Text("J.Mueller@Firma.de".into()))
        );
        let Record::Lead(2, second) = &records[1] else {
            panic!("{records:?}")
        };
        assert_eq!(
            second.fields.get(&LeadField::Name),
            Some(&LeadValue::Text("Иван Петровић".into()))
        );
    }

    #[test]
    fn row_customer_ids_are_distinct_and_ordered_by_row() {
        let started = chrono::DateTime::from_timestamp_millis(1_764_900_000_000).unwrap();
        let id = |row| row_customer_id(("import-1", started), row).to_string();
        let ids: Vec<String> = [
            1,
            2,
            3,
            15,
            16,
            63,
            64,
            255,
            256,
            4095,
            4096,
            1 << 20,
            i32::MAX,
        ]
        .into_iter()
        .map(id)
        .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids, "distinct, in row order");
        assert_eq!(id(7), id(7), "a replayed row gets the same id");
        assert_ne!(
            row_customer_id(("import-2", started), 7).to_string(),
            id(7),
            "another import's row 7 does not"
        );
        let uuid = uuid::Uuid::parse_str(&id(5)).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn delimiters_are_detected() {
        assert_eq!(delimiter(b"a,b,c\n"), b',');
        assert_eq!(delimiter(b"a;b;\"c,d,e\"\n"), b';');
        assert_eq!(delimiter(b"a\tb\tc\n"), b'\t');
    }

    #[test]
    fn bad_files_and_rows_are_named() {
        assert!(records(Format::Csv, "").1.unwrap_err().contains("empty"));
        assert!(
            records(Format::Csv, "Lieblingsfarbe,Alter\nblau,3\n")
                .1
                .unwrap_err()
                .contains("no column holds an email or a phone")
        );
        let wide = format!("email\n{}\n", vec!["x"; 10_000].join(","));
        let (records_, _) = records(Format::Csv, &wide);
        assert!(matches!(&records_[0], Record::Bad(1, i) if i.code == "too_many_fields"));
        let open_quote = format!(
            "email,notes\na@b.de,\"never closed\n{}\n",
            "x,".repeat(6000)
        );
        let (records_, _) = records(Format::Csv, &open_quote);
        assert!(
            matches!(&records_[0], Record::Bad(1, i) if i.code == "field_too_long"),
            "{records_:?}"
        );
        let (records_, result) =
            records(Format::Ndjson, "{\"email\":\"a@b.de\"}\nnot json\n\n[1]\n");
        assert_eq!(result, Ok(()));
        assert!(matches!(&records_[1], Record::Bad(2, i) if i.code == "invalid_json"));
        assert!(matches!(&records_[2], Record::Bad(3, i) if i.code == "not_an_object"));
        let (records_, result) = records(Format::Json, "[{\"email\":\"a@b.de\"}, 5]");
        assert_eq!(result, Ok(()));
        assert_eq!(records_.len(), 2);
        assert!(records(Format::Json, "\"text\"").1.is_err());
        assert_eq!(Format::detect("leads.CSV", None, b""), Some(Format::Csv));
        assert_eq!(Format::detect("upload", None, b"  [{"), Some(Format::Json));
        assert_eq!(Format::detect("upload", None, b"\xff\xfe\x00"), None);
    }
}
