//! docs/contract.md section 2: every error path, each with its nothing-written guarantee; `skip_bad`;
//! `n == 0`; saturated inputs; and a sum over more than 2^24 elements that must not drift.
#![allow(clippy::needless_range_loop)] // index loops read best in tests

mod common;

use common::*;
use ghm::{
    Backend, Dense, Ema, Error, GhmC, GhmR, Hist, Input, Labels, Layout, Out, Reduction, Stats,
    Weights,
};

const SENTINEL: f32 = -7.25;

/// Output buffers pre-filled with sentinels, to prove an erroring call wrote nothing.
struct Bufs {
    grad: Vec<f32>,
    elems: Vec<f32>,
    stats: Stats,
    ema: Ema,
}

impl Bufs {
    fn new(n: usize, bins: u32) -> Bufs {
        let stats = Stats {
            skipped: 99,
            tot: 123.0,
            ..Stats::default()
        };
        let mut ema = Ema::new(bins).unwrap();
        ema.acc_sum.iter_mut().for_each(|a| *a = 5.5);
        Bufs {
            grad: vec![SENTINEL; n],
            elems: vec![SENTINEL; n],
            stats,
            ema,
        }
    }
    fn out(&mut self) -> Out<'_> {
        self.parts().1
    }
    /// The EMA and the outputs, borrowed together.
    fn parts(&mut self) -> (&mut Ema, Out<'_>) {
        let out = Out {
            grad: Some(&mut self.grad),
            loss_elems: Some(&mut self.elems),
            stats: Some(&mut self.stats),
        };
        (&mut self.ema, out)
    }
    fn untouched(&self, bins: u32) -> bool {
        self.grad.iter().all(|&g| g == SENTINEL)
            && self.elems.iter().all(|&g| g == SENTINEL)
            && self.stats.skipped == 99
            && self.stats.tot == 123.0
            && self.ema.bins == bins
            && self.ema.acc_sum.iter().all(|&a| a == 5.5)
    }
}

fn batch(n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut r = Rng(11);
    let (x, t) = detector_batch(&mut r, n, 0.1, false);
    (x, t, label_weights(&mut r, n, 0.1, true))
}

/// Runs a GHM-C call that must fail with `want` and write nothing, on every backend.
fn expect_c(cfg: GhmC, x: &[f32], t: &[f32], lw: &[f32], want: Error) {
    for backend in Backend::all_available() {
        let cfg = GhmC {
            backend: Some(backend),
            ..cfg
        };
        let mut b = Bufs::new(x.len(), cfg.bins.clamp(1, 128));
        let bins = b.ema.bins;
        let ema = Some(&mut b.ema);
        let r = cfg.loss_grad(
            ema,
            &Dense::new(x, t).label_weight(lw),
            Out {
                grad: Some(&mut b.grad),
                loss_elems: Some(&mut b.elems),
                stats: Some(&mut b.stats),
            },
        );
        assert_eq!(r, Err(want), "{cfg:?}");
        assert!(b.untouched(bins), "{cfg:?}: wrote something on error");
    }
}

#[test]
fn bad_configurations_are_refused() {
    let (x, t, lw) = batch(100);
    let ok = GhmC {
        momentum: 0.5,
        ..GhmC::default()
    };
    for cfg in [
        GhmC { bins: 0, ..ok },
        GhmC { bins: 129, ..ok },
        GhmC {
            momentum: -0.1,
            ..ok
        },
        GhmC {
            momentum: 1.0,
            ..ok
        },
        GhmC {
            momentum: f32::NAN,
            ..ok
        },
        GhmC {
            loss_weight: f32::INFINITY,
            ..ok
        },
        GhmC {
            loss_weight: f32::NAN,
            ..ok
        },
        GhmC {
            grad_scale: f32::NEG_INFINITY,
            ..ok
        },
        GhmC {
            grad_scale: f32::NAN,
            ..ok
        },
    ] {
        expect_c(cfg, &x, &t, &lw, Error::Config);
        assert_eq!(cfg.validate(), Err(Error::Config));
    }
    assert_eq!(ok.validate(), Ok(()));
    // Finite, but the gradient factor grad_scale * loss_weight * w overflows f32: refused,
    // by the one call and by finalize, before anything is written.
    for cfg in [
        GhmC {
            loss_weight: f32::MAX,
            reduction: Reduction::Sum,
            ..ok
        },
        GhmC {
            loss_weight: 1e20,
            grad_scale: -1e20,
            ..ok
        },
    ] {
        expect_c(cfg, &x, &t, &lw, Error::Config);
        let mut h = Hist::new(cfg.bins).unwrap();
        cfg.accumulate(&Dense::new(&x, &t), &mut h).unwrap();
        let mut ema = Ema::new(cfg.bins).unwrap();
        assert_eq!(cfg.finalize(Some(&mut ema), &h).err(), Some(Error::Config));
        assert_eq!(ema, Ema::new(cfg.bins).unwrap(), "EMA written on error");
    }
    for mu in [0.0, -0.02, f32::INFINITY, f32::NAN] {
        let cfg = GhmR {
            mu,
            ..GhmR::default()
        };
        assert_eq!(cfg.validate(), Err(Error::Config), "mu {mu}");
        let mut b = Bufs::new(x.len(), 10);
        assert_eq!(
            cfg.loss_grad(None, &Dense::new(&x, &t), b.out()),
            Err(Error::Config)
        );
        assert!(b.untouched(10));
    }
    assert_eq!(Ema::new(0), Err(Error::Config));
    assert_eq!(Ema::new(129), Err(Error::Config));
    assert_eq!(Hist::new(0).err(), Some(Error::Config));
    // The C enums: unknown values are configuration errors.
    assert_eq!(Reduction::try_from(3), Err(Error::Config));
    assert_eq!(Input::try_from(2), Err(Error::Config));
    assert_eq!(Layout::try_from(7), Err(Error::Config));
    assert_eq!(Reduction::try_from(2), Ok(Reduction::None));
}

#[test]
fn bad_state_is_refused() {
    let (x, t, lw) = batch(100);
    let cfg = GhmC {
        bins: 10,
        momentum: 0.75,
        ..GhmC::default()
    };
    // EMA missing while momentum > 0.
    let mut b = Bufs::new(100, 10);
    assert_eq!(
        cfg.loss_grad(None, &Dense::new(&x, &t), b.out()),
        Err(Error::State)
    );
    assert!(b.untouched(10));
    // EMA for another bin count, or holding impossible values.
    for bad in [
        Ema::new(11).unwrap(),
        {
            let mut e = Ema::new(10).unwrap();
            e.acc_sum[3] = f32::NAN;
            e
        },
        {
            let mut e = Ema::new(10).unwrap();
            e.acc_sum[9] = -1.0;
            e
        },
    ] {
        let mut ema = bad;
        let mut b = Bufs::new(100, 10);
        let r = cfg.loss_grad(
            Some(&mut ema),
            &Dense::new(&x, &t).label_weight(&lw),
            b.out(),
        );
        assert_eq!(r, Err(Error::State));
        assert!(b.untouched(10));
        // Bit for bit (one of these states holds a NaN, which `==` would never match).
        let bits = |e: &Ema| (e.bins, e.acc_sum.map(f32::to_bits));
        assert_eq!(bits(&ema), bits(&bad), "EMA modified");
    }
    // A histogram or weights made for other bins.
    let mut h11 = Hist::new(11).unwrap();
    assert_eq!(
        cfg.accumulate(&Dense::new(&x, &t), &mut h11),
        Err(Error::State)
    );
    assert_eq!(h11, Hist::new(11).unwrap());
    let mut ema = Ema::new(10).unwrap();
    assert_eq!(cfg.finalize(Some(&mut ema), &h11).err(), Some(Error::State));
    assert_eq!(
        cfg.finalize(None, &Hist::new(10).unwrap()).err(),
        Some(Error::State)
    );
    let mut h10 = Hist::new(10).unwrap();
    assert_eq!(h10.merge(&h11), Err(Error::State));
    assert_eq!(h10, Hist::new(10).unwrap());
    h10.tot = f64::NAN;
    assert_eq!(
        GhmC::default().finalize(None, &h10).err(),
        Some(Error::State)
    );
    let w = GhmC::default()
        .finalize(None, &Hist::new(10).unwrap())
        .unwrap();
    let mut grad = vec![SENTINEL; 100];
    let c11 = GhmC {
        bins: 11,
        ..GhmC::default()
    };
    assert_eq!(
        c11.apply(&w, &Dense::new(&x, &t), Some(&mut grad), None),
        Err(Error::State)
    );
    let mut w_nan: Weights = w;
    w_nan.scale[2] = f32::NAN;
    assert_eq!(
        GhmC::default().apply(&w_nan, &Dense::new(&x, &t), Some(&mut grad), None),
        Err(Error::State)
    );
    assert!(grad.iter().all(|&g| g == SENTINEL));
    // momentum == 0 ignores whatever EMA is passed.
    let mut other = Ema::new(3).unwrap();
    let before = other;
    GhmC::default()
        .loss_grad(Some(&mut other), &Dense::new(&x, &t), Out::default())
        .unwrap();
    assert_eq!(other, before);
}

#[test]
fn mismatched_shapes_are_refused() {
    let (x, t, lw) = batch(100);
    let cfg = GhmC::default();
    let mut b = Bufs::new(100, 10);
    assert_eq!(
        cfg.loss_grad(None, &Dense::new(&x, &t[..99]), b.out()),
        Err(Error::Shape)
    );
    assert_eq!(
        cfg.loss_grad(None, &Dense::new(&x, &t).label_weight(&lw[..50]), b.out()),
        Err(Error::Shape)
    );
    assert!(b.untouched(10));
    let mut short = vec![SENTINEL; 99];
    assert_eq!(
        cfg.loss_grad(None, &Dense::new(&x, &t), Out::grad(&mut short)),
        Err(Error::Shape)
    );
    assert!(short.iter().all(|&g| g == SENTINEL));
    // Labels: pred must be N * C, weights N, the anchor range inside 0..N, C*N must not overflow.
    let labels = vec![0i32; 25];
    let mut g = vec![SENTINEL; 100];
    let l = Labels::new(&x, &labels, 4, Layout::AnchorMajor);
    assert_eq!(
        cfg.loss_grad_labels(
            None,
            &Labels::new(&x, &labels, 3, Layout::ClassMajor),
            Out::grad(&mut g)
        ),
        Err(Error::Shape)
    );
    assert_eq!(
        cfg.loss_grad_labels(None, &l.clone().anchor_weight(&lw), Out::grad(&mut g)),
        Err(Error::Shape)
    );
    let mut h = Hist::new(10).unwrap();
    assert_eq!(
        cfg.accumulate_labels(&l.clone().anchors(20..26), &mut h),
        Err(Error::Shape)
    );
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = l.clone().anchors(5..2);
    assert_eq!(cfg.accumulate_labels(&backwards, &mut h), Err(Error::Shape));
    let two = [0i32; 2];
    assert_eq!(
        cfg.loss_grad_labels(
            None,
            &Labels::new(&x, &two, usize::MAX, Layout::AnchorMajor),
            Out::default()
        ),
        Err(Error::Shape)
    );
    assert!(g.iter().all(|&v| v == SENTINEL));
    assert_eq!(h, Hist::new(10).unwrap());
    assert_eq!(
        cfg.loss_grad_labels(None, &l, Out::grad(&mut g))
            .map(|_| ()),
        Ok(())
    );
}

#[test]
fn every_kind_of_bad_element_is_refused_or_skipped() {
    let n = 37;
    let (x, t, lw) = batch(n);
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    // (what to corrupt, value, which configurations consider it bad)
    let cases: Vec<(&str, f32)> = vec![
        ("pred", nan),
        ("pred", inf),
        ("pred", -inf),
        ("target", nan),
        ("target", -0.5),
        ("target", 1.5),
        ("target", inf),
        ("weight", nan),
        ("weight", -1.0),
        ("weight", inf),
    ];
    for (what, v) in cases {
        for at in [0, 5, 17, n - 1] {
            let (mut x, mut t, mut lw) = (x.clone(), t.clone(), lw.clone());
            match what {
                "pred" => x[at] = v,
                "target" => t[at] = v,
                _ => lw[at] = v,
            }
            let ctx = format!("{what} = {v} at {at}");
            // GHM-C (targets outside [0, 1] are bad) and GHM-R (only non-finite ones are).
            let c_bad = true;
            let r_bad = !(what == "target" && v.is_finite());
            for backend in Backend::all_available() {
                let c = GhmC {
                    momentum: 0.5,
                    backend: Some(backend),
                    ..GhmC::default()
                };
                let r = GhmR {
                    momentum: 0.5,
                    backend: Some(backend),
                    ..GhmR::default()
                };
                for (is_r, bad) in [(false, c_bad), (true, r_bad)] {
                    let mut b = Bufs::new(n, 10);
                    let input = Dense::new(&x, &t).label_weight(&lw);
                    let res = if is_r {
                        r.loss_grad(
                            Some(&mut b.ema),
                            &input,
                            Out {
                                grad: Some(&mut b.grad),
                                loss_elems: Some(&mut b.elems),
                                stats: Some(&mut b.stats),
                            },
                        )
                    } else {
                        c.loss_grad(
                            Some(&mut b.ema),
                            &input,
                            Out {
                                grad: Some(&mut b.grad),
                                loss_elems: Some(&mut b.elems),
                                stats: Some(&mut b.stats),
                            },
                        )
                    };
                    // Gradients only: the one call's other path (its inputs are checked
                    // by a screen first, then it stores dl/dx during pass 1).
                    let mut g_only = vec![SENTINEL; n];
                    let mut ema_g = Ema::new(10).unwrap();
                    let fresh = ema_g;
                    let res_g = if is_r {
                        r.loss_grad(Some(&mut ema_g), &input, Out::grad(&mut g_only))
                    } else {
                        c.loss_grad(Some(&mut ema_g), &input, Out::grad(&mut g_only))
                    };
                    if bad {
                        assert_eq!(res, Err(Error::Input), "{ctx} r={is_r} {backend:?}");
                        assert!(b.untouched(10), "{ctx}: wrote on error");
                        assert_eq!(res_g, Err(Error::Input), "{ctx} r={is_r} {backend:?}");
                        assert!(g_only.iter().all(|&v| v == SENTINEL), "{ctx}: wrote");
                        assert_eq!(ema_g, fresh, "{ctx}: EMA moved");
                        // phased: accumulate refuses, apply refuses
                        let mut h = Hist::new(10).unwrap();
                        let acc = if is_r {
                            r.accumulate(&input, &mut h)
                        } else {
                            c.accumulate(&input, &mut h)
                        };
                        assert_eq!(acc, Err(Error::Input));
                        assert_eq!(h, Hist::new(10).unwrap());
                        let w = GhmC::default()
                            .finalize(None, &{
                                let mut h = Hist::new(10).unwrap();
                                h.counts[0] = 1;
                                h
                            })
                            .unwrap();
                        let mut g = vec![SENTINEL; n];
                        let ap = if is_r {
                            GhmR::default().apply(&w, &input, Some(&mut g), None)
                        } else {
                            GhmC::default().apply(&w, &input, Some(&mut g), None)
                        };
                        assert_eq!(ap, Err(Error::Input), "{ctx}");
                        assert!(g.iter().all(|&v| v == SENTINEL));
                    } else {
                        assert!(res.is_ok(), "{ctx}: {res:?}");
                        assert!(res_g.is_ok(), "{ctx}: {res_g:?}");
                    }
                }
            }
        }
    }
}

/// With skip_bad, bad elements are excluded: weight 0, gradient 0, loss element 0, counted
/// in `skipped`; the rest is exactly the batch without them.
#[test]
fn skip_bad_excludes_and_counts() {
    let n = 1000;
    let mut r = Rng(5);
    let (mut x, mut t) = detector_batch(&mut r, n, 0.1, true);
    let mut lw = label_weights(&mut r, n, 0.1, false);
    let mut bad = vec![false; n];
    for i in (3..n).step_by(41) {
        bad[i] = true;
        match i % 4 {
            0 => x[i] = f32::NAN,
            1 => t[i] = 2.0,
            2 => lw[i] = -0.5,
            _ => x[i] = f32::NEG_INFINITY,
        }
    }
    let skipped = bad.iter().filter(|&&b| b).count() as u64;
    let keep: Vec<usize> = (0..n).filter(|&i| !bad[i]).collect();
    let pick = |v: &[f32]| keep.iter().map(|&i| v[i]).collect::<Vec<f32>>();
    let (kx, kt, klw) = (pick(&x), pick(&t), pick(&lw));
    for backend in Backend::all_available() {
        for momentum in [0.0, 0.75] {
            let cfg = GhmC {
                bins: 30,
                momentum,
                skip_bad: true,
                grad_scale: -1.0,
                accumulate: true,
                backend: Some(backend),
                ..GhmC::default()
            };
            let mut e1 = Ema::new(30).unwrap();
            let mut e2 = Ema::new(30).unwrap();
            let mut g = vec![1.0f32; n];
            let mut le = vec![SENTINEL; n];
            let mut s = Stats::default();
            let loss = cfg
                .loss_grad(
                    Some(&mut e1),
                    &Dense::new(&x, &t).label_weight(&lw),
                    Out {
                        grad: Some(&mut g),
                        loss_elems: Some(&mut le),
                        stats: Some(&mut s),
                    },
                )
                .unwrap();
            let mut gk = vec![1.0f32; keep.len()];
            let mut lek = vec![0.0f32; keep.len()];
            let mut sk = Stats::default();
            let clean = GhmC {
                skip_bad: false,
                ..cfg
            };
            let loss_k = clean
                .loss_grad(
                    Some(&mut e2),
                    &Dense::new(&kx, &kt).label_weight(&klw),
                    Out {
                        grad: Some(&mut gk),
                        loss_elems: Some(&mut lek),
                        stats: Some(&mut sk),
                    },
                )
                .unwrap();
            assert_eq!(s.skipped, skipped);
            assert_eq!(sk.skipped, 0);
            assert_eq!(s.counts, sk.counts);
            assert_eq!(s.tot, sk.tot);
            assert!(
                (loss - loss_k).abs() <= f32::EPSILON * loss_k.abs(),
                "{loss} vs {loss_k}"
            );
            assert_eq!(e1, e2);
            for (j, &i) in keep.iter().enumerate() {
                assert_eq!(g[i], gk[j], "element {i}");
                assert_eq!(le[i], lek[j], "element {i}");
            }
            for i in (0..n).filter(|&i| bad[i]) {
                assert_eq!(g[i], 1.0, "bad element {i}: gradient + 0 (accumulate)");
                assert_eq!(le[i], 0.0, "bad element {i}: loss element 0");
            }
        }
    }
    // GHM-R and labels too: skipped counts elements (C per bad anchor weight).
    let labels = vec![1i32; 10];
    let mut aw = vec![1.0f32; 10];
    aw[4] = f32::NAN;
    let p = vec![0.5f32; 30];
    let mut s = Stats::default();
    let cfg = GhmC {
        skip_bad: true,
        ..GhmC::default()
    };
    cfg.loss_grad_labels(
        None,
        &Labels::new(&p, &labels, 3, Layout::ClassMajor).anchor_weight(&aw),
        Out {
            stats: Some(&mut s),
            ..Out::default()
        },
    )
    .unwrap();
    assert_eq!(s.skipped, 3);
    assert_eq!(s.counts.iter().sum::<u64>(), 27);
    let mut s = Stats::default();
    let rx = [1.0f32, f32::NAN, 2.0];
    GhmR {
        skip_bad: true,
        ..GhmR::default()
    }
    .loss_grad(
        None,
        &Dense::new(&rx, &[0.0; 3]),
        Out {
            stats: Some(&mut s),
            ..Out::default()
        },
    )
    .unwrap();
    assert_eq!((s.skipped, s.tot), (1, 2.0));
}

#[test]
fn empty_batches_return_zero_and_write_nothing() {
    for backend in Backend::all_available() {
        let mut b = Bufs::new(0, 10);
        let cfg = GhmC {
            momentum: 0.5,
            backend: Some(backend),
            ..GhmC::default()
        };
        let (ema, out) = b.parts();
        assert_eq!(
            cfg.loss_grad(Some(ema), &Dense::new(&[], &[]), out),
            Ok(0.0)
        );
        assert!(b.untouched(10));
        let r = GhmR {
            momentum: 0.5,
            backend: Some(backend),
            ..GhmR::default()
        };
        let (ema, out) = b.parts();
        assert_eq!(r.loss_grad(Some(ema), &Dense::new(&[], &[]), out), Ok(0.0));
        assert!(b.untouched(10));
        // Zero anchors or zero classes.
        let labels: [i32; 0] = [];
        let (ema, out) = b.parts();
        assert_eq!(
            cfg.loss_grad_labels(
                Some(ema),
                &Labels::new(&[], &labels, 5, Layout::ClassMajor),
                out
            ),
            Ok(0.0)
        );
        let labels = [1i32, 2];
        let (ema, out) = b.parts();
        assert_eq!(
            cfg.loss_grad_labels(
                Some(ema),
                &Labels::new(&[], &labels, 0, Layout::AnchorMajor),
                out
            ),
            Ok(0.0)
        );
        assert!(b.untouched(10));
    }
    // All elements ignored: weights 0, loss 0, gradients 0.
    let x = [3.0f32, -2.0, 0.5];
    let mut g = [SENTINEL; 3];
    let loss = GhmC::default().loss_grad(
        None,
        &Dense::new(&x, &[1.0, 0.0, 1.0]).label_weight(&[0.0; 3]),
        Out::grad(&mut g),
    );
    assert_eq!(loss, Ok(0.0));
    assert_eq!(g, [0.0; 3]);
}

/// Logits of +-1e30 and +-3e38 (and probabilities 0 and 1, and GHM-R's extremes) give finite
/// losses and gradients, agreeing with the f64 reference.
#[test]
fn saturated_inputs_stay_finite() {
    let xs = [
        1e30f32,
        -1e30,
        3e38,
        -3e38,
        f32::MAX,
        -f32::MAX,
        88.7,
        -88.7,
        104.0,
        -104.0,
        0.0,
        1e-30,
        -1e-45,
    ];
    let mut x = Vec::new();
    let mut t = Vec::new();
    for &v in &xs {
        for &target in &[0.0f32, 1.0, 0.5] {
            x.push(v);
            t.push(target);
        }
    }
    let n = x.len();
    for backend in Backend::all_available() {
        for reduction in [Reduction::Mean, Reduction::Sum] {
            let cfg = GhmC {
                bins: 10,
                reduction,
                backend: Some(backend),
                ..GhmC::default()
            };
            let mut g = vec![0.0f32; n];
            let mut le = vec![0.0f32; n];
            let loss = cfg
                .loss_grad(
                    None,
                    &Dense::new(&x, &t),
                    Out {
                        grad: Some(&mut g),
                        loss_elems: Some(&mut le),
                        stats: None,
                    },
                )
                .unwrap();
            assert!(
                g.iter().all(|v| v.is_finite()),
                "{backend:?}: gradient {g:?}"
            );
            let want = reference(
                &RefCfg {
                    kind: Kind::Logits,
                    bins: 10,
                    momentum: 0.0,
                    loss_weight: 1.0,
                    reduction,
                    grad_scale: 1.0,
                },
                None,
                &x,
                &t,
                None,
                None,
            );
            let (ge, gmax) = max_err(&g, &want.grad);
            assert!(ge <= 1e-6 * gmax, "{backend:?}");
            if reduction == Reduction::Mean {
                assert!(loss.is_finite(), "{backend:?}: mean loss {loss}");
                assert!(
                    rel_err(loss as f64, want.loss, 1e-30) < 1e-5,
                    "{backend:?}: {loss} vs {}",
                    want.loss
                );
            }
        }
        // GHM-R: |x - t| up to 1e6 (mmdet's extremes), 1e20 and beyond f32::MAX.
        let rx = [1e6f32, -1e6, 1e20, 3e38, 3e38, 0.0, 1e-8];
        let rt = [0.0f32, 0.0, -1e20, -3e38, 3e38, 0.0, 0.0];
        let mut g = [0.0f32; 7];
        let mut le = [0.0f32; 7];
        let r = GhmR {
            backend: Some(backend),
            ..GhmR::default()
        };
        let loss = r
            .loss_grad(
                None,
                &Dense::new(&rx, &rt),
                Out {
                    grad: Some(&mut g),
                    loss_elems: Some(&mut le),
                    stats: None,
                },
            )
            .unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{backend:?}: {g:?}");
        assert!(
            g[0] > 0.0 && g[1] < 0.0 && g[2] > 0.0 && g[3] > 0.0 && g[4] == 0.0,
            "{g:?}"
        );
        // 3e38 - (-3e38) = 6e38 exceeds f32::MAX: that loss, and only that one, is infinite.
        assert!(le[3].is_infinite() && loss.is_infinite(), "{le:?}");
        assert!(
            le.iter().enumerate().all(|(i, v)| i == 3 || v.is_finite()),
            "{le:?}"
        );
        let rc = RefCfg {
            kind: Kind::R { mu: 0.02 },
            bins: 10,
            momentum: 0.0,
            loss_weight: 1.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
        };
        let want = reference(&rc, None, &rx, &rt, None, None);
        for i in (0..7).filter(|&i| i != 3) {
            assert!(
                rel_err(le[i] as f64, want.loss_elems[i], 1e-30) < 1e-5,
                "{i}: {} vs {}",
                le[i],
                want.loss_elems[i]
            );
        }
        let (ge, gmax) = max_err(&g, &want.grad);
        assert!(ge <= 1e-6 * gmax, "{backend:?}: {g:?} vs {:?}", want.grad);
        // Gradients only (the one call's own pass 2): the same gradients, bit for bit, and
        // the overflowing difference, which the input screen flags, is still accepted.
        let mut g_only = [f32::NAN; 7];
        let loss_only = r
            .loss_grad(None, &Dense::new(&rx, &rt), Out::grad(&mut g_only))
            .unwrap();
        assert_eq!(g_only.map(f32::to_bits), g.map(f32::to_bits), "{backend:?}");
        assert!(loss_only.is_infinite(), "{backend:?}: {loss_only}");
    }
}

/// Above 128Ki elements the one call (GHM-C, gradients only, without `skip_bad`) checks its
/// inputs first and stores `dl/dx` during pass 1 on some backends, and recomputes the model
/// in pass 2 on others (AVX-512). Either way, on every backend: a bad element anywhere, the
/// last one included, fails the call with nothing written and the EMA unmoved; on clean
/// input the gradients are bit-identical to those of the path that also writes per-element
/// losses (which always recomputes), and the loss is within 1 ulp of it.
#[test]
fn large_batches_check_before_writing() {
    let n = (1 << 17) + 8 * 1024 + 13;
    let (x, t, lw) = batch(n);
    for backend in Backend::all_available() {
        let c = GhmC {
            bins: 30,
            momentum: 0.75,
            backend: Some(backend),
            ..GhmC::default()
        };
        let input = Dense::new(&x, &t).label_weight(&lw);
        let mut ema = Ema::new(30).unwrap();
        let mut grad = vec![SENTINEL; n];
        let loss = c
            .loss_grad(Some(&mut ema), &input, Out::grad(&mut grad))
            .unwrap();
        let mut ema_all = Ema::new(30).unwrap();
        let mut grad_all = vec![SENTINEL; n];
        let mut elems = vec![SENTINEL; n];
        let out = Out {
            grad: Some(&mut grad_all),
            loss_elems: Some(&mut elems),
            stats: None,
        };
        let loss_all = c.loss_grad(Some(&mut ema_all), &input, out).unwrap();
        assert_eq!(ema, ema_all, "{backend:?}");
        let diff = (loss.to_bits() as i64 - loss_all.to_bits() as i64).abs();
        assert!(diff <= 1, "{backend:?}: loss {loss} vs {loss_all}");
        for i in 0..n {
            assert_eq!(
                grad[i].to_bits(),
                grad_all[i].to_bits(),
                "{backend:?} at {i}"
            );
        }
        for at in [0, n / 2 + 3, n - 1] {
            for (what, v) in [("pred", f32::NAN), ("target", 2.0), ("weight", -1.0)] {
                let (mut x, mut t, mut lw) = (x.clone(), t.clone(), lw.clone());
                match what {
                    "pred" => x[at] = v,
                    "target" => t[at] = v,
                    _ => lw[at] = v,
                }
                let input = Dense::new(&x, &t).label_weight(&lw);
                let mut ema = Ema::new(30).unwrap();
                let fresh = ema;
                let mut grad = vec![SENTINEL; n];
                let res = c.loss_grad(Some(&mut ema), &input, Out::grad(&mut grad));
                assert_eq!(res, Err(Error::Input), "{backend:?}: {what} at {at}");
                assert!(grad.iter().all(|&g| g == SENTINEL), "{backend:?}: wrote");
                assert_eq!(ema, fresh, "{backend:?}: EMA moved");
            }
        }
    }
}

/// A MEAN over more than 2^24 elements: naive f32 accumulation would stall at 2^24; ours must
/// agree with f64.
#[test]
fn large_sums_do_not_drift() {
    let n = (1usize << 24) + 4099;
    let mut x = vec![0.0f32; n];
    let mut t = vec![0.0f32; n];
    let mut r = Rng(3);
    for i in 0..n {
        x[i] = if i % 1000 == 0 {
            2.0
        } else {
            -3.0 - (i % 17) as f32 * 0.05
        };
        t[i] = if i % 1000 == 0 { 1.0 } else { 0.0 };
        if r.chance(1e-4) {
            x[i] = 5.0; // outlier
        }
    }
    let cfg_ref = RefCfg {
        kind: Kind::Logits,
        bins: 30,
        momentum: 0.0,
        loss_weight: 1.0,
        reduction: Reduction::Sum,
        grad_scale: 1.0,
    };
    let want = reference(&cfg_ref, None, &x, &t, None, None);
    for backend in Backend::all_available() {
        let mut s = Stats::default();
        let cfg = GhmC {
            bins: 30,
            reduction: Reduction::Sum,
            backend: Some(backend),
            ..GhmC::default()
        };
        let loss = cfg
            .loss_grad(
                None,
                &Dense::new(&x, &t),
                Out {
                    stats: Some(&mut s),
                    ..Out::default()
                },
            )
            .unwrap();
        assert_eq!(s.tot, n as f64);
        assert_eq!(s.counts.iter().sum::<u64>(), n as u64);
        let e = rel_err(loss as f64, want.loss, 1e-30);
        assert!(e < 2e-7, "{backend:?}: {loss} vs {} (rel {e:e})", want.loss);
        // The same for GHM-R's tot, a sum of 2^24+ label weights.
        let w = vec![0.1f32; n];
        let mut s = Stats::default();
        GhmR {
            backend: Some(backend),
            ..GhmR::default()
        }
        .loss_grad(
            None,
            &Dense::new(&x, &t).label_weight(&w),
            Out {
                stats: Some(&mut s),
                ..Out::default()
            },
        )
        .unwrap();
        let want_tot = n as f64 * 0.1f32 as f64;
        assert!(
            rel_err(s.tot, want_tot, 1.0) < 1e-12,
            "{backend:?}: tot {} vs {want_tot}",
            s.tot
        );
    }
}

/// Negative zeros are acceptable everywhere (a target or probability of `-0.0` is in
/// `[0, 1]`; a label weight of `-0.0` is not negative). The input check's screen, which
/// compares raw bits, cannot tell them from negative numbers and hands such batches to the
/// exact check: the result must be exactly that of the same batch with `+0.0`, at every
/// position (the tail vector included), for every model, on every backend, through both
/// paths of the one call (gradients only, and all outputs).
#[test]
fn negative_zeros_pass_the_input_check() {
    let n = 53;
    let (x, t, lw) = batch(n);
    let probs: Vec<f32> = x.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect();
    for what in ["pred", "target", "weight"] {
        for at in [0, 7, 31, n - 1] {
            for kind in 0..3 {
                // 0: GHM-C logits, 1: GHM-C probabilities, 2: GHM-R.
                let pred = if kind == 1 { &probs } else { &x };
                let (mut p0, mut t0, mut w0) = (pred.clone(), t.clone(), lw.clone());
                match what {
                    "pred" => p0[at] = 0.0,
                    "target" => t0[at] = 0.0,
                    _ => w0[at] = 0.0,
                }
                let (mut p1, mut t1, mut w1) = (p0.clone(), t0.clone(), w0.clone());
                match what {
                    "pred" => p1[at] = -0.0,
                    "target" => t1[at] = -0.0,
                    _ => w1[at] = -0.0,
                }
                for backend in Backend::all_available() {
                    let ctx = format!("{what} = -0.0 at {at}, kind {kind}, {backend:?}");
                    let run = |p: &[f32], t: &[f32], w: &[f32], all: bool| {
                        let input = Dense::new(p, t).label_weight(w);
                        let mut grad = vec![SENTINEL; n];
                        let mut elems = vec![SENTINEL; n];
                        let out = if all {
                            Out {
                                grad: Some(&mut grad),
                                loss_elems: Some(&mut elems),
                                stats: None,
                            }
                        } else {
                            Out::grad(&mut grad)
                        };
                        let loss = if kind == 2 {
                            let r = GhmR {
                                backend: Some(backend),
                                ..GhmR::default()
                            };
                            r.loss_grad(None, &input, out)
                        } else {
                            let c = GhmC {
                                bins: 30,
                                input: if kind == 1 {
                                    Input::Probs
                                } else {
                                    Input::Logits
                                },
                                backend: Some(backend),
                                ..GhmC::default()
                            };
                            c.loss_grad(None, &input, out)
                        };
                        (loss, grad, elems)
                    };
                    for all in [false, true] {
                        let (l0, g0, e0) = run(&p0, &t0, &w0, all);
                        let (l1, g1, e1) = run(&p1, &t1, &w1, all);
                        assert!(l0.is_ok(), "{ctx}: +0.0 refused: {l0:?}");
                        assert_eq!(l1, l0, "{ctx}, all outputs {all}: loss");
                        let same = |a: &[f32], b: &[f32]| {
                            a.iter()
                                .zip(b)
                                .all(|(u, v)| u == v && u.is_nan() == v.is_nan())
                        };
                        assert!(same(&g1, &g0), "{ctx}, all outputs {all}: gradients");
                        assert!(same(&e1, &e0), "{ctx}, all outputs {all}: loss elements");
                    }
                }
            }
        }
    }
}

/// A label batch is screened from its predictions and anchor weights alone (its targets are
/// 0 and 1). A bad prediction in any row or class plane, or a bad anchor weight, must fail
/// every call that checks (the one call's two paths, the phased accumulate and apply), with
/// nothing written: both layouts, whole and split rows, logits and probabilities, every
/// backend. Inside a chunk of anchors, a bad value outside the chunk fails nothing; labels
/// outside `0..C` (background, -1, extremes) are never an error.
#[test]
fn bad_label_batches_are_refused_in_both_layouts() {
    let anchors = 23;
    let mut r = Rng(5);
    for classes in [3usize, 16, 20] {
        let n = anchors * classes;
        let (x, _) = detector_batch(&mut r, n, 0.1, false);
        let probs: Vec<f32> = x.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect();
        let c = classes as i32;
        let labels: Vec<i32> = (0..anchors as i32)
            .map(|a| [a % c, c, -1, i32::MIN, i32::MAX, 1000][a as usize % 6])
            .collect();
        let aw = label_weights(&mut r, anchors, 0.1, false);
        for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
            let at = |a: usize, k: usize| match layout {
                Layout::AnchorMajor => a * classes + k,
                Layout::ClassMajor => k * anchors + a,
            };
            for probs_in in [false, true] {
                let pred = if probs_in { &probs } else { &x };
                // (prediction at, anchor weight at, value); None: unchanged.
                let mut cases: Vec<(Option<usize>, Option<usize>, f32)> = vec![];
                for a in [0, 11, anchors - 1] {
                    for k in [0, classes / 2, classes - 1] {
                        cases.push((Some(at(a, k)), None, f32::NAN));
                        cases.push((Some(at(a, k)), None, f32::INFINITY));
                        if probs_in {
                            cases.push((Some(at(a, k)), None, 1.5));
                        }
                    }
                    for v in [f32::NAN, -1.0, f32::INFINITY] {
                        cases.push((None, Some(a), v));
                    }
                }
                for backend in Backend::all_available() {
                    let cfg = GhmC {
                        bins: 30,
                        momentum: 0.75,
                        input: if probs_in {
                            Input::Probs
                        } else {
                            Input::Logits
                        },
                        backend: Some(backend),
                        ..GhmC::default()
                    };
                    // Clean: every call succeeds, out-of-range labels included.
                    let clean = Labels::new(pred, &labels, classes, layout).anchor_weight(&aw);
                    let mut g = vec![SENTINEL; n];
                    let mut ema = Ema::new(30).unwrap();
                    let ok = cfg.loss_grad_labels(Some(&mut ema), &clean, Out::grad(&mut g));
                    assert!(ok.is_ok(), "C {classes} {layout:?} {backend:?}: {ok:?}");
                    for &(p_at, w_at, v) in &cases {
                        let ctx = format!(
                            "C {classes} {layout:?} probs {probs_in} {backend:?}: pred at \
                             {p_at:?}, weight at {w_at:?} = {v}"
                        );
                        let (mut p, mut w) = (pred.clone(), aw.clone());
                        if let Some(i) = p_at {
                            p[i] = v;
                        }
                        if let Some(a) = w_at {
                            w[a] = v;
                        }
                        let bad_anchor = w_at.unwrap_or_else(|| {
                            let i = p_at.unwrap();
                            match layout {
                                Layout::AnchorMajor => i / classes,
                                Layout::ClassMajor => i % anchors,
                            }
                        });
                        let input = Labels::new(&p, &labels, classes, layout).anchor_weight(&w);
                        let mut b = Bufs::new(n, 30);
                        let (ema, out) = b.parts();
                        assert_eq!(
                            cfg.loss_grad_labels(Some(ema), &input, out),
                            Err(Error::Input),
                            "{ctx}: all outputs"
                        );
                        assert!(b.untouched(30), "{ctx}: wrote");
                        let mut g = vec![SENTINEL; n];
                        let mut ema = Ema::new(30).unwrap();
                        let fresh = ema;
                        assert_eq!(
                            cfg.loss_grad_labels(Some(&mut ema), &input, Out::grad(&mut g)),
                            Err(Error::Input),
                            "{ctx}: gradients only"
                        );
                        assert!(g.iter().all(|&v| v == SENTINEL), "{ctx}: wrote");
                        assert_eq!(ema, fresh, "{ctx}: EMA moved");
                        let mut h = Hist::new(30).unwrap();
                        assert_eq!(
                            cfg.accumulate_labels(&input, &mut h),
                            Err(Error::Input),
                            "{ctx}: accumulate"
                        );
                        let mut one = Hist::new(30).unwrap();
                        one.counts[0] = 1;
                        let weights = cfg.finalize(Some(&mut Ema::new(30).unwrap()), &one);
                        let weights = weights.unwrap();
                        let mut g = vec![SENTINEL; n];
                        assert_eq!(
                            cfg.apply_labels(&weights, &input, Some(&mut g), None),
                            Err(Error::Input),
                            "{ctx}: apply"
                        );
                        assert!(g.iter().all(|&v| v == SENTINEL), "{ctx}: wrote");
                        // Chunks: only the one holding the bad anchor fails.
                        for chunk in [0..5, 5..12, 12..anchors] {
                            let inside = chunk.contains(&bad_anchor);
                            let part = input.clone().anchors(chunk.clone());
                            let mut g = vec![SENTINEL; n];
                            let res = cfg.apply_labels(&weights, &part, Some(&mut g), None);
                            let mut h = Hist::new(30).unwrap();
                            let acc = cfg.accumulate_labels(&part, &mut h);
                            if inside {
                                assert_eq!(res, Err(Error::Input), "{ctx}: apply {chunk:?}");
                                assert_eq!(acc, Err(Error::Input), "{ctx}: acc {chunk:?}");
                                assert!(g.iter().all(|&v| v == SENTINEL), "{ctx}: wrote");
                            } else {
                                assert_eq!(res, Ok(()), "{ctx}: apply {chunk:?}");
                                assert_eq!(acc, Ok(()), "{ctx}: acc {chunk:?}");
                            }
                        }
                    }
                }
            }
        }
    }
}
