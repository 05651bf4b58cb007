//! Softmax cross-entropy GHM (`GhmSoftmax`): against an f64 evaluation of its formulas,
//! every backend against the scalar path bit for bit, both layouts against each other, the
//! phased path against the one call, views against contiguous buffers, and every error.

mod common;

use common::Rng;
use ghm::{
    Backend, Blocks, Ema, Error, GhmSoftmax, Hist, Labels, Layout, Normalize, Reduction,
    SoftmaxOut, Stats, View,
};

fn backends() -> Vec<Backend> {
    Backend::all_available().collect()
}

/// A batch: row-major logits, labels, optional weights.
#[derive(Clone)]
struct Batch {
    x: Vec<f32>,
    labels: Vec<i32>,
    weight: Option<Vec<f32>>,
    c: usize,
}

impl Batch {
    fn n(&self) -> usize {
        self.labels.len()
    }

    /// The logits in `layout` order.
    fn logits(&self, layout: Layout) -> Vec<f32> {
        match layout {
            Layout::AnchorMajor => self.x.clone(),
            Layout::ClassMajor => transpose(&self.x, self.n(), self.c),
        }
    }
}

/// `[n][c]` -> `[c][n]`.
fn transpose(x: &[f32], n: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0.0; x.len()];
    for a in 0..n {
        for k in 0..c {
            t[k * n + a] = x[a * c + k];
        }
    }
    t
}

/// f64 softmax of a row: (p, g = 1 - p_y, ce).
fn softmax_f64(row: &[f32], y: usize) -> (Vec<f64>, f64, f64) {
    let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
    let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    let p: Vec<f64> = e.iter().map(|v| v / s).collect();
    let ce = s.ln() - (row[y] as f64 - m);
    (p.clone(), 1.0 - p[y], ce)
}

/// A random batch; no valid sample's f64 `g` within `1e-4` of a bin edge of `bins` bins (the
/// f32 kernels and the f64 model then agree on every bin). `sat`: some logits saturated.
fn batch(rng: &mut Rng, n: usize, c: usize, bins: usize, weights: bool, sat: bool) -> Batch {
    let mut x = vec![0.0f32; n * c];
    let mut labels = vec![0i32; n];
    for a in 0..n {
        let y = if rng.chance(0.1) {
            // Ignored: negative, or C and beyond.
            if rng.chance(0.5) {
                -1 - rng.below(3) as i32
            } else {
                (c + rng.below(3)) as i32
            }
        } else {
            rng.below(c) as i32
        };
        labels[a] = y;
        loop {
            let scale = [0.5, 2.0, 6.0, 20.0][rng.below(4)];
            for k in 0..c {
                x[a * c + k] = (rng.normal() * scale) as f32;
                if sat && rng.chance(0.05) {
                    x[a * c + k] = if rng.chance(0.5) { 1e4 } else { -1e4 };
                }
            }
            if y >= 0 && (y as usize) < c {
                if rng.chance(0.3) {
                    x[a * c + y as usize] += 4.0;
                }
                let (_, g, _) = softmax_f64(&x[a * c..(a + 1) * c], y as usize);
                let q = g * bins as f64;
                if (q - q.round()).abs() < 1e-4 * bins as f64 && q.round() > 0.0 {
                    continue;
                }
            }
            break;
        }
    }
    let weight = weights.then(|| {
        (0..n)
            .map(|_| if rng.chance(0.15) { 0.0 } else { 1.0 })
            .collect()
    });
    Batch {
        x,
        labels,
        weight,
        c,
    }
}

/// The f64 model: loss, gradient (row-major), per-sample losses, counts, of one batch, and
/// the EMA after it.
struct Want {
    loss: f64,
    grad: Vec<f64>,
    per: Vec<f64>,
    counts: Vec<u64>,
}

fn reference(b: &Batch, cfg: &GhmSoftmax, ema: &mut Option<Vec<f64>>) -> Want {
    let (n, c, m) = (b.n(), b.c, cfg.bins as usize);
    let mut bin = vec![usize::MAX; n];
    let mut counts = vec![0u64; m];
    let mut rows = vec![(vec![], 0.0, 0.0); n];
    for a in 0..n {
        let y = b.labels[a];
        let w = b.weight.as_ref().map_or(1.0, |w| w[a]);
        if y < 0 || y as usize >= c || w <= 0.0 {
            continue;
        }
        let r = softmax_f64(&b.x[a * c..(a + 1) * c], y as usize);
        let k = ((r.1 * m as f64).floor() as usize).min(m - 1);
        bin[a] = k;
        counts[k] += 1;
        rows[a] = r;
    }
    let tot = (counts.iter().sum::<u64>() as f64).max(1.0);
    let nonempty = counts.iter().filter(|&&k| k > 0).count() as f64;
    let mut w = vec![0.0; m];
    for k in 0..m {
        if counts[k] == 0 {
            continue;
        }
        let density = match ema.as_mut() {
            Some(e) => {
                e[k] = cfg.momentum as f64 * e[k] + (1.0 - cfg.momentum as f64) * counts[k] as f64;
                e[k]
            }
            None => counts[k] as f64,
        };
        w[k] = tot / density / nonempty;
    }
    let norm = match cfg.reduction {
        Reduction::Mean => 1.0 / tot,
        _ => 1.0,
    };
    let lw = cfg.loss_weight as f64;
    let mut grad = vec![0.0; n * c];
    let mut per = vec![0.0; n];
    let mut loss = 0.0;
    for a in 0..n {
        if bin[a] == usize::MAX {
            continue;
        }
        let (p, _, ce) = &rows[a];
        let wk = w[bin[a]];
        per[a] = lw * wk * ce;
        loss += wk * ce;
        let f = cfg.grad_scale as f64 * lw * wk * norm;
        for k in 0..c {
            let onehot = if k as i32 == b.labels[a] { 1.0 } else { 0.0 };
            grad[a * c + k] = f * (p[k] - onehot);
        }
    }
    Want {
        loss: lw * loss * norm,
        grad,
        per,
        counts,
    }
}

/// One call on `backend` in `layout`: (loss, row-major gradient, per-sample losses, stats).
fn run(
    cfg: &GhmSoftmax,
    backend: Backend,
    layout: Layout,
    b: &Batch,
    ema: Option<&mut Ema>,
) -> (f32, Vec<f32>, Vec<f32>, Stats) {
    let cfg = GhmSoftmax {
        backend: Some(backend),
        ..*cfg
    };
    let x = b.logits(layout);
    let mut input = Labels::new(&x, &b.labels, b.c, layout);
    if let Some(w) = &b.weight {
        input = input.anchor_weight(w);
    }
    let mut grad = vec![f32::NAN; x.len()];
    let mut per = vec![f32::NAN; b.n()];
    let mut stats = Stats::default();
    let out = SoftmaxOut {
        grad: Some(&mut grad),
        loss: Some(&mut per),
        stats: Some(&mut stats),
    };
    let loss = cfg.loss_grad(ema, &input, out).expect("softmax loss_grad");
    let grad = match layout {
        Layout::AnchorMajor => grad,
        Layout::ClassMajor => transpose(&grad, b.c, b.n()),
    };
    (loss, grad, per, stats)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Checks one call's outputs against the f64 model with GHM-C's tolerances: the loss to 1e-6
/// relative, each gradient entry to 1e-6 of the batch's largest `|grad|`, each per-sample loss
/// to 1e-6 relative (plus 1e-12 absolute for the vanishing losses of very easy samples);
/// counts exactly.
fn check_against(want: &Want, got: &(f32, Vec<f32>, Vec<f32>, Stats), what: &str) {
    let (loss, grad, per, stats) = got;
    assert_eq!(
        &stats.counts[..want.counts.len()],
        &want.counts[..],
        "{what}: counts"
    );
    let tol = 1e-6 * want.loss.abs();
    assert!(
        (*loss as f64 - want.loss).abs() <= tol,
        "{what}: loss {loss} vs {}",
        want.loss
    );
    let gmax = want.grad.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    for (i, (&g, &w)) in grad.iter().zip(&want.grad).enumerate() {
        assert!(g.is_finite(), "{what}: grad[{i}] = {g}");
        assert!(
            (g as f64 - w).abs() <= 1e-6 * gmax,
            "{what}: grad[{i}] {g} vs {w}"
        );
    }
    for (i, (&l, &w)) in per.iter().zip(&want.per).enumerate() {
        let t = 1e-6 * w.abs() + 1e-12;
        assert!(
            (l as f64 - w).abs() <= t,
            "{what}: loss_elems[{i}] {l} vs {w}"
        );
    }
}

#[test]
fn matches_the_f64_model_for_every_class_count_layout_and_backend() {
    let mut rng = Rng(0x50f7_3a11);
    for &c in &[1usize, 2, 3, 5, 16, 17, 80, 1000] {
        for &n in &[1usize, 7, 33, 200] {
            if c == 1000 && n > 33 {
                continue;
            }
            for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                let cfg = GhmSoftmax {
                    reduction,
                    loss_weight: 0.75,
                    grad_scale: -1.0,
                    ..GhmSoftmax::default()
                };
                let weights = rng.chance(0.5);
                let b = batch(&mut rng, n, c, 10, weights, c > 1);
                let want = reference(&b, &cfg, &mut None);
                for backend in backends() {
                    for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
                        let got = run(&cfg, backend, layout, &b, None);
                        let what = format!("C={c} n={n} {reduction:?} {backend:?} {layout:?}");
                        check_against(&want, &got, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn every_backend_and_layout_gives_the_scalar_paths_bits() {
    let mut rng = Rng(0xbeef);
    // Class counts and sample counts around every vector width (4, 8, 16 lanes; 16 sums).
    let cs: Vec<usize> = (1..=34).chain([47, 48, 49, 63, 64, 65, 80, 129]).collect();
    for &c in &cs {
        for n in [0usize, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33] {
            let b = batch(&mut rng, n, c, 10, c % 3 == 0, c % 2 == 0);
            let cfg = GhmSoftmax::default();
            let base = run(&cfg, Backend::Scalar, Layout::AnchorMajor, &b, None);
            for backend in backends() {
                for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
                    let got = run(&cfg, backend, layout, &b, None);
                    let what = format!("C={c} n={n} {backend:?} {layout:?}");
                    assert_eq!(got.0.to_bits(), base.0.to_bits(), "{what}: loss");
                    assert_eq!(bits(&got.1), bits(&base.1), "{what}: grad");
                    assert_eq!(bits(&got.2), bits(&base.2), "{what}: loss_elems");
                    assert_eq!(got.3, base.3, "{what}: stats");
                }
            }
        }
    }
}

#[test]
fn momentum_over_several_batches_matches_the_f64_model() {
    let mut rng = Rng(77);
    let cfg = GhmSoftmax {
        momentum: 0.75,
        ..GhmSoftmax::default()
    };
    for backend in backends() {
        let mut ema = Ema::new(cfg.bins).unwrap();
        let mut want_ema = Some(vec![0.0; cfg.bins as usize]);
        for it in 0..4 {
            let b = batch(&mut rng, 300, 21, 10, true, false);
            let want = reference(&b, &cfg, &mut want_ema);
            let got = run(&cfg, backend, Layout::ClassMajor, &b, Some(&mut ema));
            check_against(&want, &got, &format!("{backend:?} iteration {it}"));
            for (k, e) in want_ema.as_ref().unwrap().iter().enumerate() {
                let rel = (ema.acc_sum[k] as f64 - e).abs() / e.max(1e-30);
                assert!(rel < 1e-6, "{backend:?} it {it}: ema[{k}]");
            }
        }
    }
}

#[test]
fn saturated_logits_give_a_finite_loss_and_gradient() {
    // The labels' probabilities underflow to 0: g = 1, CE = 2e4 and 6e38.
    let x = [1e4f32, -1e4, 0.0, -3.0e38, 3.0e38, 1.0];
    let labels = [1, 0];
    for backend in backends() {
        for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
            let b = Batch {
                x: x.to_vec(),
                labels: labels.to_vec(),
                weight: None,
                c: 3,
            };
            let cfg = GhmSoftmax {
                reduction: Reduction::None,
                ..GhmSoftmax::default()
            };
            let (_, grad, per, stats) = run(&cfg, backend, layout, &b, None);
            assert!(grad.iter().all(|g| g.is_finite()), "{backend:?} {grad:?}");
            assert_eq!(stats.counts[9], 2, "both in the last bin");
            // w = tot / (count * nonempty) = 2 / (2 * 1) = 1.
            assert_eq!(per[0], 2e4, "{backend:?} {layout:?}");
            // The true loss, 6e38, is beyond f32: +inf, as GHM-R's in that case.
            assert_eq!(per[1], f32::INFINITY);
            assert_eq!(grad[0], 1.0);
            assert_eq!(grad[1], -1.0);
        }
    }
}

/// The phased API, the samples split at `cuts`: the same gradient bits and loss elements as
/// the one call, the loss within 1 ulp.
#[test]
fn phased_chunks_give_the_one_calls_results() {
    let mut rng = Rng(5);
    for &c in &[1usize, 3, 19, 80] {
        let b = batch(&mut rng, 97, c, 10, true, true);
        for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
            for backend in backends() {
                let cfg = GhmSoftmax {
                    backend: Some(backend),
                    momentum: 0.5,
                    ..GhmSoftmax::default()
                };
                let mut ema1 = Ema::new(10).unwrap();
                let one = run(&cfg, backend, layout, &b, Some(&mut ema1));
                let x = b.logits(layout);
                let input =
                    Labels::new(&x, &b.labels, c, layout).anchor_weight(b.weight.as_ref().unwrap());
                let cuts = [0, 1, 17, 40, 41, 97];
                let mut hist = Hist::new(10).unwrap();
                for w in cuts.windows(2) {
                    cfg.accumulate(&input.clone().anchors(w[0]..w[1]), &mut hist)
                        .unwrap();
                }
                let mut ema2 = Ema::new(10).unwrap();
                let weights = cfg.finalize(Some(&mut ema2), &hist).unwrap();
                assert_eq!(ema1, ema2);
                let ulp = (weights.loss as f32 - one.0).abs() / one.0.abs().max(1e-30);
                assert!(ulp <= 2.4e-7, "loss {} vs {}", weights.loss, one.0);
                let mut grad = vec![f32::NAN; x.len()];
                let mut per = vec![f32::NAN; b.n()];
                for w in cuts.windows(2).rev() {
                    let chunk = input.clone().anchors(w[0]..w[1]);
                    cfg.apply(&weights, &chunk, Some(&mut grad), Some(&mut per))
                        .unwrap();
                }
                let grad = match layout {
                    Layout::AnchorMajor => grad,
                    Layout::ClassMajor => transpose(&grad, c, b.n()),
                };
                assert_eq!(bits(&grad), bits(&one.1), "C={c} {layout:?} {backend:?}");
                assert_eq!(bits(&per), bits(&one.2));
            }
        }
    }
}

#[test]
fn accumulate_adds_the_gradient_and_leaves_ignored_rows() {
    let mut rng = Rng(9);
    for &c in &[2usize, 7, 33] {
        let b = batch(&mut rng, 45, c, 10, true, false);
        for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
            for backend in backends() {
                let (_, fresh, _, _) = run(&GhmSoftmax::default(), backend, layout, &b, None);
                let x = b.logits(layout);
                let input =
                    Labels::new(&x, &b.labels, c, layout).anchor_weight(b.weight.as_ref().unwrap());
                let before: Vec<f32> = (0..x.len()).map(|i| (i % 7) as f32 * 0.25).collect();
                let mut grad = before.clone();
                let cfg = GhmSoftmax {
                    accumulate: true,
                    backend: Some(backend),
                    ..GhmSoftmax::default()
                };
                cfg.loss_grad(None, &input, SoftmaxOut::grad(&mut grad))
                    .unwrap();
                let fresh_l = match layout {
                    Layout::AnchorMajor => fresh.clone(),
                    Layout::ClassMajor => transpose(&fresh, b.n(), c),
                };
                for i in 0..x.len() {
                    assert_eq!(grad[i], before[i] + fresh_l[i], "{layout:?} {i}");
                }
            }
        }
    }
}

#[test]
fn views_give_the_contiguous_results() {
    // 3 blocks of 5 samples, 4 classes, inside larger buffers with other data between them.
    let mut rng = Rng(11);
    let (count, len, c) = (3usize, 5usize, 4usize);
    let b = batch(&mut rng, count * len, c, 10, true, false);
    for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
        // Contiguous per block: block `b` is samples b*len.., in `layout` within the block.
        let mut block_logits = vec![];
        for k in 0..count {
            let sub = Batch {
                x: b.x[k * len * c..(k + 1) * len * c].to_vec(),
                labels: b.labels[k * len..(k + 1) * len].to_vec(),
                weight: None,
                c,
            };
            block_logits.push(sub.logits(layout));
        }
        let (ps, ts) = (len * c + 3, len + 2);
        let mut pred = vec![f32::NAN; 1 + count * ps];
        let mut labels = vec![7777; 2 + count * ts];
        let mut weight = vec![-1.0f32; 2 + count * ts];
        for k in 0..count {
            pred[1 + k * ps..1 + k * ps + len * c].copy_from_slice(&block_logits[k]);
            labels[2 + k * ts..2 + k * ts + len].copy_from_slice(&b.labels[k * len..][..len]);
            let w = b.weight.as_ref().unwrap();
            weight[2 + k * ts..2 + k * ts + len].copy_from_slice(&w[k * len..][..len]);
        }
        let blocks = Blocks {
            count,
            len,
            pred: View::new(1, ps),
            target: View::new(2, ts),
            weight: View::new(2, ts),
            grad: View::new(0, ps),
            loss_elems: View::new(1, ts),
        };
        for backend in backends() {
            let cfg = GhmSoftmax {
                backend: Some(backend),
                ..GhmSoftmax::default()
            };
            let input = Labels::new(&pred, &labels, c, layout)
                .anchor_weight(&weight)
                .blocks(blocks);
            let mut grad = vec![123.0f32; count * ps];
            let mut per = vec![123.0f32; 1 + count * ts];
            let out = SoftmaxOut {
                grad: Some(&mut grad),
                loss: Some(&mut per),
                stats: None,
            };
            let loss = cfg.loss_grad(None, &input, out).unwrap();
            let (l1, g1, p1, _) = run(&cfg, backend, Layout::AnchorMajor, &b, None);
            assert_eq!(loss.to_bits(), l1.to_bits());
            for k in 0..count {
                let sub = Batch {
                    x: g1[k * len * c..(k + 1) * len * c].to_vec(),
                    labels: vec![0; len],
                    weight: None,
                    c,
                };
                let want = sub.logits(layout);
                assert_eq!(bits(&grad[k * ps..k * ps + len * c]), bits(&want));
                assert!(grad[k * ps + len * c..(k + 1) * ps]
                    .iter()
                    .all(|&v| v == 123.0));
                assert_eq!(
                    bits(&per[1 + k * ts..1 + k * ts + len]),
                    bits(&p1[k * len..][..len])
                );
            }
        }
    }
}

#[test]
fn gradient_mass_normalisation_keeps_the_plain_mass() {
    let mut rng = Rng(3);
    let b = batch(&mut rng, 500, 10, 10, false, false);
    let cfg = GhmSoftmax {
        normalize: Normalize::GradMass,
        reduction: Reduction::Sum,
        ..GhmSoftmax::default()
    };
    let (_, grad, _, _) = run(&cfg, Backend::Scalar, Layout::AnchorMajor, &b, None);
    // The summed |grad| over the batch is 2 * sum(g) with weights, and 2 * sum(g) plain.
    let mut plain = 0.0f64;
    for a in 0..b.n() {
        let y = b.labels[a];
        if y >= 0 && (y as usize) < b.c {
            plain += 2.0 * softmax_f64(&b.x[a * b.c..(a + 1) * b.c], y as usize).1;
        }
    }
    let got: f64 = grad.iter().map(|g| g.abs() as f64).sum();
    assert!((got - plain).abs() / plain < 1e-4, "{got} vs {plain}");
}

#[test]
fn bad_samples_are_refused_with_nothing_written_or_skipped_and_counted() {
    let mut rng = Rng(13);
    let b = batch(&mut rng, 40, 6, 10, true, false);
    for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
        for backend in backends() {
            for (what, poison) in [("nan logit", 0usize), ("inf logit", 1), ("bad weight", 2)] {
                let mut x = b.x.clone();
                let mut w = b.weight.clone().unwrap();
                let victim = 23;
                match poison {
                    0 => x[victim * 6 + 2] = f32::NAN,
                    1 => x[victim * 6 + 5] = f32::NEG_INFINITY,
                    _ => w[victim] = -1.0,
                }
                let bb = Batch {
                    x,
                    labels: b.labels.clone(),
                    weight: Some(w.clone()),
                    c: 6,
                };
                let xl = bb.logits(layout);
                let input = Labels::new(&xl, &bb.labels, 6, layout).anchor_weight(&w);
                let mut cfg = GhmSoftmax {
                    backend: Some(backend),
                    momentum: 0.5,
                    ..GhmSoftmax::default()
                };
                let mut grad = vec![9.0f32; xl.len()];
                let mut per = vec![9.0f32; 40];
                let mut stats = Stats::default();
                let mut ema = Ema::new(10).unwrap();
                ema.acc_sum[3] = 2.5;
                let ema0 = ema;
                let out = SoftmaxOut {
                    grad: Some(&mut grad),
                    loss: Some(&mut per),
                    stats: Some(&mut stats),
                };
                let r = cfg.loss_grad(Some(&mut ema), &input, out);
                assert_eq!(r, Err(Error::Input), "{what}");
                assert!(grad.iter().all(|&v| v == 9.0) && per.iter().all(|&v| v == 9.0));
                assert_eq!(ema, ema0);
                assert_eq!(stats, Stats::default());
                let mut h = Hist::new(10).unwrap();
                assert_eq!(cfg.accumulate(&input, &mut h), Err(Error::Input));
                assert_eq!(h, Hist::new(10).unwrap());
                // The phased apply refuses it too, with nothing written; a chunk without it
                // is applied.
                let w = GhmSoftmax::default()
                    .finalize(None, &Hist::new(10).unwrap())
                    .unwrap();
                let out = (Some(&mut grad[..]), Some(&mut per[..]));
                assert_eq!(cfg.apply(&w, &input, out.0, out.1), Err(Error::Input));
                assert!(grad.iter().all(|&v| v == 9.0) && per.iter().all(|&v| v == 9.0));
                let clean = input.clone().anchors(0..victim);
                cfg.apply(&w, &clean, Some(&mut grad), None).unwrap();
                assert!(
                    grad.iter().any(|&v| v != 9.0),
                    "{what}: the clean chunk written"
                );
                grad.fill(9.0);

                cfg.skip_bad = true;
                let out = SoftmaxOut {
                    grad: Some(&mut grad),
                    loss: Some(&mut per),
                    stats: Some(&mut stats),
                };
                cfg.loss_grad(Some(&mut ema), &input, out).unwrap();
                assert_eq!(stats.skipped, 1, "{what}");
                assert!(grad.iter().all(|v| v.is_finite()));
                let row: Vec<f32> = match layout {
                    Layout::AnchorMajor => grad[victim * 6..victim * 6 + 6].to_vec(),
                    Layout::ClassMajor => (0..6).map(|k| grad[k * 40 + victim]).collect(),
                };
                assert!(row.iter().all(|&v| v == 0.0), "{what}: {row:?}");
                assert_eq!(per[victim], 0.0);
            }
        }
    }
}

#[test]
fn shapes_and_states_are_checked_before_anything_is_written() {
    let x = vec![0.5f32; 12];
    let labels = [0, 1, 2, 1];
    let cfg = GhmSoftmax::default();
    let mut grad = vec![9.0f32; 12];
    let shape = |input: &Labels<'_>, grad: &mut [f32], per: Option<&mut [f32]>| {
        let out = SoftmaxOut {
            grad: Some(grad),
            loss: per,
            stats: None,
        };
        cfg.loss_grad(None, input, out)
    };
    let ok = Labels::new(&x, &labels, 3, Layout::AnchorMajor);
    assert_eq!(
        shape(
            &Labels::new(&x, &labels, 0, Layout::AnchorMajor),
            &mut grad,
            None
        ),
        Err(Error::Shape)
    );
    assert_eq!(
        shape(
            &Labels::new(&x[..11], &labels, 3, Layout::AnchorMajor),
            &mut grad,
            None
        ),
        Err(Error::Shape)
    );
    assert_eq!(shape(&ok, &mut grad[..11], None), Err(Error::Shape));
    assert_eq!(
        shape(&ok, &mut grad, Some(&mut [0.0; 3])),
        Err(Error::Shape)
    );
    assert_eq!(
        shape(&ok.clone().anchor_weight(&[1.0; 3]), &mut grad, None),
        Err(Error::Shape)
    );
    assert_eq!(
        shape(&ok.clone().anchors(2..5), &mut grad, None),
        Err(Error::Shape)
    );
    assert!(grad.iter().all(|&v| v == 9.0));
    let momentum = GhmSoftmax {
        momentum: 0.9,
        ..cfg
    };
    assert_eq!(
        momentum.loss_grad(None, &ok, SoftmaxOut::grad(&mut grad)),
        Err(Error::State)
    );
    let mut other = Ema::new(7).unwrap();
    assert_eq!(
        momentum.loss_grad(Some(&mut other), &ok, SoftmaxOut::grad(&mut grad)),
        Err(Error::State)
    );
    let mut h = Hist::new(7).unwrap();
    assert_eq!(cfg.accumulate(&ok, &mut h), Err(Error::State));
    for bad in [
        GhmSoftmax { bins: 0, ..cfg },
        GhmSoftmax {
            momentum: 1.0,
            ..cfg
        },
        GhmSoftmax {
            loss_weight: f32::NAN,
            ..cfg
        },
        GhmSoftmax {
            grad_scale: f32::INFINITY,
            ..cfg
        },
    ] {
        assert_eq!(
            bad.loss_grad(None, &ok, SoftmaxOut::grad(&mut grad)),
            Err(Error::Config)
        );
    }
    assert!(grad.iter().all(|&v| v == 9.0));
    // An output view that overlaps itself.
    let blocks = Blocks {
        grad: View::new(0, 5),
        ..Blocks::uniform(2, 2, View::packed(6))
    };
    let two = Labels::new(&x, &labels, 3, Layout::AnchorMajor).blocks(Blocks {
        target: View::packed(2),
        weight: View::packed(2),
        loss_elems: View::packed(2),
        ..blocks
    });
    assert_eq!(shape(&two, &mut grad, None), Err(Error::Alias));
    // Nothing at all: loss 0, nothing written.
    let none = Labels::new(&[], &[], 3, Layout::ClassMajor);
    assert_eq!(
        cfg.loss_grad(None, &none, SoftmaxOut::grad(&mut [])),
        Ok(0.0)
    );
}

#[test]
fn readme_softmax_recipe_is_the_example_code() {
    let heading = "### Softmax cross-entropy GHM";
    let block = common::readme_recipe(heading, "ffi-tests/examples/softmax_classifier.c");
    assert!(
        block.contains("ghm_softmax_loss_grad"),
        "the recipe calls GHM"
    );
}

/// The committed f64 reference (`tests/data/softmax/generate.py`, numpy): every case, every
/// backend, both layouts, the batches in a row (the EMA carried over); and the phased path
/// with each batch's samples accumulated on three threads, which must give the one call's
/// gradients bit for bit.
#[test]
fn matches_the_committed_numpy_reference() {
    use serde_json::Value;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/softmax");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "the reference cases");
    let f32s = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let f64s = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let mut checked = 0;
    for path in &files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let c = doc["classes"].as_u64().unwrap() as usize;
        let cfg = GhmSoftmax {
            bins: doc["bins"].as_u64().unwrap() as u32,
            momentum: doc["momentum"].as_f64().unwrap() as f32,
            loss_weight: doc["loss_weight"].as_f64().unwrap() as f32,
            grad_scale: doc["grad_scale"].as_f64().unwrap() as f32,
            reduction: match doc["reduction"].as_str().unwrap() {
                "mean" => Reduction::Mean,
                "sum" => Reduction::Sum,
                _ => Reduction::None,
            },
            ..GhmSoftmax::default()
        };
        for backend in backends() {
            for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
                let mut ema = Ema::new(cfg.bins).unwrap();
                let mut ema_phased = ema;
                for (i, bt) in doc["batches"].as_array().unwrap().iter().enumerate() {
                    let b = Batch {
                        x: f32s(&bt["logits"]),
                        labels: bt["labels"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_i64().unwrap() as i32)
                            .collect(),
                        weight: (!bt["weight"].is_null()).then(|| f32s(&bt["weight"])),
                        c,
                    };
                    let want = Want {
                        loss: bt["loss"].as_f64().unwrap(),
                        grad: f64s(&bt["grad"]),
                        per: f64s(&bt["sample_loss"]),
                        counts: bt["counts"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_u64().unwrap())
                            .collect(),
                    };
                    let what = format!("{name} batch {i} {backend:?} {layout:?}");
                    let got = run(&cfg, backend, layout, &b, Some(&mut ema));
                    check_against(&want, &got, &what);
                    if !bt["ema"].is_null() {
                        for (k, e) in f64s(&bt["ema"]).iter().enumerate() {
                            let d = (ema.acc_sum[k] as f64 - e).abs();
                            assert!(d <= 1e-6 * e.abs(), "{what}: ema[{k}]");
                        }
                    }
                    // Phased: three threads accumulate a third each.
                    let cfg_b = GhmSoftmax {
                        backend: Some(backend),
                        ..cfg
                    };
                    let x = b.logits(layout);
                    let mut input = Labels::new(&x, &b.labels, c, layout);
                    if let Some(w) = &b.weight {
                        input = input.anchor_weight(w);
                    }
                    let n = b.n();
                    let cuts = [0, n / 3, 2 * n / 3, n];
                    let hists: Vec<Hist> = std::thread::scope(|s| {
                        let handles: Vec<_> = cuts
                            .windows(2)
                            .map(|r| {
                                let part = input.clone().anchors(r[0]..r[1]);
                                s.spawn(move || {
                                    let mut h = Hist::new(cfg_b.bins).unwrap();
                                    cfg_b.accumulate(&part, &mut h).unwrap();
                                    h
                                })
                            })
                            .collect();
                        handles.into_iter().map(|h| h.join().unwrap()).collect()
                    });
                    let mut hist = Hist::new(cfg.bins).unwrap();
                    for h in &hists {
                        hist.merge(h).unwrap();
                    }
                    let w = cfg_b.finalize(Some(&mut ema_phased), &hist).unwrap();
                    assert_eq!(ema_phased, ema, "{what}: phased EMA");
                    let mut grad = vec![f32::NAN; x.len()];
                    for r in cuts.windows(2) {
                        let part = input.clone().anchors(r[0]..r[1]);
                        cfg_b.apply(&w, &part, Some(&mut grad), None).unwrap();
                    }
                    let grad = match layout {
                        Layout::AnchorMajor => grad,
                        Layout::ClassMajor => transpose(&grad, c, n),
                    };
                    assert_eq!(bits(&grad), bits(&got.1), "{what}: phased gradient");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0);
}
