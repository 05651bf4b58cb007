//! AVX2 with FMA as a [`Vector`]: 8 lanes in a `ymm` register, all-ones lane masks, masked
//! tail loads and stores, in-register or gathered table lookups.
//!
//! Like [`super::avx512`], this exists because `wide` chooses its instructions at compile
//! time; the kernels stay the generic ones.
//!
//! # Safety
//!
//! Every method calls AVX2/FMA intrinsics. A value of [`F32x8`] is only ever created inside
//! the kernels that [`crate::dispatch`] enters after checking that the CPU has AVX2 and FMA
//! (or when the build itself targets them); every `SAFETY` comment relies on this.

use core::arch::x86_64::*;

use super::{compress_into, Vector, MAX_LANES};

/// Eight f32 lanes in a `ymm` register.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(crate) struct F32x8(__m256);

/// All-ones in lanes `0..n` (n <= 8), as the mask `maskload`/`maskstore` take.
#[inline(always)]
fn tail_mask(n: usize) -> __m256i {
    // SAFETY: AVX2 present (module invariant).
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n.min(8) as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

impl Vector for F32x8 {
    const LANES: usize = 8;
    const FUSED: bool = true;
    /// Above 16 bins the bin rule divides for the upper edge instead of looking it up (four
    /// permutes and three blends up to 32 entries, a gather beyond). On an AMD EPYC (family
    /// 25), the one call at 64Ki elements, division against lookup (lowest third of 8-12
    /// alternating runs each): GHM-C 0.965 with 30 bins, 0.82 with 64, 0.83 with 128; GHM-R
    /// 0.99 with 30, 0.83 with 64. Up to 16 the lookup is two permutes and a blend and wins:
    /// GHM-C 1.04 with 12 and 16 bins, GHM-R 1.11 with 10 and 16 (GHM-R's model divides
    /// already).
    const EDGE_LUT_MAX: usize = 16;
    /// All-ones / all-zeros i32 lanes.
    type M = __m256i;
    type I = __m256i;

    #[inline(always)]
    fn splat(x: f32) -> Self {
        // SAFETY: AVX2 present (module invariant); likewise below.
        F32x8(unsafe { _mm256_set1_ps(x) })
    }
    #[inline(always)]
    fn from_array(a: &[f32; MAX_LANES]) -> Self {
        // SAFETY: AVX2 present; `a` holds at least 8 floats.
        F32x8(unsafe { _mm256_loadu_ps(a.as_ptr()) })
    }
    #[inline(always)]
    fn to_array(self) -> [f32; MAX_LANES] {
        let mut a = [0.0; MAX_LANES];
        // SAFETY: AVX2 present; room for 8 floats.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), self.0) };
        a
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        if s.len() < 8 {
            return Self::load_partial(s);
        }
        // SAFETY: AVX2 present; 8 floats readable (checked).
        F32x8(unsafe { _mm256_loadu_ps(s.as_ptr()) })
    }
    #[inline(always)]
    fn load_partial(s: &[f32]) -> Self {
        // SAFETY: AVX2 present; masked-off lanes are not accessed.
        F32x8(unsafe { _mm256_maskload_ps(s.as_ptr(), tail_mask(s.len())) })
    }
    #[inline(always)]
    fn store(self, out: &mut [f32]) {
        if out.len() < 8 {
            return self.store_partial(out);
        }
        // SAFETY: AVX2 present; 8 floats writable (checked).
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), self.0) }
    }
    #[inline(always)]
    fn store_partial(self, out: &mut [f32]) {
        // SAFETY: AVX2 present; only lanes inside `out` are written.
        unsafe { _mm256_maskstore_ps(out.as_mut_ptr(), tail_mask(out.len()), self.0) }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        // SAFETY: AVX2 present.
        F32x8(unsafe { _mm256_add_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        // SAFETY: AVX2 present.
        F32x8(unsafe { _mm256_sub_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        // SAFETY: AVX2 present.
        F32x8(unsafe { _mm256_mul_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        // SAFETY: AVX2 present.
        F32x8(unsafe { _mm256_div_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        // SAFETY: AVX2 present.
        F32x8(unsafe { _mm256_sqrt_ps(self.0) })
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        // SAFETY: FMA present (module invariant).
        F32x8(unsafe { _mm256_fmadd_ps(self.0, a.0, b.0) })
    }
    #[inline(always)]
    fn mul_neg_add(self, a: Self, b: Self) -> Self {
        // SAFETY: FMA present (module invariant).
        F32x8(unsafe { _mm256_fnmadd_ps(self.0, a.0, b.0) })
    }
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        // SAFETY: FMA present (module invariant).
        F32x8(unsafe { _mm256_fmadd_ps(self.0, a.0, b.0) })
    }
    #[inline(always)]
    fn neg_abs(self) -> Self {
        // SAFETY: AVX present.
        F32x8(unsafe { _mm256_or_ps(self.0, _mm256_set1_ps(-0.0)) })
    }
    #[inline(always)]
    fn abs(self) -> Self {
        // SAFETY: AVX2 present.
        F32x8(unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0) })
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        // SAFETY: AVX2 present.
        F32x8(unsafe { _mm256_min_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        // SAFETY: AVX2 present.
        F32x8(unsafe { _mm256_max_ps(self.0, o.0) })
    }
    #[inline(always)]
    fn lt(self, o: Self) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(self.0, o.0)) }
    }
    #[inline(always)]
    fn le(self, o: Self) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(self.0, o.0)) }
    }
    #[inline(always)]
    fn gt(self, o: Self) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(self.0, o.0)) }
    }
    #[inline(always)]
    fn ge(self, o: Self) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(self.0, o.0)) }
    }
    #[inline(always)]
    fn select(m: __m256i, a: Self, b: Self) -> Self {
        // SAFETY: AVX2 present.
        F32x8(unsafe { _mm256_blendv_ps(b.0, a.0, _mm256_castsi256_ps(m)) })
    }
    #[inline(always)]
    fn m_and(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_and_si256(a, b) }
    }
    #[inline(always)]
    fn m_andnot(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_andnot_si256(b, a) }
    }
    #[inline(always)]
    fn m_any(m: __m256i) -> bool {
        // SAFETY: AVX2 present.
        unsafe { _mm256_movemask_ps(_mm256_castsi256_ps(m)) != 0 }
    }
    #[inline(always)]
    fn m_bits(m: __m256i) -> u32 {
        // SAFETY: AVX2 present.
        unsafe { _mm256_movemask_ps(_mm256_castsi256_ps(m)) as u32 }
    }
    #[inline(always)]
    fn m_count(m: __m256i) -> u32 {
        // SAFETY: AVX2 present.
        unsafe { (_mm256_movemask_ps(_mm256_castsi256_ps(m)) as u32).count_ones() }
    }
    #[inline(always)]
    fn first_lanes(n: usize) -> __m256i {
        tail_mask(n)
    }
    #[inline(always)]
    fn i_splat(x: i32) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_set1_epi32(x) }
    }
    #[inline(always)]
    fn i_iota() -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7) }
    }
    #[inline(always)]
    fn i_load(s: &[i32]) -> __m256i {
        if s.len() < 8 {
            return Self::i_load_partial(s);
        }
        // SAFETY: AVX2 present; 8 ints readable (checked).
        unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
    }
    #[inline(always)]
    fn i_load_partial(s: &[i32]) -> __m256i {
        // SAFETY: AVX2 present; masked-off lanes are not accessed.
        unsafe { _mm256_maskload_epi32(s.as_ptr(), tail_mask(s.len())) }
    }
    #[inline(always)]
    fn i_to_array(i: __m256i) -> [i32; MAX_LANES] {
        let mut a = [0; MAX_LANES];
        // SAFETY: AVX2 present; room for 8 ints.
        unsafe { _mm256_storeu_si256(a.as_mut_ptr().cast(), i) };
        a
    }
    #[inline(always)]
    fn i_add(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_add_epi32(a, b) }
    }
    #[inline(always)]
    fn i_sub(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_sub_epi32(a, b) }
    }
    #[inline(always)]
    fn i_inc(a: __m256i, m: __m256i) -> __m256i {
        // A set lane is -1.
        // SAFETY: AVX2 present.
        unsafe { _mm256_sub_epi32(a, m) }
    }
    #[inline(always)]
    fn i_eq(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_cmpeq_epi32(a, b) }
    }
    #[inline(always)]
    fn i_lt(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_cmpgt_epi32(b, a) }
    }
    #[inline(always)]
    fn i_min_u(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_min_epu32(a, b) }
    }
    #[inline(always)]
    fn i_max_u(a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_max_epu32(a, b) }
    }
    #[inline(always)]
    fn i_select(m: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_blendv_epi8(b, a, m) }
    }
    #[inline(always)]
    fn i_shl<const S: i32>(a: __m256i) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_sllv_epi32(a, _mm256_set1_epi32(S)) }
    }
    #[inline(always)]
    fn i_sra<const S: i32>(a: __m256i) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_srav_epi32(a, _mm256_set1_epi32(S)) }
    }
    #[inline(always)]
    fn to_bits(self) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_castps_si256(self.0) }
    }
    #[inline(always)]
    fn from_bits(i: __m256i) -> Self {
        // SAFETY: AVX2 present.
        F32x8(unsafe { _mm256_castsi256_ps(i) })
    }
    #[inline(always)]
    fn trunc_i(self) -> __m256i {
        // SAFETY: AVX2 present. Out-of-range lanes and NaN give i32::MIN.
        unsafe { _mm256_cvttps_epi32(self.0) }
    }
    /// Up to 32 entries: one in-register permute per 8 entries, then blends on bits 3 and 4 of
    /// the index (its sign bit after a shift); beyond that, a gather. AMD's cores run the
    /// gather as a long microcoded sequence: on an AMD EPYC (family 25, AVX2 only) the gathers
    /// of the bin rule and of the weight tables took about two thirds of GHM-R's pass 2, and
    /// the permutes made the one call at 64Ki elements 0.555 of itself for GHM-R (10 bins)
    /// and 0.813 for GHM-C (30 bins; medians of 8 alternating in-process runs). Past 32
    /// entries the permutes and blends no longer pay: with 64 and 128 bins, GHM-C measured
    /// 1.02 and 1.42 of the gather (6 runs each). (Above 16 bins the bin rule no longer looks
    /// up its edge, see [`Vector::EDGE_LUT_MAX`]; the weight tables still do.)
    #[inline(always)]
    fn lut(table: &[f32; 256], idx: __m256i, len: usize) -> Self {
        // SAFETY: AVX2 present. The permutes read the first 32 entries; the gather reads
        // `table[idx & 255]`, inside the 256-entry table.
        unsafe {
            let t = table.as_ptr();
            if len <= 8 {
                F32x8(row(t, idx))
            } else if len <= 16 {
                F32x8(by_bit::<28>(idx, row(t, idx), row(t.add(8), idx)))
            } else if len <= 32 {
                let lo = by_bit::<28>(idx, row(t, idx), row(t.add(8), idx));
                let hi = by_bit::<28>(idx, row(t.add(16), idx), row(t.add(24), idx));
                F32x8(by_bit::<27>(idx, lo, hi))
            } else {
                let idx = _mm256_and_si256(idx, _mm256_set1_epi32(255));
                F32x8(_mm256_i32gather_ps::<4>(t, idx))
            }
        }
    }
    #[inline(always)]
    fn i_permute(table: __m256i, idx: __m256i) -> __m256i {
        // SAFETY: AVX2 present.
        unsafe { _mm256_permutevar8x32_epi32(table, idx) }
    }
    /// One permute by the mask's row of [`COMPRESS`], then one unaligned store of all eight
    /// lanes (the ones past the count are unspecified, as the trait allows).
    #[inline(always)]
    fn i_compress(a: __m256i, m: __m256i, out: &mut [i32]) -> usize {
        let bits = Self::m_bits(m);
        let Some(out) = out.get_mut(..8) else {
            return compress_into(&Self::i_to_array(a)[..8], bits, out);
        };
        // SAFETY: AVX2 present; `out` has room for the 8 lanes stored.
        unsafe {
            let idx =
                _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(COMPRESS[bits as usize & 0xff] as i64));
            let packed = _mm256_permutevar8x32_epi32(a, idx);
            _mm256_storeu_si256(out.as_mut_ptr().cast(), packed);
        }
        bits.count_ones() as usize
    }
    #[inline(always)]
    fn mul_add_to_f64(self, b: Self, acc: &mut [f64; MAX_LANES]) {
        let ((a0, a1), (b0, b1)) = (to_f64(self.0), to_f64(b.0));
        // SAFETY: AVX2 and FMA present; `acc` holds at least 8 f64 (two halves of 4).
        unsafe {
            let p = acc.as_mut_ptr();
            _mm256_storeu_pd(p, _mm256_fmadd_pd(a0, b0, _mm256_loadu_pd(p)));
            _mm256_storeu_pd(p.add(4), _mm256_fmadd_pd(a1, b1, _mm256_loadu_pd(p.add(4))));
        }
    }
    #[inline(always)]
    fn add_to_f64(self, acc: &mut [f64; MAX_LANES]) {
        let (lo, hi) = to_f64(self.0);
        // SAFETY: AVX2 present; `acc` holds at least 8 f64 (two halves of 4).
        unsafe {
            let p = acc.as_mut_ptr();
            _mm256_storeu_pd(p, _mm256_add_pd(_mm256_loadu_pd(p), lo));
            _mm256_storeu_pd(p.add(4), _mm256_add_pd(_mm256_loadu_pd(p.add(4)), hi));
        }
    }
}

/// `t[idx & 7]` per lane: eight table entries loaded and permuted in the register.
///
/// # Safety
///
/// AVX2 present; `t` points to 8 readable floats.
#[inline(always)]
unsafe fn row(t: *const f32, idx: __m256i) -> __m256 {
    // SAFETY: as the caller promises.
    unsafe { _mm256_permutevar8x32_ps(_mm256_loadu_ps(t), idx) }
}

/// Per lane, `b` where the index bit that `SHIFT` moves to the sign bit (bit `31 - SHIFT`) is
/// set, `a` where it is clear.
#[inline(always)]
fn by_bit<const SHIFT: i32>(idx: __m256i, a: __m256, b: __m256) -> __m256 {
    // SAFETY: AVX2 present (module invariant).
    unsafe { _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32::<SHIFT>(idx))) }
}

/// Lanes 0..4 and 4..8 of `v`, widened to f64 (exactly).
#[inline(always)]
fn to_f64(v: __m256) -> (__m256d, __m256d) {
    // SAFETY: AVX2 present (module invariant).
    unsafe {
        (
            _mm256_cvtps_pd(_mm256_castps256_ps128(v)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)),
        )
    }
}

/// For each 8-bit lane mask, the indices of its set lanes in order, one per byte (the rest
/// 0): the permutation that [`Vector::i_compress`] applies.
static COMPRESS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut m = 0;
    while m < 256 {
        let (mut row, mut n, mut j) = (0u64, 0, 0);
        while j < 8 {
            if m >> j & 1 == 1 {
                row |= (j as u64) << (8 * n);
                n += 1;
            }
            j += 1;
        }
        t[m] = row;
        m += 1;
    }
    t
};
