//! Results: the summary table (stdout), `results/SCENARIO.json` and `results/SCENARIO.svg`.

use anyhow::Context;
use plotters::prelude::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// One line of the summary table.
pub struct Row {
    pub metric: String,
    pub bazaar: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub verdict: &'static str,
}

impl Row {
    pub fn new(metric: &str, bazaar: String, baseline: String) -> Self {
        Self { metric: metric.into(), bazaar, baseline, ratio: String::new(), target: String::new(), verdict: "" }
    }

    /// A row judged by `met`, showing `ratio` and `target`.
    pub fn judged(mut self, ratio: String, target: &str, met: bool) -> Self {
        self.ratio = ratio;
        self.target = target.into();
        self.verdict = if met { "met" } else { "MISSED" };
        self
    }

    pub fn json(&self) -> Value {
        json!({"metric": self.metric, "bazaar": self.bazaar, "baseline": self.baseline, "ratio": self.ratio,
               "target": self.target, "verdict": self.verdict})
    }
}

/// Prints the summary table of a scenario on stdout.
pub fn print_table(scenario: &str, rows: &[Row], notes: &[String]) {
    let headers = ["metric", "bazaar", "baseline", "ratio", "target", ""];
    let cells: Vec<[&str; 6]> =
        rows.iter().map(|r| [r.metric.as_str(), &r.bazaar, &r.baseline, &r.ratio, &r.target, r.verdict]).collect();
    let mut widths = headers.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let parts: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("| {} |", parts.join(" | "))
    };
    println!();
    println!("== {scenario} ==");
    println!("{}", line(headers));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for row in cells {
        println!("{}", line(row));
    }
    for note in notes {
        println!("  note: {note}");
    }
}

/// Writes `results/SCENARIO.json` with the run's context around `body`.
pub fn write_json(
    dir: &Path,
    scenario: &str,
    started: chrono::DateTime<chrono::Utc>,
    body: Value,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut doc = json!({
        "scenario": scenario,
        "commandLine": std::env::args().collect::<Vec<_>>().join(" "),
        "startedAt": started.to_rfc3339(),
        "finishedAt": chrono::Utc::now().to_rfc3339(),
        "machine": crate::sys::machine(),
    });
    if let (Some(doc), Value::Object(body)) = (doc.as_object_mut(), body) {
        doc.extend(body);
    }
    let path = dir.join(format!("{scenario}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    Ok(path)
}

/// A line series of a plot.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// How the x axis is drawn.
pub enum XAxis {
    /// Linear, with this caption.
    Linear(String),
    /// Percentiles drawn as "nines" (50, 90, 99, 99.9 ... evenly spaced).
    Percentile,
}

/// x for a percentile (0..100) on the "nines" axis: -log10(1 - p).
pub fn nines(percentile: f64) -> f64 {
    let p = (percentile / 100.0).min(0.999_999);
    -(1.0 - p).log10()
}

/// Writes an SVG line plot.
pub fn write_svg(path: &Path, title: &str, x: XAxis, y_caption: &str, series: &[Series]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    let transformed: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter(|(_, y)| y.is_finite())
                .map(|&(px, py)| (if matches!(x, XAxis::Percentile) { nines(px) } else { px }, py))
                .collect()
        })
        .collect();
    let all = transformed.iter().flatten();
    let x_max = all.clone().map(|p| p.0).fold(0.0f64, f64::max).max(1e-9);
    let y_max = all.map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    let x_caption = match &x {
        XAxis::Linear(c) => c.clone(),
        XAxis::Percentile => "percentile".into(),
    };
    let percentile_axis = matches!(x, XAxis::Percentile);
    let format_x = move |v: &f64| {
        if percentile_axis {
            let p = 100.0 * (1.0 - 10f64.powf(-v));
            format!("{p:.3}").trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            format!("{v:.0}")
        }
    };
    chart
        .configure_mesh()
        .x_desc(x_caption)
        .y_desc(y_caption)
        .x_label_formatter(&format_x)
        .draw()
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    let colours = [RED, BLUE, GREEN, MAGENTA];
    for (i, (s, points)) in series.iter().zip(transformed).enumerate() {
        let colour = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("plot: {e}"))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    Ok(())
}

/// The latency percentile curve (ms) of a histogram, for [`write_svg`].
pub fn curve(label: &str, hist: &hdrhistogram::Histogram<u64>) -> Series {
    Series {
        label: label.into(),
        points: crate::load::CURVE.iter().map(|q| (q * 100.0, crate::load::ms(hist, *q))).collect(),
    }
}

pub fn fmt_rate(v: f64) -> String {
    format!("{v:.0}/s")
}

pub fn fmt_ms(v: f64) -> String {
    format!("{v:.2} ms")
}

pub fn fmt_bytes(v: f64) -> String {
    if v.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", v / (1024.0 * 1024.0))
    } else if v.abs() >= 1024.0 {
        format!("{:.2} KiB", v / 1024.0)
    } else {
        format!("{v:.0} B")
    }
}
