//! Tasks: follow-ups for people (call the lead back, send the offer), with a due date and an
//! assignee.
//!
//! - A task belongs to one customer; rows are visible through the customer's [`CustomerScope`].
//! - At most one task per call (`call_id` is unique): [`insert`] of a follow-up for a call that
//!   already has one returns the existing task, so a replayed follow-up step creates none.
//! - [`update`] locks the row with its first statement, so the patch and its audit entry are
//!   applied to exactly the state they describe; `completed_at` is set when a task becomes
//!   done and cleared when it leaves done.
//! - Audit entries commit or roll back with the change they describe.

use crate::{
    Db, StoreError, StoreResult,
    audit::{AppendAudit as _, NewAuditEntry},
    customers::not_found as customer_not_found,
    db::with_conn,
    rows::{from_db_time, to_db_time},
    schema::{customers, tasks},
};
use chrono::{DateTime, NaiveDateTime, Utc};
use crm_domain::{CallId, Change, CustomerId, CustomerScope, FieldError, IdError};
use diesel::{
    prelude::*,
    result::{DatabaseErrorKind, Error as DieselError},
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::{fmt, str::FromStr};
use uuid::Uuid;

/// Identifies a task (UUIDv7, so newer tasks sort after older ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(Uuid);

impl TaskId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for TaskId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl FromStr for TaskId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(s.trim())
            .map(Self)
            .map_err(|_| IdError(s.to_owned()))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hyphenated lower case: the one form stored and returned.
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskStatus {
    /// To do.
    Open,
    /// Done (`completed_at` says when).
    Done,
    /// Not needed any more.
    Canceled,
}

impl TaskStatus {
    /// Every value.
    pub const ALL: &'static [Self] = &[Self::Open, Self::Done, Self::Canceled];

    /// The stored, lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Done => "done",
            Self::Canceled => "canceled",
        }
    }
}

impl FromStr for TaskStatus {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                FieldError::new(
                    "status",
                    "invalid_status",
                    format!("`{s}` is not a valid task status"),
                )
            })
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Identity.
    pub id: TaskId,
    /// The customer it is about.
    pub customer_id: CustomerId,
    /// What to do.
    pub title: String,
    /// Details.
    pub notes: Option<String>,
    /// Due.
    pub due_at: Option<DateTime<Utc>>,
    /// Who does it (a user's subject).
    pub assignee: Option<String>,
    /// Where it stands.
    pub status: TaskStatus,
    /// The call it follows up, if a call's end created it.
    pub call_id: Option<CallId>,
    /// Who created it (a user, a key, `pipeline`).
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// When it became done.
    pub completed_at: Option<DateTime<Utc>>,
}

/// A task to create (validated by the caller); it starts open.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Identity.
    pub id: TaskId,
    /// The customer (must exist and not be deleted).
    pub customer_id: CustomerId,
    /// What to do.
    pub title: String,
    /// Details.
    pub notes: Option<String>,
    /// Due.
    pub due_at: Option<DateTime<Utc>>,
    /// Who does it.
    pub assignee: Option<String>,
    /// The call it follows up (at most one task per call).
    pub call_id: Option<CallId>,
    /// Who creates it.
    pub created_by: String,
}

impl NewTask {
    /// The task [`insert`] stores at `now` (for audit entries written with it).
    pub fn task(&self, now: DateTime<Utc>) -> Task {
        let at = stored_time(now);
        Task {
            id: self.id,
            customer_id: self.customer_id,
            title: self.title.clone(),
            notes: self.notes.clone(),
            due_at: self.due_at.map(stored_time),
            assignee: self.assignee.clone(),
            status: TaskStatus::Open,
            call_id: self.call_id,
            created_by: self.created_by.clone(),
            created_at: at,
            updated_at: at,
            completed_at: None,
        }
    }
}

/// A partial update (validated by the caller): `None`/[`Change::Keep`] leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPatch {
    /// New title (cannot be cleared).
    pub title: Option<String>,
    /// Notes.
    pub notes: Change<String>,
    /// Due date.
    pub due_at: Change<DateTime<Utc>>,
    /// Assignee.
    pub assignee: Change<String>,
    /// New status (cannot be cleared).
    pub status: Option<TaskStatus>,
}

impl TaskPatch {
    /// `task` with the patch applied at `now`: `completed_at` is set when the status becomes
    /// done and cleared when it leaves done; `updated_at` moves only if something changed.
    pub fn apply(&self, task: &Task, now: DateTime<Utc>) -> Task {
        let now = stored_time(now);
        let mut next = task.clone();
        if let Some(title) = &self.title {
            next.title.clone_from(title);
        }
        self.notes.clone().apply(&mut next.notes);
        match self.due_at {
            Change::Keep => {}
            Change::Clear => next.due_at = None,
            Change::Set(at) => next.due_at = Some(stored_time(at)),
        }
        self.assignee.clone().apply(&mut next.assignee);
        if let Some(status) = self.status
            && status != next.status
        {
            next.status = status;
            next.completed_at = (status == TaskStatus::Done).then_some(now);
        }
        if next != *task {
            next.updated_at = now;
        }
        next
    }
}

/// Which tasks to list. No `Default`: the caller's row-level scope must always be given.
#[derive(Debug, Clone)]
pub struct TaskFilter {
    /// Of one customer.
    pub customer_id: Option<CustomerId>,
    /// Assigned to this subject.
    pub assignee: Option<String>,
    /// In this status.
    pub status: Option<TaskStatus>,
    /// Due before this time (tasks without a due date are left out).
    pub due_before: Option<DateTime<Utc>>,
    /// Of customers in this scope.
    pub scope: CustomerScope,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = tasks)]
#[diesel(treat_none_as_null = true)]
struct TaskRow {
    id: String,
    customer_id: String,
    title: String,
    notes: Option<String>,
    due_at: Option<NaiveDateTime>,
    assignee: Option<String>,
    status: String,
    call_id: Option<String>,
    created_by: String,
    created_at: NaiveDateTime,
    updated_at: NaiveDateTime,
    completed_at: Option<NaiveDateTime>,
}

/// `at` as it reads back from the database (microseconds).
fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    from_db_time(to_db_time(at))
}

impl From<&Task> for TaskRow {
    fn from(task: &Task) -> Self {
        Self {
            id: task.id.to_string(),
            customer_id: task.customer_id.to_string(),
            title: task.title.clone(),
            notes: task.notes.clone(),
            due_at: task.due_at.map(to_db_time),
            assignee: task.assignee.clone(),
            status: task.status.as_str().to_owned(),
            call_id: task.call_id.map(|c| c.to_string()),
            created_by: task.created_by.clone(),
            created_at: to_db_time(task.created_at),
            updated_at: to_db_time(task.updated_at),
            completed_at: task.completed_at.map(to_db_time),
        }
    }
}

impl TryFrom<TaskRow> for Task {
    type Error = StoreError;

    fn try_from(row: TaskRow) -> StoreResult<Self> {
        let corrupt = |what: &str, value: &str| StoreError::Corrupt {
            entity: "task",
            id: row.id.clone(),
            reason: format!("bad {what} `{value}`"),
        };
        Ok(Self {
            id: row.id.parse().map_err(|_| corrupt("id", &row.id))?,
            customer_id: row
                .customer_id
                .parse()
                .map_err(|_| corrupt("customer id", &row.customer_id))?,
            status: row
                .status
                .parse()
                .map_err(|_| corrupt("status", &row.status))?,
            call_id: row
                .call_id
                .as_deref()
                .map(|c| c.parse().map_err(|_| corrupt("call id", c)))
                .transpose()?,
            title: row.title,
            notes: row.notes,
            due_at: row.due_at.map(from_db_time),
            assignee: row.assignee,
            created_by: row.created_by,
            created_at: from_db_time(row.created_at),
            updated_at: from_db_time(row.updated_at),
            completed_at: row.completed_at.map(from_db_time),
        })
    }
}

/// Creates a task for a live customer, with `audit`, in one transaction. A follow-up of a call
/// that already has its task returns that task (and writes nothing). Fails with `NotFound` for
/// a customer that does not exist or is deleted.
pub async fn insert(
    db: &Db,
    new: &NewTask,
    audit: Option<NewAuditEntry>,
    now: DateTime<Utc>,
) -> StoreResult<Task> {
    if let Some(call) = new.call_id
        && let Some(existing) = by_call(db, call).await?
    {
        return Ok(existing);
    }
    let task = new.task(now);
    let row = TaskRow::from(&task);
    let customer = row.customer_id.clone();
    let result: StoreResult<()> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            // Write first, then check that the customer is alive, rolling back if not: a
            // transaction that starts with a write never has to upgrade a read lock on SQLite.
            diesel::insert_into(tasks::table)
                .values(&row)
                .execute(conn)
                .await?;
            let alive: i64 = customers::table
                .filter(customers::id.eq(&customer))
                .filter(customers::deleted_at.is_null())
                .count()
                .get_result(conn)
                .await?;
            if alive == 0 {
                return Err(customer_not_found(new.customer_id));
            }
            if let Some(entry) = &audit {
                conn.append_audit(entry).await?;
            }
            Ok(())
        })
        .await
    });
    match result {
        Ok(()) => Ok(task),
        Err(StoreError::Database(DieselError::DatabaseError(
            DatabaseErrorKind::ForeignKeyViolation,
            _,
        ))) => Err(customer_not_found(new.customer_id)),
        // Lost a race with another follow-up of the same call: that one is the task.
        Err(StoreError::Database(error)) if StoreError::is_unique_violation(&error) => {
            match new.call_id {
                Some(call) => by_call(db, call).await?.ok_or(StoreError::Database(error)),
                None => Err(StoreError::Database(error)),
            }
        }
        Err(other) => Err(other),
    }
}

/// The task with this id.
pub async fn get(db: &Db, id: TaskId) -> StoreResult<Option<Task>> {
    let key = id.to_string();
    let row: Option<TaskRow> = with_conn!(db, |conn| {
        tasks::table
            .find(&key)
            .select(TaskRow::as_select())
            .first(conn)
            .await
            .optional()
    })?;
    row.map(Task::try_from).transpose()
}

/// The follow-up task of a call.
pub async fn by_call(db: &Db, call: CallId) -> StoreResult<Option<Task>> {
    let key = call.to_string();
    let row: Option<TaskRow> = with_conn!(db, |conn| {
        tasks::table
            .filter(tasks::call_id.eq(&key))
            .select(TaskRow::as_select())
            .first(conn)
            .await
            .optional()
    })?;
    row.map(Task::try_from).transpose()
}

/// Tasks matching `filter`, newest first, before `before` (keyset paging), up to `limit + 1`
/// (the extra row tells the caller there is a next page).
pub async fn list(
    db: &Db,
    filter: &TaskFilter,
    before: Option<TaskId>,
    limit: usize,
) -> StoreResult<Vec<Task>> {
    let probe = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
    let rows: Vec<TaskRow> = with_conn!(db, |conn| {
        let mut query = tasks::table.select(TaskRow::as_select()).into_boxed();
        if let Some(customer) = filter.customer_id {
            query = query.filter(tasks::customer_id.eq(customer.to_string()));
        }
        if let Some(assignee) = &filter.assignee {
            query = query.filter(tasks::assignee.eq(assignee.clone()));
        }
        if let Some(status) = filter.status {
            query = query.filter(tasks::status.eq(status.as_str()));
        }
        if let Some(due_before) = filter.due_before {
            query = query.filter(tasks::due_at.lt(to_db_time(due_before)));
        }
        match &filter.scope {
            CustomerScope::All => {}
            CustomerScope::OwnedBy(subject) => {
                query = query.filter(
                    tasks::customer_id.eq_any(
                        customers::table
                            .filter(customers::owner.eq(subject.clone()))
                            .select(customers::id),
                    ),
                );
            }
            CustomerScope::OwnedByOrUnassigned(subject) => {
                query = query.filter(
                    tasks::customer_id.eq_any(
                        customers::table
                            .filter(
                                customers::owner
                                    .eq(subject.clone())
                                    .or(customers::owner.is_null()),
                            )
                            .select(customers::id),
                    ),
                );
            }
        }
        if let Some(before) = before {
            query = query.filter(tasks::id.lt(before.to_string()));
        }
        query
            .order_by(tasks::id.desc())
            .limit(probe)
            .load(conn)
            .await
    })?;
    rows.into_iter().map(Task::try_from).collect()
}

/// Applies `patch` at `now`, with the audit entry `audit(before, after)` if anything changed,
/// in one transaction; `None` if there is no such task.
pub async fn update(
    db: &Db,
    id: TaskId,
    patch: &TaskPatch,
    audit: impl Fn(&Task, &Task) -> Option<NewAuditEntry> + Sync,
    now: DateTime<Utc>,
) -> StoreResult<Option<Task>> {
    let key = id.to_string();
    with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            // Lock the row first with a write that changes nothing (a row lock on PostgreSQL,
            // the write lock on SQLite): the read below is then the state the patch applies to.
            let locked = diesel::update(tasks::table.find(&key))
                .set(tasks::updated_at.eq(tasks::updated_at))
                .execute(conn)
                .await?;
            if locked == 0 {
                return Ok(None);
            }
            let row: TaskRow = tasks::table
                .find(&key)
                .select(TaskRow::as_select())
                .first(conn)
                .await?;
            let before = Task::try_from(row)?;
            let after = patch.apply(&before, now);
            if after == before {
                return Ok(Some(after));
            }
            diesel::update(tasks::table.find(&key))
                .set(&TaskRow::from(&after))
                .execute(conn)
                .await?;
            if let Some(entry) = audit(&before, &after) {
                conn.append_audit(&entry).await?;
            }
            Ok::<_, StoreError>(Some(after))
        })
        .await
    })
}

/// Deletes a task for good, with `audit`; false if there was none.
pub async fn delete(db: &Db, id: TaskId, audit: Option<NewAuditEntry>) -> StoreResult<bool> {
    let key = id.to_string();
    Ok(with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let deleted = diesel::delete(tasks::table.find(&key))
                .execute(conn)
                .await?;
            if deleted == 1
                && let Some(entry) = &audit
            {
                conn.append_audit(entry).await?;
            }
            Ok::<_, DieselError>(deleted == 1)
        })
        .await
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn task() -> Task {
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        NewTask {
            id: TaskId::new(),
            customer_id: CustomerId::new(),
            title: "Call back".into(),
            notes: None,
            due_at: None,
            assignee: Some("sam".into()),
            call_id: None,
            created_by: "sam".into(),
        }
        .task(at)
    }

    #[test]
    fn statuses_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>().unwrap(), *status);
        }
        assert_eq!(" DONE ".parse::<TaskStatus>().unwrap(), TaskStatus::Done);
        assert_eq!(
            "later".parse::<TaskStatus>().unwrap_err().code,
            "invalid_status"
        );
    }

    #[test]
    fn ids_round_trip() {
        let id = TaskId::new();
        assert_eq!(id.to_string().parse::<TaskId>().unwrap(), id);
        assert!("nope".parse::<TaskId>().is_err());
    }

    #[test]
    fn done_sets_completed_at_and_reopening_clears_it() {
        let open = task();
        let later = open.created_at + chrono::Duration::hours(1);
        let done = TaskPatch {
            status: Some(TaskStatus::Done),
            ..TaskPatch::default()
        }
        .apply(&open, later);
        assert_eq!(done.completed_at, Some(later));
        assert_eq!(done.updated_at, later);
        let again = TaskPatch {
            status: Some(TaskStatus::Done),
            ..TaskPatch::default()
        }
        .apply(&done, later + chrono::Duration::hours(1));
        assert_eq!(again, done, "done twice keeps the first completion");
        let reopened = TaskPatch {
            status: Some(TaskStatus::Open),
            assignee: Change::Clear,
            ..TaskPatch::default()
        }
        .apply(&done, later);
        assert_eq!(reopened.completed_at, None);
        assert_eq!(reopened.assignee, None);
    }

    #[test]
    fn an_empty_patch_changes_nothing() {
        let open = task();
        let same = TaskPatch::default().apply(&open, open.created_at + chrono::Duration::days(1));
        assert_eq!(same, open);
    }
}
