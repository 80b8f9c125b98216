//! Plots, as hand-written SVG: the latency distribution of one dependent
//! (a cumulative distribution on a logarithmic time axis, so the tail is as
//! readable as the body) and latency against fan-out. Each plot shows the
//! floor, kubexit and the Go kubexit measured in the same run, and the
//! targets drawn where they fall: a ratio to the floor's median.
//!
//! [`Chart`] is just enough of a plotting library for that: two scales,
//! grid lines with labels, lines, markers and a legend.

use std::fmt::Write as _;

use crate::latency::Fanout;
use crate::report::targets;
use crate::stats::{Summary, human_ns};

const RED: &str = "#c0392b";

/// Each subject's colour, and its nudge along a logarithmic x axis so that
/// whiskers at one fan-out do not hide each other.
fn style(key: &str) -> (&'static str, f64) {
    match key {
        "floor" => ("#2e8b57", 0.86),
        "go" => ("#d35400", 1.16),
        _ => ("#1f5fa8", 1.0),
    }
}

/// The cumulative distribution of the one-dependent latencies, one curve
/// per subject.
pub fn latency_cdf(one: &Fanout) -> String {
    let all: Vec<f64> = one
        .series
        .iter()
        .flat_map(|s| s.all.iter().map(|&ns| ns as f64 / 1e3))
        .collect();
    let (Some(first), Some(last)) = (
        all.iter().copied().reduce(f64::min),
        all.iter().copied().reduce(f64::max),
    ) else {
        return empty_plot("no latency samples");
    };
    let target_us = one
        .of("floor")
        .and_then(|f| Summary::of(&f.all))
        .map(|f| f.p50 as f64 / 1e3 * targets::LATENCY_VS_FLOOR);
    let low = nice_below(first.min(target_us.unwrap_or(first)));
    let high = nice_above(last.max(target_us.unwrap_or(last)));
    let runs = one.series.first().map_or(0, |s| s.all.len());
    let mut chart = Chart::new(
        &format!("Reaction latency, 1 dependent: cumulative distribution of {runs} runs each"),
        "latency from Died renamed into place to SIGTERM received (log scale)",
        "fraction of runs",
        Scale::Log(low, high),
        Scale::Linear(0.0, 1.0),
    );
    chart.x_grid(&log_ticks(low, high, micros_label));
    let fractions: Vec<(f64, String)> = (0..=10)
        .map(|i| (i as f64 / 10.0, format!("{:.1}", i as f64 / 10.0)))
        .collect();
    chart.y_grid(&fractions);
    let mut legend: Vec<(String, &str, Mark)> = Vec::new();
    for series in &one.series {
        let (color, _) = style(series.subject.key);
        let mut sorted: Vec<f64> = series.all.iter().map(|&ns| ns as f64 / 1e3).collect();
        sorted.sort_by(f64::total_cmp);
        if sorted.is_empty() {
            continue;
        }
        let n = sorted.len() as f64;
        let mut steps = Vec::with_capacity(sorted.len() * 2);
        for (i, &x) in sorted.iter().enumerate() {
            steps.push((x, i as f64 / n));
            steps.push((x, (i + 1) as f64 / n));
        }
        chart.line(&steps, color, 2.0, None);
        let median = sorted[((0.5 * n).ceil() as usize).clamp(1, sorted.len()) - 1];
        chart.marker(median, 0.5, Mark::Circle, color);
        legend.push((
            format!("{} (p50 {})", series.subject, human_ns(median * 1e3)),
            color,
            Mark::Line,
        ));
    }
    if let Some(target) = target_us {
        chart.vertical(target, RED, "target", 0.42);
        legend.push((
            format!("target: {:.2} × floor p50", targets::LATENCY_VS_FLOOR),
            RED,
            Mark::Dashed,
        ));
    }
    let entries: Vec<(&str, &str, Mark)> = legend
        .iter()
        .map(|(t, c, m)| (t.as_str(), *c, *m))
        .collect();
    chart.legend(&entries);
    chart.finish()
}

/// The worst dependent per run against fan-out, per subject: the median
/// run as a point, the best and worst runs as a whisker, and the targets.
pub fn fanout(latency: &[Fanout]) -> String {
    let ms = |ns: f64| ns / 1e6;
    let mut points: Vec<(&str, &str, usize, Summary)> = Vec::new();
    for fanout in latency {
        for series in &fanout.series {
            if let Some(summary) = Summary::of(&series.worst) {
                points.push((
                    series.subject.key,
                    series.subject.label,
                    fanout.dependents,
                    summary,
                ));
            }
        }
    }
    if points.is_empty() {
        return empty_plot("no fan-out samples");
    }
    let target_at = |fanout: &Fanout| {
        let floor = Summary::of(&fanout.of("floor")?.worst)?.p50 as f64;
        let times = if fanout.dependents == 1 {
            targets::LATENCY_VS_FLOOR
        } else if targets::FANOUTS.contains(&fanout.dependents) {
            targets::FANOUT_VS_FLOOR
        } else {
            return None;
        };
        Some((fanout.dependents as f64, floor * times))
    };
    let target_points: Vec<(f64, f64)> = latency.iter().filter_map(target_at).collect();
    let values = points
        .iter()
        .flat_map(|(_, _, _, s)| [s.min as f64, s.max as f64])
        .chain(target_points.iter().map(|(_, ns)| *ns));
    let (lowest, highest) = values.fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (low, high) = (nice_below(ms(lowest)), nice_above(ms(highest)));
    let widest = points
        .iter()
        .map(|(_, _, n, _)| *n as f64)
        .fold(10.0, f64::max);
    let mut chart = Chart::new(
        "Reaction latency against fan-out: worst dependent per run",
        "dependents of one death dependency (log scale)",
        "worst dependent's latency (log scale)",
        Scale::Log(0.5, widest * 2.0),
        Scale::Log(low, high),
    );
    let mut x_ticks: Vec<(f64, String)> = latency
        .iter()
        .map(|f| (f.dependents as f64, f.dependents.to_string()))
        .collect();
    x_ticks.dedup();
    chart.x_grid(&x_ticks);
    chart.y_grid(&log_ticks(low, high, millis_label));
    let mut legend: Vec<(String, &str, Mark)> = Vec::new();
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for (key, label, _, _) in &points {
        if !keys.iter().any(|(k, _)| k == key) {
            keys.push((key, label));
        }
    }
    for (key, label) in keys {
        let (color, nudge) = style(key);
        let mine: Vec<&(&str, &str, usize, Summary)> =
            points.iter().filter(|(k, ..)| *k == key).collect();
        let medians: Vec<(f64, f64)> = mine
            .iter()
            .map(|(_, _, n, s)| (*n as f64 * nudge, ms(s.p50 as f64)))
            .collect();
        chart.line(&medians, color, 1.5, None);
        for (_, _, n, s) in &mine {
            let x = *n as f64 * nudge;
            chart.line(
                &[(x, ms(s.min as f64)), (x, ms(s.max as f64))],
                color,
                1.0,
                None,
            );
            chart.marker(x, ms(s.p50 as f64), Mark::Circle, color);
        }
        legend.push((
            format!("{label}: median run (whisker: best to worst run)"),
            color,
            Mark::Circle,
        ));
    }
    for (x, ns) in &target_points {
        chart.marker(*x, ms(*ns), Mark::Bar, RED);
    }
    if !target_points.is_empty() {
        legend.push((
            format!(
                "target: {:.2} × floor (1 dependent), {:.2} × floor (fan-outs)",
                targets::LATENCY_VS_FLOOR,
                targets::FANOUT_VS_FLOOR
            ),
            RED,
            Mark::Bar,
        ));
    }
    let entries: Vec<(&str, &str, Mark)> = legend
        .iter()
        .map(|(t, c, m)| (t.as_str(), *c, *m))
        .collect();
    chart.legend(&entries);
    chart.finish()
}

fn micros_label(us: f64) -> String {
    if us >= 1000.0 {
        format!("{} ms", trim(us / 1000.0))
    } else {
        format!("{} µs", trim(us))
    }
}

fn millis_label(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", trim(ms / 1000.0))
    } else if ms < 1.0 {
        format!("{} µs", trim(ms * 1000.0))
    } else {
        format!("{} ms", trim(ms))
    }
}

fn trim(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The largest 1, 2 or 5 times a power of ten at or below `v`.
fn nice_below(v: f64) -> f64 {
    let decade = 10f64.powf(v.max(1e-9).log10().floor());
    [5.0, 2.0, 1.0]
        .into_iter()
        .map(|step| step * decade)
        .find(|&nice| nice <= v)
        .unwrap_or(decade)
}

/// The smallest 1, 2 or 5 times a power of ten above `v`.
fn nice_above(v: f64) -> f64 {
    let decade = 10f64.powf(v.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * decade)
        .find(|&nice| nice > v)
        .unwrap_or(decade * 10.0)
}

/// Ticks at 1, 2 and 5 of every decade between `low` and `high`, or at 1
/// and 3 when the axis spans so many decades that labels would overlap.
fn log_ticks(low: f64, high: f64, label: fn(f64) -> String) -> Vec<(f64, String)> {
    let steps: &[f64] = if (high / low).log10() > 2.5 {
        &[1.0, 3.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(low.log10().floor());
    while decade <= high * 1.0001 {
        for &step in steps {
            let v = decade * step;
            if v >= low * 0.9999 && v <= high * 1.0001 {
                ticks.push((v, label(v)));
            }
        }
        decade *= 10.0;
    }
    ticks
}

fn empty_plot(why: &str) -> String {
    let mut chart = Chart::new(
        why,
        "",
        "",
        Scale::Linear(0.0, 1.0),
        Scale::Linear(0.0, 1.0),
    );
    chart.y_grid(&[]);
    chart.finish()
}

/// How values map to the unit interval.
#[derive(Clone, Copy)]
pub enum Scale {
    Linear(f64, f64),
    Log(f64, f64),
}

impl Scale {
    fn unit(self, v: f64) -> f64 {
        match self {
            Scale::Linear(lo, hi) => (v - lo) / (hi - lo),
            Scale::Log(lo, hi) => (v.max(lo * 1e-3).ln() - lo.ln()) / (hi.ln() - lo.ln()),
        }
    }
}

/// How a series or reference is drawn, in the plot and its legend.
#[derive(Clone, Copy)]
pub enum Mark {
    Line,
    Dashed,
    Circle,
    Bar,
}

/// An SVG chart being drawn.
pub struct Chart {
    x: Scale,
    y: Scale,
    body: String,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 460.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;

impl Chart {
    pub fn new(title: &str, x_label: &str, y_label: &str, x: Scale, y: Scale) -> Chart {
        let mut body = String::new();
        let _ = write!(
            body,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>
<text x="{}" y="{}" text-anchor="middle">{}</text>
<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">{}</text>
"#,
            WIDTH / 2.0,
            escape(title),
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
            HEIGHT - 18.0,
            escape(x_label),
            TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
            escape(y_label),
        );
        Chart { x, y, body }
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + self.x.unit(x) * (WIDTH - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - self.y.unit(y) * (HEIGHT - TOP - BOTTOM)
    }

    pub fn x_grid(&mut self, ticks: &[(f64, String)]) {
        let (top, bottom) = (TOP, HEIGHT - BOTTOM);
        for (v, label) in ticks {
            let x = self.px(*v);
            let _ = writeln!(
                self.body,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#e0e0e0"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                bottom + 16.0,
                escape(label)
            );
        }
    }

    pub fn y_grid(&mut self, ticks: &[(f64, String)]) {
        let (left, right) = (LEFT, WIDTH - RIGHT);
        for (v, label) in ticks {
            let y = self.py(*v);
            let _ = writeln!(
                self.body,
                r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                left - 6.0,
                y + 4.0,
                escape(label)
            );
        }
        let _ = writeln!(
            self.body,
            r#"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="black"/>"#,
            WIDTH - LEFT - RIGHT,
            HEIGHT - TOP - BOTTOM
        );
    }

    pub fn line(&mut self, points: &[(f64, f64)], color: &str, width: f64, dash: Option<&str>) {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
            .collect();
        let dash = dash.map_or(String::new(), |d| format!(r#" stroke-dasharray="{d}""#));
        let _ = writeln!(
            self.body,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="{width}"{dash}/>"#,
            path.join(" ")
        );
    }

    /// A dashed vertical line across the plot, labelled at `height` (a
    /// fraction of the plot's height, so that labels do not overlap).
    pub fn vertical(&mut self, x: f64, color: &str, label: &str, height: f64) {
        let px = self.px(x);
        let label_y = TOP + height * (HEIGHT - TOP - BOTTOM);
        let _ = writeln!(
            self.body,
            r#"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{}" stroke="{color}" stroke-dasharray="5,4"/><text x="{:.1}" y="{label_y:.1}" fill="{color}">{}</text>"#,
            HEIGHT - BOTTOM,
            px + 4.0,
            escape(label)
        );
    }

    pub fn marker(&mut self, x: f64, y: f64, mark: Mark, color: &str) {
        let (px, py) = (self.px(x), self.py(y));
        draw_mark(&mut self.body, px, py, mark, color);
    }

    pub fn legend(&mut self, entries: &[(&str, &str, Mark)]) {
        for (i, (text, color, mark)) in entries.iter().enumerate() {
            let y = TOP + 16.0 + 18.0 * i as f64;
            let x = LEFT + 12.0;
            draw_mark(&mut self.body, x + 10.0, y - 4.0, *mark, color);
            let _ = writeln!(
                self.body,
                r#"<text x="{:.1}" y="{y:.1}">{}</text>"#,
                x + 28.0,
                escape(text)
            );
        }
    }

    pub fn finish(mut self) -> String {
        self.body.push_str("</svg>\n");
        self.body
    }
}

fn draw_mark(body: &mut String, x: f64, y: f64, mark: Mark, color: &str) {
    let _ = match mark {
        Mark::Line => writeln!(
            body,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"/>"#,
            x - 9.0,
            x + 9.0
        ),
        Mark::Dashed => writeln!(
            body,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-dasharray="5,4"/>"#,
            x - 9.0,
            x + 9.0
        ),
        Mark::Circle => writeln!(
            body,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{color}"/>"#
        ),
        Mark::Bar => writeln!(
            body,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="3"/>"#,
            x - 9.0,
            x + 9.0
        ),
    };
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
