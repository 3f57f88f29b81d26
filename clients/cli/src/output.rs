//! Response shapes and their human-readable rendering (tables and details).

use serde::Deserialize;

/// Widest a table cell gets before it is cut.
const MAX_CELL: usize = 40;

/// A page of a GraphQL connection.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Connection<T> {
    nodes: Vec<T>,
    page_info: PageInfo,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PageInfo {
    has_next_page: bool,
    end_cursor: Option<String>,
}

/// A customer, as selected by the `CustomerFields` fragment.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Customer {
    /// Customer id.
    pub(crate) id: String,
    /// Full name.
    pub(crate) name: String,
    email: Option<String>,
    phone: Option<String>,
    company: Option<String>,
    status: String,
    source: Option<String>,
    language: Option<String>,
    country: Option<String>,
    time_zone: Option<String>,
    owner: Option<String>,
    tags: Vec<String>,
    consent_email: bool,
    consent_call: bool,
    consent_sms: bool,
    notes: Option<String>,
    created_at: String,
    updated_at: String,
    deleted_at: Option<String>,
    interactions: Option<Vec<Interaction>>,
}

/// An interaction, as selected by the `InteractionFields` fragment.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Interaction {
    /// Interaction id.
    pub(crate) id: String,
    customer_id: String,
    kind: String,
    direction: Option<String>,
    subject: Option<String>,
    body: Option<String>,
    outcome: Option<String>,
    occurred_at: String,
    duration_seconds: Option<i64>,
    author: Option<String>,
    created_at: String,
    updated_at: String,
}

/// A table of customers, then the cursor of the next page if any.
pub(crate) fn customer_list(page: &Connection<Customer>) -> String {
    if page.nodes.is_empty() {
        return "No customers found.".to_owned();
    }
    let rows = page.nodes.iter().map(|c| {
        let status = match c.deleted_at {
            Some(_) => format!("{} (deleted)", c.status),
            None => c.status.clone(),
        };
        [
            c.id.clone(),
            c.name.clone(),
            or_dash(c.email.as_deref()),
            or_dash(c.phone.as_deref()),
            or_dash(c.company.as_deref()),
            status,
            c.tags.join(", "),
        ]
    });
    let headers = ["ID", "NAME", "EMAIL", "PHONE", "COMPANY", "STATUS", "TAGS"];
    table(headers, rows) + &next_page(&page.page_info)
}

/// All set fields of a customer, then its interactions when they were fetched.
pub(crate) fn customer(c: &Customer) -> String {
    let yes_no = |consent| if consent { "yes" } else { "no" };
    let consent = format!(
        "email {}, call {}, sms {}",
        yes_no(c.consent_email),
        yes_no(c.consent_call),
        yes_no(c.consent_sms)
    );
    let tags = (!c.tags.is_empty()).then(|| c.tags.join(", "));
    let mut out = details(&[
        ("id", Some(c.id.as_str())),
        ("name", Some(&c.name)),
        ("status", Some(&c.status)),
        ("email", c.email.as_deref()),
        ("phone", c.phone.as_deref()),
        ("company", c.company.as_deref()),
        ("owner", c.owner.as_deref()),
        ("source", c.source.as_deref()),
        ("language", c.language.as_deref()),
        ("country", c.country.as_deref()),
        ("time zone", c.time_zone.as_deref()),
        ("tags", tags.as_deref()),
        ("consent", Some(&consent)),
        ("notes", c.notes.as_deref()),
        ("created", Some(&c.created_at)),
        ("updated", Some(&c.updated_at)),
        ("deleted", c.deleted_at.as_deref()),
    ]);
    match c.interactions.as_deref() {
        None => {}
        Some([]) => out.push_str("\nNo interactions.\n"),
        Some(interactions) => {
            out.push_str(&format!("\nInteractions ({}):\n", interactions.len()));
            out.push_str(&interaction_table(interactions, false));
        }
    }
    out
}

/// A table of interactions, then the cursor of the next page if any.
pub(crate) fn interaction_list(page: &Connection<Interaction>) -> String {
    if page.nodes.is_empty() {
        return "No interactions found.".to_owned();
    }
    interaction_table(&page.nodes, true) + &next_page(&page.page_info)
}

/// All set fields of an interaction.
pub(crate) fn interaction(i: &Interaction) -> String {
    let duration = i.duration_seconds.map(duration);
    details(&[
        ("id", Some(i.id.as_str())),
        ("customer", Some(&i.customer_id)),
        ("kind", Some(&i.kind)),
        ("direction", i.direction.as_deref()),
        ("occurred", Some(&i.occurred_at)),
        ("duration", duration.as_deref()),
        ("subject", i.subject.as_deref()),
        ("outcome", i.outcome.as_deref()),
        ("author", i.author.as_deref()),
        ("body", i.body.as_deref()),
        ("created", Some(&i.created_at)),
        ("updated", Some(&i.updated_at)),
    ])
}

fn interaction_table(interactions: &[Interaction], with_customer: bool) -> String {
    let rows = interactions.iter().map(|i| {
        [
            i.occurred_at.clone(),
            i.kind.clone(),
            or_dash(i.direction.as_deref()),
            or_dash(i.subject.as_deref()),
            or_dash(i.outcome.as_deref()),
            i.duration_seconds.map_or_else(|| "-".to_owned(), duration),
            i.id.clone(),
            i.customer_id.clone(),
        ]
    });
    let headers = [
        "OCCURRED",
        "KIND",
        "DIRECTION",
        "SUBJECT",
        "OUTCOME",
        "DURATION",
        "ID",
        "CUSTOMER",
    ];
    if with_customer {
        table(headers, rows)
    } else {
        let [headers @ .., _] = headers;
        table(headers, rows.map(|[row @ .., _]| row))
    }
}

/// One rule's contribution to a score.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ScoreReason {
    group: String,
    rule: String,
    points: f64,
    detail: String,
}

/// A lead score, as `qualifyLead` returns it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct LeadScore {
    score: i64,
    priority: String,
    tags: Vec<String>,
    next_action: String,
    config_version: String,
    scored_at: String,
    reasons: Vec<ScoreReason>,
}

/// The score, its priority, tags and next action, then a table of the reasons.
pub(crate) fn lead_score(s: &LeadScore) -> String {
    let score = format!("{} / 100", s.score);
    let tags = s.tags.join(", ");
    let mut out = details(&[
        ("score", Some(&score)),
        ("priority", Some(&s.priority)),
        ("next action", Some(&s.next_action)),
        ("tags", (!tags.is_empty()).then_some(tags.as_str())),
        ("config", Some(&s.config_version)),
        ("scored", Some(&s.scored_at)),
    ]);
    if s.reasons.is_empty() {
        out.push_str("\nNo rule contributed.\n");
        return out;
    }
    out.push_str("\nReasons:\n");
    let rows = s.reasons.iter().map(|r| {
        [
            format!("{:+.1}", r.points),
            r.group.clone(),
            r.rule.clone(),
            r.detail.clone(),
        ]
    });
    out.push_str(&table(["POINTS", "GROUP", "RULE", "WHY"], rows));
    out
}

/// A step of a pipeline run.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct PipelineStep {
    name: String,
    status: String,
    attempts: i64,
    last_error: Option<String>,
}

/// A pipeline run with its steps.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct PipelineRun {
    id: String,
    customer_id: String,
    cause: String,
    status: String,
    branch: Option<String>,
    error: Option<String>,
    created_at: String,
    steps: Vec<PipelineStep>,
}

/// Each run with its fields, then a table of its steps, then the next page's cursor.
pub(crate) fn pipeline_runs(page: &Connection<PipelineRun>) -> String {
    if page.nodes.is_empty() {
        return "No pipeline runs found.".to_owned();
    }
    let mut out = String::new();
    for (n, r) in page.nodes.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let status = r.status.to_lowercase();
        out.push_str(&details(&[
            ("run", Some(r.id.as_str())),
            ("customer", Some(&r.customer_id)),
            ("status", Some(&status)),
            ("cause", Some(&r.cause)),
            ("branch", r.branch.as_deref()),
            ("started", Some(&r.created_at)),
            ("error", r.error.as_deref()),
        ]));
        let steps = r.steps.iter().enumerate().map(|(i, s)| {
            [
                (i + 1).to_string(),
                s.name.clone(),
                s.status.to_lowercase(),
                s.attempts.to_string(),
                or_dash(s.last_error.as_deref()),
            ]
        });
        out.push_str(&table(
            ["#", "STEP", "STATUS", "ATTEMPTS", "LAST ERROR"],
            steps,
        ));
    }
    out + &next_page(&page.page_info)
}

fn next_page(info: &PageInfo) -> String {
    match (info.has_next_page, &info.end_cursor) {
        (true, Some(cursor)) => format!("\nNext page: --after {cursor}\n"),
        _ => String::new(),
    }
}

fn duration(seconds: i64) -> String {
    match seconds {
        s if s >= 3600 => format!("{}h{:02}m{:02}s", s / 3600, s % 3600 / 60, s % 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

/// `key: value` lines with aligned values, skipping unset ones.
fn details(fields: &[(&str, Option<&str>)]) -> String {
    let set: Vec<(&str, &str)> = fields
        .iter()
        .filter_map(|&(key, value)| Some((key, value?.trim())))
        .collect();
    let width = set.iter().map(|(key, _)| key.len() + 1).max().unwrap_or(0);
    let indent = format!("\n{:width$}  ", "");
    set.iter()
        .map(|(key, value)| {
            format!(
                "{:width$}  {}\n",
                format!("{key}:"),
                value.replace('\n', &indent)
            )
        })
        .collect()
}

/// Left-aligned columns separated by two spaces; cells are flattened to one
/// line and cut at [`MAX_CELL`] characters.
fn table<const N: usize>(headers: [&str; N], rows: impl Iterator<Item = [String; N]>) -> String {
    let rows: Vec<[String; N]> = std::iter::once(headers.map(str::to_owned))
        .chain(rows.map(|row| row.map(|cell| clip(&cell))))
        .collect();
    let mut widths = [0; N];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn clip(cell: &str) -> String {
    let flat = cell.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX_CELL {
        flat
    } else {
        flat.chars().take(MAX_CELL - 1).chain(['…']).collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn customer_list_is_a_table_with_next_cursor() {
        let page: Connection<Customer> = serde_json::from_value(json!({
            "nodes": [
                {"id": "c1", "name": "Ada Lovelace", "email": "ada@example.com", "phone": null,
                 "company": "Analytical", "status": "LEAD", "tags": ["vip", "math"]},
                {"id": "c2", "name": "Bob", "status": "CHURNED", "tags": [],
                 "deletedAt": "2025-01-01T00:00:00Z"},
            ],
            "pageInfo": {"hasNextPage": true, "endCursor": "abc"},
        }))
        .unwrap();
        assert_eq!(
            customer_list(&page),
            "\
ID  NAME          EMAIL            PHONE  COMPANY     STATUS             TAGS
c1  Ada Lovelace  ada@example.com  -      Analytical  LEAD               vip, math
c2  Bob           -                -      -           CHURNED (deleted)

Next page: --after abc
"
        );
    }

    #[test]
    fn customer_details_skip_unset_fields_and_list_interactions() {
        let ada: Customer = serde_json::from_value(json!({
            "id": "c1", "name": "Ada", "status": "LEAD", "tags": [],
            "consentEmail": true, "createdAt": "t0", "updatedAt": "t1",
            "interactions": [{"id": "i1", "customerId": "c1", "kind": "CALL",
                              "occurredAt": "t2", "durationSeconds": 95,
                              "subject": "first\ncall"}],
        }))
        .unwrap();
        assert_eq!(
            customer(&ada),
            "\
id:       c1
name:     Ada
status:   LEAD
consent:  email yes, call no, sms no
created:  t0
updated:  t1

Interactions (1):
OCCURRED  KIND  DIRECTION  SUBJECT     OUTCOME  DURATION  ID
t2        CALL  -          first call  -        1m35s     i1
"
        );
    }

    #[test]
    fn long_cells_are_clipped() {
        assert_eq!(clip(&"x".repeat(50)).chars().count(), MAX_CELL);
        assert_eq!(clip("a\n b"), "a b");
    }
}
