//! The one typed configuration of `crm-server`.
//!
//! Sources, later ones winning: the defaults in this file, an optional TOML file (`--config` or
//! `CRM_CONFIG`), then environment variables `CRM_<SECTION>__<KEY>` (`__` separates nesting
//! levels, e.g. `CRM_SERVER__BIND`, `CRM_DATABASE__URL`). Only variables containing `__` are
//! config overrides, so `CRM_CONFIG`, `CRM_URL` or `CRM_TOKEN` never collide with it.
//!
//! Unknown keys are errors, in the file and in the environment. Secrets (`database.password`
//! and, later, API keys and signing secrets) are `secrecy` types, never serialized or logged,
//! and are refused when they come from the file: they belong in the environment
//! (`doppler run -- crm-server serve` works).
//!
//! `crm.example.toml` at the repository root documents every key with its default; a test keeps
//! it equal to [`Config::default`].

use figment::{
    Figment, Metadata, Source,
    providers::{Env, Format as _, Serialized, Toml},
};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// Keys that hold secrets: accepted from the environment only.
const SECRET_KEYS: &[&str] = &[
    "database.password",
    "auth.jwt_secret",
    "intake.webhook_secrets",
    "voice.providers.vapi.api_key",
    "voice.providers.vapi.webhook_secret",
    "voice.providers.retell.api_key",
    "voice.providers.bland.api_key",
    "voice.providers.bland.webhook_secret",
    "voice.providers.simulator.webhook_secret",
    "email.smtp.password",
    "email.sendgrid.api_key",
    "email.unsubscribe_secret",
];

/// Shortest JWT secret accepted in production (bytes): HS256 wants at least its hash size.
pub const MIN_JWT_SECRET_LEN: usize = 32;

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP server.
    pub server: ServerConfig,
    /// Storage.
    pub database: DatabaseConfig,
    /// GraphQL limits.
    pub graphql: GraphqlConfig,
    /// Customer rules.
    pub customers: CustomersConfig,
    /// Authentication and authorization.
    pub auth: AuthConfig,
    /// Request rate limits.
    pub rate_limit: RateLimitConfig,
    /// Audit log.
    pub audit: AuditConfig,
    /// The job runner.
    pub jobs: JobsConfig,
    /// Lead intake: webhooks and imports.
    pub intake: IntakeConfig,
    /// The lead chain: threshold, re-scoring, branches.
    pub pipeline: crm_plugins::pipeline::PipelineConfig,
    /// Lead scoring rules.
    pub scoring: crm_domain::ScoringRules,
    /// Voice calls: agents, providers, the call queue.
    pub voice: VoiceConfig,
    /// Email: the sender, templates, signature and unsubscribe links.
    pub email: EmailConfig,
    /// Reports: time zone, language, manual minutes, recipients of scheduled reports.
    pub reports: ReportsConfig,
    /// GDPR: retention periods.
    pub gdpr: GdprConfig,
    /// Logging.
    pub log: LogConfig,
}

/// Email (`/send-email`, `/follow-up`): the sender (`kind` and its settings, as
/// [`crm_email::SendersConfig`]), who signs, the templates folder and unsubscribe links.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp`, `sendgrid` or `outbox` (the default: `.eml` files, no network).
    pub kind: String,
    /// The sender's address.
    pub from_email: String,
    /// The sender's display name (also the signature's name).
    pub from_name: String,
    /// Where replies go (empty: to `from_email`).
    pub reply_to: String,
    /// The company in the signature.
    pub company: String,
    /// The phone number in the signature.
    pub phone: String,
    /// Our public base URL, for unsubscribe links (`{public_url}/unsubscribe/{token}`).
    pub public_url: String,
    /// A folder of templates that override or add to the shipped ones (empty: none).
    pub templates_dir: String,
    /// The key signing unsubscribe links; from the environment only
    /// (`CRM_EMAIL__UNSUBSCRIBE_SECRET`). Without it, links are signed with a key derived from
    /// `auth.jwt_secret`, or (neither set) a random key per start, so old links stop working.
    #[serde(skip_serializing)]
    pub unsubscribe_secret: Option<SecretString>,
    /// `[email.smtp]`.
    pub smtp: crm_email::smtp::Config,
    /// `[email.sendgrid]`.
    pub sendgrid: crm_email::sendgrid::Config,
    /// `[email.outbox]`.
    pub outbox: crm_email::outbox::Config,
    /// `[email.nurture]`: the sequence for leads under the threshold.
    pub nurture: NurtureConfig,
}

/// Reports (`/generate-report`): the zone periods are counted in, the language of labels
/// and mails, the seed's manual minutes, and who receives scheduled reports. Schedule them in
/// `[[jobs.schedules]]` with `kind = "generate-report"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportsConfig {
    /// The IANA time zone days, weeks and months are counted in.
    pub time_zone: String,
    /// The default language of reports and report mails: de, bs, sr (Cyrillic) or en.
    pub language: String,
    /// Our public base URL for links in report mails (empty: `email.public_url`).
    pub public_url: String,
    /// Minutes each step took by hand (the ROI view): enter_lead, qualify_lead, call,
    /// follow_up, report.
    pub manual_minutes: crm_domain::report::ManualMinutes,
    /// Who receives scheduled reports. Each gets the report of what their role (and, for
    /// sales, their subject) may see.
    pub recipients: Vec<ReportRecipient>,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self {
            time_zone: "Europe/Berlin".to_owned(),
            language: "en".to_owned(),
            public_url: String::new(),
            manual_minutes: crm_domain::report::ManualMinutes::default(),
            recipients: Vec::new(),
        }
    }
}

/// `[gdpr]`: data protection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GdprConfig {
    /// `[gdpr.retention]`: how long data is kept (applied by the `gdpr-retention` job).
    pub retention: RetentionConfig,
}

/// `[gdpr.retention]`, in days; 0 keeps the data forever.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Call transcripts (text and segments) are removed this long after the call ended.
    pub transcripts_days: i64,
    /// Leads (status lead) with no change, interaction or call for this long are erased.
    pub inactive_leads_days: i64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            transcripts_days: 180,
            inactive_leads_days: 730,
        }
    }
}

impl RetentionConfig {
    /// The periods, checked (none negative).
    pub fn retention(&self) -> Result<crm_plugins::gdpr::Retention, String> {
        let days = |name: &str, value: i64| {
            u32::try_from(value).map_err(|_| {
                format!("gdpr.retention.{name} must be 0 (keep forever) or a number of days, not {value}")
            })
        };
        Ok(crm_plugins::gdpr::Retention {
            transcripts_days: days("transcripts_days", self.transcripts_days)?,
            inactive_leads_days: days("inactive_leads_days", self.inactive_leads_days)?,
        })
    }
}

/// `[[reports.recipients]]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportRecipient {
    /// Their email address.
    pub email: String,
    /// Their name (optional).
    pub name: String,
    /// Their role: admin, manager, sales, integration or viewer.
    pub role: String,
    /// Their subject (the owner name their leads carry); required for roles that see only
    /// their own customers.
    pub subject: String,
    /// The language of their reports (empty: `reports.language`).
    pub language: String,
}

/// `[email.nurture]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NurtureConfig {
    /// The steps: a template and the days after the previous step (after enrollment, for the
    /// first).
    pub steps: Vec<crm_plugins::nurture::NurtureStep>,
}

impl Default for NurtureConfig {
    fn default() -> Self {
        Self {
            steps: crm_plugins::nurture::default_steps(),
        }
    }
}

impl Default for EmailConfig {
    fn default() -> Self {
        let senders = crm_email::SendersConfig::default();
        Self {
            kind: senders.kind,
            from_email: "crm@example.com".to_owned(),
            from_name: "crm".to_owned(),
            reply_to: String::new(),
            company: String::new(),
            phone: String::new(),
            public_url: "http://127.0.0.1:8080".to_owned(),
            templates_dir: String::new(),
            unsubscribe_secret: None,
            smtp: senders.smtp,
            sendgrid: senders.sendgrid,
            outbox: senders.outbox,
            nurture: NurtureConfig::default(),
        }
    }
}

impl EmailConfig {
    /// The sender settings.
    pub fn senders(&self) -> crm_email::SendersConfig {
        crm_email::SendersConfig {
            kind: self.kind.clone(),
            smtp: self.smtp.clone(),
            sendgrid: self.sendgrid.clone(),
            outbox: self.outbox.clone(),
        }
    }

    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if crm_domain::Email::parse(&self.from_email).is_err() {
            problems.push(format!(
                "email.from_email: `{}` is not an email address",
                self.from_email
            ));
        }
        if !self.reply_to.is_empty() && crm_domain::Email::parse(&self.reply_to).is_err() {
            problems.push(format!(
                "email.reply_to: `{}` is not an email address",
                self.reply_to
            ));
        }
        if !(self.public_url.starts_with("https://") || self.public_url.starts_with("http://")) {
            problems.push(format!(
                "email.public_url: `{}` is not an http(s) URL",
                self.public_url
            ));
        }
        if let Err(error) = crm_email::build(&self.senders()) {
            problems.push(error.to_string());
        }
        let dir = (!self.templates_dir.is_empty()).then(|| Path::new(&self.templates_dir));
        match crm_plugins::templates::Templates::load(dir) {
            Err(error) => problems.push(format!("email.templates_dir: {error}")),
            Ok(templates) => {
                if self.nurture.steps.is_empty() {
                    problems.push("email.nurture.steps must name at least one template".into());
                }
                for step in &self.nurture.steps {
                    if !templates.names().contains(&step.template.as_str()) {
                        problems.push(format!(
                            "email.nurture.steps: no template `{}` (known: {})",
                            step.template,
                            templates.names().join(", ")
                        ));
                    }
                }
            }
        }
        problems
    }
}

/// Voice calls (`/voice-call`): agents, providers and the call queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceConfig {
    /// The agent for leads whose language no agent speaks.
    pub default_agent: String,
    /// Calling hours in the lead's local time.
    pub calling_window: crm_domain::calling::CallingWindow,
    /// Retries of unanswered calls; spacing of calls to one number.
    pub retry: crm_domain::calling::RetryPolicy,
    /// Simultaneous calls per provider kind (10 where not named).
    pub max_concurrent: BTreeMap<String, u32>,
    /// The time zone of leads with neither their own nor a phone country we know.
    pub default_time_zone: String,
    /// Our public base URL (`https://crm.example.com`): providers that take a webhook URL per
    /// call are sent `{public_url}/webhooks/voice/{provider}`. Empty: the URL configured at the
    /// provider is used.
    pub public_url: String,
    /// Minutes after dialling when a call without its final event is looked up at the provider.
    pub reconcile_after_minutes: u32,
    /// The voice agents by name.
    pub agents: BTreeMap<String, VoiceAgentConfig>,
    /// Provider settings (credentials from the environment only).
    pub providers: crm_voice::ProvidersConfig,
}

/// One voice agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceAgentConfig {
    /// `vapi`, `retell`, `bland` or `simulator`.
    pub kind: String,
    /// The language it speaks (`de`, `bs`, `sr`, `en`).
    pub language: String,
    /// The provider's agent or assistant id (Vapi assistantId, Retell agent_id, Bland pathway_id).
    pub agent_id: String,
    /// The number to call from (E.164), or Vapi's phoneNumberId.
    pub from_number: String,
    /// The opening line.
    pub first_message: String,
    /// Instructions, for providers that take them per call (Bland `task`).
    pub task: String,
    /// Fixed script variables.
    pub variables: BTreeMap<String, String>,
}

impl Default for VoiceAgentConfig {
    fn default() -> Self {
        Self {
            kind: "simulator".to_owned(),
            language: "en".to_owned(),
            agent_id: String::new(),
            from_number: String::new(),
            first_message: String::new(),
            task: String::new(),
            variables: BTreeMap::new(),
        }
    }
}

impl Default for VoiceConfig {
    fn default() -> Self {
        let agent = |language: &str| VoiceAgentConfig {
            language: language.to_owned(),
            ..VoiceAgentConfig::default()
        };
        Self {
            default_agent: "de".to_owned(),
            calling_window: Default::default(),
            retry: Default::default(),
            max_concurrent: BTreeMap::new(),
            default_time_zone: "Europe/Berlin".to_owned(),
            public_url: String::new(),
            reconcile_after_minutes: 30,
            agents: ["de", "bs", "sr", "en"]
                .into_iter()
                .map(|l| (l.to_owned(), agent(l)))
                .collect(),
            providers: Default::default(),
        }
    }
}

fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

impl VoiceConfig {
    /// The settings the voice agent runs with, or every problem.
    pub fn settings(&self) -> Result<crm_plugins::voice::VoiceSettings, Vec<String>> {
        use crm_domain::{AgentSpec, ProviderKind};
        let mut problems = Vec::new();
        let hours = self
            .calling_window
            .hours()
            .map_err(|p| problems.extend(p))
            .ok();
        if let Err(p) = self.retry.validate() {
            problems.extend(p);
        }
        let mut agents = BTreeMap::new();
        for (name, agent) in &self.agents {
            let kind = match agent.kind.parse::<ProviderKind>() {
                Ok(kind) => kind,
                Err(_) => {
                    problems.push(format!(
                        "voice.agents.{name}.kind: `{}` is not vapi, retell, bland or simulator",
                        agent.kind
                    ));
                    continue;
                }
            };
            if crm_domain::Language::parse(&agent.language).is_err() {
                problems.push(format!(
                    "voice.agents.{name}.language: `{}` is not a language code",
                    agent.language
                ));
            }
            if kind != ProviderKind::Simulator
                && agent.agent_id.trim().is_empty()
                && agent.task.trim().is_empty()
            {
                problems.push(format!(
                    "voice.agents.{name}: a {kind} agent needs agent_id (or task, for bland)"
                ));
            }
            agents.insert(
                name.clone(),
                crm_plugins::voice::Agent {
                    kind,
                    spec: AgentSpec {
                        name: name.clone(),
                        provider_agent_id: non_empty(&agent.agent_id),
                        from_number: non_empty(&agent.from_number),
                        language: agent.language.trim().to_lowercase(),
                        first_message: non_empty(&agent.first_message),
                        task: non_empty(&agent.task),
                        variables: agent.variables.clone(),
                    },
                },
            );
        }
        if !self.agents.contains_key(&self.default_agent) {
            problems.push(format!(
                "voice.default_agent: `{}` is not one of voice.agents",
                self.default_agent
            ));
        }
        let mut max_concurrent = BTreeMap::new();
        for (kind, limit) in &self.max_concurrent {
            match kind.parse::<ProviderKind>() {
                Ok(kind) if *limit > 0 => {
                    max_concurrent.insert(kind, *limit);
                }
                Ok(_) => problems.push(format!("voice.max_concurrent.{kind} must be at least 1")),
                Err(_) => problems.push(format!(
                    "voice.max_concurrent: `{kind}` is not vapi, retell, bland or simulator"
                )),
            }
        }
        let default_time_zone = self
            .default_time_zone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| {
                problems.push(format!(
                    "voice.default_time_zone: `{}` is not an IANA time zone",
                    self.default_time_zone
                ))
            });
        let public_url = non_empty(&self.public_url);
        if let Some(url) = &public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            problems.push(format!("voice.public_url: `{url}` is not an http(s) URL"));
        }
        if self.reconcile_after_minutes == 0 {
            problems.push("voice.reconcile_after_minutes must be at least 1".to_owned());
        }
        match (hours, default_time_zone) {
            (Some(hours), Ok(default_time_zone)) if problems.is_empty() => {
                Ok(crm_plugins::voice::VoiceSettings {
                    agents,
                    default_agent: self.default_agent.clone(),
                    hours,
                    retry: self.retry.clone(),
                    max_concurrent,
                    default_time_zone,
                    public_url,
                    reconcile_after: chrono::Duration::minutes(i64::from(
                        self.reconcile_after_minutes,
                    )),
                    give_up_after: chrono::Duration::hours(24),
                })
            }
            _ => Err(problems),
        }
    }

    /// The providers the agents use, built from their settings.
    pub fn providers(
        &self,
    ) -> Result<
        BTreeMap<crm_domain::ProviderKind, std::sync::Arc<dyn crm_domain::VoiceProvider>>,
        Vec<String>,
    > {
        let mut providers = BTreeMap::new();
        let mut problems = Vec::new();
        for agent in self.agents.values() {
            let Ok(kind) = agent.kind.parse::<crm_domain::ProviderKind>() else {
                continue;
            };
            if providers.contains_key(&kind) {
                continue;
            }
            match crm_voice::build(kind, &self.providers) {
                Ok(provider) => {
                    providers.insert(kind, provider);
                }
                Err(error) => problems.push(error.to_string()),
            }
        }
        // The simulator always runs, so its deliveries posted from outside are understood.
        if let std::collections::btree_map::Entry::Vacant(entry) =
            providers.entry(crm_domain::ProviderKind::Simulator)
            && let Ok(provider) =
                crm_voice::build(crm_domain::ProviderKind::Simulator, &self.providers)
        {
            entry.insert(provider);
        }
        if problems.is_empty() {
            Ok(providers)
        } else {
            Err(problems)
        }
    }
}

/// Lead intake (`/import-lead`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntakeConfig {
    /// Seconds a webhook's timestamp may lie before or after now; older deliveries are
    /// refused as replays.
    pub replay_window_secs: u64,
    /// What a webhook lead does to the customer it duplicates: `skip`, `update` or `merge`.
    pub on_duplicate: crm_plugins::intake::OnDuplicate,
    /// Most leads one `importLeads` call takes.
    pub max_leads_per_request: usize,
    /// Where uploaded lead files wait for their import job (every worker must see it).
    pub import_dir: std::path::PathBuf,
    /// Largest lead file accepted (bytes).
    pub max_file_bytes: usize,
    /// Lowest likeness (0–1, name and company) `findDuplicates` reports by default.
    pub duplicate_threshold: f64,
    /// Which values survive a merge that names no rule: `keep_non_empty` (the primary's,
    /// its gaps filled from the duplicates), `newest` (per field, the most recently changed
    /// record's) or `primary` (the primary's as they are).
    pub survivorship: crate::graphql::Survivorship,
    /// Web forms (`[[intake.forms]]`), posted to `/forms/{name}`.
    pub forms: Vec<FormConfig>,
    /// Webhook signing secrets per source, from the environment only:
    /// `CRM_INTAKE__WEBHOOK_SECRETS__<SOURCE>="whsec_<base64>"`, several separated by spaces
    /// while rotating.
    #[serde(skip_serializing)]
    pub webhook_secrets: std::collections::BTreeMap<String, SecretString>,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            replay_window_secs: 300,
            on_duplicate: crm_plugins::intake::OnDuplicate::Merge,
            max_leads_per_request: 1000,
            import_dir: "data/imports".into(),
            forms: Vec::new(),
            duplicate_threshold: 0.88,
            survivorship: crate::graphql::Survivorship::KeepNonEmpty,
            max_file_bytes: 512 * 1024 * 1024,
            webhook_secrets: std::collections::BTreeMap::new(),
        }
    }
}

/// A web form that posts leads (`POST /forms/{name}`, urlencoded or multipart).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormConfig {
    /// The form's name in the URL.
    pub name: String,
    /// Form field → lead field (`"your-email" = "email"`); other fields are matched by the
    /// synonyms of their names.
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, String>,
    /// Origins whose pages may post the form (`https://www.example.com`); a submission from
    /// another origin is refused. Empty: only submissions without an `Origin` header.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// A field hidden from people; a submission that fills it is answered as usual and dropped.
    #[serde(default)]
    pub honeypot: Option<String>,
    /// Where to send the browser after a submission (`303 See Other`); without it the answer is
    /// `202` with JSON.
    #[serde(default)]
    pub redirect: Option<String>,
    /// The source of its leads (default `webform`).
    #[serde(default)]
    pub source: Option<String>,
    /// Tags for its leads.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl std::fmt::Debug for IntakeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntakeConfig")
            .field("replay_window_secs", &self.replay_window_secs)
            .field("on_duplicate", &self.on_duplicate)
            .field("max_leads_per_request", &self.max_leads_per_request)
            .field("import_dir", &self.import_dir)
            .field("max_file_bytes", &self.max_file_bytes)
            .field(
                "webhook_sources",
                &self.webhook_secrets.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// How strict the server is about its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Friendly defaults for a laptop.
    Development,
    /// Refuses to start without a strong JWT secret; GraphiQL off.
    Production,
}

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `development` or `production`. Default `development`.
    pub mode: Mode,
    /// Address and port to listen on. Default `127.0.0.1:8080`.
    pub bind: String,
    /// Largest request body accepted, in bytes; larger ones get 413. Default 1 MiB.
    pub body_limit_bytes: usize,
    /// A request that takes longer is answered with 408. Default 30 s.
    pub request_timeout_secs: u64,
    /// Origins allowed to call the API from a browser (CORS). Default none.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Development,
            bind: "127.0.0.1:8080".into(),
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// Storage settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://<file>` (created on first start) or `postgres://user@host:port/db`.
    /// Default `sqlite://data/crm.db`.
    pub url: String,
    /// Password for a PostgreSQL URL, merged into it at start. Secret: env
    /// `CRM_DATABASE__PASSWORD` only.
    #[serde(skip_serializing)]
    pub password: Option<SecretString>,
    /// Most pooled connections. Default 16.
    pub max_connections: usize,
    /// How long a request waits for a pooled connection, in milliseconds. Default 5000.
    pub acquire_timeout_ms: u64,
    /// SQLite: how long a writer waits for the write lock, in milliseconds. Default 5000.
    pub sqlite_busy_timeout_ms: u64,
    /// Apply pending migrations when the server starts. Default true.
    pub migrate_on_start: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/crm.db".into(),
            password: None,
            max_connections: 16,
            acquire_timeout_ms: 5000,
            sqlite_busy_timeout_ms: 5000,
            migrate_on_start: true,
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &crm_store::redact(&self.url))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("sqlite_busy_timeout_ms", &self.sqlite_busy_timeout_ms)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

impl DatabaseConfig {
    /// The options to open the store with: the URL with the password merged in.
    pub fn db_options(&self) -> crm_store::DbOptions {
        crm_store::DbOptions {
            url: self.url_with_password(),
            max_connections: self.max_connections,
            acquire_timeout: Duration::from_millis(self.acquire_timeout_ms),
            sqlite_busy_timeout: Duration::from_millis(self.sqlite_busy_timeout_ms),
        }
    }

    fn url_with_password(&self) -> String {
        let Some(password) = &self.password else {
            return self.url.clone();
        };
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return self.url.clone();
        };
        let Some((user, host)) = rest.split_once('@') else {
            return self.url.clone();
        };
        let user = user.split(':').next().unwrap_or(user);
        format!(
            "{scheme}://{user}:{}@{host}",
            percent_encode(password.expose_secret())
        )
    }
}

fn percent_encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// GraphQL limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphqlConfig {
    /// Page size when a list gets neither `first` nor `last`. Default 20.
    pub default_page_size: usize,
    /// Largest `first`/`last` accepted; more is a `VALIDATION_FAILED` error. Default 100.
    pub max_page_size: usize,
    /// Deepest query accepted. Default 16 (GraphiQL's introspection query needs 13).
    pub max_depth: usize,
    /// Highest query complexity accepted (each field costs 1, lists multiply by their page
    /// size). Default 10000.
    pub max_complexity: usize,
    /// Serve GraphiQL on `GET /graphql` to browsers (never in production). Default true.
    pub graphiql: bool,
    /// Answer introspection queries (`__schema`, `__type`). Default true.
    pub introspection: bool,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        Self {
            default_page_size: 20,
            max_page_size: 100,
            max_depth: 16,
            max_complexity: 10_000,
            graphiql: true,
            introspection: true,
        }
    }
}

/// Customer rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CustomersConfig {
    /// Region used to read phone numbers written without an international prefix
    /// (ISO 3166-1 alpha-2). Default `DE`.
    pub default_region: String,
}

impl Default for CustomersConfig {
    fn default() -> Self {
        Self {
            default_region: "DE".into(),
        }
    }
}

/// Authentication and authorization.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 signing secret for JWTs. Secret: env `CRM_AUTH__JWT_SECRET` only. Without it (and
    /// without public keys) only API keys authenticate.
    #[serde(skip_serializing)]
    pub jwt_secret: Option<SecretString>,
    /// PEM or JWKS file with the RS256/ES256 public keys of an external identity provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_keys_file: Option<PathBuf>,
    /// Required `iss` claim, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` claim, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Lifetime of tokens minted by `crm-server token`, in seconds. Default 3600.
    pub token_ttl_secs: u64,
    /// casbin model replacing the shipped `api/policy/model.conf`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_file: Option<PathBuf>,
    /// casbin policy replacing the shipped `api/policy/policy.csv`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_file: Option<PathBuf>,
    /// On the first start over an empty key table, create an admin API key and print it once.
    /// Default true.
    pub bootstrap_admin_key: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            public_keys_file: None,
            issuer: None,
            audience: None,
            token_ttl_secs: 3600,
            model_file: None,
            policy_file: None,
            bootstrap_admin_key: true,
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "***"))
            .field("public_keys_file", &self.public_keys_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("model_file", &self.model_file)
            .field("policy_file", &self.policy_file)
            .field("bootstrap_admin_key", &self.bootstrap_admin_key)
            .finish()
    }
}

/// The job runner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Jobs `crm-server serve` runs at once (0: serve runs none; use `crm-server worker`).
    /// Default 4.
    pub workers: usize,
    /// Jobs `crm-server worker` runs at once. Default 8.
    pub worker_concurrency: usize,
    /// How long a claimed job is leased, in seconds; a job still running then may be claimed
    /// again by another worker. Default 300.
    pub lease_secs: u64,
    /// How often an idle runner looks for due jobs (enqueues in the same process wake it at
    /// once), in milliseconds. Default 1000.
    pub poll_interval_ms: u64,
    /// Recurring jobs (`[[jobs.schedules]]`), enqueued by every `serve`/`worker` process
    /// (replicas enqueue each firing once). Default: the daily report at 18:00 and retention at
    /// 03:30, Europe/Berlin.
    pub schedules: Vec<ScheduleConfig>,
}

/// One recurring job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Unique name.
    pub name: String,
    /// Cron expression (`0 18 * * *`: daily at 18:00).
    pub cron: String,
    /// IANA time zone the expression is read in. Default `Europe/Berlin`.
    #[serde(default = "default_schedule_zone")]
    pub time_zone: String,
    /// The job kind to enqueue (must be a kind this server runs).
    pub kind: String,
    /// JSON payload of the job. Default `{}`.
    #[serde(default = "default_payload")]
    pub payload: String,
    /// A firing missed during downtime still runs if it is at most this many hours old (only
    /// the latest one). Default 12.
    #[serde(default = "default_catch_up_hours")]
    pub catch_up_hours: u32,
}

fn default_schedule_zone() -> String {
    "Europe/Berlin".into()
}

fn default_payload() -> String {
    "{}".into()
}

fn default_catch_up_hours() -> u32 {
    12
}

impl ScheduleConfig {
    /// The parsed schedule.
    pub fn parse(&self) -> Result<crm_plugins::Schedule, String> {
        crm_plugins::Schedule::parse(
            &self.name,
            &self.cron,
            &self.time_zone,
            &self.kind,
            &self.payload,
            chrono::Duration::hours(i64::from(self.catch_up_hours)),
        )
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            worker_concurrency: 8,
            lease_secs: 300,
            poll_interval_ms: 1000,
            // The seed's daily report at 18:00 (`/generate-report`), mailed to
            // `reports.recipients` (stored for download when there are none).
            schedules: vec![
                ScheduleConfig {
                    name: "daily-report".to_owned(),
                    cron: "0 18 * * *".to_owned(),
                    time_zone: default_schedule_zone(),
                    kind: "generate-report".to_owned(),
                    payload: r#"{"period": "daily"}"#.to_owned(),
                    catch_up_hours: 5,
                },
                ScheduleConfig {
                    name: "gdpr-retention".to_owned(),
                    cron: "30 3 * * *".to_owned(),
                    time_zone: default_schedule_zone(),
                    kind: "gdpr-retention".to_owned(),
                    payload: default_payload(),
                    catch_up_hours: 20,
                },
            ],
        }
    }
}

/// Audit log settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Fields whose values are written as `[redacted]` (the fact that they changed is kept).
    /// Default: email, phone, notes, body.
    pub redact_fields: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            redact_fields: ["email", "phone", "notes", "body"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Request rate limits (token buckets).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Apply the limits. Default true.
    pub enabled: bool,
    /// Sustained requests per minute from one client IP (0: no IP limit). Default 1200.
    pub per_ip_per_minute: u32,
    /// Requests one client IP may send at once. Default 200.
    pub per_ip_burst: u32,
    /// Sustained requests per minute of one user or API key (0: no limit). Default 1200.
    pub per_principal_per_minute: u32,
    /// Requests one user or API key may send at once. Default 200.
    pub per_principal_burst: u32,
    /// Take the client IP from `X-Forwarded-For` (only behind a proxy you run). Default false.
    pub trust_forwarded_for: bool,
    /// Web form submissions per minute from one client IP to one form (0: no limit). Default 10.
    pub form_submissions_per_minute: u32,
    /// Submissions one client IP may send to one form at once. Default 5.
    pub form_submissions_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_ip_per_minute: 1200,
            per_ip_burst: 200,
            per_principal_per_minute: 1200,
            per_principal_burst: 200,
            trust_forwarded_for: false,
            form_submissions_per_minute: 10,
            form_submissions_burst: 5,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directives (`info`, `crm_api=debug,info`). `RUST_LOG` wins when set.
    /// Default `info`.
    pub filter: String,
    /// `text` for people, `json` for log collectors. Default `text`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or did not match the schema.
    #[error("{0}")]
    Load(Box<figment::Error>),
    /// The values are well-formed but unusable.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Loads defaults, then the TOML file (if given; a missing file is an error), then the
    /// environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(
            file,
            Env::prefixed("CRM_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        )
    }

    /// Like [`Config::load`], with the environment provider given (for tests).
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid(vec![format!(
                    "config file {} does not exist",
                    path.display()
                )]));
            }
            figment = figment.merge(Toml::file(path));
        }
        let figment = figment.merge(env);
        let config: Self = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        let mut problems = Vec::new();
        for key in SECRET_KEYS {
            if let Some(Metadata {
                source: Some(Source::File(path)),
                ..
            }) = figment.find_metadata(key)
            {
                problems.push(format!(
                    "{key} is a secret and must come from the environment ({}), not from {}",
                    env_name(key),
                    path.display()
                ));
            }
        }
        problems.extend(config.problems());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    fn reports_problems(&self) -> Vec<String> {
        let reports = &self.reports;
        let mut problems = Vec::new();
        if reports.time_zone.parse::<chrono_tz::Tz>().is_err() {
            problems.push(format!(
                "reports.time_zone: `{}` is not an IANA time zone like Europe/Berlin",
                reports.time_zone
            ));
        }
        if crm_domain::Language::parse(&reports.language).is_err() {
            problems.push(format!(
                "reports.language: `{}` is not a language code like de",
                reports.language
            ));
        }
        if let Err(problem) = reports.manual_minutes.validate() {
            problems.push(problem);
        }
        for (i, r) in reports.recipients.iter().enumerate() {
            let at = format!("reports.recipients[{i}]");
            if crm_domain::Email::parse(&r.email).is_err() {
                problems.push(format!("{at}: `{}` is not an email address", r.email));
            }
            if r.role.parse::<crm_domain::Role>().is_err() {
                problems.push(format!(
                    "{at}: `{}` is not a role (admin, manager, sales, integration, viewer)",
                    r.role
                ));
            }
            if !r.language.is_empty() && crm_domain::Language::parse(&r.language).is_err() {
                problems.push(format!("{at}: `{}` is not a language code", r.language));
            }
        }
        problems
    }

    /// Everything wrong with the values, one sentence each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.server.bind.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.bind `{}` is not an address like 127.0.0.1:8080",
                self.server.bind
            ));
        }
        if self.server.body_limit_bytes < 1024 {
            problems.push("server.body_limit_bytes must be at least 1024".into());
        }
        if self.server.request_timeout_secs == 0 {
            problems.push("server.request_timeout_secs must be at least 1".into());
        }
        if let Err(e) = crm_store::check_url(&self.database.url) {
            problems.push(format!("database.url: {e}"));
        }
        problems.extend(self.reports_problems());
        if let Err(problem) = self.gdpr.retention.retention() {
            problems.push(problem);
        }
        if self.jobs.lease_secs < 5 {
            problems.push("jobs.lease_secs must be at least 5".into());
        }
        problems.extend(self.pipeline.problems(&self.scoring));
        for (source, secrets) in &self.intake.webhook_secrets {
            if let Err(problem) = crate::webhooks::parse_secrets(secrets.expose_secret()) {
                problems.push(format!(
                    "CRM_INTAKE__WEBHOOK_SECRETS__{}: {problem}",
                    source.to_uppercase()
                ));
            }
        }
        let mut forms = std::collections::HashSet::new();
        for form in &self.intake.forms {
            if form.name.is_empty()
                || !form
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                problems.push(format!(
                    "intake.forms: the name `{}` must be letters, digits, - and _",
                    form.name
                ));
            }
            if !forms.insert(form.name.as_str()) {
                problems.push(format!(
                    "intake.forms: the name {} is used twice",
                    form.name
                ));
            }
            for (input, field) in &form.fields {
                if crm_domain::lead::LeadField::from_header(field).is_none() {
                    problems.push(format!(
                        "intake.forms.{}: `{input}` maps to `{field}`, which is not a lead field",
                        form.name
                    ));
                }
            }
            for origin in &form.allowed_origins {
                if !(origin.starts_with("https://") || origin.starts_with("http://"))
                    || origin.trim_end_matches('/').matches('/').count() != 2
                {
                    problems.push(format!(
                        "intake.forms.{}: `{origin}` is not an origin like https://www.example.com",
                        form.name
                    ));
                }
            }
            if let Some(redirect) = &form.redirect
                && !(redirect.starts_with("https://")
                    || redirect.starts_with("http://")
                    || redirect.starts_with('/'))
            {
                problems.push(format!(
                    "intake.forms.{}: redirect `{redirect}` must be an http(s) URL or a path",
                    form.name
                ));
            }
        }
        problems.extend(self.email.problems());
        if let Err(voice) = self.voice.settings() {
            problems.extend(voice);
        }
        if let Err(voice) = self.voice.providers() {
            problems.extend(voice);
        }
        if !(0.0..=1.0).contains(&self.intake.duplicate_threshold) {
            problems.push(format!(
                "intake.duplicate_threshold ({}) must lie in 0..=1",
                self.intake.duplicate_threshold
            ));
        }
        if self.intake.max_leads_per_request == 0 {
            problems.push("intake.max_leads_per_request must be at least 1".into());
        }
        let kinds = crm_plugins::KINDS;
        let mut names = std::collections::HashSet::new();
        for schedule in &self.jobs.schedules {
            if let Err(problem) = schedule.parse() {
                problems.push(format!("jobs.schedules: {problem}"));
            }
            if !kinds.contains(&schedule.kind.as_str()) {
                problems.push(format!(
                    "jobs.schedules: schedule {} names job kind `{}`, which this server does not run (known: {kinds:?})",
                    schedule.name, schedule.kind
                ));
            }
            if !names.insert(schedule.name.as_str()) {
                problems.push(format!(
                    "jobs.schedules: the name {} is used twice",
                    schedule.name
                ));
            }
        }
        if self.jobs.poll_interval_ms == 0 {
            problems.push("jobs.poll_interval_ms must be at least 1".into());
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections must be at least 1".into());
        }
        if self.graphql.max_page_size == 0 {
            problems.push("graphql.max_page_size must be at least 1".into());
        }
        if self.graphql.default_page_size == 0
            || self.graphql.default_page_size > self.graphql.max_page_size
        {
            problems.push(format!(
                "graphql.default_page_size must be between 1 and graphql.max_page_size ({})",
                self.graphql.max_page_size
            ));
        }
        if self.graphql.max_depth < 13 {
            problems.push("graphql.max_depth must be at least 13 (introspection needs it)".into());
        }
        if let Err(e) = crm_domain::PhoneRegion::parse(&self.customers.default_region) {
            problems.push(format!("customers.default_region: {}", e.message));
        }
        let secret_len = self
            .auth
            .jwt_secret
            .as_ref()
            .map(|s| s.expose_secret().len());
        if secret_len.is_some_and(|len| len < MIN_JWT_SECRET_LEN) {
            problems.push(format!("CRM_AUTH__JWT_SECRET must be at least {MIN_JWT_SECRET_LEN} bytes (HS256 tokens signed with a short secret can be forged)"));
        }
        if self.server.mode == Mode::Production
            && secret_len.is_none()
            && self.auth.public_keys_file.is_none()
        {
            problems.push(format!(
                "production mode needs CRM_AUTH__JWT_SECRET of at least {MIN_JWT_SECRET_LEN} bytes (or auth.public_keys_file)"
            ));
        }
        for origin in &self.server.cors_allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.ends_with('/')
            {
                problems.push(format!("server.cors_allowed_origins: `{origin}` is not an origin like https://app.example.com"));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.filter).is_err() {
            problems.push(format!(
                "log.filter `{}` is not a valid tracing filter",
                self.log.filter
            ));
        }
        problems
    }

    /// The effective configuration as TOML, secrets left out.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    /// The parsed default phone region.
    pub fn default_region(&self) -> Result<crm_domain::PhoneRegion, ConfigError> {
        crm_domain::PhoneRegion::parse(&self.customers.default_region).map_err(|e| {
            ConfigError::Invalid(vec![format!("customers.default_region: {}", e.message)])
        })
    }
}

fn env_name(key: &str) -> String {
    format!("CRM_{}", key.replace('.', "__").to_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn no_env() -> Env {
        Env::prefixed("CRM_TEST_NEVER_SET_").split("__")
    }

    #[test]
    fn the_example_file_documents_every_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crm.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let example: toml::Value = toml::from_str(&text).unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        assert_eq!(
            example, defaults,
            "crm.example.toml and Config::default() differ"
        );
        Config::load_from(Some(&path), no_env()).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[server]\nbnd = \"x\"").unwrap();
        let err = Config::load_from(Some(file.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bnd"), "{err}");

        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[server]\nbind = \"nowhere\"\n[customers]\ndefault_region = \"XX\""
        )
        .unwrap();
        let err = Config::load_from(Some(file.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.bind"), "{err}");
        assert!(err.contains("customers.default_region"), "{err}");
    }

    #[test]
    fn voice_agents_and_limits_that_cannot_work_are_reported_together() {
        let mut voice = VoiceConfig::default();
        voice.agents.insert(
            "klingon".into(),
            VoiceAgentConfig {
                kind: "skype".into(),
                language: "de".into(),
                ..VoiceAgentConfig::default()
            },
        );
        voice.agents.insert(
            "retell-de".into(),
            VoiceAgentConfig {
                kind: "retell".into(),
                language: "deutsch!".into(),
                ..VoiceAgentConfig::default()
            },
        );
        voice.default_agent = "fr".into();
        voice.max_concurrent.insert("twilio".into(), 3);
        voice.max_concurrent.insert("vapi".into(), 0);
        voice.default_time_zone = "Mars/Olympus".into();
        let problems = voice.settings().unwrap_err().join("\n");
        for expected in [
            "voice.agents.klingon.kind: `skype` is not vapi, retell, bland or simulator",
            "voice.agents.retell-de.language: `deutsch!` is not a language code",
            "voice.agents.retell-de: a retell agent needs agent_id",
            "voice.default_agent: `fr` is not one of voice.agents",
            "voice.max_concurrent: `twilio` is not",
            "voice.max_concurrent.vapi must be at least 1",
            "voice.default_time_zone: `Mars/Olympus`",
        ] {
            assert!(problems.contains(expected), "{expected}:\n{problems}");
        }
        // The defaults work: four simulator agents, `de` the default.
        let settings = VoiceConfig::default().settings().unwrap();
        assert_eq!(settings.default_agent, "de");
    }

    #[test]
    fn secrets_are_refused_from_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[database]\npassword = \"hunter2\"").unwrap();
        let err = Config::load_from(Some(file.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("CRM_DATABASE__PASSWORD"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_password_is_merged_into_the_url_and_never_rendered() {
        let config = DatabaseConfig {
            url: "postgres://crm@db:5432/crm".into(),
            password: Some(SecretString::from("p@ss word")),
            ..DatabaseConfig::default()
        };
        assert_eq!(
            config.db_options().url,
            "postgres://crm:p%40ss%20word@db:5432/crm"
        );
        assert!(!format!("{config:?}").contains("p@ss"));
        let full = Config {
            database: config,
            ..Config::default()
        };
        assert!(!full.to_toml().contains("p@ss"));
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment::Jail fixes the closure's error type"
    )]
    fn the_environment_overrides_the_file_and_plain_crm_vars_are_not_config() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "crm.toml",
                "[server]\nbind = \"127.0.0.1:9000\"\nbody_limit_bytes = 2048",
            )?;
            jail.set_env("CRM_SERVER__BIND", "0.0.0.0:8081");
            jail.set_env("CRM_DATABASE__PASSWORD", "s3cret");
            jail.set_env("CRM_GRAPHQL__MAX_PAGE_SIZE", "50");
            // Variables of the CLI and the harness share the prefix but are not config keys.
            jail.set_env("CRM_URL", "http://elsewhere");
            jail.set_env("CRM_TOKEN", "t");
            jail.set_env("CRM_CONFIG", "crm.toml");
            let config = Config::load(Some(Path::new("crm.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.server.bind, "0.0.0.0:8081", "env wins over the file");
            assert_eq!(
                config.server.body_limit_bytes, 2048,
                "the file wins over defaults"
            );
            assert_eq!(config.graphql.max_page_size, 50);
            assert!(
                config.database.password.is_some(),
                "a secret from the environment is accepted"
            );

            jail.set_env("CRM_SERVR__BIND", "0.0.0.0:1");
            let err = Config::load(None).map_err(|e| e.to_string()).unwrap_err();
            assert!(
                err.contains("servr"),
                "a misspelt env override is an error: {err}"
            );
            Ok(())
        });
    }

    #[test]
    fn schedules_are_checked_at_load() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[[jobs.schedules]]\nname = \"r\"\ncron = \"61 18 * * *\"\nkind = \"generate-report\"\n\
             [[jobs.schedules]]\nname = \"r\"\ncron = \"0 18 * * *\"\ntime_zone = \"Mars/Base\"\nkind = \"x\""
        )
        .unwrap();
        let err = Config::load_from(Some(file.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid cron"), "{err}");
        assert!(err.contains("unknown time zone"), "{err}");
        assert!(err.contains("does not run"), "{err}");
        assert!(err.contains("used twice"), "{err}");
    }

    #[test]
    fn pipeline_and_scoring_are_checked_at_load() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[pipeline]\nthreshold = 150\n[pipeline.branches]\ncall_now = [\"voice-call\"]\n\
             [scoring.priority]\nhot = 30\nwarm = 60\n[scoring.engagement.kinds]\nfax = 3"
        )
        .unwrap();
        let err = Config::load_from(Some(file.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pipeline.threshold (150)"), "{err}");
        assert!(err.contains("`call_now` is not a next action"), "{err}");
        assert!(
            err.contains("must not be above scoring.priority.hot"),
            "{err}"
        );
        assert!(err.contains("`fax` is not an interaction kind"), "{err}");

        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[pipeline]\nthreshold = -1").unwrap();
        let err = Config::load_from(Some(file.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("threshold"), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err =
            Config::load_from(Some(Path::new("/nonexistent/crm.toml")), no_env()).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }
}
