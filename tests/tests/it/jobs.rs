//! The durable job queue at the store level, on both backends, with times chosen by the test.

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use crm_domain::Role;
use crm_plugins::{JobError, JobHandler, Registry, Runner, RunnerOptions, Schedule, Scheduler};
use crm_store::jobs::{self, Enqueued, JobStatus, NewJob};
use crm_tests::{TestApp, TestBackend, error_code, on_both_backends};
use serde_json::json;
use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

on_both_backends!(
    dedupe_keys_enqueue_once,
    claims_follow_due_time_and_priority,
    failures_back_off_then_dead_letter_then_replay,
    an_expired_lease_lets_another_worker_finish_once,
    concurrent_workers_never_share_a_job,
    the_runner_retries_with_backoff_and_dead_letters,
    an_idle_runner_wakes_on_enqueue,
    two_schedulers_fire_once_per_period_and_catch_up_by_the_rule,
    operators_see_the_dead_letter_and_replay_it,
);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
        .single()
        .unwrap()
}

fn job(kind: &str, run_at: DateTime<Utc>) -> NewJob {
    NewJob {
        kind: kind.into(),
        payload: "{}".into(),
        dedupe_key: None,
        priority: 0,
        run_at,
        max_attempts: 3,
    }
}

async fn dedupe_keys_enqueue_once(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let new = NewJob {
        dedupe_key: Some("report:daily:2026-11-25".into()),
        ..job("generate-report", t0())
    };
    let first = jobs::enqueue(&app.db, &new, t0()).await.unwrap();
    let second = jobs::enqueue(&app.db, &new, t0()).await.unwrap();
    assert!(matches!(first, Enqueued::Created(_)));
    assert_eq!(second, Enqueued::Duplicate(first.id()));
    let claimed = jobs::claim(&app.db, "w1", 10, t0(), t0() + Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "one job for one key");
}

async fn claims_follow_due_time_and_priority(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let low = jobs::enqueue(&app.db, &job("low", t0()), t0())
        .await
        .unwrap()
        .id();
    let high = jobs::enqueue(
        &app.db,
        &NewJob {
            priority: 10,
            ..job("high", t0())
        },
        t0(),
    )
    .await
    .unwrap()
    .id();
    let later = jobs::enqueue(&app.db, &job("later", t0() + Duration::days(7)), t0())
        .await
        .unwrap()
        .id();
    let lease = t0() + Duration::seconds(30);
    let first = jobs::claim(&app.db, "w1", 1, t0(), lease).await.unwrap();
    assert_eq!(
        first.iter().map(|j| j.id).collect::<Vec<_>>(),
        [high],
        "priority first"
    );
    assert_eq!(
        (
            first[0].status,
            first[0].attempts,
            first[0].locked_by.as_deref()
        ),
        (JobStatus::Running, 1, Some("w1"))
    );
    let rest = jobs::claim(&app.db, "w1", 10, t0(), lease).await.unwrap();
    assert_eq!(
        rest.iter().map(|j| j.id).collect::<Vec<_>>(),
        [low],
        "the delayed job is not due"
    );
    let week = t0() + Duration::days(7);
    let due = jobs::claim(&app.db, "w1", 10, week, week + Duration::seconds(30))
        .await
        .unwrap();
    assert!(
        due.iter().any(|j| j.id == later),
        "due after seven days (re-score)"
    );
}

async fn failures_back_off_then_dead_letter_then_replay(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let id = jobs::enqueue(&app.db, &job("flaky", t0()), t0())
        .await
        .unwrap()
        .id();
    let mut now = t0();
    for attempt in 1..=3 {
        let claimed = jobs::claim(&app.db, "w", 10, now, now + Duration::seconds(30))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "attempt {attempt}");
        assert_eq!(claimed[0].attempts, attempt);
        let retry_at = now + Duration::seconds(10 * i64::from(attempt));
        assert!(
            jobs::fail(
                &app.db,
                id,
                "w",
                &format!("boom {attempt}"),
                Some(retry_at),
                now
            )
            .await
            .unwrap()
        );
        // Not before the backoff has passed.
        assert!(
            jobs::claim(&app.db, "w", 10, retry_at - Duration::seconds(1), retry_at)
                .await
                .unwrap()
                .is_empty()
        );
        now = retry_at;
    }
    let dead = jobs::get(&app.db, id).await.unwrap().unwrap();
    assert_eq!(
        (dead.status, dead.last_error.as_deref()),
        (JobStatus::Dead, Some("boom 3")),
        "after the last attempt"
    );
    assert!(
        jobs::claim(
            &app.db,
            "w",
            10,
            now + Duration::days(1),
            now + Duration::days(2)
        )
        .await
        .unwrap()
        .is_empty()
    );
    let replayed = jobs::retry(&app.db, id, now, None).await.unwrap();
    assert_eq!((replayed.status, replayed.attempts), (JobStatus::Queued, 0));
    assert!(
        jobs::retry(&app.db, id, now, None).await.is_err(),
        "only dead jobs are replayed"
    );
    let claimed = jobs::claim(&app.db, "w", 10, now, now + Duration::seconds(30))
        .await
        .unwrap();
    assert!(
        jobs::complete(&app.db, claimed[0].id, "w", now)
            .await
            .unwrap()
    );
    // A job that cannot be retried (no retry time) goes straight to the dead letter.
    let fatal = jobs::enqueue(&app.db, &job("fatal", now), now)
        .await
        .unwrap()
        .id();
    jobs::claim(&app.db, "w", 10, now, now + Duration::seconds(30))
        .await
        .unwrap();
    assert!(
        jobs::fail(
            &app.db,
            fatal,
            "w",
            "payload does not deserialize",
            None,
            now
        )
        .await
        .unwrap()
    );
    assert_eq!(
        jobs::get(&app.db, fatal).await.unwrap().unwrap().status,
        JobStatus::Dead
    );
    // Queued jobs can be cancelled, others not.
    let doomed = jobs::enqueue(&app.db, &job("doomed", now + Duration::hours(1)), now)
        .await
        .unwrap()
        .id();
    assert_eq!(
        jobs::cancel(&app.db, doomed, now, None)
            .await
            .unwrap()
            .status,
        JobStatus::Cancelled
    );
    assert!(jobs::cancel(&app.db, fatal, now, None).await.is_err());
}

async fn an_expired_lease_lets_another_worker_finish_once(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let id = jobs::enqueue(&app.db, &job("call", t0()), t0())
        .await
        .unwrap()
        .id();
    let a = jobs::claim(&app.db, "worker-a", 1, t0(), t0() + Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(a[0].id, id);
    // Worker A dies; while its lease holds, nobody else gets the job.
    assert!(
        jobs::claim(
            &app.db,
            "worker-b",
            1,
            t0() + Duration::seconds(29),
            t0() + Duration::seconds(59)
        )
        .await
        .unwrap()
        .is_empty()
    );
    let later = t0() + Duration::seconds(31);
    let b = jobs::claim(&app.db, "worker-b", 1, later, later + Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(
        (b[0].id, b[0].attempts),
        (id, 2),
        "the expired lease makes the job claimable again"
    );
    assert!(
        !jobs::complete(&app.db, id, "worker-a", later)
            .await
            .unwrap(),
        "a lost lease cannot complete"
    );
    assert!(
        jobs::complete(&app.db, id, "worker-b", later)
            .await
            .unwrap()
    );
    assert!(
        !jobs::complete(&app.db, id, "worker-b", later)
            .await
            .unwrap(),
        "completing twice does nothing"
    );
    assert_eq!(
        jobs::get(&app.db, id).await.unwrap().unwrap().status,
        JobStatus::Done
    );
}

async fn concurrent_workers_never_share_a_job(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    const JOBS: usize = 120;
    for n in 0..JOBS {
        jobs::enqueue(&app.db, &job(&format!("noop-{n}"), t0()), t0())
            .await
            .unwrap();
    }
    let workers = (0..4).map(|w| {
        let db = app.db.clone();
        tokio::spawn(async move {
            let name = format!("worker-{w}");
            let mut mine = Vec::new();
            loop {
                let claimed = jobs::claim(&db, &name, 7, t0(), t0() + Duration::minutes(5))
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    break mine;
                }
                for job in claimed {
                    assert!(jobs::complete(&db, job.id, &name, t0()).await.unwrap());
                    mine.push(job.id);
                }
            }
        })
    });
    let mut all = Vec::new();
    for handle in workers {
        all.extend(handle.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), JOBS, "every job ran");
    assert_eq!(unique.len(), JOBS, "no job ran twice");
}

/// Fails its first `failures` runs, then succeeds; counts runs.
struct Flaky {
    runs: AtomicUsize,
    failures: usize,
}

#[async_trait::async_trait]
impl JobHandler for Flaky {
    fn kind(&self) -> &'static str {
        "flaky"
    }

    async fn run(&self, payload: &str) -> Result<(), JobError> {
        if payload == "bad" {
            return Err(JobError::Fatal("payload does not deserialize".into()));
        }
        if payload == "panic" {
            panic!("handler bug");
        }
        let run = self.runs.fetch_add(1, Ordering::SeqCst);
        if run < self.failures {
            Err(JobError::Retryable(format!("provider timeout {run}")))
        } else {
            Ok(())
        }
    }
}

async fn the_runner_retries_with_backoff_and_dead_letters(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let flaky = Arc::new(Flaky {
        runs: AtomicUsize::new(0),
        failures: 2,
    });
    let registry = Registry::default().with(flaky.clone());
    let options = RunnerOptions {
        worker_id: "test-runner".into(),
        concurrency: 4,
        lease: Duration::seconds(60),
        poll_interval: std::time::Duration::from_secs(1),
    };
    let runner = Runner::new(app.db.clone(), registry, app.clock.clone(), options);
    let now = crm_domain::Clock::now(app.clock.as_ref());
    let id = jobs::enqueue(
        &app.db,
        &NewJob {
            payload: "ok".into(),
            max_attempts: 5,
            ..job("flaky", now)
        },
        now,
    )
    .await
    .unwrap()
    .id();

    assert_eq!(runner.run_once().await.unwrap(), 1);
    let after_first = jobs::get(&app.db, id).await.unwrap().unwrap();
    assert_eq!(after_first.status, JobStatus::Queued);
    let delay = after_first.run_at - now;
    assert!(
        delay >= Duration::seconds(8) && delay <= Duration::seconds(12),
        "10 s ± 20 %: {delay}"
    );
    assert_eq!(
        runner.run_once().await.unwrap(),
        0,
        "not before the backoff"
    );
    app.clock.advance(Duration::seconds(12));
    assert_eq!(runner.run_once().await.unwrap(), 1);
    let after_second = jobs::get(&app.db, id).await.unwrap().unwrap();
    let delay = after_second.run_at - crm_domain::Clock::now(app.clock.as_ref());
    assert!(
        delay >= Duration::seconds(16) && delay <= Duration::seconds(24),
        "doubled: {delay}"
    );
    app.clock.advance(Duration::seconds(24));
    assert_eq!(runner.run_once().await.unwrap(), 1);
    let done = jobs::get(&app.db, id).await.unwrap().unwrap();
    assert_eq!((done.status, done.attempts), (JobStatus::Done, 3));
    assert_eq!(
        flaky.runs.load(Ordering::SeqCst),
        3,
        "ran exactly three times"
    );

    // Unknown kinds, bad payloads and panics do not stop the runner.
    let now = crm_domain::Clock::now(app.clock.as_ref());
    let unknown = jobs::enqueue(&app.db, &job("no-such-agent", now), now)
        .await
        .unwrap()
        .id();
    let bad = jobs::enqueue(
        &app.db,
        &NewJob {
            payload: "bad".into(),
            ..job("flaky", now)
        },
        now,
    )
    .await
    .unwrap()
    .id();
    let panics = jobs::enqueue(
        &app.db,
        &NewJob {
            payload: "panic".into(),
            ..job("flaky", now)
        },
        now,
    )
    .await
    .unwrap()
    .id();
    assert_eq!(runner.run_once().await.unwrap(), 3);
    let unknown = jobs::get(&app.db, unknown).await.unwrap().unwrap();
    assert_eq!(
        (unknown.status, unknown.last_error.as_deref()),
        (JobStatus::Dead, Some("unknown job kind `no-such-agent`"))
    );
    assert_eq!(
        jobs::get(&app.db, bad).await.unwrap().unwrap().status,
        JobStatus::Dead,
        "fatal: no retry"
    );
    let panicked = jobs::get(&app.db, panics).await.unwrap().unwrap();
    assert_eq!(panicked.status, JobStatus::Queued, "a panic is retried");
    assert!(panicked.last_error.unwrap().contains("panicked"));
}

async fn an_idle_runner_wakes_on_enqueue(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let flaky = Arc::new(Flaky {
        runs: AtomicUsize::new(0),
        failures: 0,
    });
    let options = RunnerOptions {
        worker_id: "idle".into(),
        concurrency: 4,
        lease: Duration::seconds(60),
        // Polling alone would take an hour: only a wake-up can make the job run in time.
        poll_interval: std::time::Duration::from_secs(3600),
    };
    let runner = Runner::new(
        app.db.clone(),
        Registry::default().with(flaky.clone()),
        app.clock.clone(),
        options,
    );
    let handle = runner.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run_until(async move {
        let _ = stopped.await;
    }));
    // PostgreSQL: the NOTIFY of an enqueue wakes it (the first may race the runner's LISTEN, so
    // enqueue until one lands). SQLite: the in-process wake does.
    let mut woke = false;
    for attempt in 0..40 {
        let now = crm_domain::Clock::now(app.clock.as_ref());
        let payload = format!("ok-{attempt}");
        jobs::enqueue(
            &app.db,
            &NewJob {
                payload,
                ..job("flaky", now)
            },
            now,
        )
        .await
        .unwrap();
        if backend == TestBackend::Sqlite {
            handle.wake();
        }
        for _ in 0..50 {
            if flaky.runs.load(Ordering::SeqCst) > 0 {
                woke = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if woke {
            break;
        }
    }
    let _ = stop.send(());
    task.await.unwrap();
    assert!(
        woke,
        "an enqueue must wake an idle runner long before its poll interval"
    );
}

async fn two_schedulers_fire_once_per_period_and_catch_up_by_the_rule(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let daily = Schedule::parse(
        "daily-report",
        "0 18 * * *",
        "Europe/Berlin",
        "generate-report",
        "{}",
        Duration::hours(12),
    )
    .unwrap();
    let replica_a = Scheduler::new(app.db.clone(), app.clock.clone(), vec![daily.clone()]);
    let replica_b = Scheduler::new(app.db.clone(), app.clock.clone(), vec![daily]);
    // 2026-11-25 18:00:30 in Berlin (CET, UTC+1).
    app.clock.set(
        Utc.with_ymd_and_hms(2026, 11, 25, 17, 0, 30)
            .single()
            .unwrap(),
    );
    let a = replica_a.tick().await.unwrap();
    let b = replica_b.tick().await.unwrap();
    let again = replica_a.tick().await.unwrap();
    assert!(matches!(a[0].1, Enqueued::Created(_)));
    assert_eq!(
        b[0].1,
        Enqueued::Duplicate(a[0].1.id()),
        "the second replica enqueues nothing"
    );
    assert_eq!(
        again[0].1,
        Enqueued::Duplicate(a[0].1.id()),
        "a second tick neither"
    );
    let job = jobs::get(&app.db, a[0].1.id()).await.unwrap().unwrap();
    assert_eq!(
        job.run_at,
        Utc.with_ymd_and_hms(2026, 11, 25, 17, 0, 0)
            .single()
            .unwrap()
    );
    assert_eq!(
        job.dedupe_key.as_deref(),
        Some("schedule:daily-report:2026-11-25T17:00:00+00:00")
    );

    // Down for two days and back at 02:00 the next morning: the latest firing (yesterday 18:00,
    // 8 h ago) is within the 12 h catch-up window and runs once; older ones are skipped.
    app.clock.set(
        Utc.with_ymd_and_hms(2026, 11, 28, 1, 0, 0)
            .single()
            .unwrap(),
    );
    let caught = replica_b.tick().await.unwrap();
    let job = jobs::get(&app.db, caught[0].1.id()).await.unwrap().unwrap();
    assert_eq!(
        job.run_at,
        Utc.with_ymd_and_hms(2026, 11, 27, 17, 0, 0)
            .single()
            .unwrap()
    );
    // Back only at 07:00 the day after: that firing is 14 h old, outside the window.
    app.clock.set(
        Utc.with_ymd_and_hms(2026, 11, 29, 7, 0, 0)
            .single()
            .unwrap(),
    );
    assert!(
        replica_a.tick().await.unwrap().is_empty(),
        "too old to catch up"
    );
    let due = jobs::claim(
        &app.db,
        "w",
        100,
        Utc.with_ymd_and_hms(2026, 11, 29, 7, 0, 0)
            .single()
            .unwrap(),
        Utc.with_ymd_and_hms(2026, 11, 29, 8, 0, 0)
            .single()
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        due.len(),
        2,
        "one report for the 25th, one caught up for the 27th"
    );
}

async fn operators_see_the_dead_letter_and_replay_it(backend: TestBackend) {
    let app = TestApp::spawn(backend).await;
    let now = crm_domain::Clock::now(app.clock.as_ref());
    let id = jobs::enqueue(&app.db, &job("voice-call", now), now)
        .await
        .unwrap()
        .id();
    jobs::claim(&app.db, "w", 1, now, now + Duration::seconds(30))
        .await
        .unwrap();
    jobs::fail(&app.db, id, "w", "provider said no", None, now)
        .await
        .unwrap();

    let dead = app
        .graphql_ok(
            "{ deadJobs { nodes { id kind status lastError attempts } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        dead["deadJobs"]["nodes"],
        json!([{ "id": id.to_string(), "kind": "voice-call", "status": "DEAD", "lastError": "provider said no", "attempts": 1 }])
    );
    let manager = app.token_for(Role::Manager, "meg");
    let retried = app
        .graphql_as(
            &manager,
            "mutation($id: ID!) { retryJob(id: $id) { status attempts } }",
            json!({ "id": id.to_string() }),
        )
        .await;
    assert_eq!(
        retried["data"]["retryJob"],
        json!({ "status": "QUEUED", "attempts": 0 })
    );
    let again = app
        .graphql_as(
            &manager,
            "mutation($id: ID!) { retryJob(id: $id) { status } }",
            json!({ "id": id.to_string() }),
        )
        .await;
    assert_eq!(
        error_code(&again),
        "NOT_FOUND",
        "only dead jobs are replayed"
    );
    let cancelled = app
        .graphql_ok(
            "mutation($id: ID!) { cancelJob(id: $id) { status } }",
            json!({ "id": id.to_string() }),
        )
        .await;
    assert_eq!(cancelled["cancelJob"]["status"], "CANCELLED");
    let queued = app
        .graphql_ok(
            "{ jobs(filter: {status: QUEUED}) { nodes { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(queued["jobs"]["nodes"], json!([]));
    let sales = app.token_for(Role::Sales, "ana");
    assert_eq!(
        error_code(
            &app.graphql_as(&sales, "{ jobs { nodes { id } } }", json!({}))
                .await
        ),
        "FORBIDDEN"
    );
    let log = app
        .graphql_ok("{ auditLog { nodes { action actor } } }", json!({}))
        .await;
    assert_eq!(
        log["auditLog"]["nodes"],
        json!([{ "action": "job.cancel", "actor": "admin-test" }, { "action": "job.retry", "actor": "meg" }])
    );
}
