//! `crm generate-report` (the seed's `/generate-report`): computes a report on the server over
//! the customers the caller may see, stores it, prints its KPIs and, with `--out`, downloads
//! the HTML or PDF rendering.

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::{Context, print};

const GENERATE: &str = "mutation GenerateReport($p: ReportPeriod!, $f: ReportFormat, \
     $from: NaiveDate, $to: NaiveDate, $l: String) { \
     generateReport(period: $p, format: $f, from: $from, to: $to, language: $l) { url format \
     report { id period firstDay lastDay timeZone scope } \
     data { empty kpis { key label unit value previous changePercent } } } }";

/// The span of a report.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Period {
    Daily,
    Weekly,
    Monthly,
    Custom,
}

/// A rendering.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Html,
    Pdf,
}

/// Flags of `crm generate-report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// The period: daily, weekly (Monday–Sunday), monthly, or custom (`--from` and `--to`).
    #[arg(long, value_enum, default_value = "daily")]
    period: Period,
    /// Any day of the period (default: today in the server's report time zone); the first day
    /// of a custom period. `YYYY-MM-DD`.
    #[arg(long)]
    from: Option<String>,
    /// The last day of a custom period, `YYYY-MM-DD`.
    #[arg(long)]
    to: Option<String>,
    /// The rendering to download with `--out`.
    #[arg(long, value_enum, default_value = "pdf")]
    format: Format,
    /// Write the rendering to this file (`-`: standard output).
    #[arg(long, short)]
    out: Option<String>,
    /// The language of the labels: de, bs, sr or en (default: the server's).
    #[arg(long)]
    language: Option<String>,
}

fn number(value: &Value, unit: &str) -> String {
    let Some(v) = value.as_f64() else {
        return "—".to_owned();
    };
    match unit {
        "PERCENT" => format!("{v:.1} %"),
        "SCORE" => format!("{v:.1}"),
        "SECONDS" => format!("{v:.0} s"),
        "USD" => format!("$ {v:.2}"),
        "MINUTES" => format!("{v:.0} min ({:.1} h)", v / 60.0),
        _ => format!("{v:.0}"),
    }
}

impl ReportArgs {
    /// Generates the report, prints its KPIs and downloads the rendering.
    pub(crate) async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let period = match self.period {
            Period::Daily => "DAILY",
            Period::Weekly => "WEEKLY",
            Period::Monthly => "MONTHLY",
            Period::Custom => "CUSTOM",
        };
        let format = match self.format {
            Format::Html => "HTML",
            Format::Pdf => "PDF",
        };
        let vars = json!({ "p": period, "f": format, "from": self.from, "to": self.to,
                           "l": self.language });
        let data: Value = ctx.client.execute(GENERATE, vars).await?;
        let generated = &data["generateReport"];
        if let Some(out) = &self.out {
            let url = generated["url"].as_str().unwrap_or_default();
            let bytes = ctx.client.download(url).await?;
            if out == "-" {
                use std::io::Write as _;
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&bytes)?;
                stdout.flush()?;
                return Ok(());
            }
            std::fs::write(out, &bytes).map_err(|e| anyhow::anyhow!("cannot write {out}: {e}"))?;
        }
        if ctx.json {
            return print(&serde_json::to_string_pretty(&data)?);
        }
        let report = &generated["report"];
        let mut text = format!(
            "Report {} ({} {} – {}, {}), {}\n",
            report["id"].as_str().unwrap_or_default(),
            report["period"].as_str().unwrap_or_default().to_lowercase(),
            report["firstDay"].as_str().unwrap_or_default(),
            report["lastDay"].as_str().unwrap_or_default(),
            report["timeZone"].as_str().unwrap_or_default(),
            report["scope"].as_str().unwrap_or_default(),
        );
        if generated["data"]["empty"] == true {
            text.push_str("No data for this period.\n");
        }
        let kpis = generated["data"]["kpis"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let width = kpis
            .iter()
            .map(|k| k["label"].as_str().unwrap_or_default().chars().count())
            .max()
            .unwrap_or(0);
        text.push_str(&format!(
            "{:width$}  {:>22}  {:>22}  {:>9}\n",
            "", "value", "previous", "change"
        ));
        for k in &kpis {
            let unit = k["unit"].as_str().unwrap_or_default();
            let change = k["changePercent"]
                .as_f64()
                .map_or_else(|| "—".to_owned(), |c| format!("{c:+.1} %"));
            text.push_str(&format!(
                "{:width$}  {:>22}  {:>22}  {:>9}\n",
                k["label"].as_str().unwrap_or_default(),
                number(&k["value"], unit),
                number(&k["previous"], unit),
                change
            ));
        }
        match &self.out {
            Some(out) => text.push_str(&format!("Written to {out}\n")),
            None => text.push_str(&format!(
                "Download: {}\n",
                generated["url"].as_str().unwrap_or_default()
            )),
        }
        print(&text)
    }
}
