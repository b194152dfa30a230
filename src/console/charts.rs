//! Charts drawn on the server: the weekday x hour heatmap as an HTML table and small
//! line and bar charts as inline SVG, all through maud, so the console needs no
//! JavaScript and no chart library at run time.
//!
//! Hand-written rather than plotters: the pages need three plain chart shapes, plotters
//! would add a dozen crates to every build (font handling included), and its SVG output
//! could not carry the per-point `<title>` tooltips and classes the pages and their tests
//! rely on. Every drawn value also appears as text (a tooltip, and the tables next to
//! the charts), so nothing is readable only as a shape.

use maud::{html, Markup};

use super::report::{display, Heatmap, Unit, WEEKDAYS};

const WIDTH: f64 = 440.0;
const HEIGHT: f64 = 170.0;
/// Room for the axis labels.
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 12.0;
const RIGHT: f64 = 8.0;

/// The heat color of `n` out of `max`: from the console's dark panel to amber, in linear
/// steps (a count read off a cell should look twice as bright as half of it).
pub fn heat_color(n: u64, max: u64) -> String {
    let t = if max == 0 {
        0.0
    } else {
        (n as f64 / max as f64).clamp(0.0, 1.0)
    };
    let mix = |from: f64, to: f64| (from + (to - from) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(27.0, 255.0),
        mix(38.0, 183.0),
        mix(50.0, 3.0)
    )
}

/// The heatmap: one row per local weekday, one `heat-cell` per hour holding its count
/// (also in the cell's title), colored on one scale up to the busiest cell.
pub fn heatmap(h: &Heatmap) -> Markup {
    let max = h.max();
    html! {
        table.heatmap style="border-collapse:separate;border-spacing:2px" {
            caption { "Offered calls by weekday and hour (" (h.time_zone) "); brightest: " (max) }
            thead {
                tr {
                    th { "" }
                    @for hour in 0..24 { th scope="col" { (format!("{hour:02}")) } }
                }
            }
            tbody {
                @for (day, row) in WEEKDAYS.iter().zip(h.cells.iter()) {
                    tr {
                        th scope="row" { (day) }
                        @for (hour, n) in row.iter().enumerate() {
                            @let bright = max > 0 && *n * 2 > max;
                            td.heat-cell
                                data-weekday=(day) data-hour=(hour) data-calls=(n)
                                title=(format!("{day} {hour:02}:00: {n} calls"))
                                style=(format!(
                                    "background:{};color:{};min-width:2.2rem;height:1.8rem;text-align:center;font-size:.8rem",
                                    heat_color(*n, max),
                                    if bright { "#111" } else { "#e8eef4" }
                                )) {
                                @if *n > 0 { (n) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn fmt(x: f64) -> String {
    format!("{x:.1}")
}

/// The top of the value axis: shares end at 100%, other measures at their largest
/// value (at least 1, so an all-zero series still draws a flat line).
fn axis_max(unit: Unit, values: &[Option<f64>]) -> f64 {
    let top = values.iter().flatten().copied().fold(0.0, f64::max);
    match unit {
        Unit::Share if top <= 1.0 => 1.0,
        _ => {
            if top > 0.0 {
                top
            } else {
                1.0
            }
        }
    }
}

/// The bottom of the value axis: 0, or below it for a measure that goes negative (NPS).
fn axis_min(values: &[Option<f64>]) -> f64 {
    values.iter().flatten().copied().fold(0.0, f64::min)
}

struct Frame {
    lo: f64,
    hi: f64,
    n: usize,
}

impl Frame {
    fn x(&self, i: usize) -> f64 {
        let span = WIDTH - LEFT - RIGHT;
        LEFT + span * (i as f64 + 0.5) / self.n.max(1) as f64
    }
    fn slot(&self) -> f64 {
        (WIDTH - LEFT - RIGHT) / self.n.max(1) as f64
    }
    fn y(&self, v: f64) -> f64 {
        let span = HEIGHT - TOP - BOTTOM;
        let range = if self.hi > self.lo {
            self.hi - self.lo
        } else {
            1.0
        };
        TOP + span * (1.0 - (v - self.lo) / range)
    }
}

/// Axes, value labels and every few x labels: as many as fit side by side at the
/// 11-pixel font (about 6.5 pixels a character), so they never overlap.
fn axes(f: &Frame, unit: Unit, labels: &[String]) -> Markup {
    let widest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1) as f64;
    let fit = (((WIDTH - LEFT - RIGHT) / (widest * 6.5 + 8.0)).floor() as usize).max(1);
    let every = labels.len().div_ceil(fit).max(1);
    html! {
        line x1=(fmt(LEFT)) y1=(fmt(TOP)) x2=(fmt(LEFT)) y2=(fmt(HEIGHT - BOTTOM)) stroke="#93a4b5" {}
        line x1=(fmt(LEFT)) y1=(fmt(f.y(f.lo))) x2=(fmt(WIDTH - RIGHT)) y2=(fmt(f.y(f.lo))) stroke="#93a4b5" {}
        @if f.lo < 0.0 {
            line x1=(fmt(LEFT)) y1=(fmt(f.y(0.0))) x2=(fmt(WIDTH - RIGHT)) y2=(fmt(f.y(0.0))) stroke="#2a3947" {}
        }
        text x=(fmt(LEFT - 4.0)) y=(fmt(f.y(f.hi) + 4.0)) text-anchor="end" font-size="11" fill="currentColor" { (display(unit, Some(f.hi))) }
        text x=(fmt(LEFT - 4.0)) y=(fmt(f.y(f.lo))) text-anchor="end" font-size="11" fill="currentColor" { (display(unit, Some(f.lo))) }
        @for (i, label) in labels.iter().enumerate() {
            @if i % every == 0 {
                text x=(fmt(f.x(i))) y=(fmt(HEIGHT - 8.0)) text-anchor="middle" font-size="11" fill="currentColor" { (label) }
            }
        }
    }
}

/// A line chart of one measure over the report's intervals; intervals without a value
/// (nothing to divide by) break the line instead of dropping to zero.
pub fn line_chart(title: &str, unit: Unit, labels: &[String], values: &[Option<f64>]) -> Markup {
    let f = Frame {
        lo: axis_min(values),
        hi: axis_max(unit, values),
        n: values.len(),
    };
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => runs
                .last_mut()
                .expect("runs starts with one run")
                .push((f.x(i), f.y(*v))),
            None => runs.push(Vec::new()),
        }
    }
    html! {
        figure.chart style="margin:.5rem 0" {
            figcaption { (title) }
            svg.line-chart xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(title)
                viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT) {
                (axes(&f, unit, labels))
                @for run in runs.iter().filter(|r| !r.is_empty()) {
                    polyline fill="none" stroke="#4aa3ff" stroke-width="2"
                        points=(run.iter().map(|(x, y)| format!("{},{}", fmt(*x), fmt(*y))).collect::<Vec<_>>().join(" ")) {}
                }
                @for (i, v) in values.iter().enumerate() {
                    @if let Some(v) = v {
                        circle cx=(fmt(f.x(i))) cy=(fmt(f.y(*v))) r="3" fill="#4aa3ff" {
                            title { (labels.get(i).map_or("", |s| s.as_str())) ": " (display(unit, Some(*v))) }
                        }
                    }
                }
            }
        }
    }
}

/// A bar chart (for amounts that add up, such as hold time avoided or calls).
pub fn bar_chart(title: &str, unit: Unit, labels: &[String], values: &[Option<f64>]) -> Markup {
    let f = Frame {
        lo: axis_min(values),
        hi: axis_max(unit, values),
        n: values.len(),
    };
    let w = (f.slot() * 0.7).max(1.0);
    html! {
        figure.chart style="margin:.5rem 0" {
            figcaption { (title) }
            svg.bar-chart xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(title)
                viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT) {
                (axes(&f, unit, labels))
                @for (i, v) in values.iter().enumerate() {
                    @if let Some(v) = v {
                        @let (y0, y1) = (f.y(0.0), f.y(*v));
                        rect x=(fmt(f.x(i) - w / 2.0)) y=(fmt(y0.min(y1))) width=(fmt(w)) height=(fmt((y0 - y1).abs())) fill="#4aa3ff" {
                            title { (labels.get(i).map_or("", |s| s.as_str())) ": " (display(unit, Some(*v))) }
                        }
                    }
                }
            }
        }
    }
}

/// The color legend of the heatmap, as one small SVG gradient.
pub fn heat_legend(max: u64) -> Markup {
    html! {
        svg.heat-legend xmlns="http://www.w3.org/2000/svg" width="220" height="24" viewBox="0 0 220 24" {
            defs {
                linearGradient #heat-scale {
                    stop offset="0" stop-color=(heat_color(0, 1)) {}
                    stop offset="1" stop-color=(heat_color(1, 1)) {}
                }
            }
            rect x="30" y="4" width="160" height="12" fill="url(#heat-scale)" stroke="#93a4b5" {}
            text x="26" y="14" text-anchor="end" font-size="11" fill="currentColor" { "0" }
            text x="194" y="14" font-size="11" fill="currentColor" { (max) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn heat_colors_run_from_the_panel_to_amber() {
        assert_eq!(heat_color(0, 10), "#1b2632");
        assert_eq!(heat_color(10, 10), "#ffb703");
        assert_eq!(heat_color(0, 0), "#1b2632", "an empty map is all dark");
        assert_ne!(heat_color(5, 10), heat_color(6, 10));
    }

    #[test]
    fn heatmap_has_one_cell_per_weekday_and_hour_with_its_count() {
        let h = Heatmap::from_arrivals(&BTreeMap::from([((2, 15), 4), ((2, 16), 1)]), "UTC");
        let html = heatmap(&h).into_string();
        assert_eq!(html.matches("class=\"heat-cell\"").count(), 7 * 24);
        assert!(html.contains("title=\"Wed 15:00: 4 calls\""), "{html}");
        assert!(html.contains("data-calls=\"1\""));
        assert!(html.contains(&format!("background:{}", heat_color(4, 4))));
    }

    #[test]
    fn line_chart_breaks_where_there_is_no_value() {
        let labels: Vec<String> = (0..4).map(|i| format!("{i:02}")).collect();
        let svg = line_chart(
            "Service level",
            Unit::Share,
            &labels,
            &[Some(0.5), Some(0.75), None, Some(1.0)],
        )
        .into_string();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("01: 75.0%"));
        assert!(svg.contains("100.0%"), "shares are drawn up to 100%");
    }

    #[test]
    fn bar_chart_draws_negative_values_below_zero() {
        let labels = vec!["a".to_owned(), "b".to_owned()];
        let svg = bar_chart("NPS", Unit::Plain, &labels, &[Some(-20.0), Some(40.0)]).into_string();
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("a: -20.0"));
        assert!(!svg.contains("NaN"));
    }
}
