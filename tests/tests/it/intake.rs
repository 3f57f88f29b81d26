//! Lead intake through the signed webhook: the Standard Webhooks signature (valid, invalid,
//! expired, replayed, rotated), the inbox before the ack, idempotent deliveries, and the lead
//! imported by its job into the customer it duplicates instead of a second one.

use crm_api::webhooks::sign;
use crm_domain::Clock as _;
use crm_store::inbox::{self, InboxStatus};
use crm_tests::{TestApp, TestBackend, on_both_backends};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    a_signed_lead_is_stored_before_the_ack_and_imported_by_its_job,
    bad_signatures_old_timestamps_and_unknown_sources_are_refused,
    the_replay_window_is_configured,
    a_rotated_secret_and_repeated_deliveries_are_handled,
    deliveries_arriving_together_are_stored_together_each_once,
    a_delivery_that_cannot_be_stored_fails_alone,
    deliveries_while_the_database_is_away_are_refused_and_stored_when_sent_again,
    duplicates_merge_into_the_customer_they_duplicate,
    import_leads_reports_every_lead,
    import_options_set_the_region_and_what_a_duplicate_does,
    a_messy_csv_file_gives_exactly_the_expected_report,
    json_and_ndjson_files_are_imported_row_by_row,
    a_file_repeating_known_customers_skips_them_in_a_dry_run_and_for_real,
    bad_files_and_uploads_are_refused_or_reported,
    a_batch_replayed_after_a_crash_counts_its_rows_as_before,
    a_file_of_several_batches_creates_each_lead_once_with_its_run_job_audit_and_consent,
    a_file_of_several_batches_imports_on_a_pool_of_one_connection,
    progress_is_visible_while_an_import_runs,
    a_file_that_breaks_midway_keeps_its_rows_and_says_where_it_broke,
);

const OLD: &[u8] = b"an old secret of 24 bytes";
const NEW: &[u8] = b"the new secret, 24 bytes";

fn secret(key: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

async fn app(backend: TestBackend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.intake.webhook_secrets.insert(
            "website".into(),
            format!("{} {}", secret(NEW), secret(OLD)).into(),
        );
        c.intake
            .webhook_secrets
            .insert("partner".into(), secret(b"the partner's own secret").into());
    })
    .await
}

/// Delivers `body` signed with `key` as delivery `id`, `age` seconds old.
async fn deliver(
    app: &TestApp,
    path: &str,
    id: &str,
    key: &[u8],
    age: i64,
    body: &Value,
) -> (StatusCode, Value) {
    let body = body.to_string();
    let timestamp = app.clock.now().timestamp() - age;
    let signature = format!("v1,{}", sign(key, id, timestamp, body.as_bytes()));
    let response = app
        .client
        .post(format!("{}{path}", app.url))
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn lead() -> Value {
    json!({
        "Vorname": "Jürgen", "Nachname": "Müller", "E-Mail": "J.Mueller@Firma.DE",
        "Telefon": "030 123456", "Firma": "Müller GmbH", "Sprache": "de",
        "tags": ["messe"], "newsletter": "ja", "utm_campaign": "winter"
    })
}

async fn customers(app: &TestApp) -> Vec<Value> {
    app.graphql_ok(
        "{ customers { nodes { id name email phone company source tags consentEmail notes } } }",
        json!({}),
    )
    .await["customers"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn a_signed_lead_is_stored_before_the_ack_and_imported_by_its_job(backend: TestBackend) {
    let app = app(backend).await;
    let (status, body) = deliver(&app, "/webhooks/leads", "msg_1", NEW, 0, &lead()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "received");

    // Acknowledged, not processed (no worker ran): the raw payload is in the inbox, its job
    // queued — what a crash right after the ack leaves behind.
    let entry = inbox::get(&app.db, body["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, InboxStatus::Received);
    assert_eq!(entry.source, "website");
    assert!(entry.payload.contains("utm_campaign"), "kept raw");
    assert!(customers(&app).await.is_empty());

    // Any worker, in any process, imports it.
    app.run_jobs().await;
    let all = customers(&app).await;
    assert_eq!(all.len(), 1);
    let customer = &all[0];
    assert_eq!(customer["name"], "Jürgen Müller");
    assert_eq!(customer["email"], "j.mueller@firma.de");
    assert_eq!(customer["phone"], "+4930123456");
    assert_eq!(customer["source"], "website", "the source that signed it");
    assert_eq!(customer["consentEmail"], true);
    let entry = inbox::get(&app.db, &entry.id).await.unwrap().unwrap();
    assert_eq!(entry.status, InboxStatus::Processed);
    let result: Value = serde_json::from_str(entry.result.as_deref().unwrap()).unwrap();
    assert_eq!(result["outcome"], "created");
    assert_eq!(result["customer_id"], customer["id"]);

    // The chain went on: the lead was qualified.
    let data = app
        .graphql_ok(
            "query($id: ID!) { customer(id: $id) { score { score cause } } }",
            json!({ "id": customer["id"] }),
        )
        .await;
    assert_eq!(data["customer"]["score"]["cause"], "import");

    // Garbage and unreadable leads are refused or reported, never half imported.
    let (status, _) = deliver(
        &app,
        "/webhooks/leads",
        "msg_2",
        NEW,
        0,
        &json!("just text"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "JSON, so stored; the job reports it"
    );
    let (status, body) = deliver(
        &app,
        "/webhooks/leads",
        "msg_3",
        NEW,
        0,
        &json!({ "name": "No contact" }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.run_jobs().await;
    let entry = inbox::get(&app.db, body["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, InboxStatus::Failed);
    let result: Value = serde_json::from_str(entry.result.as_deref().unwrap()).unwrap();
    assert_eq!(result["outcome"], "invalid");
    assert_eq!(result["issues"][0]["code"], "contact_required", "{result}");
    assert_eq!(customers(&app).await.len(), 1);
}

async fn bad_signatures_old_timestamps_and_unknown_sources_are_refused(backend: TestBackend) {
    let app = app(backend).await;
    let refused = [
        deliver(
            &app,
            "/webhooks/leads",
            "m1",
            b"a forged secret of 24 b",
            0,
            &lead(),
        )
        .await,
        deliver(&app, "/webhooks/leads", "m2", NEW, 301, &lead()).await,
        deliver(&app, "/webhooks/leads", "m3", NEW, -301, &lead()).await,
        deliver(&app, "/webhooks/leads/partner", "m4", NEW, 0, &lead()).await,
        deliver(&app, "/webhooks/leads/nobody", "m5", NEW, 0, &lead()).await,
    ];
    for (n, (status, body)) in refused.iter().enumerate() {
        assert_eq!(*status, StatusCode::UNAUTHORIZED, "case {n}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    }
    let (status, _) = deliver(&app, "/webhooks/leads", "m6", NEW, 299, &lead()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "inside the window");

    // A body changed after signing.
    let body = lead().to_string();
    let timestamp = app.clock.now().timestamp();
    let signature = format!("v1,{}", sign(NEW, "m7", timestamp, body.as_bytes()));
    let response = app
        .client
        .post(format!("{}/webhooks/leads", app.url))
        .header("webhook-id", "m7")
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.replace("Müller GmbH", "Evil GmbH"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // No headers at all.
    let response = app
        .client
        .post(format!("{}/webhooks/leads", app.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Signed, but not JSON.
    let timestamp = app.clock.now().timestamp();
    let response = app
        .client
        .post(format!("{}/webhooks/leads", app.url))
        .header("webhook-id", "m8")
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            format!("v1,{}", sign(NEW, "m8", timestamp, b"\x00\xffgarbage")),
        )
        .body(&b"\x00\xffgarbage"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    app.run_jobs().await;
    assert_eq!(
        customers(&app).await.len(),
        1,
        "only the one inside the window"
    );
}

/// `intake.replay_window_secs` narrows (or widens) how old a delivery's timestamp may be.
async fn the_replay_window_is_configured(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.intake
            .webhook_secrets
            .insert("website".into(), secret(NEW).into());
        c.intake.replay_window_secs = 60;
    })
    .await;
    for (id, age) in [("w1", 61), ("w2", -61)] {
        let (status, body) = deliver(&app, "/webhooks/leads", id, NEW, age, &lead()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{age} s: {body}");
    }
    let (status, body) = deliver(&app, "/webhooks/leads", "w3", NEW, 59, &lead()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "inside 60 s: {body}");
}

async fn a_rotated_secret_and_repeated_deliveries_are_handled(backend: TestBackend) {
    let app = app(backend).await;
    // Signed with the old secret while both are configured; and a header with several
    // signatures (old and new), as senders do while rotating.
    let (status, first) = deliver(&app, "/webhooks/leads/website", "dup", OLD, 0, &lead()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    app.run_jobs().await;

    let body = lead().to_string();
    let timestamp = app.clock.now().timestamp();
    let both = format!(
        "v1,{} v1,{}",
        sign(
            b"some other key of 24 by",
            "dup",
            timestamp,
            body.as_bytes()
        ),
        sign(NEW, "dup", timestamp, body.as_bytes())
    );
    let response = app
        .client
        .post(format!("{}/webhooks/leads", app.url))
        .header("webhook-id", "dup")
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", both)
        .body(body)
        .send()
        .await
        .unwrap();
    // The same delivery id again: the first result, nothing new.
    assert_eq!(response.status(), StatusCode::OK);
    let repeat: Value = response.json().await.unwrap();
    assert_eq!(repeat["id"], first["id"]);
    assert_eq!(repeat["repeated"], true);
    assert_eq!(repeat["status"], "processed");
    assert_eq!(repeat["result"]["outcome"], "created");
    assert_eq!(app.run_jobs().await, 0, "no job was queued for the repeat");
    assert_eq!(customers(&app).await.len(), 1);

    // The same id from another source is another delivery.
    let (status, _) = deliver(
        &app,
        "/webhooks/leads",
        "dup",
        b"the partner's own secret",
        0,
        &json!({ "email": "p@partner.at" }),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

async fn deliveries_arriving_together_are_stored_together_each_once(backend: TestBackend) {
    let app = app(backend).await;
    // 20 deliveries, each sent three times at once (senders retry), all arriving together.
    let sends = (0..60).map(|i| {
        let app = &app;
        async move {
            let id = format!("burst-{}", i % 20);
            let body = json!({ "email": format!("burst{}@example.com", i % 20), "name": "Burst" });
            let answer = deliver(app, "/webhooks/leads/website", &id, NEW, 0, &body).await;
            (id, answer)
        }
    });
    let mut answers: std::collections::BTreeMap<String, Vec<(StatusCode, Value)>> =
        std::collections::BTreeMap::new();
    for (id, answer) in futures_util::future::join_all(sends).await {
        answers.entry(id).or_default().push(answer);
    }
    assert_eq!(answers.len(), 20);
    for (id, answers) in &answers {
        let firsts: Vec<&Value> = answers
            .iter()
            .filter(|(status, _)| *status == StatusCode::ACCEPTED)
            .map(|(_, body)| body)
            .collect();
        assert_eq!(
            firsts.len(),
            1,
            "{id}: one delivery is the first: {answers:?}"
        );
        for (status, body) in answers {
            if *status != StatusCode::ACCEPTED {
                assert_eq!(*status, StatusCode::OK, "{id}: {body}");
                assert_eq!(body["repeated"], true, "{id}: {body}");
                assert_eq!(body["id"], firsts[0]["id"], "{id}: the first's entry");
            }
        }
    }
    app.run_jobs().await;
    for (id, answers) in &answers {
        let first = answers
            .iter()
            .find(|(status, _)| *status == StatusCode::ACCEPTED)
            .map(|(_, body)| body["id"].as_str().unwrap().to_owned())
            .unwrap();
        let entry = inbox::get(&app.db, &first).await.unwrap().unwrap();
        assert_eq!(entry.status, InboxStatus::Processed, "{id}: its job ran");
    }
    assert_eq!(customers(&app).await.len(), 20, "each lead once");

    // Stored straight through the store, 40 deliveries that arrive at once share
    // transactions. One at a time, each costs four statements (BEGIN, two inserts, COMMIT);
    // together, SQLite needs its two inserts per delivery and PostgreSQL one statement.
    let before = app.db.statement_count();
    let receives = (0..40).map(|i| {
        let new = inbox::NewInboxEntry {
            channel: "webhook".into(),
            source: "website".into(),
            idempotency_key: Some(format!("webhook:website:together-{i}")),
            content_type: None,
            payload: json!({ "name": "Together", "email": format!("together{i}@example.com") })
                .to_string(),
        };
        let job = |id: &str| {
            crm_plugins::intake::import_lead_job(id, Default::default(), app.clock.now())
        };
        inbox::receive(&app.db, new, job, app.clock.now())
    });
    let received = futures_util::future::join_all(receives).await;
    let statements = app.db.statement_count() - before;
    assert!(
        statements < 3 * 40,
        "{statements} statements for 40 deliveries"
    );
    app.run_jobs().await;
    for received in received {
        let Ok(inbox::Received::New(entry)) = received else {
            panic!("{received:?}");
        };
        let entry = inbox::get(&app.db, &entry.id).await.unwrap().unwrap();
        assert_eq!(entry.status, InboxStatus::Processed);
    }
    let all = app
        .graphql_ok("{ customers(first: 100) { nodes { id } } }", json!({}))
        .await;
    assert_eq!(all["customers"]["nodes"].as_array().unwrap().len(), 60);
}

/// While the database is unreachable, no delivery is acknowledged: each gets a 503, so its
/// sender delivers it again; once the database is back, the inbox writer starts anew and the
/// repeated deliveries are stored, each once. (On PostgreSQL only: an embedded SQLite database
/// cannot be taken away from a running server.)
async fn deliveries_while_the_database_is_away_are_refused_and_stored_when_sent_again(
    backend: TestBackend,
) {
    if backend == TestBackend::Sqlite {
        return;
    }
    let app = TestApp::spawn_with(backend, |c| {
        c.intake
            .webhook_secrets
            .insert("website".into(), secret(NEW).into());
        c.database.acquire_timeout_ms = 1_000;
    })
    .await;
    let lead =
        |i: usize| json!({ "name": format!("Away {i}"), "email": format!("away{i}@example.com") });
    let (status, body) = deliver(&app, "/webhooks/leads", "away-0", NEW, 0, &lead(0)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    app.take_database_away().await;
    let away = futures_util::future::join_all((1..=5).map(|i| {
        let (app, lead) = (&app, lead(i));
        async move { deliver(app, "/webhooks/leads", &format!("away-{i}"), NEW, 0, &lead).await }
    }))
    .await;
    for (status, body) in &away {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }

    app.give_database_back().await;
    for i in 1..=5 {
        let id = format!("away-{i}");
        let (status, body) = deliver(&app, "/webhooks/leads", &id, NEW, 0, &lead(i)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{id}: {body}");
    }
    let (status, body) = deliver(&app, "/webhooks/leads", "away-3", NEW, 0, &lead(3)).await;
    assert_eq!(status, StatusCode::OK, "a repeat: {body}");
    app.run_jobs().await;
    let mut names: Vec<String> = customers(&app)
        .await
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["Away 0", "Away 1", "Away 2", "Away 3", "Away 4", "Away 5"]
    );
}

async fn a_delivery_that_cannot_be_stored_fails_alone(backend: TestBackend) {
    let app = app(backend).await;
    // PostgreSQL cannot store a NUL character in text; SQLite can. On PostgreSQL the batch
    // holding it fails, and its deliveries are then stored one by one.
    let receives = (0..10).map(|i| {
        let payload = if i == 4 {
            "{\"name\": \"Nul\", \"email\": \"nul\u{0}@example.com\"}".to_owned()
        } else {
            json!({ "name": "Fine", "email": format!("fine{i}@example.com") }).to_string()
        };
        let new = inbox::NewInboxEntry {
            channel: "webhook".into(),
            source: "website".into(),
            idempotency_key: Some(format!("webhook:website:alone-{i}")),
            content_type: None,
            payload,
        };
        let job = |id: &str| {
            crm_plugins::intake::import_lead_job(id, Default::default(), app.clock.now())
        };
        inbox::receive(&app.db, new, job, app.clock.now())
    });
    let received = futures_util::future::join_all(receives).await;
    app.run_jobs().await;
    for (i, received) in (0..).zip(received) {
        match (i, backend, received) {
            (4, TestBackend::Postgres, received) => assert!(received.is_err(), "{received:?}"),
            (_, _, Ok(inbox::Received::New(entry))) => {
                let entry = inbox::get(&app.db, &entry.id).await.unwrap().unwrap();
                // The NUL delivery is stored on SQLite; its job finds no valid email.
                let status = if i == 4 {
                    InboxStatus::Failed
                } else {
                    InboxStatus::Processed
                };
                assert_eq!(entry.status, status, "{i}: its job ran");
            }
            (_, _, received) => panic!("{i}: {received:?}"),
        }
    }
    assert_eq!(customers(&app).await.len(), 9, "the nine good leads");
}

async fn duplicates_merge_into_the_customer_they_duplicate(backend: TestBackend) {
    let app = app(backend).await;
    let existing = app
        .create_customer(json!({ "name": "J. Müller", "email": "j.mueller@firma.de" }))
        .await;
    // Differs only in case and format: the same person.
    let (status, _) = deliver(&app, "/webhooks/leads", "a", NEW, 0, &lead()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    app.run_jobs().await;
    let all = customers(&app).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    let merged = &all[0];
    assert_eq!(merged["id"], existing.as_str());
    assert_eq!(merged["name"], "J. Müller", "merge keeps what is there");
    assert_eq!(merged["phone"], "+4930123456", "and fills what is empty");
    assert_eq!(merged["company"], "Müller GmbH");
    assert_eq!(merged["tags"], json!(["messe"]));

    // The merge is audited as the import's.
    let audit = app
        .graphql_ok(
            "query($id: String) { auditLog(filter: {targetId: $id}) { nodes { action actorKind actor } } }",
            json!({ "id": existing }),
        )
        .await;
    let actions: Vec<&str> = audit["auditLog"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"customer.import_merge"), "{audit:#}");
}

const IMPORT: &str = "mutation($leads: [LeadInput!]!, $options: ImportOptionsInput) { \
    importLeads(leads: $leads, options: $options) { dryRun total created updated merged skipped invalid \
    rows { row outcome customerId reason issues { field code } } issuesCsv } }";

/// The import options one by one: `defaultCountry` reads national numbers, `onDuplicate`
/// UPDATE overwrites the customer a lead duplicates, SKIP leaves it, MERGE fills only what
/// is empty; an unknown default country is a per-lead issue with its code.
async fn import_options_set_the_region_and_what_a_duplicate_does(backend: TestBackend) {
    let app = app(backend).await;
    let import = |leads: Value, options: Value| {
        let app = &app;
        async move {
            app.graphql_ok(IMPORT, json!({ "leads": leads, "options": options }))
                .await["importLeads"]
                .clone()
        }
    };
    let ana = |company: &str| json!({ "name": "Ana", "email": "ana@firma.ba", "company": company });
    let mut first = ana("Alt");
    first["phone"] = json!("033 250 300");
    let report = import(json!([first]), json!({ "defaultCountry": "BA" })).await;
    assert_eq!(report["created"], 1, "{report:#}");
    let stored = || {
        let app = &app;
        async move {
            let all = customers(app).await;
            assert_eq!(all.len(), 1, "{all:#?}");
            all[0].clone()
        }
    };
    assert_eq!(
        stored().await["phone"],
        "+38733250300",
        "read as a Bosnian number"
    );

    let mut renamed = ana("Neu");
    renamed["name"] = json!("Ana Hodžić");
    let report = import(json!([renamed]), json!({ "onDuplicate": "UPDATE" })).await;
    assert_eq!(
        (&report["updated"], &report["created"]),
        (&json!(1), &json!(0)),
        "{report:#}"
    );
    let customer = stored().await;
    assert_eq!(
        (&customer["name"], &customer["company"]),
        (&json!("Ana Hodžić"), &json!("Neu"))
    );

    let report = import(
        json!([ana("Übersprungen")]),
        json!({ "onDuplicate": "SKIP" }),
    )
    .await;
    assert_eq!(report["skipped"], 1, "{report:#}");
    assert_eq!(stored().await["company"], "Neu", "SKIP changes nothing");

    let report = import(json!([ana("Gefüllt")]), json!({ "onDuplicate": "MERGE" })).await;
    assert_eq!(report["skipped"], 1, "nothing empty to fill: {report:#}");
    assert_eq!(
        stored().await["company"],
        "Neu",
        "MERGE keeps what is there"
    );

    let report = import(
        json!([{ "name": "Marko", "phone": "011 3334455" }]),
        json!({ "defaultCountry": "XX" }),
    )
    .await;
    assert_eq!(report["invalid"], 1, "{report:#}");
    assert_eq!(report["rows"][0]["issues"][0]["field"], "defaultCountry");
    assert_eq!(report["rows"][0]["issues"][0]["code"], "invalid_region");
}

async fn import_leads_reports_every_lead(backend: TestBackend) {
    let app = app(backend).await;
    let leads = json!([
        { "name": "Ana Hodžić", "email": "ana@firma.ba", "phone": "033 250 300", "country": "BA" },
        { "name": "Marko Marković", "phone": "011 3334455", "country": "RS" },
        { "firstName": "Lena", "lastName": "Huber", "phone": "12", "country": "AT" },
        { "name": "Иван Петровић", "email": "ivan@firma.rs", "phone": "+381 64 1234567" },
        { "name": "Ana H.", "email": " ANA@Firma.BA ", "company": "Firma d.o.o." },
        { "name": "Nobody" },
        { "name": "Urs Meier", "phone": "044 668 18 00", "country": "CH" },
        { "name": "Jürgen", "phone": "030 123456" },
    ]);
    let dry = app
        .graphql_ok(
            IMPORT,
            json!({ "leads": leads, "options": { "dryRun": true } }),
        )
        .await;
    let report = &dry["importLeads"];
    assert_eq!(report["dryRun"], true);
    assert_eq!(customers(&app).await.len(), 0, "a dry run changes nothing");

    let data = app
        .graphql_ok(
            IMPORT,
            json!({ "leads": leads, "options": { "tags": ["q4"], "source": "messe" } }),
        )
        .await;
    let report = &data["importLeads"];
    assert_eq!(
        (
            report["total"].as_i64(),
            report["created"].as_i64(),
            report["merged"].as_i64(),
            report["invalid"].as_i64()
        ),
        (Some(8), Some(5), Some(1), Some(2)),
        "{report:#}"
    );
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows[2]["outcome"], "INVALID");
    assert_eq!(rows[2]["issues"][0]["field"], "phone");
    assert_eq!(
        rows[4]["outcome"], "MERGED",
        "the same email, in other case and spacing"
    );
    assert_eq!(rows[4]["customerId"], rows[0]["customerId"]);
    assert_eq!(rows[5]["issues"][0]["code"], "contact_required");
    let csv = report["issuesCsv"].as_str().unwrap();
    assert!(csv.starts_with("row,field,code,message\n3,phone,"), "{csv}");
    // The dry run predicted the same, except the merge of a lead created in the same list.
    assert_eq!(dry["importLeads"]["invalid"], 2);

    let all = customers(&app).await;
    let phone = |name: &str| {
        all.iter()
            .find(|c| c["name"] == name)
            .map(|c| c["phone"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(phone("Ana Hodžić").as_deref(), Some("+38733250300"));
    assert_eq!(phone("Marko Marković").as_deref(), Some("+381113334455"));
    assert_eq!(phone("Urs Meier").as_deref(), Some("+41446681800"));
    assert_eq!(
        phone("Jürgen").as_deref(),
        Some("+4930123456"),
        "default region"
    );
    let ana = all.iter().find(|c| c["name"] == "Ana Hodžić").unwrap();
    assert_eq!(
        ana["company"], "Firma d.o.o.",
        "filled by the later duplicate"
    );
    assert_eq!(ana["source"], "messe");
    assert_eq!(ana["tags"], json!(["q4"]));

    // Again, with SKIP: everything is a duplicate now.
    let again = app
        .graphql_ok(
            IMPORT,
            json!({ "leads": leads, "options": { "onDuplicate": "SKIP" } }),
        )
        .await;
    assert_eq!(again["importLeads"]["skipped"], 6);
    assert_eq!(customers(&app).await.len(), 5);

    // Sales import their own leads only.
    let sales = app.token_for(crm_domain::Role::Sales, "anna");
    let mine = app
        .graphql_as(
            &sales,
            IMPORT,
            json!({ "leads": [
                { "name": "Own", "email": "own@firma.de" },
                { "name": "Other's", "email": "o@firma.de", "owner": "ben" },
                { "name": "Ana again", "email": "ana@firma.ba" },
            ] }),
        )
        .await;
    let rows = mine["data"]["importLeads"]["rows"].as_array().unwrap();
    assert_eq!(rows[0]["outcome"], "CREATED");
    assert_eq!(rows[1]["issues"][0]["code"], "owner_not_allowed");
    assert_eq!(
        rows[2]["outcome"], "MERGED",
        "unassigned customers are in a sales scope"
    );

    let too_many: Vec<Value> = (0..1001)
        .map(|n| json!({ "name": format!("L{n}"), "email": format!("l{n}@x.de") }))
        .collect();
    let refused = app.graphql(IMPORT, json!({ "leads": too_many })).await;
    assert_eq!(crm_tests::error_code(&refused), "VALIDATION_FAILED");
}

const UPLOAD: &str = "mutation($file: Upload!, $options: ImportOptionsInput, $mapping: [ColumnMapping!]) { \
    importLeadsFile(file: $file, options: $options, mapping: $mapping) { id status fileName format } }";

/// Uploads `content` as `name` through the GraphQL multipart protocol.
async fn upload(
    app: &TestApp,
    name: &str,
    content: &[u8],
    options: Value,
    mapping: Value,
) -> Value {
    let operations = json!({ "query": UPLOAD, "variables": { "file": null, "options": options, "mapping": mapping } });
    let form = reqwest::multipart::Form::new()
        .text("operations", operations.to_string())
        .text("map", json!({ "0": ["variables.file"] }).to_string())
        .part(
            "0",
            reqwest::multipart::Part::bytes(content.to_vec()).file_name(name.to_owned()),
        );
    app.client
        .post(format!("{}/graphql", app.url))
        .bearer_auth(&app.token)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const IMPORT_STATUS: &str = "query($id: ID!) { leadImport(id: $id) { status rowsDone created updated merged \
    skipped invalid error issues { row field code } issuesCsv } }";

/// JSON arrays and NDJSON files through the upload and the import job: each record is a row,
/// a bad line is that row's issue, and the rest are imported.
async fn json_and_ndjson_files_are_imported_row_by_row(backend: TestBackend) {
    let app = app(backend).await;
    let import = |name: &'static str, content: &'static str| {
        let app = &app;
        async move {
            let started = upload(app, name, content.as_bytes(), Value::Null, Value::Null).await;
            let id = started["data"]["importLeadsFile"]["id"].clone();
            assert!(id.is_string(), "{started:#}");
            app.run_jobs().await;
            app.graphql_ok(IMPORT_STATUS, json!({ "id": id })).await["leadImport"].clone()
        }
    };
    let ndjson = "{\"name\": \"Ana Hodžić\", \"email\": \"ana@firma.ba\", \"country\": \"BA\"}\n\
        not json\n\
        \n\
        {\"Vorname\": \"Lena\", \"Nachname\": \"Huber\", \"Telefon\": \"+43 1 234567\"}\n\
        [1, 2]\n";
    let report = import("leads.ndjson", ndjson).await;
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(
        (&report["rowsDone"], &report["created"], &report["invalid"]),
        (&json!(4), &json!(2), &json!(2)),
        "{report:#}"
    );
    let codes: Vec<(Value, Value)> = report["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["row"].clone(), i["code"].clone()))
        .collect();
    assert_eq!(
        codes,
        [
            (json!(2), json!("invalid_json")),
            (json!(4), json!("not_an_object"))
        ]
    );

    let array = r#"[{"name": "Марко Марковић", "phone": "+381 11 3334455"},
                    {"name": "Ana again", "email": "ANA@firma.ba"}]"#;
    let report = import("leads.json", array).await;
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(
        (&report["created"], &report["merged"], &report["skipped"]),
        (&json!(1), &json!(0), &json!(1)),
        "the second repeats Ana and adds nothing: {report:#}"
    );
    let mut names: Vec<String> = customers(&app)
        .await
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["Ana Hodžić", "Lena Huber", "Марко Марковић"]);
}

async fn a_messy_csv_file_gives_exactly_the_expected_report(backend: TestBackend) {
    let app = app(backend).await;
    let csv = "\u{feff}Vorname;Nachname;E-Mail;Telefon;Firma;Land;Notiz\r\n\
        Jürgen;Müller;J.Mueller@Firma.DE;030 123456;Müller GmbH;DE;\"Messe\r\nStand 4; Halle 2\"\r\n\
        Ана;Хоџић;ana@firma.ba;033 250 300;Firma d.o.o.;BA;\r\n\
        Marko;Marković;;011 3334455;;RS;\r\n\
        Lena;Huber;lena@huber.at;01 234567;;AT;\r\n\
        Urs;Meier;;044 668 18 00;;CH;\r\n\
        Jürgen;Müller; j.mueller@firma.de ;+49 30 123456;;DE;\r\n\
        Kein;Kontakt;;;;DE;\r\n\
        Falsch;Email;not-an-email;;;DE;\r\n\
        Lena;H.;LENA@HUBER.AT;;Huber KG;AT;\r\n";
    let started = upload(
        &app,
        "Messe Leads.csv",
        csv.as_bytes(),
        json!({ "source": "messe" }),
        Value::Null,
    )
    .await;
    let import = &started["data"]["importLeadsFile"];
    assert_eq!(import["status"], "queued", "{started:#}");
    assert_eq!(import["format"], "csv");
    assert_eq!(import["fileName"], "Messe Leads.csv");

    app.run_jobs().await;
    let data = app
        .graphql_ok(IMPORT_STATUS, json!({ "id": import["id"] }))
        .await;
    let report = &data["leadImport"];
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(
        [
            &report["rowsDone"],
            &report["created"],
            &report["merged"],
            &report["skipped"],
            &report["invalid"]
        ],
        [&json!(9), &json!(5), &json!(1), &json!(1), &json!(2)],
        "{report:#}"
    );
    assert_eq!(
        report["issues"],
        json!([
            { "row": 7, "field": "email", "code": "contact_required" },
            { "row": 8, "field": "email", "code": "invalid_email" },
        ])
    );
    assert!(
        report["issuesCsv"]
            .as_str()
            .unwrap()
            .contains("8,email,invalid_email,")
    );
    // The same, as a download.
    let download = app
        .client
        .get(format!(
            "{}/imports/{}/issues.csv",
            app.url,
            import["id"].as_str().unwrap()
        ))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    assert!(
        download.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = download.text().await.unwrap();
    assert_eq!(text, report["issuesCsv"].as_str().unwrap());
    let anonymous = app
        .client
        .get(format!(
            "{}/imports/{}/issues.csv",
            app.url,
            import["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let other = app.token_for(crm_domain::Role::Sales, "ben");
    let hidden = app
        .client
        .get(format!(
            "{}/imports/{}/issues.csv",
            app.url,
            import["id"].as_str().unwrap()
        ))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);

    // The batch's audit entries extend the hash chain like single ones.
    let verified = crm_store::audit::verify(&app.db).await.unwrap();
    assert!(
        matches!(verified, crm_store::audit::Verification::Intact { entries } if entries >= 6),
        "{verified:?}"
    );
    let all = customers(&app).await;
    assert_eq!(all.len(), 5);
    let by_name = |name: &str| all.iter().find(|c| c["name"] == name).unwrap().clone();
    let jurgen = by_name("Jürgen Müller");
    assert_eq!(jurgen["email"], "j.mueller@firma.de");
    assert_eq!(jurgen["notes"], "Messe\r\nStand 4; Halle 2");
    assert_eq!(by_name("Ана Хоџић")["phone"], "+38733250300");
    assert_eq!(by_name("Marko Marković")["phone"], "+381113334455");
    assert_eq!(by_name("Lena Huber")["phone"], "+431234567");
    assert_eq!(
        by_name("Lena Huber")["company"],
        "Huber KG",
        "merged from row 9"
    );
    assert_eq!(by_name("Urs Meier")["phone"], "+41446681800");
    assert_eq!(jurgen["source"], "messe");
}

async fn bad_files_and_uploads_are_refused_or_reported(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |c| c.intake.max_file_bytes = 4096).await;
    // No column with an email or a phone: the import fails as a whole, with the reason.
    let started = upload(
        &app,
        "colors.csv",
        b"Lieblingsfarbe,Alter\nblau,3\n",
        Value::Null,
        Value::Null,
    )
    .await;
    let id = started["data"]["importLeadsFile"]["id"].clone();
    app.run_jobs().await;
    let data = app.graphql_ok(IMPORT_STATUS, json!({ "id": id })).await;
    assert_eq!(data["leadImport"]["status"], "failed");
    assert!(
        data["leadImport"]["error"]
            .as_str()
            .unwrap()
            .contains("email or a phone")
    );

    // … unless a mapping names the columns.
    let started = upload(
        &app,
        "mapped.csv",
        b"Kundenmail,Wer\nx@firma.de,Xaver\n",
        Value::Null,
        json!([{ "column": "Kundenmail", "field": "email" }, { "column": "Wer", "field": "name" }]),
    )
    .await;
    let id = started["data"]["importLeadsFile"]["id"].clone();
    app.run_jobs().await;
    let data = app.graphql_ok(IMPORT_STATUS, json!({ "id": id })).await;
    assert_eq!(data["leadImport"]["created"], 1, "{data:#}");

    // Binary garbage is no format at all; an empty JSON array is an honest empty import.
    let refused = upload(&app, "blob", b"\xff\xfe\x00\x01", Value::Null, Value::Null).await;
    assert_eq!(
        crm_tests::error_code(&refused),
        "VALIDATION_FAILED",
        "{refused:#}"
    );
    let started = upload(&app, "none.json", b"[]", Value::Null, Value::Null).await;
    let id = started["data"]["importLeadsFile"]["id"].clone();
    app.run_jobs().await;
    let data = app.graphql_ok(IMPORT_STATUS, json!({ "id": id })).await;
    assert_eq!(data["leadImport"]["status"], "completed");
    assert_eq!(data["leadImport"]["rowsDone"], 0);

    // Too large; and no credentials.
    let big = vec![b'a'; 5000];
    let response = upload(&app, "big.csv", &big, Value::Null, Value::Null).await;
    assert_eq!(
        crm_tests::error_code(&response),
        "PAYLOAD_TOO_LARGE",
        "{response:#}"
    );
    let form = reqwest::multipart::Form::new()
        .text(
            "operations",
            json!({ "query": UPLOAD, "variables": { "file": null } }).to_string(),
        )
        .text("map", json!({ "0": ["variables.file"] }).to_string())
        .part(
            "0",
            reqwest::multipart::Part::bytes(b"email\na@b.de\n".to_vec()).file_name("x.csv"),
        );
    let response = app
        .client
        .post(format!("{}/graphql", app.url))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Another sales user cannot read someone else's import.
    let sales = app.token_for(crm_domain::Role::Sales, "ben");
    let hidden = app
        .graphql_as(&sales, IMPORT_STATUS, json!({ "id": id }))
        .await;
    assert_eq!(crm_tests::error_code(&hidden), "NOT_FOUND");
}

/// Leads that repeat customers held before the import: a dry run and the import itself find
/// them by looking their contacts up and leave them to the careful way, and nothing of theirs
/// (customer, run, tag, audit entry) is written twice.
async fn a_file_repeating_known_customers_skips_them_in_a_dry_run_and_for_real(
    backend: TestBackend,
) {
    let app = app(backend).await;
    app.create_customer(json!({ "name": "Alt Kunde", "email": "alt@known.example" }))
        .await;
    app.create_customer(json!({ "name": "Telefon Kunde", "phone": "+49 30 999999" }))
        .await;
    let csv = "Name;E-Mail;Telefon;Land\n\
        Neu Eins;eins@new.example;;DE\n\
        Alt K.;ALT@Known.Example;;DE\n\
        Neu Zwei;zwei@new.example;030 111111;DE\n\
        Telefon K.;;030 999999;DE\n\
        Neu Drei;drei@new.example;;DE\n";
    let options = |dry: bool| json!({ "dryRun": dry, "onDuplicate": "SKIP", "tags": ["messe"] });
    let report = |id: Value| {
        let app = &app;
        async move {
            app.run_jobs().await;
            app.graphql_ok(IMPORT_STATUS, json!({ "id": id })).await["leadImport"].clone()
        }
    };
    let counts = |r: &Value| {
        [
            "rowsDone", "created", "updated", "merged", "skipped", "invalid",
        ]
        .map(|k| r[k].as_i64().unwrap())
    };

    let dry = upload(
        &app,
        "leads.csv",
        csv.as_bytes(),
        options(true),
        Value::Null,
    )
    .await;
    let dry = report(dry["data"]["importLeadsFile"]["id"].clone()).await;
    assert_eq!(dry["status"], "completed", "{dry:#}");
    assert_eq!(counts(&dry), [5, 3, 0, 0, 2, 0], "{dry:#}");
    assert_eq!(customers(&app).await.len(), 2, "a dry run stores nothing");

    let real = upload(
        &app,
        "leads.csv",
        csv.as_bytes(),
        options(false),
        Value::Null,
    )
    .await;
    let real = report(real["data"]["importLeadsFile"]["id"].clone()).await;
    assert_eq!(real["status"], "completed", "{real:#}");
    assert_eq!(counts(&real), [5, 3, 0, 0, 2, 0], "{real:#}");
    let all = customers(&app).await;
    assert_eq!(all.len(), 5, "{all:#?}");
    assert!(
        all.iter().any(|c| c["name"] == "Alt Kunde"),
        "left as it was"
    );
    assert!(all.iter().any(|c| c["name"] == "Telefon Kunde"));
    let count = |sql: &'static str| {
        let db = app.db.clone();
        async move { db.count_raw(sql).await.unwrap() }
    };
    assert_eq!(
        count("SELECT count(*) AS n FROM pipeline_runs WHERE cause = 'import'").await,
        3
    );
    assert_eq!(
        count("SELECT count(*) AS n FROM customer_tags WHERE tag = 'messe'").await,
        3
    );
    assert_eq!(
        count("SELECT count(*) AS n FROM audit_log WHERE action = 'customer.import'").await,
        3
    );
    assert!(matches!(
        crm_store::audit::verify(&app.db).await.unwrap(),
        crm_store::audit::Verification::Intact { .. }
    ));
}

/// A worker that dies after a batch was stored but before its progress was recorded leaves the
/// import to be resumed from the last recorded row: the replayed rows find the customers they
/// created and count as created again, not as duplicates.
async fn a_batch_replayed_after_a_crash_counts_its_rows_as_before(backend: TestBackend) {
    let app = app(backend).await;
    let erased = app
        .create_customer(json!({ "name": "Gone", "email": "gone@kunde.de" }))
        .await;
    app.graphql_ok(
        "mutation($c: ID!) { eraseCustomer(customerId: $c, reason: \"request\") { customerId } }",
        json!({ "c": erased }),
    )
    .await;
    app.run_jobs().await;
    // The last two rows go one by one: the first names an erased person (refused), the
    // second shares the first's phone, which no customer holds, so it is created one by one,
    // not with the batch.
    let csv = "Name;E-Mail;Telefon\n\
        Jürgen Müller;j.mueller@firma.de;030 123456\n\
        Ana Hodžić;ana@firma.ba;033 250 300\n\
        Jürgen M.;J.Mueller@Firma.de;\n\
        Lena Huber;lena@huber.at;+43 1 234567\n\
        Gone Again;gone@kunde.de;030 777777\n\
        Neu Kunde;;030 777777\n";
    let started = upload(&app, "leads.csv", csv.as_bytes(), json!({}), Value::Null).await;
    let id = started["data"]["importLeadsFile"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_jobs().await;
    let counts = |data: &Value| {
        let r = &data["leadImport"];
        [
            r["created"].clone(),
            r["merged"].clone(),
            r["skipped"].clone(),
            r["invalid"].clone(),
        ]
    };
    let first = app.graphql_ok(IMPORT_STATUS, json!({ "id": id })).await;
    let [created, merged, skipped, invalid] = counts(&first);
    assert_eq!(created, 4, "{first:#}");
    assert_eq!(
        merged.as_i64().unwrap() + skipped.as_i64().unwrap(),
        1,
        "row 3 duplicates row 1: {first:#}"
    );
    assert_eq!(invalid, 1, "row 5 is erased: {first:#}");

    // The crash: the rows are stored, the progress is lost, the file is still there.
    app.db
        .execute_raw(&format!(
            "UPDATE imports SET rows_done = 0, created = 0, updated = 0, merged = 0, \
             skipped = 0, invalid = 0, status = 'running', finished_at = NULL, runner = NULL \
             WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    // Before the replay, someone changes Ana's email and phone: the replay cannot find her by
    // her contacts, only by the id her row gave her.
    let ana = customers(&app)
        .await
        .into_iter()
        .find(|c| c["email"] == "ana@firma.ba")
        .unwrap();
    app.graphql_ok(
        "mutation($id: ID!) { updateCustomer(id: $id, input: { email: \"ana@neu.ba\", phone: \"+387 33 999 999\" }) { id } }",
        json!({ "id": ana["id"] }),
    )
    .await;
    std::fs::write(app.config.intake.import_dir.join(&id), csv).unwrap();
    let now = crm_domain::Clock::now(app.clock.as_ref());
    crm_store::jobs::enqueue(
        &app.db,
        &crm_store::jobs::NewJob {
            kind: "import-file".into(),
            payload: json!({ "import_id": id }).to_string(),
            dedupe_key: None,
            priority: 0,
            run_at: now,
            max_attempts: 1,
        },
        now,
    )
    .await
    .unwrap();
    app.run_jobs().await;
    let replayed = app.graphql_ok(IMPORT_STATUS, json!({ "id": id })).await;
    assert_eq!(replayed["leadImport"]["status"], "completed");
    // Rows 2 and 6 included: this import created them, so they count as created again.
    assert_eq!(counts(&replayed), counts(&first), "{replayed:#}");
    assert_eq!(customers(&app).await.len(), 4, "nothing stored twice");
}

/// A file of more rows than one batch holds: batches are validated while the one before is
/// written, so this checks that nothing is lost or stored twice across batches, that a lead
/// repeating one of an earlier batch is recognized as a duplicate, that an erased person is
/// refused, and that every created lead has its pipeline run and job, its audit entry in a
/// chain that verifies, and its consent in the ledger.
async fn a_file_of_several_batches_creates_each_lead_once_with_its_run_job_audit_and_consent(
    backend: TestBackend,
) {
    // Batches of 2,000 on SQLite, of 1,000 on PostgreSQL: several either way, and the last
    // one partial.
    const ROWS: u32 = 4_500;
    let app = app(backend).await;
    let erased = app
        .create_customer(json!({ "name": "Gone", "email": "erased@big.example" }))
        .await;
    app.graphql_ok(
        "mutation($c: ID!) { eraseCustomer(customerId: $c, reason: \"request\") { customerId } }",
        json!({ "c": erased }),
    )
    .await;
    app.run_jobs().await;

    let mut csv = String::from("Vorname;Nachname;E-Mail;Telefon;Firma;consent_email\n");
    for i in 1..=ROWS {
        let (email, phone) = match i {
            2500 => ("lead10@big.example".to_owned(), 30_002_500), // row 10's email
            // Row 1990's email, from the batch just before on both backends: on PostgreSQL
            // this batch is looked up before that one has committed.
            2050 => ("lead1990@big.example".to_owned(), 30_002_050),
            4200 => (format!("lead{i}@big.example"), 20_002_100), // row 2100's phone
            3000 => ("not-an-email".to_owned(), 0),
            4400 => ("erased@big.example".to_owned(), 30_004_400),
            _ => (format!("lead{i}@big.example"), 20_000_000 + i),
        };
        let phone = if phone == 0 {
            String::new()
        } else {
            format!("+49 151 {phone}")
        };
        let consent = if i % 3 == 0 { "true" } else { "" };
        csv.push_str(&format!(
            "Lead;Nr {i};{email};{phone};Firma {};{consent}\n",
            i % 7
        ));
    }
    let started = upload(&app, "big.csv", csv.as_bytes(), json!({}), Value::Null).await;
    let id = started["data"]["importLeadsFile"]["id"].clone();
    // One round of the runner: the import alone (the jobs it queues are checked, not run).
    let ran = app.runner().run_once().await.unwrap();
    assert_eq!(ran, 1);
    let report = app.graphql_ok(IMPORT_STATUS, json!({ "id": id })).await;
    let r = &report["leadImport"];
    assert_eq!(r["status"], "completed", "{report:#}");
    assert_eq!(r["rowsDone"], ROWS);
    let created = ROWS - 5;
    assert_eq!(r["created"], created, "{report:#}");
    assert_eq!(
        r["merged"].as_u64().unwrap()
            + r["skipped"].as_u64().unwrap()
            + r["updated"].as_u64().unwrap(),
        3,
        "rows 2050, 2500 and 4200 repeat leads of earlier batches: {report:#}"
    );
    assert_eq!(r["invalid"], 2, "{report:#}");
    let codes: Vec<(u64, &str)> = r["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["row"].as_u64().unwrap(), i["code"].as_str().unwrap()))
        .collect();
    assert_eq!(codes[0], (3000, "invalid_email"), "{codes:?}");
    assert_eq!(
        codes.last().unwrap().0,
        4400,
        "the erased person: {codes:?}"
    );

    let count = |sql: &'static str| {
        let db = app.db.clone();
        async move { db.count_raw(sql).await.unwrap() }
    };
    let created = i64::from(created);
    assert_eq!(
        count("SELECT count(*) AS n FROM customers WHERE email LIKE 'lead%@big.example'").await,
        created,
        "each lead stored once"
    );
    assert_eq!(
        count("SELECT count(DISTINCT customer_id) AS n FROM pipeline_runs WHERE cause = 'import'")
            .await,
        created
    );
    assert_eq!(
        count("SELECT count(*) AS n FROM pipeline_runs WHERE cause = 'import'").await,
        created,
        "one run per lead"
    );
    assert_eq!(
        count(
            "SELECT count(*) AS n FROM pipeline_runs r JOIN pipeline_steps s ON s.run_id = r.id \
             JOIN jobs j ON j.id = s.job_id WHERE r.cause = 'import' AND j.kind = 'qualify-lead' \
             AND j.status = 'queued'"
        )
        .await,
        created,
        "each run's first step has its queued job"
    );
    assert_eq!(
        count("SELECT count(*) AS n FROM audit_log WHERE action = 'customer.import'").await,
        created
    );
    assert!(matches!(
        crm_store::audit::verify(&app.db).await.unwrap(),
        crm_store::audit::Verification::Intact { .. }
    ));
    // Rows divisible by 3 consented, but for row 3000 (invalid) and row 4200 (merged into row
    // 2100, which consented already).
    assert_eq!(
        count("SELECT count(*) AS n FROM customers WHERE consent_email AND email LIKE 'lead%'")
            .await,
        1_498
    );
    assert_eq!(
        count(
            "SELECT count(*) AS n FROM customers c WHERE c.consent_email AND NOT EXISTS \
             (SELECT 1 FROM consents k WHERE k.customer_id = c.id AND k.source = 'import')"
        )
        .await,
        0,
        "every consent is in the ledger"
    );
}

/// With fewer than four pooled connections, a batch may not hold one while the batch before
/// needs one: PostgreSQL imports one batch after the other too, as SQLite always does. This
/// runs that path on PostgreSQL (the deadlock it avoids needs a multi-threaded runtime, where
/// the batch's writer task can take the only connection first: this test's runtime has one
/// thread, so it would pass without the rule).
async fn a_file_of_several_batches_imports_on_a_pool_of_one_connection(backend: TestBackend) {
    const ROWS: u32 = 2_500;
    let app = TestApp::spawn_with(backend, |c| c.database.max_connections = 1).await;
    let mut csv = String::from("Name;E-Mail\n");
    for i in 1..=ROWS {
        // Row 2100 repeats row 1990, from the batch before.
        let n = if i == 2100 { 1990 } else { i };
        csv.push_str(&format!("Lead {i};lead{n}@one.example\n"));
    }
    let started = upload(&app, "one.csv", csv.as_bytes(), json!({}), Value::Null).await;
    let id = started["data"]["importLeadsFile"]["id"].clone();
    assert_eq!(app.runner().run_once().await.unwrap(), 1);
    let report = app.graphql_ok(IMPORT_STATUS, json!({ "id": id })).await;
    let r = &report["leadImport"];
    assert_eq!(r["status"], "completed", "{report:#}");
    assert_eq!(r["rowsDone"], ROWS, "{report:#}");
    assert_eq!(r["created"], ROWS - 1, "{report:#}");
    assert_eq!(r["invalid"], 0, "{report:#}");
}

/// SQLite: a file import's commits do not copy the WAL into the database file themselves (that
/// fell on the one writer the import waits for): a background checkpoint does, soon after. The
/// pool's own threshold (10,000 pages) is far above what this import writes, so without the
/// background checkpoint the database file would not grow until the pool closed.
#[tokio::test]
async fn sqlite_checkpoints_the_wal_in_the_background() {
    const ROWS: u32 = 2_500;
    let app = TestApp::spawn(TestBackend::Sqlite).await;
    let path = app
        .config
        .database
        .url
        .trim_start_matches("sqlite://")
        .to_owned();
    let wal = format!("{path}-wal");
    let size = |p: &str| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let before = size(&path);
    let mut csv = String::from("Name;E-Mail\n");
    for i in 1..=ROWS {
        csv.push_str(&format!("Lead {i};lead{i}@wal.example\n"));
    }
    let started = upload(&app, "wal.csv", csv.as_bytes(), json!({}), Value::Null).await;
    let id = started["data"]["importLeadsFile"]["id"].clone();
    assert_eq!(app.runner().run_once().await.unwrap(), 1);
    let report = app.graphql_ok(IMPORT_STATUS, json!({ "id": id })).await;
    assert_eq!(report["leadImport"]["created"], ROWS, "{report:#}");
    assert!(size(&wal) > 1 << 20, "the import went through the WAL");
    // Polled, with a generous bound: the checkpoint runs on a thread every 100 ms.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while size(&path) < before + (1 << 20) {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {} bytes (WAL: {} bytes)",
            size(&path),
            size(&wal)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A file's rows arrive slowly (here through a pipe, as from a slow disk or a large file):
/// `leadImport` shows the import running with the rows recorded so far, batch by batch, and
/// then completed with all of them.
async fn progress_is_visible_while_an_import_runs(backend: TestBackend) {
    use std::io::Write as _;
    let app = app(backend).await;
    let row = |n: usize| format!("Lead {n},lead{n}@firma.de\n");
    let started = upload(
        &app,
        "slow.csv",
        format!("Name,E-Mail\n{}", row(0)).as_bytes(),
        Value::Null,
        Value::Null,
    )
    .await;
    let id = started["data"]["importLeadsFile"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The uploaded file is replaced by a pipe the test writes into.
    let path = app.config.intake.import_dir.join(&id);
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let (go_on, wait) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let mut pipe = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        pipe.write_all(b"Name,E-Mail\n").unwrap();
        for n in 1..=4_500 {
            pipe.write_all(row(n).as_bytes()).unwrap();
        }
        pipe.flush().unwrap();
        wait.recv().unwrap();
        for n in 4_501..=5_000 {
            pipe.write_all(row(n).as_bytes()).unwrap();
        }
    });
    let runner = app.runner();
    let running = tokio::spawn(async move { runner.run_once().await });

    // The first 4,500 rows fill two batches (2,000 on SQLite, 1,000 on PostgreSQL) whose
    // progress is recorded before the rest of the file has even been written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let midway = loop {
        let status = app.graphql_ok(IMPORT_STATUS, json!({ "id": id })).await["leadImport"].clone();
        if status["rowsDone"].as_i64().unwrap() >= 2_000 {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress recorded: {status:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(midway["status"], "running", "{midway:#}");
    let done = midway["rowsDone"].as_i64().unwrap();
    assert!(done <= 4_500, "{midway:#}");
    assert_eq!(
        done % 1_000,
        0,
        "progress is recorded per batch: {midway:#}"
    );
    assert_eq!(midway["created"], done, "{midway:#}");
    assert_eq!(midway["error"], Value::Null);

    go_on.send(()).unwrap();
    writer.join().unwrap();
    running.await.unwrap().unwrap();
    let finished = app.graphql_ok(IMPORT_STATUS, json!({ "id": id })).await["leadImport"].clone();
    assert_eq!(finished["status"], "completed", "{finished:#}");
    assert_eq!(
        (&finished["rowsDone"], &finished["created"]),
        (&json!(5_000), &json!(5_000)),
        "{finished:#}"
    );
}

/// A file that turns out broken partway (a JSON array cut off, a CSV quote never closed) keeps
/// the rows read before the break, and the import says it failed, where, and what it kept. An
/// empty file fails with its reason; a row too wide or with a quote left open is that row's
/// issue.
async fn a_file_that_breaks_midway_keeps_its_rows_and_says_where_it_broke(backend: TestBackend) {
    let app = app(backend).await;
    let import = |name: &'static str, content: String| {
        let app = &app;
        async move {
            let started = upload(app, name, content.as_bytes(), Value::Null, Value::Null).await;
            let id = started["data"]["importLeadsFile"]["id"].clone();
            assert!(id.is_string(), "{started:#}");
            app.run_jobs().await;
            app.graphql_ok(IMPORT_STATUS, json!({ "id": id })).await["leadImport"].clone()
        }
    };
    let cut = r#"[{"name": "Ana Hodžić", "email": "ana@firma.ba"},
                  {"name": "Марко Марковић", "phone": "+381 11 3334455"},
                  {"name": "Lena Hu"#;
    let report = import("cut.json", cut.to_owned()).await;
    assert_eq!(report["status"], "failed", "{report:#}");
    assert_eq!(
        (&report["rowsDone"], &report["created"]),
        (&json!(2), &json!(2)),
        "{report:#}"
    );
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("EOF"), "the reader's reason: {error}");

    // A quote opened in row 2 and never closed would swallow the rest of the file: the
    // reader stops at the largest record a row may take (1 MiB).
    let mut runaway =
        String::from("Name;E-Mail\nJürgen Müller;j@firma.de\nEmina;\"emina@firma.ba\n");
    for n in 0..60_000 {
        runaway.push_str(&format!("Lead {n};lead{n}@firma.de\n"));
    }
    let report = import("runaway.csv", runaway).await;
    assert_eq!(report["status"], "failed", "{report:#}");
    assert_eq!(report["created"], 1, "{report:#}");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("row 2") && error.contains("unclosed quote"),
        "where it broke, and why: {error}"
    );

    // An empty file fails with its reason; a row of 10,000 fields and a quote left open in
    // a short file are that row's issues, and the rows around them are imported.
    let report = import("empty.csv", String::new()).await;
    assert_eq!(report["status"], "failed", "{report:#}");
    assert!(
        report["error"].as_str().unwrap().contains("empty"),
        "{report:#}"
    );
    let wide = format!(
        "Name,E-Mail\nLena Huber,lena@firma.at\n{}\nPetar Perić,petar@firma.rs\n",
        vec!["x"; 10_000].join(",")
    );
    let report = import("wide.csv", wide).await;
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(
        (&report["created"], &report["invalid"]),
        (&json!(2), &json!(1)),
        "{report:#}"
    );
    assert_eq!(report["issues"][0]["row"], 2);
    assert_eq!(report["issues"][0]["code"], "too_many_fields");
    let open = format!(
        "Name,E-Mail,Notiz\nMia Kovač,mia@firma.ba,\"offen\n{}",
        "x,".repeat(6_000)
    );
    let report = import("open.csv", open).await;
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(report["issues"][0]["code"], "field_too_long", "{report:#}");

    let mut names: Vec<String> = customers(&app)
        .await
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Ana Hodžić",
            "Jürgen Müller",
            "Lena Huber",
            "Petar Perić",
            "Марко Марковић"
        ]
    );
}
