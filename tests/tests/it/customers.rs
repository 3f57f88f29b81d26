//! Customers through GraphQL: create, validation, duplicates, update, delete/restore, filters,
//! ordering and pagination.

use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    create_normalizes_and_reads_back,
    duplicates_are_refused_with_the_existing_id,
    validation_names_every_bad_field,
    bad_ids_and_unknown_ids,
    update_changes_only_given_fields,
    update_to_a_taken_email_is_a_duplicate,
    delete_hides_and_restore_returns,
    filters_select_the_right_customers,
    forward_and_backward_pages_cover_everything_once,
    ordering_by_name,
    bad_page_arguments_are_refused,
);

const CUSTOMER_FIELDS: &str = "id name email phone company status source language country timeZone owner tags \
     consentEmail consentCall consentSms notes createdAt updatedAt deletedAt";

async fn get(app: &TestApp, id: &str) -> Value {
    let query = format!("query($id: ID!) {{ customer(id: $id) {{ {CUSTOMER_FIELDS} }} }}");
    app.graphql_ok(&query, json!({ "id": id })).await["customer"].clone()
}

async fn create_normalizes_and_reads_back(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let query = format!(
        "mutation($i: CreateCustomerInput!) {{ createCustomer(input: $i) {{ {CUSTOMER_FIELDS} }} }}"
    );
    let created = app
        .graphql_ok(
            &query,
            json!({ "i": {
                "name": "  Jürgen Müller ", "email": "J.Mueller@Firma.DE", "phone": "030 123456",
                "company": "Müller GmbH", "language": "DE", "timeZone": "europe/berlin",
                "tags": ["Messe", "messe", "VIP"], "consentCall": true, "status": "PROSPECT"
            }}),
        )
        .await["createCustomer"]
        .clone();
    assert_eq!(created["name"], "Jürgen Müller");
    assert_eq!(created["email"], "j.mueller@firma.de");
    assert_eq!(created["phone"], "+4930123456");
    assert_eq!(created["country"], "DE", "derived from the phone number");
    assert_eq!(created["language"], "de");
    assert_eq!(created["timeZone"], "Europe/Berlin");
    assert_eq!(created["tags"], json!(["messe", "vip"]));
    assert_eq!(created["status"], "PROSPECT");
    assert_eq!(created["consentCall"], true);
    assert_eq!(created["consentEmail"], false);
    assert_eq!(
        created["createdAt"], "2026-11-25T12:00:00+00:00",
        "stamped by the server's clock"
    );
    assert_eq!(created["deletedAt"], Value::Null);
    let read = get(&app, created["id"].as_str().unwrap()).await;
    assert_eq!(read, created, "what create returns is what a read returns");
}

async fn duplicates_are_refused_with_the_existing_id(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let first = app
        .create_customer(
            json!({ "name": "Ana", "email": "ana@firma.ba", "phone": "+387 33 250 300" }),
        )
        .await;
    let mutation = "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { id } }";
    let by_email = app
        .graphql(
            mutation,
            json!({ "i": { "name": "Ana 2", "email": " ANA@Firma.ba " } }),
        )
        .await;
    assert_eq!(error_code(&by_email), "DUPLICATE");
    assert_eq!(by_email["errors"][0]["extensions"]["field"], "input.email");
    assert_eq!(
        by_email["errors"][0]["extensions"]["existingId"],
        first.as_str()
    );
    // The same number written nationally in another region's default is still the same number.
    let by_phone = app
        .graphql(
            mutation,
            json!({ "i": { "name": "Ana 3", "phone": "+38733250300" } }),
        )
        .await;
    assert_eq!(error_code(&by_phone), "DUPLICATE");
    assert_eq!(by_phone["errors"][0]["extensions"]["field"], "input.phone");
    assert_eq!(
        by_phone["errors"][0]["extensions"]["existingId"],
        first.as_str()
    );
    let list = app
        .graphql_ok("{ customers { nodes { id } } }", json!({}))
        .await;
    assert_eq!(
        list["customers"]["nodes"].as_array().unwrap().len(),
        1,
        "nothing was half-created"
    );
}

async fn validation_names_every_bad_field(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .graphql(
            "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { id } }",
            json!({ "i": { "name": " ", "email": "not-an-email", "phone": "12", "country": "XX",
                           "timeZone": "Mars/Base", "tags": ["ok", "a,b"] } }),
        )
        .await;
    assert_eq!(error_code(&response), "VALIDATION_FAILED");
    let fields: Vec<(String, String)> = response["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_owned(),
                f["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("input.name", "required"),
        ("input.email", "invalid_email"),
        ("input.phone", "invalid_phone"),
        ("input.country", "invalid_country"),
        ("input.timeZone", "invalid_time_zone"),
        ("input.tags[1]", "invalid_tag"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
        .collect();
    assert_eq!(fields, expected);
    let no_contact = app
        .graphql(
            "mutation { createCustomer(input: { name: \"Ana\" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        no_contact["errors"][0]["extensions"]["fields"][0]["code"],
        "contact_required"
    );
    let wrong_enum = app
        .graphql("mutation { createCustomer(input: { name: \"Ana\", email: \"a@b.de\", status: WON }) { id } }", json!({}))
        .await;
    assert_eq!(error_code(&wrong_enum), "GRAPHQL_VALIDATION_FAILED");
}

async fn bad_ids_and_unknown_ids(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let bad = app
        .graphql("{ customer(id: \"42\") { id } }", json!({}))
        .await;
    assert_eq!(error_code(&bad), "VALIDATION_FAILED");
    assert_eq!(bad["errors"][0]["extensions"]["field"], "id");
    let unknown = app
        .graphql_ok(
            "{ customer(id: \"01a21343-0759-77de-bfba-e0e752bc02cf\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(unknown["customer"], Value::Null);
    let update = app
        .graphql(
            "mutation { updateCustomer(id: \"01a21343-0759-77de-bfba-e0e752bc02cf\", input: { name: \"X\" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&update), "NOT_FOUND");
    let delete = app
        .graphql(
            "mutation { deleteCustomer(id: \"01a21343-0759-77de-bfba-e0e752bc02cf\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&delete), "NOT_FOUND");
}

const UPDATE: &str = "mutation($id: ID!, $i: UpdateCustomerInput!) { updateCustomer(id: $id, input: $i) { \
     name email phone company owner tags status notes updatedAt } }";

async fn update_changes_only_given_fields(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .create_customer(json!({ "name": "Emina", "email": "emina@example.ba", "company": "ACME", "notes": "n", "tags": ["a"] }))
        .await;
    app.clock.advance(chrono::Duration::minutes(5));
    let updated = app
        .graphql_ok(UPDATE, json!({ "id": id, "i": { "company": null, "owner": "alice", "phone": "061 123 456", "tags": ["B"], "status": "CUSTOMER" } }))
        .await["updateCustomer"]
        .clone();
    assert_eq!(updated["company"], Value::Null, "null clears");
    assert_eq!(updated["owner"], "alice");
    assert_eq!(updated["name"], "Emina", "absent keeps");
    assert_eq!(updated["notes"], "n");
    assert_eq!(updated["tags"], json!(["b"]));
    assert_eq!(updated["status"], "CUSTOMER");
    assert_eq!(
        updated["phone"], "+4961123456",
        "read in the default region DE"
    );
    assert_eq!(updated["updatedAt"], "2026-11-25T12:05:00+00:00");
    // The tag index follows the change.
    let tagged = app
        .graphql_ok(
            "{ customers(filter: { tag: \"b\" }) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(tagged["customers"]["nodes"][0]["id"], id.as_str());
    let old_tag = app
        .graphql_ok(
            "{ customers(filter: { tag: \"a\" }) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(old_tag["customers"]["nodes"], json!([]));
    // Removing the last contact is refused; nothing changes.
    let refused = app
        .graphql(
            UPDATE,
            json!({ "id": id, "i": { "email": null, "phone": null } }),
        )
        .await;
    assert_eq!(error_code(&refused), "VALIDATION_FAILED");
    assert_eq!(
        refused["errors"][0]["extensions"]["fields"][0]["code"],
        "contact_required"
    );
    assert_eq!(get(&app, &id).await["email"], "emina@example.ba");
    let bad = app
        .graphql(
            UPDATE,
            json!({ "id": id, "i": { "email": "nope", "name": "" } }),
        )
        .await;
    let fields: Vec<&str> = bad["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["input.name", "input.email"]);
}

async fn update_to_a_taken_email_is_a_duplicate(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let a = app
        .create_customer(json!({ "name": "A", "email": "a@example.com" }))
        .await;
    let b = app
        .create_customer(json!({ "name": "B", "email": "b@example.com" }))
        .await;
    let response = app
        .graphql(
            UPDATE,
            json!({ "id": b, "i": { "email": "A@example.com" } }),
        )
        .await;
    assert_eq!(error_code(&response), "DUPLICATE");
    assert_eq!(
        response["errors"][0]["extensions"]["existingId"],
        a.as_str()
    );
    assert_eq!(get(&app, &b).await["email"], "b@example.com");
}

async fn delete_hides_and_restore_returns(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .create_customer(json!({ "name": "Milan", "email": "milan@example.rs" }))
        .await;
    app.clock.advance(chrono::Duration::hours(1));
    let deleted = app
        .graphql_ok(
            "mutation($id: ID!) { deleteCustomer(id: $id) { deletedAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        deleted["deleteCustomer"]["deletedAt"],
        "2026-11-25T13:00:00+00:00"
    );
    let again = app
        .graphql_ok(
            "mutation($id: ID!) { deleteCustomer(id: $id) { deletedAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(again, deleted, "deleting twice is idempotent");
    let live = app
        .graphql_ok("{ customers { nodes { id } } }", json!({}))
        .await;
    assert_eq!(live["customers"]["nodes"], json!([]));
    let all = app
        .graphql_ok(
            "{ customers(filter: { includeDeleted: true }) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(all["customers"]["nodes"][0]["id"], id.as_str());
    assert_ne!(
        get(&app, &id).await["deletedAt"],
        Value::Null,
        "a deleted customer is still readable by id"
    );
    let update = app
        .graphql(UPDATE, json!({ "id": id, "i": { "name": "X" } }))
        .await;
    assert_eq!(
        error_code(&update),
        "NOT_FOUND",
        "a deleted customer must be restored before it changes"
    );
    // Its email stays reserved, so the person is not created twice.
    let twin = app.graphql("mutation { createCustomer(input: { name: \"M\", email: \"milan@example.rs\" }) { id } }", json!({})).await;
    assert_eq!(error_code(&twin), "DUPLICATE");
    let restored = app
        .graphql_ok(
            "mutation($id: ID!) { restoreCustomer(id: $id) { deletedAt name } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        restored["restoreCustomer"],
        json!({ "deletedAt": null, "name": "Milan" })
    );
    let live = app
        .graphql_ok("{ customers { nodes { id } } }", json!({}))
        .await;
    assert_eq!(live["customers"]["nodes"][0]["id"], id.as_str());
}

async fn names(app: &TestApp, filter: Value) -> Vec<String> {
    let data = app
        .graphql_ok(
            "query($f: CustomerFilter) { customers(filter: $f, first: 100, orderBy: { field: NAME, direction: ASC }) { nodes { name } } }",
            json!({ "f": filter }),
        )
        .await;
    data["customers"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn filters_select_the_right_customers(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    app.create_customer(json!({ "name": "Jürgen Müller", "email": "j@mueller.de", "company": "Müller GmbH", "owner": "alice", "tags": ["vip"] })).await;
    app.clock.advance(chrono::Duration::days(1));
    app.create_customer(json!({ "name": "Đorđe Petrović", "email": "djordje@primer.rs", "status": "PROSPECT", "owner": "bob" })).await;
    app.clock.advance(chrono::Duration::days(1));
    app.create_customer(json!({ "name": "Sara 100%_x", "email": "sara@example.com", "company": "Firma d.o.o.", "tags": ["vip", "fair"] })).await;

    assert_eq!(
        names(&app, json!({ "text": "MÜLLER" })).await,
        ["Jürgen Müller"],
        "Unicode case folding"
    );
    assert_eq!(
        names(&app, json!({ "text": "đorđe" })).await,
        ["Đorđe Petrović"]
    );
    assert_eq!(
        names(&app, json!({ "text": "primer.rs" })).await,
        ["Đorđe Petrović"],
        "matches email"
    );
    assert_eq!(
        names(&app, json!({ "text": "d.o.o" })).await,
        ["Sara 100%_x"],
        "matches company"
    );
    assert_eq!(
        names(&app, json!({ "text": "0%_" })).await,
        ["Sara 100%_x"],
        "wildcards are literal"
    );
    assert_eq!(names(&app, json!({ "text": "%" })).await, ["Sara 100%_x"]);
    assert_eq!(
        names(&app, json!({ "status": "PROSPECT" })).await,
        ["Đorđe Petrović"]
    );
    assert_eq!(
        names(&app, json!({ "tag": "VIP" })).await,
        ["Jürgen Müller", "Sara 100%_x"]
    );
    assert_eq!(
        names(&app, json!({ "tag": "vip", "text": "sara" })).await,
        ["Sara 100%_x"]
    );
    assert_eq!(
        names(&app, json!({ "owner": "alice" })).await,
        ["Jürgen Müller"]
    );
    assert_eq!(
        names(&app, json!({ "createdAfter": "2026-11-26T00:00:00Z" })).await,
        ["Sara 100%_x", "Đorđe Petrović"]
    );
    assert_eq!(
        names(&app, json!({ "createdAfter": "2026-11-26T00:00:00Z", "createdBefore": "2026-11-27T00:00:00Z" })).await,
        ["Đorđe Petrović"]
    );
    assert!(names(&app, json!({ "text": "nobody" })).await.is_empty());
    let inverted = app
        .graphql(
            "{ customers(filter: { createdAfter: \"2026-12-01T00:00:00Z\", createdBefore: \"2026-11-01T00:00:00Z\" }) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&inverted), "VALIDATION_FAILED");
}

async fn page(app: &TestApp, args: &str) -> Value {
    let query = format!(
        "{{ customers({args}) {{ edges {{ cursor node {{ name }} }} pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} }} }}"
    );
    app.graphql_ok(&query, json!({})).await["customers"].clone()
}

fn page_names(page: &Value) -> Vec<String> {
    page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn forward_and_backward_pages_cover_everything_once(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    // Seven customers; two pairs share a creation instant, so the id must break ties.
    for n in 0..7 {
        if n % 2 == 0 {
            app.clock.advance(chrono::Duration::seconds(1));
        }
        app.create_customer(
            json!({ "name": format!("c{n}"), "email": format!("c{n}@example.com") }),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut args = "first: 3".to_owned();
    loop {
        let p = page(&app, &args).await;
        seen.extend(page_names(&p));
        if p["pageInfo"]["hasNextPage"] == false {
            break;
        }
        args = format!(
            "first: 3, after: \"{}\"",
            p["pageInfo"]["endCursor"].as_str().unwrap()
        );
    }
    assert_eq!(
        seen,
        ["c6", "c5", "c4", "c3", "c2", "c1", "c0"],
        "newest first, each once"
    );

    let last = page(&app, "last: 3").await;
    assert_eq!(page_names(&last), ["c2", "c1", "c0"]);
    assert_eq!(last["pageInfo"]["hasPreviousPage"], true);
    let before = page(
        &app,
        &format!(
            "last: 3, before: \"{}\"",
            last["pageInfo"]["startCursor"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(page_names(&before), ["c5", "c4", "c3"]);
    assert_eq!(before["pageInfo"]["hasNextPage"], true);
    let first_page = page(
        &app,
        &format!(
            "last: 3, before: \"{}\"",
            before["pageInfo"]["startCursor"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(page_names(&first_page), ["c6"]);
    assert_eq!(first_page["pageInfo"]["hasPreviousPage"], false);

    let ascending = page(
        &app,
        "first: 4, orderBy: { field: CREATED_AT, direction: ASC }",
    )
    .await;
    assert_eq!(page_names(&ascending), ["c0", "c1", "c2", "c3"]);
    let empty = page(&app, "first: 0").await;
    assert_eq!(page_names(&empty), Vec::<String>::new());
}

async fn ordering_by_name(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    for name in ["Bea", "Ana", "Cem", "Ana"] {
        let email = format!("{}{}@example.com", name.to_lowercase(), uuid_suffix());
        app.create_customer(json!({ "name": name, "email": email }))
            .await;
    }
    let p1 = page(&app, "first: 2, orderBy: { field: NAME, direction: ASC }").await;
    assert_eq!(page_names(&p1), ["Ana", "Ana"]);
    let p2 = page(
        &app,
        &format!(
            "first: 2, after: \"{}\", orderBy: {{ field: NAME, direction: ASC }}",
            p1["pageInfo"]["endCursor"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(page_names(&p2), ["Bea", "Cem"]);
    let desc = page(&app, "first: 10, orderBy: { field: NAME, direction: DESC }").await;
    assert_eq!(page_names(&desc), ["Cem", "Bea", "Ana", "Ana"]);
    // A cursor of one ordering does not work in another.
    let foreign = app
        .graphql(
            &format!(
                "{{ customers(after: \"{}\") {{ nodes {{ id }} }} }}",
                p1["pageInfo"]["endCursor"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(error_code(&foreign), "VALIDATION_FAILED");
    assert_eq!(foreign["errors"][0]["extensions"]["field"], "after");
}

fn uuid_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

async fn bad_page_arguments_are_refused(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    for (args, field) in [
        ("first: 101", "first"),
        ("first: -1", "first"),
        ("first: 1, last: 1", "last"),
        ("after: \"garbage\"", "after"),
        ("last: 2, after: \"x\"", "after"),
    ] {
        let response = app
            .graphql(
                &format!("{{ customers({args}) {{ nodes {{ id }} }} }}"),
                json!({}),
            )
            .await;
        assert_eq!(error_code(&response), "VALIDATION_FAILED", "{args}");
        assert_eq!(
            response["errors"][0]["extensions"]["field"], field,
            "{args}"
        );
    }
    app.create_customer(json!({ "name": "A", "email": "a@example.com" }))
        .await;
    let nested = app
        .graphql(
            "{ customers(first: 1) { nodes { interactions(first: 101) { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&nested), "VALIDATION_FAILED");
    assert_eq!(nested["errors"][0]["extensions"]["field"], "first");
}
