//! The audit log: every mutation leaves an entry with actor, changes and request id; the hash
//! chain detects a changed or deleted entry.

use crm_domain::Role;
use crm_store::audit::{self, Verification};
use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use serde_json::json;

on_both_backends!(
    mutations_are_audited_and_the_chain_detects_tampering,
    concurrent_writers_keep_one_chain
);

async fn mutations_are_audited_and_the_chain_detects_tampering(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let ana = app.token_for(Role::Sales, "ana");
    let created = app
        .graphql_as(&ana, "mutation { createCustomer(input: { name: \"Ana\", email: \"ana@example.com\", company: \"A\" }) { id } }", json!({}))
        .await;
    let id = created["data"]["createCustomer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.graphql_as(&ana, "mutation($id: ID!) { updateCustomer(id: $id, input: { company: \"B\", email: \"ana@firma.de\" }) { id } }", json!({ "id": id }))
        .await;
    app.graphql_ok(
        "mutation($id: ID!) { deleteCustomer(id: $id) { id } }",
        json!({ "id": id }),
    )
    .await;
    // A refused mutation leaves no entry.
    let viewer = app.token_for(Role::Viewer, "vera");
    let refused = app
        .graphql_as(
            &viewer,
            "mutation($id: ID!) { restoreCustomer(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
    // Failed writes leave no entry: the entry commits or rolls back with the change.
    let duplicate = app.graphql("mutation { createCustomer(input: { name: \"Twin\", email: \"ana@firma.de\" }) { id } }", json!({})).await;
    assert_eq!(error_code(&duplicate), "DUPLICATE");
    let on_deleted = app
        .graphql(
            "mutation($id: ID!) { logInteraction(input: { customerId: $id, kind: NOTE }) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_code(&on_deleted), "NOT_FOUND");
    let again = app
        .graphql_ok(
            "mutation($id: ID!) { deleteCustomer(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        again["deleteCustomer"]["id"],
        id.as_str(),
        "deleting twice changes nothing and logs nothing"
    );

    let log = app
        .graphql_ok(
            "query($t: String) { auditLog(filter: { targetId: $t }) { nodes { seq actor actorKind action targetType changes requestId } } }",
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
        ["customer.delete", "customer.update", "customer.create"],
        "newest first"
    );
    assert_eq!(nodes[2]["actor"], "ana");
    assert_eq!(nodes[2]["actorKind"], "user");
    assert_eq!(nodes[0]["actor"], "admin-test");
    assert_eq!(
        nodes[1]["changes"],
        json!({
            "company": { "before": "A", "after": "B" },
            "email": { "before": "[redacted]", "after": "[redacted]" }
        })
    );
    assert!(
        nodes
            .iter()
            .all(|n| n["requestId"].as_str().is_some_and(|r| r.len() == 36)),
        "{nodes:?}"
    );
    assert!(
        !log.to_string().contains("ana@example.com"),
        "redacted values never appear"
    );

    // Only admins read the log.
    let denied = app
        .graphql_as(&ana, "{ auditLog { nodes { seq } } }", json!({}))
        .await;
    assert_eq!(error_code(&denied), "FORBIDDEN");

    assert_eq!(
        audit::verify(&app.db).await.unwrap(),
        Verification::Intact { entries: 3 }
    );
    app.db
        .execute_raw("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
        .await
        .unwrap();
    assert!(matches!(
        audit::verify(&app.db).await.unwrap(),
        Verification::Broken { seq: 2, .. }
    ));
    app.db
        .execute_raw("UPDATE audit_log SET actor = 'ana' WHERE seq = 2")
        .await
        .unwrap();
    assert_eq!(
        audit::verify(&app.db).await.unwrap(),
        Verification::Intact { entries: 3 }
    );
    // Erasing a payload (GDPR) keeps the chain intact; changing one does not.
    app.db
        .execute_raw("UPDATE audit_log SET payload = NULL WHERE seq = 1")
        .await
        .unwrap();
    assert_eq!(
        audit::verify(&app.db).await.unwrap(),
        Verification::Intact { entries: 3 }
    );
    app.db
        .execute_raw("UPDATE audit_log SET payload = '{}' WHERE seq = 3")
        .await
        .unwrap();
    assert!(matches!(
        audit::verify(&app.db).await.unwrap(),
        Verification::Broken { seq: 3, .. }
    ));
    app.db
        .execute_raw("DELETE FROM audit_log WHERE seq = 2")
        .await
        .unwrap();
    assert!(matches!(
        audit::verify(&app.db).await.unwrap(),
        Verification::Broken { seq: 3, .. }
    ));
}

async fn concurrent_writers_keep_one_chain(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Role::Admin, "admin-test");
    let writes = (0..16).map(|n| {
        let (app, token) = (&app, &token);
        async move {
            let query = format!("mutation {{ createCustomer(input: {{ name: \"C{n}\", email: \"c{n}@example.com\" }}) {{ id }} }}");
            app.graphql_as(token, &query, json!({})).await
        }
    });
    let responses = futures_util::future::join_all(writes).await;
    assert!(
        responses.iter().all(|r| r.get("errors").is_none()),
        "{responses:?}"
    );
    assert_eq!(
        audit::verify(&app.db).await.unwrap(),
        Verification::Intact { entries: 16 }
    );
}
