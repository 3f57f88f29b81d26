//! DataLoaders for parent→child edges: each batches the keys of one GraphQL level into one
//! store call, so a page of N customers costs the same number of statements for any N.
//!
//! Batching by timer alone (the loader waits 1 ms for keys) fragments under load, so the list
//! resolvers also *prime* the per-request caches: a page of customers is fed into
//! [`CustomersLoader`], and when the query selects their interactions, they are fetched for the
//! whole page in one statement before the children resolve ([`prefetch_latest_interactions`]).

use super::ApiContext;
use crate::error::{ApiError, ApiResult};
use async_graphql::{
    Context, Value,
    dataloader::{DataLoader, HashMapCache, Loader},
};
use crm_domain::{Customer, CustomerId, Interaction};
use crm_store::{
    Db, customers, interactions,
    scores::{self, StoredScore},
};
use std::{collections::HashMap, sync::Arc};

/// Loads customers by id (`Interaction.customer`).
#[derive(Debug, Clone)]
pub struct CustomerLoader(pub(crate) Db);

impl Loader<CustomerId> for CustomerLoader {
    type Value = Customer;
    type Error = Arc<ApiError>;

    async fn load(
        &self,
        keys: &[CustomerId],
    ) -> Result<HashMap<CustomerId, Customer>, Self::Error> {
        let found = customers::by_ids(&self.0, keys)
            .await
            .map_err(|e| Arc::new(e.into()))?;
        Ok(found.into_iter().map(|c| (c.id, c)).collect())
    }
}

/// Loads the newest N interactions of customers (`Customer.interactions(first: N)`); the key
/// carries N, and one statement serves every customer asking for the same N.
#[derive(Debug, Clone)]
pub struct LatestInteractionsLoader(pub(crate) Db);

impl Loader<(CustomerId, usize)> for LatestInteractionsLoader {
    type Value = Vec<Interaction>;
    type Error = Arc<ApiError>;

    async fn load(
        &self,
        keys: &[(CustomerId, usize)],
    ) -> Result<HashMap<(CustomerId, usize), Vec<Interaction>>, Self::Error> {
        let mut by_limit: HashMap<usize, Vec<CustomerId>> = HashMap::new();
        for (id, limit) in keys {
            by_limit.entry(*limit).or_default().push(*id);
        }
        let mut out = HashMap::with_capacity(keys.len());
        for (limit, ids) in by_limit {
            let mut found = interactions::latest_for_customers(&self.0, &ids, limit)
                .await
                .map_err(|e| Arc::new(ApiError::from(e)))?;
            for id in ids {
                out.insert((id, limit), found.remove(&id).unwrap_or_default());
            }
        }
        Ok(out)
    }
}

/// The per-request customer loader (cached).
pub type CustomersLoader = DataLoader<CustomerLoader, HashMapCache>;
/// The per-request latest-interactions loader (cached).
pub type InteractionsLoader = DataLoader<LatestInteractionsLoader, HashMapCache>;

/// Loads the current (newest) score of leads (`Customer.score`).
#[derive(Debug, Clone)]
pub struct LatestScoreLoader(pub(crate) Db);

impl Loader<CustomerId> for LatestScoreLoader {
    type Value = StoredScore;
    type Error = Arc<ApiError>;

    async fn load(
        &self,
        keys: &[CustomerId],
    ) -> Result<HashMap<CustomerId, StoredScore>, Self::Error> {
        let found = scores::latest_for_customers(&self.0, keys)
            .await
            .map_err(|e| Arc::new(e.into()))?;
        Ok(found.into_iter().map(|s| (s.customer_id, s)).collect())
    }
}

/// The per-request loader of current scores.
pub type ScoresLoader = DataLoader<LatestScoreLoader, HashMapCache>;

/// Default of `Customer.interactions(first:)`.
pub(crate) const DEFAULT_NESTED_INTERACTIONS: usize = 20;

/// Feeds customers that a resolver already holds into the request's loader cache.
pub(crate) async fn prime_customers(ctx: &Context<'_>, customers: Vec<Customer>) -> ApiResult<()> {
    let loader = ctx
        .data::<CustomersLoader>()
        .map_err(|e| ApiError::Internal(e.message))?;
    loader
        .feed_many(customers.into_iter().map(|c| (c.id, c)))
        .await;
    Ok(())
}

/// When the selection below the current field asks for `interactions(first: N)` at one of
/// `paths`, loads them for all `ids` in one statement per distinct N and primes the cache.
pub(crate) async fn prefetch_latest_interactions(
    ctx: &Context<'_>,
    paths: &[&[&str]],
    ids: &[CustomerId],
) -> ApiResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let api = ctx
        .data::<ApiContext>()
        .map_err(|e| ApiError::Internal(e.message))?;
    let mut limits = Vec::new();
    for path in paths {
        let mut look = ctx.look_ahead();
        for name in *path {
            look = look.field(name);
        }
        for field in look.selection_fields() {
            let arguments = field
                .arguments()
                .map_err(|e| ApiError::Internal(e.message))?;
            let first = arguments
                .iter()
                .find(|(name, _)| name.as_str() == "first")
                .map(|(_, v)| v);
            let limit = match first {
                None => DEFAULT_NESTED_INTERACTIONS,
                Some(Value::Number(n)) => match n.as_u64().and_then(|n| usize::try_from(n).ok()) {
                    Some(n) if n <= api.pages.max => n,
                    // Out of range: the field itself reports the error.
                    _ => continue,
                },
                Some(_) => continue,
            };
            if !limits.contains(&limit) {
                limits.push(limit);
            }
        }
    }
    let loader = ctx
        .data::<InteractionsLoader>()
        .map_err(|e| ApiError::Internal(e.message))?;
    for limit in limits {
        let mut found = interactions::latest_for_customers(&api.db, ids, limit).await?;
        loader
            .feed_many(
                ids.iter()
                    .map(|id| ((*id, limit), found.remove(id).unwrap_or_default())),
            )
            .await;
    }
    Ok(())
}

/// When the selection below the current field asks for `customer` at one of `paths`, loads
/// the customers of `interactions` in one statement and primes the cache. Returns the ids of
/// the customers loaded.
pub(crate) async fn prefetch_customers_of(
    ctx: &Context<'_>,
    paths: &[&[&str]],
    interactions: &[Interaction],
) -> ApiResult<Vec<CustomerId>> {
    let selected = paths.iter().any(|path| {
        let mut look = ctx.look_ahead();
        for name in *path {
            look = look.field(name);
        }
        look.exists()
    });
    if !selected || interactions.is_empty() {
        return Ok(Vec::new());
    }
    let api = ctx
        .data::<ApiContext>()
        .map_err(|e| ApiError::Internal(e.message))?;
    let mut ids: Vec<CustomerId> = interactions.iter().map(|i| i.customer_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let found = customers::by_ids(&api.db, &ids).await?;
    prime_customers(ctx, found).await?;
    Ok(ids)
}
