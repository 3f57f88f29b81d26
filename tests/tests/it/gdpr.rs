//! GDPR through the real server: the consent ledger, the export of everything held about a
//! person, erasure (no trace left in any text column, totals kept, the audit chain intact,
//! provider deletion, no re-import), withdrawal taking effect on queued work, retention with a
//! controllable clock, and bad requests.

use chrono::Duration;
use crm_domain::{Clock as _, Disposition, Role};
use crm_store::{audit::Verification, gdpr};
use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use crm_voice::simulator::script;
use serde_json::{Value, json};

on_both_backends!(
    consents_are_a_ledger_with_evidence,
    export_holds_every_kind_of_record,
    erasure_leaves_no_trace_keeps_totals_and_blocks_reimport,
    a_withdrawal_blocks_a_queued_call_and_a_queued_marketing_email,
    retention_removes_old_transcripts_and_erases_inactive_leads,
    bad_gdpr_requests_are_refused_clearly,
);

const NAME: &str = "Zlatana Ibrahimović-Kovač";
const EMAIL: &str = "zlatana.kovac@primjer.ba";

const EXPORT: &str = "query($c: ID!) { exportCustomerData(customerId: $c) }";
const ERASE: &str = "mutation($c: ID!, $r: String!) { eraseCustomer(customerId: $c, reason: $r) { \
    customerId reason erasedBy erasedAt alreadyErased providerDeletions } }";
const CONSENT: &str = "mutation($i: RecordConsentInput!) { recordConsent(input: $i) { \
    channel purpose basis granted source evidence recordedBy at } }";
const CONSENTS: &str =
    "query($c: ID!) { consents(customerId: $c) { channel purpose granted source evidence } }";
const REPORT: &str = "{ report(period: DAILY) { kpis { key value } } }";

fn answering_number() -> String {
    (0..10_000)
        .map(|n| format!("+4930555{n:04}"))
        .find(|n| {
            script::plan(42, n, "de", &|_| String::new()).disposition == Disposition::Answered
        })
        .unwrap()
}

async fn manual(backend: TestBackend) -> TestApp {
    TestApp::spawn_with(backend, |c| c.pipeline.start_on_create = false).await
}

async fn play(app: &TestApp, seconds: i64) {
    for _ in 0..seconds {
        app.clock.advance(Duration::seconds(1));
        app.run_jobs().await;
    }
}

/// A person with every kind of record: consents, an interaction, a score, a finished call
/// with its transcript, an email, a task, a do-not-call entry.
async fn person(app: &TestApp, phone: &str) -> String {
    let id = app
        .create_customer(json!({
            "name": NAME, "email": EMAIL, "phone": phone, "company": "Kovač d.o.o.",
            "language": "de", "source": "webform", "consentCall": true, "consentEmail": true,
            "notes": format!("{NAME} met us at the fair"),
        }))
        .await;
    app.graphql_ok(
        "mutation($i: LogInteractionInput!) { logInteraction(input: $i) { id } }",
        json!({ "i": { "customerId": id, "kind": "NOTE", "subject": format!("Call {NAME}"),
                       "body": format!("{NAME} wants an offer, write to {EMAIL}") } }),
    )
    .await;
    app.graphql_ok(
        "mutation($c: ID!) { qualifyLead(customerId: $c) { score } }",
        json!({ "c": id }),
    )
    .await;
    let call = app
        .graphql_ok(
            "mutation($c: ID!) { startVoiceCall(customerId: $c) { id } }",
            json!({ "c": id }),
        )
        .await["startVoiceCall"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_jobs().await;
    play(app, 40).await;
    let ended = app
        .graphql_ok(
            "query($id: ID!) { call(id: $id) { status segments { text } } }",
            json!({ "id": call }),
        )
        .await;
    assert_eq!(ended["call"]["status"], "ENDED", "{ended}");
    assert!(!ended["call"]["segments"].as_array().unwrap().is_empty());
    app.graphql_ok(
        "mutation($c: ID!, $t: String!) { sendEmail(customerId: $c, template: $t) { id } }",
        json!({ "c": id, "t": "follow-up" }),
    )
    .await;
    app.run_jobs().await;
    app.graphql_ok(
        "mutation($i: CreateTaskInput!) { createTask(input: $i) { id } }",
        json!({ "i": { "customerId": id, "title": format!("Call {NAME} back"),
                       "notes": format!("number {phone}") } }),
    )
    .await;
    app.graphql_ok(
        "mutation($p: String!, $r: String!) { addDoNotCall(phone: $p, reason: $r) { phone } }",
        json!({ "p": phone, "r": "asked on the phone" }),
    )
    .await;
    id
}

async fn consents_are_a_ledger_with_evidence(backend: TestBackend) {
    let app = manual(backend).await;
    let id = app
        .create_customer(json!({ "name": "Ana", "email": "ana@example.com", "consentEmail": true }))
        .await;
    let withdrawn = app
        .graphql_ok(
            CONSENT,
            json!({ "i": { "customerId": id, "channel": "EMAIL", "purpose": "MARKETING",
                           "granted": false, "evidence": "phone call of 25 Nov" } }),
        )
        .await;
    let ledger = withdrawn["recordConsent"].as_array().unwrap();
    assert_eq!(ledger.len(), 2, "{withdrawn}");
    assert_eq!(ledger[0]["granted"], true);
    assert_eq!(ledger[0]["source"], "api");
    assert_eq!(ledger[1]["granted"], false);
    assert_eq!(ledger[1]["evidence"], "phone call of 25 Nov");
    assert_eq!(ledger[1]["recordedBy"], "admin-test");
    let customer = app
        .graphql_ok(
            "query($id: ID!) { customer(id: $id) { consentEmail } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        customer["customer"]["consentEmail"], false,
        "the flag follows"
    );
    // An import records what the lead consented to, with its source.
    let imported = app
        .graphql_ok(
            "mutation($l: [LeadInput!]!) { importLeads(leads: $l) { created rows { customerId } } }",
            json!({ "l": [{ "name": "Imported", "email": "imp@example.com", "consentCall": true }] }),
        )
        .await;
    let imported_id = imported["importLeads"]["rows"][0]["customerId"].clone();
    let ledger = app.graphql_ok(CONSENTS, json!({ "c": imported_id })).await;
    assert_eq!(
        ledger["consents"],
        json!([{ "channel": "call", "purpose": "sales_follow_up", "granted": true,
                 "source": "import", "evidence": "import" }])
    );
    // A sales user sees only the ledgers of their customers.
    let ben = app.token_for(Role::Sales, "ben");
    app.graphql_ok(
        "mutation($id: ID!) { updateCustomer(id: $id, input: { owner: \"ana\" }) { id } }",
        json!({ "id": id }),
    )
    .await;
    let hidden = app.graphql_as(&ben, CONSENTS, json!({ "c": id })).await;
    assert_eq!(error_code(&hidden), "NOT_FOUND");
}

async fn export_holds_every_kind_of_record(backend: TestBackend) {
    let app = manual(backend).await;
    let id = person(&app, &answering_number()).await;
    let data = app.graphql_ok(EXPORT, json!({ "c": id })).await;
    let doc = &data["exportCustomerData"];
    assert_eq!(doc["format"], "crm.customer-export.v1");
    assert_eq!(doc["customer"]["name"], NAME);
    assert_eq!(doc["customer"]["email"], EMAIL);
    for kind in [
        "consents",
        "interactions",
        "calls",
        "emails",
        "scores",
        "tasks",
        "audit",
    ] {
        assert!(
            !doc[kind].as_array().unwrap().is_empty(),
            "the export holds {kind}: {doc:#}"
        );
    }
    let call = &doc["calls"][0];
    assert!(!call["segments"].as_array().unwrap().is_empty(), "{call}");
    assert!(call["transcript"].is_string());
    assert!(doc["scores"][0]["reasons"].is_array());
    assert_eq!(doc["doNotCall"], "asked on the phone");
    // Exporting is audited; a sales user may not export.
    let audit = app
        .graphql_ok(
            "{ auditLog(filter: { action: \"customer.export\" }) { nodes { targetId } } }",
            json!({}),
        )
        .await;
    assert_eq!(audit["auditLog"]["nodes"][0]["targetId"], id.as_str());
    let sales = app.token_for(Role::Sales, "ana");
    let refused = app.graphql_as(&sales, EXPORT, json!({ "c": id })).await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
}

fn kpis(report: &Value) -> Value {
    report["report"]["kpis"].clone()
}

async fn erasure_leaves_no_trace_keeps_totals_and_blocks_reimport(backend: TestBackend) {
    let app = manual(backend).await;
    let phone = answering_number();
    let id = person(&app, &phone).await;
    let before = kpis(&app.graphql_ok(REPORT, json!({})).await);
    assert!(
        matches!(
            crm_store::audit::verify(&app.db).await.unwrap(),
            Verification::Intact { .. }
        ),
        "intact before"
    );
    let outbox = |app: &TestApp| {
        std::fs::read_dir(&app.config.email.outbox.dir)
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(outbox(&app), 1, "the follow-up was written to the outbox");
    let erased = app
        .graphql_ok(
            ERASE,
            json!({ "c": id, "r": "Art. 17 request by email, ticket 4711" }),
        )
        .await;
    assert_eq!(outbox(&app), 0, "the outbox forgot the person's email");
    let erasure = &erased["eraseCustomer"];
    assert_eq!(erasure["alreadyErased"], false);
    assert_eq!(erasure["providerDeletions"], 1, "the simulated call");
    app.run_jobs().await;

    // No trace of the person in any text column.
    let national = phone.trim_start_matches("+49");
    for needle in ["Ibrahimović", "Kovač", EMAIL, phone.as_str(), national] {
        let found = gdpr::find_text(&app.db, needle).await.unwrap();
        assert!(found.is_empty(), "`{needle}` is still in {found:?}");
    }
    // Non-personal totals are unchanged; the audit chain still verifies.
    let after = kpis(&app.graphql_ok(REPORT, json!({})).await);
    assert_eq!(after, before);
    match crm_store::audit::verify(&app.db).await.unwrap() {
        Verification::Intact { entries } => assert!(entries > 5),
        broken => panic!("the chain broke: {broken:?}"),
    }
    let audit = app
        .graphql_ok(
            "{ auditLog(filter: { action: \"customer.erase\" }) { nodes { targetId actor } } }",
            json!({}),
        )
        .await;
    assert_eq!(audit["auditLog"]["nodes"][0]["targetId"], id.as_str());

    // Idempotent.
    let again = app
        .graphql_ok(ERASE, json!({ "c": id, "r": "again" }))
        .await;
    assert_eq!(again["eraseCustomer"]["alreadyErased"], true);
    assert_eq!(
        again["eraseCustomer"]["reason"],
        "Art. 17 request by email, ticket 4711"
    );

    // Never re-imported nor entered again; the do-not-call list still holds the number (hashed).
    let reimport = app
        .graphql_ok(
            "mutation($l: [LeadInput!]!) { importLeads(leads: $l) { created invalid rows { issues { code } } } }",
            json!({ "l": [{ "name": "Z. Kovač", "email": EMAIL.to_uppercase() },
                          { "name": "Someone", "phone": phone }] }),
        )
        .await;
    assert_eq!(reimport["importLeads"]["created"], 0, "{reimport}");
    assert_eq!(reimport["importLeads"]["invalid"], 2);
    assert_eq!(
        reimport["importLeads"]["rows"][0]["issues"][0]["code"],
        "erased"
    );
    let entered = app
        .graphql(
            "mutation($i: CreateCustomerInput!) { createCustomer(input: $i) { id } }",
            json!({ "i": { "name": "Z", "email": EMAIL } }),
        )
        .await;
    assert_eq!(error_code(&entered), "VALIDATION_FAILED");
    let other = app
        .create_customer(json!({ "name": "Other", "email": "other@example.com" }))
        .await;
    let given = app
        .graphql(
            "mutation($id: ID!, $p: String!) { updateCustomer(id: $id, input: { phone: $p }) { id } }",
            json!({ "id": other, "p": phone }),
        )
        .await;
    assert_eq!(error_code(&given), "VALIDATION_FAILED", "{given}");
    assert!(given.to_string().contains("erased"));
    let dnc = app
        .graphql_ok("{ doNotCallList { phone } }", json!({}))
        .await;
    let listed = dnc["doNotCallList"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0]["phone"].as_str().unwrap().starts_with("erased:"));
    // The export of an erased customer says so and holds nothing personal.
    let export = app.graphql_ok(EXPORT, json!({ "c": id })).await;
    let doc = &export["exportCustomerData"];
    assert_eq!(doc["customer"]["name"], "[erased]");
    assert_eq!(doc["customer"]["email"], Value::Null);
    assert!(doc["erasure"]["erasedAt"].is_string());
}

async fn a_withdrawal_blocks_a_queued_call_and_a_queued_marketing_email(backend: TestBackend) {
    let app = manual(backend).await;
    let id = app
        .create_customer(json!({ "name": "Lejla", "email": "lejla@example.com",
                                 "phone": answering_number(), "consentCall": true,
                                 "consentEmail": true, "language": "bs" }))
        .await;
    let call = app
        .graphql_ok(
            "mutation($c: ID!) { startVoiceCall(customerId: $c) { id status } }",
            json!({ "c": id }),
        )
        .await["startVoiceCall"]["id"]
        .clone();
    let email = app
        .graphql_ok(
            "mutation($c: ID!, $t: String!) { sendEmail(customerId: $c, template: $t) { id status } }",
            json!({ "c": id, "t": "nurture-1" }),
        )
        .await["sendEmail"]["id"]
        .clone();
    for channel in ["CALL", "EMAIL"] {
        app.graphql_ok(
            CONSENT,
            json!({ "i": { "customerId": id, "channel": channel,
                           "purpose": if channel == "CALL" { "SALES_FOLLOW_UP" } else { "MARKETING" },
                           "granted": false } }),
        )
        .await;
    }
    app.run_jobs().await;
    let blocked = app
        .graphql_ok(
            "query($id: ID!) { call(id: $id) { status disposition reason } }",
            json!({ "id": call }),
        )
        .await;
    assert_eq!(blocked["call"]["disposition"], "BLOCKED", "{blocked}");
    let emails = app
        .graphql_ok("{ emails { nodes { id status } } }", json!({}))
        .await;
    let sent = emails["emails"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == email)
        .unwrap()
        .clone();
    assert_ne!(sent["status"], "sent", "{sent}");
    let outbox = std::fs::read_dir(&app.config.email.outbox.dir)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(outbox, 0, "nothing was mailed");
}

async fn retention_removes_old_transcripts_and_erases_inactive_leads(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.pipeline.start_on_create = false;
        c.gdpr.retention.transcripts_days = 30;
        c.gdpr.retention.inactive_leads_days = 365;
    })
    .await;
    let phone = answering_number();
    let called = app
        .create_customer(
            json!({ "name": "Old Caller", "email": "old.caller@example.com",
                                 "phone": phone, "consentCall": true, "language": "de",
                                 "status": "PROSPECT" }),
        )
        .await;
    let idle = app
        .create_customer(json!({ "name": "Idle Lead", "email": "idle.lead@example.com" }))
        .await;
    app.graphql_ok(
        "mutation($c: ID!) { startVoiceCall(customerId: $c) { id } }",
        json!({ "c": called }),
    )
    .await;
    app.run_jobs().await;
    play(&app, 40).await;
    let enqueue = |app: &TestApp| {
        let now = app.clock.now();
        let db = app.db.clone();
        async move {
            crm_store::jobs::enqueue(
                &db,
                &crm_store::jobs::NewJob {
                    kind: "gdpr-retention".into(),
                    payload: "{}".into(),
                    dedupe_key: None,
                    priority: 0,
                    run_at: now,
                    max_attempts: 3,
                },
                now,
            )
            .await
            .unwrap();
        }
    };
    // 10 days later nothing has expired.
    app.clock.advance(Duration::days(10));
    enqueue(&app).await;
    app.run_jobs().await;
    assert!(
        !gdpr::find_text(&app.db, "Idle Lead")
            .await
            .unwrap()
            .is_empty()
    );
    let segments = |app: &TestApp| {
        let db = app.db.clone();
        async move { gdpr::find_text(&db, "").await.unwrap() }
    };
    let with_segments = segments(&app).await;
    assert!(
        with_segments.iter().any(|(t, _, _)| t == "call_segments"),
        "{with_segments:?}"
    );
    // 40 days after the call its transcript is gone, the call record stays.
    app.clock.advance(Duration::days(30));
    enqueue(&app).await;
    app.run_jobs().await;
    let left = segments(&app).await;
    assert!(
        !left.iter().any(|(t, _, _)| t == "call_segments"),
        "{left:?}"
    );
    let calls = app
        .graphql_ok("{ calls { nodes { status transcript } } }", json!({}))
        .await;
    assert_eq!(calls["calls"]["nodes"][0]["status"], "ENDED");
    assert_eq!(calls["calls"]["nodes"][0]["transcript"], Value::Null);
    assert!(
        !gdpr::find_text(&app.db, "Idle Lead")
            .await
            .unwrap()
            .is_empty()
    );
    // A year later the idle lead is erased; the prospect is not a lead and stays.
    app.clock.advance(Duration::days(340));
    enqueue(&app).await;
    app.run_jobs().await;
    assert!(
        gdpr::find_text(&app.db, "Idle Lead")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !gdpr::find_text(&app.db, "Old Caller")
            .await
            .unwrap()
            .is_empty()
    );
    let erasure = gdpr::erasure(&app.db, idle.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(erasure.reason.starts_with("retention"), "{erasure:?}");
    // Each run reports what it did in the audit log.
    let runs = app
        .graphql_ok(
            "{ auditLog(filter: { action: \"gdpr.retention\" }) { nodes { changes } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        runs["auditLog"]["nodes"].as_array().unwrap().len(),
        3,
        "{runs}"
    );
}

async fn bad_gdpr_requests_are_refused_clearly(backend: TestBackend) {
    let app = manual(backend).await;
    let unknown = app
        .graphql(
            ERASE,
            json!({ "c": uuid::Uuid::new_v4().to_string(), "r": "x" }),
        )
        .await;
    assert_eq!(error_code(&unknown), "NOT_FOUND");
    let bad_id = app.graphql(ERASE, json!({ "c": "nope", "r": "x" })).await;
    assert_eq!(error_code(&bad_id), "VALIDATION_FAILED");
    let id = app
        .create_customer(json!({ "name": "Mia", "email": "mia@example.com" }))
        .await;
    let no_reason = app.graphql(ERASE, json!({ "c": id, "r": "  " })).await;
    assert_eq!(error_code(&no_reason), "VALIDATION_FAILED");
    let sales = app.token_for(Role::Sales, "ana");
    let forbidden = app
        .graphql_as(&sales, ERASE, json!({ "c": id, "r": "because" }))
        .await;
    assert_eq!(error_code(&forbidden), "FORBIDDEN");
    let unknown_export = app
        .graphql(EXPORT, json!({ "c": uuid::Uuid::new_v4().to_string() }))
        .await;
    assert_eq!(error_code(&unknown_export), "NOT_FOUND");
    // A negative retention period stops the start with a clear message.
    let mut config = app.config.clone();
    config.gdpr.retention.transcripts_days = -5;
    let problems = config.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("gdpr.retention.transcripts_days")),
        "{problems:?}"
    );
}
