//! The GraphQL schema: roots, shared context, pagination arguments and DataLoaders.
//!
//! Resolvers stay thin: parse input into domain types, call the store, wrap the result. Wire
//! types live here and wrap domain values; the domain never derives GraphQL traits.

mod access;
mod audit;
mod customers;
mod interactions;
mod jobs;
mod loaders;
mod pagination;

use crate::{
    authz::{Authorizer, AuthzExtension},
    config::GraphqlConfig,
};
use async_graphql::{
    EmptySubscription, MergedObject, Schema,
    dataloader::{DataLoader, HashMapCache},
};
use crm_domain::{Clock, PhoneRegion};
use crm_store::Db;
use std::sync::Arc;

pub use loaders::{CustomerLoader, CustomersLoader, InteractionsLoader, LatestInteractionsLoader};

/// The schema type served at `/graphql`.
pub type AppSchema = Schema<Query, Mutation, EmptySubscription>;

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
}

/// All queries.
#[derive(MergedObject, Default, Debug)]
pub struct Query(
    access::AccessQuery,
    audit::AuditQuery,
    customers::CustomerQuery,
    interactions::InteractionQuery,
    jobs::JobQuery,
);

/// All mutations.
#[derive(MergedObject, Default, Debug)]
pub struct Mutation(
    access::AccessMutation,
    customers::CustomerMutation,
    interactions::InteractionMutation,
    jobs::JobMutation,
);

/// Builds the schema with its limits and the authorization extension. `context` and
/// `authorizer` are shared by every request (absent only when printing the SDL).
pub fn build_schema(
    context: Option<(ApiContext, Authorizer)>,
    limits: &GraphqlConfig,
) -> AppSchema {
    let mut builder = Schema::build(Query::default(), Mutation::default(), EmptySubscription)
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

impl ApiContext {
    /// Builds the context from configuration.
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        region: PhoneRegion,
        limits: &GraphqlConfig,
        redact: &[String],
    ) -> Self {
        Self {
            db,
            clock,
            region,
            redact: redact.into(),
            pages: pagination::PageLimits {
                default: limits.default_page_size,
                max: limits.max_page_size,
            },
        }
    }

    /// The per-request DataLoaders (each request gets fresh caches).
    pub fn loaders(&self) -> (CustomersLoader, InteractionsLoader) {
        (
            DataLoader::with_cache(
                CustomerLoader(self.db.clone()),
                tokio::spawn,
                HashMapCache::default(),
            ),
            DataLoader::with_cache(
                LatestInteractionsLoader(self.db.clone()),
                tokio::spawn,
                HashMapCache::default(),
            ),
        )
    }
}

/// The SDL of the schema, as committed in `schema.graphql`.
pub fn sdl() -> String {
    build_schema(None, &GraphqlConfig::default()).sdl()
}
