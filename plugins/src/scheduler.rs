//! The scheduler: cron expressions evaluated in an IANA time zone, each firing enqueued as a job
//! exactly once, however many replicas tick.
//!
//! Each tick enqueues, for every schedule, its latest firing at or before now, with the dedupe
//! key `schedule:<name>:<firing in UTC>`: a second tick, or a second replica, finds the key
//! taken and enqueues nothing.
//!
//! Catch-up rule after downtime: only the **most recent** missed firing is enqueued, and only if
//! it is at most `catch_up` old; older firings are skipped (three missed daily reports do not
//! make three reports, and a report from last week is not sent today).

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use crm_domain::Clock;
use crm_store::{
    Db, StoreResult,
    jobs::{self, Enqueued, NewJob},
};
use croner::Cron;
use std::{fmt, future::Future, str::FromStr, sync::Arc};

/// One recurring job.
#[derive(Clone)]
pub struct Schedule {
    /// Unique name (part of the dedupe key).
    pub name: String,
    cron: Cron,
    expression: String,
    tz: Tz,
    /// The job kind enqueued.
    pub kind: String,
    /// Its payload.
    pub payload: String,
    /// How old a missed firing may be and still run.
    pub catch_up: Duration,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("name", &self.name)
            .field("cron", &self.expression)
            .field("tz", &self.tz.name())
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Schedule {
    /// Parses a schedule; the error names what is wrong (for config checks at start-up).
    pub fn parse(
        name: &str,
        expression: &str,
        time_zone: &str,
        kind: &str,
        payload: &str,
        catch_up: Duration,
    ) -> Result<Self, String> {
        let cron = Cron::from_str(expression)
            .map_err(|e| format!("schedule {name}: invalid cron `{expression}`: {e}"))?;
        let tz = Tz::from_str(time_zone)
            .map_err(|_| format!("schedule {name}: unknown time zone `{time_zone}`"))?;
        Ok(Self {
            name: name.to_owned(),
            cron,
            expression: expression.to_owned(),
            tz,
            kind: kind.to_owned(),
            payload: payload.to_owned(),
            catch_up,
        })
    }

    /// The latest firing at or before `now`, in UTC.
    pub fn latest_firing(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.tz);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }
}

/// Enqueues the firings of schedules.
#[derive(Clone)]
pub struct Scheduler {
    db: Db,
    clock: Arc<dyn Clock>,
    schedules: Vec<Schedule>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("schedules", &self.schedules)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Builds a scheduler.
    pub fn new(db: Db, clock: Arc<dyn Clock>, schedules: Vec<Schedule>) -> Self {
        Self {
            db,
            clock,
            schedules,
        }
    }

    /// Enqueues what is due now (see the module's catch-up rule); returns one result per
    /// schedule that had a firing in its window.
    pub async fn tick(&self) -> StoreResult<Vec<(String, Enqueued)>> {
        let now = self.clock.now();
        let mut out = Vec::new();
        for schedule in &self.schedules {
            let Some(firing) = schedule.latest_firing(now) else {
                continue;
            };
            if now - firing > schedule.catch_up {
                continue;
            }
            let job = NewJob {
                kind: schedule.kind.clone(),
                payload: schedule.payload.clone(),
                dedupe_key: Some(format!(
                    "schedule:{}:{}",
                    schedule.name,
                    firing.to_rfc3339()
                )),
                priority: 0,
                run_at: firing,
                max_attempts: 5,
            };
            let enqueued = jobs::enqueue(&self.db, &job, now).await?;
            if let Enqueued::Created(id) = enqueued {
                tracing::info!(schedule = %schedule.name, %firing, job_id = %id, "Scheduled job enqueued.");
            }
            out.push((schedule.name.clone(), enqueued));
        }
        Ok(out)
    }

    /// Ticks every `every` until `shutdown`.
    pub async fn run_until(
        self,
        every: std::time::Duration,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        let mut interval = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = interval.tick() => {
                    if let Err(error) = self.tick().await {
                        tracing::error!(%error, "Scheduler tick failed.");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn daily() -> Schedule {
        Schedule::parse(
            "daily-report",
            "0 18 * * *",
            "Europe/Berlin",
            "generate-report",
            "{}",
            Duration::hours(12),
        )
        .unwrap()
    }

    #[test]
    fn firings_follow_the_zone_across_dst() {
        let s = daily();
        // Summer (CEST, UTC+2): 18:00 Berlin is 16:00 UTC; winter (CET, UTC+1): 17:00 UTC.
        let summer = Utc.with_ymd_and_hms(2026, 10, 24, 20, 0, 0).unwrap();
        assert_eq!(
            s.latest_firing(summer).unwrap(),
            Utc.with_ymd_and_hms(2026, 10, 24, 16, 0, 0).unwrap()
        );
        let winter = Utc.with_ymd_and_hms(2026, 10, 25, 20, 0, 0).unwrap(); // the day DST ends
        assert_eq!(
            s.latest_firing(winter).unwrap(),
            Utc.with_ymd_and_hms(2026, 10, 25, 17, 0, 0).unwrap()
        );
    }

    #[test]
    fn bad_schedules_are_named() {
        let err = Schedule::parse(
            "x",
            "61 * * * *",
            "Europe/Berlin",
            "k",
            "{}",
            Duration::hours(1),
        )
        .unwrap_err();
        assert!(err.contains("invalid cron"), "{err}");
        let err = Schedule::parse(
            "x",
            "0 18 * * *",
            "Mars/Base",
            "k",
            "{}",
            Duration::hours(1),
        )
        .unwrap_err();
        assert!(err.contains("unknown time zone"), "{err}");
    }
}
