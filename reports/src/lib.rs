//! Renders a [`Report`] for people: four SVG charts ([`charts`]), one self-contained HTML
//! page ([`html`]) and an A4 PDF ([`pdf`]).
//!
//! HTML and PDF show the same content, built once from the report (`model.rs`): the title
//! with the period, the comparison period, the time zone, when it was generated and for
//! whom; a "no data for this period" notice for an empty report; the KPI table (value,
//! previous value, change); leads by source; calls by provider; and the four charts. Labels
//! come in English, German, Bosnian (Latin) and Serbian (Cyrillic), picked by
//! `report.language` ([`label`]). Numbers are written the same way in every language
//! (`1,234`, `12.5%`, `$1,234.56`).
//!
//! The PDF embeds DejaVu Sans (regular and bold, shipped in `fonts/` under their licence)
//! and draws the charts as vectors through krilla-svg, with the charts' `sans-serif` mapped
//! to DejaVu Sans: without that mapping usvg looks for Arial and drops every chart label.

mod charts;
mod html;
mod labels;
mod model;
mod pdf;
#[cfg(test)]
mod tests;

use crm_domain::report::Report;

pub use labels::{UNKNOWN_LABEL, label, try_label};

/// The four charts of a report, each a complete SVG document (`<svg xmlns=…>…</svg>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charts {
    /// Leads per local day, or per local hour for a daily report (the buckets of
    /// [`crm_domain::report::ReportRange::buckets`]).
    pub leads_per_day: String,
    /// The funnel from new leads to converted customers, as horizontal bars.
    pub funnel: String,
    /// Calls that ended, by disposition (the ten largest; the rest as "other").
    pub dispositions: String,
    /// The latest scores in ten buckets, `0–9` … `90–100`.
    pub score_distribution: String,
}

impl Charts {
    /// The charts in report order.
    pub fn all(&self) -> [&str; 4] {
        [
            &self.leads_per_day,
            &self.funnel,
            &self.dispositions,
            &self.score_distribution,
        ]
    }
}

/// What can keep a PDF from being written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A bundled font could not be read (a broken build, not a data problem).
    #[error("the bundled font {0} could not be loaded")]
    Font(&'static str),
    /// A chart's SVG could not be parsed for embedding.
    #[error("chart {chart} could not be embedded: {source}")]
    Chart {
        /// Which chart (`funnel`, …).
        chart: &'static str,
        /// Why usvg refused it.
        #[source]
        source: usvg::Error,
    },
    /// krilla could not serialize the document.
    #[error("the PDF could not be written: {0}")]
    Pdf(#[from] krilla::error::KrillaError),
}

/// Draws the four charts of `report` (plotters, SVG backend). Never fails: an empty report
/// gets empty charts with a "no data" note, and a chart plotters could not draw is replaced
/// by an SVG that shows only its title.
pub fn charts(report: &Report) -> Charts {
    Charts {
        leads_per_day: charts::leads_per_day(report),
        funnel: charts::funnel(report),
        dispositions: charts::dispositions(report),
        score_distribution: charts::score_distribution(report),
    }
}

/// The report as one self-contained HTML5 document: inline CSS, the charts as inline SVG,
/// no scripts and no external resources. Every text taken from the report is escaped.
pub fn html(report: &Report) -> String {
    html::render(&model::page(report), &charts(report))
}

/// The report as an A4 PDF, paginated (tables continue on the next page with their header
/// repeated), with DejaVu Sans embedded and the charts as vector graphics.
pub fn pdf(report: &Report) -> Result<Vec<u8>, RenderError> {
    pdf::render(&model::page(report), &charts(report))
}
