//! The building blocks: the exact bin rule, and the error bounds documented beside the vector
//! `exp` and `ln`.
#![allow(clippy::needless_range_loop)] // index loops read best in tests

mod common;

use ghm::__private::{self as p, Probe};
use ghm::Backend;

/// Every f32 within 64 ulp of every edge `k/M` (and of the last edge), for every `M` in
/// 1..=128, and a grid across the bins with near-edge values scattered in: the scalar rule,
/// the vector rule on every backend and the definition agree. (The vector rule looks up the
/// upper edge of its estimate, or divides for it above the backend's `EDGE_LUT_MAX` bins,
/// skipping the division for vectors with no lane near an edge: every `M` runs each
/// backend's way for that length, the lookups in registers for the short tables and gathered
/// for the long ones.)
#[test]
fn exact_bin_rule() {
    let backends: Vec<Backend> = Backend::all_available().collect();
    assert!(
        backends.len() >= 2,
        "the scalar path and a vector backend: {backends:?}"
    );
    for m in 1..=128usize {
        for last in [1.0f32 + 1e-6, 1000.0] {
            let e = common::edges(m, last);
            let mut probes = vec![0.0f32, 1.0, 1.0 + f32::EPSILON, 1.0000005, 999.0, f32::NAN];
            for k in 0..=m {
                for centre in [e[k], k as f32 / m as f32] {
                    let b = centre.to_bits() as i64;
                    for d in -64i64..=64 {
                        let bits = b + d;
                        if (0..0x7f80_0000).contains(&bits) {
                            probes.push(f32::from_bits(bits as u32));
                        }
                    }
                }
            }
            // A grid across [0, 1.01], clear of the edges in most lanes, and the grid again
            // with a near-edge probe after every fifth value: where a backend divides for the
            // upper edge (AVX2 above 16 bins), some vectors skip the division (no lane within
            // 1/256 of an edge, after scaling by M) and some take it with most lanes clear.
            // (The near-edge probes alone never skip it.)
            let grid: Vec<f32> = (0..=2048).map(|i| i as f32 * (1.01 / 2048.0)).collect();
            let near = probes.clone();
            probes.extend(&grid);
            for (i, &g) in grid.iter().enumerate() {
                probes.push(g);
                if i % 5 == 4 {
                    probes.push(near[(i * 7) % near.len()]);
                }
            }
            for &g in &probes {
                let want = common::bin_of(&e, g);
                let scalar = p::bin_scalar(m, last, g);
                assert_eq!(scalar, want, "scalar: M {m} g {g:e} ({:#x})", g.to_bits());
            }
            // The vector rule gives the trash bin M for "no bin". It never sees NaN: a NaN
            // gradient norm only comes from a bad element, which is never a valid lane.
            probes.retain(|g| !g.is_nan());
            let mut got = vec![f32::NAN; probes.len()];
            for &backend in &backends {
                let bin = Probe::Bin {
                    bins: m,
                    last_edge: last,
                };
                p::probe(backend, bin, &probes, &mut got).unwrap();
                for (&g, &k) in probes.iter().zip(&got) {
                    let want = common::bin_of(&e, g).unwrap_or(m);
                    assert_eq!(
                        k,
                        want as f32,
                        "{backend:?}: M {m} g {g:e} ({:#x})",
                        g.to_bits()
                    );
                }
            }
        }
    }
}

/// ulp distance between an f32 and the correctly rounded value of an f64.
fn ulp_err(got: f32, exact: f64) -> f64 {
    let r = exact as f32;
    if got == r {
        return 0.0;
    }
    let ulp = if r == 0.0 {
        f32::from_bits(1) as f64
    } else {
        let next = f32::from_bits(r.to_bits() + 1) as f64;
        next - r as f64
    };
    (got as f64 - exact).abs() / ulp
}

/// Every `stride`-th f32 from `lo` to `hi`, in chunks.
fn sweep(lo: f32, hi: f32, stride: u32, mut f: impl FnMut(&[f32])) {
    let (mut bits, end) = (lo.to_bits(), hi.to_bits());
    let mut chunk = Vec::with_capacity(1 << 16);
    while bits <= end {
        chunk.push(f32::from_bits(bits));
        if chunk.len() == chunk.capacity() {
            f(&chunk);
            chunk.clear();
        }
        bits = match bits.checked_add(stride) {
            Some(b) => b,
            None => break,
        };
    }
    f(&chunk);
}

/// The worst error of `f` (against `exact`) over a sweep, on `backend`; also checks that the
/// backend's results are bit-identical to the scalar path's when `same_bits`.
fn measure(
    backend: Backend,
    f: Probe,
    (lo, hi, stride): (f32, f32, u32),
    exact: impl Fn(f64) -> f64,
    same_bits: bool,
) -> f64 {
    let mut worst = 0.0f64;
    sweep(lo, hi, stride, |x| {
        let mut got = vec![0.0f32; x.len()];
        p::probe(backend, f, x, &mut got).expect("available");
        let mut reference = vec![0.0f32; x.len()];
        if same_bits {
            p::probe(Backend::Scalar, f, x, &mut reference).unwrap();
        }
        for i in 0..x.len() {
            worst = worst.max(ulp_err(got[i], exact(x[i] as f64)));
            if same_bits {
                assert_eq!(
                    got[i].to_bits(),
                    reference[i].to_bits(),
                    "{f:?} on {backend:?} at {:e}",
                    x[i]
                );
            }
        }
    });
    worst
}

/// `exp(-a)` over every 64th f32 in `[0, 87.3]` (where the result is normal) and the sigmoid
/// over every 64th f32 in `[-87, 87]`: at most 1 ulp and 3 ulp, and bit-identical on every
/// backend (they decide the bins). `ln` over `[1e-7, 2]` and `log1p` over `[0, 1]`: at most 2 and
/// 2.5 ulp on every backend (they only feed losses, and may use fused multiply-add).
#[test]
fn vector_math_error_bounds_on_every_backend() {
    for backend in Backend::all_available() {
        let exp = measure(
            backend,
            Probe::ExpNeg,
            (0.0, 87.3, 64),
            |a| (-a).exp(),
            true,
        );
        let sig = measure(
            backend,
            Probe::Sigmoid,
            (0.0, 87.0, 64),
            |x| 1.0 / (1.0 + (-x).exp()),
            true,
        );
        let sig_neg = measure(
            backend,
            Probe::Sigmoid,
            (-0.0, -87.0, 64),
            |x| 1.0 / (1.0 + (-x).exp()),
            true,
        );
        let ln = measure(backend, Probe::Ln, (1e-7, 2.0, 64), |x| x.ln(), false);
        let log1p = measure(backend, Probe::Ln1p, (0.0, 1.0, 64), |x| x.ln_1p(), false);
        // GHM-R's loss divides by sqrt(d^2 + mu^2) + mu: from 2 * 2^-76 (mu * 2^-70, the
        // scaled lanes) up to 2^51.
        let recip = measure(
            backend,
            Probe::Recip,
            (2e-23, 2.3e15, 64),
            |x| 1.0 / x,
            false,
        );
        let sig = sig.max(sig_neg);
        println!(
            "{:>8}: exp(-a) {exp:.3} ulp, sigmoid {sig:.3} ulp, ln {ln:.3} ulp, log1p {log1p:.3} ulp, \
             recip {recip:.3} ulp",
            backend.name()
        );
        assert!(exp <= 1.0, "{backend:?}: exp {exp}");
        assert!(sig <= 3.0, "{backend:?}: sigmoid {sig}");
        assert!(ln <= 2.0, "{backend:?}: ln {ln}");
        assert!(log1p <= 2.5, "{backend:?}: log1p {log1p}");
        assert!(recip <= 1.0, "{backend:?}: recip {recip}");
    }
}

/// Subnormal results round once, and `exp` underflows to 0 past `e^-104`.
#[test]
fn exp_neg_subnormals_and_underflow() {
    for backend in Backend::all_available() {
        let a = [87.5f32, 95.0, 100.0, 103.0, 104.0, 1e30, 0.0];
        let mut e = [0.0f32; 7];
        p::probe(backend, Probe::ExpNeg, &a, &mut e).unwrap();
        for i in 0..4 {
            let exact = (-(a[i] as f64)).exp();
            assert!(
                (e[i] as f64 - exact).abs() <= f32::from_bits(1) as f64,
                "{backend:?} {}: {:e} vs {exact:e}",
                a[i],
                e[i]
            );
        }
        assert_eq!(&e[4..], &[0.0, 0.0, 1.0], "{backend:?}");
    }
}

/// The gradient norm is a pure function of the inputs: the same bits from the one-lane path
/// (scalar) and from every lane of the vector path, for tricky logits.
#[test]
fn sigmoid_is_exact_where_it_can_be() {
    // sigmoid(0) = 0.5 exactly, so |0.5 - t| is exact: the reference's exact-edges case
    // depends on it.
    assert_eq!(p::ghmc_g(0.0, 0.4), ((0.5f32 - 0.4).abs(), 0.5 - 0.4));
    assert_eq!(p::ghmc_g(-0.0, 1.0).0, 0.5);
    // Saturation: exactly 0 and 1, no NaN.
    assert_eq!(p::ghmc_g(1e30, 1.0), (0.0, 0.0));
    assert_eq!(p::ghmc_g(-1e30, 0.0), (0.0, 0.0));
    assert_eq!(p::ghmc_g(-3e38, 1.0), (1.0, -1.0));
    // Tiny probabilities keep relative precision.
    let (g, _) = p::ghmc_g(-30.0, 0.0);
    assert!(
        (g as f64 / 9.357_622_968_840_175e-14 - 1.0).abs() < 1e-6,
        "{g:e}"
    );
}

/// The emulated fused multiply-add (scalar path; SSE2 builds without FMA) gives the bits of a
/// single rounding, as `f32::mul_add` (hardware FMA or a correctly rounded fallback) does:
/// near-cancellations, exact ties in f32, subnormal and overflowing results, signed zeros,
/// and random operands over the whole exponent range.
#[test]
fn fma_emulation_is_exact() {
    let mut cases: Vec<[f32; 3]> = vec![
        [1.0, 1.0, -1.0],
        [1.0 + f32::EPSILON, 1.0 - f32::EPSILON, -1.0],
        [3.0, 1.0 / 3.0, -1.0],
        [1.0 + f32::EPSILON, 1.0 + f32::EPSILON, 0.0], // tie in f32 broken by the fused bit
        [0.5 + f32::EPSILON / 2.0, 2.0, -1.0],
        [1e-30, 1e-10, 1e-45],
        [1e-20, 1e-20, 0.0], // subnormal product
        [3e38, 2.0, -3e38],
        [3e38, 3e38, 0.0], // overflow
        [-0.0, 1.0, 0.0],
        [-0.0, 1.0, -0.0],
        [1.0, -1.0, 1.0],
        [f32::MAX, 1.0, f32::MAX],
    ];
    // a * b an exact f32 tie, c far below it: rounding the sum to f64 first would land on
    // the tie and round to even; one rounding must follow the sign of c.
    for i in (1..64).step_by(2) {
        for j in (1..64).step_by(2) {
            let a = 1.0 + i as f32 / 4096.0;
            let b = 1.0 + j as f32 / 4096.0;
            for k in [60, 70, 90, 120] {
                let tiny = (2.0f32).powi(-k);
                cases.push([a, b, tiny]);
                cases.push([a, b, -tiny]);
                cases.push([-a, b, tiny]);
            }
        }
    }
    // The same below the f32 normal range, where the ties sit at 2^-150 steps: a * b =
    // 2^-150 - 2^-196 and c an odd multiple of 2^-149, so the f64 sum rounds onto the tie.
    let u = f32::EPSILON;
    let (a, b) = ((1.0 + u) * 2f32.powi(-75), (1.0 - u) * 2f32.powi(-75));
    for k in [1u32, 3, 5, 1 << 10 | 1, 1 << 19 | 1, 1 << 22 | 3] {
        let c = f32::from_bits(k); // k * 2^-149
        cases.push([a, b, c]);
        cases.push([-a, b, -c]);
        cases.push([a, -b, c]);
    }
    let mut rng = common::Rng(7);
    for _ in 0..400_000 {
        let v = |rng: &mut common::Rng| {
            let bits = rng.next_u64() as u32;
            // Finite values of every exponent, and values near 1 (where cancellation is).
            if bits & 1 == 0 {
                f32::from_bits(bits >> 1 | (bits & 0x8000_0000)).clamp(-f32::MAX, f32::MAX)
            } else {
                1.0 + (bits as f32 / u32::MAX as f32 - 0.5) * 1e-3
            }
        };
        let (a, b) = (v(&mut rng), v(&mut rng));
        // c near -a*b half the time: the hard cases are near-cancellations.
        let c = if rng.next_u64() & 1 == 0 {
            -(a * b) * (1.0 + (rng.next_u64() % 5) as f32 * f32::EPSILON)
        } else {
            v(&mut rng)
        };
        cases.push([a, b, c]);
    }
    let same = |x: f32, y: f32| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
    for chunk in cases.chunks(8) {
        let mut abc = [[0.0f32; 8]; 3];
        for (j, c) in chunk.iter().enumerate() {
            for k in 0..3 {
                abc[k][j] = c[k];
            }
        }
        let lanes = p::fma_emulated8(abc[0], abc[1], abc[2]);
        for (j, &[a, b, c]) in chunk.iter().enumerate() {
            let want = a.mul_add(b, c);
            let one = p::fma_emulated(a, b, c);
            assert!(
                same(one, want),
                "fma({a:e}, {b:e}, {c:e}) = {one:e}, want {want:e}"
            );
            let eight = lanes[j];
            assert!(
                same(eight, want),
                "fma8({a:e}, {b:e}, {c:e}) = {eight:e}, want {want:e}"
            );
        }
    }
}

/// Softmax GHM's `log1p` (its cross-entropy, `log1p(S - 1)` with `S - 1 >= 0`) is
/// `libm::log1pf`'s, bit for bit, on every backend: over every 61st f32 in `[0, 2^20]`, and every
/// f32 within 4096 ulp of each of the algorithm's thresholds (`2^-24`, `sqrt(2) - 1`, and where
/// `k` reaches 2 and 25), and of 0 and 1. (Taking both ways and selecting, per lane, must give
/// exactly what the branches give.)
#[test]
fn log1p_matches_libm_bit_for_bit() {
    let mut probes: Vec<f32> = Vec::new();
    for centre in [
        0.0f32,
        1.0,
        f32::from_bits(0x3380_0000),
        f32::from_bits(0x3ed4_13d0),
        // 1 + x reaches 2^2 * sqrt(2)/2 (k = 2) and 2^25 * sqrt(2)/2 (k = 25).
        4.0 * core::f32::consts::FRAC_1_SQRT_2 - 1.0,
        33_554_432.0 * core::f32::consts::FRAC_1_SQRT_2,
    ] {
        let b = centre.to_bits() as i64;
        for d in -4096i64..=4096 {
            if (0..0x7f80_0000).contains(&(b + d)) {
                probes.push(f32::from_bits((b + d) as u32));
            }
        }
    }
    probes.extend([f32::MAX, 1e30, 3.0e38, 80.0, 999.0]);
    let mut checked = 0usize;
    let mut check = |x: &[f32]| {
        for backend in Backend::all_available() {
            let mut got = vec![0.0f32; x.len()];
            p::probe(backend, Probe::Log1p, x, &mut got).expect("available");
            for (&x, &y) in x.iter().zip(&got) {
                let want = libm::log1pf(x);
                assert_eq!(
                    y.to_bits(),
                    want.to_bits(),
                    "{backend:?}: log1p({x:e} = {:#x}) = {y:e}, libm {want:e}",
                    x.to_bits()
                );
            }
        }
        checked += x.len();
    };
    check(&probes);
    sweep(0.0, 1_048_576.0, 61, &mut check);
    assert!(checked > 1_000_000, "{checked} values");
}
