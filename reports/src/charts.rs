//! The four report charts, drawn with plotters' SVG backend.
//!
//! Every chart is a bar chart over categories (hours or days, funnel stages, call outcomes,
//! score buckets). The value axis always spans at least `0..1`, so a report without data
//! still gets a valid, empty chart (plotters needs a non-empty span) with a "no data" note.
//! Texts use the generic `sans-serif` family; the PDF renderer maps it to the bundled DejaVu
//! Sans (see `pdf.rs`).

use crate::labels::label;
use crm_domain::report::{Report, ReportPeriod};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Width of every chart, in SVG user units (px).
pub(crate) const WIDTH: u32 = 640;
/// Height of every chart.
pub(crate) const HEIGHT: u32 = 300;

/// The bars' colour.
const BAR: RGBColor = RGBColor(59, 110, 168);
/// Axis, tick and label colour.
const INK: RGBColor = RGBColor(60, 60, 60);
/// Grid line colour.
const GRID: RGBColor = RGBColor(225, 228, 232);
/// The most categories the outcome chart shows; the rest are summed into "other".
const MAX_CATEGORIES: usize = 10;
/// The longest category label, in characters, before it is shortened with `…`.
const MAX_LABEL_CHARS: usize = 24;

/// One bar chart to draw.
struct Bars {
    title: String,
    labels: Vec<String>,
    values: Vec<i64>,
    horizontal: bool,
    category_desc: String,
    value_desc: String,
    no_data: String,
    /// Print each bar's value at its end.
    value_labels: bool,
}

/// The "leads per day" chart (per hour for a daily report).
pub(crate) fn leads_per_day(report: &Report) -> String {
    let lang = report.language.primary();
    let daily = report.range.period == ReportPeriod::Daily;
    let labels: Vec<String> = report
        .range
        .buckets()
        .into_iter()
        .map(|b| b.label)
        .collect();
    let values = labels
        .iter()
        .enumerate()
        .map(|(i, _)| report.current.leads_per_bucket.get(i).copied().unwrap_or(0))
        .collect();
    let value_labels = labels.len() <= 16;
    draw(&Bars {
        title: label(
            if daily {
                "chart_leads_per_hour"
            } else {
                "chart_leads_per_day"
            },
            lang,
        )
        .to_owned(),
        labels,
        values,
        horizontal: false,
        category_desc: label(if daily { "axis_hour" } else { "axis_day" }, lang).to_owned(),
        value_desc: label("leads", lang).to_owned(),
        no_data: label("no_data", lang).to_owned(),
        value_labels,
    })
}

/// The funnel: leads in → … → converted, as horizontal bars, first stage on top.
pub(crate) fn funnel(report: &Report) -> String {
    let lang = report.language.primary();
    let stages = report.funnel();
    draw(&Bars {
        title: label("chart_funnel", lang).to_owned(),
        labels: stages
            .iter()
            .map(|c| label(&c.key, lang).to_owned())
            .collect(),
        values: stages.iter().map(|c| c.count).collect(),
        horizontal: true,
        category_desc: String::new(),
        value_desc: label("axis_count", lang).to_owned(),
        no_data: label("no_data", lang).to_owned(),
        value_labels: true,
    })
}

/// Calls that ended, by disposition, largest first; beyond [`MAX_CATEGORIES`] the rest is
/// one "other" bar.
pub(crate) fn dispositions(report: &Report) -> String {
    let lang = report.language.primary();
    let mut counts: Vec<(String, i64)> = report
        .current
        .call_dispositions
        .iter()
        .map(|c| (c.key.clone(), c.count))
        .collect();
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    if counts.len() > MAX_CATEGORIES {
        let rest: i64 = counts
            .iter()
            .skip(MAX_CATEGORIES - 1)
            .map(|(_, n)| *n)
            .sum();
        counts.truncate(MAX_CATEGORIES - 1);
        counts.push((label("other", lang).to_owned(), rest));
    }
    if counts.is_empty() {
        counts.push((crate::model::MISSING.to_owned(), 0));
    }
    draw(&Bars {
        title: label("chart_dispositions", lang).to_owned(),
        labels: counts.iter().map(|(k, _)| k.clone()).collect(),
        values: counts.iter().map(|(_, n)| *n).collect(),
        horizontal: true,
        category_desc: String::new(),
        value_desc: label("calls", lang).to_owned(),
        no_data: label("no_data", lang).to_owned(),
        value_labels: true,
    })
}

/// The latest scores in ten buckets, `0–9` … `90–100`.
pub(crate) fn score_distribution(report: &Report) -> String {
    let lang = report.language.primary();
    draw(&Bars {
        title: label("chart_score_distribution", lang).to_owned(),
        labels: score_bucket_labels(),
        values: report.current.score_histogram.to_vec(),
        horizontal: false,
        category_desc: label("axis_score", lang).to_owned(),
        value_desc: label("leads", lang).to_owned(),
        no_data: label("no_data", lang).to_owned(),
        value_labels: true,
    })
}

/// `0–9`, `10–19`, … `90–100`.
pub(crate) fn score_bucket_labels() -> Vec<String> {
    (0..10)
        .map(|i| {
            let high = if i == 9 { 100 } else { i * 10 + 9 };
            format!("{}–{high}", i * 10)
        })
        .collect()
}

/// Draws `bars`; should plotters fail (it only fails on backend I/O, which a `String` has
/// none of), a minimal SVG with the title stands in, so a report never lacks a chart.
fn draw(bars: &Bars) -> String {
    let mut svg = String::new();
    let drawn = {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw_on(&root, bars).and_then(|()| root.present())
    };
    match drawn {
        Ok(()) => svg,
        Err(_) => fallback(&bars.title),
    }
}

type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn draw_on(root: &DrawingArea<SVGBackend<'_>, Shift>, bars: &Bars) -> DrawResult {
    root.fill(&WHITE)?;
    let n = bars.values.len().max(1);
    let labels: Vec<String> = bars.labels.iter().map(|l| shorten(l)).collect();
    let max = bars.values.iter().copied().max().unwrap_or(0).max(0);
    // Headroom above the longest bar for its value label; never an empty span.
    let top = max.saturating_add(max / 8).saturating_add(1);
    let text = ("sans-serif", 14).into_font().color(&INK);
    let small = ("sans-serif", 13).into_font().color(&INK);
    let caption = ("sans-serif", 18, FontStyle::Bold).into_font().color(&INK);
    let category_of = |v: &SegmentValue<u32>, reversed: bool| -> String {
        match v {
            SegmentValue::CenterOf(i) => {
                let i = *i as usize;
                let i = if reversed { n - 1 - i.min(n - 1) } else { i };
                labels.get(i).cloned().unwrap_or_default()
            }
            _ => String::new(),
        }
    };
    let value_text = |v: &i64| crate::model::format_count(*v as f64);
    let all_zero = bars.values.iter().all(|v| *v == 0);
    // An integer range includes its end: `0..n-1` makes exactly `n` segments.
    let categories = (0..(n - 1) as u32).into_segmented();

    if bars.horizontal {
        let mut chart = ChartBuilder::on(root)
            .caption(&bars.title, caption)
            .margin(10)
            .margin_right(30)
            .x_label_area_size(40)
            .y_label_area_size(170)
            .build_cartesian_2d(0..top, categories)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .axis_style(INK)
            .x_labels(6)
            .x_label_formatter(&value_text)
            .y_labels(n)
            .y_label_formatter(&|v| category_of(v, true))
            .x_desc(bars.value_desc.as_str())
            .label_style(text.clone())
            .axis_desc_style(small.clone())
            .draw()?;
        let values = bars
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| ((n - 1 - i) as u32, (*v).max(0)));
        chart.draw_series(
            Histogram::horizontal(&chart)
                .style(BAR.filled())
                .margin(6)
                .data(values.clone()),
        )?;
        if bars.value_labels && !all_zero {
            let style = small.clone().pos(Pos::new(HPos::Left, VPos::Center));
            chart.draw_series(values.map(|(i, v)| {
                EmptyElement::at((v, SegmentValue::CenterOf(i)))
                    + Text::new(value_text(&v), (4, 0), style.clone())
            }))?;
        }
    } else {
        // Keep the category labels apart: at most one per ~48 px of axis. Up to a month of
        // days every category gets a tick and every `step`-th a label; beyond that plotters
        // picks a dozen round positions, so the ticks do not merge into a bar.
        let fitting = ((WIDTH as usize - 80) / 48).max(1);
        let (ticks, step) = if n <= 31 {
            (n, n.div_ceil(fitting))
        } else {
            (fitting, 1)
        };
        let mut chart = ChartBuilder::on(root)
            .caption(&bars.title, caption)
            .margin(10)
            .margin_right(20)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(categories, 0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .axis_style(INK)
            .x_labels(ticks)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) if (*i as usize).is_multiple_of(step) => {
                    category_of(v, false)
                }
                _ => String::new(),
            })
            .y_labels(6)
            .y_label_formatter(&value_text)
            .x_desc(bars.category_desc.as_str())
            .y_desc(bars.value_desc.as_str())
            .label_style(text.clone())
            .axis_desc_style(small.clone())
            .draw()?;
        let values = bars
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u32, (*v).max(0)));
        chart.draw_series(
            Histogram::vertical(&chart)
                .style(BAR.filled())
                .margin(match n {
                    0..=20 => 4,
                    21..=62 => 1,
                    _ => 0,
                })
                .data(values.clone()),
        )?;
        if bars.value_labels && !all_zero {
            let style = small.clone().pos(Pos::new(HPos::Center, VPos::Bottom));
            chart.draw_series(values.filter(|(_, v)| *v > 0).map(|(i, v)| {
                EmptyElement::at((SegmentValue::CenterOf(i), v))
                    + Text::new(value_text(&v), (0, -3), style.clone())
            }))?;
        }
    }
    if all_zero {
        let style = ("sans-serif", 16)
            .into_font()
            .color(&RGBColor(120, 120, 120))
            .pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(
            bars.no_data.clone(),
            (WIDTH as i32 / 2, HEIGHT as i32 / 2),
            style,
        ))?;
    }
    Ok(())
}

/// `text`, cut to [`MAX_LABEL_CHARS`] characters with `…`.
fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_LABEL_CHARS {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(MAX_LABEL_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

/// A plain SVG with only the title, for a chart plotters could not draw.
fn fallback(title: &str) -> String {
    format!(
        "<svg width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         xmlns=\"http://www.w3.org/2000/svg\"><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" \
         font-family=\"sans-serif\" font-size=\"14\">{}</text></svg>",
        WIDTH / 2,
        HEIGHT / 2,
        crate::html::escape(title)
    )
}
