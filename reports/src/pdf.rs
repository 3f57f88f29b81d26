//! The PDF: A4 portrait, laid out top to bottom and broken into pages, drawn with krilla.
//!
//! Layout happens first, into a list of pages of drawing operations, so every page's footer
//! can say "page 2 / 3". Tables break between rows and repeat their header on the next
//! page; a section heading never ends a page alone; a chart moves to the next page whole.
//! Text is measured with the bundled font's advance widths so numbers align right and long
//! cells are cut with `…` instead of running into the next column.

use crate::model::{Align, Page, Table};
use crate::{Charts, RenderError, charts};
use krilla::Document;
use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Rect, Size, Transform};
use krilla::metadata::Metadata;
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, FillRule};
use krilla::surface::Surface;
use krilla::text::{Font, TextDirection};
use krilla_svg::{SurfaceExt as _, SvgSettings};
use std::sync::Arc;

/// DejaVu Sans (see `fonts/LICENSE`).
const REGULAR: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
/// DejaVu Sans Bold.
const BOLD: &[u8] = include_bytes!("../fonts/DejaVuSans-Bold.ttf");
/// The family name both files carry; the charts' `sans-serif` is mapped to it.
const FAMILY: &str = "DejaVu Sans";

/// A4 in points.
const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const MARGIN: f32 = 42.0;
const CONTENT_W: f32 = PAGE_W - 2.0 * MARGIN;
/// Where content starts on a page.
const TOP: f32 = MARGIN;
/// Where content must end (the footer lies below).
const BOTTOM: f32 = PAGE_H - MARGIN - 14.0;

const BODY: f32 = 9.0;
const ROW_H: f32 = 15.0;
const HEADER_H: f32 = 17.0;
const CELL_PAD: f32 = 5.0;

type Rgb = (u8, u8, u8);
const INK: Rgb = (34, 34, 34);
const MUTED: Rgb = (110, 110, 110);
const ACCENT: Rgb = (59, 110, 168);
const HEADER_BG: Rgb = (238, 241, 245);
const ZEBRA: Rgb = (248, 249, 251);
const RULE: Rgb = (220, 224, 229);
const NOTICE_BG: Rgb = (253, 246, 232);
const NOTICE_BAR: Rgb = (201, 138, 27);

/// One drawing operation, in page coordinates (points, origin top left).
enum Op {
    /// Text starting at `(x, baseline)`.
    Text {
        x: f32,
        baseline: f32,
        size: f32,
        bold: bool,
        color: Rgb,
        text: String,
    },
    /// A filled rectangle.
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        color: Rgb,
    },
    /// Chart number `index` of [`Charts::all`], scaled into the box.
    Chart {
        index: usize,
        x: f32,
        y: f32,
        w: f32,
        h: f32,
    },
}

/// Advance widths of the two faces, for measuring text.
struct Metrics {
    regular: ttf_parser::Face<'static>,
    bold: ttf_parser::Face<'static>,
}

impl Metrics {
    fn new() -> Result<Self, RenderError> {
        Ok(Self {
            regular: ttf_parser::Face::parse(REGULAR, 0)
                .map_err(|_| RenderError::Font("DejaVuSans.ttf"))?,
            bold: ttf_parser::Face::parse(BOLD, 0)
                .map_err(|_| RenderError::Font("DejaVuSans-Bold.ttf"))?,
        })
    }

    /// The width of `text` at `size` points.
    fn width(&self, text: &str, size: f32, bold: bool) -> f32 {
        let face = if bold { &self.bold } else { &self.regular };
        let em = f32::from(face.units_per_em());
        let units: f32 = text
            .chars()
            .map(|c| {
                face.glyph_index(c)
                    .and_then(|g| face.glyph_hor_advance(g))
                    .map_or(em / 2.0, f32::from)
            })
            .sum();
        units / em * size
    }

    /// `text`, cut with `…` to fit `max` points.
    fn fit(&self, text: &str, size: f32, bold: bool, max: f32) -> String {
        if self.width(text, size, bold) <= max {
            return text.to_owned();
        }
        let mut chars: Vec<char> = text.chars().collect();
        while !chars.is_empty() {
            chars.pop();
            let candidate: String = chars.iter().collect::<String>() + "…";
            if self.width(&candidate, size, bold) <= max {
                return candidate;
            }
        }
        "…".to_owned()
    }
}

/// Lays the page out into pages of operations.
struct Layout<'m> {
    metrics: &'m Metrics,
    pages: Vec<Vec<Op>>,
    y: f32,
}

impl Layout<'_> {
    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = TOP;
    }

    /// Starts a new page unless `height` more points fit on this one.
    fn need(&mut self, height: f32) {
        if self.y + height > BOTTOM && self.y > TOP {
            self.new_page();
        }
    }

    fn push(&mut self, op: Op) {
        if self.pages.is_empty() {
            self.pages.push(Vec::new());
        }
        if let Some(page) = self.pages.last_mut() {
            page.push(op);
        }
    }

    fn text(&mut self, x: f32, baseline: f32, size: f32, bold: bool, color: Rgb, text: String) {
        self.push(Op::Text {
            x,
            baseline,
            size,
            bold,
            color,
            text,
        });
    }

    fn rect(&mut self, x: f32, y: f32, w: f32, h: f32, color: Rgb) {
        self.push(Op::Rect { x, y, w, h, color });
    }

    /// A section heading with a rule under it.
    fn heading(&mut self, title: &str) {
        self.y += 14.0;
        let baseline = self.y + 12.0;
        self.text(MARGIN, baseline, 13.0, true, INK, title.to_owned());
        self.rect(MARGIN, baseline + 5.0, CONTENT_W, 1.5, ACCENT);
        self.y = baseline + 12.0;
    }

    fn header_block(&mut self, page: &Page) {
        let title = self.metrics.fit(&page.title, 20.0, true, CONTENT_W);
        self.text(MARGIN, self.y + 20.0, 20.0, true, INK, title);
        self.y += 34.0;
        let key_w = page
            .meta
            .iter()
            .map(|(k, _)| self.metrics.width(k, 10.0, true))
            .fold(0.0_f32, f32::max)
            + 14.0;
        for (key, value) in &page.meta {
            self.y += 14.0;
            self.text(MARGIN, self.y, 10.0, true, MUTED, (*key).to_owned());
            let value = self.metrics.fit(value, 10.0, false, CONTENT_W - key_w);
            self.text(MARGIN + key_w, self.y, 10.0, false, INK, value);
        }
        self.y += 6.0;
        if let Some(notice) = page.notice {
            self.y += 12.0;
            self.rect(MARGIN, self.y, CONTENT_W, 26.0, NOTICE_BG);
            self.rect(MARGIN, self.y, 3.5, 26.0, NOTICE_BAR);
            let notice = self.metrics.fit(notice, 11.0, true, CONTENT_W - 24.0);
            self.text(MARGIN + 12.0, self.y + 17.0, 11.0, true, INK, notice);
            self.y += 26.0;
        }
    }

    fn table_header(&mut self, table: &Table, widths: &[f32]) {
        self.rect(MARGIN, self.y, CONTENT_W, HEADER_H, HEADER_BG);
        let cells: Vec<&str> = table.columns.iter().map(|c| c.header).collect();
        self.row(table, widths, &cells, HEADER_H, true);
    }

    /// One row of cells at the current `y`; moves `y` below it.
    fn row(&mut self, table: &Table, widths: &[f32], cells: &[&str], height: f32, bold: bool) {
        let mut x = MARGIN;
        let baseline = self.y + height / 2.0 + BODY * 0.36;
        for ((cell, column), w) in cells.iter().zip(&table.columns).zip(widths) {
            let text = self.metrics.fit(cell, BODY, bold, w - 2.0 * CELL_PAD);
            let tx = match column.align {
                Align::Left => x + CELL_PAD,
                Align::Right => x + w - CELL_PAD - self.metrics.width(&text, BODY, bold),
            };
            self.text(tx, baseline, BODY, bold, INK, text);
            x += w;
        }
        self.y += height;
        self.rect(MARGIN, self.y - 0.5, CONTENT_W, 0.5, RULE);
    }

    fn table(&mut self, table: &Table) {
        let widths: Vec<f32> = table.columns.iter().map(|c| c.width * CONTENT_W).collect();
        // Heading, header and the first row stay together.
        self.need(40.0 + HEADER_H + ROW_H);
        self.heading(table.title);
        self.table_header(table, &widths);
        if table.rows.is_empty() {
            let baseline = self.y + ROW_H / 2.0 + BODY * 0.36;
            self.text(
                MARGIN + CELL_PAD,
                baseline,
                BODY,
                false,
                MUTED,
                table.empty.to_owned(),
            );
            self.y += ROW_H;
        }
        for (i, row) in table.rows.iter().enumerate() {
            if self.y + ROW_H > BOTTOM {
                self.new_page();
                self.table_header(table, &widths);
            }
            if i % 2 == 1 {
                self.rect(MARGIN, self.y, CONTENT_W, ROW_H, ZEBRA);
            }
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            self.row(table, &widths, &cells, ROW_H, false);
        }
    }

    fn charts(&mut self, title: &str, count: usize) {
        let h = CONTENT_W * charts::HEIGHT as f32 / charts::WIDTH as f32;
        self.need(40.0 + h);
        self.heading(title);
        for index in 0..count {
            self.need(h + 10.0);
            self.y += 6.0;
            self.push(Op::Chart {
                index,
                x: MARGIN,
                y: self.y,
                w: CONTENT_W,
                h,
            });
            self.y += h + 4.0;
        }
    }

    fn footers(&mut self, page: &Page) {
        let total = self.pages.len();
        let baseline = PAGE_H - MARGIN + 6.0;
        let title = self.metrics.fit(&page.title, 8.0, false, CONTENT_W * 0.6);
        for (i, ops) in self.pages.iter_mut().enumerate() {
            let number = format!("{} {} / {total}", page.page_word, i + 1);
            let w = self.metrics.width(&number, 8.0, false);
            ops.push(Op::Rect {
                x: MARGIN,
                y: baseline - 12.0,
                w: CONTENT_W,
                h: 0.5,
                color: RULE,
            });
            ops.push(Op::Text {
                x: MARGIN,
                baseline,
                size: 8.0,
                bold: false,
                color: MUTED,
                text: title.clone(),
            });
            ops.push(Op::Text {
                x: MARGIN + CONTENT_W - w,
                baseline,
                size: 8.0,
                bold: false,
                color: MUTED,
                text: number,
            });
        }
    }
}

/// Renders `page` with `charts` into a PDF.
pub(crate) fn render(page: &Page, charts: &Charts) -> Result<Vec<u8>, RenderError> {
    let metrics = Metrics::new()?;
    let mut layout = Layout {
        metrics: &metrics,
        pages: Vec::new(),
        y: TOP,
    };
    layout.new_page();
    layout.header_block(page);
    for table in &page.tables {
        layout.table(table);
    }
    let svgs = charts.all();
    layout.charts(page.charts_title, svgs.len());
    layout.footers(page);

    let trees = chart_trees(&svgs)?;
    let regular = Font::new(REGULAR.into(), 0).ok_or(RenderError::Font("DejaVuSans.ttf"))?;
    let bold = Font::new(BOLD.into(), 0).ok_or(RenderError::Font("DejaVuSans-Bold.ttf"))?;
    let size = Size::from_wh(PAGE_W, PAGE_H).ok_or(RenderError::Font("page size"))?;

    let mut document = Document::new();
    document.set_metadata(
        Metadata::new()
            .title(page.title.clone())
            .language(page.language.clone())
            .creator("crm-reports".to_owned()),
    );
    for ops in &layout.pages {
        let mut pdf_page = document.start_page_with(PageSettings::new(size));
        let mut surface = pdf_page.surface();
        for op in ops {
            draw(&mut surface, op, &regular, &bold, &trees);
        }
        surface.finish();
        pdf_page.finish();
    }
    Ok(document.finish()?)
}

/// Parses the chart SVGs with DejaVu Sans standing in for `sans-serif` (and any other
/// family), so their labels are drawn instead of silently dropped.
fn chart_trees(svgs: &[&str]) -> Result<Vec<usvg::Tree>, RenderError> {
    let mut fonts = usvg::fontdb::Database::new();
    fonts.load_font_data(REGULAR.to_vec());
    fonts.load_font_data(BOLD.to_vec());
    fonts.set_sans_serif_family(FAMILY);
    let options = usvg::Options {
        font_family: FAMILY.to_owned(),
        fontdb: Arc::new(fonts),
        ..usvg::Options::default()
    };
    const NAMES: [&str; 4] = [
        "leads_per_day",
        "funnel",
        "dispositions",
        "score_distribution",
    ];
    svgs.iter()
        .zip(NAMES)
        .map(|(svg, chart)| {
            usvg::Tree::from_str(svg, &options)
                .map_err(|source| RenderError::Chart { chart, source })
        })
        .collect()
}

fn fill(color: Rgb) -> Fill {
    Fill {
        paint: rgb::Color::new(color.0, color.1, color.2).into(),
        opacity: NormalizedF32::ONE,
        rule: FillRule::NonZero,
    }
}

fn draw(surface: &mut Surface<'_>, op: &Op, regular: &Font, bold: &Font, trees: &[usvg::Tree]) {
    match op {
        Op::Text {
            x,
            baseline,
            size,
            bold: is_bold,
            color,
            text,
        } => {
            surface.set_fill(Some(fill(*color)));
            surface.set_stroke(None);
            let font = if *is_bold { bold } else { regular };
            surface.draw_text(
                Point::from_xy(*x, *baseline),
                font.clone(),
                *size,
                text,
                false,
                TextDirection::Auto,
            );
        }
        Op::Rect { x, y, w, h, color } => {
            let Some(rect) = Rect::from_xywh(*x, *y, *w, *h) else {
                return;
            };
            let mut builder = PathBuilder::new();
            builder.push_rect(rect);
            if let Some(path) = builder.finish() {
                surface.set_fill(Some(fill(*color)));
                surface.set_stroke(None);
                surface.draw_path(&path);
            }
        }
        Op::Chart { index, x, y, w, h } => {
            let (Some(tree), Some(size)) = (trees.get(*index), Size::from_wh(*w, *h)) else {
                return;
            };
            surface.push_transform(&Transform::from_translate(*x, *y));
            surface.draw_svg(tree, size, SvgSettings::default());
            surface.pop();
        }
    }
}
