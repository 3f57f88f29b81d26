//! DataLoaders for parent→child edges: each batches the keys of one GraphQL level into one
//! store call, so a page of N customers costs the same number of statements for any N.

use crate::error::ApiError;
use async_graphql::dataloader::Loader;
use crm_domain::{Customer, CustomerId, Interaction};
use crm_store::{Db, customers, interactions};
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
