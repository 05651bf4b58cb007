//! The figure against the log it was drawn from: `ghm-plot` is run on logs written here (and,
//! when `GHM_PLOT_CHECK_LOG` names one, on that log too: CI's YOLO-style training run), and
//! its SVG is read back: one bar per non-empty bin and chosen iteration, each bar's height the
//! bin's count through the log axis (whose decade labels must be evenly spaced), the weights'
//! points, the heatmap's cells; then the errors, the PNG and the progress bar.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The per-iteration colours of the figure (`plot::ITER_COLORS`), as the SVG writes them.
const ITER_FILLS: [&str; 6] = [
    "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B",
];
/// The counts axis' floor (`plot::COUNT_FLOOR`).
const COUNT_FLOOR: f64 = 0.5;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ghm-plot")
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("figure");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn plot(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// One record of the log, as `ghm_log_stats` writes it.
struct Rec {
    iter: u64,
    tag: String,
    g_max: f64,
    counts: Vec<u64>,
    weights: Vec<f64>,
}

impl Rec {
    fn line(&self) -> String {
        let m = self.counts.len();
        let edges: Vec<String> = (0..=m)
            .map(|k| {
                let e = if k == m {
                    self.g_max as f32
                } else {
                    k as f32 / m as f32 * self.g_max as f32
                };
                format!("{e:?}")
            })
            .collect();
        let counts: Vec<String> = self.counts.iter().map(|c| c.to_string()).collect();
        let weights: Vec<String> = self
            .weights
            .iter()
            .map(|w| format!("{:?}", *w as f32))
            .collect();
        let nonempty = self.counts.iter().filter(|&&c| c > 0).count();
        let tot: u64 = self.counts.iter().sum();
        format!(
            "{{\"v\":1,\"iter\":{},\"tag\":\"{}\",\"bins\":{m},\"g_max\":{:?},\"edges\":[{}],\"counts\":[{}],\"weights\":[{}],\"nonempty\":{nonempty},\"tot\":{tot}.0,\"skipped\":0,\"loss\":0.5}}",
            self.iter,
            self.tag,
            self.g_max as f32,
            edges.join(","),
            counts.join(","),
            weights.join(",")
        )
    }
}

/// Reads a log back (the fields the check needs), with serde_json as an independent reader.
fn read_log(path: &Path) -> Vec<Rec> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let nums = |k: &str| -> Vec<f64> {
                v[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap_or(0.0))
                    .collect()
            };
            Rec {
                iter: v["iter"].as_u64().unwrap(),
                tag: v["tag"].as_str().unwrap().to_string(),
                g_max: v["g_max"].as_f64().unwrap(),
                counts: v["counts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_u64().unwrap())
                    .collect(),
                weights: nums("weights"),
            }
        })
        .collect()
}

/// The attributes of every `<name ...>` element, and the text of `<text>` elements.
fn elements(svg: &str, name: &str) -> Vec<(HashMap<String, String>, String)> {
    let open = format!("<{name} ");
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let end = rest.find('>').unwrap();
        let mut attrs = HashMap::new();
        let mut a = &rest[..end];
        while let Some(eq) = a.find("=\"") {
            let key = a[..eq].trim().to_string();
            let after = &a[eq + 2..];
            let close = after.find('"').unwrap();
            attrs.insert(key, after[..close].to_string());
            a = &after[close + 1..];
        }
        let text = if name == "text" {
            let body = &rest[end + 1..];
            body[..body.find("</text>").unwrap()].trim().to_string()
        } else {
            String::new()
        };
        out.push((attrs, text));
    }
    out
}

fn f(a: &HashMap<String, String>, k: &str) -> f64 {
    a[k].parse().unwrap()
}

/// Least squares `y = a + b x`; returns `(a, b, largest residual)`.
fn fit(p: &[(f64, f64)]) -> (f64, f64, f64) {
    let n = p.len() as f64;
    let (sx, sy) = p.iter().fold((0.0, 0.0), |(a, b), q| (a + q.0, b + q.1));
    let (mx, my) = (sx / n, sy / n);
    let sxy: f64 = p.iter().map(|q| (q.0 - mx) * (q.1 - my)).sum();
    let sxx: f64 = p.iter().map(|q| (q.0 - mx) * (q.0 - mx)).sum();
    let b = sxy / sxx;
    let a = my - b * mx;
    let r = p
        .iter()
        .map(|q| (a + b * q.0 - q.1).abs())
        .fold(0.0, f64::max);
    (a, b, r)
}

/// Checks the SVG `svg` (of size `w` x `h`) against `run` (the records of its tag) with the
/// records `picks` in detail. Returns the largest bar-height error in pixels.
fn check_svg(svg: &str, (w, h): (f64, f64), run: &[&Rec], picks: &[usize]) -> f64 {
    let in_panel = |a: &HashMap<String, String>, px: usize, py: usize| {
        let (x, y) = (f(a, "x"), f(a, "y"));
        (x >= px as f64 * w / 2.0 && x < (px + 1) as f64 * w / 2.0)
            && (y >= py as f64 * h / 2.0 && y < (py + 1) as f64 * h / 2.0)
    };
    let texts = elements(svg, "text");
    // The counts axis of the density chart (top left): its decade labels, right-aligned.
    let ticks: Vec<(f64, f64)> = texts
        .iter()
        .filter(|(a, _)| in_panel(a, 0, 0) && a.get("text-anchor").is_some_and(|t| t == "end"))
        .filter_map(|(a, t)| {
            let v: f64 = t.parse().ok()?;
            Some((v.log10(), f(a, "y")))
        })
        .collect();
    assert!(
        ticks.len() >= 2,
        "fewer than two labels on the counts axis: {ticks:?}"
    );
    let (a, b, resid) = fit(&ticks);
    assert!(
        b < -20.0,
        "the counts axis does not go up: {b} px per decade"
    );
    assert!(
        resid <= 1.0,
        "the counts axis is not logarithmic: residual {resid} px, {ticks:?}"
    );
    for t in &ticks {
        assert!(
            (t.0 - t.0.round()).abs() < 1e-9,
            "a label that is not a power of ten: {t:?}"
        );
    }
    let y_of = |c: f64| a + b * c.log10();
    // The g axis: its labels 0.0 ... g_max under the chart.
    let g_max = run[0].g_max;
    let gt: Vec<(f64, f64)> = texts
        .iter()
        .filter(|(a, _)| in_panel(a, 0, 0) && a.get("text-anchor").is_some_and(|t| t == "middle"))
        .filter_map(|(a, t)| Some((t.parse::<f64>().ok()?, f(a, "x"))))
        .filter(|p| p.0 <= g_max)
        .collect();
    let (ga, gb, gr) = fit(&gt);
    assert!(gt.len() >= 3 && gr <= 1.0 && gb > 0.0, "the g axis: {gt:?}");
    let x_of = |g: f64| ga + gb * g;
    let rects = elements(svg, "rect");
    let mut worst: f64 = 0.0;
    for (j, &p) in picks.iter().enumerate() {
        let r = run[p];
        let mut bars: Vec<&HashMap<String, String>> = rects
            .iter()
            .map(|(a, _)| a)
            .filter(|a| a["fill"] == ITER_FILLS[j] && in_panel(a, 0, 0))
            .collect();
        bars.sort_by(|a, b| f(a, "x").total_cmp(&f(b, "x")));
        let bins: Vec<usize> = (0..r.counts.len()).filter(|&k| r.counts[k] > 0).collect();
        assert_eq!(
            bars.len(),
            bins.len(),
            "iteration {}: bars and non-empty bins",
            r.iter
        );
        let m = r.counts.len() as f64;
        for (bar, &k) in bars.iter().zip(&bins) {
            // In its bin, horizontally.
            let (x0, x1) = (x_of(k as f64 / m * g_max), x_of((k + 1) as f64 / m * g_max));
            let (bx, bw) = (f(bar, "x"), f(bar, "width"));
            assert!(
                bx >= x0 - 1.0 && bx + bw <= x1 + 1.0,
                "bin {k}: bar at {bx}+{bw}, bin {x0}..{x1}"
            );
            // From the floor up to its count.
            let (top, bottom) = (f(bar, "y"), f(bar, "y") + f(bar, "height"));
            let c = r.counts[k] as f64;
            let (e_top, e_bottom) = ((top - y_of(c)).abs(), (bottom - y_of(COUNT_FLOOR)).abs());
            assert!(
                e_top <= 1.5 && e_bottom <= 1.5,
                "iteration {} bin {k}: count {c}, bar {top}..{bottom}, axis {}..{}",
                r.iter,
                y_of(c),
                y_of(COUNT_FLOOR)
            );
            worst = worst.max(e_top);
        }
        // Its legend entry.
        assert!(texts
            .iter()
            .any(|(_, t)| *t == format!("iteration {}", r.iter)));
        // The weights chart (top right): one point per bin of positive weight.
        let points = elements(svg, "circle")
            .into_iter()
            .filter(|(a, _)| {
                a["fill"] == ITER_FILLS[j] && f(a, "cx") >= w / 2.0 && f(a, "cy") < h / 2.0
            })
            .count();
        let positive = r.weights.iter().filter(|&&x| x > 0.0).count();
        assert_eq!(points, positive, "iteration {}: weight points", r.iter);
    }
    // The heatmap (bottom left): one cell per record and bin, and the colour bar's 64.
    let cells = rects.iter().filter(|(a, _)| in_panel(a, 0, 1)).count();
    let bins = run[0].counts.len();
    assert_eq!(
        cells,
        run.len() * bins + 64,
        "heatmap: cells, want {} x {bins} + 64",
        run.len()
    );
    worst
}

fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (be(16), be(20))
}

/// A synthetic run: `n` records of `bins` bins, counts spread over many decades.
fn synthetic(n: usize, bins: usize, tags: &[&str]) -> Vec<Rec> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut out = Vec::new();
    for i in 0..n {
        for tag in tags {
            let counts: Vec<u64> = (0..bins)
                .map(|k| match next() % 5 {
                    0 => 0,
                    1 => 1 + next() % 3,
                    _ => 10u64.pow(((bins - k) * 6 / bins) as u32) + next() % 1000,
                })
                .collect();
            let nonempty = counts.iter().filter(|&&c| c > 0).count() as f64;
            let tot: u64 = counts.iter().sum();
            let weights = counts
                .iter()
                .map(|&c| {
                    if c > 0 {
                        tot as f64 / (c as f64 * nonempty)
                    } else {
                        0.0
                    }
                })
                .collect();
            out.push(Rec {
                iter: 10 * i as u64 + 5,
                tag: tag.to_string(),
                g_max: 1.0,
                counts,
                weights,
            });
        }
    }
    out
}

fn write_log(name: &str, recs: &[Rec]) -> PathBuf {
    let p = scratch(name);
    let text: Vec<String> = recs.iter().map(Rec::line).collect();
    std::fs::write(&p, text.join("\n") + "\n").unwrap();
    p
}

fn check_file(log: &Path, tag: Option<&str>, iters: Option<&[u64]>, name: &str) -> f64 {
    let recs = read_log(log);
    let tag = tag.map_or(recs[0].tag.clone(), str::to_string);
    let run: Vec<&Rec> = recs.iter().filter(|r| r.tag == tag).collect();
    let picks: Vec<usize> = match iters {
        Some(list) => list
            .iter()
            .map(|i| run.iter().position(|r| r.iter == *i).unwrap())
            .collect(),
        None => {
            let mut p = vec![0, run.len() / 2, run.len() - 1];
            p.dedup();
            p
        }
    };
    let svg = scratch(&format!("{name}.svg"));
    let mut args = vec![
        log.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
        "--tag",
        &tag,
    ];
    let list;
    if let Some(l) = iters {
        list = l
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        args.extend(["--iters", &list]);
    }
    let o = plot(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&svg).unwrap();
    check_svg(&text, (1400.0, 1000.0), &run, &picks)
}

#[test]
fn the_figure_is_the_log() {
    for (bins, n) in [(30, 40), (10, 1), (1, 3), (128, 5), (7, 2)] {
        let recs = synthetic(n, bins, &["obj", "cls"]);
        let log = write_log(&format!("synthetic-{bins}-{n}.jsonl"), &recs);
        check_file(&log, None, None, &format!("synthetic-{bins}-{n}"));
        check_file(
            &log,
            Some("cls"),
            None,
            &format!("synthetic-{bins}-{n}-cls"),
        );
    }
    let recs = synthetic(12, 20, &["a"]);
    let log = write_log("iters.jsonl", &recs);
    check_file(&log, None, Some(&[15, 5, 115, 65]), "iters");
}

/// CI's training run: `GHM_PLOT_CHECK_LOG` names the log of the YOLO-style example.
#[test]
fn the_figure_of_a_real_run_is_its_log() {
    let Some(log) = std::env::var_os("GHM_PLOT_CHECK_LOG") else {
        eprintln!("GHM_PLOT_CHECK_LOG not set: only the synthetic logs are checked");
        return;
    };
    let log = PathBuf::from(log);
    let recs = read_log(&log);
    let mut tags: Vec<String> = recs.iter().map(|r| r.tag.clone()).collect();
    tags.sort();
    tags.dedup();
    for (i, tag) in tags.iter().enumerate() {
        let worst = check_file(&log, Some(tag), None, &format!("real-{i}"));
        println!(
            "{}: \"{tag}\" checked, largest bar error {worst:.2} px",
            log.display()
        );
    }
}

#[test]
fn png_has_the_asked_size() {
    let recs = synthetic(8, 16, &["obj"]);
    let log = write_log("png.jsonl", &recs);
    let png = scratch("figure.png");
    let o = plot(&[
        log.to_str().unwrap(),
        "-o",
        png.to_str().unwrap(),
        "--size",
        "900x700",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(png_size(&png), (900, 700));
}

#[test]
fn bad_logs_name_their_line() {
    let good = synthetic(3, 5, &["obj"]);
    let g = |i: usize| good[i].line();
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "no records"),
        ("\n\n".into(), "no records"),
        (format!("{}\nnot json\n", g(0)), "line 2: not JSON"),
        (
            format!("{}\n{}\n[1,2]\n", g(0), g(1)),
            "line 3: not a JSON object",
        ),
        (
            g(0).replace("\"v\":1", "\"v\":2"),
            "line 1: schema version 2",
        ),
        (
            g(0).replace("\"bins\":5", "\"bins\":6"),
            "line 1: \"edges\" has 6 entries, not 7",
        ),
        (
            g(0).replace("\"bins\":5", "\"bins\":0"),
            "line 1: \"bins\" is 0",
        ),
        (
            format!(
                "{}\n{}",
                g(0),
                g(1).replace("\"counts\":[", "\"counts\":[-")
            ),
            "line 2: \"counts\" holds",
        ),
        (
            g(0).replace("\"g_max\":1.0", "\"g_max\":0.0"),
            "line 1: \"g_max\" is not a positive number",
        ),
        (g(0).replace(",\"iter\":5", ""), "line 1: no \"iter\" field"),
        (
            g(0).replace("\"tag\":\"obj\"", "\"tag\":3"),
            "line 1: \"tag\" is not a string",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = scratch(&format!("bad-{i}.jsonl"));
        std::fs::write(&p, text).unwrap();
        let o = plot(&[
            p.to_str().unwrap(),
            "-o",
            scratch("bad.svg").to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{want}: {err}");
        assert!(err.contains(want), "want \"{want}\" in: {err}");
    }
    let p = write_log("tags.jsonl", &good);
    for (args, want) in [
        (vec!["--tag", "nope"], "no line has the tag \"nope\""),
        (vec!["--iters", "6"], "has no iteration 6"),
        (vec!["-o", "x.pdf"], "must end in .svg or .png"),
    ] {
        let mut a = vec![p.to_str().unwrap()];
        let out = scratch("t.svg");
        if args[0] != "-o" {
            a.extend(["-o", out.to_str().unwrap()]);
        }
        a.extend(args);
        let o = plot(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{want}: {err}");
        assert!(err.contains(want), "want \"{want}\" in: {err}");
    }
    for (args, want) in [
        (vec![], "no log file given"),
        (vec!["a", "b"], "a second log file"),
        (vec!["a", "--size", "10x10"], "--size 10x10"),
        (vec!["a", "--bogus"], "unknown option --bogus"),
    ] {
        let o = plot(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{want}: {err}");
        assert!(
            err.contains(want) && err.contains("usage:"),
            "want \"{want}\" in: {err}"
        );
    }
}

#[test]
fn long_logs_show_progress() {
    let recs = synthetic(2500, 4, &["obj", "cls"]);
    let log = write_log("long.jsonl", &recs);
    let o = plot(&[
        log.to_str().unwrap(),
        "-o",
        scratch("long.svg").to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("reading the log [") && err.contains("100% (5000/5000 lines)"),
        "{err}"
    );
    let short = write_log("short.jsonl", &recs[..100]);
    let o = plot(&[
        short.to_str().unwrap(),
        "-o",
        scratch("short.svg").to_str().unwrap(),
    ]);
    assert!(o.status.success() && o.stderr.is_empty());
}
