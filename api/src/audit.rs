//! Writing the audit log from resolvers: who did what to which record, with the changed fields
//! (before/after), PII-heavy fields redacted per `audit.redact_fields`, and the request id.
//! Secrets never reach this module (API key secrets are not part of any record).

use crate::{
    error::{ApiError, ApiResult},
    graphql::ApiContext,
};
use async_graphql::Context;
use crm_domain::{Credential, Customer, Interaction, Principal};
use crm_store::audit::{ActorKind, NewAuditEntry};
use serde_json::{Map, Value, json};

/// The id of the HTTP request, as set by the request-id layer.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The fields of a record as audit values.
pub(crate) type Fields = Vec<(&'static str, Value)>;

/// A customer's audited fields.
pub(crate) fn customer_fields(c: &Customer) -> Fields {
    vec![
        ("name", json!(c.name)),
        ("email", json!(c.email.as_ref().map(|e| e.as_str()))),
        ("phone", json!(c.phone.as_ref().map(|p| p.as_str()))),
        ("company", json!(c.company)),
        ("status", json!(c.status.as_str())),
        ("source", json!(c.source)),
        ("language", json!(c.language.as_ref().map(|l| l.as_str()))),
        ("country", json!(c.country.as_ref().map(|c| c.as_str()))),
        ("time_zone", json!(c.time_zone.map(|z| z.name()))),
        ("owner", json!(c.owner)),
        (
            "tags",
            json!(c.tags.iter().map(|t| t.as_str()).collect::<Vec<_>>()),
        ),
        ("consent_email", json!(c.consent_email)),
        ("consent_call", json!(c.consent_call)),
        ("consent_sms", json!(c.consent_sms)),
        ("notes", json!(c.notes)),
        ("deleted_at", json!(c.deleted_at)),
    ]
}

/// An interaction's audited fields.
pub(crate) fn interaction_fields(i: &Interaction) -> Fields {
    vec![
        ("customer_id", json!(i.customer_id.to_string())),
        ("kind", json!(i.kind.as_str())),
        ("direction", json!(i.direction.map(|d| d.as_str()))),
        ("subject", json!(i.subject)),
        ("body", json!(i.body)),
        ("outcome", json!(i.outcome)),
        ("occurred_at", json!(i.occurred_at)),
        ("duration_seconds", json!(i.duration_seconds)),
        ("author", json!(i.author)),
    ]
}

/// What a redacted value is written as.
const REDACTED: &str = "[redacted]";

/// Whether `value` of field `name` is written as [`REDACTED`]: a value of a field configured
/// as redacted, unless it is null (the fact that it is unset stays visible).
fn hidden(value: &Value, name: &str, redact: &[String]) -> bool {
    !value.is_null() && redact.iter().any(|r| r == name)
}

/// `{"field": {"before": …, "after": …}}` for every field that differs; a create has no
/// `before`, a hard delete no `after`. Redacted fields keep the fact that they changed.
pub(crate) fn changes(
    before: Option<&Fields>,
    after: Option<&Fields>,
    redact: &[String],
) -> Map<String, Value> {
    let mut out = Map::new();
    let names = before
        .or(after)
        .map(|f| f.iter().map(|(n, _)| *n).collect::<Vec<_>>())
        .unwrap_or_default();
    let get = |fields: Option<&Fields>, name: &str| {
        fields.and_then(|f| f.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()))
    };
    for name in names {
        let (old, new) = (get(before, name), get(after, name));
        if old == new {
            continue;
        }
        let hide = |value: Option<Value>| match value {
            Some(value) if hidden(&value, name, redact) => Some(json!(REDACTED)),
            value => value,
        };
        let mut change = Map::new();
        if let Some(old) = hide(old) {
            change.insert("before".into(), old);
        }
        if let Some(new) = hide(new) {
            change.insert("after".into(), new);
        }
        out.insert(name.to_owned(), Value::Object(change));
    }
    out
}

/// The [`changes`] of a create (no `before`) as JSON text: every field with its `after` value,
/// in the key order of `serde_json`'s map. Written straight into the text, without building the
/// map's objects or cloning the values (a file import writes one per lead).
fn created(after: &Fields, redact: &[String]) -> Option<String> {
    let mut fields: Vec<&(&'static str, Value)> = after.iter().collect();
    fields.sort_unstable_by_key(|(name, _)| *name);
    let mut out = Vec::with_capacity(64 * fields.len());
    for (name, value) in fields {
        out.push(if out.is_empty() { b'{' } else { b',' });
        serde_json::to_writer(&mut out, name).ok()?;
        out.extend_from_slice(b":{\"after\":");
        if hidden(value, name, redact) {
            serde_json::to_writer(&mut out, REDACTED).ok()?;
        } else {
            serde_json::to_writer(&mut out, value).ok()?;
        }
        out.push(b'}');
    }
    if out.is_empty() {
        return None;
    }
    out.push(b'}');
    String::from_utf8(out).ok()
}

/// Builds the audit entries of one request: who (from the principal), when, which request.
/// The store appends them in the same transaction as the change they describe.
#[derive(Debug, Clone)]
pub(crate) struct Auditor {
    actor_kind: ActorKind,
    actor: String,
    request_id: Option<String>,
    at: chrono::DateTime<chrono::Utc>,
    redact: std::sync::Arc<[String]>,
}

impl Auditor {
    /// The auditor of the current request.
    pub(crate) fn of(ctx: &Context<'_>) -> ApiResult<Self> {
        let api = ctx
            .data::<ApiContext>()
            .map_err(|e| ApiError::Internal(e.message))?;
        let principal = ctx
            .data::<Principal>()
            .map_err(|e| ApiError::Internal(e.message))?;
        let (actor_kind, actor) = match principal.credential {
            Credential::Token => (ActorKind::User, principal.subject.clone()),
            Credential::ApiKey(id) => (
                ActorKind::ApiKey,
                format!("{} (key {id})", principal.subject),
            ),
        };
        Ok(Self {
            actor_kind,
            actor,
            request_id: ctx.data::<RequestId>().ok().map(|r| r.0.clone()),
            at: api.clock.now(),
            redact: api.redact.clone(),
        })
    }

    /// The auditor of the server itself (a job), acting now as `actor`.
    pub(crate) fn system(
        actor: &str,
        at: chrono::DateTime<chrono::Utc>,
        redact: std::sync::Arc<[String]>,
    ) -> Self {
        Self {
            actor_kind: ActorKind::System,
            actor: actor.to_owned(),
            request_id: None,
            at,
            redact,
        }
    }

    /// Who acts (a user's subject, or a key's subject and id).
    pub(crate) fn actor(&self) -> String {
        self.actor.clone()
    }

    /// What kind of actor.
    pub(crate) fn actor_kind(&self) -> ActorKind {
        self.actor_kind
    }

    /// When the action happens.
    pub(crate) fn at(&self) -> chrono::DateTime<chrono::Utc> {
        self.at
    }

    /// The HTTP request it belongs to.
    pub(crate) fn request_id(&self) -> Option<String> {
        self.request_id.clone()
    }

    /// An entry with the given changes.
    pub(crate) fn entry(
        &self,
        action: &str,
        target_type: &str,
        target_id: String,
        changed: Map<String, Value>,
    ) -> NewAuditEntry {
        let payload = (!changed.is_empty()).then(|| Value::Object(changed).to_string());
        self.entry_with(action, target_type, target_id, payload)
    }

    /// An entry with the changes as JSON text.
    fn entry_with(
        &self,
        action: &str,
        target_type: &str,
        target_id: String,
        payload: Option<String>,
    ) -> NewAuditEntry {
        NewAuditEntry {
            at: self.at,
            actor_kind: self.actor_kind,
            actor: self.actor.clone(),
            action: action.to_owned(),
            target_type: Some(target_type.to_owned()),
            target_id: Some(target_id),
            request_id: self.request_id.clone(),
            payload,
        }
    }

    /// The entry of a change to a customer (`before` absent for a create).
    pub(crate) fn customer(
        &self,
        action: &str,
        before: Option<&Customer>,
        after: &Customer,
    ) -> Option<NewAuditEntry> {
        let Some(before) = before else {
            let payload = created(&customer_fields(after), &self.redact);
            return Some(self.entry_with(action, "customer", after.id.to_string(), payload));
        };
        let changed = changes(
            Some(&customer_fields(before)),
            Some(&customer_fields(after)),
            &self.redact,
        );
        Some(self.entry(action, "customer", after.id.to_string(), changed))
    }

    /// The entry of a change to an interaction (`after` absent for a delete).
    pub(crate) fn interaction(
        &self,
        action: &str,
        before: Option<&Interaction>,
        after: Option<&Interaction>,
    ) -> Option<NewAuditEntry> {
        let id = after.or(before)?.id.to_string();
        let changed = changes(
            before.map(interaction_fields).as_ref(),
            after.map(interaction_fields).as_ref(),
            &self.redact,
        );
        Some(self.entry(action, "interaction", id, changed))
    }
}

impl crm_plugins::intake::CustomerAudit for Auditor {
    fn customer(
        &self,
        action: &str,
        before: Option<&Customer>,
        after: &Customer,
    ) -> Option<NewAuditEntry> {
        Auditor::customer(self, action, before, after)
    }
}

/// The auditor of a job: entries attributed to the system as `actor`, stamped when written.
#[derive(Debug, Clone)]
pub(crate) struct SystemAudit {
    pub(crate) actor: String,
    pub(crate) clock: std::sync::Arc<dyn crm_domain::Clock>,
    pub(crate) redact: std::sync::Arc<[String]>,
}

impl crm_plugins::intake::CustomerAudit for SystemAudit {
    fn customer(
        &self,
        action: &str,
        before: Option<&Customer>,
        after: &Customer,
    ) -> Option<NewAuditEntry> {
        Auditor::system(&self.actor, self.clock.now(), self.redact.clone())
            .customer(action, before, after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_keep_only_differences_and_redact() {
        let before: Fields = vec![
            ("name", json!("Ana")),
            ("email", json!("a@x.de")),
            ("owner", json!(null)),
        ];
        let after: Fields = vec![
            ("name", json!("Ana")),
            ("email", json!("b@x.de")),
            ("owner", json!("bob")),
        ];
        let diff = changes(Some(&before), Some(&after), &["email".to_owned()]);
        assert_eq!(
            Value::Object(diff),
            json!({
                "email": { "before": "[redacted]", "after": "[redacted]" },
                "owner": { "before": null, "after": "bob" }
            })
        );
        let created = changes(None, Some(&after), &[]);
        assert_eq!(created["name"], json!({ "after": "Ana" }));
    }

    #[test]
    fn a_create_is_written_as_the_changes_map_would_be() {
        let mut customer = crm_domain::NewCustomer::parse(
            crm_domain::CustomerDraft {
                name: "Ана \"Хоџић\"".into(),
                email: Some("Ana@Firma.ba".into()),
                phone: Some("033 250 300".into()),
                tags: Some(vec!["messe".into(), "b2b".into()]),
                notes: Some("Ruft zurück \u{1F4DE}".into()),
                ..Default::default()
            },
            crm_domain::PhoneRegion::parse("BA").unwrap(),
            chrono::Utc::now(),
        )
        .unwrap()
        .0;
        // `owner` and `company` are null here: a null is never redacted.
        let redacted = ["email", "notes", "owner", "company"]
            .map(str::to_owned)
            .to_vec();
        for redact in [vec![], redacted] {
            let fields = customer_fields(&customer);
            let expected = Value::Object(changes(None, Some(&fields), &redact)).to_string();
            assert_eq!(created(&fields, &redact).unwrap(), expected);
        }
        customer.owner = Some("bob".into());
        let fields = customer_fields(&customer);
        let expected = Value::Object(changes(None, Some(&fields), &[])).to_string();
        assert_eq!(created(&fields, &[]).unwrap(), expected);
        assert!(created(&Vec::new(), &[]).is_none());
    }
}
