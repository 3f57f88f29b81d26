//! The GraphQL schema: roots, shared context, pagination arguments and DataLoaders.
//!
//! Resolvers stay thin: parse input into domain types, call the store, wrap the result. Wire
//! types live here and wrap domain values; the domain never derives GraphQL traits.

mod access;
mod audit;
mod calls;
mod customers;
mod duplicates;
pub use duplicates::Survivorship;
mod emails;
mod gdpr;
mod intake;
mod interactions;
mod jobs;
mod loaders;
mod pagination;
mod pipeline;
mod reports;
mod tasks;
pub(crate) mod transcripts;
mod writers;

use crate::{
    authz::{Authorizer, AuthzExtension},
    config::GraphqlConfig,
};
use async_graphql::{
    MergedObject, MergedSubscription, Schema,
    dataloader::{DataLoader, HashMapCache},
};
use crm_domain::{Clock, PhoneRegion};
use crm_store::{Db, effects::Effect};
use std::sync::Arc;

pub use loaders::{
    CustomerLoader, CustomersLoader, InteractionsLoader, LatestInteractionsLoader,
    LatestScoreLoader, ScoresLoader,
};

/// The schema type served at `/graphql`.
pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// Everything resolvers need, shared by all requests.
#[derive(Debug, Clone)]
pub struct ApiContext {
    /// Storage.
    pub db: Db,
    /// Source of "now".
    pub clock: Arc<dyn Clock>,
    /// Region for national phone numbers.
    pub region: PhoneRegion,
    /// Page sizes.
    pub pages: pagination::PageLimits,
    /// Fields whose values the audit log replaces with `[redacted]`.
    pub redact: Arc<[String]>,
    /// The lead chain and its scoring rules.
    pub pipeline: Arc<crm_plugins::Pipeline>,
    /// Persisted events, fanned out to subscribers.
    pub events: crate::events::EventHub,
    /// Live transcripts rendered once per call and render key (see `transcripts`).
    pub(crate) transcripts: transcripts::TranscriptFeeds,
    /// Lead intake.
    pub intake: crm_plugins::intake::Intake,
    /// Most leads per `importLeads` call.
    pub max_import: usize,
    /// Where uploaded lead files wait for their job.
    pub import_dir: std::path::PathBuf,
    /// Lowest likeness `findDuplicates` reports by default.
    pub duplicate_threshold: f64,
    /// The survivorship rule of merges that name none.
    pub survivorship: duplicates::Survivorship,
    /// The voice agent: call queue, providers, ingest.
    pub voice: crm_plugins::voice::Voice,
    /// The email agent: templates, sends, unsubscribes.
    pub mailer: crm_plugins::email::Mailer,
    /// The report agent: KPIs, renderings, stored reports.
    pub reporter: crm_plugins::report::Reporter,
    /// The GDPR agent: erasure, provider-side deletion.
    pub gdpr: crm_plugins::gdpr::Gdpr,
}

/// All queries.
#[derive(MergedObject, Default, Debug)]
pub struct Query(
    access::AccessQuery,
    audit::AuditQuery,
    calls::CallQuery,
    customers::CustomerQuery,
    emails::EmailQuery,
    gdpr::GdprQuery,
    intake::IntakeQuery,
    duplicates::DuplicateQuery,
    interactions::InteractionQuery,
    jobs::JobQuery,
    pipeline::PipelineQuery,
    reports::ReportQuery,
    tasks::TaskQuery,
);

/// All mutations.
#[derive(MergedObject, Default, Debug)]
pub struct Mutation(
    access::AccessMutation,
    calls::CallMutation,
    customers::CustomerMutation,
    emails::EmailMutation,
    gdpr::GdprMutation,
    interactions::InteractionMutation,
    intake::IntakeMutation,
    intake::FileImportMutation,
    duplicates::DuplicateMutation,
    jobs::JobMutation,
    pipeline::PipelineMutation,
    reports::ReportMutation,
    tasks::TaskMutation,
);

/// All subscriptions (served at `/graphql/ws`, authenticated in `connection_init`).
#[derive(MergedSubscription, Default, Debug)]
pub struct Subscription(pipeline::PipelineSubscription, calls::CallSubscription);

/// Builds the schema with its limits and the authorization extension. `context` and
/// `authorizer` are shared by every request (absent only when printing the SDL).
pub fn build_schema(
    context: Option<(ApiContext, Authorizer)>,
    limits: &GraphqlConfig,
) -> AppSchema {
    let mut builder = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity)
    .extension(AuthzExtension);
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    if let Some((context, authorizer)) = context {
        builder = builder.data(context).data(authorizer);
    }
    builder.finish()
}

/// The agents resolvers hand work to.
#[derive(Debug, Clone)]
pub struct Agents {
    /// `/voice-call`.
    pub voice: crm_plugins::voice::Voice,
    /// `/send-email`.
    pub mailer: crm_plugins::email::Mailer,
    /// `/generate-report`.
    pub reporter: crm_plugins::report::Reporter,
    /// Erasure and retention.
    pub gdpr: crm_plugins::gdpr::Gdpr,
}

impl ApiContext {
    /// Builds the context from configuration.
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        region: PhoneRegion,
        pipeline: Arc<crm_plugins::Pipeline>,
        Agents {
            voice,
            mailer,
            reporter,
            gdpr,
        }: Agents,
        config: &crate::config::Config,
    ) -> Self {
        let (limits, redact, intake) = (
            &config.graphql,
            config.audit.redact_fields.as_slice(),
            &config.intake,
        );
        Self {
            voice,
            mailer,
            reporter,
            gdpr,
            intake: crm_plugins::intake::Intake::new(
                db.clone(),
                clock.clone(),
                pipeline.clone(),
                region,
            ),
            max_import: intake.max_leads_per_request,
            import_dir: intake.import_dir.clone(),
            duplicate_threshold: intake.duplicate_threshold,
            survivorship: intake.survivorship,
            events: crate::events::EventHub::new(db.clone()),
            transcripts: transcripts::TranscriptFeeds::default(),
            db,
            clock,
            region,
            pipeline,
            redact: redact.into(),
            pages: pagination::PageLimits {
                default: limits.default_page_size,
                max: limits.max_page_size,
            },
        }
    }

    /// The pipeline run a new lead starts, if the config starts one (as effects of its creation).
    pub fn run_for_new_lead(&self, customer: &crm_domain::Customer) -> Vec<Effect> {
        use crm_domain::CustomerStatus::{Lead, Prospect};
        if !self.pipeline.config().start_on_create || !matches!(customer.status, Lead | Prospect) {
            return Vec::new();
        }
        self.run_for(customer, "created")
    }

    /// The pipeline run a new interaction starts (re-scoring), if the config starts one.
    pub fn run_for_interaction(&self, customer: &crm_domain::Customer) -> Vec<Effect> {
        if !self.pipeline.config().rescore_on_interaction {
            return Vec::new();
        }
        self.run_for(customer, "interaction")
    }

    pub(crate) fn run_for(&self, customer: &crm_domain::Customer, cause: &str) -> Vec<Effect> {
        self.pipeline
            .start_effects(customer.id, cause, self.clock.now())
    }

    /// The per-request DataLoaders (each request gets fresh caches).
    pub fn loaders(&self) -> RequestLoaders {
        RequestLoaders {
            customers: DataLoader::with_cache(
                CustomerLoader(self.db.clone()),
                tokio::spawn,
                HashMapCache::default(),
            ),
            interactions: DataLoader::with_cache(
                LatestInteractionsLoader(self.db.clone()),
                tokio::spawn,
                HashMapCache::default(),
            ),
            scores: DataLoader::with_cache(
                LatestScoreLoader(self.db.clone()),
                tokio::spawn,
                HashMapCache::default(),
            ),
        }
    }
}

/// The DataLoaders of one request.
pub struct RequestLoaders {
    customers: CustomersLoader,
    interactions: InteractionsLoader,
    scores: ScoresLoader,
}

impl std::fmt::Debug for RequestLoaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLoaders").finish_non_exhaustive()
    }
}

impl RequestLoaders {
    /// Attaches the loaders to a request.
    pub fn attach(self, request: async_graphql::Request) -> async_graphql::Request {
        request
            .data(self.customers)
            .data(self.interactions)
            .data(self.scores)
    }

    /// Attaches the loaders to a subscription's data.
    pub fn attach_data(self, data: &mut async_graphql::Data) {
        data.insert(self.customers);
        data.insert(self.interactions);
        data.insert(self.scores);
    }
}

/// The SDL of the schema, as committed in `schema.graphql`.
pub fn sdl() -> String {
    build_schema(None, &GraphqlConfig::default()).sdl()
}
