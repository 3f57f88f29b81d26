//! Duplicates: fuzzy candidates with reasons (never merged silently), and merges by a
//! survivorship rule that move the timeline and are audited.

use crm_domain::{Clock as _, Role};
use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    look_alikes_are_found_across_spellings_and_scripts,
    a_merge_moves_everything_to_the_primary,
    survivorship_rules_pick_each_fields_value,
    the_configured_threshold_and_survivorship_are_the_defaults,
);

const FIND: &str =
    "query($id: ID!) { findDuplicates(customerId: $id) { score reasons customer { id name } } }";
const MERGE: &str = "mutation($p: ID!, $d: [ID!]!, $dry: Boolean, $s: Survivorship) { \
    mergeCustomers(primaryId: $p, duplicateIds: $d, dryRun: $dry, survivorship: $s) { \
    dryRun merged movedInteractions movedHistory customer { id name email phone company tags } } }";

async fn look_alikes_are_found_across_spellings_and_scripts(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let jurgen = app
        .create_customer(
            json!({ "name": "Jürgen Müller", "email": "j@firma.de", "company": "Müller GmbH" }),
        )
        .await;
    let mueller = app
        .create_customer(
            json!({ "name": "Mueller, Jürgen", "email": "jm@firma.de", "company": "Mueller" }),
        )
        .await;
    app.create_customer(
        json!({ "name": "Anna Schmidt", "email": "anna@firma.de", "company": "Müller GmbH" }),
    )
    .await;
    let cyrillic = app
        .create_customer(json!({ "name": "Иван Петровић", "phone": "+381 64 1234567" }))
        .await;
    let latin = app
        .create_customer(json!({ "name": "Ivan Petrović", "email": "ivan@firma.rs" }))
        .await;

    let found = app.graphql_ok(FIND, json!({ "id": jurgen })).await;
    let found = found["findDuplicates"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["customer"]["id"], mueller.as_str());
    assert!(found[0]["score"].as_f64().unwrap() >= 0.99, "{found:#?}");
    let reasons: Vec<&str> = found[0]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("name ")),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"same email domain firma.de"),
        "{reasons:?}"
    );

    let found = app.graphql_ok(FIND, json!({ "id": cyrillic })).await;
    assert_eq!(found["findDuplicates"][0]["customer"]["id"], latin.as_str());

    // A lower threshold than the configured one (0.88) lets weaker candidates in, each scored
    // at or above it; a higher one leaves them out again.
    let with = |threshold: f64| {
        let (app, jurgen) = (&app, jurgen.clone());
        async move {
            app.graphql_ok(
                "query($id: ID!, $t: Float) { findDuplicates(customerId: $id, threshold: $t) \
                 { score customer { name } } }",
                json!({ "id": jurgen, "t": threshold }),
            )
            .await["findDuplicates"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let loose = with(0.3).await;
    assert!(loose.len() > 1, "{loose:#?}");
    assert!(
        loose.iter().all(|c| c["score"].as_f64().unwrap() >= 0.3),
        "{loose:#?}"
    );
    assert!(
        loose
            .iter()
            .any(|c| c["customer"]["name"] == "Anna Schmidt"),
        "the same company, another name: {loose:#?}"
    );
    let strict = with(0.7).await;
    assert_eq!(strict.len(), 1, "Anna's 0.62 is below 0.7: {strict:#?}");
    assert_eq!(strict[0]["customer"]["name"], "Mueller, Jürgen");

    // Finding merges nothing.
    let all = app
        .graphql_ok("{ customers { nodes { id } } }", json!({}))
        .await;
    assert_eq!(all["customers"]["nodes"].as_array().unwrap().len(), 5);
}

async fn a_merge_moves_everything_to_the_primary(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let primary = app
        .create_customer(
            json!({ "name": "Jürgen Müller", "email": "j@firma.de", "tags": ["messe"] }),
        )
        .await;
    let duplicate = app
        .create_customer(
            json!({ "name": "J. Mueller", "email": "jm@firma.de", "phone": "030 123456",
                                 "company": "Müller GmbH", "tags": ["vip"], "language": "de",
                                 "consentCall": true, "consentEmail": true }),
        )
        .await;
    app.graphql_ok(
        "mutation($i: LogInteractionInput!) { logInteraction(input: $i) { id } }",
        json!({ "i": { "customerId": duplicate, "kind": "CALL", "outcome": "interested" } }),
    )
    .await;
    app.run_jobs().await;

    let dry = app
        .graphql_ok(
            MERGE,
            json!({ "p": primary, "d": [duplicate], "dry": true }),
        )
        .await;
    let preview = &dry["mergeCustomers"]["customer"];
    assert_eq!(preview["phone"], "+4930123456", "filled from the duplicate");
    assert_eq!(
        preview["email"], "j@firma.de",
        "the primary's own value stays"
    );
    assert_eq!(preview["tags"], json!(["messe", "vip"]));
    let untouched = app
        .graphql_ok(
            "query($id: ID!) { customer(id: $id) { phone deletedAt } }",
            json!({ "id": duplicate }),
        )
        .await;
    assert!(
        untouched["customer"]["deletedAt"].is_null(),
        "a dry run changes nothing"
    );

    let sales = app.token_for(Role::Sales, "anna");
    let refused = app
        .graphql_as(&sales, MERGE, json!({ "p": primary, "d": [duplicate] }))
        .await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
    let itself = app
        .graphql(MERGE, json!({ "p": primary, "d": [primary] }))
        .await;
    assert_eq!(error_code(&itself), "VALIDATION_FAILED");

    // The duplicate's history beyond interactions: a call queued for next week, a task and
    // an email.
    let next_week = (app.clock.now() + chrono::Duration::days(7)).to_rfc3339();
    let queued = app
        .graphql_ok(
            "mutation($c: ID!, $at: DateTime) { enqueueCall(customerId: $c, notBefore: $at) { id } }",
            json!({ "c": duplicate, "at": next_week }),
        )
        .await["enqueueCall"]["id"]
        .clone();
    let task = app
        .graphql_ok(
            "mutation($c: ID!) { createTask(input: { customerId: $c, title: \"Rückruf\" }) { id } }",
            json!({ "c": duplicate }),
        )
        .await["createTask"]["id"]
        .clone();
    let email = app
        .graphql_ok(
            "mutation($c: ID!) { sendEmail(customerId: $c, template: \"nurture-1\") { id } }",
            json!({ "c": duplicate }),
        )
        .await["sendEmail"]["id"]
        .clone();

    // A third record whose pipeline run still waits for its qualify job.
    let waiting = app
        .create_customer(json!({ "name": "Jürgen M.", "phone": "030 654321" }))
        .await;
    let done = app
        .graphql_ok(MERGE, json!({ "p": primary, "d": [duplicate, waiting] }))
        .await;
    let result = &done["mergeCustomers"];
    assert_eq!(result["movedInteractions"], 1);
    let runs_query =
        "query($c: ID) { pipelineRuns(filter: {customerId: $c}) { nodes { id status } } }";
    let cancelled = |runs: &Value| -> Vec<Value> {
        runs["pipelineRuns"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "CANCELLED")
            .map(|r| r["id"].clone())
            .collect()
    };
    let runs = app.graphql_ok(runs_query, json!({ "c": primary })).await;
    let ended = cancelled(&runs);
    assert!(
        !ended.is_empty(),
        "the waiting run ended with the merge: {runs:#}"
    );
    // Its queued qualify job does not bring it back.
    app.run_jobs().await;
    let runs = app.graphql_ok(runs_query, json!({ "c": primary })).await;
    assert_eq!(cancelled(&runs), ended, "{runs:#}");
    assert!(
        result["movedHistory"].as_i64().unwrap() >= 5,
        "scores, runs, the call, the task and the email: {result:#}"
    );
    let history = app
        .graphql_ok(
            "query($p: ID!, $d: ID!) { \
             p: calls(filter: {customerId: $p}) { nodes { id status disposition reason } } \
             d: calls(filter: {customerId: $d}) { nodes { id } } \
             tasks(filter: {customerId: $p}) { nodes { id } } \
             emails(customerId: $p) { nodes { id } } }",
            json!({ "p": primary, "d": duplicate }),
        )
        .await;
    let call = history["p"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == queued)
        .unwrap_or_else(|| panic!("the queued call moved to the primary: {history:#}"));
    assert_eq!(
        (&call["status"], &call["disposition"]),
        (&json!("ENDED"), &json!("CANCELED")),
        "a call queued for a merged record is not placed: {call:#}"
    );
    assert_eq!(call["reason"], format!("merged into {primary}"));
    assert_eq!(history["d"]["nodes"], json!([]), "{history:#}");
    assert!(
        history["tasks"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == task),
        "{history:#}"
    );
    assert!(
        history["emails"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == email),
        "{history:#}"
    );
    let data = app
        .graphql_ok(
            "query($p: ID!, $d: ID!) { p: customer(id: $p) { phone company interactions { kind outcome } \
             score { score } } d: customer(id: $d) { email phone deletedAt } }",
            json!({ "p": primary, "d": duplicate }),
        )
        .await;
    assert_eq!(data["p"]["phone"], "+4930123456");
    assert_eq!(data["p"]["company"], "Müller GmbH");
    assert!(
        data["p"]["interactions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["kind"] == "CALL" && i["outcome"] == "interested"),
        "{data:#}"
    );
    assert!(!data["d"]["deletedAt"].is_null());
    assert!(
        data["d"]["email"].is_null() && data["d"]["phone"].is_null(),
        "freed for the primary"
    );

    let audit = app
        .graphql_ok(
            "query($id: String) { auditLog(filter: {targetId: $id}) { nodes { action changes } } }",
            json!({ "id": duplicate }),
        )
        .await;
    let merged_into = audit["auditLog"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["action"] == "customer.merged_into")
        .unwrap_or_else(|| panic!("{audit:#}"))
        .clone();
    assert_eq!(merged_into["changes"]["mergedInto"], primary.as_str());
    assert_eq!(
        merged_into["changes"]["email"], "[redacted]",
        "cleared, traced, redacted per config"
    );

    // Merging a customer that is gone fails cleanly.
    let again = app
        .graphql(MERGE, json!({ "p": primary, "d": [duplicate] }))
        .await;
    assert_eq!(error_code(&again), "NOT_FOUND");
}

/// The three survivorship rules on the same pair: KEEP_NON_EMPTY fills the primary's gaps,
/// NEWEST takes each field from the most recently changed record that has it, PRIMARY keeps
/// the primary as it is.
async fn survivorship_rules_pick_each_fields_value(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let primary = app
        .create_customer(json!({ "name": "Jürgen Müller", "email": "j@firma.de" }))
        .await;
    app.clock.advance(chrono::Duration::minutes(5));
    let duplicate = app
        .create_customer(json!({ "name": "J. Mueller", "email": "jm@firma.de",
                                 "phone": "030 123456", "company": "Müller GmbH" }))
        .await;
    let preview = |rule: &'static str| {
        let (app, primary, duplicate) = (&app, primary.clone(), duplicate.clone());
        async move {
            app.graphql_ok(
                MERGE,
                json!({ "p": primary, "d": [duplicate], "dry": true, "s": rule }),
            )
            .await["mergeCustomers"]["customer"]
                .clone()
        }
    };
    let fields = |c: &Value| {
        [
            c["name"].clone(),
            c["email"].clone(),
            c["phone"].clone(),
            c["company"].clone(),
        ]
    };
    assert_eq!(
        fields(&preview("KEEP_NON_EMPTY").await),
        [
            json!("Jürgen Müller"),
            json!("j@firma.de"),
            json!("+4930123456"),
            json!("Müller GmbH")
        ]
    );
    assert_eq!(
        fields(&preview("NEWEST").await),
        [
            json!("J. Mueller"),
            json!("jm@firma.de"),
            json!("+4930123456"),
            json!("Müller GmbH")
        ]
    );
    assert_eq!(
        fields(&preview("PRIMARY").await),
        [
            json!("Jürgen Müller"),
            json!("j@firma.de"),
            Value::Null,
            Value::Null
        ]
    );
}

/// `intake.duplicate_threshold` and `intake.survivorship` are what `findDuplicates` and
/// `mergeCustomers` use when the call names neither; an argument still overrides them.
async fn the_configured_threshold_and_survivorship_are_the_defaults(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.intake.duplicate_threshold = 0.6;
        c.intake.survivorship = crm_api::graphql::Survivorship::Newest;
    })
    .await;
    let jurgen = app
        .create_customer(
            json!({ "name": "Jürgen Müller", "email": "j@firma.de", "company": "Müller GmbH" }),
        )
        .await;
    app.clock.advance(chrono::Duration::minutes(5));
    let mueller = app
        .create_customer(json!({ "name": "Mueller, Jürgen", "email": "jm@firma.de",
                                 "company": "Mueller", "phone": "030 123456" }))
        .await;
    app.create_customer(
        json!({ "name": "Anna Schmidt", "email": "anna@firma.de", "company": "Müller GmbH" }),
    )
    .await;

    // Anna scores 0.62: below the default 0.88, above the configured 0.6.
    let found = app.graphql_ok(FIND, json!({ "id": jurgen })).await;
    let names: Vec<&str> = found["findDuplicates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["customer"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Mueller, Jürgen", "Anna Schmidt"], "{found:#?}");
    let strict = app
        .graphql_ok(
            "query($id: ID!) { findDuplicates(customerId: $id, threshold: 0.7) { score } }",
            json!({ "id": jurgen }),
        )
        .await;
    assert_eq!(strict["findDuplicates"].as_array().unwrap().len(), 1);

    // No rule named: NEWEST, as configured, takes the newer record's name and email.
    let merged = app
        .graphql_ok(MERGE, json!({ "p": jurgen, "d": [mueller], "dry": true }))
        .await;
    let customer = &merged["mergeCustomers"]["customer"];
    assert_eq!(customer["name"], "Mueller, Jürgen", "{merged:#?}");
    assert_eq!(customer["email"], "jm@firma.de");
    assert_eq!(customer["phone"], "+4930123456");
    let kept = app
        .graphql_ok(
            MERGE,
            json!({ "p": jurgen, "d": [mueller], "dry": true, "s": "KEEP_NON_EMPTY" }),
        )
        .await;
    assert_eq!(kept["mergeCustomers"]["customer"]["name"], "Jürgen Müller");
    assert_eq!(kept["mergeCustomers"]["customer"]["email"], "j@firma.de");
}
