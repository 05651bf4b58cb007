//! Fused multiply-add where the hardware has none: the scalar path, and the `wide` backend on
//! an x86_64 build without FMA (SSE2).
//!
//! Method: for f32 `a`, `b`, `c`, the product `a * b` is exact in f64 (48 significant bits),
//! and `a * b + c` is rounded to f64 *to odd* (the TwoSum error says whether the f64 sum was
//! exact; if not and its last bit is even, it moves one f64 ulp toward the true value). A
//! round-to-odd result with at least two more bits than the target rounds to nearest exactly
//! as the true value would (S. Boldo, G. Melquiond, "Emulation of FMA and correctly rounded
//! sums: proved algorithms using rounding to odd", IEEE Trans. Computers 57(4), 2008), so the
//! final conversion to f32 gives the correctly rounded fused result: the same bits as a
//! hardware FMA. That correction only matters when the f64 sum is exactly halfway between two
//! f32 values or below the f32 normal range, so it is only computed then (a rare, well
//! predicted branch: the SSE2 GHM-C one call went from 43 to 28 ns per element). The `fma_emulation_is_exact` test
//! compares it with the hardware instruction, including constructed cases of both kinds.

/// `a * b + c` rounded once, for one lane.
#[inline(always)]
pub(crate) fn fma1(a: f32, b: f32, c: f32) -> f32 {
    let p = a as f64 * b as f64; // exact
    let s = p + c as f64;
    // Rounding `s` to f32 is already right unless it is an f32 tie or below the normal range
    // (see `sse2::fma`): rare, and then the rounding to odd below settles it.
    let tie = s.to_bits() & 0x1FFF_FFFF == 0x1000_0000;
    let subnormal = s != 0.0 && s.abs() < f32::MIN_POSITIVE as f64;
    if !(tie || subnormal) {
        return s as f32;
    }
    // TwoSum: s + err == p + c exactly (for finite values).
    let bb = s - p;
    let err = (p - (s - bb)) + (c as f64 - bb);
    // Branch-free (the conditions are data-dependent coin flips): in the inexact, finite
    // lanes with an even last bit, one ulp toward the true value, i.e. up in magnitude if
    // err has the sign of s.
    let bits = s.to_bits();
    let fix = (err != 0.0 && s.is_finite()) as u64 & !bits & 1;
    let down = (bits ^ err.to_bits()) >> 63;
    let step = fix.wrapping_sub(2 * (fix & down));
    f64::from_bits(bits.wrapping_add(step)) as f32
}

/// [`fma1`] on eight lanes: SSE2 on x86_64, lane by lane elsewhere.
#[inline(always)]
pub(crate) fn fma8(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
    #[cfg(target_arch = "x86_64")]
    {
        let mut out = [0.0f32; 8];
        for q in 0..2 {
            // SAFETY: SSE2 is part of the x86_64 baseline; every pointer covers 4 f32 of
            // its array.
            unsafe {
                use core::arch::x86_64::*;
                let ld = |v: &[f32; 8]| _mm_loadu_ps(v.as_ptr().add(4 * q));
                let r = sse2::fma(ld(&a), ld(&b), ld(&c));
                _mm_storeu_ps(out.as_mut_ptr().add(4 * q), r);
            }
        }
        out
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        core::array::from_fn(|j| fma1(a[j], b[j], c[j]))
    }
}

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use core::arch::x86_64::*;

    /// [`super::fma1`] on four lanes.
    ///
    /// Rounding the exact `a * b + c` to f64 and then to f32 gives the single rounding's
    /// result unless the f64 value `s` is exactly halfway between two f32 values (an f32 tie;
    /// otherwise the exact value lies strictly on the same side of every f32 midpoint as `s`)
    /// or lies below the f32 normal range, where the midpoints sit elsewhere. Both are rare
    /// (one f64 value in 2^29 is a tie), so only a vector with such a lane takes the
    /// rounding-to-odd correction; the others convert `s` directly. The branch depends on the
    /// data but is almost never taken: well predicted, and the result is the same either way.
    ///
    /// # Safety
    /// SSE2 (always present on x86_64).
    #[inline(always)]
    pub(super) unsafe fn fma(a: __m128, b: __m128, c: __m128) -> __m128 {
        let half = |v: __m128, hi: bool| {
            if hi {
                _mm_cvtps_pd(_mm_movehl_ps(v, v))
            } else {
                _mm_cvtps_pd(v)
            }
        };
        let (a_lo, b_lo, c_lo) = (half(a, false), half(b, false), half(c, false));
        let (a_hi, b_hi, c_hi) = (half(a, true), half(b, true), half(c, true));
        let s_lo = _mm_add_pd(_mm_mul_pd(a_lo, b_lo), c_lo);
        let s_hi = _mm_add_pd(_mm_mul_pd(a_hi, b_hi), c_hi);
        if needs_odd(s_lo) | needs_odd(s_hi) {
            let lo = odd_sum(a_lo, b_lo, c_lo);
            let hi = odd_sum(a_hi, b_hi, c_hi);
            return _mm_movelh_ps(_mm_cvtpd_ps(lo), _mm_cvtpd_ps(hi));
        }
        _mm_movelh_ps(_mm_cvtpd_ps(s_lo), _mm_cvtpd_ps(s_hi))
    }

    /// Whether a lane of `s` is an f32 tie (its low 29 mantissa bits are `1 << 28`) or
    /// nonzero and below the f32 normal range.
    #[inline(always)]
    unsafe fn needs_odd(s: __m128d) -> bool {
        // The low 29 bits of an f64 are in its low 32-bit half; the high halves compare 0 == 0.
        let low29 = _mm_set_epi32(0, 0x1FFF_FFFF, 0, 0x1FFF_FFFF);
        let tie_bits = _mm_set_epi32(0, 0x1000_0000, 0, 0x1000_0000);
        let tie = _mm_cmpeq_epi32(_mm_and_si128(_mm_castpd_si128(s), low29), tie_bits);
        let mag = _mm_andnot_pd(_mm_set1_pd(-0.0), s);
        let tiny = _mm_and_pd(
            _mm_cmplt_pd(mag, _mm_set1_pd(f32::MIN_POSITIVE as f64)),
            _mm_cmpneq_pd(mag, _mm_setzero_pd()),
        );
        (_mm_movemask_ps(_mm_castsi128_ps(tie)) & 0b0101) | _mm_movemask_pd(tiny) != 0
    }

    /// `a * b + c` rounded to odd, for f64 lanes holding f32 values.
    #[inline(always)]
    unsafe fn odd_sum(a: __m128d, b: __m128d, c: __m128d) -> __m128d {
        let p = _mm_mul_pd(a, b);
        let s = _mm_add_pd(p, c);
        let bb = _mm_sub_pd(s, p);
        let err = _mm_add_pd(_mm_sub_pd(p, _mm_sub_pd(s, bb)), _mm_sub_pd(c, bb));
        let zero = _mm_setzero_pd();
        let sign = _mm_set1_pd(-0.0);
        // Inexact and finite lanes (NaN compares unequal, so `err != 0` alone is not enough).
        let finite = _mm_cmplt_pd(_mm_andnot_pd(sign, s), _mm_set1_pd(f64::INFINITY));
        let fix = _mm_castpd_si128(_mm_and_pd(_mm_cmpneq_pd(err, zero), finite));
        let sbits = _mm_castpd_si128(s);
        // 1 where the last bit is even, 0 where odd.
        let one = _mm_set_epi32(0, 1, 0, 1);
        let even = _mm_xor_si128(_mm_and_si128(sbits, one), one);
        // All ones in the lanes where err and s differ in sign (the move is down).
        let diff = _mm_xor_si128(sbits, _mm_castpd_si128(err));
        let down = _mm_shuffle_epi32::<0b11_11_01_01>(_mm_srai_epi32::<31>(diff));
        // +1 or -1 ulp, in the even, inexact, finite lanes only.
        let step = _mm_sub_epi64(_mm_xor_si128(even, down), down);
        _mm_castsi128_pd(_mm_add_epi64(sbits, _mm_and_si128(step, fix)))
    }
}
