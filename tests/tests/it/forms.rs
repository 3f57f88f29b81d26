//! Web forms posting leads (`POST /forms/{name}`): mapping, honeypot, origins and CORS,
//! redirect, rate limit; stored in the inbox and imported by the job.

use crm_api::config::FormConfig;
use crm_tests::{TestApp, TestBackend, on_both_backends};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

on_both_backends!(
    a_form_submission_becomes_a_lead,
    forms_refuse_foreign_origins_bots_and_floods,
);

async fn app(backend: TestBackend) -> TestApp {
    TestApp::spawn_with(backend, |c| {
        c.intake.forms.push(FormConfig {
            name: "contact".into(),
            fields: [("your-mail".to_owned(), "email".to_owned())].into(),
            allowed_origins: vec!["https://www.firma.de".into()],
            honeypot: Some("website".into()),
            redirect: None,
            source: None,
            tags: vec!["kontaktformular".into()],
        });
        c.intake.forms.push(FormConfig {
            name: "newsletter".into(),
            fields: Default::default(),
            allowed_origins: vec![],
            honeypot: None,
            redirect: Some("https://www.firma.de/danke".into()),
            source: Some("newsletter".into()),
            tags: vec![],
        });
        c.rate_limit.form_submissions_per_minute = 3;
        c.rate_limit.form_submissions_burst = 3;
    })
    .await
}

async fn leads(app: &TestApp) -> Vec<Value> {
    app.run_jobs().await;
    app.graphql_ok(
        "{ customers { nodes { name email phone source tags consentEmail notes } } }",
        json!({}),
    )
    .await["customers"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn a_form_submission_becomes_a_lead(backend: TestBackend) {
    let app = app(backend).await;
    let response = client()
        .post(format!("{}/forms/contact", app.url))
        .header(header::ORIGIN, "https://www.firma.de")
        .form(&[
            ("Vorname", "Jürgen"),
            ("Nachname", "Müller"),
            ("your-mail", "J.Mueller@Firma.de"),
            ("Telefon", "030 123456"),
            ("Nachricht", "Bitte um Rückruf"),
            ("website", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://www.firma.de"
    );
    let all = leads(&app).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["name"], "Jürgen Müller");
    assert_eq!(all[0]["email"], "j.mueller@firma.de");
    assert_eq!(all[0]["source"], "webform");
    assert_eq!(all[0]["tags"], json!(["kontaktformular"]));
    assert_eq!(all[0]["notes"], "Bitte um Rückruf");

    // Anyone can post a form: a second post with the same email changes nothing — not the
    // name, not the owner, not the tags, not the consent.
    let again = client()
        .post(format!("{}/forms/contact", app.url))
        .form(&[
            ("email", "j.mueller@firma.de"),
            ("name", "Renamed"),
            ("owner", "mallory"),
            ("tags", "vip"),
            ("newsletter", "ja"),
            ("notes", "overwritten?"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let all = leads(&app).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["name"], "Jürgen Müller");
    assert_eq!(all[0]["tags"], json!(["kontaktformular"]));
    assert_eq!(all[0]["notes"], "Bitte um Rückruf");

    // Multipart, and a redirect after submitting.
    let form = reqwest::multipart::Form::new()
        .text("name", "Ana Hodžić")
        .text("email", "ana@firma.ba")
        .text("newsletter", "da");
    let response = client()
        .post(format!("{}/forms/newsletter", app.url))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()[header::LOCATION],
        "https://www.firma.de/danke"
    );
    let all = leads(&app).await;
    let ana = all.iter().find(|c| c["name"] == "Ana Hodžić").unwrap();
    assert_eq!(ana["source"], "newsletter");
    assert_eq!(ana["consentEmail"], true);

    // The fetch preflight of an allowed page.
    let response = client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/forms/contact", app.url),
        )
        .header(header::ORIGIN, "https://www.firma.de")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://www.firma.de"
    );
}

async fn forms_refuse_foreign_origins_bots_and_floods(backend: TestBackend) {
    let app = app(backend).await;
    let post = |form: &'static str,
                origin: Option<&'static str>,
                fields: Vec<(&'static str, &'static str)>| {
        let mut request = client()
            .post(format!("{}/forms/{form}", app.url))
            .form(&fields);
        if let Some(origin) = origin {
            request = request.header(header::ORIGIN, origin);
        }
        request.send()
    };
    let foreign = post(
        "contact",
        Some("https://evil.example"),
        vec![("email", "x@y.de")],
    )
    .await
    .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let unknown = post("nope", None, vec![("email", "x@y.de")]).await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // A bot fills the honeypot: answered as usual, dropped.
    let bot = post(
        "contact",
        Some("https://www.firma.de"),
        vec![
            ("email", "bot@spam.example"),
            ("name", "Bot"),
            ("website", "http://spam"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(bot.status(), StatusCode::ACCEPTED);
    assert!(leads(&app).await.is_empty());
    // Plain text bodies are not forms.
    let text = client()
        .post(format!("{}/forms/contact", app.url))
        .body("email=x@y.de")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Three at once from one address to one form, then 429 (this form's bucket is untouched
    // so far, so the sequence is exact).
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            post(
                "newsletter",
                None,
                vec![("email", "flood@x.de"), ("name", "Flo Od")],
            )
            .await
            .unwrap()
            .status(),
        );
    }
    assert_eq!(
        statuses,
        [
            StatusCode::SEE_OTHER,
            StatusCode::SEE_OTHER,
            StatusCode::SEE_OTHER,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(
        leads(&app).await.len(),
        1,
        "three posts of one email: one lead"
    );
}
