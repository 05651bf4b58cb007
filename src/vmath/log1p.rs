//! `log1p(x)` for `x >= 0`, bit for bit as `libm::log1pf`: softmax's cross-entropy.

use super::i_to_f;
use crate::simd::Vector;

const LN2_HI: f32 = 6.931_381_225_6e-01; // 0x3f317180
const LN2_LO: f32 = 9.058_000_614_5e-06; // 0x3717f7d1
const LG1: f32 = 0.666_666_626_93; // 0xaaaaaa.0p-24
const LG2: f32 = 0.400_009_721_52; // 0xccce13.0p-25
const LG3: f32 = 0.284_987_866_88; // 0x91e9ee.0p-25
const LG4: f32 = 0.242_790_788_41; // 0xf89e26.0p-26

/// `log1p(x)` for finite `x >= 0` (other lanes: some finite or NaN value, no trap), the same
/// bits as `libm::log1pf` in every lane, on every backend.
///
/// Algorithm: FreeBSD's `s_log1pf.c` (Sun Microsystems, 1993), which `libm` ports: below
/// `sqrt(2) - 1` the polynomial on `x` itself (and `x` below `2^-24`); above it,
/// `1 + x = 2^k (1 + f)` with `1 + f` in `[sqrt(2)/2, sqrt(2))`, the correction
/// `c ~ log(1 + x) - log(u)` of the rounded `u = 1 + x` (0 from `k = 25` on), and
/// `log(1 + f)` from `s = f / (2 + f)` and the degree-4 polynomial in `s^2` (error below
/// `2^-34.24`), plus `k ln 2` in two parts. Each lane takes both ways and selects, with the
/// same correctly rounded operations in the same order (no fused multiply-add): exactly
/// `log1pf`'s result, under 1 ulp from the true value. The `log1p_matches_libm_bit_for_bit`
/// test compares every 61st f32 in `[0, 2^20]`, and every f32 within 4096 ulp of each
/// threshold, with `libm::log1pf` on every backend.
///
/// One vector for `LANES` samples, where `log1pf` was an eighth of softmax GHM's time on
/// AVX-512 (its branches, two divisions and a call per sample).
#[inline(always)]
pub(crate) fn log1p<V: Vector>(x: V) -> V {
    let one = V::splat(1.0);
    // 1 + x >= sqrt(2): reduce 1 + x = 2^k (1 + f).
    let reduce = x.ge(V::splat(f32::from_bits(0x3ed4_13d0)));
    let u = one.add(x);
    let iu = V::i_add(u.to_bits(), V::i_splat(0x3f80_0000 - 0x3f35_04f3));
    let k = V::i_sub(V::i_sra::<23>(iu), V::i_splat(0x7f));
    // The correction term, 0 from k = 25 on.
    let big_k = V::i_lt(V::i_splat(1), k);
    let c = V::select(big_k, one.sub(u.sub(x)), x.sub(u.sub(one))).div(u);
    let c = V::select(V::i_lt(k, V::i_splat(25)), c, V::splat(0.0));
    // (iu & 0x7fffff) + 0x3f3504f3, as iu - ((iu >> 23) << 23) for iu >= 0.
    let mant = V::i_sub(iu, V::i_shl::<23>(V::i_sra::<23>(iu)));
    let f_red = V::from_bits(V::i_add(mant, V::i_splat(0x3f35_04f3))).sub(one);
    let f = V::select(reduce, f_red, x);
    let c = V::select(reduce, c, V::splat(0.0));
    let k = V::i_select(reduce, k, V::i_splat(0));
    let dk = i_to_f::<V>(k);

    let s = f.div(V::splat(2.0).add(f));
    let z = s.mul(s);
    let w = z.mul(z);
    let t1 = w.mul(V::splat(LG2).add(w.mul(V::splat(LG4))));
    let t2 = z.mul(V::splat(LG1).add(w.mul(V::splat(LG3))));
    let r = t2.add(t1);
    let hfsq = V::splat(0.5).mul(f).mul(f);
    // s * (hfsq + r) + (dk * LN2_LO + c) - hfsq + f + dk * LN2_HI, left to right.
    let y = s
        .mul(hfsq.add(r))
        .add(dk.mul(V::splat(LN2_LO)).add(c))
        .sub(hfsq)
        .add(f)
        .add(dk.mul(V::splat(LN2_HI)));
    // |x| < 2^-24: x itself.
    V::select(x.lt(V::splat(f32::from_bits(0x3380_0000))), x, y)
}
