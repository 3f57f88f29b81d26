//! The HTML page: one file, inline CSS, inline SVG charts, no scripts, no external
//! resources, so it can be mailed, archived or opened offline as it is.

use crate::Charts;
use crate::model::{Align, Page, Table};
use std::fmt::Write as _;

const CSS: &str = "\
*{box-sizing:border-box}\
body{margin:0;background:#f4f5f7;color:#222;font:14px/1.45 'DejaVu Sans',system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif}\
main{max-width:960px;margin:0 auto;padding:24px 28px 40px;background:#fff}\
h1{font-size:24px;margin:0 0 8px}\
h2{font-size:17px;margin:28px 0 8px;padding-bottom:4px;border-bottom:2px solid #3b6ea8}\
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0;color:#444}\
dl.meta dt{font-weight:bold}dl.meta dd{margin:0}\
.notice{margin:18px 0 0;padding:10px 14px;border-left:4px solid #c98a1b;background:#fdf6e8;font-weight:bold}\
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}\
th,td{padding:4px 8px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}\
th{background:#eef1f5;font-weight:bold}\
tbody tr:nth-child(even){background:#fafbfc}\
.num{text-align:right;white-space:nowrap}\
.empty{color:#777;font-style:italic}\
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px}\
figure{margin:0;border:1px solid #e3e6ea;padding:4px}\
figure svg{display:block;width:100%;height:auto}\
@media print{body{background:#fff}main{padding:0;max-width:none}figure{break-inside:avoid}tr{break-inside:avoid}}\
@page{size:A4;margin:15mm}";

/// Escapes `text` for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders `page` with `charts`.
pub(crate) fn render(page: &Page, charts: &Charts) -> String {
    let mut out = String::with_capacity(64 * 1024);
    // Writing into a String cannot fail; the results are dropped on purpose.
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n\
         <header>\n<h1>{title}</h1>\n<dl class=\"meta\">\n",
        lang = escape(&page.language),
        title = escape(&page.title),
    );
    for (key, value) in &page.meta {
        let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(key), escape(value));
    }
    out.push_str("</dl>\n</header>\n");
    if let Some(notice) = page.notice {
        let _ = writeln!(out, "<p class=\"notice\">{}</p>", escape(notice));
    }
    for table in &page.tables {
        table_html(&mut out, table);
    }
    let _ = writeln!(
        out,
        "<section>\n<h2>{}</h2>\n<div class=\"charts\">",
        escape(page.charts_title)
    );
    for svg in charts.all() {
        let _ = writeln!(out, "<figure>{}</figure>", svg.trim());
    }
    out.push_str("</div>\n</section>\n</main>\n</body>\n</html>\n");
    out
}

fn table_html(out: &mut String, table: &Table) {
    let _ = write!(
        out,
        "<section>\n<h2>{}</h2>\n<table>\n<thead><tr>",
        escape(table.title)
    );
    for column in &table.columns {
        let _ = write!(
            out,
            "<th{}>{}</th>",
            class(column.align),
            escape(column.header)
        );
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    if table.rows.is_empty() {
        let _ = writeln!(
            out,
            "<tr><td class=\"empty\" colspan=\"{}\">{}</td></tr>",
            table.columns.len(),
            escape(table.empty)
        );
    }
    for row in &table.rows {
        out.push_str("<tr>");
        for (cell, column) in row.iter().zip(&table.columns) {
            let _ = write!(out, "<td{}>{}</td>", class(column.align), escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn class(align: Align) -> &'static str {
    match align {
        Align::Left => "",
        Align::Right => " class=\"num\"",
    }
}
