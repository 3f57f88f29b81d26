//! Authorization: the casbin policy decides, in one place.
//!
//! - Every root field (Query, Mutation, Subscription) is checked by [`AuthzExtension`] before it
//!   resolves: `(role, "<Type>.<field>", "call")`. Resolvers never check roles themselves.
//! - Row-level rules come from the same policy (`(role, "customers", all | own_or_unassigned |
//!   own)`) as a [`CustomerScope`] that resolvers hand to the store as a filter.
//!
//! The model and policy ship in `api/policy/` and can be replaced by `auth.model_file` and
//! `auth.policy_file`.

use crate::error::code;
use async_graphql::{
    ErrorExtensions as _, ServerError, ServerResult, Value,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo},
};
use casbin::{CoreApi as _, DefaultModel, Enforcer, StringAdapter};
use crm_domain::{CustomerScope, Principal, Role};
use std::{path::Path, sync::Arc};

/// The model shipped with the server.
pub const DEFAULT_MODEL: &str = include_str!("../policy/model.conf");
/// The policy shipped with the server.
pub const DEFAULT_POLICY: &str = include_str!("../policy/policy.csv");

/// A role's row-level rule for customers, as the policy states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowRule {
    All,
    OwnOrUnassigned,
    Own,
}

/// The policy decision point. The policy is fixed while the server runs, so decisions are
/// memoized: casbin (with its script engine) runs once per role and operation, not per request.
#[derive(Clone)]
pub struct Authorizer {
    enforcer: Arc<Enforcer>,
    decisions: Arc<std::sync::RwLock<std::collections::HashMap<(Role, String), bool>>>,
    rows: Arc<[(Role, Option<RowRule>)]>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

impl Authorizer {
    /// Builds the enforcer from model and policy text.
    pub async fn new(model: &str, policy: &str) -> anyhow::Result<Self> {
        let model = DefaultModel::from_str(model)
            .await
            .map_err(|e| anyhow::anyhow!("invalid casbin model: {e}"))?;
        // Comments and blank lines are for people; the adapter gets the rows only.
        let rows: String = policy
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let enforcer = Enforcer::new(model, StringAdapter::new(rows))
            .await
            .map_err(|e| anyhow::anyhow!("invalid casbin policy: {e}"))?;
        let allows = |role: Role, act: &str| {
            enforcer
                .enforce((role.as_str(), "customers", act))
                .unwrap_or(false)
        };
        let row_rules = Role::ALL
            .into_iter()
            .map(|role| {
                let rule = if allows(role, "all") {
                    Some(RowRule::All)
                } else if allows(role, "own_or_unassigned") {
                    Some(RowRule::OwnOrUnassigned)
                } else if allows(role, "own") {
                    Some(RowRule::Own)
                } else {
                    None
                };
                (role, rule)
            })
            .collect();
        Ok(Self {
            enforcer: Arc::new(enforcer),
            decisions: Arc::default(),
            rows: row_rules,
        })
    }

    /// Builds the enforcer from the configured files, or the shipped ones.
    pub async fn from_files(model: Option<&Path>, policy: Option<&Path>) -> anyhow::Result<Self> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
        };
        let model = model.map(read).transpose()?;
        let policy = policy.map(read).transpose()?;
        Self::new(
            model.as_deref().unwrap_or(DEFAULT_MODEL),
            policy.as_deref().unwrap_or(DEFAULT_POLICY),
        )
        .await
    }

    /// May `role` call the operation `object` (`Query.customers`)?
    pub fn may_call(&self, role: Role, object: &str) -> bool {
        let key = (role, object.to_owned());
        if let Some(decision) = self
            .decisions
            .read()
            .ok()
            .and_then(|d| d.get(&key).copied())
        {
            return decision;
        }
        let decision = self
            .enforcer
            .enforce((role.as_str(), object, "call"))
            .unwrap_or(false);
        if let Ok(mut decisions) = self.decisions.write() {
            decisions.insert(key, decision);
        }
        decision
    }

    /// Which customers `principal` may see and change; `None` if none at all.
    pub fn customer_scope(&self, principal: &Principal) -> Option<CustomerScope> {
        let rule = self
            .rows
            .iter()
            .find(|(role, _)| *role == principal.role)
            .and_then(|(_, rule)| *rule)?;
        Some(match rule {
            RowRule::All => CustomerScope::All,
            RowRule::OwnOrUnassigned => {
                CustomerScope::OwnedByOrUnassigned(principal.subject.clone())
            }
            RowRule::Own => CustomerScope::OwnedBy(principal.subject.clone()),
        })
    }
}

/// The policy check of a subscription: its root field is subscribed, not resolved, so the
/// extension never sees it; every subscription resolver calls this first. Refusals are logged
/// like the extension's.
pub(crate) fn require(
    ctx: &async_graphql::Context<'_>,
    operation: &str,
) -> Result<(), async_graphql::Error> {
    let principal = ctx.data::<Principal>().map_err(|_| {
        async_graphql::Error::new("credentials required")
            .extend_with(|_, ext| ext.set("code", code::UNAUTHENTICATED))
    })?;
    let allowed = ctx
        .data::<Authorizer>()
        .is_ok_and(|authz| authz.may_call(principal.role, operation));
    if allowed {
        return Ok(());
    }
    tracing::warn!(
        target: "crm::security",
        subject = %principal.subject,
        role = %principal.role,
        operation,
        "Operation refused by policy."
    );
    Err(
        async_graphql::Error::new(format!("role {} may not call {operation}", principal.role))
            .extend_with(|_, ext| ext.set("code", code::FORBIDDEN)),
    )
}

/// The schema extension that checks every root field against the policy.
#[derive(Debug, Clone, Copy)]
pub struct AuthzExtension;

impl ExtensionFactory for AuthzExtension {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AuthzExtension)
    }
}

const ROOT_TYPES: [&str; 3] = ["Query", "Mutation", "Subscription"];

/// Nested fields that reach another entity's data and so need a rule of their own, like root
/// fields: reading a customer must not imply reading its interactions.
pub const GUARDED_FIELDS: &[&str] = &[
    "Customer.interactions",
    // Score reasons name interaction outcomes (`outcome:not_interested`, `event:unsubscribed`).
    "Customer.score",
    "Customer.scoreHistory",
];

fn refused(info: &ResolveInfo<'_>, code: &'static str, message: String) -> ServerError {
    let error = async_graphql::Error::new(message).extend_with(|_, ext| ext.set("code", code));
    let mut server = error.into_server_error(info.field.name.pos);
    server.path = vec![async_graphql::PathSegment::Field(
        info.alias.unwrap_or(info.name).to_owned(),
    )];
    server
}

#[async_graphql::async_trait::async_trait]
impl Extension for AuthzExtension {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let object = format!("{}.{}", info.parent_type, info.name);
        let guarded = (ROOT_TYPES.contains(&info.parent_type) && !info.name.starts_with("__"))
            || GUARDED_FIELDS.contains(&object.as_str());
        if guarded {
            let Ok(principal) = ctx.data::<Principal>() else {
                return Err(refused(
                    &info,
                    code::UNAUTHENTICATED,
                    "credentials required".into(),
                ));
            };
            let allowed = ctx
                .data::<Authorizer>()
                .is_ok_and(|authz| authz.may_call(principal.role, &object));
            if !allowed {
                tracing::warn!(
                    target: "crm::security",
                    subject = %principal.subject,
                    role = %principal.role,
                    operation = %object,
                    "Operation refused by policy."
                );
                return Err(refused(
                    &info,
                    code::FORBIDDEN,
                    format!("role {} may not call {object}", principal.role),
                ));
            }
        }
        next.run(ctx, info).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::{parse_schema, types::TypeSystemDefinition};
    use std::collections::BTreeMap;

    /// Every root field of the schema and every guarded nested field, as `Type.field`.
    fn operations() -> Vec<String> {
        let sdl = crate::graphql::sdl();
        let document = parse_schema(&sdl).unwrap();
        let mut out = Vec::new();
        for definition in document.definitions {
            let TypeSystemDefinition::Type(ty) = definition else {
                continue;
            };
            let name = ty.node.name.node.to_string();
            if !ROOT_TYPES.contains(&name.as_str()) {
                continue;
            }
            if let async_graphql::parser::types::TypeKind::Object(object) = &ty.node.kind {
                for field in &object.fields {
                    out.push(format!("{name}.{}", field.node.name.node));
                }
            }
        }
        out.extend(GUARDED_FIELDS.iter().map(|f| (*f).to_owned()));
        out.sort();
        out
    }

    /// The expected decision for every operation: which roles may call it
    /// (A admin, M manager, S sales, I integration, V viewer).
    const TABLE: &[(&str, &str)] = &[
        ("Customer.interactions", "AMSV"),
        ("Customer.score", "AMSIV"),
        ("Customer.scoreHistory", "AMSV"),
        ("Mutation.createApiKey", "A"),
        ("Mutation.createCustomer", "AMSI"),
        ("Mutation.deleteCustomer", "AM"),
        ("Mutation.deleteInteraction", "AMS"),
        ("Mutation.logInteraction", "AMSI"),
        ("Mutation.restoreCustomer", "AM"),
        ("Mutation.revokeApiKey", "A"),
        ("Mutation.updateCustomer", "AMSI"),
        ("Mutation.updateInteraction", "AMS"),
        ("Query.apiKeys", "A"),
        ("Query.auditLog", "A"),
        ("Query.customer", "AMSIV"),
        ("Query.customers", "AMSIV"),
        ("Query.interaction", "AMSV"),
        ("Query.interactions", "AMSV"),
        ("Query.me", "AMSIV"),
        ("Query.jobs", "AM"),
        ("Query.deadJobs", "AM"),
        ("Mutation.retryJob", "AM"),
        ("Mutation.cancelJob", "AM"),
        ("Query.pipelineDefinition", "AMSIV"),
        ("Query.pipelineRuns", "AMSIV"),
        ("Query.pipelineRun", "AMSIV"),
        ("Mutation.qualifyLead", "AMSI"),
        ("Mutation.runPipeline", "AMS"),
        ("Mutation.importLeads", "AMSI"),
        ("Mutation.importLeadsFile", "AMSI"),
        ("Query.leadImport", "AMSI"),
        ("Query.findDuplicates", "AMS"),
        ("Mutation.mergeCustomers", "AM"),
        ("Query.calls", "AMSIV"),
        ("Query.call", "AMSIV"),
        ("Query.callQueue", "AMSIV"),
        ("Query.doNotCallList", "AMS"),
        ("Mutation.startVoiceCall", "AMSI"),
        ("Mutation.enqueueCall", "AMSI"),
        ("Mutation.cancelQueuedCall", "AMSI"),
        ("Mutation.addDoNotCall", "AMSI"),
        ("Mutation.removeDoNotCall", "AM"),
        ("Query.tasks", "AMSIV"),
        ("Query.task", "AMSIV"),
        ("Mutation.createTask", "AMSI"),
        ("Mutation.updateTask", "AMSI"),
        ("Mutation.deleteTask", "AMS"),
        ("Query.previewEmail", "AMSI"),
        ("Query.emails", "AMSIV"),
        ("Mutation.sendEmail", "AMSI"),
        ("Query.report", "AMSV"),
        ("Query.reports", "AMSV"),
        ("Mutation.generateReport", "AMS"),
        ("Query.consents", "AMSIV"),
        ("Mutation.recordConsent", "AMSI"),
        ("Query.exportCustomerData", "AM"),
        ("Mutation.eraseCustomer", "AM"),
        // Checked by `require` in the resolver (the extension never sees subscribed fields).
        ("Subscription.pipelineEvents", "AMSIV"),
        ("Subscription.callTranscript", "AMSIV"),
        ("Subscription.callEvents", "AMSIV"),
    ];

    fn letter(role: Role) -> char {
        match role {
            Role::Admin => 'A',
            Role::Manager => 'M',
            Role::Sales => 'S',
            Role::Integration => 'I',
            Role::Viewer => 'V',
        }
    }

    #[tokio::test]
    async fn every_operation_has_a_rule_and_each_role_gets_what_the_table_says() {
        let authz = Authorizer::new(DEFAULT_MODEL, DEFAULT_POLICY)
            .await
            .unwrap();
        let table: BTreeMap<&str, &str> = TABLE.iter().copied().collect();
        let operations = operations();
        let missing: Vec<&String> = operations
            .iter()
            .filter(|op| !table.contains_key(op.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "operations without an entry in the table (and maybe the policy): {missing:?}"
        );
        let stale: Vec<&&str> = table
            .keys()
            .filter(|op| !operations.iter().any(|o| o == *op))
            .collect();
        assert!(
            stale.is_empty(),
            "table entries for operations that no longer exist: {stale:?}"
        );
        for op in &operations {
            for role in Role::ALL {
                let expected = table[op.as_str()].contains(letter(role));
                assert_eq!(authz.may_call(role, op), expected, "{role} on {op}");
            }
            // Every operation is allowed to someone besides admin, or is admin-only on purpose.
        }
    }

    #[tokio::test]
    async fn row_scopes_follow_the_policy() {
        let authz = Authorizer::new(DEFAULT_MODEL, DEFAULT_POLICY)
            .await
            .unwrap();
        let principal = |role| Principal {
            subject: "ana".into(),
            role,
            credential: crm_domain::Credential::Token,
        };
        assert_eq!(
            authz.customer_scope(&principal(Role::Admin)),
            Some(CustomerScope::All)
        );
        assert_eq!(
            authz.customer_scope(&principal(Role::Viewer)),
            Some(CustomerScope::All)
        );
        assert_eq!(
            authz.customer_scope(&principal(Role::Sales)),
            Some(CustomerScope::OwnedByOrUnassigned("ana".into()))
        );
        let strict = DEFAULT_POLICY.replace(
            "p, sales, customers, own_or_unassigned",
            "p, sales, customers, own",
        );
        let authz = Authorizer::new(DEFAULT_MODEL, &strict).await.unwrap();
        assert_eq!(
            authz.customer_scope(&principal(Role::Sales)),
            Some(CustomerScope::OwnedBy("ana".into()))
        );
        let none = DEFAULT_POLICY.replace("p, viewer, customers, all", "");
        let authz = Authorizer::new(DEFAULT_MODEL, &none).await.unwrap();
        assert_eq!(authz.customer_scope(&principal(Role::Viewer)), None);
    }
}
