//! `crm import-lead <file|->` (the seed's `/import-lead`): uploads a CSV, JSON or NDJSON file
//! of leads, follows the import job with a progress bar, and prints the report.

use std::{
    io::{BufRead as _, Read as _},
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

/// Rows in a file, counted cheaply for the progress bar: lines (less a CSV header). JSON
/// arrays are not counted.
fn count_rows(path: &Path, name: &str) -> Option<u64> {
    let lower = name.to_lowercase();
    if lower.ends_with(".json") {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    let reader = std::io::BufReader::with_capacity(1 << 16, file);
    let lines = reader
        .split(b'\n')
        .filter_map(Result::ok)
        .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
        .count() as u64;
    let header = u64::from(!(lower.ends_with(".ndjson") || lower.ends_with(".jsonl")));
    Some(lines.saturating_sub(header))
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
