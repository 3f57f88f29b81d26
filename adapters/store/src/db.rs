//! The database handle: one [`Db`] over either backend, picked at runtime from the URL scheme.
//!
//! diesel-async has no async multi-backend connection yet, so [`Db`] holds one of two deadpool
//! pools and [`with_conn!`] expands a query body once per backend (DEPENDENCIES.md, option A).
//! Nothing outside this crate knows which backend is in use.

use crate::error::{StoreError, StoreResult};
use diesel::{Connection, SqliteConnection, connection::InstrumentationEvent};
use diesel_async::{
    AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
    async_connection_wrapper::AsyncConnectionWrapper,
    pooled_connection::{
        AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod, deadpool::Pool,
    },
    sync_connection_wrapper::SyncConnectionWrapper,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt as _;
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Migrations for SQLite, embedded in the binary.
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
/// Migrations for PostgreSQL, embedded in the binary.
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// An async SQLite connection: diesel's sync connection run on tokio's blocking pool.
pub(crate) type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, the embedded default.
    Sqlite,
    /// PostgreSQL, for scale-out.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

/// How to open the database.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    pub url: String,
    /// Most pooled connections.
    pub max_connections: usize,
    /// How long to wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// SQLite: how long a writer waits for the lock before failing.
    pub sqlite_busy_timeout: Duration,
}

pub(crate) enum Pools {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

struct Inner {
    pools: Pools,
    backend: Backend,
    /// SQL statements started on any connection of this handle (for tests and metrics).
    statements: Arc<AtomicU64>,
    /// For connections outside the pool (PostgreSQL `LISTEN`). Holds any password: never shown.
    url: String,
    /// PostgreSQL: sends `NOTIFY` after commits, coalesced, outside the writers' transactions.
    pub(crate) notifier: Option<Arc<crate::effects::Notifier>>,
    /// SQLite: copies the WAL into the database file on a thread of its own.
    checkpointer: Option<Checkpointer>,
    /// Lead deliveries waiting to be stored together (see [`crate::inbox::receive`]).
    inbox: crate::inbox::Queue,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(notifier) = &self.notifier {
            notifier.close();
        }
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop();
        }
    }
}

/// Pages the WAL may hold before a committing connection checkpoints it itself: a safety net
/// for when the [`Checkpointer`] falls behind (SQLite's default is 1,000 pages, 4 MB).
const SQLITE_AUTOCHECKPOINT_PAGES: u32 = 10_000;
/// How often the [`Checkpointer`] looks at the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Checkpoints a SQLite database's WAL in the background (`PRAGMA wal_checkpoint(PASSIVE)`,
/// which waits for no reader or writer), so that copying the WAL into the database file does
/// not fall to whichever transaction commits past SQLite's threshold: with the default, every
/// fourth or fifth batch of a file import paid for a checkpoint inside its commit, on the one
/// writer the whole import waits for. Pool connections keep a larger threshold as a safety net.
struct Checkpointer {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Checkpointer {
    fn spawn(path: String, busy_ms: u128) -> Self {
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let signal = stop.clone();
        let run = move || {
            let (stopped, wake) = &*signal;
            let mut conn: Option<SqliteConnection> = None;
            let mut guard = stopped
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                guard = wake
                    .wait_timeout(guard, CHECKPOINT_EVERY)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
                if *guard {
                    return;
                }
                drop(guard);
                // Opened on first use: the file may not exist before the pool's first connection.
                if conn.is_none() && Path::new(&path).exists() {
                    conn = SqliteConnection::establish(&path)
                        .and_then(|mut c| {
                            diesel::connection::SimpleConnection::batch_execute(
                                &mut c,
                                &format!(
                                    "PRAGMA busy_timeout = {busy_ms}; PRAGMA synchronous = NORMAL;"
                                ),
                            )
                            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                            Ok(c)
                        })
                        .inspect_err(|e| tracing::debug!(error = %e, "No checkpoint connection."))
                        .ok();
                }
                if let Some(c) = conn.as_mut()
                    && let Err(e) = diesel::connection::SimpleConnection::batch_execute(
                        c,
                        "PRAGMA wal_checkpoint(PASSIVE)",
                    )
                {
                    tracing::debug!(error = %e, "WAL checkpoint failed; retried.");
                    conn = None;
                }
                guard = stopped
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(run)
        {
            tracing::warn!(error = %e, "No background WAL checkpoints: SQLite's own apply.");
        }
        Self { stop }
    }

    fn stop(&self) {
        let (stopped, wake) = &*self.stop;
        *stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        wake.notify_one();
    }
}

/// A cheap-to-clone handle to the database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

/// Runs `$body` with `$conn` bound to a pooled connection of whichever backend `$db` uses.
/// The body is compiled once per backend, so it must be valid diesel for both.
macro_rules! with_conn {
    ($db:expr, |$conn:ident| $body:expr) => {
        match $db.pools() {
            $crate::db::Pools::Postgres(pool) => {
                let mut pooled = pool.get().await?;
                let $conn = &mut *pooled;
                $body
            }
            $crate::db::Pools::Sqlite(pool) => {
                let mut pooled = pool.get().await?;
                let $conn = &mut *pooled;
                $body
            }
        }
    };
    // The rare statement that must differ per backend (e.g. SQLite multi-row inserts, which
    // diesel only implements on the sync connection, so they run on the blocking pool).
    ($db:expr, postgres |$pg:ident| $pg_body:expr, sqlite |$lite:ident| $lite_body:expr) => {
        match $db.pools() {
            $crate::db::Pools::Postgres(pool) => {
                let mut pooled = pool.get().await?;
                let $pg = &mut *pooled;
                $pg_body
            }
            $crate::db::Pools::Sqlite(pool) => {
                let mut pooled = pool.get().await?;
                let $lite = &mut *pooled;
                $lite_body
            }
        }
    };
}
pub(crate) use with_conn;

/// Which backend a URL names, and for SQLite the file path.
fn parse_url(url: &str) -> StoreResult<(Backend, Option<PathBuf>)> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() || path.contains(":memory:") {
            return Err(StoreError::Unavailable(
                "sqlite URL needs a file path (sqlite://data/crm.db); in-memory databases are not supported".into(),
            ));
        }
        Ok((Backend::Sqlite, Some(PathBuf::from(path))))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok((Backend::Postgres, None))
    } else {
        Err(StoreError::Unavailable(format!(
            "unsupported database URL `{}`: use sqlite://<file> or postgres://…",
            redact(url)
        )))
    }
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}://{user}:***{}", &url[..scheme_end], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Checks a database URL without connecting.
pub fn check_url(url: &str) -> StoreResult<Backend> {
    parse_url(url).map(|(backend, _)| backend)
}

impl Db {
    /// Opens the pool (SQLite: creates the file and its folder if missing) without running
    /// migrations. Connections are opened lazily; call [`Db::ping`] to check the database.
    pub async fn connect(options: &DbOptions) -> StoreResult<Self> {
        let (backend, path) = parse_url(&options.url)?;
        let statements = Arc::new(AtomicU64::new(0));
        let mut checkpointer = None;
        let pools = match backend {
            Backend::Postgres => {
                let counter = statements.clone();
                let mut config = ManagerConfig::<AsyncPgConnection>::default();
                // No test query on every checkout (a round trip per request); a broken
                // connection is detected by diesel-async and dropped by the pool.
                config.recycling_method = RecyclingMethod::Fast;
                config.custom_setup = Box::new(move |url| {
                    let counter = counter.clone();
                    async move {
                        let mut conn = AsyncPgConnection::establish(url).await?;
                        conn.set_instrumentation(statement_counter(counter));
                        Ok(conn)
                    }
                    .boxed()
                });
                let manager = AsyncDieselConnectionManager::new_with_config(&options.url, config);
                let pool = Pool::builder(manager)
                    .max_size(options.max_connections)
                    .wait_timeout(Some(options.acquire_timeout))
                    .create_timeout(Some(options.acquire_timeout))
                    .runtime(deadpool_runtime())
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Pools::Postgres(pool)
            }
            Backend::Sqlite => {
                let path = path.unwrap_or_default();
                create_parent(&path)?;
                let busy_ms = options.sqlite_busy_timeout.as_millis();
                let counter = statements.clone();
                let mut config = ManagerConfig::<SqliteConn>::default();
                config.recycling_method = RecyclingMethod::Fast;
                config.custom_setup = Box::new(move |url| {
                    let counter = counter.clone();
                    let path = url.strip_prefix("sqlite://").unwrap_or(url).to_owned();
                    async move {
                        let mut conn = SqliteConn::establish(&path).await?;
                        // Per connection: WAL for concurrent readers, foreign keys enforced,
                        // writers wait for the lock instead of failing at once. NORMAL
                        // synchronous is safe in WAL mode (no corruption; an OS crash may lose
                        // the last commits) and about 4x faster than FULL on this disk. The
                        // busy timeout comes first: switching to WAL takes a lock too, and
                        // another process (a worker starting alongside) may hold it.
                        conn.batch_execute(&format!(
                            "PRAGMA busy_timeout = {busy_ms}; PRAGMA journal_mode = WAL; \
                             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                             PRAGMA wal_autocheckpoint = {SQLITE_AUTOCHECKPOINT_PAGES};"
                        ))
                        .await
                        .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
                        conn.set_instrumentation(statement_counter(counter));
                        Ok(conn)
                    }
                    .boxed()
                });
                let manager = AsyncDieselConnectionManager::new_with_config(&options.url, config);
                let pool = Pool::builder(manager)
                    .max_size(options.max_connections)
                    .wait_timeout(Some(options.acquire_timeout))
                    .create_timeout(Some(options.acquire_timeout))
                    .runtime(deadpool_runtime())
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                checkpointer = Some(Checkpointer::spawn(
                    path.to_string_lossy().into_owned(),
                    busy_ms,
                ));
                Pools::Sqlite(pool)
            }
        };
        let notifier = match &pools {
            Pools::Postgres(pool) => Some(crate::effects::Notifier::spawn(pool.clone())),
            Pools::Sqlite(_) => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                pools,
                backend,
                statements,
                url: options.url.clone(),
                notifier,
                checkpointer,
                inbox: crate::inbox::Queue::default(),
            }),
        })
    }

    /// Opens the database and applies pending migrations.
    pub async fn open(options: &DbOptions) -> StoreResult<Self> {
        let db = Self::connect(options).await?;
        run_migrations(&options.url).await?;
        Ok(db)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The deliveries waiting for the inbox writer.
    pub(crate) fn inbox_queue(&self) -> &crate::inbox::Queue {
        &self.inner.inbox
    }

    pub(crate) fn notifier(&self) -> Option<&Arc<crate::effects::Notifier>> {
        self.inner.notifier.as_ref()
    }

    /// The most connections the pool holds (`database.max_connections`).
    pub fn max_connections(&self) -> usize {
        match &self.inner.pools {
            Pools::Postgres(pool) => pool.status().max_size,
            Pools::Sqlite(pool) => pool.status().max_size,
        }
    }

    pub(crate) fn pools(&self) -> &Pools {
        &self.inner.pools
    }

    /// How many SQL statements this handle's connections have started so far.
    pub fn statement_count(&self) -> u64 {
        self.inner.statements.load(Ordering::Relaxed)
    }

    /// Runs raw SQL statements (no results). For operator tools and tests that must reach
    /// under the API, e.g. to prove that tampering with the audit log is detected.
    pub async fn execute_raw(&self, sql: &str) -> StoreResult<()> {
        with_conn!(self, |conn| {
            conn.batch_execute(sql).await?;
            Ok(())
        })
    }

    /// Runs a raw `SELECT count(*) AS n …` and returns `n`. For operator tools and tests that
    /// check invariants across tables (every imported lead has its run, job and audit entry).
    pub async fn count_raw(&self, sql: &str) -> StoreResult<i64> {
        use diesel_async::RunQueryDsl as _;
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let found: Count = with_conn!(self, |conn| {
            diesel::sql_query(sql).get_result(conn).await?
        });
        Ok(found.n)
    }

    /// PostgreSQL: holds a dedicated connection that `LISTEN`s on `channel` and calls `wake`
    /// for every notification, until the connection fails (the caller reconnects). SQLite has
    /// no cross-process notifications: returns at once, and in-process wakes cover it.
    pub async fn listen(&self, channel: &str, wake: impl Fn() + Send) -> StoreResult<()> {
        if self.backend() != Backend::Postgres {
            return Ok(());
        }
        let mut conn = AsyncPgConnection::establish(&self.inner.url)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        conn.batch_execute(&format!("LISTEN {channel}")).await?;
        let mut notifications = std::pin::pin!(conn.notifications_stream());
        while let Some(notification) = futures_util::StreamExt::next(&mut notifications).await {
            notification?;
            wake();
        }
        Err(StoreError::Unavailable(format!(
            "the LISTEN connection for {channel} closed"
        )))
    }

    /// Runs `SELECT 1` on a pooled connection.
    pub async fn ping(&self) -> StoreResult<()> {
        with_conn!(self, |conn| {
            conn.batch_execute("SELECT 1").await?;
            Ok(())
        })
    }
}

fn deadpool_runtime() -> deadpool::Runtime {
    deadpool::Runtime::Tokio1
}

fn statement_counter(counter: Arc<AtomicU64>) -> impl diesel::connection::Instrumentation {
    move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(target: "crm_store::sql", %query, "Statement started.");
        }
    }
}

fn create_parent(path: &Path) -> StoreResult<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create the folder {}: {e}",
                    parent.display()
                ))
            })
        }
        _ => Ok(()),
    }
}

/// Applies pending migrations for the database at `url`, returning the versions applied.
/// Runs on a blocking thread with a sync connection, so it works on any tokio runtime.
pub async fn run_migrations(url: &str) -> StoreResult<Vec<String>> {
    let (backend, path) = parse_url(url)?;
    let url = url.to_owned();
    let migrate = move || -> StoreResult<Vec<String>> {
        let applied = match backend {
            Backend::Sqlite => {
                let path = path.unwrap_or_default();
                create_parent(&path)?;
                let path = path.to_string_lossy().into_owned();
                let mut conn = SqliteConnection::establish(&path)
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                diesel::connection::SimpleConnection::batch_execute(
                    &mut conn,
                    // The timeout first: another process may be migrating right now.
                    "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;",
                )?;
                conn.run_pending_migrations(SQLITE_MIGRATIONS)
                    .map_err(|e| StoreError::Migration(e.to_string()))?
                    .into_iter()
                    .map(|v| v.to_string())
                    .collect()
            }
            Backend::Postgres => {
                let mut conn =
                    <AsyncConnectionWrapper<AsyncPgConnection> as Connection>::establish(&url)
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                conn.run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map_err(|e| StoreError::Migration(e.to_string()))?
                    .into_iter()
                    .map(|v| v.to_string())
                    .collect()
            }
        };
        Ok(applied)
    };
    tokio::task::spawn_blocking(migrate)
        .await
        .map_err(|e| StoreError::Migration(format!("migration task failed: {e}")))?
}

/// The migration versions embedded for each backend (they must be the same list).
pub fn embedded_migration_versions() -> (Vec<String>, Vec<String>) {
    fn versions(migrations: &EmbeddedMigrations) -> Vec<String> {
        diesel::migration::MigrationSource::<diesel::sqlite::Sqlite>::migrations(migrations)
            .unwrap_or_default()
            .iter()
            .map(|m| m.name().to_string())
            .collect()
    }
    (versions(&SQLITE_MIGRATIONS), versions(&POSTGRES_MIGRATIONS))
}
