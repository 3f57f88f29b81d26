//! Job-queue throughput: enqueues N no-op jobs, then drains them with one runner and reports
//! jobs claimed and completed per second (BENCHMARKS.md).
//!
//! cargo run --release -p crm-plugins --example queue_bench -- <database-url> [jobs] [concurrency]

use async_trait::async_trait;
use chrono::Utc;
use crm_domain::SystemClock;
use crm_plugins::{JobError, JobHandler, Registry, Runner, RunnerOptions};
use crm_store::{
    Db, DbOptions,
    jobs::{self, NewJob},
};
use std::{sync::Arc, time::Instant};

struct Noop;

#[async_trait]
impl JobHandler for Noop {
    fn kind(&self) -> &'static str {
        "noop"
    }

    async fn run(&self, _payload: &str) -> Result<(), JobError> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "sqlite:///tmp/crm-queue-bench.db".into());
    let count: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let concurrency: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(32);
    let options = DbOptions {
        url,
        max_connections: 16,
        acquire_timeout: std::time::Duration::from_secs(30),
        sqlite_busy_timeout: std::time::Duration::from_secs(30),
    };
    let db = Db::open(&options).await?;
    let started = Instant::now();
    let now = Utc::now();
    for n in 0..count {
        let job = NewJob {
            kind: "noop".into(),
            payload: format!("{{\"n\":{n}}}"),
            dedupe_key: None,
            priority: 0,
            run_at: now,
            max_attempts: 3,
        };
        jobs::enqueue(&db, &job, now).await?;
    }
    let enqueued = started.elapsed();
    println!(
        "enqueued {count} jobs in {:.1} s ({:.0}/s, one transaction each)",
        enqueued.as_secs_f64(),
        count as f64 / enqueued.as_secs_f64()
    );
    let runner = Runner::new(
        db.clone(),
        Registry::default().with(Arc::new(Noop)),
        Arc::new(SystemClock),
        RunnerOptions {
            worker_id: "bench".into(),
            concurrency,
            lease: chrono::Duration::minutes(5),
            poll_interval: std::time::Duration::from_millis(100),
        },
    );
    let started = Instant::now();
    let mut done = 0;
    loop {
        let ran = runner.run_once().await?;
        if ran == 0 {
            break;
        }
        done += ran;
    }
    let elapsed = started.elapsed();
    println!(
        "claimed and completed {done} jobs in {:.1} s: {:.0} jobs/s (batches of {concurrency}, {} backend)",
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64(),
        db.backend()
    );
    Ok(())
}
