//! `f32` as a one-lane [`Vector`]: lets the scalar path share the vector math that defines the
//! gradient norm, operation for operation.

use super::{Vector, MAX_LANES};

impl Vector for f32 {
    const LANES: usize = 1;
    const FUSED: bool = false;
    type M = bool;
    type I = i32;

    #[inline(always)]
    fn splat(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn from_array(a: &[f32; MAX_LANES]) -> Self {
        a[0]
    }
    #[inline(always)]
    fn to_array(self) -> [f32; MAX_LANES] {
        let mut a = [0.0; MAX_LANES];
        a[0] = self;
        a
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
        crate::vmath::sqrtf(self)
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        self * a + b
    }
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        // With std, the platform's correctly rounded fmaf (hardware FMA where the CPU has it,
        // chosen at run time by the C library); the exact emulation otherwise.
        #[cfg(feature = "std")]
        {
            f32::mul_add(self, a, b)
        }
        #[cfg(not(feature = "std"))]
        {
            super::fma_emu::fma1(self, a, b)
        }
    }
    #[inline(always)]
    fn abs(self) -> Self {
        f32::from_bits(self.to_bits() & 0x7fff_ffff)
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        if self < o {
            self
        } else {
            o
        }
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        if self > o {
            self
        } else {
            o
        }
    }
    #[inline(always)]
    fn lt(self, o: Self) -> bool {
        self < o
    }
    #[inline(always)]
    fn le(self, o: Self) -> bool {
        self <= o
    }
    #[inline(always)]
    fn gt(self, o: Self) -> bool {
        self > o
    }
    #[inline(always)]
    fn ge(self, o: Self) -> bool {
        self >= o
    }
    #[inline(always)]
    fn select(m: bool, a: Self, b: Self) -> Self {
        if m {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn m_and(a: bool, b: bool) -> bool {
        a & b
    }
    #[inline(always)]
    fn m_andnot(a: bool, b: bool) -> bool {
        a & !b
    }
    #[inline(always)]
    fn m_any(m: bool) -> bool {
        m
    }
    #[inline(always)]
    fn m_bits(m: bool) -> u32 {
        m as u32
    }
    #[inline(always)]
    fn m_count(m: bool) -> u32 {
        m as u32
    }
    #[inline(always)]
    fn i_splat(x: i32) -> i32 {
        x
    }
    #[inline(always)]
    fn i_iota() -> i32 {
        0
    }
    #[inline(always)]
    fn i_permute(table: i32, _: i32) -> i32 {
        table
    }
    #[inline(always)]
    fn i_load(s: &[i32]) -> i32 {
        s[0]
    }
    #[inline(always)]
    fn i_load_partial(s: &[i32]) -> i32 {
        s.first().copied().unwrap_or(0)
    }
    #[inline(always)]
    fn i_to_array(i: i32) -> [i32; MAX_LANES] {
        let mut a = [0; MAX_LANES];
        a[0] = i;
        a
    }
    #[inline(always)]
    fn i_add(a: i32, b: i32) -> i32 {
        a.wrapping_add(b)
    }
    #[inline(always)]
    fn i_sub(a: i32, b: i32) -> i32 {
        a.wrapping_sub(b)
    }
    #[inline(always)]
    fn i_inc(a: i32, m: bool) -> i32 {
        a.wrapping_add(m as i32)
    }
    #[inline(always)]
    fn i_eq(a: i32, b: i32) -> bool {
        a == b
    }
    #[inline(always)]
    fn i_lt(a: i32, b: i32) -> bool {
        a < b
    }
    #[inline(always)]
    fn i_min_u(a: i32, b: i32) -> i32 {
        (a as u32).min(b as u32) as i32
    }
    #[inline(always)]
    fn i_select(m: bool, a: i32, b: i32) -> i32 {
        if m {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn i_shl<const S: i32>(a: i32) -> i32 {
        ((a as u32) << S) as i32
    }
    #[inline(always)]
    fn i_sra<const S: i32>(a: i32) -> i32 {
        a >> S
    }
    #[inline(always)]
    fn to_bits(self) -> i32 {
        f32::to_bits(self) as i32
    }
    #[inline(always)]
    fn from_bits(i: i32) -> Self {
        f32::from_bits(i as u32)
    }
    #[inline(always)]
    fn trunc_i(self) -> i32 {
        // `as` saturates and maps NaN to 0: defined for every input.
        self as i32
    }
}
