//! The lead chain through GraphQL: a new lead is scored and routed as far as the agents that
//! exist, nurtured leads are re-scored after 7 days, interactions re-score, replays count
//! nothing twice, and runs are scoped like their leads.

use chrono::Duration;
use crm_domain::{Clock as _, Role};
use crm_store::jobs::{self, JobStatus, NewJob};
use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    a_new_lead_runs_the_chain_as_far_as_agents_exist,
    a_nurtured_lead_is_rescored_after_seven_days,
    interactions_rescore_and_route_only_when_the_action_changes,
    qualifying_and_replayed_jobs_count_nothing_twice,
    a_payload_that_does_not_deserialize_goes_to_the_dead_letter,
    runs_and_scores_are_scoped_like_their_leads,
    a_scheduled_walk_rescores_every_live_lead_once_a_day,
    a_step_that_keeps_failing_fails_its_run_and_a_replay_resumes_it,
    cancelling_a_step_job_cancels_its_run,
);

const RUNS: &str = "query($c: ID) { pipelineRuns(filter: {customerId: $c}) { nodes { \
    id cause status branch steps { position name status detail jobId attempts } } } }";

const SCORE: &str = "query($id: ID!) { customer(id: $id) { \
    score { score priority tags nextAction configVersion cause reasons { group rule points detail } } \
    scoreHistory { nodes { score cause } } } }";

fn good_lead() -> Value {
    json!({
        "name": "Jürgen Müller",
        "email": "j.mueller@firma.de",
        "phone": "030 123456",
        "company": "Müller GmbH",
        "language": "de",
        "source": "webform",
    })
}

fn cold_lead() -> Value {
    json!({ "name": "Ana", "email": "ana@gmail.com" })
}

async fn runs(app: &TestApp, customer: &str) -> Vec<Value> {
    let data = app.graphql_ok(RUNS, json!({ "c": customer })).await;
    data["pipelineRuns"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn step_names(run: &Value) -> Vec<(String, String)> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn a_new_lead_runs_the_chain_as_far_as_agents_exist(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_customer(good_lead()).await;

    // Created with the lead, in its transaction: a run waiting for qualify-lead.
    let before = runs(&app, &id).await;
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["cause"], "created");
    assert_eq!(before[0]["status"], "RUNNING");
    assert_eq!(
        step_names(&before[0]),
        [("qualify-lead".to_owned(), "PENDING".to_owned())]
    );
    assert!(before[0]["steps"][0]["jobId"].is_string());

    // qualify-lead, then voice-call, which refuses to call without consent to calls.
    assert_eq!(app.run_jobs().await, 2);
    let run = &runs(&app, &id).await[0];
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["branch"], "call");
    assert_eq!(
        step_names(run),
        [
            ("qualify-lead".to_owned(), "DONE".to_owned()),
            ("decide".to_owned(), "DONE".to_owned()),
            ("voice-call".to_owned(), "DONE".to_owned()),
        ]
    );
    let blocked = run["steps"][2]["detail"]["blocked"].as_str().unwrap();
    assert!(blocked.contains("not consented to calls"), "{blocked}");
    assert_eq!(run["steps"][0]["attempts"], 1);
    let decision = &run["steps"][1]["detail"];
    assert_eq!(decision["score"], 55);
    assert_eq!(decision["threshold"], 50);
    assert_eq!(decision["nextAction"], "call");

    let data = app.graphql_ok(SCORE, json!({ "id": id })).await;
    let score = &data["customer"]["score"];
    assert_eq!(score["score"], 55);
    assert_eq!(score["priority"], "WARM");
    assert_eq!(score["nextAction"], "CALL");
    assert_eq!(score["cause"], "created");
    assert_eq!(score["tags"], json!(["corporate", "warm"]));
    let total: f64 = score["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["points"].as_f64().unwrap())
        .sum();
    assert_eq!(total, 55.0, "the reasons explain the score");
    assert_eq!(
        data["customer"]["scoreHistory"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The definition says which agents exist.
    let data = app
        .graphql_ok(
            "{ pipelineDefinition { threshold rescoreAfterDays scoringVersion \
               priorityCutoffs { hot warm } steps { name branch available } } }",
            json!({}),
        )
        .await;
    let definition = &data["pipelineDefinition"];
    assert_eq!(definition["threshold"], 50);
    assert_eq!(definition["rescoreAfterDays"], 7);
    assert_eq!(definition["scoringVersion"], score["configVersion"]);
    let available = |name: &str| {
        definition["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["available"].as_bool().unwrap())
    };
    assert_eq!(available("qualify-lead"), Some(true));
    assert_eq!(available("decide"), Some(true));
    assert_eq!(available("voice-call"), Some(true));
    assert_eq!(available("follow-up"), Some(true));
    assert_eq!(available("nurture-email"), Some(true));
}

async fn a_nurtured_lead_is_rescored_after_seven_days(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_customer(cold_lead()).await;
    app.run_jobs().await;
    let run = &runs(&app, &id).await[0];
    assert_eq!(run["branch"], "nurture");
    assert_eq!(
        step_names(run).last().unwrap(),
        &("nurture-email".to_owned(), "DONE".to_owned())
    );

    // The re-score waits seven days.
    let queued = jobs::list(
        &app.db,
        Some(JobStatus::Queued),
        Some("rescore-lead"),
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].run_at, app.clock.now() + Duration::days(7));
    app.clock.advance(Duration::days(6));
    assert_eq!(app.run_jobs().await, 0, "not due yet");

    app.clock.advance(Duration::days(1));
    assert_eq!(
        app.run_jobs().await,
        3,
        "rescore-lead, its qualify-lead, and nurture-email (which does not start the sequence again)"
    );
    let all = runs(&app, &id).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["cause"], "rescore");
    assert_eq!(all[0]["branch"], "nurture");
    // Nothing changed about the lead: the history keeps one entry.
    let data = app.graphql_ok(SCORE, json!({ "id": id })).await;
    assert_eq!(
        data["customer"]["scoreHistory"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // … and the next re-score is a week later again.
    let queued = jobs::list(
        &app.db,
        Some(JobStatus::Queued),
        Some("rescore-lead"),
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].run_at, app.clock.now() + Duration::days(7));
}

async fn log(app: &TestApp, customer: &str, kind: &str, outcome: Option<&str>) {
    app.graphql_ok(
        "mutation($i: LogInteractionInput!) { logInteraction(input: $i) { id } }",
        json!({ "i": { "customerId": customer, "kind": kind, "outcome": outcome } }),
    )
    .await;
}

async fn interactions_rescore_and_route_only_when_the_action_changes(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_customer(good_lead()).await;
    app.run_jobs().await;

    // The call ended in an appointment: re-scored, and routed to the follow-up.
    log(&app, &id, "CALL", Some("appointment")).await;
    app.run_jobs().await;
    let all = runs(&app, &id).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["cause"], "interaction");
    assert_eq!(all[0]["branch"], "follow_up");
    assert_eq!(
        step_names(&all[0]).last().unwrap(),
        &("follow-up".to_owned(), "DONE".to_owned())
    );
    assert_eq!(all[0]["status"], "COMPLETED");
    let data = app.graphql_ok(SCORE, json!({ "id": id })).await;
    let score = &data["customer"]["score"];
    assert_eq!(score["score"], 89);
    assert_eq!(score["priority"], "HOT");
    assert_eq!(score["nextAction"], "FOLLOW_UP");
    assert!(
        score["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "outcome:appointment" && r["points"] == 30.0)
    );

    // A note changes nothing about the next action: scored, not routed again.
    log(&app, &id, "NOTE", None).await;
    app.run_jobs().await;
    let all = runs(&app, &id).await;
    assert_eq!(all.len(), 3);
    assert_eq!(all[0]["status"], "COMPLETED");
    assert!(all[0]["branch"].is_null());
    assert_eq!(
        all[0]["steps"][1]["detail"]["reason"],
        "the next action did not change since the last scoring"
    );
}

async fn qualifying_and_replayed_jobs_count_nothing_twice(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |c| c.pipeline.start_on_create = false).await;
    let id = app.create_customer(good_lead()).await;
    assert!(runs(&app, &id).await.is_empty(), "start_on_create = false");

    let qualify = "mutation($id: ID!) { qualifyLead(customerId: $id) { id score priority nextAction cause } }";
    let first = app.graphql_ok(qualify, json!({ "id": id })).await;
    let second = app.graphql_ok(qualify, json!({ "id": id })).await;
    assert_eq!(first["qualifyLead"]["score"], 55);
    assert_eq!(
        first, second,
        "the same inputs give the same, single scoring"
    );
    let data = app.graphql_ok(SCORE, json!({ "id": id })).await;
    assert_eq!(
        data["customer"]["scoreHistory"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A manual run, then its job delivered a second time (a duplicate event).
    let data = app
        .graphql_ok(
            "mutation($id: ID!) { runPipeline(customerId: $id) { id cause status steps { jobId } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(data["runPipeline"]["cause"], "manual");
    let job_id = data["runPipeline"]["steps"][0]["jobId"].as_str().unwrap();
    let job = jobs::get(&app.db, job_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    app.run_jobs().await;
    // The lead changes, then the finished step's job is delivered again: a replay that scored
    // again would record the new score.
    app.graphql_ok(
        "mutation($id: ID!) { updateCustomer(id: $id, input: {source: \"referral\"}) { id } }",
        json!({ "id": id }),
    )
    .await;
    let replay = NewJob {
        kind: job.kind.clone(),
        payload: job.payload.clone(),
        dedupe_key: None,
        priority: 0,
        run_at: app.clock.now(),
        max_attempts: 1,
    };
    jobs::enqueue(&app.db, &replay, app.clock.now())
        .await
        .unwrap();
    assert_eq!(app.run_jobs().await, 1);
    let all = runs(&app, &id).await;
    assert_eq!(all.len(), 1);
    assert_eq!(step_names(&all[0]).len(), 3, "the replay added no steps");
    let data = app.graphql_ok(SCORE, json!({ "id": id })).await;
    assert_eq!(
        data["customer"]["scoreHistory"]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "the replay recorded no scoring"
    );
    assert_eq!(data["customer"]["score"]["score"], 55);

    // Asked for, the new fact changes the score and adds one entry.
    let third = app.graphql_ok(qualify, json!({ "id": id })).await;
    assert_eq!(third["qualifyLead"]["score"], 60);
    let data = app.graphql_ok(SCORE, json!({ "id": id })).await;
    let history = data["customer"]["scoreHistory"]["nodes"]
        .as_array()
        .unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["score"], 60, "newest first");

    // Unknown and deleted leads.
    let missing = app
        .graphql(
            qualify,
            json!({ "id": "0191f8b2-5b7a-7c3d-9e2f-1a2b3c4d5e6f" }),
        )
        .await;
    assert_eq!(error_code(&missing), "NOT_FOUND");
    let bad = app.graphql(qualify, json!({ "id": "nope" })).await;
    assert_eq!(error_code(&bad), "VALIDATION_FAILED");
}

async fn a_payload_that_does_not_deserialize_goes_to_the_dead_letter(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let now = app.clock.now();
    let broken = NewJob {
        kind: "qualify-lead".into(),
        payload: "{\"customer_id\": 42".into(),
        dedupe_key: None,
        priority: 0,
        run_at: now,
        max_attempts: 5,
    };
    let id = jobs::enqueue(&app.db, &broken, now).await.unwrap().id();
    assert_eq!(app.run_jobs().await, 1);
    let job = jobs::get(&app.db, id).await.unwrap().unwrap();
    assert_eq!(
        job.status,
        JobStatus::Dead,
        "not retried: it can never succeed"
    );
    assert_eq!(job.attempts, 1);
    assert!(
        job.last_error
            .as_deref()
            .unwrap()
            .contains("does not deserialize"),
        "{job:?}"
    );
}

async fn runs_and_scores_are_scoped_like_their_leads(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let anna = app.token_for(Role::Sales, "anna");
    let mine = app
        .graphql_as(
            &anna,
            "mutation { createCustomer(input: {name: \"Mine\", email: \"mine@firma.de\"}) { id } }",
            json!({}),
        )
        .await["data"]["createCustomer"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = app
        .create_customer(json!({ "name": "Theirs", "email": "t@firma.de", "owner": "ben" }))
        .await;
    app.run_jobs().await;

    let seen = app.graphql_as(&anna, RUNS, json!({})).await;
    let seen = seen["data"]["pipelineRuns"]["nodes"].as_array().unwrap();
    assert_eq!(seen.len(), 1);
    let admin_view = runs(&app, &theirs).await;
    let hidden = app
        .graphql_as(
            &anna,
            "query($id: ID!) { pipelineRun(id: $id) { id } }",
            json!({ "id": admin_view[0]["id"] }),
        )
        .await;
    assert_eq!(error_code(&hidden), "NOT_FOUND");
    let refused = app
        .graphql_as(
            &anna,
            "mutation($id: ID!) { qualifyLead(customerId: $id) { score } }",
            json!({ "id": theirs }),
        )
        .await;
    assert_eq!(error_code(&refused), "NOT_FOUND");
    let own = app
        .graphql_as(
            &anna,
            "mutation($id: ID!) { qualifyLead(customerId: $id) { score } }",
            json!({ "id": mine }),
        )
        .await;
    assert!(own.get("errors").is_none(), "{own:#}");

    let hidden = app.graphql_as(&anna, SCORE, json!({ "id": theirs })).await;
    assert!(hidden["data"]["customer"].is_null(), "{hidden:#}");
    let integration = app.token_for(Role::Integration, "zapier");
    let partial = app
        .graphql_as(&integration, SCORE, json!({ "id": mine }))
        .await;
    assert_eq!(
        error_code(&partial),
        "FORBIDDEN",
        "the score, not its history: {partial:#}"
    );

    let viewer = app.token_for(Role::Viewer, "vera");
    let refused = app
        .graphql_as(
            &viewer,
            "mutation($id: ID!) { runPipeline(customerId: $id) { id } }",
            json!({ "id": mine }),
        )
        .await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
}

async fn a_scheduled_walk_rescores_every_live_lead_once_a_day(backend: TestBackend) {
    let app = TestApp::spawn_with(backend, |c| c.pipeline.start_on_create = false).await;
    let mut leads = Vec::new();
    for n in 0..5 {
        leads.push(
            app.create_customer(
                json!({ "name": format!("Lead {n}"), "email": format!("l{n}@firma.de") }),
            )
            .await,
        );
    }
    let customer = app
        .create_customer(json!({ "name": "Bought", "email": "b@firma.de", "status": "CUSTOMER" }))
        .await;
    let gone = app
        .create_customer(json!({ "name": "Gone", "email": "g@firma.de" }))
        .await;
    app.graphql_ok(
        "mutation($id: ID!) { deleteCustomer(id: $id) { id } }",
        json!({ "id": gone }),
    )
    .await;

    let walk = |payload: &str| NewJob {
        kind: "rescore-leads".into(),
        payload: payload.into(),
        dedupe_key: None,
        priority: 0,
        run_at: app.clock.now(),
        max_attempts: 5,
    };
    // Pages of two: three pages for five leads, each page its own job.
    jobs::enqueue(&app.db, &walk(r#"{"page_size": 2}"#), app.clock.now())
        .await
        .unwrap();
    app.run_jobs().await;
    let pages = jobs::list(
        &app.db,
        Some(JobStatus::Done),
        Some("rescore-leads"),
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(pages.len(), 3);
    for lead in &leads {
        let runs = runs(&app, lead).await;
        assert_eq!(runs.len(), 1, "{lead}");
        assert_eq!(runs[0]["cause"], "rescore");
    }
    assert!(
        runs(&app, &customer).await.is_empty(),
        "customers are not leads"
    );
    assert!(
        runs(&app, &gone).await.is_empty(),
        "deleted leads are left alone"
    );

    // The same day again: nothing new.
    jobs::enqueue(&app.db, &walk("{}"), app.clock.now())
        .await
        .unwrap();
    app.run_jobs().await;
    assert_eq!(runs(&app, &leads[0]).await.len(), 1);
}

async fn a_step_that_keeps_failing_fails_its_run_and_a_replay_resumes_it(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_customer(good_lead()).await;
    // A row the store cannot read back: every attempt fails, as if the database misbehaved.
    app.db
        .execute_raw(&format!(
            "UPDATE customers SET status = 'bogus' WHERE id = '{id}'"
        ))
        .await
        .unwrap();

    let mut attempts = 0;
    for _ in 0..10 {
        attempts += app.run_jobs().await;
        app.clock.advance(Duration::hours(2)); // past any backoff (capped at 1 h)
    }
    assert_eq!(
        attempts, 5,
        "the default policy: five attempts, then the dead letter"
    );
    let run = &runs(&app, &id).await[0];
    assert_eq!(run["status"], "FAILED", "{run:#}");
    assert_eq!(run["steps"][0]["status"], "FAILED");
    assert_eq!(run["steps"][0]["attempts"], 5);

    // Repaired, and the job replayed from the dead letter: the run resumes where it stopped.
    app.db
        .execute_raw(&format!(
            "UPDATE customers SET status = 'lead' WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    let job = run["steps"][0]["jobId"].as_str().unwrap();
    app.graphql_ok(
        "mutation($id: ID!) { retryJob(id: $id) { status } }",
        json!({ "id": job }),
    )
    .await;
    app.run_jobs().await;
    let run = &runs(&app, &id).await[0];
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["steps"][0]["status"], "DONE");
    assert_eq!(step_names(run).len(), 3);
}

async fn cancelling_a_step_job_cancels_its_run(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let id = app.create_customer(good_lead()).await;
    let run = &runs(&app, &id).await[0];
    app.graphql_ok(
        "mutation($id: ID!) { cancelJob(id: $id) { status } }",
        json!({ "id": run["steps"][0]["jobId"] }),
    )
    .await;
    assert_eq!(app.run_jobs().await, 0);
    let run = &runs(&app, &id).await[0];
    assert_eq!(run["status"], "CANCELLED", "{run:#}");
    assert_eq!(run["steps"][0]["status"], "CANCELLED");
}
