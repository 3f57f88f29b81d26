//! The rules of the call queue: when a lead may be called, in which time zone, when an
//! unanswered call is tried again and which queued call goes first. Pure functions, no I/O.
//!
//! - [`CallingWindow`] is the configured calling hours (`voice.calling_window`), local
//!   wall-clock times on chosen weekdays; [`CallingWindow::hours`] parses it once into
//!   [`CallingHours`], which [`is_open`] and [`next_allowed`] take.
//! - [`time_zone_for`] picks the lead's zone: their own, else their phone's country's.
//! - [`RetryPolicy`] spaces the attempts of an unanswered call (`voice.retry`); the time it
//!   gives is then moved into the calling hours with [`next_allowed`].
//! - [`queue_priority`] orders the queue.
//!
//! # Calling hours across DST changes
//!
//! On each allowed day the window is the span of instants from the local `start` to the local
//! `end` (end exclusive). A local time that does not exist (the clock jumps over it, spring
//! forward) stands for the first instant after the jump; a local time that happens twice (fall
//! back) stands for its earlier occurrence. A day whose window falls entirely into the jump has
//! no window. Windows never span midnight: `start` must lie before `end`.

use crate::voice::Disposition;
use chrono::{
    DateTime, Datelike as _, LocalResult, NaiveDate, NaiveTime, TimeDelta, TimeZone as _, Utc,
    Weekday,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The config key of [`CallingWindow`], used in its validation messages.
pub const CALLING_WINDOW_KEY: &str = "voice.calling_window";

/// The config key of [`RetryPolicy`], used in its validation messages.
pub const RETRY_KEY: &str = "voice.retry";

/// The weekday names accepted in [`CallingWindow::weekdays`], Monday first.
const WEEKDAY_NAMES: [(&str, Weekday); 7] = [
    ("mon", Weekday::Mon),
    ("tue", Weekday::Tue),
    ("wed", Weekday::Wed),
    ("thu", Weekday::Thu),
    ("fri", Weekday::Fri),
    ("sat", Weekday::Sat),
    ("sun", Weekday::Sun),
];

/// When leads may be called, in each lead's local time (`[voice.calling_window]`).
///
/// Parse it with [`CallingWindow::hours`] (or check it with [`CallingWindow::validate`]) when
/// the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallingWindow {
    /// The first minute calls may be placed, local wall-clock `HH:MM` (default `09:00`).
    pub start: String,
    /// The end of the window, local wall-clock `HH:MM`, exclusive: at `20:00` (the default)
    /// no new call starts. Must lie after `start` on the same day.
    pub end: String,
    /// The days calls may be placed on: `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun`
    /// (any case); at least one. Default Monday to Friday.
    pub weekdays: Vec<String>,
}

impl Default for CallingWindow {
    fn default() -> Self {
        Self {
            start: "09:00".to_owned(),
            end: "20:00".to_owned(),
            weekdays: ["mon", "tue", "wed", "thu", "fri"]
                .map(str::to_owned)
                .to_vec(),
        }
    }
}

impl CallingWindow {
    /// Parses the window, reporting every problem at once, each naming its field
    /// (`voice.calling_window.start: "9:7x" is not a time HH:MM`).
    pub fn hours(&self) -> Result<CallingHours, Vec<String>> {
        let mut problems = Vec::new();
        let start = parse_time("start", &self.start, &mut problems);
        let end = parse_time("end", &self.end, &mut problems);
        if let (Some(start), Some(end)) = (start, end)
            && start >= end
        {
            problems.push(format!(
                "{CALLING_WINDOW_KEY}: start {} must lie before end {} (a window cannot span \
                 midnight)",
                start.format("%H:%M"),
                end.format("%H:%M"),
            ));
        }
        let mut days = 0_u8;
        for raw in &self.weekdays {
            let name = raw.trim().to_ascii_lowercase();
            match WEEKDAY_NAMES.iter().find(|(known, _)| *known == name) {
                Some((_, day)) => days |= day_bit(*day),
                None => problems.push(format!(
                    "{CALLING_WINDOW_KEY}.weekdays: {raw:?} is not a weekday (mon, tue, wed, \
                     thu, fri, sat, sun)"
                )),
            }
        }
        if self.weekdays.is_empty() {
            problems.push(format!(
                "{CALLING_WINDOW_KEY}.weekdays must name at least one day"
            ));
        }
        match (start, end) {
            (Some(start), Some(end)) if problems.is_empty() => {
                Ok(CallingHours { start, end, days })
            }
            _ => Err(problems),
        }
    }

    /// Checks the window: every problem, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        self.hours().map(|_| ())
    }
}

/// Parses one `HH:MM` field of the window, or records why it cannot.
fn parse_time(field: &str, raw: &str, problems: &mut Vec<String>) -> Option<NaiveTime> {
    let parsed = NaiveTime::parse_from_str(raw.trim(), "%H:%M").ok();
    if parsed.is_none() {
        problems.push(format!(
            "{CALLING_WINDOW_KEY}.{field}: {raw:?} is not a time HH:MM"
        ));
    }
    parsed
}

/// The bit of a weekday in [`CallingHours`]' day set.
fn day_bit(day: Weekday) -> u8 {
    1 << day.num_days_from_monday()
}

/// A parsed, valid [`CallingWindow`]: `start < end`, at least one weekday.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CallingHours {
    start: NaiveTime,
    end: NaiveTime,
    /// Bit `n` set: the weekday `n` days from Monday is allowed.
    days: u8,
}

impl Default for CallingHours {
    /// 09:00 to 20:00, Monday to Friday (the default [`CallingWindow`]).
    fn default() -> Self {
        Self {
            start: NaiveTime::MIN + TimeDelta::hours(9),
            end: NaiveTime::MIN + TimeDelta::hours(20),
            days: 0b001_1111,
        }
    }
}

impl CallingHours {
    /// The local time the window opens.
    pub fn start(&self) -> NaiveTime {
        self.start
    }

    /// The local time the window closes (exclusive).
    pub fn end(&self) -> NaiveTime {
        self.end
    }

    /// Whether calls may be placed on this weekday.
    pub fn allows(&self, day: Weekday) -> bool {
        self.days & day_bit(day) != 0
    }

    /// The allowed weekdays, Monday first.
    pub fn weekdays(&self) -> Vec<Weekday> {
        WEEKDAY_NAMES
            .iter()
            .map(|(_, day)| *day)
            .filter(|day| self.allows(*day))
            .collect()
    }

    /// The window of one local date as instants `[open, close)`, if the date is allowed and
    /// its window is not swallowed by a DST jump.
    fn interval(&self, tz: Tz, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.allows(date.weekday()) {
            return None;
        }
        let open = local_instant(tz, date, self.start)?;
        let close = local_instant(tz, date, self.end)?;
        (open < close).then_some((open, close))
    }
}

impl fmt::Debug for CallingHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallingHours")
            .field("start", &self.start)
            .field("end", &self.end)
            .field("weekdays", &self.weekdays())
            .finish()
    }
}

/// How many days [`next_allowed`] looks ahead: a full year, so that even a single allowed
/// weekday whose window a DST jump swallows once is found again.
const SEARCH_DAYS: u32 = 370;

/// The first instant at or after `now` inside the window, if any within [`SEARCH_DAYS`].
fn first_open(hours: &CallingHours, tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Start a day early: with an odd zone a window of the previous local date may still run.
    let mut date = now.with_timezone(&tz).date_naive().pred_opt()?;
    for _ in 0..SEARCH_DAYS {
        if let Some((open, close)) = hours.interval(tz, date)
            && now < close
        {
            return Some(open.max(now));
        }
        date = date.succ_opt()?;
    }
    None
}

/// Whether a lead in `tz` may be called at `now`: an allowed weekday in their local time and
/// `start <= local time < end` (see the module docs for DST days).
pub fn is_open(hours: &CallingHours, tz: Tz, now: DateTime<Utc>) -> bool {
    first_open(hours, tz, now) == Some(now)
}

/// The earliest instant at or after `now` a lead in `tz` may be called: `now` itself when the
/// window is open, else the next window's start, skipping days that are not allowed.
///
/// A start that does not exist on a spring-forward day gives the first instant after the jump
/// (`02:30` on 2026-03-29 in `Europe/Berlin` → `03:00` CEST); one that happens twice on a
/// fall-back day gives the earlier occurrence. A valid [`CallingHours`] always opens again
/// within a year; should it not, `now` is returned.
pub fn next_allowed(hours: &CallingHours, tz: Tz, now: DateTime<Utc>) -> DateTime<Utc> {
    first_open(hours, tz, now).unwrap_or(now)
}

/// The instant a local date and time stands for in `tz`: the earlier of two on a fall-back,
/// the first instant after the jump when the clock skips it.
fn local_instant(tz: Tz, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
    let naive = date.and_time(time);
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(at) => Some(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => Some(first.min(second).with_timezone(&Utc)),
        LocalResult::None => {
            // The clock jumps over `naive`: find the jump, the first second whose local time
            // is at or past `naive`. No zone is more than 15 hours off UTC, so the local time
            // is before `naive` 15 hours ahead of it and after it 15 hours behind.
            let local = |secs: i64| {
                DateTime::from_timestamp(secs, 0).map(|at| at.with_timezone(&tz).naive_local())
            };
            let guess = naive.and_utc().timestamp();
            let (mut before, mut after) = (guess - 15 * 3600, guess + 15 * 3600);
            if local(before)? >= naive || local(after)? < naive {
                return None;
            }
            while after - before > 1 {
                let mid = before + (after - before) / 2;
                if local(mid)? < naive {
                    before = mid;
                } else {
                    after = mid;
                }
            }
            DateTime::from_timestamp(after, 0)
        }
    }
}

/// The IANA zone most leads of a country live in (ISO 3166-1 alpha-2, any case), if known.
///
/// Countries that span several zones get their most populous one (`US` → `America/New_York`,
/// `CA` → `America/Toronto`, `AU` → `Australia/Sydney`, `BR` → `America/Sao_Paulo`, `RU` →
/// `Europe/Moscow`): a lead's own `time_zone` field overrides it (see [`time_zone_for`]).
pub fn country_time_zone(country: &str) -> Option<Tz> {
    use chrono_tz::{America, Asia, Atlantic, Australia, Europe, Pacific};
    let zone = match country.trim().to_ascii_uppercase().as_str() {
        // German-speaking countries and the former Yugoslavia.
        "DE" => Europe::Berlin,
        "AT" => Europe::Vienna,
        "CH" => Europe::Zurich,
        "LI" => Europe::Vaduz,
        "BA" => Europe::Sarajevo,
        "RS" => Europe::Belgrade,
        "XK" => Europe::Belgrade,
        "HR" => Europe::Zagreb,
        "SI" => Europe::Ljubljana,
        "ME" => Europe::Podgorica,
        "MK" => Europe::Skopje,
        "AL" => Europe::Tirane,
        // The rest of Europe.
        "GB" => Europe::London,
        "IE" => Europe::Dublin,
        "FR" => Europe::Paris,
        "IT" => Europe::Rome,
        "ES" => Europe::Madrid,
        "PT" => Europe::Lisbon,
        "NL" => Europe::Amsterdam,
        "BE" => Europe::Brussels,
        "LU" => Europe::Luxembourg,
        "PL" => Europe::Warsaw,
        "CZ" => Europe::Prague,
        "SK" => Europe::Bratislava,
        "HU" => Europe::Budapest,
        "RO" => Europe::Bucharest,
        "BG" => Europe::Sofia,
        "GR" => Europe::Athens,
        "CY" => Asia::Nicosia,
        "MT" => Europe::Malta,
        "SE" => Europe::Stockholm,
        "NO" => Europe::Oslo,
        "DK" => Europe::Copenhagen,
        "FI" => Europe::Helsinki,
        "IS" => Atlantic::Reykjavik,
        "EE" => Europe::Tallinn,
        "LV" => Europe::Riga,
        "LT" => Europe::Vilnius,
        "TR" => Europe::Istanbul,
        "UA" => Europe::Kyiv,
        "MD" => Europe::Chisinau,
        "RU" => Europe::Moscow,
        // The rest of the world.
        "US" => America::New_York,
        "CA" => America::Toronto,
        "MX" => America::Mexico_City,
        "BR" => America::Sao_Paulo,
        "AU" => Australia::Sydney,
        "NZ" => Pacific::Auckland,
        "IN" => Asia::Kolkata,
        "CN" => Asia::Shanghai,
        "JP" => Asia::Tokyo,
        "KR" => Asia::Seoul,
        "SG" => Asia::Singapore,
        "AE" => Asia::Dubai,
        "IL" => Asia::Jerusalem,
        _ => return None,
    };
    Some(zone)
}

/// The zone a lead is called in: their own `time_zone` when set, else the zone of their
/// phone's country ([`country_time_zone`], e.g. from [`crate::Phone::country`]), else
/// `default`.
pub fn time_zone_for(phone_country: Option<&str>, customer_tz: Option<Tz>, default: Tz) -> Tz {
    customer_tz
        .or_else(|| phone_country.and_then(country_time_zone))
        .unwrap_or(default)
}

/// When an unanswered call is tried again (`[voice.retry]`).
///
/// Only dispositions that may reach the person later are retried
/// ([`Disposition::retryable`]: no answer, busy, voicemail). The time [`RetryPolicy::next_attempt`]
/// gives ignores calling hours: pass it through [`next_allowed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 to 10; default 3). `1` never retries.
    pub max_attempts: u32,
    /// Minutes to wait after attempt 1 ends before attempt 2, after attempt 2 before attempt
    /// 3, and so on; the last value repeats for later attempts. Each at least 1; default
    /// `[60, 240]`.
    pub spacing_minutes: Vec<u32>,
    /// The least minutes between two calls to the same number, whatever the spacing
    /// (default 60).
    pub min_interval_minutes: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            spacing_minutes: vec![60, 240],
            min_interval_minutes: 60,
        }
    }
}

impl RetryPolicy {
    /// The most attempts a policy may allow.
    pub const MAX_ATTEMPTS: u32 = 10;

    /// Checks the policy: every problem, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !(1..=Self::MAX_ATTEMPTS).contains(&self.max_attempts) {
            problems.push(format!(
                "{RETRY_KEY}.max_attempts: {} must lie in 1..={}",
                self.max_attempts,
                Self::MAX_ATTEMPTS
            ));
        }
        if self.spacing_minutes.is_empty() {
            problems.push(format!(
                "{RETRY_KEY}.spacing_minutes must hold at least one delay"
            ));
        }
        for (index, minutes) in self.spacing_minutes.iter().enumerate() {
            if *minutes < 1 {
                problems.push(format!(
                    "{RETRY_KEY}.spacing_minutes[{index}]: {minutes} must be at least 1"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The least time between two calls to the same number.
    pub fn min_interval(&self) -> TimeDelta {
        TimeDelta::minutes(i64::from(self.min_interval_minutes))
    }

    /// When to try again after attempt number `attempt` (1 for the first call) ended at
    /// `ended_at` with `disposition`: `ended_at` plus the spacing for that attempt, but at
    /// least [`RetryPolicy::min_interval`]. `None` when the disposition is not retryable or
    /// the attempts are used up (`attempt >= max_attempts`).
    pub fn next_attempt(
        &self,
        disposition: Disposition,
        attempt: u32,
        ended_at: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if !disposition.retryable() || attempt >= self.max_attempts {
            return None;
        }
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        let spacing = self
            .spacing_minutes
            .get(index)
            .or(self.spacing_minutes.last())
            .copied()
            .unwrap_or(0);
        let minutes = spacing.max(self.min_interval_minutes);
        ended_at.checked_add_signed(TimeDelta::minutes(i64::from(minutes)))
    }
}

/// The priority of a queued call: higher goes first.
///
/// `score * 1000`, with the lead score clamped to `0..=100` (unknown = 0): the score always
/// dominates, so a lead one point better goes first however long the other waited. Among equal
/// priorities the queue serves the longer wait first: it orders by priority, then by the time
/// a call may be dialled (`not_before`), then by the order of enqueueing (time-ordered ids).
/// The result lies in `0..=100_000`.
pub fn queue_priority(score: Option<i32>) -> i32 {
    score.unwrap_or(0).clamp(0, 100) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Europe};

    fn utc(raw: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(raw)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn window(start: &str, end: &str, weekdays: &[&str]) -> CallingWindow {
        CallingWindow {
            start: start.to_owned(),
            end: end.to_owned(),
            weekdays: weekdays.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    const EVERY_DAY: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

    #[test]
    fn the_default_window_is_nine_to_eight_on_weekdays() {
        let hours = CallingWindow::default().hours().unwrap();
        assert_eq!(hours, CallingHours::default());
        assert_eq!(hours.start().to_string(), "09:00:00");
        assert_eq!(hours.end().to_string(), "20:00:00");
        assert_eq!(
            hours.weekdays(),
            [
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri
            ]
        );
    }

    #[test]
    fn window_edges_in_berlin() {
        let hours = CallingHours::default();
        let tz = Europe::Berlin;
        // Wednesday 2026-01-14, CET = UTC+1.
        assert!(!is_open(&hours, tz, utc("2026-01-14T07:59:59Z")));
        assert!(is_open(&hours, tz, utc("2026-01-14T08:00:00Z")));
        assert!(is_open(&hours, tz, utc("2026-01-14T18:59:59Z")));
        assert!(!is_open(&hours, tz, utc("2026-01-14T19:00:00Z")));
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-01-14T07:59:59Z")),
            utc("2026-01-14T08:00:00Z")
        );
        let open = utc("2026-01-14T12:34:56Z");
        assert_eq!(next_allowed(&hours, tz, open), open);
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-01-14T19:00:00Z")),
            utc("2026-01-15T08:00:00Z")
        );
        // Summer (CEST = UTC+2).
        assert!(!is_open(&hours, tz, utc("2026-07-15T06:59:59Z")));
        assert!(is_open(&hours, tz, utc("2026-07-15T07:00:00Z")));
        assert!(is_open(&hours, tz, utc("2026-07-15T17:59:59Z")));
        assert!(!is_open(&hours, tz, utc("2026-07-15T18:00:00Z")));
    }

    #[test]
    fn window_edges_in_new_york() {
        let hours = CallingHours::default();
        let tz = America::New_York;
        // Wednesday 2026-01-14, EST = UTC-5: the local evening is the next UTC day.
        assert!(!is_open(&hours, tz, utc("2026-01-14T13:59:59Z")));
        assert!(is_open(&hours, tz, utc("2026-01-14T14:00:00Z")));
        assert!(is_open(&hours, tz, utc("2026-01-15T00:59:59Z")));
        assert!(!is_open(&hours, tz, utc("2026-01-15T01:00:00Z")));
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-01-15T01:00:00Z")),
            utc("2026-01-15T14:00:00Z")
        );
        // Friday 20:00 EST is Saturday 01:00 UTC: on to Monday 09:00 EST.
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-01-17T01:00:00Z")),
            utc("2026-01-19T14:00:00Z")
        );
    }

    #[test]
    fn weekends_are_skipped() {
        let hours = CallingHours::default();
        let tz = Europe::Berlin;
        // Friday 2026-01-16 20:00 CET → Monday 2026-01-19 09:00 CET.
        let monday = utc("2026-01-19T08:00:00Z");
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-01-16T19:00:00Z")),
            monday
        );
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-01-17T10:00:00Z")),
            monday
        );
        assert!(!is_open(&hours, tz, utc("2026-01-18T10:00:00Z")));
        // Only Saturdays.
        let saturdays = window("10:00", "12:00", &["SAT"]).hours().unwrap();
        assert_eq!(
            next_allowed(&saturdays, tz, utc("2026-01-17T11:00:00Z")),
            utc("2026-01-24T09:00:00Z")
        );
    }

    #[test]
    fn the_weekend_before_a_dst_change_ends_at_the_new_offset() {
        let hours = CallingHours::default();
        let tz = Europe::Berlin;
        // Friday 20:00 CET → Monday 09:00 CEST after spring forward on Sunday.
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-03-27T19:00:00Z")),
            utc("2026-03-30T07:00:00Z")
        );
        // Friday 20:00 CEST → Monday 09:00 CET after fall back on Sunday.
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-10-23T18:00:00Z")),
            utc("2026-10-26T08:00:00Z")
        );
    }

    #[test]
    fn a_start_in_the_spring_forward_gap_opens_after_the_jump() {
        // 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let hours = window("02:30", "03:30", &EVERY_DAY).hours().unwrap();
        let tz = Europe::Berlin;
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-03-29T00:00:00Z")),
            utc("2026-03-29T01:00:00Z")
        );
        assert!(!is_open(&hours, tz, utc("2026-03-29T00:59:59Z")));
        assert!(is_open(&hours, tz, utc("2026-03-29T01:00:00Z")));
        // 03:30 CEST = 01:30 UTC closes it.
        assert!(is_open(&hours, tz, utc("2026-03-29T01:29:59Z")));
        assert!(!is_open(&hours, tz, utc("2026-03-29T01:30:00Z")));
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-03-29T01:30:00Z")),
            utc("2026-03-30T00:30:00Z")
        );
        // The day before is still CET.
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-03-28T00:00:00Z")),
            utc("2026-03-28T01:30:00Z")
        );
    }

    #[test]
    fn a_window_inside_the_gap_skips_the_day() {
        let hours = window("02:10", "02:50", &EVERY_DAY).hours().unwrap();
        let tz = Europe::Berlin;
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-03-29T00:00:00Z")),
            utc("2026-03-30T00:10:00Z")
        );
        assert!(!is_open(&hours, tz, utc("2026-03-29T01:00:00Z")));
        // A single allowed weekday whose window the jump swallows: the Sunday after.
        let sundays = window("02:10", "02:50", &["sun"]).hours().unwrap();
        assert_eq!(
            next_allowed(&sundays, tz, utc("2026-03-28T12:00:00Z")),
            utc("2026-04-05T00:10:00Z")
        );
    }

    #[test]
    fn an_ambiguous_start_on_fall_back_takes_the_earlier_instant() {
        // 2026-10-25 in Berlin: 03:00 CEST (01:00 UTC) falls back to 02:00 CET, so 02:30
        // happens at 00:30 UTC and again at 01:30 UTC; 03:30 CET is 02:30 UTC.
        let hours = window("02:30", "03:30", &EVERY_DAY).hours().unwrap();
        let tz = Europe::Berlin;
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-10-24T23:00:00Z")),
            utc("2026-10-25T00:30:00Z")
        );
        assert!(!is_open(&hours, tz, utc("2026-10-25T00:29:59Z")));
        assert!(is_open(&hours, tz, utc("2026-10-25T00:30:00Z")));
        // Open without a break through the repeated hour (local 02:10 CET).
        assert!(is_open(&hours, tz, utc("2026-10-25T01:10:00Z")));
        assert!(is_open(&hours, tz, utc("2026-10-25T02:29:59Z")));
        assert!(!is_open(&hours, tz, utc("2026-10-25T02:30:00Z")));
        assert_eq!(
            next_allowed(&hours, tz, utc("2026-10-25T02:30:00Z")),
            utc("2026-10-26T01:30:00Z")
        );
    }

    #[test]
    fn sarajevo_seen_from_utc() {
        let hours = CallingHours::default();
        let tz = Europe::Sarajevo;
        // Thursday 2026-01-15 07:30 UTC is 08:30 CET.
        let winter = utc("2026-01-15T07:30:00Z");
        assert!(!is_open(&hours, tz, winter));
        assert_eq!(
            next_allowed(&hours, tz, winter),
            utc("2026-01-15T08:00:00Z")
        );
        // Wednesday 2026-07-15 18:30 UTC is 20:30 CEST: closed until 07:00 UTC.
        let summer = utc("2026-07-15T18:30:00Z");
        assert!(!is_open(&hours, tz, summer));
        assert_eq!(
            next_allowed(&hours, tz, summer),
            utc("2026-07-16T07:00:00Z")
        );
        assert!(is_open(&hours, tz, utc("2026-07-16T07:00:00Z")));
    }

    #[test]
    fn time_zone_precedence() {
        let default = Europe::Berlin;
        assert_eq!(
            time_zone_for(Some("BA"), Some(America::Chicago), default),
            America::Chicago
        );
        assert_eq!(time_zone_for(Some("ba"), None, default), Europe::Sarajevo);
        assert_eq!(time_zone_for(Some(" RS "), None, default), Europe::Belgrade);
        assert_eq!(time_zone_for(Some("US"), None, default), America::New_York);
        assert_eq!(time_zone_for(Some("ZZ"), None, default), default);
        assert_eq!(time_zone_for(None, None, Europe::Vienna), Europe::Vienna);
        for (country, zone) in [
            ("DE", "Europe/Berlin"),
            ("AT", "Europe/Vienna"),
            ("CH", "Europe/Zurich"),
            ("HR", "Europe/Zagreb"),
            ("SI", "Europe/Ljubljana"),
            ("ME", "Europe/Podgorica"),
            ("MK", "Europe/Skopje"),
            ("GB", "Europe/London"),
            ("ES", "Europe/Madrid"),
            ("PT", "Europe/Lisbon"),
            ("UA", "Europe/Kyiv"),
            ("CA", "America/Toronto"),
            ("AU", "Australia/Sydney"),
            ("BR", "America/Sao_Paulo"),
            ("RU", "Europe/Moscow"),
            ("IN", "Asia/Kolkata"),
            ("CN", "Asia/Shanghai"),
            ("JP", "Asia/Tokyo"),
        ] {
            assert_eq!(country_time_zone(country).map(|tz| tz.name()), Some(zone));
        }
    }

    #[test]
    fn retries_follow_the_spacing_and_repeat_its_last_value() {
        let ended = utc("2026-01-14T10:00:00Z");
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.next_attempt(Disposition::NoAnswer, 1, ended),
            Some(utc("2026-01-14T11:00:00Z"))
        );
        assert_eq!(
            policy.next_attempt(Disposition::Busy, 2, ended),
            Some(utc("2026-01-14T14:00:00Z"))
        );
        // The cap: three attempts in total.
        assert_eq!(policy.next_attempt(Disposition::Voicemail, 3, ended), None);
        assert_eq!(policy.next_attempt(Disposition::NoAnswer, 7, ended), None);
        // Reached or stopped: never retried.
        for disposition in [
            Disposition::Answered,
            Disposition::Failed,
            Disposition::Canceled,
            Disposition::Blocked,
        ] {
            assert_eq!(policy.next_attempt(disposition, 1, ended), None);
        }

        let longer = RetryPolicy {
            max_attempts: 5,
            ..RetryPolicy::default()
        };
        assert_eq!(
            longer.next_attempt(Disposition::NoAnswer, 3, ended),
            Some(utc("2026-01-14T14:00:00Z"))
        );
        assert_eq!(
            longer.next_attempt(Disposition::NoAnswer, 4, ended),
            Some(utc("2026-01-14T14:00:00Z"))
        );
        assert_eq!(longer.next_attempt(Disposition::NoAnswer, 5, ended), None);

        let single = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(single.next_attempt(Disposition::NoAnswer, 1, ended), None);
    }

    #[test]
    fn retries_keep_the_minimum_interval() {
        let ended = utc("2026-01-14T10:00:00Z");
        let policy = RetryPolicy {
            max_attempts: 4,
            spacing_minutes: vec![5, 90],
            min_interval_minutes: 30,
        };
        assert_eq!(
            policy.next_attempt(Disposition::NoAnswer, 1, ended),
            Some(utc("2026-01-14T10:30:00Z"))
        );
        assert_eq!(
            policy.next_attempt(Disposition::NoAnswer, 2, ended),
            Some(utc("2026-01-14T11:30:00Z"))
        );
        assert_eq!(policy.min_interval(), TimeDelta::minutes(30));
    }

    #[test]
    fn a_retry_is_moved_into_calling_hours() {
        let policy = RetryPolicy::default();
        let hours = CallingHours::default();
        // Attempt 2 ended Friday 19:30 CET; the next try falls at 23:30, so Monday 09:00.
        let retry = policy
            .next_attempt(Disposition::NoAnswer, 2, utc("2026-01-16T18:30:00Z"))
            .unwrap();
        assert_eq!(
            next_allowed(&hours, Europe::Berlin, retry),
            utc("2026-01-19T08:00:00Z")
        );
    }

    #[test]
    fn window_validation_names_every_field() {
        assert_eq!(CallingWindow::default().validate(), Ok(()));
        assert_eq!(
            window(" 8:30 ", "17:45", &["Mon", "SAT", "sun", "mon"]).validate(),
            Ok(())
        );

        let problems = window("9:7x", "25:00", &["mon", "funday"])
            .validate()
            .unwrap_err();
        assert_eq!(
            problems,
            [
                r#"voice.calling_window.start: "9:7x" is not a time HH:MM"#,
                r#"voice.calling_window.end: "25:00" is not a time HH:MM"#,
                r#"voice.calling_window.weekdays: "funday" is not a weekday (mon, tue, wed, thu, fri, sat, sun)"#,
            ]
        );
        assert_eq!(
            window("20:00", "09:00", &[]).validate().unwrap_err(),
            [
                "voice.calling_window: start 20:00 must lie before end 09:00 (a window cannot \
                 span midnight)",
                "voice.calling_window.weekdays must name at least one day",
            ]
        );
        assert!(window("09:00", "09:00", &["mon"]).validate().is_err());
        assert!(window("09:00:00", "20:00", &["mon"]).validate().is_err());
        assert!(window("09:00", "20:00", &["monday"]).validate().is_err());
    }

    #[test]
    fn retry_validation_names_every_field() {
        assert_eq!(RetryPolicy::default().validate(), Ok(()));
        let problems = RetryPolicy {
            max_attempts: 0,
            spacing_minutes: vec![60, 0],
            min_interval_minutes: 0,
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "voice.retry.max_attempts: 0 must lie in 1..=10",
                "voice.retry.spacing_minutes[1]: 0 must be at least 1",
            ]
        );
        let problems = RetryPolicy {
            max_attempts: 11,
            spacing_minutes: vec![],
            min_interval_minutes: 60,
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "voice.retry.max_attempts: 11 must lie in 1..=10",
                "voice.retry.spacing_minutes must hold at least one delay",
            ]
        );
    }

    #[test]
    fn score_dominates_the_queue() {
        assert_eq!(queue_priority(Some(80)), 80_000);
        assert_eq!(queue_priority(None), 0);
        assert!(queue_priority(Some(51)) > queue_priority(Some(50)));
        // Out-of-range inputs are clamped.
        assert_eq!(queue_priority(Some(250)), 100_000);
        assert_eq!(queue_priority(Some(-3)), 0);
    }
}
