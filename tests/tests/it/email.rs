//! Email through the real server and the outbox sender: preview per language, send as an
//! idempotent job logged as an interaction, unsubscribe by the signed link, suppression at
//! enqueue and at send time, and template errors.

use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    previews_speak_the_customers_language,
    a_sent_email_is_in_the_outbox_once_and_logged,
    unsubscribing_by_the_link_suppresses_every_later_send,
    unknown_templates_and_missing_addresses_are_refused,
    a_cold_lead_is_nurtured_step_by_step_until_it_replies,
    a_provider_error_storm_is_retried_with_backoff_then_fails_without_a_copy,
    nurture_stops_on_unsubscribe_and_when_a_rescore_routes_the_lead_on,
);

const SEND: &str = "mutation($c: ID!, $t: String!) { sendEmail(customerId: $c, template: $t) \
    { id status subject category to } }";

async fn customer(app: &TestApp, name: &str, email: &str, language: &str) -> String {
    app.create_customer(json!({ "name": name, "email": email, "language": language,
                                "consentEmail": true }))
        .await
}

fn outbox(app: &TestApp) -> std::path::PathBuf {
    std::path::PathBuf::from(&app.config.email.outbox.dir)
}

fn eml(app: &TestApp, id: &str) -> String {
    std::fs::read_to_string(outbox(app).join(format!("{id}.eml"))).unwrap()
}

async fn email(app: &TestApp, customer: &str) -> Value {
    app.graphql_ok(
        "query($c: ID!) { emails(customerId: $c) { nodes { id status error interactionId sender \
         subject } } }",
        json!({ "c": customer }),
    )
    .await["emails"]["nodes"][0]
        .clone()
}

async fn previews_speak_the_customers_language(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |c| c.pipeline.start_on_create = false).await;
    for (language, name) in [
        ("de", "Jürgen Müller"),
        ("bs", "Amra Hodžić"),
        ("sr", "Милан Петровић"),
        ("en", "Ann Lee"),
    ] {
        let id = customer(&app, name, &format!("{language}@example.com"), language).await;
        let preview = app
            .graphql_ok(
                "query($c: ID!) { previewEmail(template: \"nurture-1\", customerId: $c) \
                 { language subject text html } }",
                json!({ "c": id }),
            )
            .await["previewEmail"]
            .clone();
        assert_eq!(preview["language"], language, "{preview:#}");
        assert!(!preview["subject"].as_str().unwrap().is_empty());
        let text = preview["text"].as_str().unwrap();
        assert!(text.contains("/unsubscribe/"), "{text}");
        assert!(
            preview["html"].as_str().unwrap().contains("<"),
            "{preview:#}"
        );
    }
    // An Austrian falls back to German; an unknown language to English.
    let austrian = customer(&app, "Eva Huber", "eva@example.at", "de-AT").await;
    let preview = app
        .graphql_ok(
            "query($c: ID!) { previewEmail(template: \"follow-up\", customerId: $c) { language } }",
            json!({ "c": austrian }),
        )
        .await;
    assert_eq!(preview["previewEmail"]["language"], "de");
}

async fn a_sent_email_is_in_the_outbox_once_and_logged(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |c| c.pipeline.start_on_create = false).await;
    let id = customer(&app, "Jürgen Müller", "j.mueller@firma.de", "de").await;
    let sent = app
        .graphql_ok(SEND, json!({ "c": id, "t": "nurture-1" }))
        .await["sendEmail"]
        .clone();
    assert_eq!(sent["status"], "queued");
    assert_eq!(sent["category"], "nurture");
    let email_id = sent["id"].as_str().unwrap().to_owned();

    app.run_jobs().await;
    let stored = email(&app, &id).await;
    assert_eq!(stored["status"], "sent", "{stored:#}");
    assert_eq!(stored["sender"], "outbox");
    let message = eml(&app, &email_id);
    assert!(message.contains("To: "), "{message}");
    assert!(message.contains("j.mueller@firma.de"));
    assert!(
        message.contains(&format!("Message-ID: <{email_id}@")),
        "{message}"
    );
    assert!(message.contains("List-Unsubscribe: <http"), "{message}");
    assert!(message.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    assert!(message.contains("text/plain") && message.contains("text/html"));

    // Logged as an interaction of kind email.
    let data = app
        .graphql_ok(
            "query($id: ID!) { customer(id: $id) { interactions { id kind outcome } } }",
            json!({ "id": id }),
        )
        .await;
    let interactions = data["customer"]["interactions"].as_array().unwrap();
    assert_eq!(interactions.len(), 1);
    assert_eq!(interactions[0]["kind"], "EMAIL");
    assert_eq!(interactions[0]["id"], stored["interactionId"]);

    // A send interrupted mid-way is not repeated (here: the outbox, whose write is
    // idempotent, writes its one file again; nothing new appears).
    app.db
        .execute_raw(&format!(
            "UPDATE emails SET status = 'sending' WHERE id = '{email_id}'"
        ))
        .await
        .unwrap();
    crm_store::jobs::enqueue(
        &app.db,
        &crm_store::jobs::NewJob {
            kind: "send-email".into(),
            payload: json!({ "email_id": email_id }).to_string(),
            dedupe_key: None,
            priority: 0,
            run_at: crm_domain::Clock::now(app.clock.as_ref()),
            max_attempts: 1,
        },
        crm_domain::Clock::now(app.clock.as_ref()),
    )
    .await
    .unwrap();
    app.run_jobs().await;
    let files = std::fs::read_dir(outbox(&app)).unwrap().count();
    assert_eq!(files, 1, "one email, one file");
}

async fn unsubscribing_by_the_link_suppresses_every_later_send(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |c| c.pipeline.start_on_create = false).await;
    let id = customer(&app, "Amra Hodžić", "amra@firma.ba", "bs").await;
    let first = app
        .graphql_ok(SEND, json!({ "c": id, "t": "nurture-1" }))
        .await["sendEmail"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_jobs().await;
    // A second one waits in the queue while the person unsubscribes.
    let second = app
        .graphql_ok(SEND, json!({ "c": id, "t": "nurture-2" }))
        .await["sendEmail"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = eml(&app, &first);
    let link = message
        .lines()
        .find_map(|l| l.strip_prefix("List-Unsubscribe: <"))
        .and_then(|l| l.strip_suffix('>'))
        .unwrap()
        .to_owned();
    let path = &link[link.find("/unsubscribe/").unwrap()..];

    // A forged token is refused; the real one shows a page in Bosnian.
    let forged = app
        .client
        .get(format!("{}/unsubscribe/{}.00ff", app.url, id))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 404);
    let page = app
        .client
        .get(format!("{}{path}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Odjavljeni ste"));

    // The queued one is suppressed at send time; a new one is refused at once.
    app.run_jobs().await;
    let data = app
        .graphql_ok(
            "query($c: ID!) { emails(customerId: $c) { nodes { id status error } } }",
            json!({ "c": id }),
        )
        .await;
    let suppressed = data["emails"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == second.as_str())
        .unwrap()
        .clone();
    assert_eq!(suppressed["status"], "suppressed", "{data:#}");
    assert!(
        suppressed["error"]
            .as_str()
            .unwrap()
            .contains("unsubscribed")
    );
    let refused = app
        .graphql(SEND, json!({ "c": id, "t": "nurture-3" }))
        .await;
    assert_eq!(error_code(&refused), "VALIDATION_FAILED", "{refused:#}");
    assert_eq!(std::fs::read_dir(outbox(&app)).unwrap().count(), 1);
}

async fn unknown_templates_and_missing_addresses_are_refused(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |c| c.pipeline.start_on_create = false).await;
    let id = customer(&app, "Ann Lee", "ann@example.com", "en").await;
    let unknown = app
        .graphql(SEND, json!({ "c": id, "t": "no-such-template" }))
        .await;
    assert_eq!(error_code(&unknown), "VALIDATION_FAILED", "{unknown:#}");
    assert!(
        unknown["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-template")
    );
    let no_address = app
        .create_customer(json!({ "name": "Phone Only", "phone": "+4930123456" }))
        .await;
    let refused = app
        .graphql(SEND, json!({ "c": no_address, "t": "follow-up" }))
        .await;
    assert_eq!(error_code(&refused), "VALIDATION_FAILED");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no email address")
    );
    // Without consent, no marketing mail.
    let unconsenting = app
        .create_customer(json!({ "name": "No Consent", "email": "nc@example.com" }))
        .await;
    let refused = app
        .graphql(SEND, json!({ "c": unconsenting, "t": "nurture-1" }))
        .await;
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("consent"),
        "{refused:#}"
    );
}

async fn templates_sent(app: &TestApp, customer: &str) -> Vec<String> {
    let data = app
        .graphql_ok(
            "query($c: ID!) { emails(customerId: $c) { nodes { template status } } }",
            json!({ "c": customer }),
        )
        .await;
    let mut sent: Vec<String> = data["emails"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "sent")
        .map(|e| e["template"].as_str().unwrap().to_owned())
        .collect();
    sent.sort();
    sent
}

async fn a_cold_lead_is_nurtured_step_by_step_until_it_replies(backend: TestBackend) {
    use chrono::Duration;
    let app = TestApp::spawn(backend).await;
    // Under the threshold: routed to nurture, which sends its first email at once.
    let id = app
        .create_customer(json!({ "name": "Ana Kovač", "email": "ana@gmail.com",
                                 "language": "bs", "consentEmail": true }))
        .await;
    app.run_jobs().await;
    assert_eq!(templates_sent(&app, &id).await, ["nurture-1"]);
    let runs = app
        .graphql_ok(
            "query($c: ID!) { pipelineRuns(filter: { customerId: $c }) { nodes { status branch \
             steps { name status detail } } } }",
            json!({ "c": id }),
        )
        .await;
    let run = &runs["pipelineRuns"]["nodes"][0];
    assert_eq!(run["branch"], "nurture", "{runs:#}");
    assert_eq!(run["status"], "COMPLETED");
    assert_eq!(run["steps"][2]["name"], "nurture-email");
    assert_eq!(run["steps"][2]["detail"]["enrolled"], true);

    // Not before its time; then the second step after three days.
    app.clock.advance(Duration::days(2));
    app.run_jobs().await;
    assert_eq!(templates_sent(&app, &id).await, ["nurture-1"]);
    app.clock.advance(Duration::days(1) + Duration::minutes(1));
    app.run_jobs().await;
    assert_eq!(templates_sent(&app, &id).await, ["nurture-1", "nurture-2"]);

    // The lead replies: the sequence stops before its third step.
    app.graphql_ok(
        "mutation($i: LogInteractionInput!) { logInteraction(input: $i) { id } }",
        json!({ "i": { "customerId": id, "kind": "EMAIL", "direction": "INBOUND",
                       "subject": "Re: Ihre Anfrage" } }),
    )
    .await;
    app.run_jobs().await;
    app.clock.advance(Duration::days(5));
    app.run_jobs().await;
    assert_eq!(templates_sent(&app, &id).await, ["nurture-1", "nurture-2"]);
    let enrollment = crm_store::nurture::latest_of(&app.db, &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(enrollment.status, "exited");
    assert_eq!(enrollment.exit_reason.as_deref(), Some("the lead replied"));
}

/// A SendGrid API that answers every send with 503, counting them.
async fn failing_sendgrid() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/v3/mail/send",
        axum::routing::post(move || {
            let hits = counted.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, "overloaded")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

async fn a_provider_error_storm_is_retried_with_backoff_then_fails_without_a_copy(
    backend: TestBackend,
) {
    use chrono::Duration;
    use std::sync::atomic::Ordering;
    let (url, hits) = failing_sendgrid().await;
    let app = TestApp::spawn_with(backend, |c| {
        c.pipeline.start_on_create = false;
        c.email.kind = "sendgrid".into();
        c.email.sendgrid.base_url = url;
        c.email.sendgrid.api_key = Some("SG.test".into());
    })
    .await;
    let id = customer(&app, "Ann Lee", "ann@example.com", "en").await;
    app.graphql_ok(SEND, json!({ "c": id, "t": "nurture-1" }))
        .await;

    app.run_jobs().await;
    let first = hits.load(Ordering::SeqCst);
    assert!(
        (1..=3).contains(&first),
        "a few tries inside one attempt: {first}"
    );
    let waiting = email(&app, &id).await;
    assert_eq!(
        waiting["status"], "queued",
        "back in the queue: {waiting:#}"
    );
    assert!(
        waiting["error"].as_str().unwrap().contains("503"),
        "{waiting:#}"
    );
    // Not before the backoff.
    app.run_jobs().await;
    assert_eq!(hits.load(Ordering::SeqCst), first);
    // Four more attempts with growing waits, then the dead letter fails the email.
    for _ in 0..8 {
        app.clock.advance(Duration::hours(1));
        app.run_jobs().await;
    }
    let failed = email(&app, &id).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert!(
        failed["error"].as_str().unwrap().contains("gave up"),
        "{failed:#}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        first * 5,
        "five attempts in all"
    );
}

async fn nurture_stops_on_unsubscribe_and_when_a_rescore_routes_the_lead_on(backend: TestBackend) {
    use chrono::Duration;
    let app = TestApp::spawn(backend).await;
    let leaving = app
        .create_customer(json!({ "name": "Ana Kovač", "email": "ana@gmail.com",
                                 "language": "bs", "consentEmail": true }))
        .await;
    let warming = app
        .create_customer(json!({ "name": "Mia Horvat", "email": "mia@gmail.com",
                                 "language": "bs", "consentEmail": true }))
        .await;
    app.run_jobs().await;
    assert_eq!(templates_sent(&app, &leaving).await, ["nurture-1"]);
    assert_eq!(templates_sent(&app, &warming).await, ["nurture-1"]);

    // Ana unsubscribes by the link in her first email.
    let data = app
        .graphql_ok(
            "query($c: ID!) { emails(customerId: $c) { nodes { id } } }",
            json!({ "c": leaving }),
        )
        .await;
    let message = eml(&app, data["emails"]["nodes"][0]["id"].as_str().unwrap());
    let link = message
        .lines()
        .find_map(|l| l.strip_prefix("List-Unsubscribe: <"))
        .and_then(|l| l.strip_suffix('>'))
        .unwrap()
        .to_owned();
    let path = &link[link.find("/unsubscribe/").unwrap()..];
    let done = app
        .client
        .post(format!("{}{path}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);

    // Mia books a meeting: re-scored, the chain routes her to the follow-up.
    app.graphql_ok(
        "mutation($i: LogInteractionInput!) { logInteraction(input: $i) { id } }",
        json!({ "i": { "customerId": warming, "kind": "CALL", "direction": "INBOUND",
                       "outcome": "appointment" } }),
    )
    .await;
    app.run_jobs().await;

    app.clock.advance(Duration::days(3) + Duration::minutes(1));
    app.run_jobs().await;
    assert_eq!(templates_sent(&app, &leaving).await, ["nurture-1"]);
    let ana = crm_store::nurture::latest_of(&app.db, &leaving)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ana.status, "exited");
    assert!(ana.exit_reason.unwrap().contains("unsubscribed"));
    let mia = crm_store::nurture::latest_of(&app.db, &warming)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mia.status, "exited");
    assert!(mia.exit_reason.unwrap().contains("re-scored to follow_up"));
    assert!(
        !templates_sent(&app, &warming)
            .await
            .contains(&"nurture-2".to_owned())
    );
}
