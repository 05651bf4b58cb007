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
//! hardware FMA. The `fma_emulation_is_exact` test compares it with the hardware instruction.

/// `a * b + c` rounded once, for one lane.
#[inline(always)]
pub(crate) fn fma1(a: f32, b: f32, c: f32) -> f32 {
    let p = a as f64 * b as f64; // exact
    let s = p + c as f64;
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
        let lo = odd_sum(half(a, false), half(b, false), half(c, false));
        let hi = odd_sum(half(a, true), half(b, true), half(c, true));
        _mm_movelh_ps(_mm_cvtpd_ps(lo), _mm_cvtpd_ps(hi))
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
