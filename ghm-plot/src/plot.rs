//! The figure: four charts of one loss (tag) of a training log.
//!
//! - top left, the paper's Fig. 1: the density of `g`, elements per bin on a log scale, for a
//!   few iterations (grouped bars, one colour per iteration);
//! - top right: the harmonizing weight `w_k` per bin for the same iterations;
//! - bottom left: the whole run, iteration x bin, coloured by elements per bin (log scale),
//!   with its colour bar;
//! - bottom right, the paper's Fig. 2 for the last of those iterations: each bin's total
//!   gradient contribution, `count x g` under plain CE, `count x g x g^2` under focal loss
//!   (gamma 2: its modulating factor `(1 - p_t)^gamma` is `g^gamma`), and `count x w_k x g`
//!   under GHM-C, with `g` taken at the bin's centre.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::log::Record;

/// The colours of the chosen iterations (bars, weight lines), in order.
pub const ITER_COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The colours of the bottom-right chart: CE, focal loss, GHM-C.
const LOSS_COLORS: [RGBColor; 3] = [
    RGBColor(90, 90, 90),
    RGBColor(230, 85, 13),
    RGBColor(49, 130, 189),
];

/// The bottom of the log axis of counts: below 1, so that a bin of one element shows.
pub const COUNT_FLOOR: f64 = 0.5;

const FONT: &str = "sans-serif";

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A count as a tick label: `1`, `10`, `100`, `1000`, then `1e4`, `1e5`...
fn count_label(v: f64) -> String {
    if v >= 1e4 {
        format!("1e{}", v.log10().round() as i32)
    } else if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Whether `v` is a power of ten (a tick worth a label on a log axis).
fn decade(v: f64) -> bool {
    let l = v.log10();
    (l - l.round()).abs() < 1e-9
}

/// The smallest power of ten at or above `v` (at least 10).
fn decade_above(v: f64) -> f64 {
    10f64.powf(v.max(10.0).log10().ceil())
}

/// Viridis, approximately: `t` in `[0, 1]`.
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = t.clamp(0.0, 1.0) * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Draws the figure of `run` (every record of one tag, in order), with the records `picks`
/// (indices into `run`) in the per-iteration charts.
pub fn figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    run: &[&Record],
    picks: &[usize],
    tag: &str,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    let title = format!(
        "GHM gradient density: \"{tag}\", {} iterations ({} to {}), {} bins",
        run.len(),
        run[0].iter,
        run[run.len() - 1].iter,
        run[0].bins()
    );
    let root = root.titled(&title, (FONT, 24).into_font()).map_err(err)?;
    let panels = root.split_evenly((2, 2));
    density(&panels[0], run, picks)?;
    weights(&panels[1], run, picks)?;
    heatmap(&panels[2], run)?;
    contribution(&panels[3], run[*picks.last().unwrap_or(&0)])?;
    root.present().map_err(err)
}

fn density<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    run: &[&Record],
    picks: &[usize],
) -> Result<(), String> {
    let g_max = run[picks[0]].g_max;
    let top = picks
        .iter()
        .flat_map(|&p| run[p].counts.iter())
        .fold(1u64, |m, &c| m.max(c)) as f64;
    let mut ch = log_chart(
        area,
        "Density of g: elements per bin",
        g_max,
        (COUNT_FLOOR, decade_above(top)),
        (
            "gradient norm g (|p - t| for GHM-C)",
            "elements per bin (log scale)",
        ),
        &|v| {
            if decade(*v) {
                count_label(*v)
            } else {
                String::new()
            }
        },
    )?;
    let groups = picks.len() as f64;
    for (j, &p) in picks.iter().enumerate() {
        let r = run[p];
        let color = ITER_COLORS[j % ITER_COLORS.len()];
        let bars = r
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(k, &c)| {
                let w = (r.edges[k + 1].min(r.g_max) - r.edges[k]) / groups;
                let x0 = r.edges[k] + w * j as f64;
                Rectangle::new([(x0, COUNT_FLOOR), (x0 + w, c as f64)], color.filled())
            });
        ch.draw_series(bars)
            .map_err(err)?
            .label(format!("iteration {}", r.iter))
            .legend(move |(x, y)| Circle::new((x + 6, y), 5, color.filled()));
    }
    legend(&mut ch, SeriesLabelPosition::UpperRight)
}

fn weights<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    run: &[&Record],
    picks: &[usize],
) -> Result<(), String> {
    let g_max = run[picks[0]].g_max;
    let ws = picks
        .iter()
        .flat_map(|&p| run[p].weights.iter().copied())
        .filter(|w| *w > 0.0);
    let (lo, hi) = ws.fold((f64::INFINITY, 0f64), |(l, h), w| (l.min(w), h.max(w)));
    let (lo, hi) = if hi > 0.0 {
        (lo / 2.0, hi * 2.0)
    } else {
        (0.1, 10.0)
    };
    let mut ch = log_chart(
        area,
        "Harmonizing weight w_k per bin",
        g_max,
        (lo, hi),
        (
            "gradient norm g (bin centre)",
            "w_k (log scale; 1 = unweighted)",
        ),
        &|v| format!("{v:.3}"),
    )?;
    for (j, &p) in picks.iter().enumerate() {
        let r = run[p];
        let pts: Vec<(f64, f64)> = (0..r.bins())
            .filter(|&k| r.weights[k] > 0.0)
            .map(|k| (r.centre(k).min(g_max), r.weights[k]))
            .collect();
        let color = ITER_COLORS[j % ITER_COLORS.len()];
        line_with_points(&mut ch, pts, color, format!("iteration {}", r.iter))?;
    }
    // The weights rise with g: the lower right is free.
    legend(&mut ch, SeriesLabelPosition::LowerRight)
}

fn heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    run: &[&Record],
) -> Result<(), String> {
    let (w, _) = area.dim_in_pixel();
    let (map, bar) = area.split_horizontally(w.saturating_sub(130));
    let first = run[0].iter as f64;
    let last = run[run.len() - 1].iter as f64;
    let span = if last > first { last - first } else { 1.0 };
    // Each record's column reaches to the next record's iteration (the last one, one step).
    let step = span / (run.len().max(2) - 1) as f64;
    let g_max = run[0].g_max;
    let top = run
        .iter()
        .flat_map(|r| r.counts.iter())
        .fold(1u64, |m, &c| m.max(c)) as f64;
    // A count's place on the colour scale: log10(count) / log10(largest), in [0, 1].
    let scale = |c: f64| (c.log10() / top.log10().max(1e-9)).clamp(0.0, 1.0);
    let mut ch = ChartBuilder::on(&map)
        .caption("The whole run: elements per bin", (FONT, 20))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(first..last + step, 0f64..g_max)
        .map_err(err)?;
    ch.configure_mesh()
        .disable_mesh()
        .x_desc("iteration")
        .y_desc("gradient norm g")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(err)?;
    let cells = run.iter().enumerate().flat_map(|(i, r)| {
        let x0 = r.iter as f64;
        let x1 = run.get(i + 1).map_or(x0 + step, |n| n.iter as f64);
        (0..r.bins()).map(move |k| {
            let c = r.counts[k];
            let color = if c == 0 {
                RGBColor(245, 245, 245)
            } else {
                viridis(scale(c as f64))
            };
            let y1 = r.edges[k + 1].min(g_max);
            Rectangle::new([(x0, r.edges[k]), (x1, y1)], color.filled())
        })
    });
    ch.draw_series(cells).map_err(err)?;
    // The colour bar: the same scale, counts 1 to the largest.
    let mut cb = ChartBuilder::on(&bar)
        .margin_top(44)
        .margin_bottom(60)
        .margin_right(8)
        .y_label_area_size(62)
        .build_cartesian_2d(0f64..1f64, (1f64..top.max(10.0)).log_scale())
        .map_err(err)?;
    cb.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc("elements per bin")
        .y_label_formatter(&|v| {
            if decade(*v) {
                count_label(*v)
            } else {
                String::new()
            }
        })
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(err)?;
    let n = 64;
    let ratio = top.max(10.0);
    cb.draw_series((0..n).map(|i| {
        let (a, b) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
        let (ya, yb) = (ratio.powf(a), ratio.powf(b));
        Rectangle::new([(0.0, ya), (1.0, yb)], viridis(scale(ya)).filled())
    }))
    .map_err(err)?;
    Ok(())
}

fn contribution<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    r: &Record,
) -> Result<(), String> {
    let series: [(&str, Vec<(f64, f64)>); 3] = [
        ("plain CE: count x g", per_bin(r, |_, g| g)),
        (
            "focal loss (gamma 2): count x g^3",
            per_bin(r, |_, g| g * g * g),
        ),
        (
            "GHM-C: count x w_k x g",
            per_bin(r, |k, g| r.weights[k] * g),
        ),
    ];
    let all = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1));
    let (lo, hi) = all
        .filter(|v| *v > 0.0)
        .fold((f64::INFINITY, 0f64), |(l, h), v| (l.min(v), h.max(v)));
    let (lo, hi) = if hi > 0.0 {
        (10f64.powf(lo.log10().floor()), decade_above(hi))
    } else {
        (0.1, 10.0)
    };
    let mut ch = log_chart(
        area,
        &format!("Gradient contribution per bin, iteration {}", r.iter),
        r.g_max,
        (lo, hi),
        (
            "gradient norm g (bin centre)",
            "sum of gradient norms in the bin (log scale)",
        ),
        &|v| {
            if decade(*v) {
                format!("{v:e}")
            } else {
                String::new()
            }
        },
    )?;
    for (i, (name, pts)) in series.into_iter().enumerate() {
        line_with_points(&mut ch, pts, LOSS_COLORS[i], name.to_string())?;
    }
    legend(&mut ch, SeriesLabelPosition::UpperRight)
}

/// A chart of `g` in `[0, g_max]` (x) against a log-scale y axis over `y`, its mesh drawn
/// with the axes' descriptions `desc` and the y labels of `y_label`.
fn log_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    g_max: f64,
    y: (f64, f64),
    desc: (&str, &str),
    y_label: &dyn Fn(&f64) -> String,
) -> Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, LogCoord<f64>>>, String> {
    let mut ch = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..g_max, (y.0..y.1).log_scale())
        .map_err(err)?;
    ch.configure_mesh()
        .disable_x_mesh()
        .x_desc(desc.0)
        .y_desc(desc.1)
        .y_label_formatter(y_label)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(err)?;
    Ok(ch)
}

/// A line through `pts` with a dot on each, in the legend as `label`.
fn line_with_points<'a, DB: DrawingBackend + 'a>(
    ch: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, LogCoord<f64>>>,
    pts: Vec<(f64, f64)>,
    color: RGBColor,
    label: String,
) -> Result<(), String> {
    ch.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
        .map_err(err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2)));
    ch.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
        .map_err(err)?;
    Ok(())
}

/// `(centre, count x f(k, centre))` of every non-empty bin with a positive value.
fn per_bin(r: &Record, f: impl Fn(usize, f64) -> f64) -> Vec<(f64, f64)> {
    (0..r.bins())
        .filter(|&k| r.counts[k] > 0)
        .map(|k| {
            let g = r.centre(k).min(r.g_max);
            (g, r.counts[k] as f64 * f(k, g))
        })
        .filter(|p| p.1 > 0.0)
        .collect()
}

/// The chart's legend, at `at`.
fn legend<'a, DB: DrawingBackend + 'a, X, Y>(
    ch: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    at: SeriesLabelPosition,
) -> Result<(), String>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    ch.configure_series_labels()
        .position(at)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}
