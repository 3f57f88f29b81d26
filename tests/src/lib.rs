//! The test harness of the crm: [`TestApp`] runs the real server on port 0 over a brand-new
//! database (a SQLite file in a temp dir, or a freshly created PostgreSQL database), with a
//! controllable clock, and talks to it over HTTP like any client.

use anyhow::Context as _;
use chrono::{DateTime, Duration, TimeZone as _, Utc};
use crm_api::{Application, Config};
use crm_domain::{Clock, Role};
use crm_store::Db;
use serde_json::{Value, json};
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};
use tokio::sync::oneshot;

/// The HS256 secret of every test app.
pub const TEST_JWT_SECRET: &str = "crm-test-secret-0123456789abcdef0123456789";

/// The environment variable naming a PostgreSQL server for tests
/// (`postgres://postgres@127.0.0.1:5432/postgres`); each test creates its own database there.
pub const POSTGRES_URL_VAR: &str = "CRM_TEST_POSTGRES_URL";

/// Which storage backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    /// A SQLite file in a temp dir.
    Sqlite,
    /// A fresh database on the server named by [`POSTGRES_URL_VAR`].
    Postgres,
}

/// A clock that only moves when a test moves it.
#[derive(Debug)]
pub struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    /// A clock at 2026-11-25 12:00:00 UTC.
    pub fn new() -> Self {
        Self(Mutex::new(
            Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
                .single()
                .unwrap_or_default(),
        ))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A PostgreSQL database created for one test and dropped after it.
#[derive(Debug)]
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop cannot be async; run the DROP on a thread with its own small runtime.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                        .await
                        .ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .ok()
            })
        });
        let _ = dropper.join();
    }
}

/// The running server of one test.
#[derive(Debug)]
pub struct TestApp {
    /// Base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    /// The server's database handle (for statement counts and direct checks).
    pub db: Db,
    /// The server's clock.
    pub clock: Arc<TestClock>,
    /// The HTTP client.
    pub client: reqwest::Client,
    /// The backend in use.
    pub backend: TestBackend,
    /// An admin token minted at start, valid for an hour of the app's clock.
    pub token: String,
    /// The admin API key the first start created.
    pub bootstrap_key: Option<String>,
    /// The config the app runs with.
    pub config: Config,
    /// The app's policy decision point.
    pub authorizer: crm_api::authz::Authorizer,

    shutdown: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl TestApp {
    /// Starts the app on `backend` with the default config.
    pub async fn spawn(backend: TestBackend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts the app on `backend`, letting the test adjust the config first.
    pub async fn spawn_with(backend: TestBackend, configure: impl FnOnce(&mut Config)) -> Self {
        match Self::try_spawn(backend, configure).await {
            Ok(app) => app,
            Err(error) => panic!("cannot start the test app on {backend:?}: {error:#}"),
        }
    }

    async fn try_spawn(
        backend: TestBackend,
        configure: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let mut config = Config::default();
        config.server.bind = "127.0.0.1:0".into();
        config.database.max_connections = 4;
        config.auth.jwt_secret = Some(TEST_JWT_SECRET.into());
        // Tests drive job runners themselves (`Runner::run_once`), deterministically.
        config.jobs.workers = 0;
        // No schedules unless a test adds them: a firing would depend on the clock's start.
        config.jobs.schedules.clear();
        config.intake.import_dir = dir.path().join("imports");
        config.email.outbox.dir = dir.path().join("outbox").display().to_string();
        let pg = match backend {
            TestBackend::Sqlite => {
                config.database.url = format!("sqlite://{}", dir.path().join("crm.db").display());
                None
            }
            TestBackend::Postgres => {
                let admin_url = std::env::var(POSTGRES_URL_VAR)
                    .with_context(|| format!("{POSTGRES_URL_VAR} is not set"))?;
                // A run-specific prefix (CI sets one) lets a sweep drop only this run's leftovers.
                let prefix =
                    std::env::var("CRM_TEST_DB_PREFIX").unwrap_or_else(|_| "crm_test_".to_owned());
                let name = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
                let (client, connection) =
                    tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
                        .await
                        .with_context(|| format!("cannot connect to {admin_url}"))?;
                let connection = tokio::spawn(connection);
                client
                    .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .await?;
                drop(client);
                let _ = connection.await;
                config.database.url = replace_database(&admin_url, &name)?;
                Some(PgDatabase { admin_url, name })
            }
        };
        configure(&mut config);
        let clock = Arc::new(TestClock::new());
        let app = Application::build_with_clock(&config, clock.clone()).await?;
        let addr: SocketAddr = app.local_addr()?;
        let db = app.db().clone();
        let bootstrap_key = app.bootstrap_key().map(str::to_owned);
        let authorizer = app.authorizer().clone();
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        let token = mint(&clock, Role::Admin, "admin-test")?;
        Ok(Self {
            url: format!("http://{addr}"),
            db,
            token,
            bootstrap_key,
            config,
            authorizer,
            clock,
            client: reqwest::Client::builder().build()?,
            backend,
            shutdown: Some(shutdown),
            _dir: dir,
            _pg: pg,
        })
    }

    /// A second server on the same database and clock (another replica): what one commits,
    /// the other's subscribers see. Dropped before `self`, which owns the database.
    pub async fn sibling(&self) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let run = async {
            let dir = tempfile::tempdir()?;
            let mut config = self.config.clone();
            config.database.migrate_on_start = false;
            let app = Application::build_with_clock(&config, self.clock.clone()).await?;
            let addr: SocketAddr = app.local_addr()?;
            let db = app.db().clone();
            let authorizer = app.authorizer().clone();
            let (shutdown, stopped) = oneshot::channel::<()>();
            tokio::spawn(app.run_until(async move {
                let _ = stopped.await;
            }));
            anyhow::Ok(Self {
                url: format!("http://{addr}"),
                db,
                token: self.token.clone(),
                bootstrap_key: None,
                config,
                authorizer,
                clock: self.clock.clone(),
                client: reqwest::Client::builder().build()?,
                backend: self.backend,
                shutdown: Some(shutdown),
                _dir: dir,
                _pg: None,
            })
        };
        run.await
            .unwrap_or_else(|e| panic!("cannot start a sibling app: {e:#}"))
    }

    /// Takes the PostgreSQL database away from the app, as an outage would: no new connections
    /// (committed on its own first: in one implicit transaction with the terminations, the
    /// pool could reconnect before it took effect), then the open ones ended, waiting until
    /// each backend has exited. Panics on SQLite.
    pub async fn take_database_away(&self) {
        self.postgres_admin("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false")
            .await;
        self.postgres_admin(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity \
             WHERE datname = '{db}' AND pid <> pg_backend_pid()",
        )
        .await;
    }

    /// Gives the database taken by [`TestApp::take_database_away`] back.
    pub async fn give_database_back(&self) {
        self.postgres_admin("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true")
            .await;
    }

    /// Runs `sql` on the PostgreSQL server as its admin, with `{db}` replaced by this app's
    /// database name. Panics on SQLite.
    async fn postgres_admin(&self, sql: &str) {
        let Some(pg) = self._pg.as_ref() else {
            panic!("postgres_admin needs an app on PostgreSQL");
        };
        let (client, connection) = tokio_postgres::connect(&pg.admin_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("an admin connection: {e}"));
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&sql.replace("{db}", &pg.name))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        drop(client);
        let _ = connection.await;
    }

    /// A job runner with the server's registry (every agent this build runs), on the app's
    /// database and clock.
    pub fn runner(&self) -> crm_plugins::Runner {
        let pipeline = crm_api::app::pipeline(&self.config)
            .unwrap_or_else(|e| panic!("the test config is invalid: {e:#}"));
        crm_api::app::job_runner(
            &self.config,
            self.db.clone(),
            self.clock.clone(),
            &pipeline,
            &self.authorizer,
            8,
        )
        .unwrap_or_else(|e| panic!("cannot build the runner: {e:#}"))
    }

    /// Runs due jobs with [`TestApp::runner`] until none is due; returns how many ran.
    pub async fn run_jobs(&self) -> usize {
        let runner = self.runner();
        let mut total = 0;
        loop {
            let ran = runner
                .run_once()
                .await
                .unwrap_or_else(|e| panic!("the runner failed: {e}"));
            if ran == 0 {
                return total;
            }
            total += ran;
        }
    }

    /// A token for `subject` with `role`, valid for an hour from the app's clock.
    pub fn token_for(&self, role: Role, subject: &str) -> String {
        mint(&self.clock, role, subject).unwrap_or_else(|e| panic!("cannot mint a token: {e}"))
    }

    /// POSTs a GraphQL request as admin (with a token minted at the clock's current time) and
    /// returns the whole JSON response.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        self.graphql_as(&self.token_for(Role::Admin, "admin-test"), query, variables)
            .await
    }

    /// POSTs a GraphQL request with `Authorization: Bearer <credential>`.
    pub async fn graphql_as(&self, credential: &str, query: &str, variables: Value) -> Value {
        let response = self
            .client
            .post(format!("{}/graphql", self.url))
            .bearer_auth(credential)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /graphql failed: {e}"));
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("POST /graphql returned no JSON: {e}"))
    }

    /// Like [`TestApp::graphql`], but fails the test on any error and returns `data`.
    pub async fn graphql_ok(&self, query: &str, variables: Value) -> Value {
        let response = self.graphql(query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "unexpected errors: {response:#}"
        );
        response["data"].clone()
    }

    /// Creates a customer through the API and returns its id.
    pub async fn create_customer(&self, input: Value) -> String {
        let data = self
            .graphql_ok(
                "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { id } }",
                json!({ "i": input }),
            )
            .await;
        data["createCustomer"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn mint(clock: &TestClock, role: Role, subject: &str) -> anyhow::Result<String> {
    let secret = secrecy::SecretString::from(TEST_JWT_SECRET);
    Ok(crm_api::auth::mint_token(
        &secret,
        subject,
        role,
        clock.now(),
        Duration::hours(1),
        None,
    )?)
}

/// The first error's `extensions.code` of a GraphQL response.
pub fn error_code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<no code>")
}

/// `postgres://u@h:p/old?x` with the database name replaced.
fn replace_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base
        .find("://")
        .context("the PostgreSQL URL has no scheme")?
        + 3;
    let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
    let host_part = path_start.map_or(base, |i| &base[..i]);
    Ok(match query {
        Some(query) => format!("{host_part}/{name}?{query}"),
        None => format!("{host_part}/{name}"),
    })
}

/// Declares each listed `async fn name(backend: TestBackend)` as two tests, `sqlite::name` and
/// `postgres::name`. The PostgreSQL ones are ignored (and so reported as skipped) when
/// `CRM_TEST_POSTGRES_URL` was not set at build time.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::TestBackend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[cfg_attr(not(crm_pg), ignore = "set CRM_TEST_POSTGRES_URL to run the PostgreSQL tests")]
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::TestBackend::Postgres).await
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            replace_database("postgres://p@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://p@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database("postgres://p@h", "x").unwrap(),
            "postgres://p@h/x"
        );
        assert_eq!(
            replace_database("postgres://p@h/db?sslmode=disable", "x").unwrap(),
            "postgres://p@h/x?sslmode=disable"
        );
    }
}
