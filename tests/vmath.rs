//! The building blocks: the exact bin rule, and the error bounds documented beside the vector
//! `exp` and `ln`.
#![allow(clippy::needless_range_loop)] // index loops read best in tests

mod common;

use ghm::__private as p;

/// Every f32 within 64 ulp of every edge `k/M` (and of the last edge), for every `M` in
/// 1..=128: the vector rule, the scalar rule and the definition agree.
#[test]
fn exact_bin_rule() {
    for m in 1..=128usize {
        for last in [1.0f32 + 1e-6, 1000.0] {
            let e = common::edges(m, last);
            let probe = |g: f32| {
                let want = common::bin_of(&e, g);
                let (scalar, vector) = p::bin_both(m, last, g);
                assert_eq!(scalar, want, "scalar: M {m} g {g:e} ({:#x})", g.to_bits());
                // The vector rule gives the trash bin M for "no bin". It never sees NaN: a NaN
                // gradient norm only comes from a bad element, which is never a valid lane.
                if !g.is_nan() {
                    assert_eq!(
                        vector,
                        want.unwrap_or(m),
                        "vector: M {m} g {g:e} ({:#x})",
                        g.to_bits()
                    );
                }
            };
            for k in 0..=m {
                for centre in [e[k], k as f32 / m as f32] {
                    let b = centre.to_bits() as i64;
                    for d in -64i64..=64 {
                        let bits = b + d;
                        if (0..0x7f80_0000).contains(&bits) {
                            probe(f32::from_bits(bits as u32));
                        }
                    }
                }
            }
            for g in [0.0f32, 1.0, 1.0 + f32::EPSILON, 1.0000005, 999.0, f32::NAN] {
                probe(g);
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

/// `exp(-a)` over every 8th f32 in `[0, 87.3]` (where the result is normal): at most 1 ulp,
/// identical on the one-lane and the baseline vector implementation.
#[test]
fn exp_neg_error_bound() {
    let end = 87.3f32.to_bits();
    let mut worst = 0.0f64;
    let mut bits = 0u32;
    while bits <= end {
        let mut a = [0.0f32; 8];
        for (j, v) in a.iter_mut().enumerate() {
            *v = f32::from_bits((bits + 8 * j as u32).min(end));
        }
        let got = p::exp_neg_x8(a);
        for j in 0..8 {
            let exact = (-(a[j] as f64)).exp();
            worst = worst.max(ulp_err(got[j], exact));
            assert_eq!(
                got[j].to_bits(),
                p::exp_neg_f32(a[j]).to_bits(),
                "backends differ at {}",
                a[j]
            );
        }
        bits += 64;
    }
    println!("exp(-a): max error {worst:.3} ulp");
    assert!(worst <= 1.0, "exp(-a) error {worst} ulp");
    // The subnormal range rounds once, and underflows to 0 past e^-104.
    for a in [87.5f32, 95.0, 100.0, 103.0] {
        let got = p::exp_neg_f32(a) as f64;
        let exact = (-(a as f64)).exp();
        assert!(
            (got - exact).abs() <= f32::from_bits(1) as f64,
            "{a}: {got:e} vs {exact:e}"
        );
    }
    assert_eq!(p::exp_neg_f32(104.0), 0.0);
    assert_eq!(p::exp_neg_f32(1e30), 0.0);
    assert_eq!(p::exp_neg_f32(0.0), 1.0);
}

/// `ln` over every 8th f32 in `[1e-7, 2]`, and `log1p` over every 8th f32 in `[0, 1]`: at
/// most 2 ulp.
#[test]
fn ln_error_bound() {
    let (lo, hi) = (1e-7f32.to_bits(), 2.0f32.to_bits());
    let mut worst = 0.0f64;
    let mut bits = lo;
    while bits <= hi {
        let a: [f32; 8] = core::array::from_fn(|j| f32::from_bits((bits + 8 * j as u32).min(hi)));
        let got = p::ln_x8(a);
        for j in 0..8 {
            let exact = (a[j] as f64).ln();
            // near 1 the result is tiny: measure in ulps of the result, floored at ulp(2^-24)
            let e = if exact.abs() < 1e-30 {
                (got[j] as f64).abs() / 1e-30
            } else {
                ulp_err(got[j], exact)
            };
            worst = worst.max(e);
        }
        bits += 64;
    }
    println!("ln: max error {worst:.3} ulp");
    assert!(worst <= 2.0, "ln error {worst} ulp");

    let mut worst = 0.0f64;
    let mut bits = 0u32;
    let hi = 1.0f32.to_bits();
    while bits <= hi {
        let e: [f32; 8] = core::array::from_fn(|j| f32::from_bits((bits + 8 * j as u32).min(hi)));
        let got = p::ln_1p_x8(e);
        for j in 0..8 {
            worst = worst.max(ulp_err(got[j], (e[j] as f64).ln_1p()));
        }
        bits += 64;
    }
    println!("log1p: max error {worst:.3} ulp");
    assert!(worst <= 2.0, "log1p error {worst} ulp");
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
