//! Interaction queries: log, read, list, the latest per customer (for DataLoaders), update,
//! delete.

use crate::{
    audit::{AppendAudit as _, NewAuditEntry},
    customers::not_found as customer_not_found,
    db::{Backend, Db, with_conn},
    effects::{Effect, WriteEffects as _},
    error::{StoreError, StoreResult},
    page::{Cursor, CursorKey, Page, Seek},
    rows::{InteractionRow, to_db_time},
    schema::{customers, interactions},
};
use chrono::{DateTime, Utc};
use crm_domain::{
    CustomerId, CustomerScope, Interaction, InteractionId, InteractionKind, InteractionPatch,
    NewInteraction,
};
use diesel::{
    prelude::*,
    sql_types::{BigInt, Text},
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::collections::HashMap;

/// The tag of interaction cursors (ordered by `occurred_at`, newest first).
pub const CURSOR_TAG: &str = "o";

/// Which interactions a list returns. No `Default`: the caller's row-level scope must always
/// be given.
#[derive(Debug, Clone)]
pub struct InteractionFilter {
    /// Of this customer.
    pub customer_id: Option<CustomerId>,
    /// Of this kind.
    pub kind: Option<InteractionKind>,
    /// Occurred at or after.
    pub occurred_after: Option<DateTime<Utc>>,
    /// Occurred before.
    pub occurred_before: Option<DateTime<Utc>>,
    /// Row-level rule of the caller (applies through the interaction's customer).
    pub scope: CustomerScope,
}

fn not_found(id: InteractionId) -> StoreError {
    StoreError::NotFound {
        entity: "interaction",
        id: id.to_string(),
    }
}

/// Logs an interaction for a live (not deleted) customer.
/// `audit` (if any) and `effects` (a re-scoring job, events) are written in the same
/// transaction.
pub async fn insert(
    db: &Db,
    new: NewInteraction,
    audit: Option<NewAuditEntry>,
    effects: &[Effect],
) -> StoreResult<Interaction> {
    let NewInteraction(interaction) = new;
    let row = InteractionRow::from(&interaction);
    let customer = row.customer_id.clone();
    let result: Result<(), StoreError> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            // Write first, then check that the customer is alive, rolling back if not: a
            // transaction that starts with a write never has to upgrade a read lock on SQLite.
            // A missing customer fails the foreign key.
            diesel::insert_into(interactions::table)
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
                return Err(StoreError::NotFound {
                    entity: "customer",
                    id: customer.clone(),
                });
            }
            if let Some(entry) = &audit {
                conn.append_audit(entry).await?;
            }
            conn.apply_effects(effects, interaction.created_at).await?;
            Ok(())
        })
        .await
    });
    match result {
        Ok(()) => {
            db.committed_all(effects, false);
            Interaction::try_from(row)
        }
        Err(StoreError::Database(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::ForeignKeyViolation,
            _,
        ))) => Err(customer_not_found(interaction.customer_id)),
        Err(other) => Err(other),
    }
}

/// Inserts many interactions in one transaction (for seeding and imports).
pub async fn insert_batch(db: &Db, batch: &[Interaction]) -> StoreResult<()> {
    // 12 columns: stay well under SQLite's 32766 bind parameters per statement.
    const ROWS_PER_STATEMENT: usize = 2_000;
    let rows: Vec<InteractionRow> = batch.iter().map(InteractionRow::from).collect();
    with_conn!(
        db,
        postgres | conn | {
            diesel_async::AsyncConnection::transaction(conn, async |conn| {
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    diesel::insert_into(interactions::table)
                        .values(chunk)
                        .execute(conn)
                        .await?;
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
                            diesel::insert_into(interactions::table).values(chunk),
                            conn,
                        )?;
                    }
                    Ok(())
                })
            })
            .await
        }
    )?;
    Ok(())
}

/// The interaction with this id.
pub async fn get(db: &Db, id: InteractionId) -> StoreResult<Option<Interaction>> {
    let key = id.to_string();
    let row: Option<InteractionRow> = with_conn!(db, |conn| {
        interactions::table
            .find(&key)
            .select(InteractionRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    row.map(Interaction::try_from).transpose()
}

fn cursor_for(row: &InteractionRow) -> String {
    Cursor {
        ordering: CURSOR_TAG,
        key: CursorKey::Time(row.occurred_at),
        id: row.id.clone(),
    }
    .encode()
}

/// One page of interactions, newest first.
pub async fn list(
    db: &Db,
    filter: &InteractionFilter,
    seek: &Seek,
) -> StoreResult<Page<Interaction>> {
    let (newest_first, cursor) = match seek {
        Seek::Forward { after, .. } => (true, after.as_ref()),
        Seek::Backward { before, .. } => (false, before.as_ref()),
    };
    let probe = i64::try_from(seek.limit()).unwrap_or(i64::MAX - 1) + 1;
    let position = match cursor {
        Some(Cursor {
            key: CursorKey::Time(at),
            id,
            ..
        }) => Some((*at, id.clone())),
        Some(_) => {
            return Err(StoreError::Corrupt {
                entity: "cursor",
                id: String::new(),
                reason: "key of the wrong kind".into(),
            });
        }
        None => None,
    };
    let rows: Vec<InteractionRow> = with_conn!(db, |conn| {
        let mut query = interactions::table
            .select(InteractionRow::as_select())
            .into_boxed();
        if let Some(customer) = filter.customer_id {
            query = query.filter(interactions::customer_id.eq(customer.to_string()));
        }
        if let Some(kind) = filter.kind {
            query = query.filter(interactions::kind.eq(kind.as_str()));
        }
        match &filter.scope {
            CustomerScope::All => {}
            CustomerScope::OwnedBy(subject) => {
                let owned = customers::table
                    .filter(customers::owner.eq(subject.clone()))
                    .select(customers::id);
                query = query.filter(interactions::customer_id.eq_any(owned));
            }
            CustomerScope::OwnedByOrUnassigned(subject) => {
                let owned = customers::table
                    .filter(
                        customers::owner
                            .eq(subject.clone())
                            .or(customers::owner.is_null()),
                    )
                    .select(customers::id);
                query = query.filter(interactions::customer_id.eq_any(owned));
            }
        }
        if let Some(after) = filter.occurred_after {
            query = query.filter(interactions::occurred_at.ge(to_db_time(after)));
        }
        if let Some(before) = filter.occurred_before {
            query = query.filter(interactions::occurred_at.lt(to_db_time(before)));
        }
        if let Some((at, id)) = position.clone() {
            query = if newest_first {
                query.filter(
                    interactions::occurred_at
                        .lt(at)
                        .or(interactions::occurred_at
                            .eq(at)
                            .and(interactions::id.lt(id))),
                )
            } else {
                query.filter(
                    interactions::occurred_at
                        .gt(at)
                        .or(interactions::occurred_at
                            .eq(at)
                            .and(interactions::id.gt(id))),
                )
            };
        }
        query = if newest_first {
            query.order_by((interactions::occurred_at.desc(), interactions::id.desc()))
        } else {
            query.order_by((interactions::occurred_at.asc(), interactions::id.asc()))
        };
        query.limit(probe).load(conn).await?
    });
    let rows = rows
        .into_iter()
        .map(|row| (cursor_for(&row), row))
        .collect();
    Page::from_probe(rows, seek).try_map(Interaction::try_from)
}

/// The interactions with these ids; unknown ids are left out.
pub async fn by_ids(db: &Db, ids: &[InteractionId]) -> StoreResult<Vec<Interaction>> {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let rows: Vec<InteractionRow> = with_conn!(db, |conn| {
        interactions::table
            .filter(interactions::id.eq_any(&ids))
            .select(InteractionRow::as_select())
            .load(conn)
            .await?
    });
    rows.into_iter().map(Interaction::try_from).collect()
}

/// The newest `per_customer` interactions of each customer, newest first, in **one** statement
/// (a window function), whatever the number of customers.
pub async fn latest_for_customers(
    db: &Db,
    customer_ids: &[CustomerId],
    per_customer: usize,
) -> StoreResult<HashMap<CustomerId, Vec<Interaction>>> {
    let mut by_customer: HashMap<CustomerId, Vec<Interaction>> = HashMap::new();
    if customer_ids.is_empty() || per_customer == 0 {
        return Ok(by_customer);
    }
    // Positional placeholders differ: `$n` on PostgreSQL, `?` on SQLite.
    let placeholders: Vec<String> = match db.backend() {
        Backend::Postgres => (1..=customer_ids.len() + 1)
            .map(|n| format!("${n}"))
            .collect(),
        Backend::Sqlite => vec!["?".to_owned(); customer_ids.len() + 1],
    };
    let (limit_placeholder, id_placeholders) =
        placeholders.split_last().unwrap_or((&placeholders[0], &[]));
    let sql = format!(
        "SELECT id, customer_id, kind, direction, subject, body, outcome, occurred_at, \
                duration_seconds, author, created_at, updated_at \
         FROM (SELECT i.*, ROW_NUMBER() OVER ( \
                   PARTITION BY i.customer_id ORDER BY i.occurred_at DESC, i.id DESC) AS rank \
               FROM interactions i WHERE i.customer_id IN ({})) ranked \
         WHERE rank <= {limit_placeholder} \
         ORDER BY customer_id, occurred_at DESC, id DESC",
        id_placeholders.join(", ")
    );
    let ids: Vec<String> = customer_ids.iter().map(ToString::to_string).collect();
    let limit = i64::try_from(per_customer).unwrap_or(i64::MAX);
    let rows: Vec<InteractionRow> = with_conn!(db, |conn| {
        let mut query = diesel::sql_query(sql.clone()).into_boxed();
        for id in &ids {
            query = query.bind::<Text, _>(id.clone());
        }
        query.bind::<BigInt, _>(limit).load(conn).await?
    });
    for row in rows {
        let interaction = Interaction::try_from(row)?;
        by_customer
            .entry(interaction.customer_id)
            .or_default()
            .push(interaction);
    }
    Ok(by_customer)
}

/// Applies a validated patch to an interaction.
pub async fn update(
    db: &Db,
    id: InteractionId,
    patch: InteractionPatch,
    now: DateTime<Utc>,
    audit: impl Fn(&Interaction, &Interaction) -> Option<NewAuditEntry>,
) -> StoreResult<Interaction> {
    // Optimistic, like customers: the row is written only if it is still what was read, and
    // the patch is re-applied to the fresh state otherwise, so no concurrent change is lost.
    for _ in 0..3 {
        let before = get(db, id).await?.ok_or_else(|| not_found(id))?;
        let mut interaction = before.clone();
        interaction.apply(patch.clone(), now);
        if interaction == before {
            return Ok(interaction);
        }
        let entry = audit(&before, &interaction);
        let row = InteractionRow::from(&interaction);
        let key = row.id.clone();
        let read_version = to_db_time(before.updated_at);
        let updated = with_conn!(db, |conn| {
            conn.transaction(async |conn| {
                let updated = diesel::update(
                    interactions::table
                        .filter(interactions::id.eq(&key))
                        .filter(interactions::updated_at.eq(read_version)),
                )
                .set(&row)
                .execute(conn)
                .await?;
                if updated == 1
                    && let Some(entry) = &entry
                {
                    conn.append_audit(entry).await?;
                }
                Ok::<_, diesel::result::Error>(updated)
            })
            .await?
        });
        if updated == 1 {
            return Interaction::try_from(row);
        }
    }
    Err(StoreError::Conflict {
        entity: "interaction",
        id: id.to_string(),
    })
}

/// Deletes an interaction for good.
pub async fn delete(db: &Db, id: InteractionId, audit: Option<NewAuditEntry>) -> StoreResult<()> {
    let key = id.to_string();
    let deleted = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let deleted = diesel::delete(interactions::table.filter(interactions::id.eq(&key)))
                .execute(conn)
                .await?;
            if deleted == 1
                && let Some(entry) = &audit
            {
                conn.append_audit(entry).await?;
            }
            Ok::<_, diesel::result::Error>(deleted)
        })
        .await?
    });
    if deleted == 0 {
        Err(not_found(id))
    } else {
        Ok(())
    }
}

/// The newest `limit` interactions of a customer (what scoring reads).
pub async fn recent_of(
    db: &Db,
    customer: CustomerId,
    limit: usize,
) -> StoreResult<Vec<Interaction>> {
    let key = customer.to_string();
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<InteractionRow> = with_conn!(db, |conn| {
        interactions::table
            .filter(interactions::customer_id.eq(&key))
            .order_by((interactions::occurred_at.desc(), interactions::id.desc()))
            .limit(limit)
            .select(InteractionRow::as_select())
            .load(conn)
            .await?
    });
    rows.into_iter().map(Interaction::try_from).collect()
}
