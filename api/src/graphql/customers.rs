//! Customers over GraphQL: the `Customer` type, the `customers` connection and its filters,
//! and the create/update/delete/restore mutations.

use super::{
    ApiContext,
    access::{check_owner, customer_scope, scoped_write_error, visible_customer},
    interactions::InteractionNode,
    loaders::{InteractionsLoader, prefetch_latest_interactions, prime_customers},
    pagination::{PageArgs, connection, size},
};
use crate::{
    audit::Auditor,
    error::{ApiError, ApiResult, invalid},
};
use async_graphql::{Context, Enum, ID, InputObject, MaybeUndefined, Object};
use chrono::{DateTime, Utc};
use crm_domain::{
    Change, Customer, CustomerDraft, CustomerId, CustomerPatch, CustomerPatchDraft, NewCustomer,
    Tag,
};
use crm_store::customers::{self, CustomerFilter as StoreFilter, CustomerOrder as StoreOrder};

/// Parses a GraphQL `ID` argument into a typed id.
pub(crate) fn parse_id<T: std::str::FromStr>(field: &str, id: &ID) -> ApiResult<T> {
    id.parse::<T>().map_err(|_| {
        invalid(
            field,
            "invalid_id",
            format!("{field} `{}` is not a valid id (a UUID)", id.as_str()),
        )
    })
}

/// Where a customer stands in the sales cycle.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_domain::CustomerStatus")]
pub(crate) enum CustomerStatus {
    /// Came in, not yet qualified or contacted.
    Lead,
    /// Qualified and in conversation.
    Prospect,
    /// Bought.
    Customer,
    /// Was a customer, left.
    Churned,
}

/// A person or company we sell to. A lead is a customer in status `LEAD`.
#[derive(Debug, Clone)]
pub(crate) struct CustomerNode(pub(crate) Customer);

impl From<Customer> for CustomerNode {
    fn from(customer: Customer) -> Self {
        Self(customer)
    }
}

#[Object(name = "Customer")]
impl CustomerNode {
    /// Identity (UUID).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Full name or contact person.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Normalized email (lower case), unique.
    async fn email(&self) -> Option<&str> {
        self.0.email.as_ref().map(|e| e.as_str())
    }
    /// Phone in E.164 (`+4930123456`), unique.
    async fn phone(&self) -> Option<&str> {
        self.0.phone.as_ref().map(|p| p.as_str())
    }
    /// Company name.
    async fn company(&self) -> Option<&str> {
        self.0.company.as_deref()
    }
    /// Stage in the sales cycle.
    async fn status(&self) -> CustomerStatus {
        self.0.status.into()
    }
    /// Where the customer came from.
    async fn source(&self) -> Option<&str> {
        self.0.source.as_deref()
    }
    /// Preferred language tag (`de`, `bs`, `sr`, `en`, `de-AT`).
    async fn language(&self) -> Option<&str> {
        self.0.language.as_ref().map(|l| l.as_str())
    }
    /// ISO 3166-1 alpha-2 country.
    async fn country(&self) -> Option<&str> {
        self.0.country.as_ref().map(|c| c.as_str())
    }
    /// IANA time zone.
    async fn time_zone(&self) -> Option<&str> {
        self.0.time_zone.map(|z| z.name())
    }
    /// Owning user.
    async fn owner(&self) -> Option<&str> {
        self.0.owner.as_deref()
    }
    /// Tags, lower case, sorted.
    async fn tags(&self) -> Vec<&str> {
        self.0.tags.iter().map(Tag::as_str).collect()
    }
    /// May receive marketing email.
    async fn consent_email(&self) -> bool {
        self.0.consent_email
    }
    /// May be called.
    async fn consent_call(&self) -> bool {
        self.0.consent_call
    }
    /// May receive SMS.
    async fn consent_sms(&self) -> bool {
        self.0.consent_sms
    }
    /// Free-text notes.
    async fn notes(&self) -> Option<&str> {
        self.0.notes.as_deref()
    }
    /// Created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Soft-deleted at (null while live).
    async fn deleted_at(&self) -> Option<DateTime<Utc>> {
        self.0.deleted_at
    }
    /// The current lead score (the newest scoring), with its reasons; null until first scored.
    /// Batched across all customers of a response.
    async fn score(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<super::pipeline::LeadScoreNode>> {
        let loader = ctx.data::<super::ScoresLoader>()?;
        let found = loader.load_one(self.0.id).await.map_err(ApiError::from)?;
        Ok(found.map(super::pipeline::LeadScoreNode))
    }

    /// Every scoring of the lead, newest first, each with the config version that produced it.
    #[graphql(
        complexity = "usize::try_from(first.unwrap_or(20)).unwrap_or(1).clamp(1, 1000).saturating_mul(child_complexity)"
    )]
    async fn score_history(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<super::pipeline::LeadScoreConnection> {
        super::pipeline::score_history(ctx, self.0.id, first, after).await
    }

    /// The newest interactions, newest first (at most the maximum page size). Batched across
    /// all customers of a response.
    #[graphql(
        complexity = "usize::try_from(first).unwrap_or(1).clamp(1, 1000).saturating_mul(child_complexity)"
    )]
    async fn interactions(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> async_graphql::Result<Vec<InteractionNode>> {
        let api = ctx.data::<ApiContext>()?;
        let limit = size("first", first, api.pages)?;
        let loader = ctx.data::<InteractionsLoader>()?;
        let found = loader
            .load_one((self.0.id, limit))
            .await
            .map_err(ApiError::from)?;
        Ok(found
            .unwrap_or_default()
            .into_iter()
            .map(InteractionNode::from)
            .collect())
    }
}

connection!(CustomerConnection, CustomerEdge, CustomerNode, Customer);

/// Which customers to list. All given conditions must hold.
#[derive(InputObject, Default, Debug)]
pub(crate) struct CustomerFilter {
    /// Substring of name, email or company, case-insensitive.
    text: Option<String>,
    /// Status equals.
    status: Option<CustomerStatus>,
    /// Carries this tag.
    tag: Option<String>,
    /// Owned by this user.
    owner: Option<String>,
    /// Created at or after.
    created_after: Option<DateTime<Utc>>,
    /// Created before.
    created_before: Option<DateTime<Utc>>,
    /// Include soft-deleted customers (default false).
    #[graphql(default = false)]
    include_deleted: bool,
}

impl CustomerFilter {
    fn into_store(self, scope: crm_domain::CustomerScope) -> ApiResult<StoreFilter> {
        let text = crm_domain::values::optional_text("filter.text", self.text.as_deref(), 200)
            .map_err(|e| invalid(e.field, e.code, e.message))?;
        let owner = crm_domain::values::optional_text("filter.owner", self.owner.as_deref(), 200)
            .map_err(|e| invalid(e.field, e.code, e.message))?;
        let tag = self
            .tag
            .map(|t| Tag::parse(&t).map_err(|e| invalid("filter.tag", e.code, e.message)))
            .transpose()?;
        if let (Some(after), Some(before)) = (self.created_after, self.created_before)
            && after > before
        {
            return Err(invalid(
                "filter.createdAfter",
                "invalid_range",
                "createdAfter is later than createdBefore",
            ));
        }
        Ok(StoreFilter {
            text,
            status: self.status.map(Into::into),
            tag,
            owner,
            created_after: self.created_after,
            created_before: self.created_before,
            include_deleted: self.include_deleted,
            scope,
        })
    }
}

/// Keys a customer list can be ordered by.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[graphql(remote = "crm_store::customers::CustomerOrderField")]
pub(crate) enum CustomerOrderField {
    /// Creation time.
    #[default]
    CreatedAt,
    /// Last change.
    UpdatedAt,
    /// Name.
    Name,
}

/// Sort direction.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug, Default)]
#[graphql(remote = "crm_store::customers::OrderDirection")]
pub(crate) enum OrderDirection {
    /// Smallest first.
    Asc,
    /// Largest first.
    #[default]
    Desc,
}

/// Ordering of a customer list; ties are broken by id.
#[derive(InputObject, Debug, Default)]
pub(crate) struct CustomerOrder {
    /// The key (default `CREATED_AT`).
    #[graphql(default)]
    field: CustomerOrderField,
    /// The direction (default `DESC`).
    #[graphql(default)]
    direction: OrderDirection,
}

/// A new customer. Needs an email or a phone.
#[derive(InputObject, Debug)]
pub(crate) struct CreateCustomerInput {
    /// Name (required, at most 200 characters).
    name: String,
    /// Email; normalized to lower case; unique.
    email: Option<String>,
    /// Phone as written; national numbers are read in the configured default region; stored
    /// as E.164; unique.
    phone: Option<String>,
    /// Company.
    company: Option<String>,
    /// Status (default `LEAD`).
    status: Option<CustomerStatus>,
    /// Source (`website`, `partner`, …).
    source: Option<String>,
    /// Language tag (`de`, `bs`, `sr`, `en`, `de-AT`).
    language: Option<String>,
    /// ISO 3166-1 alpha-2 country; derived from the phone when absent.
    country: Option<String>,
    /// IANA time zone (`Europe/Berlin`).
    time_zone: Option<String>,
    /// Owning user.
    owner: Option<String>,
    /// Tags.
    tags: Option<Vec<String>>,
    /// May receive marketing email (default false).
    consent_email: Option<bool>,
    /// May be called (default false).
    consent_call: Option<bool>,
    /// May receive SMS (default false).
    consent_sms: Option<bool>,
    /// Notes.
    notes: Option<String>,
}

/// A partial update: absent fields stay, `null` clears a field, a value sets it.
#[derive(InputObject, Debug, Default)]
pub(crate) struct UpdateCustomerInput {
    /// Name (cannot be cleared).
    name: Option<String>,
    /// Email.
    email: MaybeUndefined<String>,
    /// Phone.
    phone: MaybeUndefined<String>,
    /// Company.
    company: MaybeUndefined<String>,
    /// Status (cannot be cleared).
    status: Option<CustomerStatus>,
    /// Source.
    source: MaybeUndefined<String>,
    /// Language tag.
    language: MaybeUndefined<String>,
    /// Country.
    country: MaybeUndefined<String>,
    /// Time zone.
    time_zone: MaybeUndefined<String>,
    /// Owner.
    owner: MaybeUndefined<String>,
    /// Tags: replaces the whole set (`[]` removes all).
    tags: Option<Vec<String>>,
    /// Email consent.
    consent_email: Option<bool>,
    /// Call consent.
    consent_call: Option<bool>,
    /// SMS consent.
    consent_sms: Option<bool>,
    /// Notes.
    notes: MaybeUndefined<String>,
}

/// An absent, `null` or given input field as a change of a partial update.
pub(crate) fn change<T>(value: MaybeUndefined<T>) -> Change<T> {
    match value {
        MaybeUndefined::Undefined => Change::Keep,
        MaybeUndefined::Null => Change::Clear,
        MaybeUndefined::Value(v) => Change::Set(v),
    }
}

/// Customer queries.
#[derive(Default, Debug)]
pub(crate) struct CustomerQuery;

#[Object]
impl CustomerQuery {
    /// A customer by id, soft-deleted or not; null if there is none.
    async fn customer(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<CustomerNode>> {
        let api = ctx.data::<ApiContext>()?;
        let id: CustomerId = parse_id("id", &id)?;
        let scope = customer_scope(ctx)?;
        let customer = customers::get(&api.db, id)
            .await
            .map_err(ApiError::from)?
            .filter(|c| scope.covers(c.owner.as_deref()));
        if let Some(customer) = &customer {
            prime_customers(ctx, vec![customer.clone()]).await?;
        }
        Ok(customer.map(CustomerNode))
    }

    /// Customers, newest first by default, as a Relay connection. Page size: `first` or
    /// `last`, default 20, at most 100 (config `graphql.max_page_size`).
    #[graphql(
        complexity = "usize::try_from(first.or(last).unwrap_or(20)).unwrap_or(1).clamp(1, 1000).saturating_mul(child_complexity)"
    )]
    #[expect(
        clippy::too_many_arguments,
        reason = "the Relay connection arguments plus filter and order"
    )]
    async fn customers(
        &self,
        ctx: &Context<'_>,
        filter: Option<CustomerFilter>,
        order_by: Option<CustomerOrder>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<CustomerConnection> {
        let api = ctx.data::<ApiContext>()?;
        let order = order_by.unwrap_or_default();
        let order = StoreOrder {
            field: order.field.into(),
            direction: order.direction.into(),
        };
        let seek = PageArgs {
            first,
            after,
            last,
            before,
        }
        .seek(api.pages, order.field.cursor_tag(), order.field.is_time())?;
        let filter = filter
            .unwrap_or_default()
            .into_store(customer_scope(ctx)?)?;
        let page = customers::list(&api.db, &filter, order, &seek)
            .await
            .map_err(ApiError::from)?;
        let ids: Vec<CustomerId> = page.items.iter().map(|(_, c)| c.id).collect();
        let held: Vec<Customer> = page.items.iter().map(|(_, c)| c.clone()).collect();
        prime_customers(ctx, held).await?;
        prefetch_latest_interactions(
            ctx,
            &[
                &["nodes", "interactions"],
                &["edges", "node", "interactions"],
            ],
            &ids,
        )
        .await?;
        Ok(CustomerConnection(page))
    }
}

/// Customer mutations.
#[derive(Default, Debug)]
pub(crate) struct CustomerMutation;

#[Object]
impl CustomerMutation {
    /// Creates a customer. Errors: `VALIDATION_FAILED` naming each bad field, `DUPLICATE` when
    /// the email or phone is taken (with `existingId`).
    async fn create_customer(
        &self,
        ctx: &Context<'_>,
        input: CreateCustomerInput,
    ) -> async_graphql::Result<CustomerNode> {
        let api = ctx.data::<ApiContext>()?;
        let scope = customer_scope(ctx)?;
        check_owner(&scope, input.owner.as_deref())?;
        // A scoped caller's new customers are their own unless they say otherwise.
        let owner = input.owner.or_else(|| scope.subject().map(str::to_owned));
        let draft = CustomerDraft {
            name: input.name,
            email: input.email,
            phone: input.phone,
            company: input.company,
            status: input.status.map(Into::into),
            source: input.source,
            language: input.language,
            country: input.country,
            time_zone: input.time_zone,
            owner,
            tags: input.tags,
            consent_email: input.consent_email,
            consent_call: input.consent_call,
            consent_sms: input.consent_sms,
            notes: input.notes,
        };
        let new = NewCustomer::parse(draft, api.region, api.clock.now())
            .map_err(|e| ApiError::validation("input", e))?;
        // A person erased at their request is not entered again.
        if crm_store::gdpr::is_erased(
            &api.db,
            new.0.email.as_ref().map(|e| e.as_str()),
            new.0.phone.as_ref().map(|p| p.as_str()),
            api.clock.now(),
        )
        .await
        .map_err(ApiError::from)?
        {
            let field = if new.0.email.is_some() {
                "input.email"
            } else {
                "input.phone"
            };
            return Err(invalid(
                field,
                "erased",
                "this person's data was erased at their request; they are not entered again",
            )
            .into());
        }
        let auditor = Auditor::of(ctx)?;
        let entry = auditor.customer("customer.create", None, &new.0);
        let mut effects = api.run_for_new_lead(&new.0);
        effects.extend(crm_store::gdpr::consent_effects(
            new.0.id,
            crm_domain::ConsentRecord::from_flags(
                new.0.consent_email,
                new.0.consent_call,
                new.0.consent_sms,
                crm_domain::ConsentSource::Api,
                auditor.request_id(),
            ),
            &auditor.actor(),
        ));
        let customer = match customers::insert(&api.db, new, entry, &effects).await {
            Ok(customer) => customer,
            Err(error) => return Err(scoped_write_error(ctx, "input", error).await.into()),
        };
        tracing::info!(customer_id = %customer.id, "Customer created.");
        Ok(CustomerNode(customer))
    }

    /// Changes the given fields of a live customer.
    async fn update_customer(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateCustomerInput,
    ) -> async_graphql::Result<CustomerNode> {
        let api = ctx.data::<ApiContext>()?;
        let id: CustomerId = parse_id("id", &id)?;
        visible_customer(ctx, id).await?;
        if let MaybeUndefined::Value(owner) = &input.owner {
            check_owner(&customer_scope(ctx)?, Some(owner))?;
        }
        let draft = CustomerPatchDraft {
            name: input.name,
            email: change(input.email),
            phone: change(input.phone),
            company: change(input.company),
            status: input.status.map(Into::into),
            source: change(input.source),
            language: change(input.language),
            country: change(input.country),
            time_zone: change(input.time_zone),
            owner: change(input.owner),
            tags: input.tags,
            consent_email: input.consent_email,
            consent_call: input.consent_call,
            consent_sms: input.consent_sms,
            notes: change(input.notes),
        };
        // Consent flags stated in the patch are statements for the ledger.
        let stated: Vec<crm_domain::ConsentRecord> = [
            (
                draft.consent_email,
                crm_domain::ConsentChannel::Email,
                crm_domain::ConsentPurpose::Marketing,
            ),
            (
                draft.consent_call,
                crm_domain::ConsentChannel::Call,
                crm_domain::ConsentPurpose::SalesFollowUp,
            ),
            (
                draft.consent_sms,
                crm_domain::ConsentChannel::Sms,
                crm_domain::ConsentPurpose::Marketing,
            ),
        ]
        .into_iter()
        .filter_map(|(flag, channel, purpose)| {
            flag.map(|granted| crm_domain::ConsentRecord {
                channel,
                purpose,
                basis: crm_domain::LawfulBasis::Consent,
                granted,
                source: crm_domain::ConsentSource::Api,
                evidence: None,
            })
        })
        .collect();
        let patch = CustomerPatch::parse(draft, api.region)
            .map_err(|e| ApiError::validation("input", e))?;
        // An erased person's email or phone is not given to anyone again.
        if crm_store::gdpr::is_erased(
            &api.db,
            patch.new_email().map(|e| e.as_str()),
            patch.new_phone().map(|p| p.as_str()),
            api.clock.now(),
        )
        .await
        .map_err(ApiError::from)?
        {
            let field = if patch.new_email().is_some() {
                "input.email"
            } else {
                "input.phone"
            };
            return Err(invalid(
                field,
                "erased",
                "this email or phone belonged to a person erased at their request",
            )
            .into());
        }
        let clock = api.clock.clone();
        let scope = customer_scope(ctx)?;
        let auditor = Auditor::of(ctx)?;
        // The scope is checked again on the state being written: a concurrent reassignment
        // must not let this change land on someone else's customer.
        let customer = customers::update(
            &api.db,
            id,
            |c| {
                if !scope.covers(c.owner.as_deref()) {
                    return Err(crm_store::StoreError::NotFound {
                        entity: "customer",
                        id: id.to_string(),
                    });
                }
                c.apply(patch.clone(), clock.now())
                    .map_err(crm_store::StoreError::Invalid)
            },
            |before, after| auditor.customer("customer.update", Some(before), after),
            &crm_store::gdpr::consent_effects(id, stated, &auditor.actor()),
        )
        .await;
        let customer = match customer {
            Ok(customer) => customer,
            Err(error) => return Err(scoped_write_error(ctx, "input", error).await.into()),
        };
        Ok(CustomerNode(customer))
    }

    /// Soft-deletes a customer: hidden from lists, kept with its interactions, restorable.
    /// Deleting a deleted customer returns it unchanged.
    async fn delete_customer(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<CustomerNode> {
        let api = ctx.data::<ApiContext>()?;
        let id: CustomerId = parse_id("id", &id)?;
        let before = visible_customer(ctx, id).await?;
        let auditor = Auditor::of(ctx)?;
        let now = api.clock.now();
        let customer = customers::set_deleted(&api.db, id, Some(now), now, |after| {
            auditor.customer("customer.delete", Some(&before), after)
        })
        .await
        .map_err(ApiError::from)?;
        Ok(CustomerNode(customer))
    }

    /// Restores a soft-deleted customer. Restoring a live customer returns it unchanged.
    async fn restore_customer(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<CustomerNode> {
        let api = ctx.data::<ApiContext>()?;
        let id: CustomerId = parse_id("id", &id)?;
        let before = visible_customer(ctx, id).await?;
        let auditor = Auditor::of(ctx)?;
        let customer = customers::set_deleted(&api.db, id, None, api.clock.now(), |after| {
            auditor.customer("customer.restore", Some(&before), after)
        })
        .await
        .map_err(ApiError::from)?;
        Ok(CustomerNode(customer))
    }
}
