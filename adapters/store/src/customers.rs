//! Customer queries: create, read, list with filters and keyset pagination, partial update,
//! soft delete and restore.

use crate::{
    audit::{AppendAudit as _, NewAuditEntry},
    db::{Db, with_conn},
    effects::{Effect, WriteEffects as _},
    error::{StoreError, StoreResult},
    page::{Cursor, CursorKey, Page, Seek},
    rows::{CustomerRow, to_db_time},
    schema::{customer_tags, customers},
};
use chrono::{DateTime, Utc};
use crm_domain::{Customer, CustomerId, CustomerScope, CustomerStatus, NewCustomer, Tag};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

/// How often an update is retried when the row changed between read and write.
const UPDATE_ATTEMPTS: usize = 5;

/// Which customers a list returns. All conditions must hold. No `Default`: the caller's
/// row-level scope must always be given.
#[derive(Debug, Clone)]
pub struct CustomerFilter {
    /// Substring of name, email or company (case-insensitive, Unicode-aware).
    pub text: Option<String>,
    /// Status equals.
    pub status: Option<CustomerStatus>,
    /// Carries this tag.
    pub tag: Option<Tag>,
    /// Owned by.
    pub owner: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Also list soft-deleted customers.
    pub include_deleted: bool,
    /// Row-level rule of the caller.
    pub scope: CustomerScope,
}

/// The key a customer list is ordered by; the id breaks ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CustomerOrderField {
    /// Creation time.
    #[default]
    CreatedAt,
    /// Last change.
    UpdatedAt,
    /// Name (byte order).
    Name,
}

impl CustomerOrderField {
    /// The tag that cursors of this ordering carry.
    pub fn cursor_tag(self) -> &'static str {
        match self {
            Self::CreatedAt => "c",
            Self::UpdatedAt => "u",
            Self::Name => "n",
        }
    }

    /// True when the key is a timestamp.
    pub fn is_time(self) -> bool {
        !matches!(self, Self::Name)
    }

    fn cursor_for(self, row: &CustomerRow) -> String {
        let key = match self {
            Self::CreatedAt => CursorKey::Time(row.created_at.0),
            Self::UpdatedAt => CursorKey::Time(row.updated_at.0),
            Self::Name => CursorKey::Text(row.name.clone()),
        };
        Cursor {
            ordering: self.cursor_tag(),
            key,
            id: row.id.clone(),
        }
        .encode()
    }
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderDirection {
    /// Smallest first.
    Asc,
    /// Largest first.
    #[default]
    Desc,
}

/// Ordering of a customer list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CustomerOrder {
    /// The key.
    pub field: CustomerOrderField,
    /// The direction.
    pub direction: OrderDirection,
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
pub(crate) fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Adds the keyset condition and the ordering for one key column to a boxed query.
macro_rules! keyset {
    ($query:expr, $column:expr, $cursor:expr, $ascending:expr, $variant:ident) => {{
        let mut query = $query;
        if let Some(cursor) = $cursor {
            let CursorKey::$variant(key) = &cursor.key else {
                return Err(StoreError::Corrupt {
                    entity: "cursor",
                    id: cursor.id.clone(),
                    reason: "key of the wrong kind".into(),
                });
            };
            let (key, id) = (key.clone(), cursor.id.clone());
            query = if $ascending {
                query.filter(
                    $column
                        .gt(key.clone())
                        .or($column.eq(key).and(customers::id.gt(id))),
                )
            } else {
                query.filter(
                    $column
                        .lt(key.clone())
                        .or($column.eq(key).and(customers::id.lt(id))),
                )
            };
        }
        if $ascending {
            query.order_by(($column.asc(), customers::id.asc()))
        } else {
            query.order_by(($column.desc(), customers::id.desc()))
        }
    }};
}

/// Stores a new customer. A taken email or phone is [`StoreError::Duplicate`] naming the
/// customer that holds it. `audit` (if any) and `effects` (a pipeline run, jobs, events) are
/// written in the same transaction.
pub async fn insert(
    db: &Db,
    new: NewCustomer,
    audit: Option<NewAuditEntry>,
    effects: &[Effect],
) -> StoreResult<Customer> {
    let NewCustomer(customer) = new;
    let row = CustomerRow::from(&customer);
    let tags = tag_rows(&customer);
    let now = customer.created_at;
    let result = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            diesel::insert_into(customers::table)
                .values(&row)
                .execute(conn)
                .await?;
            for tag in &tags {
                diesel::insert_into(customer_tags::table)
                    .values(tag.clone())
                    .execute(conn)
                    .await?;
            }
            if let Some(entry) = &audit {
                conn.append_audit(entry).await?;
            }
            conn.apply_effects(effects, now).await?;
            Ok::<_, diesel::result::Error>(())
        })
        .await
    });
    match result {
        Ok(()) => {
            db.committed_all(effects, false);
            Customer::try_from(row)
        }
        Err(error) if StoreError::is_unique_violation(&error) => {
            Err(duplicate_of(db, &customer).await?)
        }
        Err(error) => Err(error.into()),
    }
}

/// Inserts many customers in one transaction of multi-row statements (for seeding and bulk
/// import). Fails as a whole on any error.
pub async fn insert_batch(db: &Db, batch: &[Customer]) -> StoreResult<()> {
    let rows: Vec<CustomerRow> = batch.iter().map(CustomerRow::from).collect();
    let tags: Vec<_> = batch.iter().flat_map(tag_rows).collect();
    insert_rows(db, rows, tags, None).await??;
    Ok(())
}

/// Inserts customer rows and tag rows in one transaction, in multi-row statements.
/// The outer result is a pool failure, the inner one the statement's.
async fn insert_rows(
    db: &Db,
    rows: Vec<CustomerRow>,
    tags: Vec<TagRow>,
    audit: Option<NewAuditEntry>,
) -> StoreResult<Result<(), diesel::result::Error>> {
    // Bind-parameter limits: SQLite allows 32766 per statement, PostgreSQL 65535; a customer
    // row has 20 columns.
    const ROWS_PER_STATEMENT: usize = 1_000;
    Ok(with_conn!(
        db,
        postgres | conn | {
            conn.transaction(async |conn| {
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    diesel::insert_into(customers::table)
                        .values(chunk)
                        .execute(conn)
                        .await?;
                }
                for chunk in tags.chunks(ROWS_PER_STATEMENT * 10) {
                    diesel::insert_into(customer_tags::table)
                        .values(chunk)
                        .execute(conn)
                        .await?;
                }
                if let Some(entry) = &audit {
                    conn.append_audit(entry).await?;
                }
                Ok::<_, diesel::result::Error>(())
            })
            .await
        },
        sqlite | conn | {
            conn.spawn_blocking(move |conn| {
                diesel::Connection::transaction(conn, |conn| {
                    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                        diesel::RunQueryDsl::execute(
                            diesel::insert_into(customers::table).values(chunk),
                            conn,
                        )?;
                    }
                    for chunk in tags.chunks(ROWS_PER_STATEMENT * 10) {
                        diesel::RunQueryDsl::execute(
                            diesel::insert_into(customer_tags::table).values(chunk),
                            conn,
                        )?;
                    }
                    if let Some(entry) = &audit {
                        crate::audit::append_sync(conn, entry)?;
                    }
                    Ok(())
                })
            })
            .await
        }
    ))
}

type TagRow = (
    diesel::dsl::Eq<customer_tags::tag, String>,
    diesel::dsl::Eq<customer_tags::customer_id, String>,
);

fn tag_rows(customer: &Customer) -> Vec<TagRow> {
    let id = customer.id.to_string();
    customer
        .tags
        .iter()
        .map(|tag| {
            (
                customer_tags::tag.eq(tag.as_str().to_owned()),
                customer_tags::customer_id.eq(id.clone()),
            )
        })
        .collect()
}

/// Finds which unique key of `customer` another customer holds.
async fn duplicate_of(db: &Db, customer: &Customer) -> StoreResult<StoreError> {
    let id = customer.id.to_string();
    let email = customer.email.as_ref().map(|e| e.as_str().to_owned());
    let phone = customer.phone.as_ref().map(|p| p.as_str().to_owned());
    let holders: Vec<(String, Option<String>, Option<String>)> = with_conn!(db, |conn| {
        customers::table
            .filter(customers::id.ne(&id))
            .filter(customers::email.eq(&email).or(customers::phone.eq(&phone)))
            .select((customers::id, customers::email, customers::phone))
            .limit(2)
            .load(conn)
            .await?
    });
    let by_email = holders.iter().find(|(_, e, _)| e.is_some() && *e == email);
    let by_phone = holders.iter().find(|(_, _, p)| p.is_some() && *p == phone);
    Ok(match (by_email, by_phone) {
        (Some((existing, ..)), _) => StoreError::Duplicate {
            field: "email",
            existing_id: existing.clone(),
        },
        (None, Some((existing, ..))) => StoreError::Duplicate {
            field: "phone",
            existing_id: existing.clone(),
        },
        // The holder changed its key between the failed insert and this look-up.
        (None, None) => StoreError::Conflict {
            entity: "customer",
            id,
        },
    })
}

/// The customer with this id, deleted or not.
pub async fn get(db: &Db, id: CustomerId) -> StoreResult<Option<Customer>> {
    let id = id.to_string();
    let row: Option<CustomerRow> = with_conn!(db, |conn| {
        customers::table
            .find(&id)
            .select(CustomerRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    row.map(Customer::try_from).transpose()
}

/// The customers with these ids, in no particular order; unknown ids are left out.
pub async fn by_ids(db: &Db, ids: &[CustomerId]) -> StoreResult<Vec<Customer>> {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let rows: Vec<CustomerRow> = with_conn!(db, |conn| {
        customers::table
            .filter(customers::id.eq_any(&ids))
            .select(CustomerRow::as_select())
            .load(conn)
            .await?
    });
    rows.into_iter().map(Customer::try_from).collect()
}

/// One page of customers.
pub async fn list(
    db: &Db,
    filter: &CustomerFilter,
    order: CustomerOrder,
    seek: &Seek,
) -> StoreResult<Page<Customer>> {
    let (forward, cursor) = match seek {
        Seek::Forward { after, .. } => (true, after.as_ref()),
        Seek::Backward { before, .. } => (false, before.as_ref()),
    };
    // Walking backwards reads the ordering reversed, then `Page::from_probe` flips it back.
    let ascending = (order.direction == OrderDirection::Asc) == forward;
    let probe = i64::try_from(seek.limit()).unwrap_or(i64::MAX - 1) + 1;
    let text = filter
        .text
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| like_pattern(&t.to_lowercase()));
    let rows: Vec<CustomerRow> = with_conn!(db, |conn| {
        let mut query = customers::table
            .select(CustomerRow::as_select())
            .into_boxed();
        if !filter.include_deleted {
            query = query.filter(customers::deleted_at.is_null());
        }
        if let Some(pattern) = &text {
            query = query.filter(customers::search_text.like(pattern.clone()).escape('\\'));
        }
        if let Some(status) = filter.status {
            query = query.filter(customers::status.eq(status.as_str()));
        }
        if let Some(owner) = &filter.owner {
            query = query.filter(customers::owner.eq(owner.clone()));
        }
        match &filter.scope {
            CustomerScope::All => {}
            CustomerScope::OwnedBy(subject) => {
                query = query.filter(customers::owner.eq(subject.clone()))
            }
            CustomerScope::OwnedByOrUnassigned(subject) => {
                query = query.filter(
                    customers::owner
                        .eq(subject.clone())
                        .or(customers::owner.is_null()),
                );
            }
        }
        if let Some(tag) = &filter.tag {
            let tagged = customer_tags::table
                .filter(customer_tags::tag.eq(tag.as_str().to_owned()))
                .select(customer_tags::customer_id);
            query = query.filter(customers::id.eq_any(tagged));
        }
        if let Some(after) = filter.created_after {
            query = query.filter(customers::created_at.ge(to_db_time(after)));
        }
        if let Some(before) = filter.created_before {
            query = query.filter(customers::created_at.lt(to_db_time(before)));
        }
        let query = match order.field {
            CustomerOrderField::CreatedAt => {
                keyset!(query, customers::created_at, cursor, ascending, Time)
            }
            CustomerOrderField::UpdatedAt => {
                keyset!(query, customers::updated_at, cursor, ascending, Time)
            }
            CustomerOrderField::Name => keyset!(query, customers::name, cursor, ascending, Text),
        };
        query.limit(probe).load(conn).await?
    });
    let rows = rows
        .into_iter()
        .map(|row| (order.field.cursor_for(&row), row))
        .collect();
    Page::from_probe(rows, seek).try_map(Customer::try_from)
}

/// Changes a customer with `change`, which sees the current state and may refuse (return
/// `StoreError::Invalid` for a domain rule, `NotFound` for a row the caller may not touch); it
/// is re-run on the fresh state after a concurrent write, so its checks always hold for what is
/// written. Concurrent
/// writers are detected (the row is written only if `updated_at` is still what was read) and
/// the change is re-applied to the fresh state. Soft-deleted customers are not found.
pub async fn update(
    db: &Db,
    id: CustomerId,
    mut change: impl FnMut(&mut Customer) -> Result<(), StoreError>,
    audit: impl Fn(&Customer, &Customer) -> Option<NewAuditEntry>,
    effects: &[Effect],
) -> StoreResult<Customer> {
    for _ in 0..UPDATE_ATTEMPTS {
        let current = get(db, id)
            .await?
            .filter(|c| c.deleted_at.is_none())
            .ok_or_else(|| not_found(id))?;
        let mut next = current.clone();
        change(&mut next)?;
        if next == current {
            return Ok(current);
        }
        let row = CustomerRow::from(&next);
        let read_version = to_db_time(current.updated_at);
        let tags_changed = next.tags != current.tags;
        let tags = tag_rows(&next);
        let key = row.id.clone();
        // The entry describes exactly this write, and commits with it.
        let entry = audit(&current, &next);
        let now = next.updated_at;
        // A transaction that starts with its write: on SQLite it never has to upgrade a read
        // lock, so it cannot deadlock with another writer; the busy timeout serializes them.
        let written = with_conn!(db, |conn| {
            conn.transaction(async |conn| {
                let updated = diesel::update(customers::table)
                    .filter(customers::id.eq(&key))
                    .filter(customers::updated_at.eq(read_version))
                    .filter(customers::deleted_at.is_null())
                    .set(&row)
                    .execute(conn)
                    .await?;
                if updated != 1 {
                    return Ok::<_, diesel::result::Error>(false);
                }
                if tags_changed {
                    diesel::delete(
                        customer_tags::table.filter(customer_tags::customer_id.eq(&key)),
                    )
                    .execute(conn)
                    .await?;
                    for tag in &tags {
                        diesel::insert_into(customer_tags::table)
                            .values(tag.clone())
                            .execute(conn)
                            .await?;
                    }
                }
                if let Some(entry) = &entry {
                    conn.append_audit(entry).await?;
                }
                conn.apply_effects(effects, now).await?;
                Ok(true)
            })
            .await
        });
        match written {
            Ok(true) => {
                db.committed_all(effects, false);
                return Customer::try_from(row);
            }
            Ok(false) => continue,
            Err(error) if StoreError::is_unique_violation(&error) => {
                return Err(duplicate_of(db, &next).await?);
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(StoreError::Conflict {
        entity: "customer",
        id: id.to_string(),
    })
}

/// Soft-deletes (`Some(at)`) or restores (`None`) a customer. Idempotent: deleting a deleted
/// customer or restoring a live one returns it unchanged.
pub async fn set_deleted(
    db: &Db,
    id: CustomerId,
    deleted_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    audit: impl FnOnce(&Customer) -> Option<NewAuditEntry> + Send,
) -> StoreResult<Customer> {
    let key = id.to_string();
    let deleted = deleted_at.map(to_db_time);
    let now = to_db_time(now);
    let row: Option<CustomerRow> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let target = customers::table.filter(customers::id.eq(&key));
            let set = (
                customers::deleted_at.eq(deleted),
                customers::updated_at.eq(now),
            );
            let row = if deleted.is_some() {
                diesel::update(target.filter(customers::deleted_at.is_null()))
                    .set(set)
                    .returning(CustomerRow::as_returning())
                    .get_result(conn)
                    .await
                    .optional()?
            } else {
                diesel::update(target.filter(customers::deleted_at.is_not_null()))
                    .set(set)
                    .returning(CustomerRow::as_returning())
                    .get_result(conn)
                    .await
                    .optional()?
            };
            // Only a real change is audited, in the same transaction as the change.
            if let Some(row) = &row
                && let Some(entry) = audit(&Customer::try_from(row.clone())?)
            {
                conn.append_audit(&entry).await?;
            }
            Ok::<_, StoreError>(row)
        })
        .await?
    });
    match row {
        Some(row) => Customer::try_from(row),
        None => get(db, id).await?.ok_or_else(|| not_found(id)),
    }
}

pub(crate) fn not_found(id: CustomerId) -> StoreError {
    StoreError::NotFound {
        entity: "customer",
        id: id.to_string(),
    }
}

/// Up to `limit` live leads and prospects after the id `after`, in id order (what a bulk
/// re-scoring walks through, page by page).
pub async fn leads_after(
    db: &Db,
    after: Option<CustomerId>,
    limit: usize,
) -> StoreResult<Vec<CustomerId>> {
    let after = after.map(|id| id.to_string()).unwrap_or_default();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let ids: Vec<String> = with_conn!(db, |conn| {
        customers::table
            .filter(customers::id.gt(&after))
            .filter(customers::deleted_at.is_null())
            .filter(customers::status.eq_any([
                CustomerStatus::Lead.as_str(),
                CustomerStatus::Prospect.as_str(),
            ]))
            .order_by(customers::id)
            .limit(limit)
            .select(customers::id)
            .load(conn)
            .await?
    });
    ids.iter()
        .map(|id| {
            id.parse().map_err(|e| StoreError::Corrupt {
                entity: "customer",
                id: id.clone(),
                reason: format!("id: {e}"),
            })
        })
        .collect()
}

/// The customers (deleted ones too) holding this email or this phone: none, one, or two when
/// each belongs to a different customer. Both look-ups are unique-index probes.
pub async fn find_by_contact(
    db: &Db,
    email: Option<&str>,
    phone: Option<&str>,
) -> StoreResult<Vec<Customer>> {
    if email.is_none() && phone.is_none() {
        return Ok(Vec::new());
    }
    let (email, phone) = (email.map(str::to_owned), phone.map(str::to_owned));
    let rows: Vec<CustomerRow> = with_conn!(db, |conn| {
        customers::table
            .filter(customers::email.eq(&email).or(customers::phone.eq(&phone)))
            .select(CustomerRow::as_select())
            .limit(2)
            .load(conn)
            .await?
    });
    // The email's holder first.
    let mut found: Vec<Customer> = rows
        .into_iter()
        .map(Customer::try_from)
        .collect::<StoreResult<_>>()?;
    found.sort_by_key(|c| c.email.as_ref().map(|e| e.as_str().to_owned()) != email);
    Ok(found)
}

/// Live customers (other than `except`) whose searchable text contains any of `tokens`
/// (folded name and company tokens): the candidates a fuzzy duplicate check then scores.
pub async fn candidates(
    db: &Db,
    tokens: &[String],
    except: CustomerId,
    scope: &CustomerScope,
    limit: usize,
) -> StoreResult<Vec<Customer>> {
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    let except = except.to_string();
    let patterns: Vec<String> = tokens
        .iter()
        .map(|t| format!("%{}%", t.replace(['%', '_', '\\'], "")))
        .collect();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<CustomerRow> = with_conn!(db, |conn| {
        let mut query = customers::table
            .filter(customers::deleted_at.is_null())
            .filter(customers::id.ne(&except))
            .into_boxed();
        let mut any: Box<
            dyn BoxableExpression<customers::table, _, SqlType = diesel::sql_types::Bool>,
        > = Box::new(customers::search_text.like(patterns[0].clone()));
        for pattern in &patterns[1..] {
            any = Box::new(any.or(customers::search_text.like(pattern.clone())));
        }
        query = query.filter(any);
        match scope {
            CustomerScope::All => {}
            CustomerScope::OwnedBy(subject) => {
                query = query.filter(customers::owner.eq(subject.clone()));
            }
            CustomerScope::OwnedByOrUnassigned(subject) => {
                query = query.filter(
                    customers::owner
                        .eq(subject.clone())
                        .or(customers::owner.is_null()),
                );
            }
        }
        query
            .select(CustomerRow::as_select())
            .limit(limit)
            .load(conn)
            .await?
    });
    rows.into_iter().map(Customer::try_from).collect()
}

/// What a merge moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Interactions now on the primary.
    pub interactions: usize,
    /// Scorings, pipeline runs, calls, emails, tasks and nurture enrolments now on the
    /// primary.
    pub history: usize,
}

/// Merges `duplicates` into `primary` (its new state, read at `read_version`), in one
/// transaction: the duplicates are soft-deleted with their email and phone cleared (so the
/// primary can take them), their interactions and history (scorings, pipeline runs, calls,
/// emails, tasks, nurture enrolments) move to the primary, and `audit` and `effects` are
/// written with it. What the duplicates still had pending ends with the merge: open runs and
/// their queued steps, queued calls (canceled, each with its call event) and active nurture
/// enrolments. Their consent ledger stays with them, as the evidence it was recorded as. A
/// concurrent change to any of them fails the merge with [`StoreError::Conflict`].
pub async fn merge(
    db: &Db,
    primary: &Customer,
    read_version: DateTime<Utc>,
    duplicates: &[(CustomerId, DateTime<Utc>)],
    audit: &[NewAuditEntry],
    effects: &[Effect],
) -> StoreResult<Moved> {
    use crate::schema::{
        calls, emails, interactions, jobs, lead_scores, nurture_enrollments, pipeline_runs,
        pipeline_steps, tasks,
    };
    let row = CustomerRow::from(primary);
    let key = row.id.clone();
    let dups: Vec<String> = duplicates.iter().map(|(id, _)| id.to_string()).collect();
    let versions: Vec<(String, chrono::NaiveDateTime)> = duplicates
        .iter()
        .map(|(id, at)| (id.to_string(), to_db_time(*at)))
        .collect();
    let tags = tag_rows(primary);
    let now = to_db_time(primary.updated_at);
    let read_version = to_db_time(read_version);
    let expected = dups.len();
    let result = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            // Each duplicate as it was read: a concurrent change to one fails the merge.
            let mut retired = 0;
            for (id, version) in &versions {
                retired += diesel::update(
                    customers::table
                        .filter(customers::id.eq(id))
                        .filter(customers::updated_at.eq(*version))
                        .filter(customers::deleted_at.is_null()),
                )
                .set((
                    customers::email.eq(None::<String>),
                    customers::phone.eq(None::<String>),
                    customers::deleted_at.eq(Some(now)),
                    customers::updated_at.eq(now),
                ))
                .execute(conn)
                .await?;
            }
            let updated = diesel::update(customers::table)
                .filter(customers::id.eq(&key))
                .filter(customers::updated_at.eq(read_version))
                .filter(customers::deleted_at.is_null())
                .set(&row)
                .execute(conn)
                .await?;
            if retired != expected || updated != 1 {
                // Someone changed or deleted one of them meanwhile: undo all of it.
                return Err(diesel::result::Error::RollbackTransaction);
            }
            diesel::delete(customer_tags::table.filter(customer_tags::customer_id.eq(&key)))
                .execute(conn)
                .await?;
            for tag in &tags {
                diesel::insert_into(customer_tags::table)
                    .values(tag.clone())
                    .execute(conn)
                    .await?;
            }
            let interactions =
                diesel::update(interactions::table.filter(interactions::customer_id.eq_any(&dups)))
                    .set(interactions::customer_id.eq(&key))
                    .execute(conn)
                    .await?;
            let scores =
                diesel::update(lead_scores::table.filter(lead_scores::customer_id.eq_any(&dups)))
                    .set(lead_scores::customer_id.eq(&key))
                    .execute(conn)
                    .await?;
            // The duplicates' unfinished runs end here: their queued steps would otherwise run
            // for a customer that is gone.
            let open: Vec<String> = diesel::update(
                pipeline_runs::table
                    .filter(pipeline_runs::customer_id.eq_any(&dups))
                    .filter(pipeline_runs::status.eq("running")),
            )
            .set((
                pipeline_runs::status.eq("cancelled"),
                pipeline_runs::error.eq(Some(format!("merged into {key}"))),
                pipeline_runs::finished_at.eq(Some(now)),
            ))
            .returning(pipeline_runs::id)
            .get_results(conn)
            .await?;
            let pending: Vec<Option<String>> = diesel::update(
                pipeline_steps::table
                    .filter(pipeline_steps::run_id.eq_any(&open))
                    .filter(pipeline_steps::status.eq("pending")),
            )
            .set((
                pipeline_steps::status.eq("cancelled"),
                pipeline_steps::finished_at.eq(Some(now)),
            ))
            .returning(pipeline_steps::job_id)
            .get_results(conn)
            .await?;
            let pending: Vec<String> = pending.into_iter().flatten().collect();
            diesel::update(
                jobs::table
                    .filter(jobs::id.eq_any(&pending))
                    .filter(jobs::status.eq("queued")),
            )
            .set((
                jobs::status.eq("cancelled"),
                jobs::finished_at.eq(Some(now)),
                jobs::updated_at.eq(now),
            ))
            .execute(conn)
            .await?;
            let runs = diesel::update(
                pipeline_runs::table.filter(pipeline_runs::customer_id.eq_any(&dups)),
            )
            .set(pipeline_runs::customer_id.eq(&key))
            .execute(conn)
            .await?;
            // Queued calls to a duplicate are canceled (their dial jobs then find nothing to
            // dial); calls under way end as they will, on the primary.
            let merged_into = format!("merged into {key}");
            let canceled: Vec<crate::calls::CallRow> = diesel::update(
                calls::table
                    .filter(calls::customer_id.eq_any(&dups))
                    .filter(calls::status.eq(crm_domain::CallStatus::Queued.as_str())),
            )
            .set((
                calls::status.eq(crm_domain::CallStatus::Ended.as_str()),
                calls::disposition.eq(crm_domain::Disposition::Canceled.as_str()),
                calls::reason.eq(&merged_into),
                calls::final_attempt.eq(true),
                calls::ended_at.eq(now),
                calls::updated_at.eq(now),
                calls::customer_id.eq(&key),
            ))
            .returning(crate::calls::CallRow::as_returning())
            .get_results(conn)
            .await?;
            let calls = diesel::update(calls::table.filter(calls::customer_id.eq_any(&dups)))
                .set(calls::customer_id.eq(&key))
                .execute(conn)
                .await?;
            let emails = diesel::update(emails::table.filter(emails::customer_id.eq_any(&dups)))
                .set(emails::customer_id.eq(&key))
                .execute(conn)
                .await?;
            let tasks = diesel::update(tasks::table.filter(tasks::customer_id.eq_any(&dups)))
                .set(tasks::customer_id.eq(&key))
                .execute(conn)
                .await?;
            diesel::update(
                nurture_enrollments::table
                    .filter(nurture_enrollments::customer_id.eq_any(&dups))
                    .filter(nurture_enrollments::status.eq("active")),
            )
            .set((
                nurture_enrollments::status.eq("exited"),
                nurture_enrollments::exit_reason.eq(Some(&merged_into)),
                nurture_enrollments::next_at.eq(None::<chrono::NaiveDateTime>),
                nurture_enrollments::updated_at.eq(now),
            ))
            .execute(conn)
            .await?;
            // Keyed by (customer, run): the runs are the duplicates' own, so no key collides.
            let enrollments = diesel::update(
                nurture_enrollments::table.filter(nurture_enrollments::customer_id.eq_any(&dups)),
            )
            .set(nurture_enrollments::customer_id.eq(&key))
            .execute(conn)
            .await?;
            for entry in audit {
                conn.append_audit(entry).await?;
            }
            let mut effects = effects.to_vec();
            for row in canceled {
                let call = crate::calls::Call::try_from(row)
                    .map_err(|e| diesel::result::Error::DeserializationError(e.into()))?;
                effects.push(crate::calls::event(&call));
            }
            conn.apply_effects(&effects, primary.updated_at).await?;
            Ok::<_, diesel::result::Error>((
                Moved {
                    interactions,
                    history: scores + runs + calls + emails + tasks + enrollments,
                },
                effects,
            ))
        })
        .await
    });
    match result {
        Ok((moved, effects)) => {
            db.committed_all(&effects, false);
            Ok(moved)
        }
        Err(diesel::result::Error::RollbackTransaction) => Err(StoreError::Conflict {
            entity: "customer",
            id: key,
        }),
        Err(error) if StoreError::is_unique_violation(&error) => {
            Err(duplicate_of(db, primary).await?)
        }
        Err(error) => Err(error.into()),
    }
}

/// One new lead's rows as the import's fast path writes them: built away from the transaction
/// that writes them (CPU only, on the thread that validated the lead), so that the batch's
/// writer, which the whole import waits for, does only database work. Its audit entry is
/// chained in the transaction, where the chain's head is read.
pub struct LeadRows {
    customer: CustomerRow,
    tags: Vec<TagRow>,
    runs: Vec<crate::pipeline::RunRow>,
    steps: Vec<crate::pipeline::StepRow>,
    jobs: Vec<crate::jobs::JobRow>,
    events: Vec<crate::effects::NewEvent>,
    audit: Option<NewAuditEntry>,
    consents: Vec<crate::gdpr::ConsentRow>,
}

impl std::fmt::Debug for LeadRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeadRows")
            .field("customer", &self.customer.id)
            .finish_non_exhaustive()
    }
}

impl LeadRows {
    /// The rows of `lead` with its pipeline runs (first step and job), events, audit entry
    /// and consents, as stored at `now`.
    pub fn new(
        lead: &Customer,
        runs: &[crate::pipeline::NewRun],
        events: Vec<crate::effects::NewEvent>,
        audit: Option<NewAuditEntry>,
        consents: &[crate::gdpr::NewConsent],
        now: DateTime<Utc>,
    ) -> Self {
        let mut rows = Self {
            customer: CustomerRow::from(lead),
            tags: tag_rows(lead),
            runs: runs
                .iter()
                .map(|run| crate::pipeline::run_row(run, now))
                .collect(),
            steps: Vec::new(),
            jobs: Vec::new(),
            events,
            audit,
            consents: consents
                .iter()
                .map(|c| crate::gdpr::consent_row(c, now))
                .collect(),
        };
        for run in runs {
            for (position, step) in (0..).zip(&run.steps) {
                let job_id = step.job.as_ref().map(|job| {
                    let id = crm_domain::JobId::new();
                    rows.jobs.push(crate::jobs::row(id, job, now));
                    id
                });
                rows.steps.push(crate::pipeline::step_row(
                    run.id, position, step, job_id, now,
                ));
            }
        }
        rows
    }
}

/// Stores many new leads at once (their rows built by [`LeadRows::new`]) in one transaction
/// of multi-row statements: the fast path of file imports. `Ok(false)` if an email or phone
/// is taken (by a concurrent writer): nothing was written, and the caller stores these leads
/// one by one instead.
///
/// `after` resolves when the batch before is complete. `false` (it failed, or it took too
/// long) rolls this one back, and it returns `Ok(false)` like a taken contact. On PostgreSQL
/// the rows are inserted before that, on a connection of their own, so that two batches keep
/// both cores busy; the audit entries and events, which must follow the batch before in the
/// chain and the stream, and the commit wait for it. On SQLite, which has one writer, nothing
/// starts before it.
pub async fn insert_leads(
    db: &Db,
    leads: Vec<LeadRows>,
    now: DateTime<Utc>,
    after: impl std::future::Future<Output = bool> + Send,
) -> StoreResult<bool> {
    use crate::schema::{
        consents as consents_table, events as events_table, jobs, pipeline_runs, pipeline_steps,
    };
    let after = match db.backend() {
        crate::Backend::Postgres => Some(after),
        crate::Backend::Sqlite => {
            // Before taking a connection: the batch before may need the writer to complete.
            if !after.await {
                return Ok(false);
            }
            None
        }
    };
    if leads.is_empty() {
        return Ok(true);
    }
    const CHUNK: usize = 1_000;
    let mut rows = Vec::with_capacity(leads.len());
    let (mut tags, mut run_rows, mut step_rows, mut job_rows) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut events, mut audit, mut consent_rows) = (Vec::new(), Vec::new(), Vec::new());
    for lead in leads {
        rows.push(lead.customer);
        tags.extend(lead.tags);
        run_rows.extend(lead.runs);
        step_rows.extend(lead.steps);
        job_rows.extend(lead.jobs);
        events.extend(lead.events);
        audit.extend(lead.audit);
        consent_rows.extend(lead.consents);
    }
    let (runs, has_events) = (!run_rows.is_empty(), !events.is_empty());
    let at = to_db_time(now);
    let written = with_conn!(
        db,
        postgres | conn | {
            conn.transaction(async |conn| {
                // The commit does not wait for the WAL flush; the WAL writer flushes it while
                // the next batch is built. Safe: any later synchronous commit (a runner claiming
                // one of these jobs, the import's end) flushes the WAL up to itself, so nothing
                // acts on a batch that a crash could lose; a lost batch is replayed from the
                // last recorded progress, and its rows, found by their ids, count as created.
                diesel::sql_query("SET LOCAL synchronous_commit = off")
                    .execute(conn)
                    .await?;
                // One statement per table whatever the batch's size (see `crate::bulk`).
                customer_columns(&rows).insert(conn).await?;
                for chunk in tags.chunks(CHUNK * 10) {
                    diesel::insert_into(customer_tags::table)
                        .values(chunk)
                        .execute(conn)
                        .await?;
                }
                crate::pipeline::run_columns(&run_rows).insert(conn).await?;
                crate::pipeline::step_columns(&step_rows)
                    .insert(conn)
                    .await?;
                crate::jobs::columns(&job_rows).insert(conn).await?;
                crate::gdpr::consent_columns(&consent_rows)
                    .insert(conn)
                    .await?;
                if let Some(after) = after
                    && !after.await
                {
                    return Err(diesel::result::Error::RollbackTransaction);
                }
                crate::audit::append_many_pg(conn, &audit).await?;
                if has_events {
                    diesel::sql_query(format!(
                        "SELECT pg_advisory_xact_lock({})",
                        crate::effects::EVENT_LOCK
                    ))
                    .execute(conn)
                    .await?;
                    use crate::bulk::{Values as V, col};
                    crate::bulk::Columns::new("events")
                        .with("topic", V::Text(col(&events, |e| e.topic.as_str())))
                        .with(
                            "customer_id",
                            V::OptText(col(&events, |e| e.customer_id.as_deref())),
                        )
                        .with("payload", V::Text(col(&events, |e| e.payload.as_str())))
                        .with("created_at", V::Time(col(&events, |_| at)))
                        .insert(conn)
                        .await?;
                }
                Ok::<_, diesel::result::Error>(())
            })
            .await
        },
        sqlite | conn | {
            // Row by row through cached prepared statements: SQLite runs in this process, so
            // there is no round trip to save, and compiling a 1,000-row `VALUES` statement
            // (about 9 ms for the customers') costs more than binding and stepping its rows
            // one by one. Tags and consents (few rows, optional columns) keep `VALUES` lists.
            conn.spawn_blocking(move |conn| {
                use diesel::connection::SimpleConnection as _;
                // For this transaction only, a page cache that holds the batch's pages: with the
                // default 2 MB, SQLite spills dirty pages to the WAL and reads them back
                // mid-transaction. Back to the default after. (A larger WAL checkpoint threshold
                // here would not help: the next commit on another connection, this import's
                // progress, checkpoints at the default threshold.)
                conn.batch_execute("PRAGMA cache_size = -32768")?;
                let written = diesel::Connection::transaction(conn, |conn| {
                    use diesel::RunQueryDsl as R;
                    for row in &rows {
                        R::execute(diesel::insert_into(customers::table).values(row), conn)?;
                    }
                    for chunk in tags.chunks(CHUNK * 10) {
                        R::execute(
                            diesel::insert_into(customer_tags::table).values(chunk),
                            conn,
                        )?;
                    }
                    for row in &run_rows {
                        R::execute(diesel::insert_into(pipeline_runs::table).values(row), conn)?;
                    }
                    for row in &step_rows {
                        R::execute(diesel::insert_into(pipeline_steps::table).values(row), conn)?;
                    }
                    for row in &job_rows {
                        R::execute(diesel::insert_into(jobs::table).values(row), conn)?;
                    }
                    for chunk in consent_rows.chunks(CHUNK) {
                        R::execute(
                            diesel::insert_into(consents_table::table).values(chunk),
                            conn,
                        )?;
                    }
                    crate::audit::append_many_sync(conn, &audit)?;
                    for e in &events {
                        let row = (
                            events_table::topic.eq(e.topic.as_str()),
                            events_table::customer_id.eq(e.customer_id.as_deref()),
                            events_table::payload.eq(e.payload.as_str()),
                            events_table::created_at.eq(crate::rows::DbTime(at)),
                        );
                        R::execute(diesel::insert_into(events_table::table).values(row), conn)?;
                    }
                    Ok(())
                });
                let _ = conn.batch_execute("PRAGMA cache_size = -2000");
                // Freed elsewhere: the import waits for this thread, not for the frees.
                let rows = (rows, tags, run_rows, step_rows, job_rows, consent_rows);
                Ok((written, (rows, audit, events)))
            })
            .await
            .and_then(|(written, rows)| {
                tokio::task::spawn_blocking(move || drop(rows));
                written
            })
        }
    );
    match written {
        Ok(()) => {
            db.committed(runs, has_events);
            Ok(true)
        }
        Err(error) if StoreError::is_unique_violation(&error) => Ok(false),
        Err(diesel::result::Error::RollbackTransaction) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// Customer rows as columns, for [`crate::bulk`].
fn customer_columns(rows: &[CustomerRow]) -> crate::bulk::Columns<'_> {
    use crate::bulk::{Values as V, col};
    crate::bulk::Columns::new("customers")
        .with("id", V::Text(col(rows, |r| r.id.as_str())))
        .with("name", V::Text(col(rows, |r| r.name.as_str())))
        .with("email", V::OptText(col(rows, |r| r.email.as_deref())))
        .with("phone", V::OptText(col(rows, |r| r.phone.as_deref())))
        .with("company", V::OptText(col(rows, |r| r.company.as_deref())))
        .with("status", V::Text(col(rows, |r| r.status.as_str())))
        .with("source", V::OptText(col(rows, |r| r.source.as_deref())))
        .with("language", V::OptText(col(rows, |r| r.language.as_deref())))
        .with("country", V::OptText(col(rows, |r| r.country.as_deref())))
        .with(
            "time_zone",
            V::OptText(col(rows, |r| r.time_zone.as_deref())),
        )
        .with("owner", V::OptText(col(rows, |r| r.owner.as_deref())))
        .with("tags", V::Text(col(rows, |r| r.tags.as_str())))
        .with("consent_email", V::Bool(col(rows, |r| r.consent_email)))
        .with("consent_call", V::Bool(col(rows, |r| r.consent_call)))
        .with("consent_sms", V::Bool(col(rows, |r| r.consent_sms)))
        .with("notes", V::OptText(col(rows, |r| r.notes.as_deref())))
        .with(
            "search_text",
            V::Text(col(rows, |r| r.search_text.as_str())),
        )
        .with("created_at", V::Time(col(rows, |r| r.created_at.0)))
        .with("updated_at", V::Time(col(rows, |r| r.updated_at.0)))
        .with(
            "deleted_at",
            V::OptTime(col(rows, |r| r.deleted_at.map(|t| t.0))),
        )
}

/// Which of these emails and phones customers (deleted ones too) hold already.
pub async fn taken_contacts(
    db: &Db,
    emails: &[String],
    phones: &[String],
) -> StoreResult<std::collections::HashSet<String>> {
    let found: Vec<(Option<String>, Option<String>)> = with_conn!(db, |conn| {
        customers::table
            .filter(
                customers::email
                    .eq_any(emails)
                    .or(customers::phone.eq_any(phones)),
            )
            .select((customers::email, customers::phone))
            .load(conn)
            .await?
    });
    Ok(found
        .into_iter()
        .flat_map(|(e, p)| [e, p])
        .flatten()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
