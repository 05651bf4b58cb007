//! Where the gradient goes: GHM-C and GHM-R on synthetic detector-like batches.
//!
//! A classification batch of 200 000 elements (anchors x classes, flattened) holds a flood of
//! easy negatives (confident negative logits), about 1% positives with moderate logits, and
//! 0.3% confident outliers (mislabeled boxes: the logit is confidently on the wrong side).
//! Under plain BCE the easy negatives own most of the gradient by sheer number and every
//! outlier pulls with the largest possible gradient; GHM-C (30 bins, EMA momentum 0.75 over
//! three batches) down-weights both and hands the gradient to the positives.
//!
//! Box-regression batches then compare GHM-R (10 bins, momentum 0.7, mu 0.02) with the plain
//! Authentic Smooth L1 and smooth-L1 means, with 1% large-error outliers.
//!
//! GHM losses are weighted means (weight `w_k` per bin), so their values sit on another scale
//! than the plain means; the gradient shares are the comparable part.
//!
//! Run with `cargo run --release --example detector_batch`.

use ghm::{Dense, Ema, GhmC, GhmR, Out, Stats};

/// SplitMix64 with a Box-Muller normal: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self, mean: f64, sd: f64) -> f32 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (mean + sd * z) as f32
    }
}

const NEG: usize = 0;
const POS: usize = 1;
const OUT: usize = 2;
const GROUPS: [&str; 3] = ["easy negatives", "positives", "confident outliers"];

/// One classification batch: logits, hard targets and the group of each element.
fn cls_batch(seed: u64, n: usize) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
    let mut rng = Rng(seed);
    let (mut x, mut t, mut group) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let u = rng.uniform();
        let (xi, ti, gi) = if u < 0.003 {
            // Mislabeled: |x| in 5..9 on the wrong side of the label.
            let mag = 5.0 + 4.0 * rng.uniform() as f32;
            if rng.uniform() < 0.5 {
                (-mag, 1.0, OUT)
            } else {
                (mag, 0.0, OUT)
            }
        } else if u < 0.013 {
            (rng.normal(1.0, 1.5), 1.0, POS)
        } else {
            (rng.normal(-4.5, 1.0), 0.0, NEG)
        };
        x.push(xi);
        t.push(ti);
        group.push(gi);
    }
    (x, t, group)
}

/// One regression batch of box deltas: predictions, targets ~ N(0, 1), and the group of each
/// element (`NEG`: close prediction, `OUT`: 1% far off).
fn reg_batch(seed: u64, n: usize) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
    let mut rng = Rng(seed);
    let (mut pred, mut target, mut group) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = rng.normal(0.0, 1.0);
        let far = rng.uniform() < 0.01;
        let err = rng.normal(0.0, if far { 3.0 } else { 0.03 });
        target.push(t);
        pred.push(t + err);
        group.push(if far { OUT } else { NEG });
    }
    (pred, target, group)
}

/// Share of the total `|gradient|` held by each group.
fn shares(grad: impl Iterator<Item = f64>, group: &[usize]) -> [f64; 3] {
    let mut s = [0.0; 3];
    for (g, &k) in grad.zip(group) {
        s[k] += g.abs();
    }
    let total: f64 = s.iter().sum();
    s.map(|v| 100.0 * v / total)
}

/// The non-empty bins of `stats`: g range (`prec` decimals), count, weight and a bar of
/// `#` proportional to log10(count).
fn histogram(stats: &Stats, prec: usize) {
    println!(
        "  {:<16} {:>8} {:>9}  log10(count)",
        "g bin", "count", "w_k"
    );
    let m = stats.bins as usize;
    for k in (0..m).filter(|&k| stats.counts[k] > 0) {
        let (lo, hi) = (k as f64 / m as f64, (k + 1) as f64 / m as f64);
        let close = if k + 1 == m { ']' } else { ')' };
        let range = format!("[{lo:.prec$}, {hi:.prec$}{close}");
        let (c, w) = (stats.counts[k], stats.weights[k]);
        let bar = "#".repeat((4.0 * (c as f64).log10()).round() as usize + 1);
        println!("  {range:<16} {c:>8} {w:>9.4}  {bar}");
    }
}

fn main() -> Result<(), ghm::Error> {
    const N: usize = 200_000;
    let ghmc = GhmC {
        bins: 30,
        momentum: 0.75,
        ..GhmC::default()
    };
    let mut ema = Ema::new(ghmc.bins)?;
    let mut grad = vec![0.0f32; N];
    let mut stats = Stats::default();
    let mut last = None;
    for seed in 1..=3u64 {
        let (x, t, group) = cls_batch(seed, N);
        let out = Out {
            grad: Some(&mut grad),
            stats: Some(&mut stats),
            ..Out::default()
        };
        let loss = ghmc.loss_grad(Some(&mut ema), &Dense::new(&x, &t), out)?;
        last = Some((x, t, group, loss));
    }
    let (x, t, group, ghm_loss) = last.expect("three batches ran");

    // Plain BCE with logits, mean over elements, in f64.
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let bce = x.iter().zip(&t).map(|(&x, &t)| {
        let (x, t) = (x as f64, t as f64);
        x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()
    });
    let bce_loss = bce.sum::<f64>() / N as f64;
    let bce_grad = x.iter().zip(&t).map(|(&x, &t)| sig(x as f64) - t as f64);
    let bce_share = shares(bce_grad, &group);
    let ghm_share = shares(grad.iter().map(|&g| g as f64), &group);

    println!("GHM-C: {N} elements, bins 30, momentum 0.75, batch 3 of 3");
    println!("  loss: GHM-C {ghm_loss:.5}   plain BCE {bce_loss:.5}");
    println!("  share of total |gradient|   {:>9} {:>9}", "BCE", "GHM-C");
    for (k, name) in GROUPS.iter().enumerate() {
        let n = group.iter().filter(|&&g| g == k).count();
        let label = format!("{name} ({n})");
        println!(
            "    {label:<26} {:>8.1}% {:>8.1}%",
            bce_share[k], ghm_share[k]
        );
    }
    histogram(&stats, 3);

    // GHM-R on box deltas, again three batches with the EMA carried over.
    const NR: usize = 100_000;
    let ghmr = GhmR {
        bins: 10,
        momentum: 0.7,
        mu: 0.02,
        ..GhmR::default()
    };
    let mut ema_r = Ema::new(ghmr.bins)?;
    let mut grad_r = vec![0.0f32; NR];
    let mut stats_r = Stats::default();
    let mut last = None;
    for seed in 11..=13u64 {
        let (pred, target, group) = reg_batch(seed, NR);
        let out = Out {
            grad: Some(&mut grad_r),
            stats: Some(&mut stats_r),
            ..Out::default()
        };
        let loss = ghmr.loss_grad(Some(&mut ema_r), &Dense::new(&pred, &target), out)?;
        last = Some((pred, target, group, loss));
    }
    let (pred, target, outlier, r_loss) = last.expect("three batches ran");
    let mu = ghmr.mu as f64;
    let d = || pred.iter().zip(&target).map(|(&p, &t)| p as f64 - t as f64);
    let asl = d().map(|d| (d * d + mu * mu).sqrt() - mu).sum::<f64>() / NR as f64;
    let sl1 = d()
        .map(|d| {
            if d.abs() < 1.0 {
                0.5 * d * d
            } else {
                d.abs() - 0.5
            }
        })
        .sum::<f64>()
        / NR as f64;
    let asl_share = shares(d().map(|d| d / (d * d + mu * mu).sqrt()), &outlier);
    let r_share = shares(grad_r.iter().map(|&g| g as f64), &outlier);

    println!();
    println!("GHM-R: {NR} box deltas (1% large-error outliers), bins 10, momentum 0.7, mu 0.02, batch 3 of 3");
    println!("  loss: GHM-R {r_loss:.5}   plain ASL1 {asl:.5}   smooth-L1 (beta 1) {sl1:.5}");
    println!(
        "  share of |gradient| on outliers: ASL1 {:.1}%   GHM-R {:.1}%",
        asl_share[OUT], r_share[OUT]
    );
    histogram(&stats_r, 1);
    Ok(())
}
