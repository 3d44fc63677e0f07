//! The pictures of the `evaluate` stage: ROC curves, training curves and Grad-CAM
//! heatmaps, as PNG.
//!
//! Drawn with plotters into an RGB buffer and encoded with the `png` crate (plotters'
//! own encoder would pull in a second `image` crate). Text uses DejaVu Sans embedded in
//! the binary (`assets/fonts`), never the machine's fonts, so a picture has the same
//! bytes wherever it is drawn: same input ⇒ same file.

use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::sync::Once;

use ab_glyph::FontRef;
use anyhow::{Context as _, bail, ensure};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::pixels::Gray;

/// DejaVu Sans 2.37 (licence beside it): complete enough for "−", "–", "…" and
/// Vietnamese labels.
static FONT: &[u8] = include_bytes!("../../../../assets/fonts/DejaVuSans.ttf");

/// The family name every text style below uses; plotters' own defaults (tick labels)
/// ask for it too.
const FAMILY: &str = "sans-serif";

/// Registers the embedded font with plotters once per process: plotters measures text
/// (legend boxes) with it and refuses an unregistered family. Drawing is [`Canvas`]'s.
fn font() -> &'static str {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            // The bytes are compiled in and parsed by the tests: unreachable in practice.
            panic!("embedded DejaVuSans.ttf is not a valid font");
        }
    });
    FAMILY
}

/// The embedded font, parsed once.
fn face() -> &'static FontRef<'static> {
    static FACE: std::sync::OnceLock<FontRef<'static>> = std::sync::OnceLock::new();
    FACE.get_or_init(|| FontRef::try_from_slice(FONT).expect("embedded DejaVuSans.ttf is a valid font"))
}

/// Text drawing, apart so that plotters-backend's traits (whose `stroke_width` clashes
/// with plotters' `Color`) are in scope here only.
mod canvas {
    use ab_glyph::{Font as _, OutlinedGlyph, PxScale, ScaleFont as _};
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, VPos};
    use plotters_backend::{BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind};

    use super::face;

    /// `text` laid out on one line at `size` pixels (ascent − descent, as plotters means
    /// it): the outlined glyphs with the top of the line at y = 0, and the line's width and
    /// height.
    fn layout(text: &str, size: f32) -> (Vec<OutlinedGlyph>, i32, i32) {
        let font = face();
        let scaled = font.as_scaled(PxScale::from(size));
        let (mut x, mut prev) = (0.0f32, None);
        let mut glyphs = Vec::new();
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = prev {
                x += scaled.kern(p, id);
            }
            let glyph = id.with_scale_and_position(size, ab_glyph::point(x, scaled.ascent()));
            x += scaled.h_advance(id);
            prev = Some(id);
            glyphs.extend(font.outline_glyph(glyph));
        }
        let height = scaled.ascent() - scaled.descent();
        (glyphs, x.ceil() as i32, height.ceil() as i32)
    }

    /// The bitmap backend with its own text drawing. plotters 0.3.7's ab_glyph renderer
    /// drops each glyph's left side bearing and rounds the pen to whole pixels, which
    /// spaces letters unevenly ("cardiom egaly"); here each glyph is rasterised at its
    /// exact sub-pixel position. Everything else is the bitmap backend's.
    pub(super) struct Canvas<'a> {
        inner: BitMapBackend<'a>,
    }

    impl<'a> Canvas<'a> {
        pub(super) fn new(rgb: &'a mut [u8], size: (u32, u32)) -> Self {
            Canvas {
                inner: BitMapBackend::with_buffer(rgb, size),
            }
        }
    }

    type BackendResult<E> = Result<(), DrawingErrorKind<E>>;

    impl<'a> DrawingBackend for Canvas<'a> {
        type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

        fn get_size(&self) -> (u32, u32) {
            self.inner.get_size()
        }
        fn ensure_prepared(&mut self) -> BackendResult<Self::ErrorType> {
            self.inner.ensure_prepared()
        }
        fn present(&mut self) -> BackendResult<Self::ErrorType> {
            self.inner.present()
        }
        fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> BackendResult<Self::ErrorType> {
            self.inner.draw_pixel(point, color)
        }
        fn draw_line<S: BackendStyle>(
            &mut self,
            from: BackendCoord,
            to: BackendCoord,
            style: &S,
        ) -> BackendResult<Self::ErrorType> {
            self.inner.draw_line(from, to, style)
        }
        fn draw_rect<S: BackendStyle>(
            &mut self,
            upper_left: BackendCoord,
            bottom_right: BackendCoord,
            style: &S,
            fill: bool,
        ) -> BackendResult<Self::ErrorType> {
            self.inner.draw_rect(upper_left, bottom_right, style, fill)
        }
        fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
            &mut self,
            path: I,
            style: &S,
        ) -> BackendResult<Self::ErrorType> {
            self.inner.draw_path(path, style)
        }
        fn draw_circle<S: BackendStyle>(
            &mut self,
            center: BackendCoord,
            radius: u32,
            style: &S,
            fill: bool,
        ) -> BackendResult<Self::ErrorType> {
            self.inner.draw_circle(center, radius, style, fill)
        }
        fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
            &mut self,
            vert: I,
            style: &S,
        ) -> BackendResult<Self::ErrorType> {
            self.inner.fill_polygon(vert, style)
        }
        fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> BackendResult<Self::ErrorType> {
            self.inner.blit_bitmap(pos, size, src)
        }

        fn estimate_text_size<S: BackendTextStyle>(
            &self,
            text: &str,
            style: &S,
        ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
            let (_, w, h) = layout(text, style.size() as f32);
            Ok((w.max(0) as u32, h.max(0) as u32))
        }

        fn draw_text<S: BackendTextStyle>(
            &mut self,
            text: &str,
            style: &S,
            pos: BackendCoord,
        ) -> BackendResult<Self::ErrorType> {
            let color = style.color();
            if color.alpha == 0.0 {
                return Ok(());
            }
            let (glyphs, w, h) = layout(text, style.size() as f32);
            let anchor = style.anchor();
            let dx = match anchor.h_pos {
                HPos::Left => 0,
                HPos::Center => -w / 2,
                HPos::Right => -w,
            };
            let dy = match anchor.v_pos {
                VPos::Top => 0,
                VPos::Center => -h / 2,
                VPos::Bottom => -h,
            };
            let transform = style.transform();
            let (cw, ch) = self.get_size();
            let mut result = Ok(());
            for glyph in &glyphs {
                let bounds = glyph.px_bounds();
                let (gx, gy) = (bounds.min.x as i32 + dx, bounds.min.y as i32 + dy);
                glyph.draw(|x, y, coverage| {
                    if result.is_err() || coverage <= 0.0 {
                        return;
                    }
                    let (x, y) = transform.transform(gx + x as i32, gy + y as i32);
                    let (x, y) = (pos.0 + x, pos.1 + y);
                    if x >= 0 && y >= 0 && x < cw as i32 && y < ch as i32 {
                        let alpha = color.alpha * f64::from(coverage.min(1.0));
                        result = self.inner.draw_pixel((x, y), BackendColor { alpha, rgb: color.rgb });
                    }
                });
            }
            result
        }
    }
}
use canvas::Canvas;

/// matplotlib's "tab10": distinct, colour-blind tolerable, familiar to readers of papers.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const GRID: RGBColor = RGBColor(225, 225, 225);
const GRID_MINOR: RGBColor = RGBColor(242, 242, 242);
const DARK: RGBColor = RGBColor(40, 40, 40);

pub const ROC_SIZE: (u32, u32) = (800, 800);
pub const HISTORY_SIZE: (u32, u32) = (1400, 600);
/// Side of each of the two square panels of a heatmap picture.
const PANEL: usize = 448;
const PAD: usize = 16;
const CAPTION_BAND: usize = 48;
const FOOT_BAND: usize = 40;
pub const HEATMAP_SIZE: (u32, u32) = ((3 * PAD + 2 * PANEL) as u32, (CAPTION_BAND + PANEL + FOOT_BAND) as u32);

/// One ROC curve: `points` are (false positive rate, true positive rate).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub auc: Option<f64>,
    pub auc_ci: Option<(f64, f64)>,
}

/// One validation of the training run (`history` of the train stage).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPoint {
    pub step: i64,
    pub train_loss: Option<f64>,
    pub val_loss: f64,
    pub val_macro_f1: f64,
    pub val_macro_auc: Option<f64>,
}

/// A plotters error as anyhow (its error types borrow nothing but are not all `Sync`).
fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e}")
}

/// Draws with `draw` on a white `size` canvas and writes it as an 8-bit RGB PNG.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<Canvas<'_>, Shift>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut rgb = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = Canvas::new(&mut rgb, size).into_drawing_area();
        draw(&root)?;
        root.present().map_err(err)?;
    }
    write_png(path, size, &rgb)
}

fn write_png(path: &Path, (w, h): (u32, u32), rgb: &[u8]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// "0.953", or "–" for a value that could not be computed (NaN).
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "–".to_string()
    }
}

/// The legend entry of a curve: "chest_wall  AUC 0.953 (0.921–0.978)".
fn legend(c: &Curve) -> String {
    let mut s = c.label.clone();
    if let Some(auc) = c.auc {
        s.push_str(&format!("  AUC {}", num(auc)));
        // Interval bounds are NaN when no bootstrap replicate had both label values.
        match c.auc_ci {
            Some((lo, hi)) if lo.is_finite() && hi.is_finite() => s.push_str(&format!(" ({}–{})", num(lo), num(hi))),
            Some((lo, hi)) if lo.is_finite() || hi.is_finite() => s.push_str(&format!(" ({} to {})", num(lo), num(hi))),
            _ => {}
        }
    }
    s
}

/// A square unit chart: the axes' descriptions, a dashed reference line, and where the
/// legend goes (where the curves usually are not).
struct UnitChart<'a> {
    x_desc: &'a str,
    y_desc: &'a str,
    reference: Option<(&'a str, [(f64, f64); 2])>,
    legend_at: SeriesLabelPosition,
}

/// Lines in the unit square (one per class), 800×800: ROC, precision–recall and
/// reliability diagrams share it. `series` is (legend text, points); points that are not
/// finite are left out.
fn unit_chart(
    path: &Path,
    title: &str,
    chart_of: UnitChart<'_>,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let f = font();
    render(path, ROC_SIZE, |root| {
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (f, 26).into_font().color(&DARK))
            .margin(24)
            .x_label_area_size(64)
            .y_label_area_size(76)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(chart_of.x_desc)
            .y_desc(chart_of.y_desc)
            .axis_desc_style((f, 20).into_font().color(&DARK))
            .label_style((f, 16).into_font().color(&DARK))
            .bold_line_style(GRID)
            .light_line_style(GRID_MINOR)
            .max_light_lines(1)
            .x_labels(11)
            .y_labels(11)
            .x_label_formatter(&|v| format!("{v:.1}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()
            .map_err(err)?;
        if let Some((name, line)) = chart_of.reference {
            chart
                .draw_series(DashedLineSeries::new(
                    line,
                    8,
                    6,
                    RGBColor(150, 150, 150).stroke_width(1),
                ))
                .map_err(err)?
                .label(name)
                .legend(|(x, y)| PathElement::new([(x, y), (x + 10, y)], RGBColor(150, 150, 150).stroke_width(1)));
        }
        for (i, (label, points)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points = points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(x, y)| (x.clamp(0.0, 1.0), y.clamp(0.0, 1.0)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x - 4, y), (x + 14, y)], color.stroke_width(3)));
        }
        chart
            .configure_series_labels()
            .position(chart_of.legend_at)
            .margin(16)
            .legend_area_size(28)
            .label_font((f, 17).into_font().color(&DARK))
            .background_style(WHITE.mix(0.92))
            .border_style(RGBColor(190, 190, 190))
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// ROC curves of several classes in one 800×800 panel, with the chance diagonal.
pub fn roc_png(path: &Path, title: &str, curves: &[Curve]) -> anyhow::Result<()> {
    let series: Vec<(String, Vec<(f64, f64)>)> = curves.iter().map(|c| (legend(c), c.points.clone())).collect();
    let chart = UnitChart {
        x_desc: "1 − specificity (false positive rate)",
        y_desc: "sensitivity (true positive rate)",
        reference: Some(("chance", [(0.0, 0.0), (1.0, 1.0)])),
        legend_at: SeriesLabelPosition::LowerRight,
    };
    unit_chart(path, title, chart, &series)
}

/// One class's precision–recall curve: `points` are (recall, precision).
#[derive(Debug, Clone, PartialEq)]
pub struct PrCurve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Average precision (`None` without positives).
    pub average_precision: Option<f64>,
    /// Share of positives: the AP of a classifier that guesses.
    pub prevalence: f64,
}

/// Precision–recall curves, 800×800, drawn as steps (precision holds until the next
/// threshold), each legend with the class's AP and its prevalence (AP by chance).
pub fn pr_png(path: &Path, title: &str, curves: &[PrCurve]) -> anyhow::Result<()> {
    let series: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|c| {
            let mut steps = Vec::with_capacity(2 * c.points.len() + 1);
            if let Some(&(_, p)) = c.points.first() {
                steps.push((0.0, p));
            }
            let mut last_recall = 0.0;
            for &(r, p) in &c.points {
                steps.push((last_recall, p));
                steps.push((r, p));
                last_recall = r;
            }
            let ap = c.average_precision.map_or_else(|| "–".to_string(), num);
            (format!("{}  AP {ap} (chance {})", c.label, num(c.prevalence)), steps)
        })
        .collect();
    let chart = UnitChart {
        x_desc: "recall (sensitivity)",
        y_desc: "precision (positive predictive value)",
        reference: None,
        legend_at: SeriesLabelPosition::LowerLeft,
    };
    unit_chart(path, title, chart, &series)
}

/// One class's reliability diagram: `points` are (mean predicted probability, share of
/// positives) of the non-empty bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Reliability {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Expected calibration error.
    pub ece: f64,
}

/// Reliability diagrams of the classes in one 800×800 panel, with the diagonal of a
/// perfectly calibrated model.
pub fn calibration_png(path: &Path, title: &str, curves: &[Reliability]) -> anyhow::Result<()> {
    let series: Vec<(String, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|c| (format!("{}  ECE {}", c.label, num(c.ece)), c.points.clone()))
        .collect();
    let chart = UnitChart {
        x_desc: "mean predicted probability (10 bins)",
        y_desc: "share of positives",
        reference: Some(("perfectly calibrated", [(0.0, 0.0), (1.0, 1.0)])),
        legend_at: SeriesLabelPosition::UpperLeft,
    };
    unit_chart(path, title, chart, &series)
}

/// The step axis: from 0 (where training starts; lower if steps are negative) to the
/// last step, with a margin; a single step sits in the middle, clear of the legend.
fn step_range(lo: f64, hi: f64) -> (f64, f64) {
    if !lo.is_finite() {
        (0.0, 1.0)
    } else if hi > lo {
        let lo = lo.min(0.0);
        let margin = (hi - lo) * 0.03;
        (lo - margin, hi + margin)
    } else {
        let half = lo.abs().max(1.0);
        (lo - half, hi + half)
    }
}

/// Step ticks as integers; fractional ticks (a narrow range) stay unlabelled rather
/// than repeat the same integer.
fn step_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-6 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

/// One panel of the training curves: two series against the step.
struct Panel<'a> {
    caption: &'a str,
    y_desc: &'a str,
    y_max: f64,
    series: [(&'a str, &'a Vec<(f64, f64)>); 2],
    legend_at: SeriesLabelPosition,
}

/// Training curves, two panels: losses, and validation macro F1 / AUC, against the step;
/// a dashed vertical line at the best checkpoint. 1400×600.
pub fn history_png(path: &Path, title: &str, points: &[HistoryPoint], best_step: Option<i64>) -> anyhow::Result<()> {
    let f = font();
    let finite = |v: &f64| v.is_finite();
    let steps = points.iter().map(|p| p.step as f64).chain(best_step.map(|s| s as f64));
    let (lo, hi) = steps.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), s| (a.min(s), b.max(s)));
    let (x0, x1) = step_range(lo, hi);
    let train: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| p.train_loss.filter(finite).map(|l| (p.step as f64, l)))
        .collect();
    let val: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.val_loss.is_finite())
        .map(|p| (p.step as f64, p.val_loss))
        .collect();
    let f1: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.val_macro_f1.is_finite())
        .map(|p| (p.step as f64, p.val_macro_f1))
        .collect();
    let auc: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| p.val_macro_auc.filter(finite).map(|a| (p.step as f64, a)))
        .collect();
    let max_loss = train.iter().chain(&val).map(|p| p.1).fold(0.0f64, f64::max);
    // Head room above every loss for the legend (upper right), so it hides no point.
    let y_loss = if max_loss > 0.0 { max_loss * 1.35 } else { 1.0 };
    let best = best_step.map(|s| s as f64);

    render(path, HISTORY_SIZE, |root| {
        root.fill(&WHITE).map_err(err)?;
        let body = root.titled(title, (f, 26).into_font().color(&DARK)).map_err(err)?;
        let (left, right) = body.split_horizontally(HISTORY_SIZE.0 / 2);
        let panels = [
            Panel {
                caption: "loss",
                y_desc: "loss",
                y_max: y_loss,
                series: [("train loss", &train), ("validation loss", &val)],
                legend_at: SeriesLabelPosition::UpperRight,
            },
            Panel {
                caption: "validation metrics",
                y_desc: "macro score",
                y_max: 1.0,
                series: [("validation macro F1", &f1), ("validation macro AUC", &auc)],
                legend_at: SeriesLabelPosition::LowerRight,
            },
        ];
        for (area, panel) in [&left, &right].into_iter().zip(panels) {
            let Panel {
                caption,
                y_desc,
                y_max,
                series,
                legend_at,
            } = panel;
            let mut chart = ChartBuilder::on(area)
                .caption(caption, (f, 21).into_font().color(&DARK))
                .margin(18)
                .x_label_area_size(56)
                .y_label_area_size(72)
                .build_cartesian_2d(x0..x1, 0f64..y_max)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("step")
                .y_desc(y_desc)
                .axis_desc_style((f, 18).into_font().color(&DARK))
                .label_style((f, 15).into_font().color(&DARK))
                .bold_line_style(GRID)
                .light_line_style(GRID_MINOR)
                .max_light_lines(1)
                .x_labels(8)
                .y_labels(11)
                .x_label_formatter(&step_label)
                .y_label_formatter(&|v| format!("{v:.1}"))
                .draw()
                .map_err(err)?;
            if let Some(b) = best {
                chart
                    .draw_series(DashedLineSeries::new(
                        [(b, 0.0), (b, y_max)],
                        7,
                        5,
                        DARK.stroke_width(1),
                    ))
                    .map_err(err)?
                    .label(format!("best checkpoint (step {})", best_step.unwrap_or_default()))
                    .legend(|(x, y)| PathElement::new([(x - 4, y), (x + 14, y)], DARK.stroke_width(1)));
            }
            for (i, (label, data)) in series.into_iter().enumerate() {
                if data.is_empty() {
                    // Absent (no train loss recorded, AUC undefined): no legend entry either.
                    continue;
                }
                let color = PALETTE[i];
                // Markers make a single validation visible, where a line has no length.
                chart
                    .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)).point_size(3))
                    .map_err(err)?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new([(x - 4, y), (x + 14, y)], color.stroke_width(3)));
            }
            chart
                .configure_series_labels()
                .position(legend_at)
                .margin(14)
                .legend_area_size(28)
                .label_font((f, 16).into_font().color(&DARK))
                .background_style(WHITE.mix(0.92))
                .border_style(RGBColor(190, 190, 190))
                .draw()
                .map_err(err)?;
        }
        Ok(())
    })
}

/// A jet-like colour map: blue (0) → cyan → yellow → red (1).
fn jet(v: f32) -> [f32; 3] {
    let c = |x: f32| (1.5 - (4.0 * v - x).abs()).clamp(0.0, 1.0);
    [c(3.0), c(2.0), c(1.0)]
}

/// How much of the colour map covers the radiograph in the overlay.
const ALPHA: f32 = 0.45;

/// The radiograph beside the radiograph overlaid with a Grad-CAM map (`cam_h` rows of
/// `cam_w` values, any range: min–max normalised, bilinearly upsampled, jet colours),
/// `caption` above. 944×536; the image is fitted into each 448×448 panel.
pub fn heatmap_png(
    path: &Path,
    image: &Gray,
    cam: &[f32],
    cam_w: usize,
    cam_h: usize,
    caption: &str,
) -> anyhow::Result<()> {
    if image.width == 0 || image.height == 0 || image.data.len() != image.width * image.height {
        bail!(
            "heatmap of an empty or inconsistent image ({}×{}, {} values)",
            image.width,
            image.height,
            image.data.len()
        );
    }
    ensure!(
        cam_w > 0 && cam_h > 0 && cam.len() == cam_w * cam_h,
        "Grad-CAM map has {} values, expected {cam_w}×{cam_h} > 0",
        cam.len()
    );
    let f = font();
    // Fit the longer side to the panel, keeping the aspect ratio.
    let long = image.width.max(image.height);
    let fit = |side: usize| ((side * PANEL + long / 2) / long).clamp(1, PANEL);
    let (w, h) = (fit(image.width), fit(image.height));
    let shown = crate::pixels::resize(image, w, h);
    let (lo, hi) = cam
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let normalised = cam
        .iter()
        .map(|&v| {
            if v.is_finite() && hi > lo {
                (v - lo) / (hi - lo)
            } else {
                0.0
            }
        })
        .collect();
    let heat = crate::pixels::resize(
        &Gray {
            width: cam_w,
            height: cam_h,
            data: normalised,
        },
        w,
        h,
    );

    let (cw, ch) = (HEATMAP_SIZE.0 as usize, HEATMAP_SIZE.1 as usize);
    let mut rgb = vec![255u8; cw * ch * 3];
    let to_u8 = |v: f32| (v * 255.0).round().clamp(0.0, 255.0) as u8;
    let (ox, oy) = ((PANEL - w) / 2, CAPTION_BAND + (PANEL - h) / 2);
    for y in 0..h {
        for x in 0..w {
            let g = shown.data[y * w + x];
            let g = if g.is_finite() { g.clamp(0.0, 1.0) } else { 0.0 };
            let j = jet(heat.data[y * w + x].clamp(0.0, 1.0));
            let left = ((oy + y) * cw + PAD + ox + x) * 3;
            let right = left + (PANEL + PAD) * 3;
            for k in 0..3 {
                rgb[left + k] = to_u8(g);
                rgb[right + k] = to_u8((1.0 - ALPHA) * g + ALPHA * j[k]);
            }
        }
    }
    // Colour bar under the overlay, centred: what blue and red mean.
    let bar_w = 220;
    let bar_x = 2 * PAD + PANEL + (PANEL - bar_w) / 2;
    let bar_y = CAPTION_BAND + PANEL + 14;
    for x in 0..bar_w {
        let j = jet(x as f32 / (bar_w - 1) as f32);
        for y in bar_y..bar_y + 12 {
            let at = (y * cw + bar_x + x) * 3;
            for k in 0..3 {
                rgb[at + k] = to_u8(j[k]);
            }
        }
    }

    {
        let root = Canvas::new(&mut rgb, HEATMAP_SIZE).into_drawing_area();
        let mut size = 20.0;
        let mut text = caption.to_string();
        // Shrink a long caption (DICOM UIDs are long), then cut it with "…".
        let room = (cw - 2 * PAD) as u32;
        let width = |text: &str, size: f64| {
            root.estimate_text_size(text, &TextStyle::from((f, size).into_font()))
                .map(|(w, _)| w)
                .map_err(err)
        };
        while size > 12.0 && width(&text, size)? > room {
            size -= 1.0;
        }
        while text.chars().count() > 1 && width(&text, size)? > room {
            let mut chars: Vec<char> = text.chars().collect();
            chars.truncate(chars.len().saturating_sub(2));
            text = chars.into_iter().collect::<String>() + "…";
        }
        let centred = |size: f64| {
            (f, size)
                .into_font()
                .color(&DARK)
                .pos(Pos::new(HPos::Center, VPos::Center))
        };
        root.draw(&Text::new(
            text,
            ((cw / 2) as i32, (CAPTION_BAND / 2) as i32),
            centred(size),
        ))
        .map_err(err)?;
        let foot = (CAPTION_BAND + PANEL + 20) as i32;
        root.draw(&Text::new("image", ((PAD + PANEL / 2) as i32, foot), centred(16.0)))
            .map_err(err)?;
        let side = |h: HPos| (f, 15).into_font().color(&DARK).pos(Pos::new(h, VPos::Center));
        root.draw(&Text::new(
            "Grad-CAM  low",
            ((bar_x - 8) as i32, foot),
            side(HPos::Right),
        ))
        .map_err(err)?;
        root.draw(&Text::new("high", ((bar_x + bar_w + 8) as i32, foot), side(HPos::Left)))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    write_png(path, HEATMAP_SIZE, &rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a PNG: (width, height, RGB bytes).
    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let file = std::fs::File::open(path).unwrap();
        let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn distinct_colours(rgb: &[u8]) -> usize {
        rgb.chunks_exact(3)
            .map(|p| (p[0], p[1], p[2]))
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Writes twice, checks size, content and identical bytes; returns the RGB data.
    fn check(size: (u32, u32), draw: impl Fn(&Path) -> anyhow::Result<()>) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
        draw(&a).unwrap();
        draw(&b).unwrap();
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "not deterministic"
        );
        let (w, h, rgb) = decode(&a);
        assert_eq!((w, h), size);
        assert!(
            distinct_colours(&rgb) > 20,
            "blank picture: {} colours",
            distinct_colours(&rgb)
        );
        rgb
    }

    /// Pixels that are dark grey text/axes colour in a horizontal band: text was drawn.
    fn has_ink(rgb: &[u8], width: u32, rows: std::ops::Range<usize>) -> bool {
        let w = width as usize;
        rows.flat_map(|y| (0..w).map(move |x| (y * w + x) * 3))
            .any(|i| rgb[i] < 100 && rgb[i + 1] < 100 && rgb[i + 2] < 100)
    }

    pub(crate) fn curves() -> Vec<Curve> {
        (0..5)
            .map(|k| {
                let a = 1.0 + k as f64;
                let points: Vec<(f64, f64)> = (0..=50)
                    .map(|i| {
                        let x = i as f64 / 50.0;
                        (x, 1.0 - (1.0 - x).powf(a + 1.0))
                    })
                    .collect();
                Curve {
                    label: format!("class_{k}"),
                    points,
                    auc: Some(1.0 - 1.0 / (a + 2.0)),
                    auc_ci: Some((0.6, if k == 4 { f64::NAN } else { 0.9 })),
                }
            })
            .collect()
    }

    #[test]
    fn font_parses() {
        assert!(is_truetype(FONT));
    }

    /// The TrueType magic number: the embedded file is the font, not an LFS pointer.
    fn is_truetype(bytes: &[u8]) -> bool {
        bytes.len() > 100_000 && bytes[..4] == [0, 1, 0, 0]
    }

    #[test]
    fn roc_is_drawn_with_text_and_deterministic() {
        let rgb = check(ROC_SIZE, |p| roc_png(p, "ROC — test part", &curves()));
        // The title band holds text.
        assert!(has_ink(&rgb, ROC_SIZE.0, 5..40));
        assert_eq!(legend(&curves()[4]), "class_4  AUC 0.857 (0.600 to –)");
        assert_eq!(legend(&curves()[0]), "class_0  AUC 0.667 (0.600–0.900)");
        assert_eq!(
            legend(&Curve {
                label: "x".into(),
                points: vec![],
                auc: None,
                auc_ci: None
            }),
            "x"
        );
    }

    #[test]
    fn roc_without_curves_still_draws_axes() {
        check(ROC_SIZE, |p| roc_png(p, "nothing", &[]));
    }

    fn history(n: i64, train: bool) -> Vec<HistoryPoint> {
        (0..n)
            .map(|i| HistoryPoint {
                step: 100 * (i + 1),
                train_loss: train.then_some(0.7 / (1.0 + i as f64)),
                val_loss: 0.8 / (1.0 + 0.8 * i as f64),
                val_macro_f1: 0.3 + 0.5 * (i as f64 / n as f64),
                val_macro_auc: (i > 0).then_some(0.6 + 0.3 * (i as f64 / n as f64)),
            })
            .collect()
    }

    #[test]
    fn history_is_drawn_and_deterministic() {
        let rgb = check(HISTORY_SIZE, |p| {
            history_png(p, "training", &history(20, true), Some(1500))
        });
        assert!(has_ink(&rgb, HISTORY_SIZE.0, 5..40));
    }

    #[test]
    fn history_copes_with_one_point_and_no_train_loss() {
        check(HISTORY_SIZE, |p| history_png(p, "one", &history(1, false), Some(100)));
        check(HISTORY_SIZE, |p| history_png(p, "none", &[], None));
        let mut odd = history(3, true);
        odd[1].val_loss = f64::NAN;
        odd[2].train_loss = Some(f64::INFINITY);
        check(HISTORY_SIZE, |p| history_png(p, "odd", &odd, None));
    }

    pub(crate) fn chest(w: usize, h: usize) -> Gray {
        let data = (0..h)
            .flat_map(|y| {
                (0..w).map(move |x| {
                    let (u, v) = (x as f32 / w as f32 - 0.5, y as f32 / h as f32 - 0.5);
                    let lung = |cx: f32| ((u - cx) / 0.17).powi(2) + ((v + 0.02) / 0.32).powi(2) < 1.0;
                    let body = (u / 0.46).powi(2) + (v / 0.6).powi(2) < 1.0;
                    let spine = u.abs() < 0.035;
                    let ribs = ((v * 22.0).sin() * 0.5 + 0.5) * 0.08;
                    match (body, lung(-0.2) || lung(0.2), spine) {
                        (false, _, _) => 0.05,
                        (true, _, true) => 0.85,
                        (true, true, _) => 0.25 + ribs,
                        (true, false, _) => 0.65,
                    }
                })
            })
            .collect();
        Gray {
            width: w,
            height: h,
            data,
        }
    }

    fn blob(n: usize, cx: f32, cy: f32) -> Vec<f32> {
        (0..n * n)
            .map(|i| {
                let (x, y) = ((i % n) as f32 / n as f32, (i / n) as f32 / n as f32);
                (-((x - cx).powi(2) + (y - cy).powi(2)) / 0.02).exp()
            })
            .collect()
    }

    #[test]
    fn heatmap_is_drawn_and_deterministic() {
        let img = chest(300, 360);
        let rgb = check(HEATMAP_SIZE, |p| {
            heatmap_png(
                p,
                &img,
                &blob(7, 0.6, 0.55),
                7,
                7,
                "1.2.840.10008.1: cardiac p=0.93 (label 1)",
            )
        });
        assert!(has_ink(&rgb, HEATMAP_SIZE.0, 5..CAPTION_BAND));
        // The overlay is coloured (the hot spot is red-dominant), the left panel grey.
        let w = HEATMAP_SIZE.0 as usize;
        let at = |x: usize, y: usize| &rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
        let centre_y = CAPTION_BAND + PANEL / 2;
        let grey = at(PAD + PANEL / 2, centre_y);
        assert!(grey[0] == grey[1] && grey[1] == grey[2]);
        let hot = at(2 * PAD + PANEL + PANEL * 6 / 10, CAPTION_BAND + PANEL * 55 / 100);
        assert!(hot[0] > hot[2] + 60, "{hot:?}");
    }

    #[test]
    fn heatmap_handles_flat_cam_long_caption_and_rejects_bad_sizes() {
        let img = chest(64, 64);
        let long = "1.2.840.113619.2.55.3.604688119.868.1234567890.123.4567.89: pleural_effusion p=0.93 (label 1) — a very long caption indeed";
        check(HEATMAP_SIZE, |p| heatmap_png(p, &img, &[0.5; 4], 2, 2, long));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.png");
        assert!(heatmap_png(&p, &img, &[0.5; 3], 2, 2, "").is_err());
        let empty = Gray {
            width: 0,
            height: 0,
            data: vec![],
        };
        assert!(heatmap_png(&p, &empty, &[0.5; 4], 2, 2, "").is_err());
    }

    /// Renders the example set into /tmp/plots-demo (run by hand:
    /// `cargo test -p pipe --lib evaluate::plots -- --ignored`), to look at.
    #[test]
    #[ignore]
    fn demo() {
        let dir = Path::new("/tmp/plots-demo");
        std::fs::create_dir_all(dir.join("gradcam")).unwrap();
        let names = [
            "chest_wall",
            "cardiomegaly",
            "pleural_effusion",
            "pneumothorax",
            "fracture",
        ];
        let shape = [2.6, 4.0, 6.5, 1.4, 9.0];
        let realistic: Vec<Curve> = names
            .iter()
            .zip(shape)
            .enumerate()
            .map(|(k, (name, a))| {
                // A binormal-ish curve with a little staircase noise, as real ROCs have.
                let mut points = vec![(0.0, 0.0)];
                let n = 60 + 10 * k;
                for i in 1..=n {
                    let x = i as f64 / n as f64;
                    let jitter = (((i * 7919 + k * 104729) % 17) as f64 / 17.0 - 0.5) * 0.02;
                    let y = (1.0 - (1.0 - x).powf(a)).clamp(0.0, 1.0);
                    points.push((x, (y + jitter).clamp(points.last().unwrap().1, 1.0)));
                }
                let auc = a / (a + 1.0);
                Curve {
                    label: name.to_string(),
                    points,
                    auc: Some(auc),
                    auc_ci: Some((auc - 0.03, (auc + 0.025).min(1.0))),
                }
            })
            .collect();
        roc_png(&dir.join("roc.png"), "ROC — test part, 1,240 images", &realistic).unwrap();
        let hist: Vec<HistoryPoint> = (0..20)
            .map(|i| {
                let t = i as f64;
                HistoryPoint {
                    step: 250 * (i + 1),
                    train_loss: Some(0.62 * (-t / 6.0).exp() + 0.12),
                    val_loss: 0.55 * (-t / 5.0).exp() + 0.18 + 0.004 * t,
                    val_macro_f1: 0.72 - 0.45 * (-t / 4.0).exp(),
                    val_macro_auc: Some(0.93 - 0.3 * (-t / 3.5).exp()),
                }
            })
            .collect();
        history_png(&dir.join("history.png"), "training — densenet-tiny", &hist, Some(3500)).unwrap();
        history_png(&dir.join("history-one.png"), "one validation", &hist[..1], Some(250)).unwrap();
        let img = chest(512, 512);
        heatmap_png(
            &dir.join("gradcam/cam-1.png"),
            &img,
            &blob(14, 0.58, 0.62),
            14,
            14,
            "1.2.840.113619.2.55.3.604688119.868.1234567890.123: cardiomegaly p=0.93 (label 1)",
        )
        .unwrap();
        heatmap_png(
            &dir.join("gradcam/cam-2.png"),
            &chest(400, 500),
            &blob(7, 0.25, 0.8),
            7,
            7,
            "1.2.840.5.6.7: pleural_effusion p=0.41 (label 0)",
        )
        .unwrap();
        let row = |label: &str, auc: f64| crate::evaluate::report::Row {
            label: label.to_string(),
            threshold: (label != "macro").then_some(0.42),
            auc: Some((auc, auc - 0.03, auc + 0.025)),
            f1: (0.71, 0.66, 0.75),
            sensitivity: (0.8, 0.74, 0.86),
            specificity: (0.9, 0.88, 0.92),
            precision: (0.64, 0.58, 0.7),
            accuracy: (0.88, 0.86, 0.9),
            average_precision: Some(auc - 0.35),
            ece: 0.042,
            support: 1240,
            positives: 97,
        };
        use crate::evaluate::report::{ConfusionMatrix, FunnelStep, SplitTable};
        let pr: Vec<PrCurve> = realistic
            .iter()
            .enumerate()
            .map(|(k, c)| PrCurve {
                label: c.label.clone(),
                points: (1..=40)
                    .map(|i| {
                        let r = i as f64 / 40.0;
                        (r, (0.95 - 0.6 * r.powf(1.5 + k as f64 * 0.3)).max(0.05))
                    })
                    .collect(),
                average_precision: Some(0.7 - 0.08 * k as f64),
                prevalence: 0.05 + 0.04 * k as f64,
            })
            .collect();
        pr_png(&dir.join("pr.png"), "Precision–recall on test (1,240 images)", &pr).unwrap();
        let rel: Vec<Reliability> = realistic
            .iter()
            .enumerate()
            .map(|(k, c)| Reliability {
                label: c.label.clone(),
                points: (0..10)
                    .map(|b| {
                        let x = 0.05 + b as f64 / 10.0;
                        (x, (x + 0.05 * (k as f64 - 2.0) * x * (1.0 - x) * 4.0).clamp(0.0, 1.0))
                    })
                    .collect(),
                ece: 0.02 + 0.01 * k as f64,
            })
            .collect();
        calibration_png(&dir.join("calibration.png"), "Reliability on test (1,240 images)", &rel).unwrap();
        let step = |step: &str, count: u64, source: &str| FunnelStep {
            step: step.into(),
            count,
            source: source.into(),
        };
        let html = crate::evaluate::report::report_html(&crate::evaluate::report::Report {
            title: "evaluate `eval`: `train` (densenet-tiny)".into(),
            subtitle: "1240 images of part `test`, best checkpoint".into(),
            warnings: vec!["Optimistic numbers: the scored part `validation` also chose the best checkpoint (train's validation part). They overstate what the model will do on new patients; this was asked for with score_tuned_part: true.".into()],
            funnel: vec![
                step("PACS files", 12376, "collect.dicoms + collect.rejects"),
                step("readable DICOM", 12301, "collect.dicoms"),
                step("PA chest", 10847, "filter.kept"),
                step("matched to a report", 10002, "match.pairs"),
                step("labelled", 10002, "label.labels"),
                step("converted images", 9998, "convert.images"),
                step("in the split (labelled, with an image)", 9998, "split.split"),
                step("part train", 6999, "split.split"),
                step("part validation", 1000, "split.split"),
                step("part test", 1999, "split.split"),
            ],
            split: Some(SplitTable {
                parts: vec!["train".into(), "validation".into(), "test".into(), "all".into()],
                patients: vec![5210, 744, 1489, 7443],
                images: vec![6999, 1000, 1999, 9998],
                positives: names.iter().map(|n| (n.to_string(), vec![350, 50, 100, 500])).collect(),
            }),
            confusion: names
                .iter()
                .map(|n| ConfusionMatrix {
                    label: n.to_string(),
                    threshold: 0.42,
                    tp: 80,
                    fp: 41,
                    tn: 1102,
                    fn_: 17,
                })
                .collect(),
            provenance: vec![
                ("pipe version".into(), "0.1.0".into()),
                ("cache key".into(), "3f2a…".into()),
                ("input split.split".into(), "9998 rows, content 8e1f0c7d2b9a4e6f8e1f0c7d2b9a4e6f8e1f0c7d2b9a4e6f8e1f0c7d2b9a4e6f, entry 1a2b3c4d5e6f70811a2b3c4d5e6f70811a2b3c4d5e6f70811a2b3c4d5e6f7081".into()),
                ("params".into(), "{\n  \"bootstrap\": 3000,\n  \"part\": \"test\"\n}".into()),
            ],
            rows: names
                .iter()
                .zip(&realistic)
                .map(|(n, c)| row(n, c.auc.unwrap()))
                .chain([row("macro", 0.81)])
                .collect(),
            images: vec![
                ("roc.png".into(), "ROC curves per class".into()),
                ("pr.png".into(), "Precision–recall curves".into()),
                ("calibration.png".into(), "Reliability diagram".into()),
                ("gradcam/cam-1.png".into(), "cardiomegaly".into()),
                ("gradcam/cam-2.png".into(), "pleural effusion".into()),
                ("history.png".into(), "training curves of `train`".into()),
            ],
            notes: vec!["95% intervals: bootstrap, 3000 replicates, seed 0".into()],
        });
        std::fs::write(dir.join("report.html"), html).unwrap();
    }
}
