//! Interactions over GraphQL: the `Interaction` type, the `interactions` connection, and the
//! log/update/delete mutations.

use super::{
    ApiContext,
    access::{customer_scope, visible_customer, visible_interaction},
    customers::{CustomerNode, change, parse_id},
    loaders::{CustomersLoader, prefetch_customers_of, prefetch_latest_interactions},
    pagination::{PageArgs, connection},
};
use crate::{
    audit::Auditor,
    error::{ApiError, invalid},
};
use async_graphql::{Context, Enum, ID, InputObject, MaybeUndefined, Object};
use chrono::{DateTime, Utc};
use crm_domain::{
    CustomerId, Interaction, InteractionDraft, InteractionId, InteractionPatch,
    InteractionPatchDraft, NewInteraction,
};
use crm_store::interactions::{self, CURSOR_TAG, InteractionFilter as StoreFilter};

/// What kind of contact an interaction was.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::InteractionKind")]
pub(crate) enum InteractionKind {
    /// A phone call.
    Call,
    /// An email.
    Email,
    /// A meeting.
    Meeting,
    /// A note.
    Note,
}

/// Who started the contact.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::Direction")]
pub(crate) enum Direction {
    /// The customer contacted us.
    Inbound,
    /// We contacted the customer.
    Outbound,
}

/// A call, email, meeting or note with a customer.
#[derive(Debug, Clone)]
pub(crate) struct InteractionNode(pub(crate) Interaction);

impl From<Interaction> for InteractionNode {
    fn from(interaction: Interaction) -> Self {
        Self(interaction)
    }
}

#[Object(name = "Interaction")]
impl InteractionNode {
    /// Identity (UUID).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The customer's id.
    async fn customer_id(&self) -> ID {
        ID(self.0.customer_id.to_string())
    }
    /// Call, email, meeting or note.
    async fn kind(&self) -> InteractionKind {
        self.0.kind.into()
    }
    /// Inbound or outbound.
    async fn direction(&self) -> Option<Direction> {
        self.0.direction.map(Into::into)
    }
    /// Subject or title.
    async fn subject(&self) -> Option<&str> {
        self.0.subject.as_deref()
    }
    /// Body, transcript or note text.
    async fn body(&self) -> Option<&str> {
        self.0.body.as_deref()
    }
    /// Outcome (`interested`, `no_answer`, `appointment`, …).
    async fn outcome(&self) -> Option<&str> {
        self.0.outcome.as_deref()
    }
    /// When it happened.
    async fn occurred_at(&self) -> DateTime<Utc> {
        self.0.occurred_at
    }
    /// Duration in seconds.
    async fn duration_seconds(&self) -> Option<i32> {
        self.0.duration_seconds
    }
    /// Who logged it.
    async fn author(&self) -> Option<&str> {
        self.0.author.as_deref()
    }
    /// Created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// The customer (batched across a response).
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<CustomerNode> {
        let loader = ctx.data::<CustomersLoader>()?;
        let customer = loader
            .load_one(self.0.customer_id)
            .await
            .map_err(ApiError::from)?;
        let customer = customer.ok_or_else(|| {
            ApiError::Internal(format!(
                "interaction {} has no customer {}",
                self.0.id, self.0.customer_id
            ))
        })?;
        Ok(CustomerNode(customer))
    }
}

connection!(
    InteractionConnection,
    InteractionEdge,
    InteractionNode,
    Interaction
);

/// Which interactions to list.
#[derive(InputObject, Default, Debug)]
pub(crate) struct InteractionFilter {
    /// Of this customer.
    customer_id: Option<ID>,
    /// Of this kind.
    kind: Option<InteractionKind>,
    /// Occurred at or after.
    occurred_after: Option<DateTime<Utc>>,
    /// Occurred before.
    occurred_before: Option<DateTime<Utc>>,
}

/// A new interaction.
#[derive(InputObject, Debug)]
pub(crate) struct LogInteractionInput {
    /// The customer (must exist and not be deleted).
    customer_id: ID,
    /// Kind.
    kind: InteractionKind,
    /// Direction.
    direction: Option<Direction>,
    /// Subject (at most 500 characters).
    subject: Option<String>,
    /// Body (at most 100000 characters).
    body: Option<String>,
    /// Outcome.
    outcome: Option<String>,
    /// When it happened (default: now).
    occurred_at: Option<DateTime<Utc>>,
    /// Duration in seconds (0 to 86400).
    duration_seconds: Option<i32>,
    /// Author.
    author: Option<String>,
}

/// A partial update: absent fields stay, `null` clears, a value sets.
#[derive(InputObject, Debug, Default)]
pub(crate) struct UpdateInteractionInput {
    /// Kind (cannot be cleared).
    kind: Option<InteractionKind>,
    /// Direction.
    direction: MaybeUndefined<Direction>,
    /// Subject.
    subject: MaybeUndefined<String>,
    /// Body.
    body: MaybeUndefined<String>,
    /// Outcome.
    outcome: MaybeUndefined<String>,
    /// When it happened (cannot be cleared).
    occurred_at: Option<DateTime<Utc>>,
    /// Duration.
    duration_seconds: MaybeUndefined<i32>,
    /// Author.
    author: MaybeUndefined<String>,
}

/// Interaction queries.
#[derive(Default, Debug)]
pub(crate) struct InteractionQuery;

#[Object]
impl InteractionQuery {
    /// An interaction by id; null if there is none.
    async fn interaction(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<InteractionNode>> {
        let id: InteractionId = parse_id("id", &id)?;
        Ok(visible_interaction(ctx, id).await?.map(InteractionNode))
    }

    /// Interactions, newest first, as a Relay connection (page size as for `customers`).
    #[graphql(
        complexity = "usize::try_from(first.or(last).unwrap_or(20)).unwrap_or(1).clamp(1, 1000).saturating_mul(child_complexity)"
    )]
    async fn interactions(
        &self,
        ctx: &Context<'_>,
        filter: Option<InteractionFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<InteractionConnection> {
        let api = ctx.data::<ApiContext>()?;
        let seek = PageArgs {
            first,
            after,
            last,
            before,
        }
        .seek(api.pages, CURSOR_TAG, true)?;
        let filter = filter.unwrap_or_default();
        if let (Some(after), Some(before)) = (filter.occurred_after, filter.occurred_before)
            && after > before
        {
            return Err(invalid(
                "filter.occurredAfter",
                "invalid_range",
                "occurredAfter is later than occurredBefore",
            )
            .into());
        }
        let filter = StoreFilter {
            customer_id: filter
                .customer_id
                .as_ref()
                .map(|id| parse_id::<CustomerId>("filter.customerId", id))
                .transpose()?,
            kind: filter.kind.map(Into::into),
            occurred_after: filter.occurred_after,
            occurred_before: filter.occurred_before,
            scope: customer_scope(ctx)?,
        };
        let page = interactions::list(&api.db, &filter, &seek)
            .await
            .map_err(ApiError::from)?;
        let held: Vec<Interaction> = page.items.iter().map(|(_, i)| i.clone()).collect();
        let ids = prefetch_customers_of(
            ctx,
            &[&["nodes", "customer"], &["edges", "node", "customer"]],
            &held,
        )
        .await?;
        prefetch_latest_interactions(
            ctx,
            &[
                &["nodes", "customer", "interactions"],
                &["edges", "node", "customer", "interactions"],
            ],
            &ids,
        )
        .await?;
        Ok(InteractionConnection(page))
    }
}

/// Interaction mutations.
#[derive(Default, Debug)]
pub(crate) struct InteractionMutation;

#[Object]
impl InteractionMutation {
    /// Logs an interaction with a live customer. `NOT_FOUND` if the customer does not exist or
    /// is deleted.
    async fn log_interaction(
        &self,
        ctx: &Context<'_>,
        input: LogInteractionInput,
    ) -> async_graphql::Result<InteractionNode> {
        let api = ctx.data::<ApiContext>()?;
        let customer_id: CustomerId = parse_id("input.customerId", &input.customer_id)?;
        let customer = visible_customer(ctx, customer_id).await?;
        let draft = InteractionDraft {
            customer_id,
            kind: input.kind.into(),
            direction: input.direction.map(Into::into),
            subject: input.subject,
            body: input.body,
            outcome: input.outcome,
            occurred_at: input.occurred_at,
            duration_seconds: input.duration_seconds,
            author: input.author,
        };
        let new = NewInteraction::parse(draft, api.clock.now())
            .map_err(|e| ApiError::validation("input", e))?;
        let entry = Auditor::of(ctx)?.interaction("interaction.create", None, Some(&new.0));
        let effects = api.run_for_interaction(&customer);
        let interaction = interactions::insert(&api.db, new, entry, &effects)
            .await
            .map_err(|e| ApiError::from_store("input", e))?;
        Ok(InteractionNode(interaction))
    }

    /// Changes the given fields of an interaction.
    async fn update_interaction(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateInteractionInput,
    ) -> async_graphql::Result<InteractionNode> {
        let api = ctx.data::<ApiContext>()?;
        let id: InteractionId = parse_id("id", &id)?;
        if visible_interaction(ctx, id).await?.is_none() {
            return Err(ApiError::NotFound {
                entity: "interaction",
                id: id.to_string(),
            }
            .into());
        }
        let draft = InteractionPatchDraft {
            kind: input.kind.map(Into::into),
            direction: change(input.direction.map_value(Into::into)),
            subject: change(input.subject),
            body: change(input.body),
            outcome: change(input.outcome),
            occurred_at: input.occurred_at,
            duration_seconds: change(input.duration_seconds),
            author: change(input.author),
        };
        let patch = InteractionPatch::parse(draft).map_err(|e| ApiError::validation("input", e))?;
        let auditor = Auditor::of(ctx)?;
        let interaction = interactions::update(&api.db, id, patch, api.clock.now(), |old, new| {
            auditor.interaction("interaction.update", Some(old), Some(new))
        })
        .await
        .map_err(|e| ApiError::from_store("input", e))?;
        Ok(InteractionNode(interaction))
    }

    /// Deletes an interaction for good; returns its id.
    async fn delete_interaction(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let api = ctx.data::<ApiContext>()?;
        let parsed: InteractionId = parse_id("id", &id)?;
        let Some(before) = visible_interaction(ctx, parsed).await? else {
            return Err(ApiError::NotFound {
                entity: "interaction",
                id: parsed.to_string(),
            }
            .into());
        };
        let entry = Auditor::of(ctx)?.interaction("interaction.delete", Some(&before), None);
        interactions::delete(&api.db, parsed, entry)
            .await
            .map_err(ApiError::from)?;
        Ok(id)
    }
}
