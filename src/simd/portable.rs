//! `wide::f32x8` as a [`Vector`]: the baseline vector backend of every target.
//!
//! `wide` picks its instructions from the target features the crate is *compiled* with (SSE2
//! pairs on a plain x86_64 build, AVX with `-C target-cpu=native`, NEON pairs on aarch64,
//! simd128 on wasm, plain arrays elsewhere), so this backend needs no runtime detection and
//! is what a `no_std` build uses.

use super::{Vector, MAX_LANES};
use wide::bytemuck::cast;
use wide::{f32x8, i32x8};

impl Vector for f32x8 {
    const LANES: usize = 8;
    // `wide` fuses exactly when the build has FMA (x86_64) or NEON (aarch64).
    const FUSED: bool = cfg!(any(
        target_feature = "fma",
        all(target_arch = "aarch64", target_feature = "neon")
    ));
    /// All-ones / all-zeros i32 lanes.
    type M = i32x8;
    type I = i32x8;

    #[inline(always)]
    fn splat(x: f32) -> Self {
        f32x8::splat(x)
    }
    #[inline(always)]
    fn from_array(a: &[f32; MAX_LANES]) -> Self {
        f32x8::new([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]])
    }
    #[inline(always)]
    fn to_array(self) -> [f32; MAX_LANES] {
        let v = f32x8::to_array(self);
        let mut a = [0.0; MAX_LANES];
        a[..8].copy_from_slice(&v);
        a
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        let a: [f32; 8] = match s.get(..8) {
            Some(head) => [
                head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
            ],
            None => [0.0; 8],
        };
        f32x8::new(a)
    }
    #[inline(always)]
    fn store(self, out: &mut [f32]) {
        if let Some(head) = out.get_mut(..8) {
            head.copy_from_slice(&f32x8::to_array(self));
        }
    }
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        self - o
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self * o
    }
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        self / o
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f32x8::sqrt(self)
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32x8::mul_add(self, a, b)
    }
    #[inline(always)]
    fn mul_neg_add(self, a: Self, b: Self) -> Self {
        f32x8::mul_neg_add(self, a, b)
    }
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        #[cfg(any(
            target_feature = "fma",
            all(target_arch = "aarch64", target_feature = "neon")
        ))]
        {
            // `wide` fuses exactly when the build has FMA (x86_64) or NEON (aarch64).
            f32x8::mul_add(self, a, b)
        }
        #[cfg(not(any(
            target_feature = "fma",
            all(target_arch = "aarch64", target_feature = "neon")
        )))]
        {
            f32x8::new(super::fma_emu::fma8(
                f32x8::to_array(self),
                f32x8::to_array(a),
                f32x8::to_array(b),
            ))
        }
    }
    #[inline(always)]
    fn abs(self) -> Self {
        f32x8::abs(self)
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        f32x8::fast_min(self, o)
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        f32x8::fast_max(self, o)
    }
    #[inline(always)]
    fn lt(self, o: Self) -> i32x8 {
        cast(self.simd_lt(o))
    }
    #[inline(always)]
    fn le(self, o: Self) -> i32x8 {
        cast(self.simd_le(o))
    }
    #[inline(always)]
    fn gt(self, o: Self) -> i32x8 {
        cast(self.simd_gt(o))
    }
    #[inline(always)]
    fn ge(self, o: Self) -> i32x8 {
        cast(self.simd_ge(o))
    }
    #[inline(always)]
    fn select(m: i32x8, a: Self, b: Self) -> Self {
        m.select(a, b)
    }
    #[inline(always)]
    fn m_and(a: i32x8, b: i32x8) -> i32x8 {
        a & b
    }
    #[inline(always)]
    fn m_andnot(a: i32x8, b: i32x8) -> i32x8 {
        a & !b
    }
    #[inline(always)]
    fn m_any(m: i32x8) -> bool {
        m.any()
    }
    #[inline(always)]
    fn m_bits(m: i32x8) -> u32 {
        m.to_bitmask()
    }
    #[inline(always)]
    fn m_count(m: i32x8) -> u32 {
        m.to_bitmask().count_ones()
    }
    #[inline(always)]
    fn i_splat(x: i32) -> i32x8 {
        i32x8::splat(x)
    }
    #[inline(always)]
    fn i_iota() -> i32x8 {
        i32x8::new([0, 1, 2, 3, 4, 5, 6, 7])
    }
    #[inline(always)]
    fn i_load(s: &[i32]) -> i32x8 {
        match s.get(..8) {
            Some(h) => i32x8::new([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]),
            None => i32x8::splat(0),
        }
    }
    #[inline(always)]
    fn i_load_partial(s: &[i32]) -> i32x8 {
        let mut a = [0; 8];
        let n = s.len().min(8);
        a[..n].copy_from_slice(&s[..n]);
        i32x8::new(a)
    }
    #[inline(always)]
    fn i_to_array(i: i32x8) -> [i32; MAX_LANES] {
        let v = i.to_array();
        let mut a = [0; MAX_LANES];
        a[..8].copy_from_slice(&v);
        a
    }
    #[inline(always)]
    fn i_add(a: i32x8, b: i32x8) -> i32x8 {
        a + b
    }
    #[inline(always)]
    fn i_sub(a: i32x8, b: i32x8) -> i32x8 {
        a - b
    }
    #[inline(always)]
    fn i_inc(a: i32x8, m: i32x8) -> i32x8 {
        // A set mask lane is -1.
        a - m
    }
    #[inline(always)]
    fn i_eq(a: i32x8, b: i32x8) -> i32x8 {
        a.simd_eq(b)
    }
    #[inline(always)]
    fn i_lt(a: i32x8, b: i32x8) -> i32x8 {
        a.simd_lt(b)
    }
    #[inline(always)]
    fn i_min_u(a: i32x8, b: i32x8) -> i32x8 {
        let (a, b): (wide::u32x8, wide::u32x8) = (cast(a), cast(b));
        cast(a.min(b))
    }
    #[inline(always)]
    fn i_select(m: i32x8, a: i32x8, b: i32x8) -> i32x8 {
        m.select(a, b)
    }
    #[inline(always)]
    fn i_shl<const S: i32>(a: i32x8) -> i32x8 {
        a << (S as u32)
    }
    #[inline(always)]
    fn i_sra<const S: i32>(a: i32x8) -> i32x8 {
        a >> (S as u32)
    }
    #[inline(always)]
    fn to_bits(self) -> i32x8 {
        cast(self)
    }
    #[inline(always)]
    fn from_bits(i: i32x8) -> Self {
        cast(i)
    }
    #[inline(always)]
    fn trunc_i(self) -> i32x8 {
        f32x8::trunc_int(self)
    }
}
