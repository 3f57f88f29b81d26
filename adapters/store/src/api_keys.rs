//! API keys: stored by the hash of the key; looked up on every request that presents one.

use crate::{
    audit::{AppendAudit as _, NewAuditEntry},
    db::{Backend, Db, with_conn},
    error::{StoreError, StoreResult},
    rows::{from_db_time, to_db_time},
    schema::api_keys,
};
use chrono::{DateTime, Utc};
use crm_domain::{ApiKeyId, Role};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

/// A stored API key (without the secret, which is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Identity.
    pub id: ApiKeyId,
    /// Human label.
    pub name: String,
    /// The first characters of the key, to recognise it (`crm_AbCdEfGh`).
    pub prefix: String,
    /// The role the key acts with.
    pub role: Role,
    /// The subject the key acts as (owner for row-level rules).
    pub subject: String,
    /// Who created it.
    pub created_by: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Stops working at.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revoked at.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key to store: its metadata plus the hash of the secret.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The metadata.
    pub key: ApiKey,
    /// SHA-256 of the secret, hex.
    pub key_hash: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys, treat_none_as_default_value = false)]
struct ApiKeyRow {
    id: String,
    name: String,
    prefix: String,
    key_hash: String,
    role: String,
    subject: String,
    created_by: Option<String>,
    created_at: chrono::NaiveDateTime,
    expires_at: Option<chrono::NaiveDateTime>,
    revoked_at: Option<chrono::NaiveDateTime>,
}

impl ApiKeyRow {
    fn into_key(self) -> StoreResult<ApiKey> {
        let corrupt = |reason: String| StoreError::Corrupt {
            entity: "api_key",
            id: self.id.clone(),
            reason,
        };
        Ok(ApiKey {
            id: self.id.parse().map_err(|e| corrupt(format!("id: {e}")))?,
            role: self
                .role
                .parse()
                .map_err(|e| corrupt(format!("role: {e}")))?,
            name: self.name,
            prefix: self.prefix,
            subject: self.subject,
            created_by: self.created_by,
            created_at: from_db_time(self.created_at),
            expires_at: self.expires_at.map(from_db_time),
            revoked_at: self.revoked_at.map(from_db_time),
        })
    }

    fn from_new(new: &NewApiKey) -> Self {
        let k = &new.key;
        Self {
            id: k.id.to_string(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            key_hash: new.key_hash.clone(),
            role: k.role.as_str().to_owned(),
            subject: k.subject.clone(),
            created_by: k.created_by.clone(),
            created_at: to_db_time(k.created_at),
            expires_at: k.expires_at.map(to_db_time),
            revoked_at: k.revoked_at.map(to_db_time),
        }
    }
}

/// Stores a key; `audit` (if any) is appended in the same transaction.
pub async fn insert(db: &Db, new: &NewApiKey, audit: Option<NewAuditEntry>) -> StoreResult<ApiKey> {
    let row = ApiKeyRow::from_new(new);
    with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            diesel::insert_into(api_keys::table)
                .values(&row)
                .execute(conn)
                .await?;
            if let Some(entry) = &audit {
                conn.append_audit(entry).await?;
            }
            Ok::<_, diesel::result::Error>(())
        })
        .await?;
    });
    row.into_key()
}

/// Stores `new` only if no key exists at all (the first start's admin key). One statement, so
/// that replicas starting together create one key, not several. True if it was stored.
pub async fn insert_if_none(db: &Db, new: &NewApiKey) -> StoreResult<bool> {
    let row = ApiKeyRow::from_new(new);
    let placeholders: Vec<String> = match db.backend() {
        Backend::Postgres => (1..=8).map(|n| format!("${n}")).collect(),
        Backend::Sqlite => vec!["?".to_owned(); 8],
    };
    let sql = format!(
        "INSERT INTO api_keys (id, name, prefix, key_hash, role, subject, created_by, created_at) \
         SELECT {} WHERE NOT EXISTS (SELECT 1 FROM api_keys)",
        placeholders.join(", ")
    );
    let inserted = with_conn!(
        db,
        postgres | conn | {
            // READ COMMITTED does not make INSERT … WHERE NOT EXISTS atomic across sessions:
            // serialize the bootstrap with a transaction-scoped advisory lock.
            conn.transaction(async |conn| {
                diesel::sql_query(format!("SELECT pg_advisory_xact_lock({BOOTSTRAP_LOCK})"))
                    .execute(conn)
                    .await?;
                bind_row!(diesel::sql_query(sql.clone()), &row)
                    .execute(conn)
                    .await
            })
            .await?
        },
        sqlite | conn | {
            // SQLite runs one writer at a time, so the statement alone is atomic.
            bind_row!(diesel::sql_query(sql.clone()), &row)
                .execute(conn)
                .await?
        }
    );
    Ok(inserted == 1)
}

/// Lock key of the bootstrap-key advisory lock.
const BOOTSTRAP_LOCK: i64 = 0x0063_726d_6b65_7973; // "crmkeys"

/// Binds the bootstrap row to the `INSERT … SELECT` (a macro: the query type differs per backend).
macro_rules! bind_row {
    ($query:expr, $row:expr) => {{
        use diesel::sql_types::{Nullable, Text, Timestamp};
        let row = $row;
        $query
            .bind::<Text, _>(row.id.clone())
            .bind::<Text, _>(row.name.clone())
            .bind::<Text, _>(row.prefix.clone())
            .bind::<Text, _>(row.key_hash.clone())
            .bind::<Text, _>(row.role.clone())
            .bind::<Text, _>(row.subject.clone())
            .bind::<Nullable<Text>, _>(row.created_by.clone())
            .bind::<Timestamp, _>(row.created_at)
    }};
}
use bind_row;

/// The key whose secret hashes to `key_hash`, revoked or not.
pub async fn find_by_hash(db: &Db, key_hash: &str) -> StoreResult<Option<ApiKey>> {
    let row: Option<ApiKeyRow> = with_conn!(db, |conn| {
        api_keys::table
            .filter(api_keys::key_hash.eq(key_hash))
            .select(ApiKeyRow::as_select())
            .first(conn)
            .await
            .optional()?
    });
    row.map(ApiKeyRow::into_key).transpose()
}

/// All keys, newest first.
pub async fn list(db: &Db) -> StoreResult<Vec<ApiKey>> {
    let rows: Vec<ApiKeyRow> = with_conn!(db, |conn| {
        api_keys::table
            .order_by((api_keys::created_at.desc(), api_keys::id.desc()))
            .select(ApiKeyRow::as_select())
            .load(conn)
            .await?
    });
    rows.into_iter().map(ApiKeyRow::into_key).collect()
}

/// Revokes a key (idempotent: a revoked key keeps its first revocation time); `audit` is
/// appended in the same transaction when this call revoked it.
pub async fn revoke(
    db: &Db,
    id: ApiKeyId,
    at: DateTime<Utc>,
    audit: Option<NewAuditEntry>,
) -> StoreResult<ApiKey> {
    let key = id.to_string();
    let row: Option<ApiKeyRow> = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let revoked = diesel::update(
                api_keys::table
                    .filter(api_keys::id.eq(&key))
                    .filter(api_keys::revoked_at.is_null()),
            )
            .set(api_keys::revoked_at.eq(Some(to_db_time(at))))
            .execute(conn)
            .await?;
            if revoked == 1
                && let Some(entry) = &audit
            {
                conn.append_audit(entry).await?;
            }
            api_keys::table
                .find(&key)
                .select(ApiKeyRow::as_select())
                .first(conn)
                .await
                .optional()
        })
        .await?
    });
    row.ok_or(StoreError::NotFound {
        entity: "api_key",
        id: key,
    })?
    .into_key()
}
