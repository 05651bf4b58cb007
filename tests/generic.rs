//! Generic GHM ("bring your own g", `GhmG`): GHM-C and GHM-R fed their own gradient norms and
//! gradients through it give their own weights and gradients bit for bit, on every backend;
//! `g_max`, strided rows of `k` floats, the phased path, every tail length, and every error
//! path (nothing written).

mod common;

use common::{detector_batch, Rng};
use ghm::{
    Backend, Dense, Ema, Error, GOut, GhmC, GhmG, GhmR, GradRows, Hist, Input, Out, Reduction,
    Samples, Stats,
};

fn backends() -> Vec<Backend> {
    Backend::all_available().collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

/// Label weights: 0/1, about 3% zeros.
fn mask(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| if rng.chance(0.03) { 0.0 } else { 1.0 })
        .collect()
}

/// Each element's `dl/dx` and unweighted loss as a model's kernel computes them: `call` is
/// its one call with a single bin and SUM, where every valid weight is 1, so that the
/// gradient is `1 * dl/dx` and the loss element `1 * 1 * l`.
fn raw(n: usize, call: impl FnOnce(Out<'_>) -> Result<f32, Error>) -> (Vec<f32>, Vec<f32>) {
    let (mut d, mut l) = (vec![0.0; n], vec![0.0; n]);
    let out = Out {
        grad: Some(&mut d),
        loss_elems: Some(&mut l),
        stats: None,
    };
    call(out).unwrap();
    (d, l)
}

/// [`raw`] of GHM-C on `backend`.
fn raw_c(backend: Backend, input: Input, x: &[f32], t: &[f32], w: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let one = GhmC {
        bins: 1,
        reduction: Reduction::Sum,
        input,
        backend: Some(backend),
        ..GhmC::default()
    };
    raw(x.len(), |out| {
        one.loss_grad(None, &Dense::new(x, t).label_weight(w), out)
    })
}

/// [`raw`] of GHM-R on `backend`.
fn raw_r(backend: Backend, x: &[f32], t: &[f32], w: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let one = GhmR {
        bins: 1,
        reduction: Reduction::Sum,
        backend: Some(backend),
        ..GhmR::default()
    };
    raw(x.len(), |out| {
        one.loss_grad(None, &Dense::new(x, t).label_weight(w), out)
    })
}

/// The generic configuration with a model's shared settings.
fn generic(bins: u32, momentum: f32, reduction: Reduction, backend: Backend) -> GhmG {
    GhmG {
        bins,
        momentum,
        loss_weight: 0.7,
        reduction,
        grad_scale: -1.5,
        backend: Some(backend),
        ..GhmG::default()
    }
}

#[test]
fn ghm_c_through_the_generic_path_is_ghm_c() {
    let mut rng = Rng(11);
    for backend in backends() {
        for input in [Input::Logits, Input::Probs] {
            for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
                let n = 5000 + rng.below(300);
                let (mut x, t) = detector_batch(&mut rng, n, 0.05, false);
                if input == Input::Probs {
                    x.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
                }
                let w = mask(&mut rng, n);
                let (d, l) = raw_c(backend, input, &x, &t, &w);
                let g: Vec<f32> = d.iter().map(|v| v.abs()).collect();
                let c = GhmC {
                    bins: 30,
                    momentum: 0.75,
                    loss_weight: 0.7,
                    reduction,
                    grad_scale: -1.5,
                    input,
                    backend: Some(backend),
                    ..GhmC::default()
                };
                let gg = generic(30, 0.75, reduction, backend);
                let (mut ema_c, mut ema_g) = (Ema::new(30).unwrap(), Ema::new(30).unwrap());
                // Two batches: the second one's weights come through the EMA.
                for _ in 0..2 {
                    let mut grad_c = vec![0.0; n];
                    let mut stats_c = Stats::default();
                    let out = Out {
                        grad: Some(&mut grad_c),
                        loss_elems: None,
                        stats: Some(&mut stats_c),
                    };
                    let input_c = Dense::new(&x, &t).label_weight(&w);
                    let loss_c = c.loss_grad(Some(&mut ema_c), &input_c, out).unwrap();

                    let mut rows = d.clone();
                    let mut stats_g = Stats::default();
                    let samples = Samples::new(&g).loss(&l).valid(&w);
                    let out = GOut {
                        rows: Some(GradRows::new(&mut rows, 1)),
                        factor: None,
                        stats: Some(&mut stats_g),
                    };
                    let loss_g = gg.loss_grad(Some(&mut ema_g), &samples, out).unwrap();

                    let what = format!("{backend:?} {input:?} {reduction:?}");
                    assert_eq!(bits(&rows), bits(&grad_c), "{what}: gradients");
                    assert_eq!(bits(&stats_g.weights), bits(&stats_c.weights), "{what}");
                    assert_eq!(stats_g.counts, stats_c.counts, "{what}");
                    assert_eq!(stats_g.tot, stats_c.tot, "{what}");
                    assert_eq!(ema_g, ema_c, "{what}: EMA");
                    assert!(ulps(loss_g, loss_c) <= 1, "{what}: {loss_g} vs {loss_c}");
                }
            }
        }
    }
}

#[test]
fn ghm_r_through_the_generic_path_is_ghm_r() {
    let mut rng = Rng(12);
    for backend in backends() {
        let n = 3001;
        let x: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 0.3).collect();
        let t: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 0.3).collect();
        let w = mask(&mut rng, n);
        let (d, l) = raw_r(backend, &x, &t, &w);
        let g: Vec<f32> = d.iter().map(|v| v.abs()).collect();
        let r = GhmR {
            bins: 10,
            loss_weight: 0.7,
            grad_scale: -1.5,
            backend: Some(backend),
            ..GhmR::default()
        };
        let mut grad_r = vec![0.0; n];
        let mut stats_r = Stats::default();
        let out = Out {
            grad: Some(&mut grad_r),
            loss_elems: None,
            stats: Some(&mut stats_r),
        };
        let loss_r = r
            .loss_grad(None, &Dense::new(&x, &t).label_weight(&w), out)
            .unwrap();
        let mut rows = d.clone();
        let mut stats_g = Stats::default();
        let out = GOut {
            rows: Some(GradRows::new(&mut rows, 1)),
            factor: None,
            stats: Some(&mut stats_g),
        };
        let samples = Samples::new(&g).loss(&l).valid(&w);
        let gg = generic(10, 0.0, Reduction::Mean, backend);
        let loss_g = gg.loss_grad(None, &samples, out).unwrap();
        assert_eq!(bits(&rows), bits(&grad_r), "{backend:?}: gradients");
        assert_eq!(
            bits(&stats_g.weights),
            bits(&stats_r.weights),
            "{backend:?}"
        );
        assert!(
            ulps(loss_g, loss_r) <= 1,
            "{backend:?}: {loss_g} vs {loss_r}"
        );
    }
}

/// Gradient norms spread over `[0, 1.2)`, with every bin edge and a value 1 ulp either side.
fn norms(rng: &mut Rng, n: usize, bins: u32) -> Vec<f32> {
    let mut g: Vec<f32> = (0..n).map(|_| rng.range(0.0, 1.2) as f32).collect();
    for k in 0..=bins {
        let e = k as f32 / bins as f32;
        for v in [
            e,
            f32::from_bits(e.to_bits().saturating_sub(1)),
            e.next_up(),
        ] {
            g[rng.below(n)] = v;
        }
    }
    g
}

#[test]
fn every_backend_and_tail_length_gives_the_scalar_factors() {
    let mut rng = Rng(13);
    let lengths: Vec<usize> = (0..=70).chain(126..=131).chain([1000, 4099]).collect();
    for &n in &lengths {
        let g = norms(&mut rng, n.max(1), 7)[..n].to_vec();
        let l: Vec<f32> = (0..n).map(|_| rng.range(0.0, 3.0) as f32).collect();
        let w = mask(&mut rng, n);
        let samples = Samples::new(&g).loss(&l).valid(&w);
        let run = |backend| {
            let mut f = vec![f32::NAN; n];
            let mut stats = Stats::default();
            let out = GOut {
                rows: None,
                factor: Some(&mut f),
                stats: Some(&mut stats),
            };
            let loss = generic(7, 0.0, Reduction::Mean, backend)
                .loss_grad(None, &samples, out)
                .unwrap();
            (f, stats, loss)
        };
        let (f0, s0, l0) = run(Backend::Scalar);
        for backend in backends() {
            let (f, s, l) = run(backend);
            assert_eq!(bits(&f), bits(&f0), "{backend:?}, n = {n}: factors");
            assert_eq!(s.counts, s0.counts, "{backend:?}, n = {n}");
            assert!(ulps(l, l0) <= 1, "{backend:?}, n = {n}: {l} vs {l0}");
        }
        // Invalid samples get factor 0; valid ones the factor of their bin.
        for i in 0..n {
            assert_eq!(f0[i] == 0.0, w[i] == 0.0, "n = {n}, sample {i}");
        }
    }
}

#[test]
fn g_max_scales_the_bins_and_caps_the_last() {
    let mut rng = Rng(14);
    let n = 2000;
    let g = norms(&mut rng, n, 10);
    let l: Vec<f32> = (0..n).map(|_| rng.range(0.0, 1.0) as f32).collect();
    for backend in backends() {
        let factors = |g_max: f32, g: &[f32]| {
            let mut f = vec![0.0; n];
            let mut stats = Stats::default();
            let cfg = GhmG {
                g_max,
                ..generic(10, 0.0, Reduction::Sum, backend)
            };
            let out = GOut {
                rows: None,
                factor: Some(&mut f),
                stats: Some(&mut stats),
            };
            cfg.loss_grad(None, &Samples::new(g).loss(&l), out).unwrap();
            (f, stats)
        };
        // g_max 4 on 4g: the same bins as g_max 1 on g (4g / 4 is g exactly).
        let g4: Vec<f32> = g.iter().map(|v| v * 4.0).collect();
        let (f1, s1) = factors(1.0, &g);
        let (f4, s4) = factors(4.0, &g4);
        assert_eq!(bits(&f1), bits(&f4), "{backend:?}");
        assert_eq!(s1.counts, s4.counts, "{backend:?}");
        // Every g >= g_max (here 1.2 > g >= 1) is in the last bin.
        let at_least_one = g.iter().filter(|&&v| v >= 1.0).count() as u64;
        let last_edge_below = g.iter().filter(|&&v| (0.9..1.0).contains(&v)).count() as u64;
        assert_eq!(s1.counts[9], at_least_one + last_edge_below, "{backend:?}");
    }
}

#[test]
fn rows_of_k_floats_in_any_layout_are_multiplied_by_their_factor() {
    let mut rng = Rng(15);
    let n = 333;
    let g = norms(&mut rng, n, 10);
    let w = mask(&mut rng, n);
    // (k, stride, elem_stride): packed widths with a loop of their own (1, 2, 3, 4, 8),
    // others, strided rows, planar rows ([k][n], as Darknet's box deltas) with and without a
    // gap, and rows of spaced floats.
    let shapes = [
        (1, 1, 1),
        (2, 2, 1),
        (3, 3, 1),
        (4, 4, 1),
        (5, 5, 1),
        (8, 8, 1),
        (9, 9, 1),
        (4, 6, 1),
        (1, 3, 7),
        (4, 1, n),
        (4, 1, n + 5),
        (3, 2, 2 * n),
        (3, 7, 2),
    ];
    for (k, stride, elem) in shapes {
        let len = (n - 1) * stride + (k - 1) * elem + 1 + 3;
        let data: Vec<f32> = (0..len).map(|_| rng.range(-2.0, 2.0) as f32).collect();
        // The sample of each float of `data`, if any.
        let mut owner = vec![None; len];
        for i in 0..n {
            for j in 0..k {
                assert!(owner[i * stride + j * elem].replace(i).is_none(), "overlap");
            }
        }
        for backend in backends() {
            let mut rows = data.clone();
            let mut f = vec![0.0; n];
            let out = GOut {
                rows: Some(GradRows::laid_out(&mut rows, k, stride, elem)),
                factor: Some(&mut f),
                stats: None,
            };
            let cfg = generic(10, 0.0, Reduction::Mean, backend);
            let loss = cfg
                .loss_grad(None, &Samples::new(&g).valid(&w), out)
                .unwrap();
            assert_eq!(loss, 0.0, "no losses given");
            for (x, ((&got, &was), o)) in rows.iter().zip(&data).zip(&owner).enumerate() {
                let want = match *o {
                    None => was, // between the rows, or past the last: untouched
                    Some(i) if f[i] == 0.0 => 0.0,
                    Some(i) => was * f[i],
                };
                let what = format!("{backend:?}, k {k}, stride {stride}, elem {elem}, float {x}");
                assert_eq!(got.to_bits(), want.to_bits(), "{what}");
            }
        }
    }
    // Layouts whose rows share a float, or that do not fit, are refused.
    let mut data = vec![0.0f32; 4 * n];
    for (k, stride, elem, len) in [
        (4, 2, 1, 4 * n),     // rows of 4 floats 2 apart
        (4, 1, n - 1, 4 * n), // planar, one float short of the rows
        (2, 2, 2, 4 * n),     // every float shared
        (4, 4, 1, 4 * n - 1), // one float short
        (0, 1, 1, 4 * n),     // no float
    ] {
        let out = GOut {
            rows: Some(GradRows::laid_out(&mut data[..len], k, stride, elem)),
            ..GOut::default()
        };
        let r = GhmG::default().loss_grad(None, &Samples::new(&g), out);
        assert_eq!(r, Err(Error::Shape), "k {k}, stride {stride}, elem {elem}");
    }
}

/// Darknet's box deltas in place: `[batch][anchor][4 + 1 + C][h * w]`, a block of `h * w`
/// planar rows of 4 per image and anchor, the objectness and class channels between them
/// untouched. A last block may be partial.
#[test]
fn rows_in_blocks_as_darknets_delta_buffer() {
    let mut rng = Rng(18);
    let (batch, anchors, hw, classes) = (2, 3, 7, 2);
    let ch = 4 + 1 + classes;
    let delta: Vec<f32> = (0..batch * anchors * ch * hw)
        .map(|_| rng.range(-1.0, 1.0) as f32)
        .collect();
    let full = batch * anchors * hw;
    for n in [full, full - 3] {
        let g = norms(&mut rng, n, 10);
        for backend in backends() {
            let cfg = generic(10, 0.0, Reduction::Sum, backend);
            let mut d = delta.clone();
            let mut f = vec![0.0; n];
            let rows = GradRows::laid_out(&mut d, 4, 1, hw).blocks(hw, ch * hw);
            let out = GOut {
                rows: Some(rows),
                factor: Some(&mut f),
                stats: None,
            };
            cfg.loss_grad(None, &Samples::new(&g), out).unwrap();
            for (x, (&got, &was)) in d.iter().zip(&delta).enumerate() {
                let (block, c, pos) = (x / (ch * hw), x / hw % ch, x % hw);
                let sample = block * hw + pos;
                let want = if c < 4 && sample < n {
                    scaled(was, f[sample])
                } else {
                    was
                };
                let what = format!("{backend:?}, n {n}, float {x} (channel {c})");
                assert_eq!(got.to_bits(), want.to_bits(), "{what}");
            }
        }
    }
    // Blocks closer than a block's extent overlap: refused.
    let g = vec![0.5f32; full];
    let mut d = delta.clone();
    let rows = GradRows::laid_out(&mut d, 4, 1, hw).blocks(hw, 4 * hw - 1);
    let out = GOut {
        rows: Some(rows),
        ..GOut::default()
    };
    let r = GhmG::default().loss_grad(None, &Samples::new(&g), out);
    assert_eq!(r, Err(Error::Shape));
    assert_eq!(bits(&d), bits(&delta));
}

fn scaled(v: f32, f: f32) -> f32 {
    if f == 0.0 {
        0.0
    } else {
        v * f
    }
}

#[test]
fn the_phased_path_gives_the_one_call_bit_for_bit() {
    let mut rng = Rng(16);
    let n = 10_000;
    let g = norms(&mut rng, n, 30);
    let l: Vec<f32> = (0..n).map(|_| rng.range(0.0, 5.0) as f32).collect();
    let w = mask(&mut rng, n);
    let d: Vec<f32> = (0..2 * n).map(|_| rng.range(-1.0, 1.0) as f32).collect();
    for backend in backends() {
        let cfg = generic(30, 0.6, Reduction::Mean, backend);
        let mut ema1 = Ema::new(30).unwrap();
        let mut rows1 = d.clone();
        let mut f1 = vec![0.0; n];
        let out = GOut {
            rows: Some(GradRows::new(&mut rows1, 2)),
            factor: Some(&mut f1),
            stats: None,
        };
        let samples = Samples::new(&g).loss(&l).valid(&w);
        let loss1 = cfg.loss_grad(Some(&mut ema1), &samples, out).unwrap();

        // Chunks of uneven sizes, accumulated out of order.
        let cuts = [0, 17, 4096, 4097, 7000, n];
        let chunk = |c: usize| cuts[c]..cuts[c + 1];
        let part = |r: std::ops::Range<usize>| {
            Samples::new(&g[r.clone()]).loss(&l[r.clone()]).valid(&w[r])
        };
        let mut hist = Hist::new(30).unwrap();
        for c in [3, 0, 4, 1, 2] {
            let mut h = Hist::new(30).unwrap();
            cfg.accumulate(&part(chunk(c)), &mut h).unwrap();
            hist.merge(&h).unwrap();
        }
        let mut ema2 = Ema::new(30).unwrap();
        let weights = cfg.finalize(Some(&mut ema2), &hist).unwrap();
        let mut rows2 = d.clone();
        let mut f2 = vec![0.0; n];
        for c in 0..5 {
            let r = chunk(c);
            let rows = GradRows::new(&mut rows2[2 * r.start..2 * r.end], 2);
            cfg.apply(&weights, &part(r.clone()), Some(rows), Some(&mut f2[r]))
                .unwrap();
        }
        assert_eq!(bits(&rows1), bits(&rows2), "{backend:?}: rows");
        assert_eq!(bits(&f1), bits(&f2), "{backend:?}: factors");
        assert_eq!(ema1, ema2, "{backend:?}: EMA");
        assert!(ulps(loss1, weights.loss as f32) <= 1, "{backend:?}");
    }
}

#[test]
fn errors_write_nothing() {
    let n = 50;
    let g = vec![0.25f32; n];
    let l = vec![1.0f32; n];
    let d = vec![0.5f32; 3 * n];
    let cfg = GhmG {
        momentum: 0.5,
        ..GhmG::default()
    };
    let call = |cfg: &GhmG, samples: &Samples<'_>, k: usize, stride: usize, nf: usize| {
        let mut ema = Ema::new(cfg.bins.max(1)).unwrap();
        let ema0 = ema;
        let mut rows = d.clone();
        let mut f = vec![7.0f32; nf];
        let mut stats = Stats::default();
        let out = GOut {
            rows: Some(GradRows::strided(&mut rows, k, stride)),
            factor: Some(&mut f),
            stats: Some(&mut stats),
        };
        let r = cfg.loss_grad(Some(&mut ema), samples, out);
        if r.is_err() {
            assert_eq!(ema, ema0, "EMA written on {r:?}");
            assert_eq!(bits(&rows), bits(&d), "rows written on {r:?}");
            assert!(f.iter().all(|&v| v == 7.0), "factors written on {r:?}");
            assert_eq!(stats, Stats::default(), "stats written on {r:?}");
        }
        r.map(|_| ())
    };
    let ok = Samples::new(&g).loss(&l);
    assert_eq!(call(&cfg, &ok, 3, 3, n), Ok(()));
    // Bad samples: a NaN, infinite or negative g or loss, a bad validity weight.
    for (what, v) in [("NaN", f32::NAN), ("inf", f32::INFINITY), ("neg", -1e-30)] {
        for at in [0, 17, n - 1] {
            let mut bad = g.clone();
            bad[at] = v;
            let s = Samples::new(&bad).loss(&l);
            assert_eq!(
                call(&cfg, &s, 3, 3, n),
                Err(Error::Input),
                "g {what} at {at}"
            );
            let mut bad = l.clone();
            bad[at] = v;
            let s = Samples::new(&g).loss(&bad);
            assert_eq!(
                call(&cfg, &s, 3, 3, n),
                Err(Error::Input),
                "loss {what} at {at}"
            );
            let mut bad = vec![1.0f32; n];
            bad[at] = v;
            let s = Samples::new(&g).valid(&bad);
            assert_eq!(
                call(&cfg, &s, 3, 3, n),
                Err(Error::Input),
                "valid {what} at {at}"
            );
        }
    }
    // -0.0 is a good g, loss and weight.
    let mut z = g.clone();
    z[3] = -0.0;
    assert_eq!(
        call(&cfg, &Samples::new(&z).loss(&z).valid(&z), 3, 3, n),
        Ok(())
    );
    // Shapes.
    assert_eq!(
        call(&cfg, &Samples::new(&g).loss(&l[1..]), 3, 3, n),
        Err(Error::Shape)
    );
    assert_eq!(
        call(&cfg, &Samples::new(&g).valid(&l[1..]), 3, 3, n),
        Err(Error::Shape)
    );
    assert_eq!(call(&cfg, &ok, 0, 0, n), Err(Error::Shape), "k = 0");
    assert_eq!(
        call(&cfg, &ok, 3, 2, n),
        Err(Error::Shape),
        "overlapping rows"
    );
    assert_eq!(
        call(&cfg, &ok, 4, 4, n),
        Err(Error::Shape),
        "rows too short"
    );
    assert_eq!(
        call(&cfg, &ok, 3, 3, n - 1),
        Err(Error::Shape),
        "factors too short"
    );
    // Configuration and state.
    for g_max in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let c = GhmG { g_max, ..cfg };
        assert_eq!(call(&c, &ok, 3, 3, n), Err(Error::Config), "g_max {g_max}");
    }
    let c = GhmG { bins: 0, ..cfg };
    assert_eq!(c.validate(), Err(Error::Config));
    let mut rows = d.clone();
    let out = GOut {
        rows: Some(GradRows::new(&mut rows, 3)),
        ..GOut::default()
    };
    assert_eq!(cfg.loss_grad(None, &ok, out), Err(Error::State), "no EMA");
    assert_eq!(bits(&rows), bits(&d));
    // The phased apply refuses a bad chunk before writing, and weights of other bins.
    let weights = GhmG::default()
        .finalize(None, &{
            let mut h = Hist::new(10).unwrap();
            GhmG::default().accumulate(&ok, &mut h).unwrap();
            h
        })
        .unwrap();
    let mut bad = g.clone();
    bad[9] = f32::NAN;
    let mut rows = d.clone();
    let r = GhmG::default().apply(
        &weights,
        &Samples::new(&bad),
        Some(GradRows::new(&mut rows, 3)),
        None,
    );
    assert_eq!(r, Err(Error::Input));
    assert_eq!(bits(&rows), bits(&d));
    let other = GhmG {
        bins: 11,
        ..GhmG::default()
    };
    let r = other.apply(&weights, &ok, Some(GradRows::new(&mut rows, 3)), None);
    assert_eq!(r, Err(Error::State));
    assert_eq!(bits(&rows), bits(&d));
}

#[test]
fn skip_bad_zeroes_the_bad_samples_and_counts_them() {
    let mut rng = Rng(17);
    let n = 777;
    let mut g = norms(&mut rng, n, 10);
    let bad = [3, 100, 400, 776];
    for (j, &i) in bad.iter().enumerate() {
        g[i] = [f32::NAN, -1.0, f32::INFINITY, f32::NEG_INFINITY][j];
    }
    for backend in backends() {
        let cfg = GhmG {
            skip_bad: true,
            ..generic(10, 0.0, Reduction::Mean, backend)
        };
        let mut rows = vec![1.0f32; n];
        let mut stats = Stats::default();
        let out = GOut {
            rows: Some(GradRows::new(&mut rows, 1)),
            factor: None,
            stats: Some(&mut stats),
        };
        cfg.loss_grad(None, &Samples::new(&g), out).unwrap();
        assert_eq!(stats.skipped, bad.len() as u64, "{backend:?}");
        assert_eq!(stats.tot, (n - bad.len()) as f64, "{backend:?}");
        for (i, v) in rows.iter().enumerate() {
            let zero = v.to_bits() == 0;
            assert_eq!(zero, bad.contains(&i), "{backend:?}, sample {i}: {v}");
        }
    }
}

/// With `skip_bad`, a sample whose loss is bad (its `g` good) is excluded by pass 1, so pass 2
/// gives it factor 0 too: in the one call, and in the phased apply given the same losses.
#[test]
fn skip_bad_excludes_a_bad_loss_in_both_passes() {
    let n = 300;
    let g: Vec<f32> = (0..n).map(|i| (i % 10) as f32 / 10.0).collect();
    let mut l = vec![1.0f32; n];
    l[7] = f32::NAN;
    l[123] = -2.0;
    for backend in backends() {
        let cfg = GhmG {
            skip_bad: true,
            ..generic(10, 0.0, Reduction::Mean, backend)
        };
        let samples = Samples::new(&g).loss(&l);
        let mut f = vec![1.0f32; n];
        let mut stats = Stats::default();
        let out = GOut {
            factor: Some(&mut f),
            stats: Some(&mut stats),
            ..GOut::default()
        };
        cfg.loss_grad(None, &samples, out).unwrap();
        assert_eq!(stats.skipped, 2, "{backend:?}");
        let mut h = Hist::new(10).unwrap();
        cfg.accumulate(&samples, &mut h).unwrap();
        let w = cfg.finalize(None, &h).unwrap();
        let mut f2 = vec![1.0f32; n];
        cfg.apply(&w, &samples, None, Some(&mut f2)).unwrap();
        for f in [&f, &f2] {
            assert!(f[7] == 0.0 && f[123] == 0.0 && f[8] != 0.0, "{backend:?}");
        }
        assert_eq!(bits(&f), bits(&f2), "{backend:?}");
    }
}

#[test]
fn no_samples_write_nothing_and_return_zero() {
    let mut ema = Ema::new(10).unwrap();
    let ema0 = ema;
    let mut stats = Stats::default();
    let out = GOut {
        stats: Some(&mut stats),
        ..GOut::default()
    };
    let cfg = GhmG {
        momentum: 0.9,
        ..GhmG::default()
    };
    assert_eq!(
        cfg.loss_grad(Some(&mut ema), &Samples::new(&[]), out),
        Ok(0.0)
    );
    assert_eq!(ema, ema0);
    assert_eq!(stats, Stats::default());
}

#[test]
fn readme_custom_loss_recipe_is_the_example_code() {
    let heading = "### GHM for a loss of your own (bring your own g)";
    let block = common::readme_recipe(heading, "ffi-tests/examples/custom_loss.c");
    assert!(block.contains("ghm_g_loss_grad"), "the recipe calls GHM");
}
