//! AVX-512 (F, with the BW/VL/DQ set every AVX-512 CPU that matters has) as a [`Vector`]:
//! 16 lanes, `k`-register masks, masked tail loads and stores, and in-register table lookups.
//!
//! `wide` picks its instructions when the crate is compiled, so it cannot provide an AVX-512
//! path that is chosen at run time. This module supplies the primitives with `core::arch`
//! instead; the kernels stay the generic ones in [`crate::kernel`], instantiated inside
//! `#[target_feature]` functions ([`crate::dispatch`]) after the CPU has been checked.
//!
//! # Safety
//!
//! Every method calls AVX-512 intrinsics, which require a CPU that has AVX-512F. A value of
//! [`F32x16`] is only ever created inside the kernels that [`crate::dispatch`] enters after
//! checking the CPU (or when the build itself targets AVX-512), which is the invariant every
//! `SAFETY` comment below relies on.

use core::arch::x86_64::*;

use super::{compress_into, Vector, MAX_LANES};

/// Sixteen f32 lanes in a `zmm` register.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct F32x16(__m512);

/// Lanes `0..n` (n <= 16).
#[inline(always)]
fn tail_mask(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

impl Vector for F32x16 {
    const LANES: usize = 16;
    const FUSED: bool = true;
    type M = __mmask16;
    type I = __m512i;

    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: AVX-512F present (module invariant).
        F32x16(unsafe { _mm512_set1_ps(x) })
    }
    #[inline(always)]
    fn from_array(a: &[f32; MAX_LANES]) -> Self {
        // SAFETY: AVX-512F present; `a` holds 16 floats.
        F32x16(unsafe { _mm512_loadu_ps(a.as_ptr()) })
    }
    #[inline(always)]
    fn to_array(self) -> [f32; MAX_LANES] {
        let mut a = [0.0; MAX_LANES];
        // SAFETY: AVX-512F present; `a` has room for 16 floats.
        unsafe { _mm512_storeu_ps(a.as_mut_ptr(), self.0) };
        a
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        if s.len() < 16 {
            return Self::load_partial(s);
        }
        // SAFETY: AVX-512F present; 16 floats readable (checked).
        F32x16(unsafe { _mm512_loadu_ps(s.as_ptr()) })
    }
    #[inline(always)]
    fn load_partial(s: &[f32]) -> Self {
        // SAFETY: AVX-512F present; masked-off lanes are not accessed, the others are in `s`.
        F32x16(unsafe { _mm512_maskz_loadu_ps(tail_mask(s.len()), s.as_ptr()) })
    }
    #[inline(always)]
    fn store(self, out: &mut [f32]) {
        if out.len() < 16 {
            return self.store_partial(out);
        }
        // SAFETY: AVX-512F present; 16 floats writable (checked).
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn store_partial(self, out: &mut [f32]) {
        // SAFETY: AVX-512F present; only the lanes inside `out` are written.
        unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), tail_mask(out.len()), self.0) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: AVX-512F present (module invariant); likewise below.
        F32x16(unsafe { _mm512_add_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_sub_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_mul_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_div_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_sqrt_ps(self.0) })
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_fmadd_ps(self.0, a.0, b.0) })
    }
    #[inline(always)]
    fn mul_neg_add(self, a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_fnmadd_ps(self.0, a.0, b.0) })
    }
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_fmadd_ps(self.0, a.0, b.0) })
    }
    #[inline(always)]
    fn neg_abs(self) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_or_ps(self.0, _mm512_set1_ps(-0.0)) })
    }
    #[inline(always)]
    fn abs(self) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_abs_ps(self.0) })
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_min_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_max_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn lt(self, o: Self) -> __mmask16 {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, o.0) }
    }
    #[inline(always)]
    fn le(self, o: Self) -> __mmask16 {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_cmp_ps_mask::<_CMP_LE_OQ>(self.0, o.0) }
    }
    #[inline(always)]
    fn gt(self, o: Self) -> __mmask16 {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, o.0) }
    }
    #[inline(always)]
    fn ge(self, o: Self) -> __mmask16 {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_cmp_ps_mask::<_CMP_GE_OQ>(self.0, o.0) }
    }
    #[inline(always)]
    fn select(m: __mmask16, a: Self, b: Self) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_mask_blend_ps(m, b.0, a.0) })
    }
    #[inline(always)]
    fn mul_in(self, m: __mmask16, o: Self) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_mask_mul_ps(self.0, m, self.0, o.0) })
    }
    #[inline(always)]
    fn m_and(a: __mmask16, b: __mmask16) -> __mmask16 {
        a & b
    }
    #[inline(always)]
    fn m_andnot(a: __mmask16, b: __mmask16) -> __mmask16 {
        a & !b
    }
    #[inline(always)]
    fn m_any(m: __mmask16) -> bool {
        m != 0
    }
    #[inline(always)]
    fn m_bits(m: __mmask16) -> u32 {
        m as u32
    }
    #[inline(always)]
    fn i_compress(a: __m512i, m: __mmask16, out: &mut [i32]) -> usize {
        if out.len() < 16 {
            return compress_into(&Self::i_to_array(a), m as u32, out);
        }
        // SAFETY: AVX-512F present; `out` has room for the 16 lanes stored.
        unsafe {
            _mm512_storeu_si512(out.as_mut_ptr().cast(), _mm512_maskz_compress_epi32(m, a));
        }
        m.count_ones() as usize
    }
    #[inline(always)]
    fn m_count(m: __mmask16) -> u32 {
        m.count_ones()
    }
    #[inline(always)]
    fn first_lanes(n: usize) -> __mmask16 {
        tail_mask(n)
    }
    #[inline(always)]
    fn i_splat(x: i32) -> __m512i {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_set1_epi32(x) }
    }
    #[inline(always)]
    fn i_iota() -> __m512i {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) }
    }
    #[inline(always)]
    fn i_load(s: &[i32]) -> __m512i {
        if s.len() < 16 {
            return Self::i_load_partial(s);
        }
        // SAFETY: AVX-512F present; 16 ints readable (checked).
        unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
    }
    #[inline(always)]
    fn i_load_partial(s: &[i32]) -> __m512i {
        // SAFETY: AVX-512F present; only lanes inside `s` are read.
        unsafe { _mm512_maskz_loadu_epi32(tail_mask(s.len()), s.as_ptr()) }
    }
    #[inline(always)]
    fn i_to_array(i: __m512i) -> [i32; MAX_LANES] {
        let mut a = [0; MAX_LANES];
        // SAFETY: AVX-512F present; room for 16 ints.
        unsafe { _mm512_storeu_si512(a.as_mut_ptr().cast(), i) };
        a
    }
    #[inline(always)]
    fn i_add(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_add_epi32(a, b) }
    }
    #[inline(always)]
    fn i_sub(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_sub_epi32(a, b) }
    }
    #[inline(always)]
    fn i_inc(a: __m512i, m: __mmask16) -> __m512i {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_mask_add_epi32(a, m, a, _mm512_set1_epi32(1)) }
    }
    #[inline(always)]
    fn i_eq(a: __m512i, b: __m512i) -> __mmask16 {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_cmpeq_epi32_mask(a, b) }
    }
    #[inline(always)]
    fn i_ne_in(m: __mmask16, a: __m512i, b: __m512i) -> __mmask16 {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_mask_cmpneq_epi32_mask(m, a, b) }
    }
    #[inline(always)]
    fn i_eq_in(m: __mmask16, a: __m512i, b: __m512i) -> __mmask16 {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_mask_cmpeq_epi32_mask(m, a, b) }
    }
    #[inline(always)]
    fn i_lt(a: __m512i, b: __m512i) -> __mmask16 {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_cmplt_epi32_mask(a, b) }
    }
    #[inline(always)]
    fn i_min_u(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_min_epu32(a, b) }
    }
    #[inline(always)]
    fn i_max_u(a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_max_epu32(a, b) }
    }
    #[inline(always)]
    fn i_select(m: __mmask16, a: __m512i, b: __m512i) -> __m512i {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_mask_blend_epi32(m, b, a) }
    }
    #[inline(always)]
    fn i_shl<const S: i32>(a: __m512i) -> __m512i {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_sllv_epi32(a, _mm512_set1_epi32(S)) }
    }
    #[inline(always)]
    fn i_sra<const S: i32>(a: __m512i) -> __m512i {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_srav_epi32(a, _mm512_set1_epi32(S)) }
    }
    #[inline(always)]
    fn to_bits(self) -> __m512i {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_castps_si512(self.0) }
    }
    #[inline(always)]
    fn from_bits(i: __m512i) -> Self {
        // SAFETY: AVX-512F present.
        F32x16(unsafe { _mm512_castsi512_ps(i) })
    }
    #[inline(always)]
    fn trunc_i(self) -> __m512i {
        // SAFETY: AVX-512F present. Out-of-range lanes and NaN give i32::MIN.
        unsafe { _mm512_cvttps_epi32(self.0) }
    }
    #[inline(always)]
    fn lut(table: &[f32; 256], idx: __m512i, len: usize) -> Self {
        // SAFETY: AVX-512F present. The permute reads two registers loaded from the first 32
        // entries; the gather reads `table[idx & 255]`, always inside the 256-entry table.
        unsafe {
            if len <= 32 {
                let lo = _mm512_loadu_ps(table.as_ptr());
                let hi = _mm512_loadu_ps(table.as_ptr().add(16));
                F32x16(_mm512_permutex2var_ps(lo, idx, hi))
            } else {
                let idx = _mm512_and_si512(idx, _mm512_set1_epi32(255));
                F32x16(_mm512_i32gather_ps::<4>(idx, table.as_ptr()))
            }
        }
    }
    #[inline(always)]
    fn i_permute(table: __m512i, idx: __m512i) -> __m512i {
        // SAFETY: AVX-512F present.
        unsafe { _mm512_permutexvar_epi32(idx, table) }
    }
    #[inline(always)]
    fn recip(self) -> Self {
        // SAFETY: AVX-512F present. y0 within 2^-14 of 1/x; y0 + y0 (1 - x y0) squares the
        // relative error (2^-28) before its two roundings.
        unsafe {
            let y = _mm512_rcp14_ps(self.0);
            let e = _mm512_fnmadd_ps(self.0, y, _mm512_set1_ps(1.0));
            F32x16(_mm512_fmadd_ps(y, e, y))
        }
    }
    #[inline(always)]
    fn ldexp(self, n: Self) -> Self {
        // SAFETY: AVX-512F present. vscalefps rounds p * 2^n once, like the default's two
        // products: the same bits.
        F32x16(unsafe { _mm512_scalef_ps(self.0, n.0) })
    }
    #[inline(always)]
    fn mul_add_to_f64(self, b: Self, acc: &mut [f64; MAX_LANES]) {
        let ((a0, a1), (b0, b1)) = (to_f64(self.0), to_f64(b.0));
        // SAFETY: AVX-512F present; `acc` holds 16 f64 (two halves of 8).
        unsafe {
            let p = acc.as_mut_ptr();
            _mm512_storeu_pd(p, _mm512_fmadd_pd(a0, b0, _mm512_loadu_pd(p)));
            _mm512_storeu_pd(p.add(8), _mm512_fmadd_pd(a1, b1, _mm512_loadu_pd(p.add(8))));
        }
    }
    #[inline(always)]
    fn add_to_f64(self, acc: &mut [f64; MAX_LANES]) {
        let (lo, hi) = to_f64(self.0);
        // SAFETY: AVX-512F present; `acc` holds 16 f64 (two halves of 8).
        unsafe {
            let p = acc.as_mut_ptr();
            _mm512_storeu_pd(p, _mm512_add_pd(_mm512_loadu_pd(p), lo));
            _mm512_storeu_pd(p.add(8), _mm512_add_pd(_mm512_loadu_pd(p.add(8)), hi));
        }
    }
    #[inline(always)]
    fn add_to_f64_in(self, m: __mmask16, acc: &mut [f64; MAX_LANES]) {
        let (lo, hi) = to_f64(self.0);
        // SAFETY: AVX-512F present; `acc` holds 16 f64 (two halves of 8). Masked adds leave
        // the unselected lanes as they were, whatever the vector holds there.
        unsafe {
            let p = acc.as_mut_ptr();
            let a0 = _mm512_loadu_pd(p);
            _mm512_storeu_pd(p, _mm512_mask_add_pd(a0, m as u8, a0, lo));
            let a1 = _mm512_loadu_pd(p.add(8));
            _mm512_storeu_pd(p.add(8), _mm512_mask_add_pd(a1, (m >> 8) as u8, a1, hi));
        }
    }
}

/// Lanes 0..8 and 8..16 of `v`, widened to f64 (exactly).
#[inline(always)]
fn to_f64(v: __m512) -> (__m512d, __m512d) {
    // SAFETY: AVX-512F present (module invariant).
    unsafe {
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        (
            _mm512_cvtps_pd(_mm512_castps512_ps256(v)),
            _mm512_cvtps_pd(hi),
        )
    }
}
