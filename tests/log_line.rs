//! The training log line (`ghm::log`): what it writes is the statistics it was given, as JSON
//! that a JSON parser reads back exactly; the worst case fits `LOG_LINE_MAX`; every refusal
//! writes nothing.

mod common;

use common::Rng;
use ghm::log::{LogLine, LOG_LINE_MAX, LOG_TAG_MAX, LOG_VERSION};
use ghm::{Dense, Error, GhmC, Hist, Out, Stats, MAX_BINS};
use serde_json::Value;

fn parse(buf: &[u8], n: usize) -> Value {
    let text = std::str::from_utf8(&buf[..n]).expect("UTF-8");
    assert!(!text.contains(['\n', '\r']), "{text}");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn f32s(v: &Value) -> Vec<f32> {
    let a = v.as_array().expect("array");
    a.iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn u64s(v: &Value) -> Vec<u64> {
    let a = v.as_array().expect("array");
    a.iter().map(|x| x.as_u64().expect("integer")).collect()
}

/// A GHM-C call's statistics (30 bins, a skewed batch), the loss and the line.
fn call(n: usize, bins: u32) -> (Stats, f32) {
    let mut r = Rng(5);
    let x: Vec<f32> = (0..n).map(|_| r.normal() as f32 * 3.0).collect();
    let t: Vec<f32> = (0..n).map(|_| r.chance(0.1) as u32 as f32).collect();
    let mut stats = Stats::default();
    let ghm = GhmC {
        bins,
        ..GhmC::default()
    };
    let out = Out {
        stats: Some(&mut stats),
        ..Out::default()
    };
    let loss = ghm.loss_grad(None, &Dense::new(&x, &t), out).unwrap();
    (stats, loss)
}

#[test]
fn the_line_is_the_statistics() {
    for bins in [1, 2, 10, 30, 128] {
        let (stats, loss) = call(5000, bins);
        let tag = "yolo-82 \"obj\" \\ \u{1}\t é";
        let line = LogLine::from_stats(&stats, loss as f64, 4242, tag);
        let mut buf = vec![0u8; LOG_LINE_MAX];
        let n = line.write(&mut buf).unwrap();
        assert_eq!(n, line.len());
        assert!(n < LOG_LINE_MAX);
        let v = parse(&buf, n);
        assert_eq!(v["v"], LOG_VERSION);
        assert_eq!(v["iter"], 4242);
        assert_eq!(v["tag"], tag);
        assert_eq!(v["bins"], bins);
        assert_eq!(v["g_max"].as_f64(), Some(1.0));
        let m = bins as usize;
        let counts = u64s(&v["counts"]);
        assert_eq!(counts, stats.counts[..m]);
        assert_eq!(f32s(&v["weights"]), stats.weights[..m]);
        let edges = f32s(&v["edges"]);
        assert_eq!(edges.len(), m + 1);
        for (k, e) in edges.iter().enumerate() {
            let want = if k == m { 1.0 } else { k as f32 / m as f32 };
            assert_eq!(*e, want, "edge {k} of {m}");
        }
        assert_eq!(v["nonempty"], stats.nonempty_bins);
        assert_eq!(v["tot"].as_f64(), Some(stats.tot));
        assert_eq!(v["skipped"], stats.skipped);
        assert_eq!(v["loss"].as_f64().unwrap() as f32, loss);
        assert!(counts.iter().sum::<u64>() > 0);
    }
}

#[test]
fn the_phased_line_is_the_histogram_and_weights() {
    let mut r = Rng(9);
    let x: Vec<f32> = (0..777).map(|_| r.normal() as f32).collect();
    let t: Vec<f32> = (0..777).map(|_| r.chance(0.3) as u32 as f32).collect();
    let ghm = GhmC {
        bins: 12,
        ..GhmC::default()
    };
    let mut h = Hist::new(12).unwrap();
    ghm.accumulate(&Dense::new(&x[..300], &t[..300]), &mut h)
        .unwrap();
    ghm.accumulate(&Dense::new(&x[300..], &t[300..]), &mut h)
        .unwrap();
    let w = ghm.finalize(None, &h).unwrap();
    let line = LogLine::from_weights(&h, &w, 3, "cls").g_max(2.5);
    let mut buf = [0u8; LOG_LINE_MAX];
    let n = line.write(&mut buf).unwrap();
    let v = parse(&buf, n);
    assert!(!std::str::from_utf8(&buf[..n]).unwrap().contains(' '));
    assert_eq!(v["tag"], "cls");
    let counts = u64s(&v["counts"]);
    assert_eq!(counts, h.counts[..12]);
    assert_eq!(counts.iter().sum::<u64>(), 777);
    assert_eq!(f32s(&v["weights"]), w.weight[..12]);
    assert_eq!(v["loss"].as_f64(), Some(w.loss));
    assert_eq!(v["tot"].as_f64(), Some(w.tot));
    let edges = f32s(&v["edges"]);
    assert_eq!((edges[0], edges[6], edges[12]), (0.0, 1.25, 2.5));
}

#[test]
fn the_longest_line_fits_line_max() {
    // Every field at its longest printed form: u64::MAX counts, weights and edges of 19
    // characters, a tag of control characters (6 bytes each when escaped).
    let mut stats = Stats {
        bins: MAX_BINS as u32,
        nonempty_bins: MAX_BINS as u32,
        tot: -1.234_567_890_123_456_7e15,
        skipped: u64::MAX,
        ..Stats::default()
    };
    stats.counts = [u64::MAX; MAX_BINS];
    stats.weights = [-1.234_567_8e15; MAX_BINS];
    let tag: String = "\u{1}".repeat(LOG_TAG_MAX);
    let line = LogLine::from_stats(&stats, -1.234_567_890_123_456_7e15, u64::MAX, &tag)
        .g_max(1.234_567_8e15);
    let n = line.len();
    println!("the longest line: {n} bytes (LOG_LINE_MAX {LOG_LINE_MAX})");
    assert!(n < LOG_LINE_MAX, "{n}");
    let mut buf = vec![0u8; n];
    assert_eq!(line.write(&mut buf), Ok(n));
    let v = parse(&buf, n);
    assert_eq!(v["tag"].as_str().unwrap().len(), LOG_TAG_MAX);
    assert_eq!(v["counts"][127].as_u64(), Some(u64::MAX));
}

#[test]
fn refusals_write_nothing() {
    let (stats, loss) = call(100, 10);
    let line = LogLine::from_stats(&stats, loss as f64, 1, "t");
    let n = line.len();
    let mut buf = vec![0xA5u8; n + 8];
    // One byte short, and empty.
    assert_eq!(line.write(&mut buf[..n - 1]), Err(Error::Shape));
    assert_eq!(line.write(&mut buf[..0]), Err(Error::Shape));
    let long = "x".repeat(LOG_TAG_MAX + 1);
    let bad = [
        (LogLine { tag: &long, ..line }, Error::Config),
        (line.g_max(0.0), Error::Config),
        (line.g_max(f32::NAN), Error::Config),
        (line.g_max(f32::INFINITY), Error::Config),
        (line.g_max(-1.0), Error::Config),
        (LogLine { bins: 0, ..line }, Error::State),
        (LogLine { bins: 129, ..line }, Error::State),
        (
            LogLine {
                nonempty: 11,
                ..line
            },
            Error::State,
        ),
    ];
    for (l, e) in bad {
        assert_eq!(l.write(&mut buf), Err(e), "{l:?}");
        assert_eq!(l.check(), Err(e));
    }
    assert!(buf.iter().all(|&b| b == 0xA5));
    // A tag of exactly LOG_TAG_MAX bytes is fine, and a buffer of exactly the length.
    let tag = "é".repeat(LOG_TAG_MAX / 2);
    let l = LogLine { tag: &tag, ..line };
    let mut exact = vec![0u8; l.len()];
    assert_eq!(l.write(&mut exact), Ok(l.len()));
}

#[test]
fn non_finite_numbers_are_null() {
    let mut stats = Stats {
        bins: 2,
        nonempty_bins: 1,
        tot: f64::NAN,
        ..Stats::default()
    };
    stats.weights[1] = f32::INFINITY;
    let line = LogLine::from_stats(&stats, f64::NEG_INFINITY, 0, "");
    let mut buf = [0u8; 512];
    let n = line.write(&mut buf).unwrap();
    let v = parse(&buf, n);
    assert!(v["tot"].is_null() && v["loss"].is_null() && v["weights"][1].is_null());
    assert_eq!(v["weights"][0].as_f64(), Some(0.0));
}

/// The README's logging recipe is the code of the YOLO-style example, which CI runs (with
/// its log drawn by ghm-plot).
#[test]
fn the_readme_recipe_is_the_example() {
    let block = common::readme_recipe(
        "### Seeing the gradient density",
        "ffi-tests/examples/yolo_train.c",
    );
    assert!(block.contains("ghm_log_stats(") && block.contains("char line[GHM_LOG_LINE_MAX]"));
    assert!(
        block.contains("&st),"),
        "the calls fill the stats that are logged"
    );
}
