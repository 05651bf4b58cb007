//! Properties, checked with quickcheck on random cases:
//! - every backend agrees with a naive f64 evaluation of docs/contract.md section 1 (same bins);
//! - class-index labels equal the dense path on materialised one-hot targets;
//! - every vector backend equals the scalar path at every tail length and unaligned offset;
//! - the phased API over random chunkings equals the one call (bit-identical gradients).
//! - with `skip_bad`, the one call's stored-gradient pass 2 equals the recomputing one, bit for
//!   bit;
//! - GHM-R's vectors without huge differences give the bits the scaled evaluation gives.
#![allow(clippy::needless_range_loop)] // index loops read best in tests

mod common;

use common::*;
use ghm::{
    Backend, Dense, Ema, GhmC, GhmR, Hist, Input, Labels, Layout, Out, Reduction, Stats, Weights,
};
use quickcheck::{Arbitrary, Gen, QuickCheck};

/// Loss relative error allowed against the f64 reference (docs/contract.md section 1).
const LOSS_TOL: f64 = 1e-5;
/// Gradient error allowed, relative to the largest reference gradient (docs/contract.md section 1).
const GRAD_TOL: f64 = 1e-6;

/// A random configuration and the seed of its data.
#[derive(Clone, Debug)]
struct Case {
    seed: u64,
    n: usize,
    kind: Kind,
    bins: u32,
    momentum: f32,
    loss_weight: f32,
    reduction: Reduction,
    grad_scale: f32,
    accumulate: bool,
    soft: bool,
    weights: u8, // 0: none, 1: 0/1 mask, 2: real weights with zeros
}

impl Arbitrary for Case {
    fn arbitrary(g: &mut Gen) -> Case {
        let mut r = Rng(u64::arbitrary(g));
        let n = match r.below(4) {
            0 => r.below(70),
            1 => r.below(1000),
            _ => r.below(20_000),
        };
        let kind = match r.below(3) {
            0 => Kind::Logits,
            1 => Kind::Probs,
            _ => Kind::R {
                mu: *g.choose(&[0.02f32, 0.5, 1e-3, 3.0]).unwrap(),
            },
        };
        Case {
            seed: r.next_u64(),
            n,
            kind,
            bins: 1 + r.below(128) as u32,
            momentum: if r.chance(0.5) {
                0.0
            } else {
                r.range(0.0, 0.99) as f32
            },
            loss_weight: *g.choose(&[1.0f32, 2.5, 0.1]).unwrap(),
            reduction: *g
                .choose(&[Reduction::Mean, Reduction::Sum, Reduction::None])
                .unwrap(),
            grad_scale: *g.choose(&[1.0f32, -1.0, 0.25]).unwrap(),
            accumulate: bool::arbitrary(g),
            soft: bool::arbitrary(g),
            weights: r.below(3) as u8,
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Case>> {
        let c = self.clone();
        Box::new(
            [c.n / 2, c.n / 8, 1, 0]
                .into_iter()
                .filter(move |&n| n < c.n)
                .map(move |n| {
                    let mut s = c.clone();
                    s.n = n;
                    s
                }),
        )
    }
}

/// The data of a case: predictions, targets, optional label weights.
fn data(c: &Case) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let mut r = Rng(c.seed);
    let (mut x, mut t) = detector_batch(&mut r, c.n, 0.05, c.soft);
    match c.kind {
        Kind::Probs => {
            for v in &mut x {
                *v = (1.0 / (1.0 + (-*v as f64).exp())) as f32;
            }
            // hard 0 and 1 probabilities too
            for v in x.iter_mut().step_by(97) {
                *v = if r.chance(0.5) { 0.0 } else { 1.0 };
            }
        }
        Kind::R { .. } => {
            for (xi, ti) in x.iter_mut().zip(&mut t) {
                *ti = r.normal() as f32;
                *xi = *ti + (r.normal() * 10f64.powf(r.range(-4.0, 1.0))) as f32;
            }
        }
        Kind::Logits => {}
    }
    let lw = match c.weights {
        0 => None,
        1 => Some(label_weights(&mut r, c.n, 0.2, true)),
        _ => Some(label_weights(&mut r, c.n, 0.2, false)),
    };
    (x, t, lw)
}

fn ref_cfg(c: &Case) -> RefCfg {
    RefCfg {
        kind: c.kind,
        bins: c.bins as usize,
        momentum: c.momentum,
        loss_weight: c.loss_weight,
        reduction: c.reduction,
        grad_scale: c.grad_scale,
    }
}

/// A case's configuration on a backend: GHM-C (logits or probabilities) or GHM-R.
enum Cfg {
    C(GhmC),
    R(GhmR),
}

impl Cfg {
    fn of(c: &Case, backend: Backend) -> Cfg {
        match c.kind {
            Kind::R { mu } => Cfg::R(GhmR {
                bins: c.bins,
                momentum: c.momentum,
                mu,
                loss_weight: c.loss_weight,
                reduction: c.reduction,
                grad_scale: c.grad_scale,
                accumulate: c.accumulate,
                backend: Some(backend),
                ..GhmR::default()
            }),
            _ => Cfg::C(GhmC {
                bins: c.bins,
                momentum: c.momentum,
                loss_weight: c.loss_weight,
                reduction: c.reduction,
                grad_scale: c.grad_scale,
                accumulate: c.accumulate,
                input: if c.kind == Kind::Probs {
                    Input::Probs
                } else {
                    Input::Logits
                },
                backend: Some(backend),
                ..GhmC::default()
            }),
        }
    }
    fn loss_grad(
        &self,
        ema: Option<&mut Ema>,
        d: &Dense<'_>,
        out: Out<'_>,
    ) -> Result<f32, ghm::Error> {
        match self {
            Cfg::C(c) => c.loss_grad(ema, d, out),
            Cfg::R(r) => r.loss_grad(ema, d, out),
        }
    }
    fn accumulate(&self, d: &Dense<'_>, h: &mut Hist) -> Result<(), ghm::Error> {
        match self {
            Cfg::C(c) => c.accumulate(d, h),
            Cfg::R(r) => r.accumulate(d, h),
        }
    }
    fn finalize(&self, ema: Option<&mut Ema>, h: &Hist) -> Result<Weights, ghm::Error> {
        match self {
            Cfg::C(c) => c.finalize(ema, h),
            Cfg::R(r) => r.finalize(ema, h),
        }
    }
    fn apply(
        &self,
        w: &Weights,
        d: &Dense<'_>,
        g: &mut [f32],
        l: &mut [f32],
    ) -> Result<(), ghm::Error> {
        match self {
            Cfg::C(c) => c.apply(w, d, Some(g), Some(l)),
            Cfg::R(r) => r.apply(w, d, Some(g), Some(l)),
        }
    }
}

/// The crate's one call for a case on a backend.
fn run(
    c: &Case,
    backend: Backend,
    ema: Option<&mut Ema>,
    input: &Dense<'_>,
    out: Out<'_>,
) -> Result<f32, ghm::Error> {
    Cfg::of(c, backend).loss_grad(ema, input, out)
}

/// Two iterations (so the EMA carries over) on every backend against the reference.
fn matches_reference(c: Case) -> bool {
    let rc = ref_cfg(&c);
    for backend in Backend::all_available() {
        let mut ema = Ema::new(c.bins).unwrap();
        let mut ref_ema = vec![0.0f32; c.bins as usize];
        for iter in 0..2u64 {
            let mut ci = c.clone();
            ci.seed = c.seed.wrapping_add(iter);
            let (x, t, lw) = data(&ci);
            let want = reference(&rc, Some(&mut ref_ema), &x, &t, lw.as_deref(), None);
            let init: Vec<f32> = (0..c.n).map(|i| ((i % 7) as f32 - 3.0) * 0.125).collect();
            let mut grad = init.clone();
            let mut elems = vec![f32::NAN; c.n];
            let mut stats = Stats::default();
            let input = Dense {
                pred: &x,
                target: &t,
                label_weight: lw.as_deref(),
                blocks: None,
            };
            let out = Out {
                grad: Some(&mut grad),
                loss_elems: Some(&mut elems),
                stats: Some(&mut stats),
            };
            let ema_arg = (c.momentum > 0.0).then_some(&mut ema);
            let loss = run(&c, backend, ema_arg, &input, out).expect("valid case");
            let ctx = format!("{c:?} iter {iter} on {backend:?}");
            if c.n == 0 {
                assert_eq!(loss, 0.0, "{ctx}");
                assert_eq!(stats, Stats::default(), "{ctx}: n == 0 writes no stats");
                continue;
            }
            let le = rel_err(loss as f64, want.loss, 1e-30);
            assert!(
                le <= LOSS_TOL,
                "{ctx}: loss {loss} vs {} (rel {le:e})",
                want.loss
            );
            if c.accumulate {
                for (g, i) in grad.iter_mut().zip(&init) {
                    *g -= i; // exact: both are small multiples of powers of two or tiny
                }
            }
            let (ge, gmax) = max_err(&grad, &want.grad);
            let slack = if c.accumulate {
                4.0 * f32::EPSILON as f64 * 0.375
            } else {
                0.0
            };
            assert!(
                ge <= GRAD_TOL * gmax + slack,
                "{ctx}: grad err {ge:e} vs max {gmax:e}"
            );
            let (ee, emax) = max_err(&elems, &want.loss_elems);
            assert!(
                ee <= GRAD_TOL * emax.max(1e-30) * 10.0,
                "{ctx}: loss_elems err {ee:e} vs max {emax:e}"
            );
            assert_eq!(
                &stats.counts[..c.bins as usize],
                &want.counts[..],
                "{ctx}: counts"
            );
            assert!(rel_err(stats.tot, want.tot, 1.0) < 1e-12, "{ctx}: tot");
            for k in 0..c.bins as usize {
                assert!(
                    rel_err(stats.weights[k] as f64, want.weights[k], 1e-30) < 1e-6,
                    "{ctx}: w[{k}]"
                );
                if c.momentum > 0.0 {
                    assert!(
                        rel_err(ema.acc_sum[k] as f64, ref_ema[k] as f64, 1e-30) <= 1e-6,
                        "{ctx}: EMA[{k}] {} vs {}",
                        ema.acc_sum[k],
                        ref_ema[k]
                    );
                }
            }
        }
    }
    true
}

fn qc(tests: u64) -> QuickCheck {
    QuickCheck::new().tests(tests).max_tests(tests * 10)
}

#[test]
fn every_backend_matches_the_f64_reference() {
    qc(150).quickcheck(matches_reference as fn(Case) -> bool);
}

/// Labels in either layout equal the dense path on one-hot targets: bit-identical gradients
/// and per-element losses, the same counts, and the loss within 1 ulp (f64 sums in another
/// order).
fn labels_equal_one_hot(seed: u64, n: u16, c: u8, bins: u8, probs: bool, with_w: bool) -> bool {
    let (n, c) = (n as usize % 700, 1 + c as usize % 40);
    let bins = 1 + bins as u32 % 128;
    let mut r = Rng(seed);
    let labels: Vec<i32> = (0..n)
        .map(|_| match r.below(10) {
            0 => -1,
            1 => c as i32, // background
            2 => 1000,
            _ => r.below(c) as i32,
        })
        .collect();
    let aw = with_w.then(|| label_weights(&mut r, n, 0.2, false));
    let mut pred: Vec<f32> = (0..n * c).map(|_| (r.normal() * 3.0) as f32).collect();
    if probs {
        pred.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
    }
    let onehot: Vec<f32> = (0..n * c)
        .map(|i| (labels[i / c] == (i % c) as i32) as u32 as f32)
        .collect();
    let dense_w: Option<Vec<f32>> = aw.as_ref().map(|w| (0..n * c).map(|i| w[i / c]).collect());
    let cfg = GhmC {
        bins,
        input: if probs { Input::Probs } else { Input::Logits },
        ..GhmC::default()
    };
    for backend in Backend::all_available() {
        let cfg = GhmC {
            backend: Some(backend),
            ..cfg
        };
        let (mut g_d, mut l_d, mut s_d) = (vec![0.0; n * c], vec![0.0; n * c], Stats::default());
        let dense = Dense {
            pred: &pred,
            target: &onehot,
            label_weight: dense_w.as_deref(),
            blocks: None,
        };
        let loss_d = cfg
            .loss_grad(
                None,
                &dense,
                Out {
                    grad: Some(&mut g_d),
                    loss_elems: Some(&mut l_d),
                    stats: Some(&mut s_d),
                },
            )
            .unwrap();
        for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
            let tr = |a: &[f32]| -> Vec<f32> {
                match layout {
                    Layout::AnchorMajor => a.to_vec(),
                    _ => (0..n * c)
                        .map(|j| a[(j % n.max(1)) * c + j / n.max(1)])
                        .collect(),
                }
            };
            let p = tr(&pred);
            let (mut g, mut l, mut s) = (vec![0.0; n * c], vec![0.0; n * c], Stats::default());
            let mut input = Labels::new(&p, &labels, c, layout);
            input.anchor_weight = aw.as_deref();
            let loss = cfg
                .loss_grad_labels(
                    None,
                    &input,
                    Out {
                        grad: Some(&mut g),
                        loss_elems: Some(&mut l),
                        stats: Some(&mut s),
                    },
                )
                .unwrap();
            let ctx = format!("n {n} c {c} bins {bins} {layout:?} {backend:?}");
            assert_eq!(g, tr(&g_d), "{ctx}: gradients");
            assert_eq!(l, tr(&l_d), "{ctx}: loss elements");
            assert_eq!(s.counts, s_d.counts, "{ctx}: counts");
            assert!(
                (loss - loss_d).abs() <= f32::EPSILON * loss_d.abs(),
                "{ctx}: {loss} vs {loss_d}"
            );
        }
    }
    true
}

#[test]
fn labels_equal_dense_one_hot() {
    qc(100).quickcheck(labels_equal_one_hot as fn(u64, u16, u8, u8, bool, bool) -> bool);
}

/// The same for class counts that are multiples of every backend's width (each vector then
/// lies in one anchor's row, and the anchor-major layout broadcasts that anchor's label and
/// weight) and for counts that are not, each with and without label weights.
#[test]
fn labels_equal_dense_one_hot_for_whole_and_split_rows() {
    let mut r = Rng(91);
    for c in [1usize, 3, 4, 8, 12, 16, 20, 24, 32, 40] {
        for with_w in [false, true] {
            let n = 1 + r.below(300) as u16;
            let (bins, probs) = (r.below(128) as u8, r.below(2) == 1);
            assert!(labels_equal_one_hot(
                r.next_u64(),
                n,
                (c - 1) as u8,
                bins,
                probs,
                with_w
            ));
        }
    }
}

/// Every vector backend against the scalar path, at every length 0..=70 and at offsets 0..4
/// into the buffers (so the vector loads are unaligned): identical counts (the same bins),
/// gradients within `GRAD_TOL` of the largest, loss within `LOSS_TOL`.
#[test]
fn simd_equals_scalar_at_every_tail_and_offset() {
    let mut r = Rng(7);
    let kinds = [Kind::Logits, Kind::Probs, Kind::R { mu: 0.02 }];
    for kind in kinds {
        for n in 0..=70usize {
            for off in 0..4usize {
                let c = Case {
                    seed: r.next_u64(),
                    n: n + off,
                    kind,
                    bins: 1 + r.below(128) as u32,
                    momentum: 0.0,
                    loss_weight: 1.0,
                    reduction: Reduction::Mean,
                    grad_scale: 1.0,
                    accumulate: false,
                    soft: r.chance(0.5),
                    weights: r.below(3) as u8,
                };
                let (x, t, lw) = data(&c);
                let input = Dense {
                    pred: &x[off..],
                    target: &t[off..],
                    label_weight: lw.as_ref().map(|w| &w[off..]),
                    blocks: None,
                };
                let mut want = (vec![0.0f32; n], vec![0.0f32; n], Stats::default());
                let out = Out {
                    grad: Some(&mut want.0),
                    loss_elems: Some(&mut want.1),
                    stats: Some(&mut want.2),
                };
                let want_loss = run(&c, Backend::Scalar, None, &input, out).unwrap();
                for backend in Backend::all_available().filter(|b| *b != Backend::Scalar) {
                    let mut got = (vec![0.0f32; n + 1], vec![0.0f32; n + 1], Stats::default());
                    // Outputs unaligned too, with a guard element that must stay untouched.
                    got.0[n] = 42.0;
                    got.1[n] = 42.0;
                    let out = Out {
                        grad: Some(&mut got.0[..n]),
                        loss_elems: Some(&mut got.1[..n]),
                        stats: Some(&mut got.2),
                    };
                    let loss = run(&c, backend, None, &input, out).unwrap();
                    let ctx = format!("{kind:?} n {n} offset {off} bins {} on {backend:?}", c.bins);
                    assert_eq!(got.2.counts, want.2.counts, "{ctx}: bins differ");
                    assert_eq!(
                        (got.0[n], got.1[n]),
                        (42.0, 42.0),
                        "{ctx}: wrote past the end"
                    );
                    let to64 = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
                    let (ge, gmax) = max_err(&got.0[..n], &to64(&want.0));
                    assert!(
                        ge <= GRAD_TOL * gmax,
                        "{ctx}: grad err {ge:e} (max {gmax:e})"
                    );
                    let (ee, emax) = max_err(&got.1[..n], &to64(&want.1));
                    assert!(
                        ee <= 1e-5 * emax,
                        "{ctx}: loss_elems err {ee:e} (max {emax:e})"
                    );
                    assert!(
                        rel_err(loss as f64, want_loss as f64, 1e-30) <= LOSS_TOL,
                        "{ctx}: loss"
                    );
                }
            }
        }
    }
}

/// Cut `0..n` into random pieces.
fn random_cuts(r: &mut Rng, n: usize) -> Vec<std::ops::Range<usize>> {
    let pieces = 1 + r.below(8);
    let mut cuts: Vec<usize> = (0..pieces - 1).map(|_| r.below(n + 1)).collect();
    cuts.push(0);
    cuts.push(n);
    cuts.sort_unstable();
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

/// Accumulate random chunks in random order, merge, finalize once, apply per chunk: the
/// gradients and per-element losses are bit-identical to the one call, the loss within 1 ulp
/// and the EMA identical. Dense GHM-C / GHM-R and labels in both layouts.
fn chunked_equals_one_call(c: Case) -> bool {
    let mut r = Rng(c.seed ^ 0xABCD);
    let (x, t, lw) = data(&c);
    for backend in Backend::all_available() {
        let mut c1 = c.clone();
        c1.accumulate = false;
        let mut ema1 = Ema::new(c.bins).unwrap();
        ema1.acc_sum.iter_mut().for_each(|a| *a = 3.0);
        let mut ema2 = ema1;
        let input = Dense {
            pred: &x,
            target: &t,
            label_weight: lw.as_deref(),
            blocks: None,
        };
        let (mut g1, mut l1) = (vec![0.0f32; c.n], vec![0.0f32; c.n]);
        let out = Out {
            grad: Some(&mut g1),
            loss_elems: Some(&mut l1),
            stats: None,
        };
        let mom = c.momentum > 0.0;
        let loss1 = run(&c1, backend, mom.then_some(&mut ema1), &input, out).unwrap();

        let cuts = random_cuts(&mut r, c.n);
        let mut order: Vec<usize> = (0..cuts.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, r.below(i + 1));
        }
        let (mut g2, mut l2) = (vec![0.0f32; c.n], vec![0.0f32; c.n]);
        let cfg = Cfg::of(&c1, backend);
        let part = |ch: &std::ops::Range<usize>| Dense {
            pred: &x[ch.clone()],
            target: &t[ch.clone()],
            label_weight: lw.as_ref().map(|w| &w[ch.clone()]),
            blocks: None,
        };
        // Half the cases accumulate straight into one histogram, half into one per chunk,
        // merged afterwards.
        let mut hist = Hist::new(c.bins).unwrap();
        for &i in &order {
            if c.seed.is_multiple_of(2) {
                cfg.accumulate(&part(&cuts[i]), &mut hist).unwrap();
            } else {
                let mut h = Hist::new(c.bins).unwrap();
                cfg.accumulate(&part(&cuts[i]), &mut h).unwrap();
                hist.merge(&h).unwrap();
            }
        }
        let w = cfg.finalize(mom.then_some(&mut ema2), &hist).unwrap();
        for ch in &cuts {
            cfg.apply(&w, &part(ch), &mut g2[ch.clone()], &mut l2[ch.clone()])
                .unwrap();
        }
        let loss2 = w.loss as f32;
        let ctx = format!("{c:?} cuts {cuts:?} on {backend:?}");
        assert!(g1 == g2, "{ctx}: gradients not bit-identical");
        assert!(l1 == l2, "{ctx}: loss elements not bit-identical");
        assert!(ulps(loss1, loss2) <= 1, "{ctx}: loss {loss1} vs {loss2}");
        assert_eq!(ema1, ema2, "{ctx}: EMA");
    }
    true
}

fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

#[test]
fn chunked_phases_equal_one_call() {
    qc(100).quickcheck(chunked_equals_one_call as fn(Case) -> bool);
}

/// The same for class-index labels, chunked by anchor ranges, in both layouts.
fn chunked_labels_equal_one_call(seed: u64, n: u16, c: u8, bins: u8, momentum: bool) -> bool {
    let (n, c) = (n as usize % 900, 1 + c as usize % 20);
    let mut r = Rng(seed);
    let labels: Vec<i32> = (0..n).map(|_| r.below(c + 1) as i32).collect();
    let aw = label_weights(&mut r, n, 0.2, true);
    let bins = 1 + bins as u32 % 64;
    for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
        for backend in Backend::all_available() {
            let pred: Vec<f32> = (0..n * c).map(|_| (r.normal() * 3.0) as f32).collect();
            let cfg = GhmC {
                bins,
                momentum: if momentum { 0.75 } else { 0.0 },
                backend: Some(backend),
                ..GhmC::default()
            };
            let mut e1 = Ema::new(bins).unwrap();
            let mut e2 = Ema::new(bins).unwrap();
            let full = Labels::new(&pred, &labels, c, layout).anchor_weight(&aw);
            let mut g1 = vec![0.0f32; n * c];
            let loss1 = cfg
                .loss_grad_labels(momentum.then_some(&mut e1), &full, Out::grad(&mut g1))
                .unwrap();
            let cuts = random_cuts(&mut r, n);
            let mut hist = Hist::new(bins).unwrap();
            for ch in cuts.iter().rev() {
                cfg.accumulate_labels(&full.clone().anchors(ch.clone()), &mut hist)
                    .unwrap();
            }
            let w = cfg.finalize(momentum.then_some(&mut e2), &hist).unwrap();
            let mut g2 = vec![0.0f32; n * c];
            for ch in &cuts {
                cfg.apply_labels(&w, &full.clone().anchors(ch.clone()), Some(&mut g2), None)
                    .unwrap();
            }
            let ctx = format!("n {n} c {c} {layout:?} {backend:?} cuts {cuts:?}");
            assert!(g1 == g2, "{ctx}: gradients");
            assert!(ulps(loss1, w.loss as f32) <= 1, "{ctx}: loss");
            assert_eq!(e1, e2, "{ctx}: EMA");
        }
    }
    true
}

#[test]
fn chunked_labels_equal_one_call_in_both_layouts() {
    qc(60).quickcheck(chunked_labels_equal_one_call as fn(u64, u16, u8, u8, bool) -> bool);
}

/// The one call counts its histogram apart from the phased API (the most common bin from a
/// comparison mask, the rest through a buffer flushed every 256 elements, the hot bin chosen
/// after the first flush). A batch whose distribution drifts block by block, so that the hot
/// bin is first rare, then common, then absent, gives the same counts, gradients and EMA as
/// the phased API and the scalar path, and the loss within 1 ulp.
#[test]
fn one_call_counts_equal_phased_counts_when_the_distribution_drifts() {
    let n = 256 * 21 + 7;
    let mut r = Rng(99);
    let mut x = Vec::with_capacity(n);
    let mut t = Vec::with_capacity(n);
    let mut w = Vec::with_capacity(n);
    for i in 0..n {
        let block = i / 256;
        // Targets 0: g = sigmoid(x). Block 0 mostly in bin 3 of 10, then bin 0, then
        // spread, then bin 9.
        let g: f64 = match block {
            0 => 0.3 + 0.1 * r.unit(),
            1..=6 => 0.1 * r.unit(),
            7..=12 => r.unit(),
            _ => 0.9 + 0.1 * r.unit(),
        };
        let g = g.clamp(1e-6, 1.0 - 1e-6);
        x.push((g / (1.0 - g)).ln() as f32);
        t.push(0.0);
        w.push(if r.chance(0.05) { 0.0 } else { 1.0 });
    }
    let input = Dense::new(&x, &t).label_weight(&w);
    let mut want: Option<(Stats, Vec<f32>)> = None;
    for backend in Backend::all_available() {
        let c = GhmC {
            bins: 10,
            momentum: 0.5,
            backend: Some(backend),
            ..GhmC::default()
        };
        let mut ema1 = Ema::new(10).unwrap();
        let mut ema2 = ema1;
        let mut g1 = vec![0.0f32; n];
        let mut stats = Stats::default();
        let out = Out {
            grad: Some(&mut g1),
            loss_elems: None,
            stats: Some(&mut stats),
        };
        let loss1 = c.loss_grad(Some(&mut ema1), &input, out).unwrap();
        let mut hist = Hist::new(10).unwrap();
        c.accumulate(&input, &mut hist).unwrap();
        let wts = c.finalize(Some(&mut ema2), &hist).unwrap();
        let mut g2 = vec![0.0f32; n];
        c.apply(&wts, &input, Some(&mut g2), None).unwrap();
        assert_eq!(stats.counts, hist.counts, "{backend:?}: counts");
        assert!(stats.counts.iter().filter(|&&k| k > 0).count() >= 8);
        assert_eq!(
            stats.counts.iter().sum::<u64>(),
            w.iter().filter(|&&v| v > 0.0).count() as u64
        );
        assert!(g1 == g2, "{backend:?}: gradients");
        assert_eq!(ema1, ema2, "{backend:?}: EMA");
        assert!(
            ulps(loss1, wts.loss as f32) <= 1,
            "{backend:?}: loss {loss1} vs {}",
            wts.loss
        );
        match &want {
            None => want = Some((stats, g1)),
            Some((s, g)) => {
                assert_eq!(
                    s.counts, stats.counts,
                    "{backend:?}: counts vs first backend"
                );
                assert!(*g == g1, "{backend:?}: gradients vs first backend");
            }
        }
    }
}

/// One random GHM-C batch with bad elements mixed in, for the stored-gradient tests.
fn skip_bad_batch(r: &mut Rng, n: usize, probs: bool) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut x = Vec::with_capacity(n);
    let mut t = Vec::with_capacity(n);
    let mut w = Vec::with_capacity(n);
    for _ in 0..n {
        let mut xi = if probs {
            r.unit() as f32
        } else if r.chance(0.05) {
            if r.chance(0.5) {
                1e30
            } else {
                -1e30
            }
        } else {
            r.range(-20.0, 20.0) as f32
        };
        let mut ti = if r.chance(0.5) {
            r.unit() as f32
        } else {
            r.chance(0.3) as u32 as f32
        };
        let mut wi = [0.0, 1.0, 0.5, 3.0][r.below(4)];
        match r.below(40) {
            0 => xi = f32::NAN,
            1 => ti = f32::INFINITY,
            2 => ti = 1.5,
            3 => wi = -1.0,
            4 => wi = f32::NAN,
            5 if probs => xi = -0.25,
            _ => {}
        }
        x.push(xi);
        t.push(ti);
        w.push(wi);
    }
    (x, t, w)
}

/// Runs `c` twice on every vector backend: gradients only (pass 1 stores `dl/dx`, pass 2
/// rescales it) and with `loss_elems` too (pass 2 recomputes from the inputs). Gradients
/// must be bit-identical, as must the stats and the EMA; the loss within 1 ulp. `grad`
/// starts as `init` and must keep it wherever the batch has no element.
fn stored_equals_recomputed(
    c: GhmC,
    run: &dyn Fn(&GhmC, Option<&mut Ema>, Out<'_>) -> f32,
    n: usize,
    init: &[f32],
    ctx: &str,
) {
    for backend in Backend::all_available().filter(|b| *b != Backend::Scalar) {
        let c = GhmC {
            backend: Some(backend),
            ..c
        };
        let mut ema_a = Ema::new(c.bins).unwrap();
        ema_a.acc_sum[0] = 3.0; // an EMA that has seen a batch
        let mut ema_b = ema_a;
        let mut ga = init.to_vec();
        ga.push(42.0); // guard: never written
        let mut sa = Stats::default();
        let out = Out {
            grad: Some(&mut ga[..n]),
            loss_elems: None,
            stats: Some(&mut sa),
        };
        let la = run(&c, (c.momentum > 0.0).then_some(&mut ema_a), out);
        let mut gb = init.to_vec();
        let mut eb = vec![0.0f32; n];
        let mut sb = Stats::default();
        let out = Out {
            grad: Some(&mut gb),
            loss_elems: Some(&mut eb),
            stats: Some(&mut sb),
        };
        let lb = run(&c, (c.momentum > 0.0).then_some(&mut ema_b), out);
        let ctx = format!("{ctx} on {backend:?}");
        assert_eq!(ga[n], 42.0, "{ctx}: wrote past the end");
        for i in 0..n {
            assert_eq!(
                ga[i].to_bits(),
                gb[i].to_bits(),
                "{ctx}: grad[{i}] {} vs {}",
                ga[i],
                gb[i]
            );
        }
        assert_eq!(sa, sb, "{ctx}: stats");
        assert_eq!(ema_a, ema_b, "{ctx}: EMA");
        assert!(ulps(la, lb) <= 1, "{ctx}: loss {la} vs {lb}");
    }
}

/// The one call's two ways to the gradients with `skip_bad` (see `stored_equals_recomputed`)
/// at every length to 70 and some longer ones (whole blocks plus tails), unaligned, with bad,
/// invalid and saturated elements, both GHM-C inputs and every reduction.
#[test]
fn stored_gradients_equal_recomputed_ones() {
    let mut r = Rng(2024);
    let lens = (0..=70).chain([255, 256, 257, 256 * 5 + 9, 4099]);
    for n in lens {
        for probs in [false, true] {
            let off = r.below(4);
            let (x, t, w) = skip_bad_batch(&mut r, n + off, probs);
            let c = GhmC {
                bins: 1 + r.below(128) as u32,
                momentum: if r.chance(0.5) { 0.0 } else { 0.6 },
                loss_weight: [1.0, 0.5, -2.0][r.below(3)],
                reduction: [Reduction::Mean, Reduction::Sum, Reduction::None][r.below(3)],
                grad_scale: if r.chance(0.5) { 1.0 } else { -1.0 },
                skip_bad: true,
                input: if probs { Input::Probs } else { Input::Logits },
                ..GhmC::default()
            };
            let no_weights = r.chance(0.2);
            let input = Dense {
                pred: &x[off..],
                target: &t[off..],
                label_weight: (!no_weights).then_some(&w[off..]),
                blocks: None,
            };
            let run = |c: &GhmC, ema: Option<&mut Ema>, out: Out<'_>| {
                c.loss_grad(ema, &input, out).unwrap()
            };
            let init = vec![7.0f32; n];
            let ctx = format!("n {n} offset {off} probs {probs} {c:?}");
            stored_equals_recomputed(c, &run, n, &init, &ctx);
        }
    }
}

/// The same with class-index labels, in both layouts, over a sub-range of the anchors
/// (the rest of `grad` must stay as it was).
#[test]
fn stored_gradients_equal_recomputed_ones_with_labels() {
    let mut r = Rng(77);
    for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
        for _ in 0..40 {
            let classes = 1 + r.below(20);
            let anchors = r.below(300);
            let n = anchors * classes;
            let (x, _, w) = skip_bad_batch(&mut r, n, false);
            let labels: Vec<i32> = (0..anchors)
                .map(|_| r.below(classes + 2) as i32 - 1)
                .collect();
            let (a0, a1) = (r.below(anchors + 1), anchors);
            let c = GhmC {
                bins: 1 + r.below(40) as u32,
                skip_bad: true,
                ..GhmC::default()
            };
            let input = Labels::new(&x, &labels, classes, layout)
                .anchor_weight(&w[..anchors])
                .anchors(a0..a1);
            let run = |c: &GhmC, ema: Option<&mut Ema>, out: Out<'_>| {
                c.loss_grad_labels(ema, &input, out).unwrap()
            };
            let init: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let ctx = format!("{layout:?} {anchors}x{classes} anchors {a0}..{a1}");
            stored_equals_recomputed(c, &run, n, &init, &ctx);
        }
    }
}

/// GHM-R evaluates a vector without huge differences (`|x - t| > 2^50`) without the scaling
/// the others need; both ways must give the same bits. Batch B puts a huge element, with
/// label weight 0 (so counts, `tot` and weights stay the same), where batch A has an
/// ordinary one: the valid elements' gradients and losses must not change, on any backend.
#[test]
fn ghm_r_gives_the_same_bits_with_and_without_huge_neighbours() {
    let mut r = Rng(5);
    let n = 1000;
    let t: Vec<f32> = (0..n).map(|_| r.range(-2.0, 2.0) as f32).collect();
    let x_a: Vec<f32> = t
        .iter()
        .map(|&t| t + (r.range(-0.1, 0.1) * r.unit()) as f32)
        .collect();
    let w: Vec<f32> = (0..n).map(|i| (i % 13 != 5) as u32 as f32).collect();
    let mut x_b = x_a.clone();
    for i in (5..n).step_by(13) {
        x_b[i] = if i % 2 == 0 { 1e20 } else { -3e38 };
    }
    for backend in Backend::all_available() {
        let c = GhmR {
            bins: 10,
            backend: Some(backend),
            ..GhmR::default()
        };
        let run = |x: &[f32]| {
            let mut g = vec![0.0f32; n];
            let mut e = vec![0.0f32; n];
            let input = Dense::new(x, &t).label_weight(&w);
            let out = Out {
                grad: Some(&mut g),
                loss_elems: Some(&mut e),
                stats: None,
            };
            let loss = c.loss_grad(None, &input, out).unwrap();
            (loss, g, e)
        };
        let (la, ga, ea) = run(&x_a);
        let (lb, gb, eb) = run(&x_b);
        assert_eq!(la.to_bits(), lb.to_bits(), "{backend:?}: loss");
        for i in 0..n {
            assert_eq!(ga[i].to_bits(), gb[i].to_bits(), "{backend:?}: grad[{i}]");
            assert_eq!(ea[i].to_bits(), eb[i].to_bits(), "{backend:?}: loss[{i}]");
        }
        assert!(ga.iter().filter(|&&g| g != 0.0).count() > n / 2);
    }
}

/// Pass 1 without loss sums counts up to 12 bins in packed byte counters (four bins to an
/// i32 lane, emptied every 255 vectors). Runs of thousands of elements in one bin, and of
/// invalid elements (which land in a byte above the last bin), overflow any byte that is
/// emptied too late or shared with a real bin: every backend's counts, one call and
/// phased, must still equal the scalar path's, which must equal the bins the data was built
/// with, for every bin count around the packed limit.
#[test]
fn packed_counts_survive_long_runs_in_one_bin() {
    let mut r = Rng(2024);
    for bins in 1..=14u32 {
        let m = bins as usize;
        let hot = r.below(m);
        // g = sigmoid(x) for targets 0; the middle of bin k.
        let x_of = |k: usize| {
            let g = (k as f64 + 0.5) / m as f64;
            (g / (1.0 - g)).ln() as f32
        };
        let n = 255 * 16 * 2 + 37;
        let (mut x, mut w, mut want) = (vec![], vec![], vec![0u64; m]);
        for i in 0..n {
            // 5000 in one bin, 3000 invalid, then random bins with some invalid mixed in.
            let (k, valid) = match i {
                0..5000 => (hot, true),
                5000..8000 => (r.below(m), false),
                _ => (r.below(m), !r.chance(0.2)),
            };
            x.push(x_of(k));
            w.push(if valid { 1.0 } else { 0.0 });
            if valid {
                want[k] += 1;
            }
        }
        let t = vec![0.0f32; n];
        let input = Dense::new(&x, &t).label_weight(&w);
        for backend in Backend::all_available() {
            let (hist, stats) = phased_and_one_call(bins, backend, &input);
            let ctx = format!("bins {bins}, hot bin {hot}, {backend:?}");
            assert_eq!(&stats.counts[..m], &want[..], "{ctx}: one call");
            assert!(stats.counts[m..].iter().all(|&c| c == 0), "{ctx}: beyond M");
            assert_eq!(&hist.counts[..m], &want[..], "{ctx}: phased");
        }
    }
}

/// Pass 1 counts the most common bin in registers (bin 0 until its first flush, then the most
/// common so far) and buffers the rest. Data whose common bins are not bin 0 at first, and
/// change after the first flush, must still give every backend the scalar path's counts
/// exactly and its per-bin loss sums within `1e-6` (the vector `log1p` is within 2.5 ulp),
/// one call and phased, for one bin, two, and more.
#[test]
fn hot_bins_follow_the_data() {
    let mut r = Rng(77);
    for bins in [1u32, 2, 3, 13, 30, 128] {
        let m = bins as usize;
        let x_of = |k: usize| {
            let g = (k as f64 + 0.5) / m as f64;
            (g / (1.0 - g)).ln() as f32
        };
        let (a, b) = (m - 1, m / 2);
        let (c, d) = (m / 3, (m - 1).saturating_sub(1));
        let n = 9000 + r.below(64);
        let (mut x, mut w) = (vec![], vec![]);
        for i in 0..n {
            // Bins a and b first (past the first flush), then c and d, with strays.
            let k = match (i < 3000, r.below(10)) {
                (_, 0) => r.below(m),
                (true, j) if j < 6 => a,
                (true, _) => b,
                (false, j) if j < 6 => c,
                (false, _) => d,
            };
            x.push(x_of(k));
            w.push(if r.chance(0.05) { 0.0 } else { 1.0 });
        }
        let t = vec![0.0f32; n];
        let input = Dense::new(&x, &t).label_weight(&w);
        let (want, _) = phased_and_one_call(bins, Backend::Scalar, &input);
        for backend in Backend::all_available() {
            let (hist, stats) = phased_and_one_call(bins, backend, &input);
            let ctx = format!("bins {bins}, {backend:?}");
            assert_eq!(&hist.counts[..m], &want.counts[..m], "{ctx}: phased counts");
            assert_eq!(
                &stats.counts[..m],
                &want.counts[..m],
                "{ctx}: one call counts"
            );
            for k in 0..m {
                let (got, exp) = (hist.loss_sums[k], want.loss_sums[k]);
                assert!(
                    (got - exp).abs() <= 1e-6 * exp.abs(),
                    "{ctx}: bin {k} loss sum {got} vs {exp}"
                );
            }
        }
    }
}

/// GHM-C with `bins` bins on `backend`: the phased API's histogram of `input`, and the
/// statistics of a one call (gradients only) over it.
fn phased_and_one_call(bins: u32, backend: Backend, input: &Dense<'_>) -> (Hist, Stats) {
    let c = GhmC {
        bins,
        backend: Some(backend),
        ..GhmC::default()
    };
    let mut hist = Hist::new(bins).unwrap();
    c.accumulate(input, &mut hist).unwrap();
    let mut stats = Stats::default();
    let mut grad = vec![0.0f32; input.pred.len()];
    let out = Out {
        grad: Some(&mut grad),
        loss_elems: None,
        stats: Some(&mut stats),
    };
    c.loss_grad(None, input, out).unwrap();
    (hist, stats)
}

/// Equal losses are the worst case for a sum rounded in f32 along the way: every partial sum
/// rounds the same way, so the errors add up instead of cancelling, and a different chunking
/// (chunk boundaries moving where the partial sums start) moves the total by several of them.
/// Whatever the chunking, the one call and the phased API must stay within 1 ulp of each other
/// (docs/contract.md section 3), and of the one call that also writes per-element losses. Batches of one
/// prediction repeated, for GHM-C and GHM-R, chunks of 1 to 3 vectors and of 1000.
#[test]
fn equal_losses_stay_within_one_ulp_for_any_chunking() {
    let n = 1 << 16;
    let mut worst = (0, String::new());
    for (xv, tv) in [
        (-4.5f32, 0.0f32),
        (-2.2, 0.0),
        (-3.3, 0.0),
        (3.1, 1.0),
        (0.7, 0.25),
    ] {
        let (x, t) = (vec![xv; n], vec![tv; n]);
        let input = Dense::new(&x, &t);
        for backend in Backend::all_available() {
            let c = GhmC {
                bins: 30,
                backend: Some(backend),
                ..GhmC::default()
            };
            let r = GhmR {
                backend: Some(backend),
                ..GhmR::default()
            };
            let (mut g, mut le) = (vec![0.0f32; n], vec![0.0f32; n]);
            fn both<'a>(g: &'a mut [f32], le: &'a mut [f32]) -> Out<'a> {
                Out {
                    grad: Some(g),
                    loss_elems: Some(le),
                    stats: None,
                }
            }
            let c_one = c.loss_grad(None, &input, Out::grad(&mut g)).unwrap();
            let c_all = c.loss_grad(None, &input, both(&mut g, &mut le)).unwrap();
            let r_one = r.loss_grad(None, &input, Out::grad(&mut g)).unwrap();
            let r_all = r.loss_grad(None, &input, both(&mut g, &mut le)).unwrap();
            for chunk in [5, 16, 48, 80, 1000] {
                let (mut hc, mut hr) = (Hist::new(30).unwrap(), Hist::new(10).unwrap());
                for at in (0..n).step_by(chunk) {
                    let end = n.min(at + chunk);
                    let part = Dense::new(&x[at..end], &t[at..end]);
                    c.accumulate(&part, &mut hc).unwrap();
                    r.accumulate(&part, &mut hr).unwrap();
                }
                let c_ph = c.finalize(None, &hc).unwrap().loss as f32;
                let r_ph = r.finalize(None, &hr).unwrap().loss as f32;
                for (what, a, b) in [
                    ("GHM-C one call / phased", c_one, c_ph),
                    ("GHM-C one call / with loss_elems", c_one, c_all),
                    ("GHM-C phased / with loss_elems", c_ph, c_all),
                    ("GHM-R one call / phased", r_one, r_ph),
                    ("GHM-R one call / with loss_elems", r_one, r_all),
                ] {
                    let ctx = format!("x {xv} t {tv} chunk {chunk} {backend:?}: {what}");
                    if ulps(a, b) > worst.0 {
                        worst = (ulps(a, b), format!("{ctx}: {a} vs {b}"));
                    }
                }
            }
        }
    }
    assert!(worst.0 <= 1, "{}", worst.1);
}

/// GHM-R's `tot` is the sum of the valid elements' label weights. Pass 1 counts them while
/// every valid weight so far is 1 and sums them in f64 from the first other weight on: with
/// dyadic weights every order of summation is exact, so `tot` must equal the plain sum
/// exactly, on every backend, one call and phased, for batches of ones, ones and zeros, ones
/// with a few other weights (so that the pass switches mid-batch), every length around the
/// vector width, and with `skip_bad` (a bad element whose weight is 1 is not counted).
#[test]
fn ghm_r_tot_is_the_exact_sum_of_label_weights() {
    let mut r = Rng(1234);
    for n in (0..=40).chain([1000, 4099]) {
        for kind in 0..4 {
            let pred: Vec<f32> = (0..n).map(|_| r.normal() as f32).collect();
            let target: Vec<f32> = (0..n).map(|_| r.normal() as f32).collect();
            let mut w: Vec<f32> = (0..n)
                .map(|_| match (kind, r.below(40)) {
                    (0, _) => 1.0,
                    (1, 0..=7) => 0.0,
                    (2, 0) => 0.5,
                    (2, 1) => 3.0,
                    (3, 0) => 0.25,
                    (_, _) => 1.0,
                })
                .collect();
            let mut pred = pred;
            if kind == 3 && n > 0 {
                // A bad element with weight 1 (skipped), and one with weight 2.
                let at = r.below(n);
                pred[at] = f32::NAN;
                w[at] = 1.0;
                let at2 = r.below(n);
                if at2 != at {
                    w[at2] = 2.0;
                }
            }
            let skip_bad = kind == 3;
            let want: f64 = (0..n)
                .filter(|&i| w[i] > 0.0 && pred[i].is_finite())
                .map(|i| w[i] as f64)
                .sum();
            let input = Dense::new(&pred, &target).label_weight(&w);
            for backend in Backend::all_available() {
                let cfg = GhmR {
                    backend: Some(backend),
                    skip_bad,
                    ..GhmR::default()
                };
                let mut s = Stats::default();
                let mut g = vec![0.0f32; n];
                let out = Out {
                    grad: Some(&mut g),
                    loss_elems: None,
                    stats: Some(&mut s),
                };
                cfg.loss_grad(None, &input, out).unwrap();
                let mut h = Hist::new(10).unwrap();
                cfg.accumulate(&input, &mut h).unwrap();
                let ctx = format!("n {n} kind {kind} {backend:?}");
                if n > 0 {
                    // (An empty batch returns before any statistics.)
                    assert_eq!(s.tot, want.max(1.0), "{ctx}: one call");
                }
                assert_eq!(h.tot, want, "{ctx}: phased");
            }
        }
    }
}
