//! Tasks over GraphQL: the `Task` type, the `tasks` list, and create/update/delete.
//!
//! A task is visible exactly when its customer is (the caller's customer scope): an invisible
//! task or customer is `NOT_FOUND`, never `FORBIDDEN`.

use super::{
    ApiContext, CustomersLoader,
    access::{customer_scope, visible_customer},
    customers::{CustomerNode, change, parse_id},
    pagination::{PageInfo, first_or_default},
};
use crate::{
    audit::{Auditor, Fields, changes},
    error::{ApiError, invalid},
};
use async_graphql::{Context, Enum, ID, InputObject, MaybeUndefined, Object, SimpleObject};
use chrono::{DateTime, Utc};
use crm_domain::{
    CustomerId, ValidationErrors,
    values::{optional_text, required_text, text_change},
};
use crm_store::{
    Page,
    audit::NewAuditEntry,
    tasks::{self, NewTask, Task, TaskFilter as StoreFilter, TaskId, TaskPatch},
};
use serde_json::json;

/// Longest title accepted (characters).
pub(crate) const TITLE_MAX_CHARS: usize = 300;
/// Longest notes accepted (characters).
pub(crate) const NOTES_MAX_CHARS: usize = 10_000;
/// Longest assignee accepted (characters).
pub(crate) const ASSIGNEE_MAX_CHARS: usize = 200;

/// Where a task stands.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
#[graphql(remote = "crm_store::tasks::TaskStatus")]
pub(crate) enum TaskStatus {
    /// To do.
    Open,
    /// Done (`completedAt` says when).
    Done,
    /// Not needed any more.
    Canceled,
}

/// A follow-up for a person: call the lead back, send the offer.
#[derive(Debug)]
pub(crate) struct TaskNode(pub(crate) Task);

#[Object(name = "Task")]
impl TaskNode {
    /// Identity (UUID).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// What to do.
    async fn title(&self) -> &str {
        &self.0.title
    }
    /// Details.
    async fn notes(&self) -> Option<&str> {
        self.0.notes.as_deref()
    }
    /// Due.
    async fn due_at(&self) -> Option<DateTime<Utc>> {
        self.0.due_at
    }
    /// Who does it (a user name).
    async fn assignee(&self) -> Option<&str> {
        self.0.assignee.as_deref()
    }
    /// Where it stands.
    async fn status(&self) -> TaskStatus {
        self.0.status.into()
    }
    /// The voice call it follows up, when a call's end created it.
    async fn call_id(&self) -> Option<ID> {
        self.0.call_id.map(|c| ID(c.to_string()))
    }
    /// Who created it (a user, a key, `pipeline`).
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    /// Created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// When it became done; null while it is not done.
    async fn completed_at(&self) -> Option<DateTime<Utc>> {
        self.0.completed_at
    }
    /// The customer's id.
    async fn customer_id(&self) -> ID {
        ID(self.0.customer_id.to_string())
    }
    /// The customer it is about (batched across a response).
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<CustomerNode> {
        let loader = ctx.data::<CustomersLoader>()?;
        let customer = loader
            .load_one(self.0.customer_id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| {
                ApiError::Internal(format!(
                    "task {} has no customer {}",
                    self.0.id, self.0.customer_id
                ))
            })?;
        Ok(CustomerNode(customer))
    }
}

/// A page of tasks.
#[derive(SimpleObject, Debug)]
pub(crate) struct TaskConnection {
    /// The tasks, newest first.
    nodes: Vec<TaskNode>,
    /// Paging.
    page_info: PageInfo,
}

/// Which tasks to list.
#[derive(InputObject, Debug, Default)]
pub(crate) struct TaskFilter {
    /// Of one customer.
    customer_id: Option<ID>,
    /// Assigned to this user.
    assignee: Option<String>,
    /// In this status.
    status: Option<TaskStatus>,
    /// Due before this time (tasks without a due date are left out).
    due_before: Option<DateTime<Utc>>,
}

/// A new task; it starts open.
#[derive(InputObject, Debug)]
pub(crate) struct CreateTaskInput {
    /// The customer (must exist, not be deleted, and be visible to the caller).
    customer_id: ID,
    /// What to do (1 to 300 characters).
    title: String,
    /// Details (at most 10000 characters).
    notes: Option<String>,
    /// Due.
    due_at: Option<DateTime<Utc>>,
    /// Who does it (at most 200 characters).
    assignee: Option<String>,
}

/// A partial update: absent fields stay, `null` clears, a value sets.
#[derive(InputObject, Debug, Default)]
pub(crate) struct UpdateTaskInput {
    /// What to do (cannot be cleared).
    title: Option<String>,
    /// Details.
    notes: MaybeUndefined<String>,
    /// Due.
    due_at: MaybeUndefined<DateTime<Utc>>,
    /// Who does it.
    assignee: MaybeUndefined<String>,
    /// Where it stands (DONE sets `completedAt`, leaving DONE clears it).
    status: Option<TaskStatus>,
}

/// A task's audited fields.
fn task_fields(t: &Task) -> Fields {
    vec![
        ("customer_id", json!(t.customer_id.to_string())),
        ("title", json!(t.title)),
        ("notes", json!(t.notes)),
        ("due_at", json!(t.due_at)),
        ("assignee", json!(t.assignee)),
        ("status", json!(t.status.as_str())),
        ("call_id", json!(t.call_id.map(|c| c.to_string()))),
        ("completed_at", json!(t.completed_at)),
    ]
}

/// The audit entry of a change to a task (`before` absent for a create, `after` for a delete).
fn task_entry(
    api: &ApiContext,
    auditor: &Auditor,
    action: &str,
    before: Option<&Task>,
    after: Option<&Task>,
) -> Option<NewAuditEntry> {
    let id = after.or(before)?.id.to_string();
    let changed = changes(
        before.map(task_fields).as_ref(),
        after.map(task_fields).as_ref(),
        &api.redact,
    );
    Some(auditor.entry(action, "task", id, changed))
}

fn not_found(id: TaskId) -> ApiError {
    ApiError::NotFound {
        entity: "task",
        id: id.to_string(),
    }
}

/// A task whose customer the caller may see; `NOT_FOUND` otherwise.
async fn visible_task(ctx: &Context<'_>, id: TaskId) -> Result<Task, ApiError> {
    let api = ctx
        .data::<ApiContext>()
        .map_err(|e| ApiError::Internal(e.message))?;
    let task = tasks::get(&api.db, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    visible_customer(ctx, task.customer_id)
        .await
        .map_err(|_| not_found(id))?;
    Ok(task)
}

/// Task queries.
#[derive(Default, Debug)]
pub(crate) struct TaskQuery;

#[Object]
impl TaskQuery {
    /// Tasks, newest first, of the customers the caller may see.
    #[graphql(
        complexity = "usize::try_from(first.unwrap_or(20)).unwrap_or(1).clamp(1, 1000).saturating_mul(child_complexity)"
    )]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        filter: Option<TaskFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<TaskConnection> {
        let api = ctx.data::<ApiContext>()?;
        let limit = first_or_default(first, api.pages)?;
        let filter = filter.unwrap_or_default();
        let before = after
            .map(|raw| {
                raw.parse::<TaskId>()
                    .map_err(|_| invalid("after", "invalid_cursor", "after: not a cursor of tasks"))
            })
            .transpose()?;
        let store_filter = StoreFilter {
            customer_id: filter
                .customer_id
                .as_ref()
                .map(|id| parse_id::<CustomerId>("filter.customerId", id))
                .transpose()?,
            assignee: filter.assignee,
            status: filter.status.map(Into::into),
            due_before: filter.due_before,
            scope: customer_scope(ctx)?,
        };
        let found = tasks::list(&api.db, &store_filter, before, limit)
            .await
            .map_err(ApiError::from)?;
        let items = found.into_iter().map(|t| (t.id.to_string(), t)).collect();
        let page = Page::forward(items, limit, before.is_some());
        let page_info = PageInfo::of(&page);
        Ok(TaskConnection {
            nodes: page.items.into_iter().map(|(_, t)| TaskNode(t)).collect(),
            page_info,
        })
    }

    /// One task; `NOT_FOUND` if it does not exist or its customer is not visible.
    async fn task(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<TaskNode> {
        let id: TaskId = parse_id("id", &id)?;
        Ok(TaskNode(visible_task(ctx, id).await?))
    }
}

/// Task mutations.
#[derive(Default, Debug)]
pub(crate) struct TaskMutation;

#[Object]
impl TaskMutation {
    /// Creates an open task for a live customer. `NOT_FOUND` if the customer does not exist,
    /// is deleted or is not visible to the caller.
    async fn create_task(
        &self,
        ctx: &Context<'_>,
        input: CreateTaskInput,
    ) -> async_graphql::Result<TaskNode> {
        let api = ctx.data::<ApiContext>()?;
        let customer_id: CustomerId = parse_id("input.customerId", &input.customer_id)?;
        visible_customer(ctx, customer_id).await?;
        let mut errors = ValidationErrors::default();
        let title = errors.check(required_text("title", &input.title, TITLE_MAX_CHARS));
        let notes = errors.check(optional_text(
            "notes",
            input.notes.as_deref(),
            NOTES_MAX_CHARS,
        ));
        let assignee = errors.check(optional_text(
            "assignee",
            input.assignee.as_deref(),
            ASSIGNEE_MAX_CHARS,
        ));
        let (Some(title), Some(notes), Some(assignee)) = (title, notes, assignee) else {
            return Err(ApiError::validation("input", errors).into());
        };
        let auditor = Auditor::of(ctx)?;
        let new = NewTask {
            id: TaskId::new(),
            customer_id,
            title,
            notes,
            due_at: input.due_at,
            assignee,
            call_id: None,
            created_by: auditor.actor(),
        };
        let now = api.clock.now();
        let entry = task_entry(api, &auditor, "task.create", None, Some(&new.task(now)));
        let task = tasks::insert(&api.db, &new, entry, now)
            .await
            .map_err(|e| ApiError::from_store("input", e))?;
        tracing::info!(task_id = %task.id, customer_id = %customer_id, "Task created.");
        Ok(TaskNode(task))
    }

    /// Changes the given fields of a task. Setting the status to DONE records `completedAt`;
    /// moving it away from DONE clears it.
    async fn update_task(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateTaskInput,
    ) -> async_graphql::Result<TaskNode> {
        let api = ctx.data::<ApiContext>()?;
        let id: TaskId = parse_id("id", &id)?;
        visible_task(ctx, id).await?;
        let mut errors = ValidationErrors::default();
        let title = input
            .title
            .map(|t| errors.check(required_text("title", &t, TITLE_MAX_CHARS)));
        let notes = errors.check(text_change("notes", change(input.notes), NOTES_MAX_CHARS));
        let assignee = errors.check(text_change(
            "assignee",
            change(input.assignee),
            ASSIGNEE_MAX_CHARS,
        ));
        if !errors.is_empty() {
            return Err(ApiError::validation("input", errors).into());
        }
        let patch = TaskPatch {
            title: title.flatten(),
            notes: notes.unwrap_or_default(),
            due_at: change(input.due_at),
            assignee: assignee.unwrap_or_default(),
            status: input.status.map(Into::into),
        };
        let auditor = Auditor::of(ctx)?;
        let task = tasks::update(
            &api.db,
            id,
            &patch,
            |before, after| task_entry(api, &auditor, "task.update", Some(before), Some(after)),
            api.clock.now(),
        )
        .await
        .map_err(|e| ApiError::from_store("input", e))?
        .ok_or_else(|| not_found(id))?;
        Ok(TaskNode(task))
    }

    /// Deletes a task for good. `NOT_FOUND` if it does not exist or its customer is not
    /// visible; false only if it vanished concurrently.
    async fn delete_task(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let api = ctx.data::<ApiContext>()?;
        let id: TaskId = parse_id("id", &id)?;
        let before = visible_task(ctx, id).await?;
        let entry = task_entry(api, &Auditor::of(ctx)?, "task.delete", Some(&before), None);
        Ok(tasks::delete(&api.db, id, entry)
            .await
            .map_err(ApiError::from)?)
    }
}
