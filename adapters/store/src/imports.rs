//! File imports of leads: one row per import with its progress and counts, and the problems of
//! its rows. The import itself runs as a job that records its progress batch by batch.

use crate::{
    db::{Db, with_conn},
    effects::WriteEffects as _,
    error::StoreResult,
    jobs::NewJob,
    rows::{from_db_time, to_db_time},
    schema::{import_issues, imports},
};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

/// Counts of what an import did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// New customers.
    pub created: i32,
    /// Customers overwritten.
    pub updated: i32,
    /// Customers filled.
    pub merged: i32,
    /// Duplicates left alone.
    pub skipped: i32,
    /// Rows not importable.
    pub invalid: i32,
}

impl Counts {
    /// Rows counted.
    pub fn total(&self) -> i32 {
        self.created + self.updated + self.merged + self.skipped + self.invalid
    }
}

/// An import.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// Identity (a UUID).
    pub id: String,
    /// The uploaded file's name.
    pub file_name: String,
    /// `csv`, `json` or `ndjson`.
    pub format: String,
    /// The import options (JSON).
    pub options: String,
    /// `queued`, `running`, `completed` or `failed`.
    pub status: String,
    /// Who started it.
    pub created_by: String,
    /// The row-level scope it runs with (JSON), if restricted.
    pub owner_scope: Option<String>,
    /// Rows read and handled so far.
    pub rows_done: i32,
    /// What it did so far.
    pub counts: Counts,
    /// Why it failed as a whole.
    pub error: Option<String>,
    /// Started.
    pub created_at: DateTime<Utc>,
    /// Last progress.
    pub updated_at: DateTime<Utc>,
    /// Ended.
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = imports, treat_none_as_default_value = false)]
struct ImportRow {
    id: String,
    file_name: String,
    format: String,
    options: String,
    status: String,
    created_by: String,
    owner_scope: Option<String>,
    rows_done: i32,
    created: i32,
    updated: i32,
    merged: i32,
    skipped: i32,
    invalid: i32,
    error: Option<String>,
    runner: Option<String>,
    heartbeat: Option<NaiveDateTime>,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    finished_at: Option<NaiveDateTime>,
}

impl From<ImportRow> for Import {
    fn from(row: ImportRow) -> Self {
        Import {
            id: row.id,
            file_name: row.file_name,
            format: row.format,
            options: row.options,
            status: row.status,
            created_by: row.created_by,
            owner_scope: row.owner_scope,
            rows_done: row.rows_done,
            counts: Counts {
                created: row.created,
                updated: row.updated,
                merged: row.merged,
                skipped: row.skipped,
                invalid: row.invalid,
            },
            error: row.error,
            created_at: from_db_time(row.created_at),
            updated_at: from_db_time(row.updated_at),
            finished_at: row.finished_at.map(from_db_time),
        }
    }
}

/// An import to start.
#[derive(Debug, Clone)]
pub struct NewImport {
    /// Identity (the stored file is named after it).
    pub id: String,
    /// The uploaded file's name.
    pub file_name: String,
    /// `csv`, `json` or `ndjson`.
    pub format: String,
    /// Options (JSON).
    pub options: String,
    /// Who.
    pub created_by: String,
    /// Scope (JSON), if restricted.
    pub owner_scope: Option<String>,
}

/// A problem of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowIssue {
    /// The row (data rows from 1; a CSV's header is row 0).
    pub row: i32,
    /// The field, or `lead` / `file`.
    pub field: String,
    /// Stable code.
    pub code: String,
    /// In words.
    pub message: String,
}

/// Records an import and queues its job, in one transaction.
pub async fn create(
    db: &Db,
    new: NewImport,
    job: NewJob,
    now: DateTime<Utc>,
) -> StoreResult<Import> {
    let at = to_db_time(now);
    let row = ImportRow {
        id: new.id,
        file_name: new.file_name,
        format: new.format,
        options: new.options,
        status: "queued".into(),
        created_by: new.created_by,
        owner_scope: new.owner_scope,
        rows_done: 0,
        created: 0,
        updated: 0,
        merged: 0,
        skipped: 0,
        invalid: 0,
        error: None,
        runner: None,
        heartbeat: None,
        created_at: at,
        updated_at: at,
        finished_at: None,
    };
    with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            diesel::insert_into(imports::table)
                .values(&row)
                .execute(conn)
                .await?;
            conn.enqueue_jobs(std::slice::from_ref(&job), now).await?;
            Ok::<_, diesel::result::Error>(())
        })
        .await?
    });
    db.committed(true, false);
    Ok(row.into())
}

/// The import with this id.
pub async fn get(db: &Db, id: &str) -> StoreResult<Option<Import>> {
    let row: Option<ImportRow> = with_conn!(db, |conn| {
        imports::table
            .find(id)
            .select(ImportRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    Ok(row.map(Import::from))
}

/// Takes an unfinished import for `runner`, unless another runner's heartbeat is younger than
/// `stale_before`: two workers never import one file at once (a job's lease may run out while
/// a long import is still going). True if taken.
pub async fn claim(
    db: &Db,
    id: &str,
    runner: &str,
    now: DateTime<Utc>,
    stale_before: DateTime<Utc>,
) -> StoreResult<bool> {
    let (at, stale) = (to_db_time(now), to_db_time(stale_before));
    let taken = with_conn!(db, |conn| {
        diesel::update(
            imports::table
                .filter(imports::id.eq(id))
                .filter(imports::finished_at.is_null())
                .filter(
                    imports::runner
                        .is_null()
                        .or(imports::runner.eq(runner))
                        .or(imports::heartbeat.lt(stale)),
                ),
        )
        .set((
            imports::runner.eq(Some(runner)),
            imports::heartbeat.eq(Some(at)),
            imports::status.eq("running"),
        ))
        .execute(conn)
        .await?
    });
    Ok(taken == 1)
}

/// Records the progress of a batch by the import's `runner`: the rows handled up to
/// `rows_done`, the counts so far and the batch's issues, in one transaction (a replayed batch
/// adds no issue twice); it also renews the runner's heartbeat. False if another runner took
/// the import over: the caller must stop.
pub async fn progress(
    db: &Db,
    id: &str,
    runner: &str,
    rows_done: i32,
    counts: Counts,
    issues: &[RowIssue],
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let at = to_db_time(now);
    let postgres = db.backend() == crate::Backend::Postgres;
    let kept = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            if postgres {
                // Like the batch it records (`customers::insert_leads`): not waited for. A
                // progress lost in a crash replays its batch, whose rows count as before.
                diesel::sql_query("SET LOCAL synchronous_commit = off")
                    .execute(conn)
                    .await?;
            }
            let kept = diesel::update(
                imports::table
                    .filter(imports::id.eq(id))
                    .filter(imports::runner.eq(runner))
                    .filter(imports::finished_at.is_null()),
            )
            .set((
                imports::heartbeat.eq(Some(at)),
                imports::status.eq("running"),
                imports::rows_done.eq(rows_done),
                imports::created.eq(counts.created),
                imports::updated.eq(counts.updated),
                imports::merged.eq(counts.merged),
                imports::skipped.eq(counts.skipped),
                imports::invalid.eq(counts.invalid),
                imports::updated_at.eq(at),
            ))
            .execute(conn)
            .await?;
            if kept == 0 {
                return Ok::<_, diesel::result::Error>(false);
            }
            let mut seq_of_row: Option<(i32, i32)> = None;
            for issue in issues {
                let seq = match seq_of_row {
                    Some((row, seq)) if row == issue.row => seq + 1,
                    _ => 0,
                };
                seq_of_row = Some((issue.row, seq));
                diesel::insert_into(import_issues::table)
                    .values((
                        import_issues::import_id.eq(id),
                        import_issues::row_no.eq(issue.row),
                        import_issues::seq.eq(seq),
                        import_issues::field.eq(&issue.field),
                        import_issues::code.eq(&issue.code),
                        import_issues::message.eq(&issue.message),
                    ))
                    .on_conflict_do_nothing()
                    .execute(conn)
                    .await?;
            }
            Ok(true)
        })
        .await?
    });
    Ok(kept)
}

/// Ends an import: `completed`, or `failed` with the reason.
pub async fn finish(db: &Db, id: &str, error: Option<&str>, now: DateTime<Utc>) -> StoreResult<()> {
    let at = to_db_time(now);
    let status = if error.is_some() {
        "failed"
    } else {
        "completed"
    };
    with_conn!(db, |conn| {
        diesel::update(
            imports::table
                .filter(imports::id.eq(id))
                .filter(imports::finished_at.is_null()),
        )
        .set((
            imports::status.eq(status),
            imports::error.eq(error),
            imports::updated_at.eq(at),
            imports::finished_at.eq(Some(at)),
        ))
        .execute(conn)
        .await?
    });
    Ok(())
}

/// Up to `limit` issues of an import after the issue `after` (`(row, seq)`), in row order,
/// each with its `(row, seq)` position.
pub async fn issues(
    db: &Db,
    id: &str,
    after: Option<(i32, i32)>,
    limit: usize,
) -> StoreResult<Vec<((i32, i32), RowIssue)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<(i32, i32, String, String, String)> = with_conn!(db, |conn| {
        let mut query = import_issues::table
            .filter(import_issues::import_id.eq(id))
            .into_boxed();
        if let Some((row, seq)) = after {
            query = query.filter(
                import_issues::row_no.gt(row).or(import_issues::row_no
                    .eq(row)
                    .and(import_issues::seq.gt(seq))),
            );
        }
        query
            .order_by((import_issues::row_no, import_issues::seq))
            .limit(limit)
            .select((
                import_issues::row_no,
                import_issues::seq,
                import_issues::field,
                import_issues::code,
                import_issues::message,
            ))
            .load(conn)
            .await?
    });
    Ok(rows
        .into_iter()
        .map(|(row, seq, field, code, message)| {
            (
                (row, seq),
                RowIssue {
                    row,
                    field,
                    code,
                    message,
                },
            )
        })
        .collect())
}
