//! The N+1 guard: a page of customers with their latest interactions (and each interaction's
//! customer) costs the same number of SQL statements for 10 customers as for 50.

use crm_tests::{TestApp, TestBackend, on_both_backends};
use serde_json::json;

on_both_backends!(
    statements_do_not_grow_with_the_page_size,
    interaction_pages_batch_their_customers
);

const PAGE: &str = "query($n: Int!) { customers(first: $n) { nodes { id name interactions(first: 5) { id subject customer { id name } } } } }";

async fn statements_do_not_grow_with_the_page_size(backend: TestBackend) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("crm_store::sql=trace")
        .with_test_writer()
        .try_init();
    let app = TestApp::spawn(backend).await;
    crm_store::seed::seed(
        &app.db,
        7,
        60,
        7,
        crm_domain::Clock::now(app.clock.as_ref()),
        |_| {},
    )
    .await
    .unwrap();

    let count = |n: usize| {
        let app = &app;
        async move {
            let before = app.db.statement_count();
            let data = app.graphql_ok(PAGE, json!({ "n": n })).await;
            let nodes = data["customers"]["nodes"].as_array().unwrap();
            assert_eq!(nodes.len(), n);
            assert!(
                nodes
                    .iter()
                    .all(|c| c["interactions"].as_array().unwrap().len() == 5),
                "five each"
            );
            assert!(
                nodes
                    .iter()
                    .all(|c| c["interactions"][0]["customer"]["id"] == c["id"])
            );
            app.db.statement_count() - before
        }
    };
    // Warm the pool first: opening a connection runs set-up statements of its own.
    count(50).await;
    let ten = count(10).await;
    let fifty = count(50).await;
    assert_eq!(
        ten, fifty,
        "statements for 10 customers: {ten}, for 50: {fifty}"
    );
    // The page and the latest interactions; the interactions' customers are the page's own
    // and come from the primed loader cache.
    assert_eq!(
        fifty, 2,
        "a page with two nested levels took {fifty} statements"
    );
}

const INTERACTIONS: &str = "query($n: Int!) { interactions(first: $n) { nodes { id customer { name interactions(first: 2) { id } } } } }";

async fn interaction_pages_batch_their_customers(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    // One interaction per customer, so that a page of N interactions has N distinct customers.
    crm_store::seed::seed(
        &app.db,
        8,
        60,
        1,
        crm_domain::Clock::now(app.clock.as_ref()),
        |_| {},
    )
    .await
    .unwrap();
    let count = |n: usize| {
        let app = &app;
        async move {
            let before = app.db.statement_count();
            let data = app.graphql_ok(INTERACTIONS, json!({ "n": n })).await;
            let nodes = data["interactions"]["nodes"].as_array().unwrap();
            assert_eq!(nodes.len(), n);
            assert!(
                nodes
                    .iter()
                    .all(|i| i["customer"]["interactions"][0]["id"] == i["id"])
            );
            app.db.statement_count() - before
        }
    };
    count(50).await;
    let ten = count(10).await;
    let fifty = count(50).await;
    assert_eq!(
        ten, fifty,
        "statements for 10 interactions: {ten}, for 50: {fifty}"
    );
}
