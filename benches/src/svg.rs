//! Charts for `docs/benchmarks.md`, written as SVG by hand: grouped bars
//! with a min–max whisker on each. No plotting dependency, and the files
//! diff as text.

use std::fmt::Write as _;

/// One series of a chart: a name, and per group (min, median, max).
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// One (min, median, max) per group, in the chart's group order.
    pub values: Vec<(f64, f64, f64)>,
}

/// A grouped bar chart.
pub struct BarChart {
    /// Above the chart.
    pub title: String,
    /// What the y axis counts.
    pub y_label: String,
    /// The groups along the x axis.
    pub groups: Vec<String>,
    /// The bars of each group.
    pub series: Vec<Series>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 380.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 100.0;
/// Colour-blind-safe (Okabe–Ito).
const COLOURS: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];

impl BarChart {
    /// The chart as an SVG document.
    pub fn render(&self) -> String {
        let top_value = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().map(|v| v.2))
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        let (scale_max, step) = nice_axis(top_value);
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let y = |v: f64| TOP + plot_h - (v / scale_max).clamp(0.0, 1.0) * plot_h;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            svg,
            r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        // Grid lines and y labels.
        let mut tick = 0.0;
        while tick <= scale_max * 1.0001 {
            let ty = y(tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                ty + 4.0,
                short_number(tick)
            );
            tick += step;
        }
        let _ = writeln!(
            svg,
            r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + plot_h / 2.0,
            escape(&self.y_label)
        );
        // Bars.
        let groups = self.groups.len().max(1) as f64;
        let group_w = plot_w / groups;
        let bars = self.series.len().max(1) as f64;
        let bar_w = group_w * 0.8 / bars;
        for (g, group) in self.groups.iter().enumerate() {
            let gx = LEFT + g as f64 * group_w;
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                gx + group_w / 2.0,
                TOP + plot_h + 18.0,
                escape(group)
            );
            for (s, series) in self.series.iter().enumerate() {
                let Some(&(min, median, max)) = series.values.get(g) else {
                    continue;
                };
                if !median.is_finite() {
                    continue;
                }
                let colour = COLOURS[s % COLOURS.len()];
                let x = gx + group_w * 0.1 + s as f64 * bar_w;
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}: {}</title></rect>"#,
                    y(median),
                    bar_w * 0.9,
                    (TOP + plot_h - y(median)).max(0.0),
                    escape(&series.name),
                    short_number(median)
                );
                let cx = x + bar_w * 0.45;
                let _ = writeln!(
                    svg,
                    r##"<line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" stroke="#333"/>"##,
                    y(min),
                    y(max)
                );
            }
        }
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
            TOP + plot_h,
            WIDTH - RIGHT,
            TOP + plot_h
        );
        // Legend, in rows of up to three.
        for (s, series) in self.series.iter().enumerate() {
            let lx = LEFT + (s % 3) as f64 * (plot_w / 3.0);
            let ly = HEIGHT - BOTTOM + 42.0 + (s / 3) as f64 * 18.0;
            let colour = COLOURS[s % COLOURS.len()];
            let _ = writeln!(
                svg,
                r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                ly - 10.0,
                lx + 16.0,
                ly,
                escape(&series.name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// An axis top at or above `max` and a round step, at most about six ticks.
fn nice_axis(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.2);
    }
    let raw_step = max / 6.0;
    let magnitude = 10f64.powf(raw_step.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw_step)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// 1234567 → "1.23M", 45000 → "45k", 0.5 → "0.5".
fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.3}M", v / 1e6)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3).replace(".0k", "k")
    } else if a >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_round_and_cover_the_data() {
        assert_eq!(nice_axis(130_000.0), (150_000.0, 25_000.0));
        assert_eq!(nice_axis(7.3), (8.0, 2.0));
        let (top, _) = nice_axis(0.0);
        assert!(top > 0.0);
    }

    #[test]
    fn a_chart_has_a_bar_per_value_and_escapes_names() {
        let chart = BarChart {
            title: "a < b".into(),
            y_label: "req/s".into(),
            groups: vec!["1".into(), "16".into()],
            series: vec![
                Series {
                    name: "x & y".into(),
                    values: vec![(1.0, 2.0, 3.0), (2.0, 3.0, 4.0)],
                },
                Series {
                    name: "z".into(),
                    values: vec![(1.0, 1.5, 2.0), (f64::NAN, f64::NAN, f64::NAN)],
                },
            ],
        };
        let svg = chart.render();
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains("a &lt; b") && svg.contains("x &amp; y"));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
