//! Natural logarithm of normal positive numbers, and `log1p` on `[0, 1]`.

use super::i_to_f;
use crate::simd::Vector;

const SQRT_HALF: f32 = core::f32::consts::FRAC_1_SQRT_2;
const LN2_HI: f32 = 0.693_359_375;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `ln(x)` for normal, positive, finite `x`.
///
/// Algorithm: Cephes `logf` (S. L. Moshier): `x = m 2^e` with `m` in `[sqrt(1/2), sqrt(2))`,
/// `ln(m) = f - f^2/2 + f^3 P(f)` with `f = m - 1` and a degree-8 minimax `P`, plus `e ln 2`
/// in two parts. May use fused multiply-add, so the last bit can differ between backends; it
/// only feeds losses, never bins.
///
/// Error: at most 2 ulp over `[1e-7, 2]` (measured by the `vector_math_error_bounds_on_every_
/// backend` test over every 16th f32: 0.80 ulp on every backend).
#[inline(always)]
pub(crate) fn ln<V: Vector>(x: V) -> V {
    let bits = x.to_bits();
    // x = m * 2^e with m in [0.5, 1): e is the biased exponent minus 126.
    let e = V::i_sub(V::i_sra::<23>(bits), V::i_splat(126));
    let m = V::from_bits(V::i_sub(bits, V::i_shl::<23>(e)));
    // m in [0.5, 1): fold to [sqrt(1/2), sqrt(2)).
    let small = m.lt(V::splat(SQRT_HALF));
    let f = V::select(small, m.add(m), m).sub(V::splat(1.0));
    let e = V::i_select(small, V::i_sub(e, V::i_splat(1)), e);
    ln_reduced(f, i_to_f::<V>(e))
}

/// `ln(m 2^e)` for `f = m - 1` with `m` in `[sqrt(1/2), sqrt(2))` and the exponent `e`
/// (an integer, as f32): Cephes' polynomial and the two-part `e ln 2`.
#[inline(always)]
fn ln_reduced<V: Vector>(f: V, ef: V) -> V {
    // Cephes' degree-8 polynomial by Estrin's scheme (a dependency chain of 4 fused
    // multiply-adds instead of Horner's 8).
    let z = f.mul(f);
    let z2 = z.mul(z);
    let z4 = z2.mul(z2);
    let q0 = f.mul_add(V::splat(-2.499_999_399_3e-1), V::splat(3.333_333_117_4e-1));
    let q1 = f.mul_add(V::splat(-1.666_805_766_5e-1), V::splat(2.000_071_476_5e-1));
    let q2 = f.mul_add(V::splat(-1.242_014_084_6e-1), V::splat(1.424_932_278_7e-1));
    let q3 = f.mul_add(V::splat(-1.151_461_031_0e-1), V::splat(1.167_699_874_0e-1));
    let r0 = z.mul_add(q1, q0);
    let r1 = z.mul_add(q3, q2);
    let p = z2.mul_add(r1, r0);
    let p = z4.mul_add(V::splat(7.037_683_629_2e-2), p);
    let mut y = p.mul(f).mul(z);
    y = ef.mul_add(V::splat(LN2_LO), y);
    y = z.mul_add(V::splat(-0.5), y);
    ef.mul_add(V::splat(LN2_HI), f.add(y))
}

/// `ln(1 + e)` for `e` in `[0, 1]` (the sigmoid's `exp(-|x|)`).
///
/// Algorithm: `ln(1 + e) = e + e^2 g(e)` with `g(e) = (ln(1 + e) - e) / e^2` approximated on
/// `[0, 1]` by its degree-9 Chebyshev interpolant (`mpmath.chebyfit`; approximation error
/// 4.7e-9 absolute in `g`, 0.06 ulp of the result), evaluated by Estrin's scheme. No
/// reduction and no rounded `1 + e`: small `e` keep their relative precision because the last
/// step adds the small `e^2 g` to `e` itself. That is 13 operations where the reduction and
/// Cephes' polynomial (as in [`ln`]) took 26: GHM-C's one call 8% faster at 64Ki elements
/// (median of 10 alternating in-process runs).
///
/// Error: at most 2.5 ulp (measured over every 64th f32 in `[0, 1]` by the
/// `vector_math_error_bounds_on_every_backend` test: 1.65 ulp with fused multiply-add on
/// AVX2/AVX-512, 2.16 ulp without, on SSE2; the Cephes form measured 1.01 and 1.05). The
/// rounding of `e^2` and of `g`'s evaluation, scaled by `e^2`, is what the Cephes form did
/// not have.
#[inline(always)]
pub(crate) fn ln_1p<V: Vector>(e: V) -> V {
    let c = |k: usize| V::splat(LN_1P_G[k]);
    let e2 = e.mul(e);
    let e4 = e2.mul(e2);
    let e8 = e4.mul(e4);
    let p01 = e.mul_add(c(1), c(0));
    let p23 = e.mul_add(c(3), c(2));
    let p45 = e.mul_add(c(5), c(4));
    let p67 = e.mul_add(c(7), c(6));
    let p89 = e.mul_add(c(9), c(8));
    let p0_3 = e2.mul_add(p23, p01);
    let p4_7 = e2.mul_add(p67, p45);
    let p0_7 = e4.mul_add(p4_7, p0_3);
    let g = e8.mul_add(p89, p0_7);
    e2.mul_add(g, e)
}

/// The coefficients of `g` in [`ln_1p`], constant term first.
const LN_1P_G: [f32; 10] = [
    -0.499_999_995_222,
    0.333_332_373_462,
    -0.249_967_599_083,
    0.199_567_079_523,
    -0.163_651_528_692,
    0.130_333_642_382,
    -0.091_394_137_740_1,
    0.049_309_973_434_5,
    -0.017_184_266_982_4,
    0.002_801_641_992_8,
];

/// `ln(1 - p)` for `p` in `[1e-7, 1 - 1e-7]`, given `r = 1 / (1 - p)`: the same correction as
/// [`ln_1p`] (here `1 - p` is exact for `p >= 1/2`, and `u - 1` exact otherwise), with the
/// general reduction of [`ln`]. Error: at most 2 ulp.
#[inline(always)]
pub(crate) fn ln_1m<V: Vector>(p: V, r: V) -> V {
    let one = V::splat(1.0);
    let u = one.sub(p);
    let lost = V::splat(0.0).sub(p).sub(u.sub(one));
    lost.mul_add(r, ln(u))
}
