//! The HTTP edge: health, body limits, malformed requests, limits, GET, and GraphiQL.

use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    health_and_readiness,
    bad_requests_get_clear_errors,
    get_serves_queries_and_graphiql
);

async fn health_and_readiness(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let health = app
        .client
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = app
        .client
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready");
    assert!(health.headers().contains_key("x-request-id"));
}

async fn post(app: &TestApp, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/graphql", app.url))
        .bearer_auth(&app.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn bad_requests_get_clear_errors(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |c| c.server.body_limit_bytes = 4096).await;
    let huge =
        json!({ "query": format!("{{ customers {{ nodes {{ id }} }} }} #{}", "x".repeat(5000)) })
            .to_string();
    let (status, body) = post(&app, "application/json", huge).await;
    assert_eq!((status, error_code(&body)), (413, "PAYLOAD_TOO_LARGE"));
    // The webhooks, which read the raw body to verify its signature, refuse the same way.
    for path in [
        "/webhooks/leads",
        "/webhooks/leads/website",
        "/webhooks/email/sendgrid",
    ] {
        let response = app
            .client
            .post(format!("{}{path}", app.url))
            .header("content-type", "application/json")
            .body("x".repeat(5000))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, error_code(&body)),
            (413, "PAYLOAD_TOO_LARGE"),
            "{path}: {body}"
        );
    }

    let (status, body) = post(&app, "application/json", "{not json").await;
    assert_eq!((status, error_code(&body)), (400, "BAD_REQUEST"));
    let (status, body) = post(&app, "text/plain", "{}").await;
    assert_eq!((status, error_code(&body)), (415, "BAD_REQUEST"));
    let (status, body) = post(
        &app,
        "application/json",
        json!({ "query": "{ customers(" }).to_string(),
    )
    .await;
    assert_eq!((status, error_code(&body)), (400, "GRAPHQL_PARSE_FAILED"));
    let (status, body) = post(
        &app,
        "application/json",
        json!({ "query": "{ nope }" }).to_string(),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (200, "GRAPHQL_VALIDATION_FAILED")
    );

    // Depth: customers → nodes → interactions → customer → interactions → customer …
    let mut deep = "id".to_owned();
    for _ in 0..8 {
        deep = format!("interactions(first: 1) {{ customer {{ {deep} }} }}");
    }
    let (status, body) = post(
        &app,
        "application/json",
        json!({ "query": format!("{{ customers(first: 1) {{ nodes {{ {deep} }} }} }}") })
            .to_string(),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (200, "GRAPHQL_VALIDATION_FAILED")
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nested too deep"),
        "{body}"
    );
    // Complexity: 100 customers × 100 interactions is too expensive.
    let (_, body) = post(&app, "application/json", json!({ "query": "{ customers(first: 100) { nodes { interactions(first: 100) { id subject } } } }" }).to_string()).await;
    assert_eq!(error_code(&body), "GRAPHQL_VALIDATION_FAILED");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("complex"),
        "{body}"
    );

    let missing = app
        .client
        .get(format!("{}/nowhere", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

async fn get_serves_queries_and_graphiql(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    app.create_customer(json!({ "name": "Get", "email": "get@example.com" }))
        .await;
    let response = app
        .client
        .get(format!("{}/graphql", app.url))
        .bearer_auth(&app.token)
        .query(&[
            (
                "query",
                "query($n: Int) { customers(first: $n) { nodes { name } } }",
            ),
            ("variables", "{\"n\": 1}"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["customers"]["nodes"][0]["name"], "Get");

    let mutation = app
        .client
        .get(format!("{}/graphql", app.url))
        .query(&[("query", "mutation { deleteInteraction(id: \"x\") }")])
        .send()
        .await
        .unwrap();
    assert_eq!(mutation.status(), 405);

    let page = app
        .client
        .get(format!("{}/graphql", app.url))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("graphiql"));
}

mod edge {
    use crm_tests::{TestApp, TestBackend};
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cors_is_closed_unless_an_origin_is_configured() {
        let closed = TestApp::spawn(TestBackend::Sqlite).await;
        let preflight = |app: &TestApp| {
            app.client
                .request(reqwest::Method::OPTIONS, format!("{}/graphql", app.url))
                .header("origin", "https://app.example.com")
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                )
                .send()
        };
        let response = preflight(&closed).await.unwrap();
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
        let open = TestApp::spawn_with(TestBackend::Sqlite, |c| {
            c.server.cors_allowed_origins = vec!["https://app.example.com".into()];
        })
        .await;
        let response = preflight(&open).await.unwrap();
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "https://app.example.com"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn introspection_can_be_turned_off() {
        let app =
            TestApp::spawn_with(TestBackend::Sqlite, |c| c.graphql.introspection = false).await;
        let response = app
            .graphql(
                "{ __schema { queryType { name } } __type(name: \"Customer\") { name } }",
                json!({}),
            )
            .await;
        assert_eq!(
            response["data"],
            json!({ "__schema": null, "__type": null }),
            "{response}"
        );
        let on = TestApp::spawn(TestBackend::Sqlite).await;
        let data = on
            .graphql_ok("{ __schema { queryType { name } } }", json!({}))
            .await;
        assert_eq!(data["__schema"]["queryType"]["name"], "Query");
    }
}
