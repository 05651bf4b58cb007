//! The small vector trait the kernels are written over, and its implementations.
//!
//! The kernels ([`crate::kernel`]), the per-element models ([`crate::model`]), the input
//! layouts ([`crate::source`]) and the vector math ([`crate::vmath`]) are written once, generic
//! over [`Vector`]. A backend only supplies these primitives, in the manner of `memchr`'s
//! per-architecture modules:
//!
//! - [`portable`]: `wide::f32x8`, i.e. whatever vector instructions the build's target
//!   features give `wide` (SSE2 pairs on a baseline x86_64 build, NEON pairs on aarch64).
//! - [`avx2`] and [`avx512`]: `core::arch` primitives for the x86_64 backends chosen at run
//!   time (`wide` cannot be compiled per target feature inside one binary).
//! - `f32` itself is a one-lane `Vector` ([`one`]). The scalar path uses it for the gradient
//!   norm, so that the scalar path and every vector backend compute `g` with the very same
//!   operations and therefore put every element in the same bin.
//!
//! Contract for implementors: `add`, `sub`, `mul`, `div` and `sqrt` are IEEE-754 binary32
//! operations with round-to-nearest-even, comparisons are ordered (false when either side is
//! NaN), integer operations wrap, and `mul_add` may or may not be fused. Nothing else in the
//! crate relies on more.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
pub(crate) mod fma_emu;
pub(crate) mod one;
pub(crate) mod portable;

/// The widest vector any backend uses; sizes the stack buffers used for tails and scatter.
pub(crate) const MAX_LANES: usize = 16;

/// A vector of `LANES` f32 lanes, with its mask type `M` and its i32 vector `I`.
pub(crate) trait Vector: Copy {
    /// Number of f32 lanes (at most [`MAX_LANES`]).
    const LANES: usize;
    /// One boolean per lane.
    type M: Copy;
    /// One i32 per lane.
    type I: Copy;

    // ---- moving data ----

    /// Every lane `x`.
    fn splat(x: f32) -> Self;
    /// Lanes `0..LANES` from `a` (the rest of `a` is ignored).
    fn from_array(a: &[f32; MAX_LANES]) -> Self;
    /// The lanes, followed by zeros.
    fn to_array(self) -> [f32; MAX_LANES];
    /// The first `LANES` values of `s`, which must hold at least that many.
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        let mut a = [0.0; MAX_LANES];
        a[..Self::LANES].copy_from_slice(&s[..Self::LANES]);
        Self::from_array(&a)
    }
    /// `s` (shorter than `LANES`) followed by zero lanes.
    #[inline(always)]
    fn load_partial(s: &[f32]) -> Self {
        let mut a = [0.0; MAX_LANES];
        let n = s.len().min(Self::LANES);
        a[..n].copy_from_slice(&s[..n]);
        Self::from_array(&a)
    }
    /// Writes the lanes to the first `LANES` slots of `out`.
    #[inline(always)]
    fn store(self, out: &mut [f32]) {
        out[..Self::LANES].copy_from_slice(&self.to_array()[..Self::LANES]);
    }
    /// Writes the first `out.len()` (< `LANES`) lanes.
    #[inline(always)]
    fn store_partial(self, out: &mut [f32]) {
        let n = out.len().min(Self::LANES);
        out[..n].copy_from_slice(&self.to_array()[..n]);
    }

    // ---- f32 arithmetic (correctly rounded) ----

    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    fn sqrt(self) -> Self;
    /// `self * a + b`, fused where the hardware can. Never used on the path that computes the
    /// gradient norm, whose result must not depend on the backend.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// Whether [`Vector::mul_add`] and [`Vector::mul_neg_add`] round once on this backend.
    const FUSED: bool;
    /// Bin counts up to which the bin rule looks up the upper edge of its estimate in a
    /// table ([`Vector::lut`]); above, it divides (see `Bins::vector_any`). All bin counts by
    /// default: the lookup stays where the division did not pay (SSE2: the same either way,
    /// its emulated fused multiply-adds dominate) or was not measured (AVX-512, NEON); AVX2
    /// divides above 16 (see its value there).
    const EDGE_LUT_MAX: usize = usize::MAX;
    /// `b - self * a`, fused where [`Vector::mul_add`] is (same caveat).
    #[inline(always)]
    fn mul_neg_add(self, a: Self, b: Self) -> Self {
        b.sub(self.mul(a))
    }
    /// `self * a + b` rounded once (IEEE-754 fusedMultiplyAdd): the same bits on every
    /// backend. Hardware FMA where the backend has it; an exact emulation otherwise (the
    /// scalar path and SSE2, see [`fma_emu`]).
    fn fma(self, a: Self, b: Self) -> Self;
    /// Clears the sign bit.
    fn abs(self) -> Self;
    /// Sets the sign bit: `-|self|` (one operation where `0 - |self|` takes two; `-0.0` for a
    /// zero).
    #[inline(always)]
    fn neg_abs(self) -> Self {
        Self::splat(-0.0).sub(self.abs())
    }
    /// Lane-wise minimum; only used where neither side is NaN.
    fn min(self, o: Self) -> Self;
    /// Lane-wise maximum; only used where neither side is NaN.
    fn max(self, o: Self) -> Self;

    // ---- comparisons and masks ----

    fn lt(self, o: Self) -> Self::M;
    fn le(self, o: Self) -> Self::M;
    fn gt(self, o: Self) -> Self::M;
    fn ge(self, o: Self) -> Self::M;
    /// `if m { a } else { b }` per lane.
    fn select(m: Self::M, a: Self, b: Self) -> Self;
    /// `self * o` in the lanes of `m`, `self` in the others. (AVX-512: one masked multiply
    /// instead of a multiply and a blend.)
    #[inline(always)]
    fn mul_in(self, m: Self::M, o: Self) -> Self {
        Self::select(m, self.mul(o), self)
    }
    fn m_and(a: Self::M, b: Self::M) -> Self::M;
    /// `a & !b`.
    fn m_andnot(a: Self::M, b: Self::M) -> Self::M;
    /// Whether any lane is set.
    fn m_any(m: Self::M) -> bool;
    /// Number of lanes set.
    fn m_count(m: Self::M) -> u32;
    /// Bit `j` set for each set lane `j`.
    fn m_bits(m: Self::M) -> u32;

    // ---- i32 lanes ----

    fn i_splat(x: i32) -> Self::I;
    /// `0, 1, 2, ..., LANES - 1`.
    fn i_iota() -> Self::I;
    /// The first `LANES` values of `s`.
    fn i_load(s: &[i32]) -> Self::I;
    /// `s` (shorter than `LANES`) followed by zero lanes.
    fn i_load_partial(s: &[i32]) -> Self::I;
    /// The lanes, followed by zeros.
    fn i_to_array(i: Self::I) -> [i32; MAX_LANES];
    fn i_add(a: Self::I, b: Self::I) -> Self::I;
    fn i_sub(a: Self::I, b: Self::I) -> Self::I;
    /// `a + 1` in the lanes where `m` is set.
    fn i_inc(a: Self::I, m: Self::M) -> Self::I;
    fn i_eq(a: Self::I, b: Self::I) -> Self::M;
    /// The lanes of `m` where `a == b` (one masked compare on AVX-512).
    #[inline(always)]
    fn i_eq_in(m: Self::M, a: Self::I, b: Self::I) -> Self::M {
        Self::m_and(m, Self::i_eq(a, b))
    }
    /// The lanes of `m` where `a != b`. (AVX-512 compares under the mask, in one instruction
    /// that keeps the mask in a mask register.)
    #[inline(always)]
    fn i_ne_in(m: Self::M, a: Self::I, b: Self::I) -> Self::M {
        Self::m_andnot(m, Self::i_eq(a, b))
    }
    /// Signed `a < b`.
    fn i_lt(a: Self::I, b: Self::I) -> Self::M;
    /// Unsigned minimum (so negative values become `b`).
    fn i_min_u(a: Self::I, b: Self::I) -> Self::I;
    /// Unsigned maximum. The default is `a + b - min_u(a, b)` (wrapping).
    #[inline(always)]
    fn i_max_u(a: Self::I, b: Self::I) -> Self::I {
        Self::i_sub(Self::i_add(a, b), Self::i_min_u(a, b))
    }
    fn i_select(m: Self::M, a: Self::I, b: Self::I) -> Self::I;
    /// Logical left shift by a constant.
    fn i_shl<const S: i32>(a: Self::I) -> Self::I;
    /// Arithmetic right shift by a constant.
    fn i_sra<const S: i32>(a: Self::I) -> Self::I;
    /// Reinterprets f32 bits as i32.
    fn to_bits(self) -> Self::I;
    /// Reinterprets i32 bits as f32.
    fn from_bits(i: Self::I) -> Self;
    /// Truncates toward zero; lanes out of i32 range (or NaN) give an unspecified value.
    fn trunc_i(self) -> Self::I;

    // ---- table lookups ----

    /// `table[idx]` per lane, for indices below `len` (the entries in use); lanes with
    /// larger indices get an unspecified value from the table.
    #[inline(always)]
    fn lut(table: &[f32; 256], idx: Self::I, len: usize) -> Self {
        let _ = len;
        let idx = Self::i_to_array(idx);
        let mut a = [0.0; MAX_LANES];
        for j in 0..Self::LANES {
            a[j] = table[(idx[j] & 255) as usize];
        }
        Self::from_array(&a)
    }
    /// Lane `idx[j]` of `table` in lane `j`; `idx` lanes must be below `LANES` (others read
    /// an unspecified lane). A gather from a vector's worth of data already loaded.
    #[inline(always)]
    fn i_permute(table: Self::I, idx: Self::I) -> Self::I {
        let (t, idx) = (Self::i_to_array(table), Self::i_to_array(idx));
        let mut a = [0; MAX_LANES];
        for j in 0..Self::LANES {
            a[j] = t[idx[j] as u32 as usize % Self::LANES];
        }
        Self::i_load(&a)
    }

    // ---- reductions ----

    /// Adds each lane, widened to f64, to `acc[lane]`.
    #[inline(always)]
    fn add_to_f64(self, acc: &mut [f64; MAX_LANES]) {
        let a = self.to_array();
        for j in 0..Self::LANES {
            acc[j] += a[j] as f64;
        }
    }

    /// Adds the lanes that `m` selects, widened to f64, to `acc[lane]` (the others may hold
    /// anything, even NaN). (AVX-512: masked adds instead of a blend.)
    #[inline(always)]
    fn add_to_f64_in(self, m: Self::M, acc: &mut [f64; MAX_LANES]) {
        Self::select(m, self, Self::splat(0.0)).add_to_f64(acc);
    }

    /// Writes the lanes of `a` that `m` selects, in lane order, to the front of `out` (which
    /// must have room for `LANES`; what follows them is unspecified) and returns how many.
    #[inline(always)]
    fn i_compress(a: Self::I, m: Self::M, out: &mut [i32]) -> usize {
        let (a, bits) = (Self::i_to_array(a), Self::m_bits(m));
        let mut n = 0;
        for (j, &v) in a.iter().enumerate().take(Self::LANES) {
            // Branch-free: every lane is written, only the selected ones advance.
            if let Some(o) = out.get_mut(n) {
                *o = v;
            }
            n += (bits >> j) as usize & 1;
        }
        n
    }

    /// Adds `self[j] * b[j]`, computed in f64 (so the product is exact), to `acc[j]`.
    #[inline(always)]
    fn mul_add_to_f64(self, b: Self, acc: &mut [f64; MAX_LANES]) {
        let (a, b) = (self.to_array(), b.to_array());
        for j in 0..Self::LANES {
            acc[j] += a[j] as f64 * b[j] as f64;
        }
    }

    /// `1 / self` for positive, normal, finite lanes, to within 1 ulp rather than correctly
    /// rounded: for losses only, never for `g` or `dl/dx`. The default divides (correctly
    /// rounded); AVX-512 refines its 14-bit estimate by one Newton step (GHM-R's one call,
    /// whose loss divides, 1.2% faster at 64Ki elements: median of 6 alternating runs).
    #[inline(always)]
    fn recip(self) -> Self {
        Self::splat(1.0).div(self)
    }

    /// `self * 2^n`, correctly rounded (so exact unless the result is subnormal), for an
    /// integer `-150 <= n <= 0` given as f32: the same bits on every backend. The default
    /// multiplies by two normal powers of two, `2^(n/2)` and `2^(n - n/2)`: the first product
    /// is exact and the second rounds once.
    #[inline(always)]
    fn ldexp(self, n: Self) -> Self {
        let n = n.trunc_i();
        let n1 = Self::i_sra::<1>(n);
        let n2 = Self::i_sub(n, n1);
        let bias = Self::i_splat(127);
        let p1 = Self::from_bits(Self::i_shl::<23>(Self::i_add(n1, bias)));
        let p2 = Self::from_bits(Self::i_shl::<23>(Self::i_add(n2, bias)));
        self.mul(p1).mul(p2)
    }

    // ---- derived helpers (not for implementors) ----

    /// Lanes `0..n` set.
    #[inline(always)]
    fn first_lanes(n: usize) -> Self::M {
        Self::i_lt(Self::i_iota(), Self::i_splat(n as i32))
    }
    /// `|x| <= f32::MAX`: false for infinities and NaN.
    #[inline(always)]
    fn is_finite(self) -> Self::M {
        self.abs().le(Self::splat(f32::MAX))
    }
    /// `lo <= x <= hi`: false for NaN.
    #[inline(always)]
    fn in_range(self, lo: f32, hi: f32) -> Self::M {
        Self::m_and(self.ge(Self::splat(lo)), self.le(Self::splat(hi)))
    }
}

/// The selected lanes of `a` (bit `j` of `bits` selects lane `j`), in lane order, written to
/// the front of `out` as far as it has room; returns how many were written. The backends'
/// [`Vector::i_compress`] fall back on it when `out` is too short for a full-vector store
/// (never the case in the kernels, whose buffers have room). Only those backends use it.
#[cfg(target_arch = "x86_64")]
pub(crate) fn compress_into(a: &[i32], bits: u32, out: &mut [i32]) -> usize {
    let mut n = 0;
    for (j, &v) in a.iter().enumerate() {
        if bits >> j & 1 == 1 && n < out.len() {
            out[n] = v;
            n += 1;
        }
    }
    n
}
