//! What the fuzz targets (fuzz/) found, each kept as a test of its own, through the C ABI as
//! the fuzzer called it. Each failed before its fix.

mod common;

use common::on_every_backend;
use core::ptr::{null, null_mut};
use ghm::ffi::*;
use ghm::{Ema, Stats};

/// GHM-R's one call through the C ABI (no gradient): its status and loss, and the
/// per-element losses into `elems` if given.
fn r_one_call(
    cfg: &ghm_r_config,
    x: &[f32],
    t: &[f32],
    elems: Option<&mut [f32]>,
) -> (ghm_status, f32) {
    assert_eq!(x.len(), t.len());
    assert!(elems.as_ref().is_none_or(|e| e.len() == x.len()));
    let le = elems.map_or(null_mut(), |e| e.as_mut_ptr());
    let mut loss = 0.0f32;
    // SAFETY: `x.len()` elements each (checked).
    let s = unsafe {
        ghm_r_loss_grad(
            cfg,
            null_mut(),
            x.as_ptr(),
            t.as_ptr(),
            null(),
            x.len(),
            null_mut(),
            &mut loss,
            le,
            null_mut(),
        )
    };
    (s, loss)
}

/// GHM-R's one call summed `w_k * l_i` rounded to f32 on the vector backends: an element
/// whose loss is near f32::MAX, in a bin of weight > 1, made the reduced loss +inf there and
/// finite on the scalar path (which multiplies in f64). Now every backend gives the scalar
/// path's loss (within 1 ulp).
#[test]
fn ghm_r_losses_near_f32_max_reduce_alike_on_every_backend() {
    // 3 huge differences (one bin) among 40 ordinary ones: that bin's weight is > 1.
    let mut x = [0.5f32; 43];
    let t = [0.0f32; 43];
    x[7] = -3.4028235e38;
    x[19] = 3.4028235e38;
    x[30] = -3e38;
    let mut cfg = ghm_r_config_default();
    cfg.mu = 1e30;
    cfg.bins = 12;
    let mut want = None;
    on_every_backend(|b| {
        let (s, loss) = r_one_call(&cfg, &x, &t, None);
        assert_eq!(s, GHM_OK);
        assert!(loss.is_finite(), "{b:?}: loss {loss}");
        let w = *want.get_or_insert(loss);
        assert!(
            loss.to_bits().abs_diff(w.to_bits()) <= 1,
            "{b:?}: {loss} vs {w}"
        );
    });
}

/// With `mu` below 2^-63, `mu * mu` underflows f32 and an element predicted exactly got
/// `g = 0/0`: each backend binned the NaN differently. Such a `mu` is now refused;
/// `GhmR::MU_MIN` itself works, and an exact prediction has `g = 0` (the first bin).
#[test]
fn ghm_r_refuses_a_mu_whose_square_underflows() {
    let x = [0.0f32, 1.0, -2.0, 0.25];
    let t = [0.0f32, 0.0, 0.0, 0.0];
    let mut cfg = ghm_r_config_default();
    for (mu, ok) in [
        (1e-30f32, false),
        (f32::from_bits(ghm::GhmR::MU_MIN.to_bits() - 1), false),
        (ghm::GhmR::MU_MIN, true),
        (1e-10, true),
    ] {
        cfg.mu = mu;
        on_every_backend(|b| {
            let mut grad = [7.0f32; 4];
            let mut stats = Stats::default();
            // SAFETY: 4 elements each.
            let s = unsafe {
                ghm_r_loss_grad(
                    &cfg,
                    null_mut(),
                    x.as_ptr(),
                    t.as_ptr(),
                    null(),
                    4,
                    grad.as_mut_ptr(),
                    null_mut(),
                    null_mut(),
                    &mut stats,
                )
            };
            if ok {
                assert_eq!(s, GHM_OK, "mu {mu:e} on {b:?}");
                assert_eq!(stats.counts[0], 1, "mu {mu:e} on {b:?}: d = 0 in bin 0");
                assert_eq!(stats.counts[..10].iter().sum::<u64>(), 4);
            } else {
                assert_eq!(s, GHM_ERR_CONFIG, "mu {mu:e} on {b:?}");
                assert_eq!(grad, [7.0; 4], "refused but wrote");
            }
        });
    }
}

/// Generic GHM's rows accepted a layout in which one float is several of a sample's floats
/// (`elem_stride` 0, one sample per block) or several samples' (`row_stride` 0, `k` 1): the
/// float was multiplied by the factor again and again. Both are refused now (GHM_ERR_SHAPE,
/// nothing written), in C and in Rust.
#[test]
fn generic_rows_that_reuse_a_float_are_refused() {
    let g = [0.1f32, 0.5, 0.9, 0.3];
    let cfg = ghm_g_config_default();
    // (k, row_stride, elem_stride, block_len, block_stride)
    for (k, rs, es, bl, bs) in [
        (5, 2, 0, 1, 3), // the fuzzer's: one sample per block, its 5 floats one float
        (3, 3, 0, 0, 0), // elem_stride 0 in rows of adjacent floats
        (1, 0, 1, 0, 0), // one float per sample, every sample the same float
        (2, 0, 1, 2, 8), // two samples per block sharing their floats
    ] {
        let mut buf = [2.0f32; 64];
        let rows = ghm_g_rows {
            grad: buf.as_mut_ptr(),
            k,
            row_stride: rs,
            elem_stride: es,
            block_len: bl,
            block_stride: bs,
        };
        let mut factor = [9.0f32; 4];
        // SAFETY: 4 samples; the rows reach fewer than 64 floats.
        let s = unsafe {
            ghm_g_loss_grad(
                &cfg,
                null_mut(),
                g.as_ptr(),
                null(),
                null(),
                4,
                &rows,
                factor.as_mut_ptr(),
                null_mut(),
                null_mut(),
            )
        };
        let what = format!("k {k} row_stride {rs} elem_stride {es} block_len {bl}");
        assert_eq!(s, GHM_ERR_SHAPE, "{what}");
        assert!(
            buf.iter().all(|&v| v == 2.0) && factor == [9.0; 4],
            "{what}: wrote"
        );
        let mut data = [2.0f32; 64];
        let r = ghm::GradRows::laid_out(&mut data, k, rs, es);
        let r = if bl > 0 { r.blocks(bl, bs) } else { r };
        let gen = ghm::GhmG::default();
        let out = ghm::GOut {
            rows: Some(r),
            factor: None,
            stats: None,
        };
        let got = gen.loss_grad(None, &ghm::Samples::new(&g), out);
        assert_eq!(got.err(), Some(ghm::Error::Shape), "Rust: {what}");
    }
}

/// A view's stride is unused with one block, and C callers leave it as anything: the overlap
/// check multiplied it by the element size anyway, which overflowed (a panic across the C
/// boundary, an abort, in builds with overflow checks). One block with stride `SIZE_MAX`
/// gives the contiguous results, on every `_blocks` entry point.
#[test]
fn one_block_with_any_stride() {
    let n = 37;
    let x: Vec<f32> = (0..n).map(|i| (i as f32 - 18.0) / 3.0).collect();
    let t: Vec<f32> = (0..n).map(|i| (i % 3 == 0) as u8 as f32).collect();
    let labels: Vec<i32> = (0..n).map(|i| (i % 4) as i32).collect();
    let v = ghm::View {
        offset: 0,
        stride: usize::MAX,
    };
    let blocks = ghm::Blocks::uniform(1, n, v);
    let cfg = ghm_c_config_default();
    on_every_backend(|b| {
        let (mut g1, mut g2) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (mut l1, mut l2) = (0.0f32, 0.0f32);
        // SAFETY: n elements each, one block of n.
        unsafe {
            let s = ghm_c_loss_grad(
                &cfg,
                null_mut(),
                x.as_ptr(),
                t.as_ptr(),
                null(),
                n,
                g1.as_mut_ptr(),
                &mut l1,
                null_mut(),
                null_mut(),
            );
            assert_eq!(s, GHM_OK);
            let s = ghm_c_loss_grad_blocks(
                &cfg,
                null_mut(),
                &blocks,
                x.as_ptr(),
                t.as_ptr(),
                null(),
                g2.as_mut_ptr(),
                &mut l2,
                null_mut(),
                null_mut(),
            );
            assert_eq!(s, GHM_OK, "{b:?}");
        }
        assert_eq!((g1, l1.to_bits()), (g2, l2.to_bits()), "{b:?}");
        // Softmax, one block of n samples of 1 class (x as [n][1] logits).
        let scfg = ghm_softmax_config_default();
        let (mut g1, mut g2) = (vec![0.0f32; n], vec![0.0f32; n]);
        // SAFETY: as above.
        unsafe {
            let s = ghm_softmax_loss_grad(
                &scfg,
                null_mut(),
                x.as_ptr(),
                labels.as_ptr(),
                null(),
                n,
                1,
                GHM_LAYOUT_ANCHOR_MAJOR,
                g1.as_mut_ptr(),
                null_mut(),
                null_mut(),
                null_mut(),
            );
            assert_eq!(s, GHM_OK);
            let s = ghm_softmax_loss_grad_blocks(
                &scfg,
                null_mut(),
                &blocks,
                x.as_ptr(),
                labels.as_ptr(),
                null(),
                1,
                GHM_LAYOUT_ANCHOR_MAJOR,
                g2.as_mut_ptr(),
                null_mut(),
                null_mut(),
                null_mut(),
            );
            assert_eq!(s, GHM_OK, "{b:?}");
        }
        assert_eq!(g1, g2, "softmax on {b:?}");
    });
}

/// Softmax through views of empty blocks (`len` 0) whose offsets lie beyond buffers of no
/// elements: the kernel sliced `buf[offset..offset]` of an empty buffer, a panic across the C
/// boundary. Now such blocks are nothing to do.
#[test]
fn softmax_views_of_empty_blocks() {
    let cfg = ghm_softmax_config_default();
    let v = ghm::View {
        offset: 21,
        stride: 3,
    };
    let blocks = ghm::Blocks::uniform(4, 0, v);
    let mut ema = Ema::new(10).unwrap();
    let mut stats = Stats::default();
    let mut loss = -1.0f32;
    let one = [0.0f32];
    let label = [0i32];
    let mut out = [5.0f32];
    on_every_backend(|b| {
        // SAFETY: every view's extent is 0 elements: any pointer to one element will do.
        let s = unsafe {
            ghm_softmax_loss_grad_blocks(
                &cfg,
                &mut ema,
                &blocks,
                one.as_ptr(),
                label.as_ptr(),
                one.as_ptr(),
                3,
                GHM_LAYOUT_CLASS_MAJOR,
                out.as_mut_ptr(),
                &mut loss,
                null_mut(),
                &mut stats,
            )
        };
        assert_eq!(s, GHM_OK, "{b:?}");
        assert_eq!((out[0], loss, stats.tot), (5.0, 0.0, 0.0), "{b:?}");
    });
}

/// A per-element loss was `(loss_weight * w_k) * l`: with `loss_weight = FLT_MAX` (accepted
/// with MEAN, whose gradient factors stay finite) and a bin of weight > 1 the factor was
/// `+inf`, and an element whose loss is exactly 0 got `0 * inf = NaN` (on a backend whose loss
/// rounded to a subnormal instead, `+inf`: the backends disagreed). Now
/// `loss_weight * (w_k * l)`: 0 stays 0 and no per-element loss is NaN, on every backend.
#[test]
fn per_element_losses_with_a_huge_loss_weight_are_never_nan() {
    // GHM-C: 3 elements with loss exactly 0 (logit -200, target 0: g = 0, bin 0) among 34 with
    // g = 0.5, so bin 0's weight is 37 / (3 * 2) > 1.
    let n = 37;
    let mut x = [0.0f32; 37];
    let mut t = [1.0f32; 37];
    for i in [0, 17, 36] {
        (x[i], t[i]) = (-200.0, 0.0);
    }
    let mut cfg = ghm_c_config_default();
    cfg.loss_weight = f32::MAX;
    // Softmax: 3 samples of 5 classes whose label's logit dominates (CE exactly 0, g = 0)
    // among 30 samples of uniform logits (g = 0.8).
    let (ns, nc) = (33, 5);
    let mut logits = [0.0f32; 33 * 5];
    let mut labels = [2i32; 33];
    for a in [1, 16, 32] {
        logits[a * nc + 3] = 200.0;
        labels[a] = 3;
    }
    let mut scfg = ghm_softmax_config_default();
    scfg.loss_weight = f32::MAX;
    let mut want: Option<(Vec<f32>, Vec<f32>)> = None;
    on_every_backend(|b| {
        let (mut le, mut sl) = (vec![f32::NAN; n], vec![f32::NAN; ns]);
        let (mut loss, mut sloss) = (0.0f32, 0.0f32);
        // SAFETY: `n` elements each; `ns * nc` logits, `ns` labels and sample losses.
        let (s, ss) = unsafe {
            (
                ghm_c_loss_grad(
                    &cfg,
                    null_mut(),
                    x.as_ptr(),
                    t.as_ptr(),
                    null(),
                    n,
                    null_mut(),
                    &mut loss,
                    le.as_mut_ptr(),
                    null_mut(),
                ),
                ghm_softmax_loss_grad(
                    &scfg,
                    null_mut(),
                    logits.as_ptr(),
                    labels.as_ptr(),
                    null(),
                    ns,
                    nc,
                    GHM_LAYOUT_ANCHOR_MAJOR,
                    null_mut(),
                    &mut sloss,
                    sl.as_mut_ptr(),
                    null_mut(),
                ),
            )
        };
        assert_eq!((s, ss), (GHM_OK, GHM_OK), "{b:?}");
        for (what, v, zeros) in [("GHM-C", &le, [0, 17, 36]), ("softmax", &sl, [1, 16, 32])] {
            assert!(v.iter().all(|e| !e.is_nan()), "{b:?}: {what} {v:?}");
            assert!(zeros.iter().all(|&i| v[i] == 0.0), "{b:?}: {what} {v:?}");
            assert!(
                v.iter().all(|&e| e > 1e37 || e == 0.0),
                "{b:?}: {what} {v:?}"
            );
        }
        let (wc, ws) = want.get_or_insert_with(|| (le.clone(), sl.clone()));
        for (a, w) in le.iter().zip(wc.iter()).chain(sl.iter().zip(ws.iter())) {
            assert!(a.to_bits().abs_diff(w.to_bits()) <= 8, "{b:?}: {a} vs {w}");
        }
    });
}

/// GHM-R's vector loss was `d^2 * r`: below `|d| = 2^-63`, `d^2` is subnormal and kept few
/// bits (14% off for `mu = 2^-63`, `d = 1e-22`); and a subnormal loss, a few ulp off the
/// scalar path's, landed on another point of the subnormal grid, which a large
/// `loss_weight * w_k` scaled back up into many ulp (1.3% in the input fuzzing found). Now
/// `d * (d * r)`, and subnormal losses are the scalar path's: per-element losses within 8 ulp
/// of the scalar path's on every backend.
#[test]
fn ghm_r_tiny_differences_weigh_alike_on_every_backend() {
    for (mu, step) in [(0.02f32, 3.7e-22f32), (ghm::GhmR::MU_MIN, 1.3e-23)] {
        // 70 tiny differences (one bin) among 30 ordinary ones.
        let n = 100;
        let x: Vec<f32> = (0..n)
            .map(|i| match i {
                0..70 => step * (i as f32 + 1.0) * if i % 2 == 0 { 1.0 } else { -1.0 },
                _ => i as f32 * 0.37,
            })
            .collect();
        let t = vec![0.0f32; n];
        let mut cfg = ghm_r_config_default();
        cfg.mu = mu;
        cfg.loss_weight = 1e30;
        let mut want: Option<Vec<f32>> = None;
        on_every_backend(|b| {
            let mut le = vec![f32::NAN; n];
            let (s, _) = r_one_call(&cfg, &x, &t, Some(&mut le));
            assert_eq!(s, GHM_OK, "{b:?}");
            let w = want.get_or_insert_with(|| le.clone());
            for (i, (a, e)) in le.iter().zip(w.iter()).enumerate() {
                assert!(
                    a.to_bits().abs_diff(e.to_bits()) <= 8,
                    "{b:?}, mu {mu:e}: element {i} ({:e}): {a:e} vs {e:e} on the scalar path",
                    x[i]
                );
            }
        });
    }
}
