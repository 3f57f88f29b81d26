//! `crm import-lead <file|->` (the seed's `/import-lead`): uploads a CSV, JSON or NDJSON file
//! of leads, follows the import job with a progress bar, and prints the report.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Context, print};

const UPLOAD: &str = "mutation ImportLeadsFile($file: Upload!, $options: ImportOptionsInput, \
     $mapping: [ColumnMapping!]) { importLeadsFile(file: $file, options: $options, mapping: $mapping) { id } }";

const STATUS: &str = "query LeadImport($id: ID!) { leadImport(id: $id) { id status rowsDone \
     created updated merged skipped invalid error issues(first: 20) { row field code message } } }";

const ISSUES_CSV: &str = "query LeadImportIssues($id: ID!) { leadImport(id: $id) { issuesCsv } }";

/// What to do with leads that duplicate a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum OnDuplicate {
    Skip,
    Update,
    Merge,
}

/// Flags of `crm import-lead`.
#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The file (CSV, JSON or NDJSON), or `-` for standard input.
    file: String,
    /// Report what would happen; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Leads whose email or phone belongs to a customer already.
    #[arg(long, value_enum, ignore_case = true, default_value = "merge")]
    on_duplicate: OnDuplicate,
    /// Region for national phone numbers of leads without a country (e.g. DE, BA, RS).
    #[arg(long, value_name = "CC")]
    default_country: Option<String>,
    /// Source of leads that name none.
    #[arg(long)]
    source: Option<String>,
    /// A tag for every lead (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// A column and the field it holds, `Column=field` (repeatable), for unusual headers.
    #[arg(long = "map", value_name = "COLUMN=FIELD")]
    mapping: Vec<String>,
    /// Write every issue as CSV to this file.
    #[arg(long, value_name = "FILE")]
    issues_csv: Option<PathBuf>,
    /// Start the import and print its id without waiting for it.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Started {
    import_leads_file: Id,
}

#[derive(Debug, Deserialize)]
struct Id {
    id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Status {
    status: String,
    rows_done: u64,
    created: u64,
    updated: u64,
    merged: u64,
    skipped: u64,
    invalid: u64,
    error: Option<String>,
    issues: Vec<Issue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Issue {
    row: i64,
    field: String,
    code: String,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Import {
    lead_import: Status,
}

/// Rows in a file, counted for the progress bar in one pass over its bytes, the way the server
/// reads them: CSV records (newlines inside quotes belong to their field; less the header),
/// NDJSON lines, or the elements of a JSON array. Blank lines are not rows.
fn count_rows(path: &Path, name: &str) -> Option<u64> {
    let lower = name.to_lowercase();
    let kind = if lower.ends_with(".json") {
        Kind::Json
    } else if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
        Kind::Lines
    } else {
        Kind::Csv
    };
    let file = std::fs::File::open(path).ok()?;
    count_records(std::io::BufReader::with_capacity(1 << 16, file), kind).ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Csv,
    Lines,
    Json,
}

fn count_records(mut reader: impl std::io::BufRead, kind: Kind) -> std::io::Result<u64> {
    let mut records = 0u64;
    // CSV and lines: whether the current record has anything but whitespace; for CSV whether
    // a quote is open, whether a quote inside it may be closing it, and whether a field has
    // just begun. JSON: nesting depth, inside a string, after a backslash, and whether the
    // top-level array has an element yet.
    let (mut content, mut quoted, mut closing, mut field_start) = (false, false, false, true);
    let (mut depth, mut string, mut escaped, mut element) = (0u32, false, false, false);
    let mut top_object = false;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        for &b in buf {
            match kind {
                // Inside quotes: a quote ends them, unless the next byte is another (`""`).
                Kind::Csv if quoted && closing => {
                    closing = false;
                    if b == b'"' {
                        continue;
                    }
                    quoted = false;
                    field_start = false;
                    if b == b'\n' {
                        records += u64::from(content);
                        content = false;
                        field_start = true;
                    } else if matches!(b, b',' | b';' | b'\t') {
                        field_start = true;
                    }
                }
                Kind::Csv if quoted => {
                    if b == b'"' {
                        closing = true;
                    } else if !b.is_ascii_whitespace() {
                        content = true;
                    }
                }
                // Outside: a quote opens a field only at its start (as the server's reader
                // has it: `24" Monitor` is text).
                Kind::Csv | Kind::Lines => {
                    if b == b'"' && kind == Kind::Csv && field_start {
                        quoted = true;
                        field_start = false;
                        content = true;
                    } else if b == b'\n' {
                        records += u64::from(content);
                        content = false;
                        field_start = true;
                    } else if kind == Kind::Csv && matches!(b, b',' | b';' | b'\t') {
                        field_start = true;
                    } else {
                        field_start = false;
                        if !(b.is_ascii_whitespace() || matches!(b, 0xef | 0xbb | 0xbf)) {
                            content = true;
                        }
                    }
                }
                Kind::Json if string => {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        string = false;
                    }
                }
                Kind::Json => {
                    if depth == 1 && !b.is_ascii_whitespace() && b != b']' && b != b',' {
                        element = true;
                    }
                    match b {
                        b'"' => string = true,
                        b'[' | b'{' => {
                            if depth == 0 && b == b'{' {
                                top_object = true;
                            }
                            depth += 1;
                        }
                        b']' | b'}' => depth = depth.saturating_sub(1),
                        b',' if depth == 1 => {
                            records += u64::from(element);
                            element = false;
                        }
                        _ => {}
                    }
                }
            }
        }
        let n = buf.len();
        reader.consume(n);
    }
    Ok(match kind {
        Kind::Csv => (records + u64::from(content)).saturating_sub(1),
        Kind::Lines => records + u64::from(content),
        Kind::Json if top_object => 1,
        Kind::Json => records + u64::from(element),
    })
}

impl ImportArgs {
    /// Uploads, follows and reports.
    pub(crate) async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        // Standard input is spooled to a temporary file first: the upload streams from disk
        // and the progress bar knows the total.
        let spooled;
        let (path, name) = if self.file == "-" {
            let mut temp =
                tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
            let mut stdin = std::io::stdin().lock();
            let mut head = [0u8; 1];
            let n = stdin.read(&mut head)?;
            std::io::Write::write_all(&mut temp, &head[..n])?;
            std::io::copy(&mut stdin, &mut temp).context("cannot read standard input")?;
            let name = match head.first() {
                Some(b'[') => "stdin.json",
                Some(b'{') => "stdin.ndjson",
                _ => "stdin.csv",
            };
            spooled = temp;
            (spooled.path().to_path_buf(), name.to_owned())
        } else {
            let path = PathBuf::from(&self.file);
            if !path.is_file() {
                anyhow::bail!("{} is not a file", path.display());
            }
            let name = path
                .file_name()
                .map_or_else(|| "leads".to_owned(), |n| n.to_string_lossy().into_owned());
            (path, name)
        };
        let mapping = self
            .mapping
            .iter()
            .map(|m| {
                let (column, field) = m
                    .split_once('=')
                    .with_context(|| format!("--map {m}: write it as Column=field"))?;
                Ok(json!({ "column": column, "field": field }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let variables = json!({
            "options": {
                "dryRun": self.dry_run,
                "onDuplicate": self.on_duplicate,
                "defaultCountry": self.default_country,
                "source": self.source,
                "tags": self.tags,
            },
            "mapping": (!mapping.is_empty()).then_some(mapping),
        });
        let total = count_rows(&path, &name);
        let started: Started = ctx.client.upload(UPLOAD, variables, &path, &name).await?;
        let id = started.import_leads_file.id;
        if self.no_wait {
            return print(&format!(
                "Import {id} started; follow it with `crm query` on leadImport(id: \"{id}\")."
            ));
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{spinner} {pos}/{len} rows  {per_sec}  ETA {eta}  {wide_bar}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {pos} rows  {per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        // Follow it; give up waiting (not the import) after 10 minutes without progress.
        let mut last = (u64::MAX, std::time::Instant::now());
        let status = loop {
            let import: Import = ctx.client.execute(STATUS, json!({ "id": id })).await?;
            let status = import.lead_import;
            bar.set_position(status.rows_done);
            if status.status == "completed" || status.status == "failed" {
                break status;
            }
            if status.rows_done != last.0 {
                last = (status.rows_done, std::time::Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(600) {
                bar.abandon();
                anyhow::bail!(
                    "import {id} made no progress for 10 minutes (is a worker running?); it may still finish: check leadImport(id: \"{id}\")"
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        bar.finish_and_clear();
        if let Some(target) = &self.issues_csv {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Csv {
                lead_import: CsvField,
            }
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct CsvField {
                issues_csv: String,
            }
            let csv: Csv = ctx.client.execute(ISSUES_CSV, json!({ "id": id })).await?;
            std::fs::write(target, csv.lead_import.issues_csv)
                .with_context(|| format!("cannot write {}", target.display()))?;
        }
        if ctx.json {
            return print(&serde_json::to_string_pretty(&json!({
                "id": id, "status": status.status, "rows": status.rows_done,
                "created": status.created, "updated": status.updated, "merged": status.merged,
                "skipped": status.skipped, "invalid": status.invalid, "error": status.error,
            }))?);
        }
        let mut out = format!(
            "Import {id} {}{}: {} rows — {} created, {} updated, {} merged, {} skipped, {} invalid.\n",
            status.status,
            if self.dry_run {
                " (dry run: nothing was changed)"
            } else {
                ""
            },
            status.rows_done,
            status.created,
            status.updated,
            status.merged,
            status.skipped,
            status.invalid
        );
        if let Some(error) = &status.error {
            out.push_str(&format!(
                "The file could not be imported to the end: {error}\n"
            ));
        }
        if !status.issues.is_empty() {
            out.push_str("\nIssues (the first 20):\n");
            for issue in &status.issues {
                out.push_str(&format!(
                    "  row {}: {} {} — {}\n",
                    issue.row, issue.field, issue.code, issue.message
                ));
            }
            if self.issues_csv.is_none() {
                out.push_str("Write them all with --issues-csv FILE.\n");
            }
        }
        print(&out)?;
        if status.status == "failed" {
            anyhow::bail!("the import failed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Kind, count_records};

    fn count(text: &str, kind: Kind) -> u64 {
        count_records(text.as_bytes(), kind).unwrap_or(u64::MAX)
    }

    #[test]
    fn csv_records_are_counted_with_quoted_newlines_inside_their_field() {
        let csv = "\u{feff}Name;Notiz\nAna;\"Messe\nStand 4\"\n\n  \nJürgen;\"sagt \"\"hallo\"\"\"\r\nLena;x";
        assert_eq!(count(csv, Kind::Csv), 3);
        // A quote inside a field is text; one closing a quoted field before the delimiter too.
        let inches = "Name,Notiz\nAna,Monitor 24\" Dell\nJürgen,\"a \"\"b\"\"\",x\nLena,\"c\"\n";
        assert_eq!(count(inches, Kind::Csv), 3);
        assert_eq!(count("Name,Email\n", Kind::Csv), 0);
        assert_eq!(count("", Kind::Csv), 0);
    }

    #[test]
    fn ndjson_lines_are_counted_without_blank_ones() {
        assert_eq!(count("{\"a\":1}\n\n{\"b\":\"x\\ny\"}\n", Kind::Lines), 2);
        assert_eq!(count("{\"a\":1}", Kind::Lines), 1);
    }

    #[test]
    fn json_array_elements_are_counted_at_the_top_level_only() {
        let json = r#"[ {"name": "Ana, \"die\" [Erste]", "tags": ["a", "b"]},
                        {"name": "Marko", "x": {"y": [1, 2, 3]}} ,
                        "not an object", 7 ]"#;
        assert_eq!(count(json, Kind::Json), 4);
        assert_eq!(count("[]", Kind::Json), 0);
        assert_eq!(count(" [ ] ", Kind::Json), 0);
        assert_eq!(count(r#"{"name": "one lead", "a": [1, 2]}"#, Kind::Json), 1);
    }
}
