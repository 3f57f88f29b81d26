//! Who am I, API keys, and the helpers resolvers use to apply row-level rules.

use super::{ApiContext, customers::parse_id};
use crate::{
    audit::Auditor,
    auth::generate_key,
    authz::Authorizer,
    error::{ApiError, ApiResult},
};
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use crm_domain::{
    ApiKeyId, Credential, Customer, CustomerId, CustomerScope, Interaction, InteractionId,
    Principal,
};
use crm_store::{
    api_keys::{self, ApiKey, NewApiKey},
    customers, interactions,
};

/// The authenticated caller of this request.
pub(crate) fn caller<'a>(ctx: &Context<'a>) -> ApiResult<&'a Principal> {
    ctx.data::<Principal>()
        .map_err(|_| ApiError::Internal("no principal in the request".into()))
}

/// The caller's row-level rule for customers.
pub(crate) fn customer_scope(ctx: &Context<'_>) -> ApiResult<CustomerScope> {
    let principal = caller(ctx)?;
    let authz = ctx
        .data::<Authorizer>()
        .map_err(|e| ApiError::Internal(e.message))?;
    authz.customer_scope(principal).ok_or_else(|| {
        ApiError::Forbidden(format!("role {} may not access customers", principal.role))
    })
}

/// A live or deleted customer the caller may see; `NOT_FOUND` otherwise (an invisible customer
/// is indistinguishable from a missing one).
pub(crate) async fn visible_customer(ctx: &Context<'_>, id: CustomerId) -> ApiResult<Customer> {
    let api = ctx
        .data::<ApiContext>()
        .map_err(|e| ApiError::Internal(e.message))?;
    let scope = customer_scope(ctx)?;
    match customers::get(&api.db, id).await? {
        Some(customer) if scope.covers(customer.owner.as_deref()) => Ok(customer),
        _ => Err(ApiError::NotFound {
            entity: "customer",
            id: id.to_string(),
        }),
    }
}

/// An interaction whose customer the caller may see; `None` otherwise.
pub(crate) async fn visible_interaction(
    ctx: &Context<'_>,
    id: InteractionId,
) -> ApiResult<Option<Interaction>> {
    let api = ctx
        .data::<ApiContext>()
        .map_err(|e| ApiError::Internal(e.message))?;
    let scope = customer_scope(ctx)?;
    let Some(interaction) = interactions::get(&api.db, id).await? else {
        return Ok(None);
    };
    if scope == CustomerScope::All {
        return Ok(Some(interaction));
    }
    let customer = customers::get(&api.db, interaction.customer_id).await?;
    Ok(customer
        .is_some_and(|c| scope.covers(c.owner.as_deref()))
        .then_some(interaction))
}

/// Maps a store error of a customer write, hiding the id of a duplicate's holder when the
/// caller may not see that customer (otherwise `DUPLICATE` would reveal who is in the CRM).
pub(crate) async fn scoped_write_error(
    ctx: &Context<'_>,
    prefix: &str,
    error: crm_store::StoreError,
) -> ApiError {
    let mut mapped = ApiError::from_store(prefix, error);
    if let ApiError::Duplicate {
        existing_id: existing @ Some(_),
        ..
    } = &mut mapped
    {
        let visible = match (
            customer_scope(ctx),
            existing
                .as_deref()
                .and_then(|id| id.parse::<CustomerId>().ok()),
        ) {
            (Ok(CustomerScope::All), _) => true,
            (Ok(scope), Some(id)) => match ctx.data::<ApiContext>() {
                Ok(api) => customers::get(&api.db, id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|c| scope.covers(c.owner.as_deref())),
                Err(_) => false,
            },
            _ => false,
        };
        if !visible {
            *existing = None;
        }
    }
    mapped
}

/// Refuses to give a customer an owner outside the caller's scope.
pub(crate) fn check_owner(scope: &CustomerScope, owner: Option<&str>) -> ApiResult<()> {
    match scope.subject() {
        Some(subject) if owner.is_some_and(|o| o != subject) => Err(ApiError::Forbidden(format!(
            "{subject} may only assign customers to themselves"
        ))),
        _ => Ok(()),
    }
}

/// A role, as in the policy.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::Role")]
pub(crate) enum Role {
    /// Everything.
    Admin,
    /// All customers, no key management.
    Manager,
    /// Own and unassigned customers.
    Sales,
    /// Machine access: import and log.
    Integration,
    /// Read only.
    Viewer,
}

/// How the caller authenticated.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum CredentialKind {
    /// A JWT.
    Token,
    /// An API key.
    ApiKey,
}

/// The caller.
#[derive(SimpleObject, Debug)]
pub(crate) struct Me {
    /// User name or key subject.
    subject: String,
    /// Role.
    role: Role,
    /// Token or API key.
    credential: CredentialKind,
    /// The API key's id, when authenticated by one.
    api_key_id: Option<ID>,
}

/// An API key's metadata; the key itself is only ever returned by `createApiKey`.
#[derive(Debug)]
pub(crate) struct ApiKeyNode(ApiKey);

#[Object(name = "ApiKey")]
impl ApiKeyNode {
    /// Identity.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Label.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The key's first characters, to recognise it.
    async fn prefix(&self) -> &str {
        &self.0.prefix
    }
    /// Role the key acts with.
    async fn role(&self) -> Role {
        self.0.role.into()
    }
    /// Subject the key acts as.
    async fn subject(&self) -> &str {
        &self.0.subject
    }
    /// Who created it.
    async fn created_by(&self) -> Option<&str> {
        self.0.created_by.as_deref()
    }
    /// Created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Stops working at.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }
    /// Revoked at.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
}

/// A new key and, once, its secret.
#[derive(SimpleObject, Debug)]
pub(crate) struct CreatedApiKey {
    /// The key: store it now, it is not shown again.
    key: String,
    /// Its metadata.
    api_key: ApiKeyNode,
}

/// A key to create.
#[derive(InputObject, Debug)]
pub(crate) struct CreateApiKeyInput {
    /// Label (`zapier`, `website form`).
    name: String,
    /// Role the key acts with.
    role: Role,
    /// Subject the key acts as (default: the key's name).
    subject: Option<String>,
    /// Stops working at (default: never).
    expires_at: Option<DateTime<Utc>>,
}

/// Caller and key queries.
#[derive(Default, Debug)]
pub(crate) struct AccessQuery;

#[Object]
impl AccessQuery {
    /// The authenticated caller.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Me> {
        let principal = caller(ctx)?;
        let (credential, api_key_id) = match principal.credential {
            Credential::Token => (CredentialKind::Token, None),
            Credential::ApiKey(id) => (CredentialKind::ApiKey, Some(ID(id.to_string()))),
        };
        Ok(Me {
            subject: principal.subject.clone(),
            role: principal.role.into(),
            credential,
            api_key_id,
        })
    }

    /// Every API key, newest first (admin).
    async fn api_keys(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiKeyNode>> {
        let api = ctx.data::<ApiContext>()?;
        Ok(api_keys::list(&api.db)
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .map(ApiKeyNode)
            .collect())
    }
}

/// Key mutations.
#[derive(Default, Debug)]
pub(crate) struct AccessMutation;

#[Object]
impl AccessMutation {
    /// Creates an API key and returns it once (admin).
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        input: CreateApiKeyInput,
    ) -> async_graphql::Result<CreatedApiKey> {
        let api = ctx.data::<ApiContext>()?;
        let principal = caller(ctx)?;
        let name = crm_domain::values::required_text("name", &input.name, 100)
            .map_err(|e| ApiError::validation("input", e.into()))?;
        let subject = match input.subject {
            Some(subject) => crm_domain::values::required_text("subject", &subject, 100)
                .map_err(|e| ApiError::validation("input", e.into()))?,
            None => name.clone(),
        };
        let now = api.clock.now();
        if input.expires_at.is_some_and(|at| at <= now) {
            return Err(crate::error::invalid(
                "input.expiresAt",
                "in_the_past",
                "expiresAt must be in the future",
            )
            .into());
        }
        let generated =
            generate_key().map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
        let new = NewApiKey {
            key: ApiKey {
                id: ApiKeyId::new(),
                name,
                prefix: generated.prefix.clone(),
                role: input.role.into(),
                subject,
                created_by: Some(principal.subject.clone()),
                created_at: now,
                expires_at: input.expires_at,
                revoked_at: None,
            },
            key_hash: generated.hash.clone(),
        };
        let details = serde_json::json!({
            "name": { "after": new.key.name },
            "role": { "after": new.key.role.as_str() },
            "subject": { "after": new.key.subject },
            "expires_at": { "after": new.key.expires_at },
        });
        let entry = Auditor::of(ctx)?.entry(
            "api_key.create",
            "api_key",
            new.key.id.to_string(),
            details.as_object().cloned().unwrap_or_default(),
        );
        let stored = api_keys::insert(&api.db, &new, Some(entry))
            .await
            .map_err(ApiError::from)?;
        tracing::info!(target: "crm::security", key_id = %stored.id, role = %stored.role, by = %principal.subject, "API key created.");
        Ok(CreatedApiKey {
            key: generated.secret,
            api_key: ApiKeyNode(stored),
        })
    }

    /// Revokes an API key at once (admin). Idempotent.
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ApiKeyNode> {
        let api = ctx.data::<ApiContext>()?;
        let id: ApiKeyId = parse_id("id", &id)?;
        let entry = Auditor::of(ctx)?.entry(
            "api_key.revoke",
            "api_key",
            id.to_string(),
            serde_json::Map::new(),
        );
        let revoked = api_keys::revoke(&api.db, id, api.clock.now(), Some(entry))
            .await
            .map_err(ApiError::from)?;
        tracing::info!(target: "crm::security", key_id = %revoked.id, by = %caller(ctx)?.subject, "API key revoked.");
        Ok(ApiKeyNode(revoked))
    }
}
