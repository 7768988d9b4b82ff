//! `tipedge eval --plot`: one PNG with four panels — the confusion matrix, the α/β accuracy
//! surface, the reliability diagram and the reject option's accuracy / coverage — drawn with
//! plotters into an RGB buffer (bundled font, no system fonts) and saved as PNG.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use tipedge::train::calibration::CalibrationMetrics;
use tipedge::train::evaluate::{EvalCalibration, Surface};
use tipedge::train::metrics::Metrics;

const FONT: &[u8] = include_bytes!("fonts/DejaVuSansMono.ttf");
const FAMILY: &str = "tipedge-mono";
const W: u32 = 1280;
const H: u32 = 1280;

/// Viridis, sampled at nine points and interpolated.
fn colour(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 45, 123),
        (59, 82, 139),
        (44, 114, 142),
        (33, 145, 140),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    } * 8.0;
    let i = (t.floor() as usize).min(7);
    let f = t - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}

/// Writes the report PNG to `path`.
pub fn draw_report(
    path: &Path,
    classes: &[String],
    metrics: &Metrics,
    method: &str,
    surface: &Surface,
    calibration: &EvalCalibration,
) -> anyhow::Result<()> {
    // Registering twice is harmless; the font is ours, so failing to parse it is a bug.
    register_font(FAMILY, FontStyle::Normal, FONT).map_err(|_| err("bundled font unreadable"))?;
    let mut buf = vec![255u8; (W * H * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(H / 2);
        let (left, right) = top.split_horizontally(W / 2);
        confusion(&left, classes, metrics, method)?;
        alpha_beta(&right, surface)?;
        let (left, right) = bottom.split_horizontally(W / 2);
        reliability(&left, calibration, method)?;
        reject_option(&right, calibration)?;
        root.present().map_err(err)?;
    }
    let img = image::RgbImage::from_raw(W, H, buf).ok_or_else(|| err("buffer size"))?;
    img.save(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot write the plot: {e}", path.display()))
}

fn text_style(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

fn confusion<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    classes: &[String],
    m: &Metrics,
    method: &str,
) -> anyhow::Result<()> {
    let n = classes.len().max(1);
    area.draw_text(
        &format!(
            "confusion, {method}: top-1 {:.1}% of {}",
            m.top1, m.n_images
        ),
        &text_style(18),
        (20, 14),
    )
    .map_err(err)?;
    let (x0, y0, size) = (190i32, 90i32, 400i32);
    let cell = size as f64 / n as f64;
    let labels = n <= 24;
    for (t, row) in m.confusion.iter().enumerate() {
        let total: u32 = row.iter().sum::<u32>().max(1);
        for (p, &v) in row.iter().enumerate() {
            let frac = v as f64 / total as f64;
            let (ax, ay) = (x0 + (p as f64 * cell) as i32, y0 + (t as f64 * cell) as i32);
            let (bx, by) = (
                x0 + ((p + 1) as f64 * cell) as i32,
                y0 + ((t + 1) as f64 * cell) as i32,
            );
            area.draw(&Rectangle::new([(ax, ay), (bx, by)], colour(frac).filled()))
                .map_err(err)?;
            if n <= 12 {
                let c = if frac > 0.6 { BLACK } else { WHITE };
                area.draw_text(
                    &v.to_string(),
                    &(FAMILY, 16).into_font().color(&c),
                    (
                        (ax + bx) / 2 - 4 * v.to_string().len() as i32,
                        (ay + by) / 2 - 8,
                    ),
                )
                .map_err(err)?;
            }
        }
        if labels {
            let name: String = classes[t].chars().take(22).collect();
            area.draw_text(
                &name,
                &text_style(13),
                (
                    x0 - 8 - 8 * name.chars().count() as i32,
                    y0 + ((t as f64 + 0.5) * cell) as i32 - 7,
                ),
            )
            .map_err(err)?;
        }
    }
    if labels {
        for (p, name) in classes.iter().enumerate() {
            let name: String = name.chars().take(10).collect();
            area.draw_text(
                &name,
                &text_style(12),
                (
                    x0 + ((p as f64 + 0.5) * cell) as i32 - 4 * name.chars().count() as i32,
                    y0 + size + 6,
                ),
            )
            .map_err(err)?;
        }
    }
    area.draw_text(
        "true class (rows) / predicted (columns); colour = share of the row",
        &text_style(12),
        (20, y0 + size + 40),
    )
    .map_err(err)?;
    Ok(())
}

fn alpha_beta<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    s: &Surface,
) -> anyhow::Result<()> {
    let acc = &s.accuracy;
    let (nb, na) = (acc.grid.betas.len(), acc.grid.alphas.len());
    let values: Vec<f64> = (0..nb)
        .flat_map(|ib| (0..na).map(move |ia| (ib, ia)))
        .map(|(ib, ia)| acc.accuracy(ib, ia))
        .collect();
    let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let span = if hi > lo { hi - lo } else { 1.0 };
    area.draw_text(
        &format!("top-1 over the α/β grid on this split: {lo:.1}% .. {hi:.1}%"),
        &text_style(18),
        (20, 14),
    )
    .map_err(err)?;
    let (x0, y0, w, h) = (70i32, 90i32, 440i32, 400i32);
    let cw = w as f64 / nb.max(1) as f64;
    let ch = h as f64 / na.max(1) as f64;
    for ib in 0..nb {
        for ia in 0..na {
            let v = (acc.accuracy(ib, ia) - lo) / span;
            // α grows upwards.
            let (ax, bx) = (
                x0 + (ib as f64 * cw) as i32,
                x0 + ((ib + 1) as f64 * cw) as i32,
            );
            let (ay, by) = (
                y0 + h - ((ia + 1) as f64 * ch) as i32,
                y0 + h - (ia as f64 * ch) as i32,
            );
            area.draw(&Rectangle::new(
                [(ax, ay), (bx.max(ax + 1), by)],
                colour(v).filled(),
            ))
            .map_err(err)?;
        }
    }
    // The pack's α/β, placed by value on the grid's linear axes.
    let pos = |v: f32, list: &[f32]| -> f64 {
        let (a, b) = (list[0] as f64, *list.last().unwrap_or(&list[0]) as f64);
        let step = if list.len() > 1 {
            (b - a) / (list.len() - 1) as f64
        } else {
            1.0
        };
        ((v as f64 - a) / step + 0.5) / list.len() as f64
    };
    let (alpha, beta) = s.chosen;
    let mx = x0 + (pos(beta, &acc.grid.betas) * w as f64) as i32;
    let my = y0 + h - (pos(alpha, &acc.grid.alphas) * h as f64) as i32;
    area.draw(&Circle::new(
        (mx, my),
        7,
        ShapeStyle::from(&RED).stroke_width(3),
    ))
    .map_err(err)?;
    let t = text_style(13);
    let fmt = |v: f32| format!("{v:.2}");
    area.draw_text(
        &format!("β {}", fmt(acc.grid.betas[0])),
        &t,
        (x0, y0 + h + 6),
    )
    .map_err(err)?;
    area.draw_text(
        &fmt(*acc.grid.betas.last().unwrap_or(&0.0)),
        &t,
        (x0 + w - 36, y0 + h + 6),
    )
    .map_err(err)?;
    area.draw_text("β →", &t, (x0 + w / 2 - 14, y0 + h + 6))
        .map_err(err)?;
    area.draw_text(
        &format!("α {}", fmt(*acc.grid.alphas.last().unwrap_or(&0.0))),
        &t,
        (x0 - 62, y0),
    )
    .map_err(err)?;
    area.draw_text(&fmt(acc.grid.alphas[0]), &t, (x0 - 40, y0 + h - 14))
        .map_err(err)?;
    area.draw_text(
        &format!("red circle: the pack's α = {alpha:.3}, β = {beta:.3} (chosen on validation)"),
        &t,
        (20, y0 + h + 40),
    )
    .map_err(err)?;
    // Colour bar.
    let (cx, cw2) = (x0 + w + 30, 18);
    for i in 0..h {
        let v = 1.0 - i as f64 / h as f64;
        area.draw(&Rectangle::new(
            [(cx, y0 + i), (cx + cw2, y0 + i + 1)],
            colour(v).filled(),
        ))
        .map_err(err)?;
    }
    area.draw_text(&format!("{hi:.1}%"), &t, (cx - 4, y0 - 20))
        .map_err(err)?;
    area.draw_text(&format!("{lo:.1}%"), &t, (cx - 4, y0 + h + 6))
        .map_err(err)?;
    Ok(())
}

/// The plot box of the two lower panels, in the panel's pixels: x0, y0, width, height.
const BOX: (i32, i32, i32, i32) = (80, 90, 440, 400);

/// A point of the unit square in the plot box (y grows upwards).
fn at(x: f64, y: f64) -> (i32, i32) {
    let (x0, y0, w, h) = BOX;
    (
        x0 + (x.clamp(0.0, 1.0) * w as f64).round() as i32,
        y0 + h - (y.clamp(0.0, 1.0) * h as f64).round() as i32,
    )
}

/// The unit square's frame, a light grid every 0.2 and its tick labels.
fn unit_axes<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x_name: &str,
    y_name: &str,
) -> anyhow::Result<()> {
    let (x0, y0, w, h) = BOX;
    let t = text_style(13);
    let grid = RGBColor(225, 225, 225);
    for i in 0..=5 {
        let v = i as f64 / 5.0;
        area.draw(&PathElement::new(vec![at(v, 0.0), at(v, 1.0)], grid))
            .map_err(err)?;
        area.draw(&PathElement::new(vec![at(0.0, v), at(1.0, v)], grid))
            .map_err(err)?;
        let (x, _) = at(v, 0.0);
        area.draw_text(&format!("{v:.1}"), &t, (x - 12, y0 + h + 6))
            .map_err(err)?;
        let (_, y) = at(0.0, v);
        area.draw_text(&format!("{v:.1}"), &t, (x0 - 34, y - 7))
            .map_err(err)?;
    }
    area.draw(&Rectangle::new([(x0, y0), (x0 + w, y0 + h)], BLACK))
        .map_err(err)?;
    area.draw_text(
        x_name,
        &t,
        (x0 + w / 2 - 4 * x_name.chars().count() as i32, y0 + h + 24),
    )
    .map_err(err)?;
    area.draw_text(y_name, &t, (x0 - 70, y0 - 24))
        .map_err(err)?;
    Ok(())
}

/// Reliability diagram: per confidence bin, the accuracy of its images (bars), before the
/// temperature (grey outlines) and after (filled); a calibrated model's bars meet the diagonal.
fn reliability<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    c: &EvalCalibration,
    method: &str,
) -> anyhow::Result<()> {
    let title = match &c.calibrated {
        Some(m) => format!(
            "reliability, {method}: ECE {:.3} → {:.3} with T = {:.3e}",
            c.uncalibrated.ece,
            m.ece,
            c.temperature.unwrap_or(1.0)
        ),
        None => format!(
            "reliability, {method}: ECE {:.3} (no temperature in the pack)",
            c.uncalibrated.ece
        ),
    };
    area.draw_text(&title, &text_style(18), (20, 14))
        .map_err(err)?;
    unit_axes(area, "confidence (top-1 probability)", "accuracy")?;
    let bars = |m: &CalibrationMetrics, style: ShapeStyle, inset: f64| -> anyhow::Result<()> {
        for b in m.bins.iter().filter(|b| b.count > 0) {
            let w = b.upper - b.lower;
            let (a, z) = (
                at(b.lower + inset * w, b.accuracy),
                at(b.upper - inset * w, 0.0),
            );
            area.draw(&Rectangle::new([a, z], style)).map_err(err)?;
        }
        Ok(())
    };
    let after = RGBColor(44, 114, 142);
    if let Some(m) = &c.calibrated {
        bars(m, after.mix(0.85).filled(), 0.08)?;
        bars(
            &c.uncalibrated,
            ShapeStyle::from(&RGBColor(120, 120, 120)).stroke_width(2),
            0.0,
        )?;
    } else {
        bars(
            &c.uncalibrated,
            RGBColor(120, 120, 120).mix(0.8).filled(),
            0.08,
        )?;
    }
    area.draw(&PathElement::new(
        vec![at(0.0, 0.0), at(1.0, 1.0)],
        ShapeStyle::from(&RED).stroke_width(2),
    ))
    .map_err(err)?;
    let (_, y0, _, h) = BOX;
    let legend = if c.calibrated.is_some() {
        "grey outline: softmax(z); filled: softmax(z / T); red: perfect calibration"
    } else {
        "bars: softmax(z) (uncalibrated); red: perfect calibration"
    };
    area.draw_text(legend, &text_style(12), (20, y0 + h + 48))
        .map_err(err)?;
    let in_use = c.in_use();
    area.draw_text(
        &format!(
            "NLL {:.4}, Brier {:.4} (15 bins, {} images)",
            in_use.nll,
            in_use.brier,
            in_use.bins.iter().map(|b| b.count).sum::<usize>()
        ),
        &text_style(12),
        (20, y0 + h + 66),
    )
    .map_err(err)?;
    Ok(())
}

/// The reject option: accuracy among the accepted images and the share accepted (coverage)
/// against the --min-prob threshold.
fn reject_option<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    c: &EvalCalibration,
) -> anyhow::Result<()> {
    area.draw_text(
        "reject option: --min-prob P, below it \"unknown\"",
        &text_style(18),
        (20, 14),
    )
    .map_err(err)?;
    unit_axes(area, "--min-prob P", "share")?;
    let accuracy = RGBColor(44, 114, 142);
    let coverage = RGBColor(230, 130, 20);
    let line = |points: Vec<(i32, i32)>, colour: RGBColor| -> anyhow::Result<()> {
        for &p in &points {
            area.draw(&Circle::new(p, 4, colour.filled()))
                .map_err(err)?;
        }
        area.draw(&PathElement::new(
            points,
            ShapeStyle::from(&colour).stroke_width(3),
        ))
        .map_err(err)?;
        Ok(())
    };
    line(
        c.coverage
            .iter()
            .filter(|p| p.accepted > 0)
            .map(|p| at(p.min_prob, p.accuracy))
            .collect(),
        accuracy,
    )?;
    line(
        c.coverage
            .iter()
            .map(|p| at(p.min_prob, p.coverage))
            .collect(),
        coverage,
    )?;
    let (_, y0, _, h) = BOX;
    area.draw_text(
        "blue: accuracy of the accepted images; orange: share accepted (coverage)",
        &text_style(12),
        (20, y0 + h + 48),
    )
    .map_err(err)?;
    area.draw_text(
        if c.calibrated.is_some() {
            "probabilities as classify prints them: softmax(z / T)"
        } else {
            "probabilities as classify prints them: softmax(z) (no temperature)"
        },
        &text_style(12),
        (20, y0 + h + 66),
    )
    .map_err(err)?;
    Ok(())
}
