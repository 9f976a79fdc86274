//! `curves.svg`: a run's epochs at a glance (train loss, validation top-1/top-5, learning rate,
//! soft-mask rate), as a self-contained SVG that any browser shows. Drawn by hand: four line
//! charts do not need a plotting library.

use crate::run::EpochLog;
use std::fmt::Write;

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 240.0;
const MARGIN: f64 = 48.0;

struct Series<'a> {
    label: &'a str,
    colour: &'a str,
    points: Vec<(f64, f64)>,
}

/// The SVG for `logs` (one point per epoch).
pub fn svg(logs: &[EpochLog]) -> String {
    let x = |l: &EpochLog| l.epoch as f64;
    let series = |label, colour, f: &dyn Fn(&EpochLog) -> Option<f64>| Series {
        label,
        colour,
        points: logs
            .iter()
            .filter_map(|l| f(l).filter(|v| v.is_finite()).map(|v| (x(l), v)))
            .collect(),
    };
    let panels = [
        (
            "train loss",
            vec![series("train loss", "#1f77b4", &|l| Some(l.train_loss))],
        ),
        (
            "validation accuracy (%)",
            vec![
                series("top-1", "#d62728", &|l| l.test_acc1),
                series("top-5", "#2ca02c", &|l| l.test_acc5),
                series("top-1 EMA", "#ff7f0e", &|l| l.test_acc1_ema),
            ],
        ),
        (
            "learning rate",
            vec![series("lr", "#9467bd", &|l| Some(l.train_lr))],
        ),
        (
            "soft-mask rate",
            vec![series("soft mask", "#8c564b", &|l| {
                Some(l.train_soft_mask_rate)
            })],
        ),
    ];
    let (w, h) = (2.0 * PANEL_W, 2.0 * PANEL_H);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    for (i, (title, lines)) in panels.iter().enumerate() {
        let (ox, oy) = ((i % 2) as f64 * PANEL_W, (i / 2) as f64 * PANEL_H);
        panel(&mut out, ox, oy, title, lines);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, ox: f64, oy: f64, title: &str, lines: &[Series<'_>]) {
    let (left, top) = (ox + MARGIN, oy + 28.0);
    let (width, height) = (PANEL_W - MARGIN - 16.0, PANEL_H - 28.0 - 32.0);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="13" font-weight="bold">{title}</text>"#,
        left,
        oy + 18.0
    );
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#999"/>"##
    );
    let all: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    if all.is_empty() {
        return;
    }
    let (mut x0, mut x1) = bounds(all.iter().map(|p| p.0));
    let (mut y0, mut y1) = bounds(all.iter().map(|p| p.1));
    if x1 <= x0 {
        (x0, x1) = (x0 - 0.5, x0 + 0.5);
    }
    if y1 <= y0 {
        let pad = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.1 };
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    let px = |x: f64| left + (x - x0) / (x1 - x0) * width;
    let py = |y: f64| top + height - (y - y0) / (y1 - y0) * height;
    for (v, anchor_y) in [(y1, top + 4.0), (y0, top + height)] {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{anchor_y}" text-anchor="end">{}</text>"#,
            left - 4.0,
            number(v)
        );
    }
    for (v, anchor) in [(x0, "start"), (x1, "end")] {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="{anchor}">epoch {}</text>"#,
            px(v),
            top + height + 14.0,
            v
        );
    }
    for (k, s) in lines
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.points.is_empty())
    {
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            s.colour,
            path.join(" ")
        );
        if s.points.len() == 1 {
            let (x, y) = s.points[0];
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{}"/>"#,
                px(x),
                py(y),
                s.colour
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" fill="{}">{}</text>"#,
            left + 6.0 + 90.0 * k as f64,
            top + 14.0,
            s.colour,
            s.label
        );
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

fn number(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(epoch: u64, loss: f64, acc1: Option<f64>) -> EpochLog {
        EpochLog {
            train_lr: 1e-3 * (epoch + 1) as f64,
            train_min_lr: 1e-3,
            train_loss: loss,
            train_class_acc: None,
            train_weight_decay: 0.05,
            train_drop_path: None,
            train_soft_mask_rate: 1.0,
            test_loss: None,
            test_acc1: acc1,
            test_acc5: acc1.map(|a| a + 10.0),
            epoch,
            n_parameters: 10,
            test_loss_ema: None,
            test_acc1_ema: None,
            test_acc5_ema: None,
        }
    }

    #[test]
    fn every_epoch_becomes_a_point_of_each_curve() {
        let logs = [
            line(0, 2.0, Some(30.0)),
            line(1, 1.5, Some(50.0)),
            line(2, 1.2, Some(60.0)),
        ];
        let svg = svg(&logs);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // loss, top-1, top-5, lr, soft mask: five polylines of three points each.
        let polylines: Vec<&str> = svg.lines().filter(|l| l.contains("<polyline")).collect();
        assert_eq!(polylines.len(), 5, "{svg}");
        for p in polylines {
            let points = p.split("points=\"").nth(1).unwrap();
            assert_eq!(points.trim_end_matches("\"/>").split(' ').count(), 3);
        }
        // The falling loss is drawn falling (SVG y grows downwards).
        let loss = svg
            .lines()
            .find(|l| l.contains("#1f77b4") && l.contains("polyline"));
        let ys: Vec<f64> = loss
            .unwrap()
            .split("points=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches("\"/>")
            .split(' ')
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(ys[0] < ys[1] && ys[1] < ys[2], "{ys:?}");
    }

    #[test]
    fn a_run_without_evaluation_draws_empty_accuracy_axes() {
        let svg = svg(&[line(0, 2.0, None)]);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("validation accuracy"));
    }
}
