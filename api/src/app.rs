//! The composition root: turns a [`Config`] into a running server. `main` and the tests build
//! the same [`Application`].

use crate::{
    auth::{Authenticator, JwtVerifier, generate_key},
    authz::Authorizer,
    config::{Config, Mode},
    graphql::{Agents, ApiContext, build_schema},
    http::{HttpState, router},
    ratelimit::RateLimits,
};
use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use crm_domain::{Clock, SystemClock};
use crm_plugins::{
    Pipeline, Registry, Runner, RunnerOptions, Scheduler,
    email::{EmailSettings, Mailer, SendEmail},
    follow_up::FollowUp,
    gdpr::{Gdpr, GdprRetention, VoiceDelete},
    import_file::ImportFile,
    intake::{ImportLead, Intake},
    nurture::{Nurture, NurtureEmail, NurtureSend},
    pipeline::{QualifyLead, RescoreLead, RescoreLeads},
    report::{GenerateReport, Recipient, ReportSettings, Reporter},
    templates::Templates,
    voice::{Voice, VoiceCallStep, VoiceDeliver, VoiceDial, VoiceFinish, VoiceReconcile},
};
use crm_store::Db;
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;

/// A built, bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    db: Db,
    bootstrap_key: Option<String>,
    runner: Option<Runner>,
    scheduler: Option<Scheduler>,
    events: crate::events::EventHub,
    authorizer: Authorizer,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("listener", &self.listener)
            .field("db", &self.db)
            .field("bootstrap_key", &self.bootstrap_key.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
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
        let pipeline = pipeline(config)?;
        let authorizer = Authorizer::from_files(
            config.auth.model_file.as_deref(),
            config.auth.policy_file.as_deref(),
        )
        .await?;
        let public_keys = config
            .auth
            .public_keys_file
            .as_deref()
            .map(|path| {
                std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read auth.public_keys_file {}", path.display())
                })
            })
            .transpose()?;
        let jwt = JwtVerifier::new(
            config.auth.jwt_secret.as_ref(),
            public_keys.as_deref(),
            config.auth.issuer.clone(),
            config.auth.audience.clone(),
        )
        .context("invalid auth.public_keys_file")?;
        if jwt.is_disabled() {
            tracing::warn!("No JWT secret or public keys configured: only API keys authenticate.");
        }
        let authenticator = Authenticator::new(jwt, db.clone(), clock.clone());
        let app_authorizer = authorizer.clone();
        let runner_clock = clock.clone();
        let voice_clock = clock.clone();
        let scheduler_clock = clock.clone();
        let bootstrap_key = if config.auth.bootstrap_admin_key {
            bootstrap_admin_key(&db, clock.as_ref()).await?
        } else {
            None
        };
        let context = ApiContext::new(
            db.clone(),
            clock,
            region,
            pipeline.clone(),
            {
                let voice = voice(config, &db, &voice_clock, &pipeline)?;
                // One mailer (templates loaded once) for every agent that mails.
                let mailer = mailer(config, &db, &voice_clock)?;
                Agents {
                    gdpr: gdpr(config, &db, &voice_clock, voice.clone(), mailer.clone())?,
                    voice,
                    reporter: reporter(config, &db, &voice_clock, &authorizer, mailer.clone())?,
                    mailer,
                }
            },
            config,
        );
        let events = context.events.clone();
        let schema = build_schema(Some((context.clone(), authorizer.clone())), &config.graphql);
        let graphiql = config.graphql.graphiql && config.server.mode != Mode::Production;
        let limits = RateLimits::new(&config.rate_limit);
        let pruned = limits.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                pruned.prune();
            }
        });
        let state = HttpState {
            schema,
            context,
            authenticator,
            authorizer,
            limits,
            trust_forwarded_for: config.rate_limit.trust_forwarded_for,
            graphiql,
            intake: Arc::new(config.intake.clone()),
            body_limit: config.server.body_limit_bytes,
            sendgrid_events: config
                .email
                .sendgrid
                .event_public_key
                .as_deref()
                .filter(|k| !k.trim().is_empty())
                .map(|_| crm_email::sendgrid::EventWebhook::new(&config.email.sendgrid))
                .transpose()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        };
        let router = router(
            state,
            config.server.body_limit_bytes,
            Duration::from_secs(config.server.request_timeout_secs),
            &config.server.cors_allowed_origins,
        )?;
        let listener = TcpListener::bind(&config.server.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.bind))?;
        let runner = (config.jobs.workers > 0)
            .then(|| {
                job_runner(
                    config,
                    db.clone(),
                    runner_clock,
                    &pipeline,
                    &app_authorizer,
                    config.jobs.workers,
                )
            })
            .transpose()?;
        let scheduler = scheduler(config, db.clone(), scheduler_clock)?;
        Ok(Self {
            listener,
            router,
            db,
            bootstrap_key,
            runner,
            scheduler,
            events,
            authorizer: app_authorizer,
        })
    }

    /// The admin API key created on this first start over an empty key table, if any. Show it
    /// to the operator once; it is not stored anywhere in clear.
    pub fn bootstrap_key(&self) -> Option<&str> {
        self.bootstrap_key.as_deref()
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The database handle the server uses.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The policy decision point the server runs with (job runners built beside it need it).
    pub fn authorizer(&self) -> &Authorizer {
        &self.authorizer
    }

    /// Serves (and runs jobs, if configured) until `shutdown` resolves, then finishes
    /// in-flight requests and the jobs in hand.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, backend = %self.db.backend(), "Listening.");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let runner = self.runner.map(|runner| {
            let mut stopped = stopped.clone();
            tokio::spawn(runner.run_until(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        });
        let scheduler = self.scheduler.map(|scheduler| {
            let mut stopped = stopped.clone();
            tokio::spawn(scheduler.run_until(SCHEDULER_TICK, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        });
        let events = {
            let mut stopped = stopped.clone();
            tokio::spawn(self.events.run_until(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        };
        // Small writes (a WebSocket frame, a short response) go out at once, not after the
        // peer's ACK of the previous one (Nagle's algorithm).
        let listener = self.listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY could not be set on a connection.");
            }
        });
        let served = axum::serve(
            listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await
        .context("the HTTP server failed");
        if let Some(runner) = runner {
            let _ = runner.await;
        }
        if let Some(scheduler) = scheduler {
            let _ = scheduler.await;
        }
        let _ = events.await;
        served
    }
}

/// The lead chain of `config`, as this build runs it.
pub fn pipeline(config: &Config) -> anyhow::Result<Arc<Pipeline>> {
    Pipeline::new(
        config.pipeline.clone(),
        config.scoring.clone(),
        crm_plugins::KINDS.iter().copied(),
    )
    .map(Arc::new)
    .map_err(|problems| anyhow::anyhow!("invalid pipeline config: {problems}"))
}

/// The job kinds this server runs. The agents of the lead chain register here as they land.
pub fn registry(
    config: &Config,
    db: &Db,
    clock: &Arc<dyn Clock>,
    pipeline: &Arc<Pipeline>,
    authorizer: &Authorizer,
) -> anyhow::Result<Registry> {
    let intake = Intake::new(
        db.clone(),
        clock.clone(),
        pipeline.clone(),
        config.default_region()?,
    );
    let audit = Arc::new(crate::audit::SystemAudit {
        actor: "import-lead".into(),
        clock: clock.clone(),
        redact: config.audit.redact_fields.clone().into(),
    });
    let file_audit = Arc::new(crate::audit::SystemAudit {
        actor: "import-file".into(),
        clock: clock.clone(),
        redact: config.audit.redact_fields.clone().into(),
    });
    let voice = voice(config, db, clock, pipeline)?;
    let mailer = mailer(config, db, clock)?;
    let follow_up = FollowUp::new(
        mailer.clone(),
        pipeline.clone(),
        voice.settings().default_time_zone,
    );
    let nurture = Nurture::new(
        mailer.clone(),
        pipeline.clone(),
        config.email.nurture.steps.clone(),
    );
    let reporter = reporter(config, db, clock, authorizer, mailer.clone())?;
    let gdpr = gdpr(config, db, clock, voice.clone(), mailer.clone())?;
    Ok(Registry::default()
        .with(Arc::new(GenerateReport(reporter)))
        .with(Arc::new(VoiceDelete(gdpr.clone())))
        .with(Arc::new(GdprRetention(gdpr)))
        .with(Arc::new(NurtureEmail(nurture.clone())))
        .with(Arc::new(NurtureSend(nurture)))
        .with(Arc::new(SendEmail(mailer)))
        .with(Arc::new(follow_up))
        .with(Arc::new(ImportFile::new(
            db.clone(),
            clock.clone(),
            intake.clone(),
            config.intake.import_dir.clone(),
            file_audit,
        )))
        .with(Arc::new(ImportLead::new(db.clone(), intake, audit)))
        .with(Arc::new(QualifyLead::new(
            db.clone(),
            clock.clone(),
            pipeline.clone(),
        )))
        .with(Arc::new(RescoreLead::new(
            db.clone(),
            clock.clone(),
            pipeline.clone(),
        )))
        .with(Arc::new(RescoreLeads::new(db.clone(), clock.clone())))
        .with(Arc::new(VoiceCallStep(voice.clone())))
        .with(Arc::new(VoiceDial(voice.clone())))
        .with(Arc::new(VoiceDeliver(voice.clone())))
        .with(Arc::new(VoiceFinish(voice.clone())))
        .with(Arc::new(VoiceReconcile(voice))))
}

/// The email agent of `config`: its sender, templates, signature and unsubscribe key.
pub fn mailer(config: &Config, db: &Db, clock: &Arc<dyn Clock>) -> anyhow::Result<Mailer> {
    use secrecy::ExposeSecret as _;
    let email = &config.email;
    let sender = crm_email::build(&email.senders()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = (!email.templates_dir.is_empty()).then(|| std::path::Path::new(&email.templates_dir));
    let templates =
        Templates::load(dir).map_err(|e| anyhow::anyhow!("email.templates_dir: {e}"))?;
    let key = match (&email.unsubscribe_secret, &config.auth.jwt_secret) {
        (Some(secret), _) => secret.expose_secret().as_bytes().to_vec(),
        (None, Some(jwt)) => {
            use sha2::Digest as _;
            sha2::Sha256::digest(format!("crm-unsubscribe:{}", jwt.expose_secret()).as_bytes())
                .to_vec()
        }
        (None, None) => {
            let mut key = vec![0_u8; 32];
            getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            key
        }
    };
    let non_empty = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_owned());
    let settings = EmailSettings {
        from: crm_domain::Mailbox {
            email: email.from_email.clone(),
            name: non_empty(&email.from_name),
        },
        reply_to: non_empty(&email.reply_to).map(|address| crm_domain::Mailbox {
            email: address,
            name: non_empty(&email.from_name),
        }),
        signature: crm_plugins::templates::SenderVars {
            name: email.from_name.clone(),
            company: non_empty(&email.company),
            email: non_empty(&email.reply_to).unwrap_or_else(|| email.from_email.clone()),
            phone: non_empty(&email.phone),
        },
        public_url: email.public_url.clone(),
        unsubscribe_key: key,
    };
    Ok(Mailer::new(
        db.clone(),
        clock.clone(),
        Arc::new(templates),
        sender,
        settings,
    ))
}

/// The GDPR agent of `config` (erasure, provider-side deletion, retention).
pub fn gdpr(
    config: &Config,
    db: &Db,
    clock: &Arc<dyn Clock>,
    voice: Voice,
    mailer: Mailer,
) -> anyhow::Result<Gdpr> {
    let retention = config
        .gdpr
        .retention
        .retention()
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Gdpr::new(
        db.clone(),
        clock.clone(),
        voice,
        mailer,
        retention,
    ))
}

/// The report agent of `config`. Each recipient's scope comes from the policy's row rule for
/// their role, so a scheduled report never shows a recipient more than they may see; a
/// recipient whose role may not read reports, or sees no customers, stops the start.
pub fn reporter(
    config: &Config,
    db: &Db,
    clock: &Arc<dyn Clock>,
    authorizer: &Authorizer,
    mailer: Mailer,
) -> anyhow::Result<Reporter> {
    let reports = &config.reports;
    let time_zone: chrono_tz::Tz = reports
        .time_zone
        .parse()
        .map_err(|_| anyhow::anyhow!("reports.time_zone: unknown zone `{}`", reports.time_zone))?;
    let language = crm_domain::Language::parse(&reports.language)
        .map_err(|e| anyhow::anyhow!("reports.language: {}", e.message))?;
    let mut recipients = Vec::new();
    for (i, r) in reports.recipients.iter().enumerate() {
        let at = format!("reports.recipients[{i}]");
        let role: crm_domain::Role = r
            .role
            .parse()
            .map_err(|_| anyhow::anyhow!("{at}: unknown role `{}`", r.role))?;
        if !authorizer.may_call(role, "Query.report") {
            anyhow::bail!("{at}: the role {role} may not read reports (Query.report)");
        }
        let principal = crm_domain::Principal {
            subject: r.subject.trim().to_owned(),
            role,
            credential: crm_domain::Credential::Token,
        };
        let scope = authorizer
            .customer_scope(&principal)
            .ok_or_else(|| anyhow::anyhow!("{at}: the role {role} sees no customers"))?;
        if scope != crm_domain::CustomerScope::All && principal.subject.is_empty() {
            anyhow::bail!(
                "{at}: the role {role} sees only its own customers: give the recipient's `subject`"
            );
        }
        let email = crm_domain::Email::parse(&r.email)
            .map_err(|e| anyhow::anyhow!("{at}: {}", e.message))?;
        let language = (!r.language.trim().is_empty())
            .then(|| crm_domain::Language::parse(&r.language))
            .transpose()
            .map_err(|e| anyhow::anyhow!("{at}: {}", e.message))?;
        recipients.push(Recipient {
            email: email.as_str().to_owned(),
            name: (!r.name.trim().is_empty()).then(|| r.name.trim().to_owned()),
            role: role.as_str().to_owned(),
            scope,
            language,
        });
    }
    let public_url = if reports.public_url.is_empty() {
        config.email.public_url.clone()
    } else {
        reports.public_url.clone()
    };
    Ok(Reporter::new(
        db.clone(),
        clock.clone(),
        ReportSettings {
            time_zone,
            language,
            manual_minutes: reports.manual_minutes.clone(),
            recipients,
            public_url,
        },
        mailer,
    ))
}

/// The voice agent of `config`: its settings and the providers its agents use.
pub fn voice(
    config: &Config,
    db: &Db,
    clock: &Arc<dyn Clock>,
    pipeline: &Arc<Pipeline>,
) -> anyhow::Result<Voice> {
    let problems = |p: Vec<String>| anyhow::anyhow!("invalid voice config: {}", p.join("; "));
    let settings = config.voice.settings().map_err(problems)?;
    let providers = config.voice.providers().map_err(problems)?;
    Ok(Voice::new(
        db.clone(),
        clock.clone(),
        pipeline.clone(),
        settings,
        providers,
    ))
}

/// How often the scheduler looks for due firings.
pub const SCHEDULER_TICK: Duration = Duration::from_secs(30);

/// The scheduler of the configured `[[jobs.schedules]]`, if there are any.
pub fn scheduler(
    config: &Config,
    db: Db,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Option<Scheduler>> {
    if config.jobs.schedules.is_empty() {
        return Ok(None);
    }
    let schedules = config
        .jobs
        .schedules
        .iter()
        .map(|s| s.parse().map_err(|e| anyhow::anyhow!(e)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(Scheduler::new(db, clock, schedules)))
}

/// A job runner over `db` with the configured lease and polling, running `concurrency` jobs.
pub fn job_runner(
    config: &Config,
    db: Db,
    clock: Arc<dyn Clock>,
    pipeline: &Arc<Pipeline>,
    authorizer: &Authorizer,
    concurrency: usize,
) -> anyhow::Result<Runner> {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "crm".to_owned());
    let options = RunnerOptions {
        worker_id: format!(
            "{host}:{}:{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ),
        concurrency,
        lease: chrono::Duration::seconds(i64::try_from(config.jobs.lease_secs).unwrap_or(300)),
        poll_interval: Duration::from_millis(config.jobs.poll_interval_ms),
    };
    let registry = registry(config, &db, &clock, pipeline, authorizer)?;
    Ok(Runner::new(db, registry, clock, options))
}

/// Creates the first admin API key when no key exists yet (one statement, so replicas starting
/// together create one). Returns the key to show once.
async fn bootstrap_admin_key(db: &Db, clock: &dyn Clock) -> anyhow::Result<Option<String>> {
    let generated = generate_key().context("no randomness for the bootstrap key")?;
    let new = crm_store::api_keys::NewApiKey {
        key: crm_store::api_keys::ApiKey {
            id: crm_domain::ApiKeyId::new(),
            name: "bootstrap admin".into(),
            prefix: generated.prefix.clone(),
            role: crm_domain::Role::Admin,
            subject: "admin".into(),
            created_by: Some("crm-server (first start)".into()),
            created_at: clock.now(),
            expires_at: None,
            revoked_at: None,
        },
        key_hash: generated.hash.clone(),
    };
    let created = crm_store::api_keys::insert_if_none(db, &new).await?;
    if created {
        tracing::warn!(target: "crm::security", prefix = %generated.prefix, "Created the bootstrap admin API key.");
    }
    Ok(created.then_some(generated.secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_registry_runs_exactly_the_kinds_config_accepts() {
        let config = Config::default();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("crm.db").display());
        let db = Db::open(&crm_store::DbOptions {
            url,
            ..config.database.db_options()
        })
        .await
        .unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let authorizer = Authorizer::from_files(None, None).await.unwrap();
        let registry = registry(
            &config,
            &db,
            &clock,
            &pipeline(&config).unwrap(),
            &authorizer,
        )
        .unwrap();
        let mut kinds = crm_plugins::KINDS.to_vec();
        kinds.sort_unstable();
        assert_eq!(registry.kinds(), kinds);
    }
}
