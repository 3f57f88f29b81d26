//! The audit log over GraphQL (admin only, per the policy).

use super::pagination::first_or_default;
use super::{ApiContext, pagination::PageInfo};
use crate::error::{ApiError, invalid};
use async_graphql::{Context, InputObject, Json, Object, SimpleObject};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use crm_store::{
    Page,
    audit::{self, AuditEntry, AuditFilter as StoreFilter},
};

/// One audit entry.
#[derive(Debug)]
pub(crate) struct AuditEntryNode(AuditEntry);

#[Object(name = "AuditEntry")]
impl AuditEntryNode {
    /// Position in the hash chain, from 1.
    async fn seq(&self) -> i64 {
        self.0.seq
    }
    /// When.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at_utc()
    }
    /// `user`, `api_key` or `system`.
    async fn actor_kind(&self) -> &str {
        &self.0.actor_kind
    }
    /// Who.
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    /// What (`customer.update`, `api_key.revoke`, …).
    async fn action(&self) -> &str {
        &self.0.action
    }
    /// Kind of target.
    async fn target_type(&self) -> Option<&str> {
        self.0.target_type.as_deref()
    }
    /// Target id.
    async fn target_id(&self) -> Option<&str> {
        self.0.target_id.as_deref()
    }
    /// The HTTP request that caused it.
    async fn request_id(&self) -> Option<&str> {
        self.0.request_id.as_deref()
    }
    /// Changed fields: `{"field": {"before": …, "after": …}}`, redacted per config.
    async fn changes(&self) -> Option<Json<serde_json::Value>> {
        self.0
            .payload
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .map(Json)
    }
    /// This entry's hash (hex SHA-256).
    async fn hash(&self) -> &str {
        &self.0.hash
    }
}

/// A page of audit entries, newest first.
#[derive(SimpleObject, Debug)]
pub(crate) struct AuditConnection {
    /// The entries.
    nodes: Vec<AuditEntryNode>,
    /// Paging.
    page_info: PageInfo,
}

/// Which entries to list.
#[derive(InputObject, Debug, Default)]
pub(crate) struct AuditFilter {
    /// Actor equals.
    actor: Option<String>,
    /// Action equals.
    action: Option<String>,
    /// Target id equals.
    target_id: Option<String>,
    /// At or after.
    from: Option<DateTime<Utc>>,
    /// Before.
    to: Option<DateTime<Utc>>,
}

fn cursor(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("a|{seq}"))
}

fn decode(raw: &str) -> Option<i64> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
    text.strip_prefix("a|")?.parse().ok()
}

/// Audit queries.
#[derive(Default, Debug)]
pub(crate) struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The audit log, newest first (admin). Page size as for `customers`.
    #[graphql(
        complexity = "usize::try_from(first.unwrap_or(20)).unwrap_or(1).clamp(1, 1000).saturating_mul(child_complexity)"
    )]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<AuditConnection> {
        let api = ctx.data::<ApiContext>()?;
        let limit = first_or_default(first, api.pages)?;
        let before_seq = after
            .map(|raw| {
                decode(&raw).ok_or_else(|| {
                    invalid("after", "invalid_cursor", "after: not a cursor of auditLog")
                })
            })
            .transpose()?;
        let filter = filter.unwrap_or_default();
        let filter = StoreFilter {
            actor: filter.actor,
            action: filter.action,
            target_id: filter.target_id,
            from: filter.from,
            to: filter.to,
        };
        let rows = audit::list(&api.db, &filter, before_seq, limit)
            .await
            .map_err(ApiError::from)?;
        let items: Vec<(String, AuditEntry)> =
            rows.into_iter().map(|e| (cursor(e.seq), e)).collect();
        let page = Page::forward(items, limit, before_seq.is_some());
        let page_info = PageInfo::of(&page);
        Ok(AuditConnection {
            nodes: page
                .items
                .into_iter()
                .map(|(_, e)| AuditEntryNode(e))
                .collect(),
            page_info,
        })
    }
}
