//! Drawing: line charts (one or more stacked panels sharing an x-axis) and stacked bars, into an
//! RGB buffer with plotters' bitmap backend, encoded as PNG with the `png` crate. Text goes
//! through ab_glyph with DejaVu Sans embedded in the binary, so no system font is needed.

use crate::error::{LoopError, Result};
use plotters::chart::SeriesAnno;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;
use std::sync::OnceLock;

/// The font family every text element asks for; registered once, from the embedded TTF.
const FAMILY: &str = "sans-serif";
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn register_font() -> std::result::Result<(), String> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS)
            .map_err(|_| "the embedded DejaVu Sans font did not load".to_string())
    })
    .clone()
}

/// Colour-blind-friendly categorical colours (Okabe-Ito, then Tableau).
const PALETTE: [RGBColor; 12] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(148, 103, 189),
];

pub(crate) fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Point markers, one per run, so runs stay apart even in grey scale.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Marker {
    Circle,
    Triangle,
    Square,
    Cross,
}

impl Marker {
    pub fn for_run(i: usize) -> Self {
        [Self::Circle, Self::Triangle, Self::Square, Self::Cross][i % 4]
    }
}

/// One line with markers at its points, optionally with vertical error bars.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub label: String,
    pub color: RGBColor,
    pub marker: Marker,
    pub points: Vec<(f64, f64)>,
    /// `(low, high)` per point, same order as `points`.
    pub err: Option<Vec<(f64, f64)>>,
}

/// One plot area of a chart.
#[derive(Clone, Debug)]
pub(crate) struct Panel {
    pub title: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// A dashed-looking reference line (drawn thin and grey), with its legend label.
    pub reference: Option<(f64, String)>,
    /// Fixed y range (shares, accuracies, win rates: tick labels stop at 1); else from the data.
    pub y_range: Option<(f64, f64)>,
}

impl Panel {
    pub fn has_points(&self) -> bool {
        self.series.iter().any(|s| !s.points.is_empty())
    }
}

/// How the x values read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum XKind {
    /// Iterations or steps: whole numbers only.
    Integer,
    /// Token counts: 12k, 1.5M.
    Count,
    /// Seconds.
    Seconds,
}

fn err_at<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> LoopError + '_ {
    move |e| LoopError::Chart {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// `12.3k`, `1.5M`; plain below a thousand.
pub(crate) fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.3}G", v / 1e9).replace(".000G", "G")
    } else if a >= 1e6 {
        trim(format!("{:.2}", v / 1e6)) + "M"
    } else if a >= 1e3 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else {
        trim(format!("{v:.1}"))
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn format_y(v: f64, span: f64) -> String {
    if span >= 5000.0 {
        si(v)
    } else if span >= 50.0 {
        format!("{v:.0}")
    } else if span >= 5.0 {
        format!("{v:.1}")
    } else if span >= 0.5 {
        format!("{v:.2}")
    } else if span >= 0.05 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

fn format_x(v: f64, kind: XKind) -> String {
    match kind {
        XKind::Integer => {
            if (v - v.round()).abs() < 1e-6 {
                format!("{}", v.round())
            } else {
                String::new()
            }
        }
        XKind::Count => si(v),
        XKind::Seconds => si(v),
    }
}

fn x_range(panels: &[Panel], kind: XKind) -> (f64, f64) {
    let xs = panels
        .iter()
        .flat_map(|p| p.series.iter())
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    match kind {
        XKind::Integer => (lo - 0.5, hi + 0.5),
        _ => {
            let pad = if hi > lo {
                (hi - lo) * 0.06
            } else {
                (hi.abs() * 0.1).max(1.0)
            };
            (
                (lo - pad).max(if lo >= 0.0 { 0.0 } else { f64::MIN }),
                hi + pad,
            )
        }
    }
}

fn y_range(p: &Panel) -> (f64, f64) {
    if let Some(r) = p.y_range {
        return r;
    }
    let mut ys: Vec<f64> = p
        .series
        .iter()
        .flat_map(|s| {
            s.points.iter().map(|p| p.1).chain(
                s.err
                    .iter()
                    .flat_map(|e| e.iter().flat_map(|(a, b)| [*a, *b])),
            )
        })
        .collect();
    if let Some((r, _)) = &p.reference {
        ys.push(*r);
    }
    let (lo, hi) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(*y), b.max(*y))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.1
    } else {
        (hi.abs() * 0.05).max(0.05)
    };
    // Extra room on top for the legend.
    (lo - pad, hi + pad + (span + 2.0 * pad) * 0.25)
}

/// Draw stacked panels sharing one x-axis into a PNG of `width × panel_height·panels` pixels.
pub(crate) fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    x_kind: XKind,
    panels: &[Panel],
    width: u32,
    panel_height: u32,
) -> Result<()> {
    register_font().map_err(err_at(path))?;
    let height = panel_height * panels.len().max(1) as u32;
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err_at(path))?;
        let body = root
            .titled(title, (FAMILY, 22).into_font())
            .map_err(err_at(path))?;
        let (x0, x1) = x_range(panels, x_kind);
        let areas = body.split_evenly((panels.len().max(1), 1));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel, x_label, x_kind, (x0, x1), path)?;
        }
        root.present().map_err(err_at(path))?;
    }
    write_png(path, &buf, width, height)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    x_label: &str,
    x_kind: XKind,
    (x0, x1): (f64, f64),
    path: &Path,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (y0, y1) = y_range(panel);
    let span = y1 - y0;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FAMILY, 17).into_font())
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(78)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err_at(path))?;
    let fx = |v: &f64| format_x(*v, x_kind);
    // A fixed 0..1 range has legend room above 1: no tick labels there.
    let cap = panel.y_range.map_or(f64::INFINITY, |_| 1.0 + 1e-9);
    let fy = |v: &f64| {
        if *v > cap {
            String::new()
        } else {
            format_y(*v, span)
        }
    };
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(&panel.y_label)
        .x_labels(12)
        .y_labels(8)
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .label_style((FAMILY, 13).into_font())
        .axis_desc_style((FAMILY, 14).into_font())
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(err_at(path))?;
    if let Some((y, label)) = &panel.reference {
        let grey = RGBColor(90, 90, 90);
        // Dashes: short segments along the line.
        let n = 60;
        let dashes = (0..n).filter(|i| i % 2 == 0).map(|i| {
            let a = x0 + (x1 - x0) * i as f64 / n as f64;
            let b = x0 + (x1 - x0) * (i + 1) as f64 / n as f64;
            PathElement::new(vec![(a, *y), (b, *y)], grey.stroke_width(1))
        });
        chart
            .draw_series(dashes)
            .map_err(err_at(path))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], grey));
    }
    for s in &panel.series {
        let c = s.color;
        let anno = draw_series(&mut chart, s, path)?.label(s.label.as_str());
        let line = move |x: i32, y: i32| {
            EmptyElement::at((x, y)) + PathElement::new(vec![(0, 0), (20, 0)], c.stroke_width(2))
        };
        match s.marker {
            Marker::Circle => {
                anno.legend(move |(x, y)| line(x, y) + Circle::new((10, 0), 4, c.filled()))
            }
            Marker::Triangle => {
                anno.legend(move |(x, y)| line(x, y) + TriangleMarker::new((10, 0), 6, c.filled()))
            }
            Marker::Square => anno
                .legend(move |(x, y)| line(x, y) + Rectangle::new([(6, -4), (14, 4)], c.filled())),
            Marker::Cross => {
                anno.legend(move |(x, y)| line(x, y) + Cross::new((10, 0), 5, c.stroke_width(2)))
            }
        };
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .label_font((FAMILY, 13).into_font())
        .draw()
        .map_err(err_at(path))?;
    Ok(())
}

type Chart2d<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Line, error bars and markers of one series; returns the annotation of the line (for the
/// legend).
fn draw_series<'c, 'a, DB: DrawingBackend + 'a>(
    chart: &'c mut Chart2d<'a, DB>,
    s: &Series,
    path: &Path,
) -> Result<&'c mut SeriesAnno<'a, DB>>
where
    DB::ErrorType: 'static,
{
    let c = s.color;
    if let Some(err) = &s.err {
        let verticals = s.points.iter().zip(err).map(|(&(x, _), &(lo, hi))| {
            PathElement::new(vec![(x, lo), (x, hi)], c.stroke_width(2))
        });
        chart.draw_series(verticals).map_err(err_at(path))?;
        let caps = s.points.iter().zip(err).flat_map(|(&(x, _), &(lo, hi))| {
            [lo, hi].map(|y| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(-5, 0), (5, 0)], c.stroke_width(2))
            })
        });
        chart.draw_series(caps).map_err(err_at(path))?;
    }
    let pts = s.points.iter().copied();
    match s.marker {
        Marker::Circle => {
            chart
                .draw_series(pts.map(|p| Circle::new(p, 5, c.filled())))
                .map_err(err_at(path))?;
        }
        Marker::Triangle => {
            chart
                .draw_series(pts.map(|p| TriangleMarker::new(p, 7, c.filled())))
                .map_err(err_at(path))?;
        }
        Marker::Square => {
            chart
                .draw_series(
                    pts.map(|p| {
                        EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], c.filled())
                    }),
                )
                .map_err(err_at(path))?;
        }
        Marker::Cross => {
            chart
                .draw_series(pts.map(|p| Cross::new(p, 5, c.stroke_width(2))))
                .map_err(err_at(path))?;
        }
    }
    chart
        .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
        .map_err(err_at(path))
}

/// One stacked bar: its x label and `(segment, value)` pairs.
#[derive(Clone, Debug)]
pub(crate) struct Bar {
    pub label: String,
    pub segments: Vec<(String, f64)>,
}

/// Stacked bars with a legend of segments to the right, `width × height` pixels.
pub(crate) fn stacked_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    segments: &[String],
    bars: &[Bar],
    width: u32,
    height: u32,
) -> Result<()> {
    register_font().map_err(err_at(path))?;
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err_at(path))?;
        let body = root
            .titled(title, (FAMILY, 22).into_font())
            .map_err(err_at(path))?;
        let legend_w = 170.min(width / 3);
        let (plot, legend) = body.split_horizontally(width - legend_w);
        let total = |b: &Bar| b.segments.iter().map(|s| s.1).sum::<f64>();
        let ymax = bars.iter().map(total).fold(0.0, f64::max);
        let ymax = if ymax > 0.0 { ymax * 1.12 } else { 1.0 };
        let n = bars.len();
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(78)
            // One empty slot on either side, so a single bar sits in the middle at a third of the width.
            .build_cartesian_2d((0..n + 1).into_segmented(), 0f64..ymax)
            .map_err(err_at(path))?;
        let fx = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i >= 1 => bars
                .get(*i - 1)
                .map(|b| b.label.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let fy = |v: &f64| format_y(*v, ymax);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("iteration")
            .y_desc(y_label)
            .x_labels(n + 3)
            .y_labels(8)
            .x_label_formatter(&fx)
            .y_label_formatter(&fy)
            .label_style((FAMILY, 13).into_font())
            .axis_desc_style((FAMILY, 14).into_font())
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(err_at(path))?;
        for (slot, bar) in bars.iter().enumerate() {
            let i = slot + 1;
            let mut y = 0.0;
            for (si, seg) in segments.iter().enumerate() {
                let v: f64 = bar
                    .segments
                    .iter()
                    .filter(|s| &s.0 == seg)
                    .map(|s| s.1)
                    .sum();
                if v <= 0.0 {
                    continue;
                }
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), y),
                        (SegmentValue::Exact(i + 1), y + v),
                    ],
                    color(si).filled(),
                );
                r.set_margin(0, 0, 14, 14);
                chart
                    .draw_series(std::iter::once(r))
                    .map_err(err_at(path))?;
                y += v;
            }
            let style =
                TextStyle::from((FAMILY, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
            chart
                .draw_series(std::iter::once(Text::new(
                    format_total(y),
                    (SegmentValue::CenterOf(i), y),
                    style,
                )))
                .map_err(err_at(path))?;
        }
        // Legend: a swatch and the segment name per line, top to bottom in stacking order
        // reversed (so it reads like the bars).
        let font = TextStyle::from((FAMILY, 13).into_font());
        for (row, (si, seg)) in segments.iter().enumerate().rev().enumerate() {
            let y = 20 + row as i32 * 20;
            legend
                .draw(&Rectangle::new([(6, y), (20, y + 14)], color(si).filled()))
                .map_err(err_at(path))?;
            legend
                .draw(&Text::new(seg.clone(), (26, y), font.clone()))
                .map_err(err_at(path))?;
        }
        root.present().map_err(err_at(path))?;
    }
    write_png(path, &buf, width, height)
}

fn format_total(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<()> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(err_at(path))?;
        w.write_image_data(rgb).map_err(err_at(path))?;
        w.finish().map_err(err_at(path))?;
    }
    crate::fsio::write_bytes(path, &bytes)
}
