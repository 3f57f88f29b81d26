//! Lead scoring (`/qualify-lead`): an explainable score 0–100 computed from what is known
//! about a customer, with a priority, tags, a recommended next action and the reasons.
//!
//! The score is a pure function of the rules, the customer's profile, their activities and the
//! day it is computed on: it is recomputed from the stored state every time, never incremented
//! by events, so a replayed event can never be counted twice. Five groups of rules each add
//! points, and each group's total is clamped to `[-cap, cap]`:
//!
//! | group        | from                                                                 |
//! |--------------|----------------------------------------------------------------------|
//! | `profile`    | phone, company, corporate or free-mail domain, country, language, source |
//! | `engagement` | interactions by kind and direction, weighted by recency (half-life)  |
//! | `calls`      | call outcomes and sentiment, weighted by recency                     |
//! | `email`      | email engagement (opened, clicked, replied, bounced …), by recency   |
//! | `decay`      | a penalty per week without any activity after a grace period         |
//!
//! Recency works in whole calendar days (UTC), so scoring the same inputs on the same day gives
//! the same result to the last digit.

use crate::{
    customer::{Customer, CustomerStatus},
    interaction::{Direction, InteractionKind},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, fmt, str::FromStr};

/// How hot a lead is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Call now.
    Hot,
    /// Worth a call.
    Warm,
    /// Nurture.
    Cold,
}

impl Priority {
    /// The stored, lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hot => "hot",
            Self::Warm => "warm",
            Self::Cold => "cold",
        }
    }
}

impl FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Hot, Self::Warm, Self::Cold]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown priority `{s}`"))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What should happen with the lead next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextAction {
    /// Above the threshold with a phone number: an AI voice call.
    Call,
    /// Above the threshold without a phone number: a personal email.
    Email,
    /// An appointment was made: follow up on it.
    FollowUp,
    /// Under the threshold (or not interested): the nurture email sequence.
    Nurture,
    /// Neither a phone nor an email can be used: a person has to look at it.
    Review,
    /// Already a customer or churned: nothing to automate.
    None,
}

impl NextAction {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::Email => "email",
            Self::FollowUp => "follow_up",
            Self::Nurture => "nurture",
            Self::Review => "review",
            Self::None => "none",
        }
    }

    /// Every action.
    pub const ALL: [Self; 6] = [
        Self::Call,
        Self::Email,
        Self::FollowUp,
        Self::Nurture,
        Self::Review,
        Self::None,
    ];
}

impl FromStr for NextAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown next action `{s}`"))
    }
}

/// Points for the profile of a lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileRules {
    /// The group's total is clamped to `[-cap, cap]`.
    pub cap: u32,
    /// Has a phone number.
    pub has_phone: i32,
    /// Has a company.
    pub has_company: i32,
    /// The email domain is not a free-mail domain.
    pub corporate_domain: i32,
    /// The email domain is a free-mail domain.
    pub free_mail_domain: i32,
    /// Free-mail domains.
    pub free_mail_domains: Vec<String>,
    /// The country is one of `countries`.
    pub country_match: i32,
    /// Countries served (ISO 3166-1 alpha-2).
    pub countries: Vec<String>,
    /// The language is one of `languages`.
    pub language_match: i32,
    /// Languages the agents speak (ISO 639-1).
    pub languages: Vec<String>,
    /// Points per source (`referral`, `webform`, …); other sources score 0.
    pub sources: BTreeMap<String, i32>,
}

impl Default for ProfileRules {
    fn default() -> Self {
        Self {
            cap: 60,
            has_phone: 15,
            has_company: 10,
            corporate_domain: 10,
            free_mail_domain: -5,
            free_mail_domains: [
                "gmail.com",
                "googlemail.com",
                "yahoo.com",
                "hotmail.com",
                "outlook.com",
                "live.com",
                "icloud.com",
                "gmx.de",
                "gmx.net",
                "web.de",
                "t-online.de",
                "mail.ru",
                "yandex.ru",
            ]
            .map(str::to_owned)
            .to_vec(),
            country_match: 5,
            countries: ["DE", "AT", "CH", "BA", "RS", "HR", "ME"]
                .map(str::to_owned)
                .to_vec(),
            language_match: 5,
            languages: ["de", "bs", "sr", "hr", "en"].map(str::to_owned).to_vec(),
            sources: [
                ("referral", 15),
                ("webform", 10),
                ("website", 10),
                ("webhook", 10),
                ("event", 8),
                ("import", 5),
                ("manual", 5),
            ]
            .map(|(k, v)| (k.to_owned(), v))
            .into(),
        }
    }
}

/// Points for contact with the lead, each weighted by its recency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngagementRules {
    /// The group's total is clamped to `[-cap, cap]`.
    pub cap: u32,
    /// Points per interaction kind (`call`, `email`, `meeting`, `note`).
    pub kinds: BTreeMap<String, i32>,
    /// Extra points when the lead contacted us.
    pub inbound_bonus: i32,
}

impl Default for EngagementRules {
    fn default() -> Self {
        Self {
            cap: 30,
            kinds: [("call", 4), ("email", 2), ("meeting", 12), ("note", 0)]
                .map(|(k, v)| (k.to_owned(), v))
                .into(),
            inbound_bonus: 6,
        }
    }
}

/// Points for call outcomes and their sentiment, weighted by recency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallRules {
    /// The group's total is clamped to `[-cap, cap]`.
    pub cap: u32,
    /// Points per call outcome (normalized: lower case, `-` and spaces as `_`).
    pub outcomes: BTreeMap<String, i32>,
    /// Points per sentiment of a call (`positive`, `neutral`, `negative`).
    pub sentiment: BTreeMap<String, i32>,
    /// Outcomes after which the lead must not be called again.
    pub do_not_call_outcomes: Vec<String>,
    /// Outcomes that mean an appointment was made.
    pub appointment_outcomes: Vec<String>,
    /// Outcomes that mean the lead is not interested.
    pub not_interested_outcomes: Vec<String>,
}

impl Default for CallRules {
    fn default() -> Self {
        Self {
            cap: 40,
            outcomes: [
                ("appointment", 30),
                ("interested", 20),
                ("callback", 10),
                ("answered", 5),
                ("voicemail", 0),
                ("busy", -1),
                ("no_answer", -2),
                ("not_interested", -30),
                ("do_not_call", -40),
            ]
            .map(|(k, v)| (k.to_owned(), v))
            .into(),
            sentiment: [("positive", 8), ("neutral", 0), ("negative", -8)]
                .map(|(k, v)| (k.to_owned(), v))
                .into(),
            do_not_call_outcomes: vec!["do_not_call".to_owned()],
            appointment_outcomes: vec!["appointment".to_owned()],
            not_interested_outcomes: vec!["not_interested".to_owned()],
        }
    }
}

/// Points for email engagement, weighted by recency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailRules {
    /// The group's total is clamped to `[-cap, cap]`.
    pub cap: u32,
    /// Points per email outcome (`opened`, `clicked`, `replied`, `bounced`, …).
    pub events: BTreeMap<String, i32>,
}

impl Default for EmailRules {
    fn default() -> Self {
        Self {
            cap: 20,
            events: [
                ("delivered", 0),
                ("opened", 2),
                ("clicked", 5),
                ("replied", 10),
                ("bounced", -10),
                ("unsubscribed", -15),
                ("complained", -20),
            ]
            .map(|(k, v)| (k.to_owned(), v))
            .into(),
        }
    }
}

/// Recency: how activities lose weight, and the penalty for silence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecayRules {
    /// An activity's points halve every this many days (0: no decay).
    pub half_life_days: u32,
    /// Days after the last activity (or creation) before the penalty starts.
    pub grace_days: u32,
    /// Points taken per full week after the grace period.
    pub points_per_week: u32,
    /// The largest penalty.
    pub max_penalty: u32,
}

impl Default for DecayRules {
    fn default() -> Self {
        Self {
            half_life_days: 30,
            grace_days: 14,
            points_per_week: 2,
            max_penalty: 20,
        }
    }
}

/// Score cut-offs of the priorities: `hot` and above is Hot, `warm` and above is Warm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriorityCutoffs {
    /// Lowest Hot score.
    pub hot: u8,
    /// Lowest Warm score.
    pub warm: u8,
}

impl Default for PriorityCutoffs {
    fn default() -> Self {
        Self { hot: 70, warm: 40 }
    }
}

/// Every scoring rule (`[scoring]` in the config).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringRules {
    /// Profile fit.
    pub profile: ProfileRules,
    /// Engagement.
    pub engagement: EngagementRules,
    /// Call outcomes and sentiment.
    pub calls: CallRules,
    /// Email engagement.
    pub email: EmailRules,
    /// Time decay.
    pub decay: DecayRules,
    /// Priority cut-offs.
    pub priority: PriorityCutoffs,
}

impl ScoringRules {
    /// Every problem with these rules, or none.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let PriorityCutoffs { hot, warm } = self.priority;
        if hot > 100 || warm > 100 {
            problems.push(format!(
                "scoring.priority cut-offs must lie in 0..=100 (hot = {hot}, warm = {warm})"
            ));
        }
        if warm > hot {
            problems.push(format!(
                "scoring.priority.warm ({warm}) must not be above scoring.priority.hot ({hot})"
            ));
        }
        for (group, cap) in [
            ("profile", self.profile.cap),
            ("engagement", self.engagement.cap),
            ("calls", self.calls.cap),
            ("email", self.email.cap),
        ] {
            if cap > 100 {
                problems.push(format!("scoring.{group}.cap ({cap}) must lie in 0..=100"));
            }
        }
        if self.decay.max_penalty > 100 {
            problems.push(format!(
                "scoring.decay.max_penalty ({}) must lie in 0..=100",
                self.decay.max_penalty
            ));
        }
        for kind in self.engagement.kinds.keys() {
            if kind.parse::<InteractionKind>().is_err() {
                problems.push(format!(
                    "scoring.engagement.kinds: `{kind}` is not an interaction kind"
                ));
            }
        }
        problems
    }

    /// The priority of a score.
    pub fn priority(&self, score: u8) -> Priority {
        if score >= self.priority.hot {
            Priority::Hot
        } else if score >= self.priority.warm {
            Priority::Warm
        } else {
            Priority::Cold
        }
    }
}

/// One activity of a lead, as scoring sees it (an interaction, a call record, an email event).
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// What kind of contact.
    pub kind: InteractionKind,
    /// Who started it.
    pub direction: Option<Direction>,
    /// Its outcome (call disposition, email event).
    pub outcome: Option<String>,
    /// The sentiment of a call, when known.
    pub sentiment: Option<String>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// One rule's contribution to a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// The group (`profile`, `engagement`, `calls`, `email`, `decay`).
    pub group: String,
    /// The rule (`has_phone`, `outcome:interested`, `cap`, …).
    pub rule: String,
    /// Points added (negative: taken), rounded to a tenth.
    pub points: f64,
    /// What fired it, in words.
    pub detail: String,
}

/// The result of scoring a lead.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadScore {
    /// 0–100.
    pub score: u8,
    /// From the cut-offs.
    pub priority: Priority,
    /// Labels for the lead (`hot`, `corporate`, `appointment`, …), sorted.
    pub tags: Vec<String>,
    /// What to do next.
    pub next_action: NextAction,
    /// Every rule that contributed, in group order.
    pub reasons: Vec<Reason>,
}

/// A normalized outcome key: lower case, `-` and spaces as `_`.
pub fn outcome_key(raw: &str) -> String {
    raw.trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c == '-' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Whole calendar days (UTC) from `from` to `to`, never negative: every instant of one day
/// gives the same age, so a score does not move between two scorings on the same day.
fn calendar_days(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to.date_naive() - from.date_naive()).num_days().max(0)
}

fn round1(points: f64) -> f64 {
    (points * 10.0).round() / 10.0
}

/// Sums one group, clamps it to `[-cap, cap]` and notes the clamp as a reason of its own.
struct Group {
    name: &'static str,
    cap: u32,
    reasons: Vec<Reason>,
}

impl Group {
    fn new(name: &'static str, cap: u32) -> Self {
        Self {
            name,
            cap,
            reasons: Vec::new(),
        }
    }

    fn add(&mut self, rule: impl Into<String>, points: f64, detail: impl Into<String>) {
        if points != 0.0 {
            self.reasons.push(Reason {
                group: self.name.to_owned(),
                rule: rule.into(),
                points,
                detail: detail.into(),
            });
        }
    }

    /// Rounds the reasons, clamps the total, and returns it with the reasons.
    fn finish(mut self) -> (f64, Vec<Reason>) {
        for reason in &mut self.reasons {
            reason.points = round1(reason.points);
        }
        let raw: f64 = self.reasons.iter().map(|r| r.points).sum();
        let cap = f64::from(self.cap);
        let total = raw.clamp(-cap, cap);
        if total != raw {
            let name = self.name;
            self.add(
                "cap",
                round1(total - raw),
                format!("{name} is capped at ±{cap}"),
            );
        }
        (total, self.reasons)
    }
}

/// Scores a customer from their activities at `now`; `threshold` is the pipeline's decision
/// threshold (a lead above it is called).
pub fn score(
    rules: &ScoringRules,
    threshold: u8,
    customer: &Customer,
    activities: &[Activity],
    now: DateTime<Utc>,
) -> LeadScore {
    let mut tags = Vec::new();
    let weight = |at: DateTime<Utc>| -> f64 {
        let days = calendar_days(at, now);
        match rules.decay.half_life_days {
            0 => 1.0,
            half_life => 0.5_f64.powf(days as f64 / f64::from(half_life)),
        }
    };

    // Profile fit.
    let p = &rules.profile;
    let mut profile = Group::new("profile", p.cap);
    if customer.phone.is_some() {
        profile.add("has_phone", f64::from(p.has_phone), "has a phone number");
    }
    if let Some(company) = &customer.company {
        profile.add(
            "has_company",
            f64::from(p.has_company),
            format!("works at {company}"),
        );
    }
    if let Some(email) = &customer.email {
        let domain = email.domain();
        if p.free_mail_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
        {
            profile.add(
                "free_mail_domain",
                f64::from(p.free_mail_domain),
                format!("free-mail address at {domain}"),
            );
            tags.push("free-mail".to_owned());
        } else {
            profile.add(
                "corporate_domain",
                f64::from(p.corporate_domain),
                format!("corporate address at {domain}"),
            );
            tags.push("corporate".to_owned());
        }
    }
    if let Some(country) = &customer.country
        && p.countries
            .iter()
            .any(|c| c.eq_ignore_ascii_case(country.as_str()))
    {
        profile.add(
            "country_match",
            f64::from(p.country_match),
            format!("country {country} is served"),
        );
    }
    if let Some(language) = &customer.language
        && p.languages
            .iter()
            .any(|l| l.eq_ignore_ascii_case(language.primary()))
    {
        profile.add(
            "language_match",
            f64::from(p.language_match),
            format!("speaks {language}"),
        );
    }
    if let Some(source) = &customer.source
        && let Some(points) = p.sources.get(&outcome_key(source))
    {
        profile.add(
            format!("source:{}", outcome_key(source)),
            f64::from(*points),
            format!("came from {source}"),
        );
    }

    // Engagement, calls and email, in a stable order: by kind, then by key.
    let mut engagement = Group::new("engagement", rules.engagement.cap);
    let mut calls = Group::new("calls", rules.calls.cap);
    let mut email = Group::new("email", rules.email.cap);
    // (group, rule) → (points, count)
    let mut sums: BTreeMap<(u8, String), (f64, u32)> = BTreeMap::new();
    let mut add = |group: u8, rule: String, points: f64| {
        let entry = sums.entry((group, rule)).or_insert((0.0, 0));
        entry.0 += points;
        entry.1 += 1;
    };
    let mut last_activity = customer.created_at;
    let mut latest_call: Option<(DateTime<Utc>, String)> = None;
    let mut do_not_call = false;
    for activity in activities {
        last_activity = last_activity.max(activity.occurred_at);
        let w = weight(activity.occurred_at);
        if let Some(points) = rules.engagement.kinds.get(activity.kind.as_str()) {
            add(0, format!("kind:{}", activity.kind), f64::from(*points) * w);
        }
        if activity.direction == Some(Direction::Inbound) {
            add(
                0,
                "inbound".to_owned(),
                f64::from(rules.engagement.inbound_bonus) * w,
            );
        }
        let outcome = activity.outcome.as_deref().map(outcome_key);
        match activity.kind {
            InteractionKind::Call => {
                if let Some(outcome) = &outcome {
                    if let Some(points) = rules.calls.outcomes.get(outcome) {
                        add(1, format!("outcome:{outcome}"), f64::from(*points) * w);
                    }
                    if rules.calls.do_not_call_outcomes.contains(outcome) {
                        do_not_call = true;
                    }
                    if latest_call
                        .as_ref()
                        .is_none_or(|(at, _)| activity.occurred_at >= *at)
                    {
                        latest_call = Some((activity.occurred_at, outcome.clone()));
                    }
                }
                if let Some(sentiment) = activity.sentiment.as_deref().map(outcome_key)
                    && let Some(points) = rules.calls.sentiment.get(&sentiment)
                {
                    add(1, format!("sentiment:{sentiment}"), f64::from(*points) * w);
                }
            }
            InteractionKind::Email => {
                if let Some(outcome) = &outcome
                    && let Some(points) = rules.email.events.get(outcome)
                {
                    add(2, format!("event:{outcome}"), f64::from(*points) * w);
                }
            }
            InteractionKind::Meeting | InteractionKind::Note => {}
        }
    }
    for ((group, rule), (points, count)) in sums {
        let detail = match count {
            1 => "1 activity, weighted by recency".to_owned(),
            n => format!("{n} activities, weighted by recency"),
        };
        match group {
            0 => engagement.add(rule, points, detail),
            1 => calls.add(rule, points, detail),
            _ => email.add(rule, points, detail),
        }
    }

    // Silence.
    let mut decay = Group::new("decay", rules.decay.max_penalty);
    let silent_days = calendar_days(last_activity, now);
    let overdue_weeks = (silent_days - i64::from(rules.decay.grace_days)).max(0) / 7;
    if overdue_weeks > 0 {
        let penalty = (overdue_weeks * i64::from(rules.decay.points_per_week))
            .min(i64::from(rules.decay.max_penalty));
        decay.add(
            "inactivity",
            -(penalty as f64),
            format!("no activity for {silent_days} days"),
        );
        tags.push("inactive".to_owned());
    }

    let mut reasons = Vec::new();
    let mut total = 0.0;
    for group in [profile, engagement, calls, email, decay] {
        let (sum, group_reasons) = group.finish();
        total += sum;
        reasons.extend(group_reasons);
    }
    let score = total.round().clamp(0.0, 100.0) as u8;
    let priority = rules.priority(score);
    tags.push(priority.as_str().to_owned());

    let latest_outcome = latest_call.map(|(_, outcome)| outcome);
    let appointment = latest_outcome
        .as_ref()
        .is_some_and(|o| rules.calls.appointment_outcomes.contains(o));
    let not_interested = latest_outcome
        .as_ref()
        .is_some_and(|o| rules.calls.not_interested_outcomes.contains(o));
    if appointment {
        tags.push("appointment".to_owned());
    }
    if do_not_call {
        tags.push("do-not-call".to_owned());
    }
    let next_action = match customer.status {
        CustomerStatus::Customer | CustomerStatus::Churned => NextAction::None,
        CustomerStatus::Lead | CustomerStatus::Prospect => {
            let callable = customer.phone.is_some() && !do_not_call;
            if appointment {
                NextAction::FollowUp
            } else if score > threshold && !not_interested {
                if callable {
                    NextAction::Call
                } else if customer.email.is_some() {
                    NextAction::Email
                } else {
                    NextAction::Review
                }
            } else if customer.email.is_some() {
                NextAction::Nurture
            } else {
                NextAction::Review
            }
        }
    };
    tags.sort();
    tags.dedup();
    LeadScore {
        score,
        priority,
        tags,
        next_action,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        customer::{CustomerDraft, NewCustomer},
        values::PhoneRegion,
    };
    use chrono::{Duration, TimeZone as _};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn lead(draft: CustomerDraft) -> Customer {
        let region = PhoneRegion::parse("DE").unwrap();
        NewCustomer::parse(draft, region, now()).unwrap().0
    }

    fn good_lead() -> Customer {
        lead(CustomerDraft {
            name: "Jürgen Müller".into(),
            email: Some("j.mueller@firma.de".into()),
            phone: Some("030 123456".into()),
            company: Some("Müller GmbH".into()),
            language: Some("de".into()),
            source: Some("webform".into()),
            ..CustomerDraft::default()
        })
    }

    fn activity(kind: InteractionKind, outcome: &str, days_ago: i64) -> Activity {
        Activity {
            kind,
            direction: Some(Direction::Outbound),
            outcome: (!outcome.is_empty()).then(|| outcome.to_owned()),
            sentiment: None,
            occurred_at: now() - Duration::days(days_ago),
        }
    }

    fn points(score: &LeadScore, rule: &str) -> Option<f64> {
        score
            .reasons
            .iter()
            .find(|r| r.rule == rule)
            .map(|r| r.points)
    }

    #[test]
    fn profile_rules_explain_a_fresh_lead() {
        let rules = ScoringRules::default();
        let s = score(&rules, 50, &good_lead(), &[], now());
        // 15 phone + 10 company + 10 corporate + 5 country (from the phone) + 5 language + 10 source
        assert_eq!(s.score, 55);
        assert_eq!(s.priority, Priority::Warm);
        assert_eq!(s.next_action, NextAction::Call);
        assert_eq!(s.tags, ["corporate", "warm"]);
        let total: f64 = s.reasons.iter().map(|r| r.points).sum();
        assert_eq!(total, 55.0, "the reasons add up to the score");
        assert_eq!(points(&s, "source:webform"), Some(10.0));
    }

    type Case = (
        &'static str,
        Customer,
        Vec<Activity>,
        u8,
        Priority,
        NextAction,
    );

    #[test]
    fn table() {
        let rules = ScoringRules::default();
        let free_mail = lead(CustomerDraft {
            name: "Ana".into(),
            email: Some("ana@gmail.com".into()),
            ..CustomerDraft::default()
        });
        let phone_only = lead(CustomerDraft {
            name: "Marko".into(),
            phone: Some("+381 11 1234567".into()),
            ..CustomerDraft::default()
        });
        let mut customer = good_lead();
        customer.status = CustomerStatus::Customer;
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("free mail, nothing else", free_mail.clone(), vec![], 0, Priority::Cold, NextAction::Nurture),
            ("free mail, replied and clicked today", free_mail.clone(),
                vec![activity(InteractionKind::Email, "replied", 0), activity(InteractionKind::Email, "clicked", 0)],
                // -5 profile, +4 engagement (2 emails), +15 email
                14, Priority::Cold, NextAction::Nurture),
            ("phone only (RS country derived)", phone_only.clone(), vec![], 20, Priority::Cold, NextAction::Review),
            ("good lead, appointment today", good_lead(),
                vec![activity(InteractionKind::Call, "appointment", 0)],
                // 55 + 4 engagement + 30 call
                89, Priority::Hot, NextAction::FollowUp),
            ("good lead, not interested", good_lead(),
                vec![activity(InteractionKind::Call, "Not Interested", 0)],
                // 55 + 4 - 30
                29, Priority::Cold, NextAction::Nurture),
            ("good lead, asked not to be called", good_lead(),
                vec![activity(InteractionKind::Call, "do-not-call", 0), activity(InteractionKind::Meeting, "", 0)],
                // 55 + 16 engagement - 40
                31, Priority::Cold, NextAction::Nurture),
            ("good lead, a customer already", customer, vec![], 55, Priority::Warm, NextAction::None),
        ];
        for (name, customer, activities, expected, priority, action) in cases {
            let s = score(&rules, 50, &customer, &activities, now());
            assert_eq!(
                (s.score, s.priority, s.next_action),
                (expected, priority, action),
                "{name}: {:#?}",
                s.reasons
            );
        }
    }

    #[test]
    fn groups_are_capped_and_the_cap_is_a_reason() {
        let rules = ScoringRules::default();
        let meetings: Vec<_> = (0..10)
            .map(|_| activity(InteractionKind::Meeting, "", 0))
            .collect();
        let s = score(&rules, 50, &good_lead(), &meetings, now());
        assert_eq!(points(&s, "kind:meeting"), Some(120.0));
        assert_eq!(points(&s, "cap"), Some(-90.0), "engagement capped at 30");
        assert_eq!(s.score, 85);
    }

    #[test]
    fn recency_halves_points_and_silence_costs() {
        let rules = ScoringRules::default();
        let old = [activity(InteractionKind::Call, "interested", 30)];
        let s = score(&rules, 50, &good_lead(), &old, now());
        assert_eq!(
            points(&s, "outcome:interested"),
            Some(10.0),
            "one half-life old"
        );
        // created "now" in the fixture but the activity is 30 days old: the last activity
        // is the later of both, so no inactivity yet.
        assert_eq!(points(&s, "inactivity"), None);

        let mut stale = good_lead();
        stale.created_at = now() - Duration::days(14 + 7 * 3 + 2);
        let s = score(&rules, 50, &stale, &[], now());
        assert_eq!(
            points(&s, "inactivity"),
            Some(-6.0),
            "three weeks after the grace period"
        );
        assert!(s.tags.contains(&"inactive".to_owned()));
    }

    #[test]
    fn sentiment_counts_for_calls() {
        let rules = ScoringRules::default();
        let mut call = activity(InteractionKind::Call, "answered", 0);
        call.sentiment = Some("Negative".into());
        let s = score(&rules, 50, &good_lead(), &[call], now());
        assert_eq!(points(&s, "sentiment:negative"), Some(-8.0));
    }

    #[test]
    fn the_same_inputs_give_the_same_result() {
        let rules = ScoringRules::default();
        let activities = vec![
            activity(InteractionKind::Call, "interested", 3),
            activity(InteractionKind::Email, "opened", 5),
        ];
        let first = score(&rules, 50, &good_lead(), &activities, now());
        let later_that_day = score(
            &rules,
            50,
            &good_lead(),
            &activities,
            now() + Duration::hours(5),
        );
        assert_eq!(first, later_that_day);
    }

    #[test]
    fn threshold_is_strict_and_cutoffs_configurable() {
        let mut rules = ScoringRules::default();
        let s = score(&rules, 55, &good_lead(), &[], now());
        assert_eq!(s.next_action, NextAction::Nurture, "55 is not above 55");
        rules.priority = PriorityCutoffs { hot: 55, warm: 10 };
        assert_eq!(
            score(&rules, 50, &good_lead(), &[], now()).priority,
            Priority::Hot
        );
    }

    #[test]
    fn bad_rules_are_named() {
        let mut rules = ScoringRules::default();
        assert!(rules.problems().is_empty());
        rules.priority = PriorityCutoffs { hot: 30, warm: 101 };
        rules.engagement.kinds.insert("fax".into(), 3);
        let problems = rules.problems();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
