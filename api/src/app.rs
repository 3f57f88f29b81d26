//! The composition root: turns a [`Config`] into a running server. `main` and the tests build
//! the same [`Application`].

use crate::{
    config::Config,
    graphql::{ApiContext, build_schema},
    http::{HttpState, router},
};
use anyhow::Context as _;
use crm_domain::{Clock, SystemClock};
use crm_store::Db;
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;

/// A built, bound, not yet running server.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    db: Db,
}

impl Application {
    /// Opens the database (migrating it if configured), builds the schema and binds the port.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Like [`Application::build`], with a given clock (tests control time with it).
    pub async fn build_with_clock(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let options = config.database.db_options();
        let db = if config.database.migrate_on_start {
            Db::open(&options).await
        } else {
            Db::connect(&options).await
        }
        .with_context(|| {
            format!(
                "cannot open the database {}",
                crm_store::redact(&config.database.url)
            )
        })?;
        let region = config.default_region()?;
        let context = ApiContext::new(db.clone(), clock, region, &config.graphql);
        let schema = build_schema(Some(context.clone()), &config.graphql);
        let state = HttpState {
            schema,
            context,
            graphiql: config.graphql.graphiql,
        };
        let router = router(
            state,
            config.server.body_limit_bytes,
            Duration::from_secs(config.server.request_timeout_secs),
        );
        let listener = TcpListener::bind(&config.server.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.bind))?;
        Ok(Self {
            listener,
            router,
            db,
        })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The database handle the server uses.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, backend = %self.db.backend(), "Listening.");
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("the HTTP server failed")
    }
}
