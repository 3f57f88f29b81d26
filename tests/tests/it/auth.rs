//! Authentication and authorization through the HTTP surface: tokens, API keys, roles and
//! row-level rules.

use chrono::Duration;
use crm_domain::Role;
use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    requests_without_valid_credentials_are_refused,
    api_keys_are_created_used_listed_and_revoked,
    the_bootstrap_key_is_an_admin_key,
    roles_are_enforced_and_nothing_is_written,
    sales_see_and_change_only_their_own_and_unassigned_customers,
    bursts_are_rate_limited_per_caller_and_per_address,
    nested_fields_and_duplicates_do_not_leak_across_rules,
);

async fn status_and_body(app: &TestApp, authorization: Option<&str>) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}/graphql", app.url))
        .json(&json!({ "query": "{ me { subject role } }" }));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn requests_without_valid_credentials_are_refused(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for(Role::Sales, "ana");
    let (status, body) = status_and_body(&app, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["me"],
        json!({ "subject": "ana", "role": "SALES" })
    );

    let expired = {
        let token = app.token_for(Role::Admin, "old");
        app.clock.advance(Duration::hours(2));
        token
    };
    let forged = {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[2] = "AAAA".repeat(10);
        parts.join(".")
    };
    for (header, why) in [
        (None, "missing"),
        (Some("Basic YWxpY2U6c2VjcmV0".to_owned()), "wrong scheme"),
        (Some("Bearer".to_owned()), "empty"),
        (Some("Bearer not.a.jwt".to_owned()), "malformed"),
        (Some(format!("Bearer {expired}")), "expired"),
        (Some(format!("Bearer {forged}")), "bad signature"),
        (
            Some("Bearer crm_thisisnotakeythisisnotakeythisisnotakey123".to_owned()),
            "unknown key",
        ),
    ] {
        let (status, body) = status_and_body(&app, header.as_deref()).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{why}");
    }
}

const CREATE_KEY: &str = "mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { key apiKey { id prefix role subject revokedAt } } }";

async fn api_keys_are_created_used_listed_and_revoked(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let created = app
        .graphql_ok(
            CREATE_KEY,
            json!({ "i": { "name": "website form", "role": "INTEGRATION" } }),
        )
        .await["createApiKey"]
        .clone();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("crm_") && key.len() >= 40);
    assert!(key.starts_with(created["apiKey"]["prefix"].as_str().unwrap()));
    let id = created["apiKey"]["id"].as_str().unwrap().to_owned();

    let me = app
        .graphql_as(
            &key,
            "{ me { subject role credential apiKeyId } }",
            json!({}),
        )
        .await;
    assert_eq!(
        me["data"]["me"],
        json!({ "subject": "website form", "role": "INTEGRATION", "credential": "API_KEY", "apiKeyId": id })
    );
    // The integration key may import leads but not manage keys.
    let lead = app.graphql_as(&key, "mutation { createCustomer(input: { name: \"Lead\", email: \"lead@example.com\" }) { id } }", json!({})).await;
    assert!(lead.get("errors").is_none(), "{lead}");
    let denied = app
        .graphql_as(
            &key,
            CREATE_KEY,
            json!({ "i": { "name": "x", "role": "ADMIN" } }),
        )
        .await;
    assert_eq!(error_code(&denied), "FORBIDDEN");

    let listed = app.graphql_ok("{ apiKeys { id prefix } }", json!({})).await;
    let text = listed.to_string();
    assert!(
        text.contains(&id) && !text.contains(&key),
        "keys are listed without their secret"
    );

    let revoked = app
        .graphql_ok(
            "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        revoked["revokeApiKey"]["revokedAt"],
        "2026-11-25T12:00:00+00:00"
    );
    let after = app.graphql_as(&key, "{ me { subject } }", json!({})).await;
    assert_eq!(error_code(&after), "UNAUTHENTICATED");

    // An expiring key stops at its time.
    let expiring = app
        .graphql_ok(CREATE_KEY, json!({ "i": { "name": "temp", "role": "VIEWER", "expiresAt": "2026-11-25T13:00:00Z" } }))
        .await["createApiKey"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        app.graphql_as(&expiring, "{ me { role } }", json!({}))
            .await
            .get("errors")
            .is_none()
    );
    app.clock.advance(Duration::hours(2));
    assert_eq!(
        error_code(
            &app.graphql_as(&expiring, "{ me { role } }", json!({}))
                .await
        ),
        "UNAUTHENTICATED"
    );
    let past = app.graphql(CREATE_KEY, json!({ "i": { "name": "late", "role": "VIEWER", "expiresAt": "2020-01-01T00:00:00Z" } })).await;
    assert_eq!(error_code(&past), "VALIDATION_FAILED");
}

async fn the_bootstrap_key_is_an_admin_key(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let key = app.bootstrap_key.clone();
    assert!(
        key.is_some(),
        "a first start over an empty database creates a key"
    );
    let key = key.unwrap();
    let me = app
        .graphql_as(&key, "{ me { role subject } }", json!({}))
        .await;
    assert_eq!(
        me["data"]["me"],
        json!({ "role": "ADMIN", "subject": "admin" })
    );
    let keys = app.graphql_ok("{ apiKeys { name } }", json!({})).await;
    assert_eq!(
        keys["apiKeys"],
        json!([{ "name": "bootstrap admin" }]),
        "exactly one bootstrap key"
    );
}

async fn roles_are_enforced_and_nothing_is_written(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let viewer = app.token_for(Role::Viewer, "vera");
    let denied = app
        .graphql_as(
            &viewer,
            "mutation { createCustomer(input: { name: \"X\", email: \"x@example.com\" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&denied), "FORBIDDEN");
    assert_eq!(denied["errors"][0]["path"], json!(["createCustomer"]));
    let all = app
        .graphql_ok("{ customers { nodes { id } } }", json!({}))
        .await;
    assert_eq!(
        all["customers"]["nodes"],
        json!([]),
        "the refused mutation wrote nothing"
    );
    let reads = app
        .graphql_as(&viewer, "{ customers { nodes { id } } }", json!({}))
        .await;
    assert!(reads.get("errors").is_none());
    let sales = app.token_for(Role::Sales, "ana");
    let id = app
        .create_customer(json!({ "name": "Kept", "email": "kept@example.com" }))
        .await;
    let delete = app
        .graphql_as(
            &sales,
            "mutation($id: ID!) { deleteCustomer(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(error_code(&delete), "FORBIDDEN");
    let still = app
        .graphql_ok(
            "query($id: ID!) { customer(id: $id) { deletedAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(still["customer"]["deletedAt"], Value::Null);
}

async fn sales_see_and_change_only_their_own_and_unassigned_customers(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let mine = app
        .create_customer(json!({ "name": "Mine", "email": "mine@example.com", "owner": "ana" }))
        .await;
    let theirs = app
        .create_customer(json!({ "name": "Theirs", "email": "theirs@example.com", "owner": "bob" }))
        .await;
    let open = app
        .create_customer(json!({ "name": "Open", "email": "open@example.com" }))
        .await;
    for id in [&mine, &theirs, &open] {
        app.graphql_ok(
            "mutation($id: ID!) { logInteraction(input: { customerId: $id, kind: NOTE, subject: \"n\" }) { id } }",
            json!({ "id": id }),
        )
        .await;
    }
    let ana = app.token_for(Role::Sales, "ana");
    let names = app
        .graphql_as(
            &ana,
            "{ customers(orderBy: { field: NAME, direction: ASC }) { nodes { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        names["data"]["customers"]["nodes"],
        json!([{ "name": "Mine" }, { "name": "Open" }])
    );
    let hidden = app
        .graphql_as(
            &ana,
            "query($id: ID!) { customer(id: $id) { name } }",
            json!({ "id": theirs }),
        )
        .await;
    assert_eq!(
        hidden["data"]["customer"],
        Value::Null,
        "another owner's customer is invisible"
    );
    let update = app
        .graphql_as(&ana, "mutation($id: ID!) { updateCustomer(id: $id, input: { name: \"Mine now\" }) { name } }", json!({ "id": theirs }))
        .await;
    assert_eq!(error_code(&update), "NOT_FOUND");
    let log = app
        .graphql_as(
            &ana,
            "mutation($id: ID!) { logInteraction(input: { customerId: $id, kind: NOTE }) { id } }",
            json!({ "id": theirs }),
        )
        .await;
    assert_eq!(error_code(&log), "NOT_FOUND");
    let interactions = app
        .graphql_as(&ana, "{ interactions { nodes { customerId } } }", json!({}))
        .await;
    let mut seen: Vec<&str> = interactions["data"]["interactions"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["customerId"].as_str().unwrap())
        .collect();
    seen.sort_unstable();
    let mut expected = vec![mine.as_str(), open.as_str()];
    expected.sort_unstable();
    assert_eq!(seen, expected);

    // New customers are hers; she cannot hand them to someone else.
    let created = app
        .graphql_as(&ana, "mutation { createCustomer(input: { name: \"New\", email: \"new@example.com\" }) { owner } }", json!({}))
        .await;
    assert_eq!(created["data"]["createCustomer"]["owner"], "ana");
    let gift = app
        .graphql_as(&ana, "mutation { createCustomer(input: { name: \"Gift\", email: \"gift@example.com\", owner: \"bob\" }) { id } }", json!({}))
        .await;
    assert_eq!(error_code(&gift), "FORBIDDEN");
    let claim = app
        .graphql_as(
            &ana,
            "mutation($id: ID!) { updateCustomer(id: $id, input: { owner: \"ana\" }) { owner } }",
            json!({ "id": open }),
        )
        .await;
    assert_eq!(
        claim["data"]["updateCustomer"]["owner"], "ana",
        "an unassigned customer can be claimed"
    );
}

async fn bursts_are_rate_limited_per_caller_and_per_address(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.rate_limit.per_principal_per_minute = 1;
        c.rate_limit.per_principal_burst = 5;
        c.rate_limit.per_ip_per_minute = 1;
        c.rate_limit.per_ip_burst = 12;
    })
    .await;
    let ana = app.token_for(Role::Sales, "ana");
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let response = app
            .client
            .post(format!("{}/graphql", app.url))
            .bearer_auth(&ana)
            .json(&json!({ "query": "mutation { createCustomer(input: { name: \"B\", phone: \"+49 30 1234567\" }) { id } }" }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if status == 429 {
            assert!(
                response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= 1
            );
            assert_eq!(response.headers()["ratelimit-limit"], "5");
            assert_eq!(response.headers()["ratelimit-remaining"], "0");
            let body: Value = response.json().await.unwrap();
            assert_eq!(error_code(&body), "RATE_LIMITED");
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429, 429],
        "a burst of 5 per caller"
    );
    // Another caller has its own bucket...
    let bob = app.token_for(Role::Sales, "bob");
    assert!(
        app.graphql_as(&bob, "{ me { subject } }", json!({}))
            .await
            .get("errors")
            .is_none()
    );
    // ...but the address runs dry too, even for requests without credentials.
    let mut last = 0;
    for _ in 0..6 {
        last = app
            .client
            .post(format!("{}/graphql", app.url))
            .json(&json!({ "query": "{ me { subject } }" }))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(last, 429);
}

async fn nested_fields_and_duplicates_do_not_leak_across_rules(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .create_customer(json!({ "name": "Theirs", "email": "theirs@example.com", "owner": "bob" }))
        .await;
    app.graphql_ok(
        "mutation($id: ID!) { logInteraction(input: { customerId: $id, kind: CALL, body: \"transcript\" }) { id } }",
        json!({ "id": id }),
    )
    .await;
    // An integration key reads customers but not their interactions, not even nested.
    let integration = app.token_for(Role::Integration, "zapier");
    let nested = app
        .graphql_as(
            &integration,
            "{ customers { nodes { name interactions { body } } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&nested), "FORBIDDEN", "{nested}");
    assert!(!nested.to_string().contains("transcript"));
    // A sales user learns that an email is taken, not by whom.
    let ana = app.token_for(Role::Sales, "ana");
    let twin = app.graphql_as(&ana, "mutation { createCustomer(input: { name: \"T\", email: \"theirs@example.com\" }) { id } }", json!({})).await;
    assert_eq!(error_code(&twin), "DUPLICATE");
    assert!(
        twin["errors"][0]["extensions"].get("existingId").is_none(),
        "{twin}"
    );
    assert!(!twin.to_string().contains(&id));
    // A manager (all customers) is told who holds it.
    let manager = app.token_for(Role::Manager, "meg");
    let told = app.graphql_as(&manager, "mutation { createCustomer(input: { name: \"T\", email: \"theirs@example.com\" }) { id } }", json!({})).await;
    assert_eq!(told["errors"][0]["extensions"]["existingId"], id.as_str());
}
