//! Interactions through GraphQL: log, list, update, delete, and their bad inputs.

use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    log_list_update_delete,
    interactions_need_a_live_customer,
    bad_interaction_input_is_named,
    interactions_page_and_filter,
);

const LOG: &str = "mutation($i: LogInteractionInput!) { logInteraction(input: $i) { id kind direction subject outcome \
     occurredAt durationSeconds author customerId customer { name } } }";

async fn log_list_update_delete(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let customer = app
        .create_customer(json!({ "name": "Lena", "email": "lena@example.de" }))
        .await;
    let logged = app
        .graphql_ok(
            LOG,
            json!({ "i": { "customerId": customer, "kind": "CALL", "direction": "OUTBOUND", "subject": " Erstgespräch ",
                           "outcome": "interested", "durationSeconds": 180, "author": "voice-agent:de" } }),
        )
        .await["logInteraction"]
        .clone();
    assert_eq!(logged["kind"], "CALL");
    assert_eq!(logged["subject"], "Erstgespräch");
    assert_eq!(
        logged["occurredAt"], "2026-11-25T12:00:00+00:00",
        "defaults to now"
    );
    assert_eq!(logged["customer"]["name"], "Lena");
    let id = logged["id"].as_str().unwrap().to_owned();

    let nested = app
        .graphql_ok(
            "query($id: ID!) { customer(id: $id) { interactions { id outcome } } }",
            json!({ "id": customer }),
        )
        .await;
    assert_eq!(
        nested["customer"]["interactions"],
        json!([{ "id": id, "outcome": "interested" }])
    );

    let updated = app
        .graphql_ok(
            "mutation($id: ID!, $i: UpdateInteractionInput!) { updateInteraction(id: $id, input: $i) { subject outcome durationSeconds kind } }",
            json!({ "id": id, "i": { "outcome": "appointment", "subject": null } }),
        )
        .await;
    assert_eq!(
        updated["updateInteraction"],
        json!({ "subject": null, "outcome": "appointment", "durationSeconds": 180, "kind": "CALL" })
    );

    let deleted = app
        .graphql_ok(
            "mutation($id: ID!) { deleteInteraction(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(deleted["deleteInteraction"], id.as_str());
    let gone = app
        .graphql_ok(
            "query($id: ID!) { interaction(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(gone["interaction"], Value::Null);
    let again = app
        .graphql(
            "mutation($id: ID!) { deleteInteraction(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_code(&again), "NOT_FOUND");
}

async fn interactions_need_a_live_customer(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let unknown = app
        .graphql(LOG, json!({ "i": { "customerId": "01a21343-0759-77de-bfba-e0e752bc02cf", "kind": "NOTE" } }))
        .await;
    assert_eq!(error_code(&unknown), "NOT_FOUND");
    let customer = app
        .create_customer(json!({ "name": "Tarik", "phone": "+387 61 123 456" }))
        .await;
    app.graphql_ok(
        "mutation($id: ID!) { deleteCustomer(id: $id) { id } }",
        json!({ "id": customer }),
    )
    .await;
    let deleted = app
        .graphql(
            LOG,
            json!({ "i": { "customerId": customer, "kind": "NOTE" } }),
        )
        .await;
    assert_eq!(error_code(&deleted), "NOT_FOUND");
    let list = app
        .graphql_ok("{ interactions { nodes { id } } }", json!({}))
        .await;
    assert_eq!(list["interactions"]["nodes"], json!([]));
}

async fn bad_interaction_input_is_named(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let customer = app
        .create_customer(json!({ "name": "Sara", "email": "sara@example.com" }))
        .await;
    let response = app
        .graphql(LOG, json!({ "i": { "customerId": customer, "kind": "CALL", "durationSeconds": -5, "subject": "x".repeat(501) } }))
        .await;
    assert_eq!(error_code(&response), "VALIDATION_FAILED");
    let fields: Vec<&str> = response["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["input.subject", "input.durationSeconds"]);
    let bad_id = app
        .graphql(LOG, json!({ "i": { "customerId": "abc", "kind": "CALL" } }))
        .await;
    assert_eq!(
        bad_id["errors"][0]["extensions"]["field"],
        "input.customerId"
    );
    let bad_kind = app
        .graphql(
            LOG,
            json!({ "i": { "customerId": customer, "kind": "FAX" } }),
        )
        .await;
    assert_eq!(error_code(&bad_kind), "GRAPHQL_VALIDATION_FAILED");
}

async fn interactions_page_and_filter(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let a = app
        .create_customer(json!({ "name": "A", "email": "a@example.com" }))
        .await;
    let b = app
        .create_customer(json!({ "name": "B", "email": "b@example.com" }))
        .await;
    for n in 0..5 {
        let kind = if n % 2 == 0 { "CALL" } else { "EMAIL" };
        let at = format!("2026-11-2{n}T10:00:00Z");
        app.graphql_ok(LOG, json!({ "i": { "customerId": a, "kind": kind, "subject": format!("a{n}"), "occurredAt": at } })).await;
    }
    app.graphql_ok(
        LOG,
        json!({ "i": { "customerId": b, "kind": "MEETING", "subject": "b0" } }),
    )
    .await;
    let subjects = |v: &Value| -> Vec<String> {
        v["interactions"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["subject"].as_str().unwrap().to_owned())
            .collect()
    };
    let query = "query($f: InteractionFilter, $after: String) { interactions(filter: $f, first: 2, after: $after) { nodes { subject } pageInfo { hasNextPage endCursor } } }";
    let p1 = app
        .graphql_ok(query, json!({ "f": { "customerId": a } }))
        .await;
    assert_eq!(subjects(&p1), ["a4", "a3"], "newest first");
    let p2 = app.graphql_ok(query, json!({ "f": { "customerId": a }, "after": p1["interactions"]["pageInfo"]["endCursor"] })).await;
    assert_eq!(subjects(&p2), ["a2", "a1"]);
    let calls = app
        .graphql_ok(query, json!({ "f": { "customerId": a, "kind": "CALL" } }))
        .await;
    assert_eq!(subjects(&calls), ["a4", "a2"]);
    let window = app
        .graphql_ok(query, json!({ "f": { "occurredAfter": "2026-11-21T00:00:00Z", "occurredBefore": "2026-11-23T00:00:00Z" } }))
        .await;
    assert_eq!(subjects(&window), ["a2", "a1"]);
    let latest = app
        .graphql_ok(
            "query($id: ID!) { customer(id: $id) { interactions(first: 3) { subject } } }",
            json!({ "id": a }),
        )
        .await;
    let latest: Vec<&str> = latest["customer"]["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["subject"].as_str().unwrap())
        .collect();
    assert_eq!(latest, ["a4", "a3", "a2"]);
}
