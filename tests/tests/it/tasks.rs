//! Tasks through GraphQL: create, list with filters and pages, update (done and reopened),
//! delete, bad input, row-level visibility, the audit log; and the store's one task per call.

use chrono::Duration;
use crm_domain::{CallId, Clock as _, CustomerId, Role};
use crm_store::{
    StoreError,
    tasks::{self, NewTask, TaskId},
};
use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    create_list_filter_and_page,
    complete_reopen_and_delete,
    bad_task_input_is_named,
    sales_only_reach_tasks_of_their_customers,
    task_changes_are_audited,
    one_task_per_call,
);

const FIELDS: &str = "id title notes dueAt assignee status callId createdBy createdAt updatedAt \
                      completedAt customerId customer { name }";

const LIST: &str = "query($f: TaskFilter, $first: Int, $after: String) { \
     tasks(filter: $f, first: $first, after: $after) { nodes { id title } \
     pageInfo { hasNextPage hasPreviousPage endCursor } } }";

async fn create_task(app: &TestApp, input: Value) -> Value {
    app.graphql_ok(
        &format!("mutation($i: CreateTaskInput!) {{ createTask(input: $i) {{ {FIELDS} }} }}"),
        json!({ "i": input }),
    )
    .await["createTask"]
        .clone()
}

/// The titles of the tasks `filter` lists (first page, default size).
async fn titles(app: &TestApp, filter: Value) -> Vec<String> {
    app.graphql_ok(LIST, json!({ "f": filter })).await["tasks"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap().to_owned())
        .collect()
}

async fn create_list_filter_and_page(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let lena = app
        .create_customer(json!({ "name": "Lena", "email": "lena@example.com" }))
        .await;
    let tarik = app
        .create_customer(json!({ "name": "Tarik", "email": "tarik@example.com" }))
        .await;
    let first = create_task(
        &app,
        json!({ "customerId": lena, "title": "  Call back ", "notes": "Asked about prices",
                "dueAt": "2026-11-26T09:00:00Z", "assignee": "sam" }),
    )
    .await;
    assert_eq!(first["title"], "Call back", "trimmed");
    assert_eq!(first["status"], "OPEN");
    assert_eq!(first["dueAt"], "2026-11-26T09:00:00+00:00");
    assert_eq!(first["createdBy"], "admin-test");
    assert_eq!(first["createdAt"], "2026-11-25T12:00:00+00:00");
    assert_eq!(first["completedAt"], Value::Null);
    assert_eq!(first["callId"], Value::Null);
    assert_eq!(first["customerId"], lena.as_str());
    assert_eq!(first["customer"]["name"], "Lena");
    create_task(
        &app,
        json!({ "customerId": lena, "title": "Send offer", "dueAt": "2026-12-01T09:00:00Z", "assignee": "olga" }),
    )
    .await;
    create_task(
        &app,
        json!({ "customerId": tarik, "title": "Check in", "assignee": "sam", "notes": "" }),
    )
    .await;

    let id = first["id"].as_str().unwrap();
    let one = app
        .graphql_ok(
            &format!("query($id: ID!) {{ task(id: $id) {{ {FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await;
    assert_eq!(one["task"], first);

    assert_eq!(
        titles(&app, Value::Null).await,
        ["Check in", "Send offer", "Call back"],
        "newest first"
    );
    assert_eq!(
        titles(&app, json!({ "assignee": "sam" })).await,
        ["Check in", "Call back"]
    );
    assert_eq!(
        titles(&app, json!({ "dueBefore": "2026-11-27T00:00:00Z" })).await,
        ["Call back"],
        "tasks without a due date are not due"
    );
    assert_eq!(
        titles(&app, json!({ "customerId": tarik })).await,
        ["Check in"]
    );
    assert_eq!(
        titles(&app, json!({ "status": "OPEN", "assignee": "olga" })).await,
        ["Send offer"]
    );
    assert!(titles(&app, json!({ "status": "DONE" })).await.is_empty());

    let page = app.graphql_ok(LIST, json!({ "first": 2 })).await["tasks"].clone();
    assert_eq!(page["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    assert_eq!(page["pageInfo"]["hasPreviousPage"], false);
    let rest = app
        .graphql_ok(
            LIST,
            json!({ "first": 2, "after": page["pageInfo"]["endCursor"] }),
        )
        .await["tasks"]
        .clone();
    assert_eq!(rest["nodes"], json!([{ "id": id, "title": "Call back" }]));
    assert_eq!(rest["pageInfo"]["hasNextPage"], false);
    assert_eq!(rest["pageInfo"]["hasPreviousPage"], true);

    let bad_cursor = app.graphql(LIST, json!({ "after": "nope" })).await;
    assert_eq!(error_code(&bad_cursor), "VALIDATION_FAILED");
    assert_eq!(bad_cursor["errors"][0]["extensions"]["field"], "after");
    let too_many = app.graphql(LIST, json!({ "first": 100_000 })).await;
    assert_eq!(error_code(&too_many), "VALIDATION_FAILED");
}

const UPDATE: &str = "mutation($id: ID!, $i: UpdateTaskInput!) { updateTask(id: $id, input: $i) { \
     title notes dueAt assignee status updatedAt completedAt } }";

async fn complete_reopen_and_delete(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let customer = app
        .create_customer(json!({ "name": "Sara", "email": "sara@example.com" }))
        .await;
    let task = create_task(
        &app,
        json!({ "customerId": customer, "title": "Call back", "notes": "After 5 pm", "assignee": "sam",
                "dueAt": "2026-11-26T17:00:00Z" }),
    )
    .await;
    let id = task["id"].as_str().unwrap();

    app.clock.advance(Duration::hours(1));
    let done = app
        .graphql_ok(UPDATE, json!({ "id": id, "i": { "status": "DONE" } }))
        .await["updateTask"]
        .clone();
    assert_eq!(
        done,
        json!({ "title": "Call back", "notes": "After 5 pm", "dueAt": "2026-11-26T17:00:00+00:00",
                "assignee": "sam", "status": "DONE", "updatedAt": "2026-11-25T13:00:00+00:00",
                "completedAt": "2026-11-25T13:00:00+00:00" })
    );
    assert_eq!(
        titles(&app, json!({ "status": "DONE" })).await,
        ["Call back"]
    );
    assert!(titles(&app, json!({ "status": "OPEN" })).await.is_empty());

    app.clock.advance(Duration::hours(1));
    let reopened = app
        .graphql_ok(
            UPDATE,
            json!({ "id": id, "i": { "status": "OPEN", "notes": null, "dueAt": null, "assignee": "olga",
                                     "title": " Call back again " } }),
        )
        .await["updateTask"]
        .clone();
    assert_eq!(
        reopened,
        json!({ "title": "Call back again", "notes": null, "dueAt": null, "assignee": "olga",
                "status": "OPEN", "updatedAt": "2026-11-25T14:00:00+00:00", "completedAt": null })
    );
    let canceled = app
        .graphql_ok(UPDATE, json!({ "id": id, "i": { "status": "CANCELED" } }))
        .await["updateTask"]
        .clone();
    assert_eq!(canceled["status"], "CANCELED");
    assert_eq!(canceled["completedAt"], Value::Null);

    let deleted = app
        .graphql_ok(
            "mutation($id: ID!) { deleteTask(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(deleted["deleteTask"], true);
    let gone = app
        .graphql(
            "query($id: ID!) { task(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_code(&gone), "NOT_FOUND");
    let again = app
        .graphql(
            "mutation($id: ID!) { deleteTask(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_code(&again), "NOT_FOUND");
    let update_gone = app
        .graphql(UPDATE, json!({ "id": id, "i": { "status": "DONE" } }))
        .await;
    assert_eq!(error_code(&update_gone), "NOT_FOUND");
    assert!(titles(&app, Value::Null).await.is_empty());

    // Tasks need a live customer.
    let unknown = app
        .graphql(
            "mutation($i: CreateTaskInput!) { createTask(input: $i) { id } }",
            json!({ "i": { "customerId": CustomerId::new().to_string(), "title": "x" } }),
        )
        .await;
    assert_eq!(error_code(&unknown), "NOT_FOUND");
    app.graphql_ok(
        "mutation($id: ID!) { deleteCustomer(id: $id) { id } }",
        json!({ "id": customer }),
    )
    .await;
    let on_deleted = app
        .graphql(
            "mutation($i: CreateTaskInput!) { createTask(input: $i) { id } }",
            json!({ "i": { "customerId": customer, "title": "x" } }),
        )
        .await;
    assert_eq!(error_code(&on_deleted), "NOT_FOUND");
}

/// `(field, code)` of every failing field of a `VALIDATION_FAILED` response.
fn failed_fields(response: &Value) -> Vec<(String, String)> {
    assert_eq!(error_code(response), "VALIDATION_FAILED", "{response}");
    response["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_owned(),
                f["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn bad_task_input_is_named(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let customer = app
        .create_customer(json!({ "name": "Mia", "email": "mia@example.com" }))
        .await;
    let create = "mutation($i: CreateTaskInput!) { createTask(input: $i) { id title } }";

    let empty = app
        .graphql(
            create,
            json!({ "i": { "customerId": customer, "title": "  " } }),
        )
        .await;
    assert_eq!(empty["errors"][0]["extensions"]["field"], "input.title");
    assert_eq!(
        failed_fields(&empty),
        [("input.title".to_owned(), "required".to_owned())]
    );

    let long = app
        .graphql(
            create,
            json!({ "i": { "customerId": customer, "title": "t".repeat(301), "notes": "n".repeat(10_001),
                           "assignee": "a".repeat(201) } }),
        )
        .await;
    assert_eq!(
        failed_fields(&long),
        [
            ("input.title".to_owned(), "too_long".to_owned()),
            ("input.notes".to_owned(), "too_long".to_owned()),
            ("input.assignee".to_owned(), "too_long".to_owned()),
        ]
    );

    let bad_id = app
        .graphql(create, json!({ "i": { "customerId": "42", "title": "x" } }))
        .await;
    assert_eq!(
        failed_fields(&bad_id),
        [("input.customerId".to_owned(), "invalid_id".to_owned())]
    );
    assert!(titles(&app, Value::Null).await.is_empty(), "nothing stored");

    // The limits themselves are fine.
    let longest = app
        .graphql_ok(
            create,
            json!({ "i": { "customerId": customer, "title": "t".repeat(300), "notes": "n".repeat(10_000),
                           "assignee": "a".repeat(200) } }),
        )
        .await;
    let id = longest["createTask"]["id"].as_str().unwrap();

    let cleared_title = app
        .graphql(UPDATE, json!({ "id": id, "i": { "title": "" } }))
        .await;
    assert_eq!(
        failed_fields(&cleared_title),
        [("input.title".to_owned(), "required".to_owned())]
    );
    let long_notes = app
        .graphql(
            UPDATE,
            json!({ "id": id, "i": { "notes": "n".repeat(10_001), "assignee": "a".repeat(201) } }),
        )
        .await;
    assert_eq!(
        failed_fields(&long_notes),
        [
            ("input.notes".to_owned(), "too_long".to_owned()),
            ("input.assignee".to_owned(), "too_long".to_owned()),
        ]
    );
    let bad_task_id = app.graphql(UPDATE, json!({ "id": "nope", "i": {} })).await;
    assert_eq!(
        failed_fields(&bad_task_id),
        [("id".to_owned(), "invalid_id".to_owned())]
    );
}

async fn sales_only_reach_tasks_of_their_customers(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let sam = app.token_for(Role::Sales, "sam");
    let olgas = app
        .create_customer(
            json!({ "name": "Olga's lead", "owner": "olga", "email": "olgaslead@example.com" }),
        )
        .await;
    let sams = app
        .create_customer(
            json!({ "name": "Sam's lead", "owner": "sam", "email": "samslead@example.com" }),
        )
        .await;
    let nobodys = app
        .create_customer(json!({ "name": "Open lead", "email": "openlead@example.com" }))
        .await;
    let hidden = create_task(&app, json!({ "customerId": olgas, "title": "Olga's task" })).await;
    let hidden = hidden["id"].as_str().unwrap();
    create_task(&app, json!({ "customerId": sams, "title": "Sam's task" })).await;
    create_task(&app, json!({ "customerId": nobodys, "title": "Open task" })).await;

    let listed = app.graphql_as(&sam, LIST, json!({})).await;
    let listed: Vec<&str> = listed["data"]["tasks"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["Open task", "Sam's task"]);
    let by_customer = app
        .graphql_as(&sam, LIST, json!({ "f": { "customerId": olgas } }))
        .await;
    assert_eq!(by_customer["data"]["tasks"]["nodes"], json!([]));

    let read = app
        .graphql_as(
            &sam,
            "query($id: ID!) { task(id: $id) { id } }",
            json!({ "id": hidden }),
        )
        .await;
    assert_eq!(error_code(&read), "NOT_FOUND");
    let update = app
        .graphql_as(
            &sam,
            UPDATE,
            json!({ "id": hidden, "i": { "status": "DONE" } }),
        )
        .await;
    assert_eq!(error_code(&update), "NOT_FOUND");
    let delete = app
        .graphql_as(
            &sam,
            "mutation($id: ID!) { deleteTask(id: $id) }",
            json!({ "id": hidden }),
        )
        .await;
    assert_eq!(error_code(&delete), "NOT_FOUND");
    let create = app
        .graphql_as(
            &sam,
            "mutation($i: CreateTaskInput!) { createTask(input: $i) { id } }",
            json!({ "i": { "customerId": olgas, "title": "Sneaky" } }),
        )
        .await;
    assert_eq!(error_code(&create), "NOT_FOUND");
    let untouched = app
        .graphql_ok(
            "query($id: ID!) { task(id: $id) { status } }",
            json!({ "id": hidden }),
        )
        .await;
    assert_eq!(untouched["task"]["status"], "OPEN");
    assert_eq!(
        titles(&app, Value::Null).await,
        ["Open task", "Sam's task", "Olga's task"],
        "the admin sees all, and nothing was added"
    );

    // Sam works on the tasks of customers he owns or nobody owns.
    let created = app
        .graphql_as(
            &sam,
            "mutation($i: CreateTaskInput!) { createTask(input: $i) { id createdBy } }",
            json!({ "i": { "customerId": nobodys, "title": "Follow up" } }),
        )
        .await;
    assert_eq!(created["data"]["createTask"]["createdBy"], "sam");
    let id = created["data"]["createTask"]["id"].as_str().unwrap();
    let done = app
        .graphql_as(&sam, UPDATE, json!({ "id": id, "i": { "status": "DONE" } }))
        .await;
    assert_eq!(done["data"]["updateTask"]["status"], "DONE", "{done}");

    // The policy: viewers read, integrations do not delete.
    let viewer = app.token_for(Role::Viewer, "vera");
    let read = app.graphql_as(&viewer, LIST, json!({})).await;
    assert_eq!(read["data"]["tasks"]["nodes"].as_array().unwrap().len(), 4);
    let write = app
        .graphql_as(&viewer, UPDATE, json!({ "id": id, "i": { "title": "x" } }))
        .await;
    assert_eq!(error_code(&write), "FORBIDDEN");
    let integration = app.token_for(Role::Integration, "zapier");
    let delete = app
        .graphql_as(
            &integration,
            "mutation($id: ID!) { deleteTask(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_code(&delete), "FORBIDDEN");
}

async fn task_changes_are_audited(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let sam = app.token_for(Role::Sales, "sam");
    let customer = app
        .create_customer(json!({ "name": "Ivo", "email": "ivo@example.com" }))
        .await;
    let created = app
        .graphql_as(
            &sam,
            "mutation($i: CreateTaskInput!) { createTask(input: $i) { id } }",
            json!({ "i": { "customerId": customer, "title": "Call back", "notes": "private" } }),
        )
        .await;
    let id = created["data"]["createTask"]["id"].as_str().unwrap();
    app.graphql_as(
        &sam,
        UPDATE,
        json!({ "id": id, "i": { "status": "DONE", "title": "Called back" } }),
    )
    .await;
    // A change that changes nothing leaves no entry.
    app.graphql_as(&sam, UPDATE, json!({ "id": id, "i": { "status": "DONE" } }))
        .await;
    app.graphql_ok(
        "mutation($id: ID!) { deleteTask(id: $id) }",
        json!({ "id": id }),
    )
    .await;

    let log = app
        .graphql_ok(
            "query($t: String) { auditLog(filter: { targetId: $t }) { nodes { actor action targetType changes } } }",
            json!({ "t": id }),
        )
        .await;
    let nodes = log["auditLog"]["nodes"].as_array().unwrap();
    let actions: Vec<&str> = nodes
        .iter()
        .map(|n| n["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["task.delete", "task.update", "task.create"],
        "newest first"
    );
    assert!(nodes.iter().all(|n| n["targetType"] == "task"));
    assert_eq!(nodes[2]["actor"], "sam");
    assert_eq!(nodes[0]["actor"], "admin-test");
    let create = &nodes[2]["changes"];
    assert_eq!(create["title"], json!({ "after": "Call back" }));
    assert_eq!(create["status"], json!({ "after": "open" }));
    assert_eq!(
        create["notes"],
        json!({ "after": "[redacted]" }),
        "notes are redacted by default"
    );
    let update = &nodes[1]["changes"];
    assert_eq!(
        update["title"],
        json!({ "before": "Call back", "after": "Called back" })
    );
    assert_eq!(
        update["status"],
        json!({ "before": "open", "after": "done" })
    );
    assert_eq!(update["completed_at"]["before"], Value::Null);
    assert!(update["completed_at"]["after"].is_string(), "{update}");
    assert!(update.get("notes").is_none(), "only what changed");
    assert_eq!(
        nodes[0]["changes"]["title"],
        json!({ "before": "Called back" })
    );
    assert!(!log.to_string().contains("private"));
}

async fn one_task_per_call(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let customer: CustomerId = app
        .create_customer(json!({ "name": "Nora", "email": "nora@example.com" }))
        .await
        .parse()
        .unwrap();
    let call = CallId::new();
    let follow_up = |title: &str| NewTask {
        id: TaskId::new(),
        customer_id: customer,
        title: title.to_owned(),
        notes: None,
        due_at: None,
        assignee: None,
        call_id: Some(call),
        created_by: "pipeline".into(),
    };
    let now = app.clock.now();
    let first = tasks::insert(&app.db, &follow_up("Call back"), None, now)
        .await
        .unwrap();
    assert_eq!(first.call_id, Some(call));
    let replayed = tasks::insert(&app.db, &follow_up("Call back (replayed)"), None, now)
        .await
        .unwrap();
    assert_eq!(
        replayed, first,
        "a replayed follow-up returns the task it made"
    );
    assert_eq!(
        tasks::by_call(&app.db, call).await.unwrap(),
        Some(first.clone())
    );
    let listed = app
        .graphql_ok("{ tasks { nodes { id callId } } }", json!({}))
        .await;
    assert_eq!(
        listed["tasks"]["nodes"],
        json!([{ "id": first.id.to_string(), "callId": call.to_string() }])
    );

    let orphan = NewTask {
        customer_id: CustomerId::new(),
        call_id: None,
        ..follow_up("Nobody")
    };
    let missing = tasks::insert(&app.db, &orphan, None, now).await;
    assert!(
        matches!(
            missing,
            Err(StoreError::NotFound {
                entity: "customer",
                ..
            })
        ),
        "{missing:?}"
    );
}
