//! Vector math, written once over [`Vector`](crate::simd::Vector), one function per file in
//! the manner of `libm`: each file names its algorithm's source and its measured error bound.

// Coefficients are quoted as published, beyond f32 precision.
#![allow(clippy::excessive_precision)]

mod exp;
mod ln;
mod log1p;

pub(crate) use exp::exp_neg;
pub(crate) use ln::{ln, ln_1m, ln_1p};
pub(crate) use log1p::log1p;

use crate::simd::Vector;

/// Small integers (|i| < 2^22) to f32, exactly: `from_bits(i + bits(1.5 * 2^23)) - 1.5 * 2^23`.
#[inline(always)]
fn i_to_f<V: Vector>(i: V::I) -> V {
    let magic = V::splat(12_582_912.0);
    V::from_bits(V::i_add(i, magic.to_bits())).sub(magic)
}

/// Correctly rounded square roots, scalar: `libm`'s (one `sqrtss` / `sqrtsd` on x86_64), or
/// under Miri, which cannot run that inline assembly, std's (the same correctly rounded
/// result).
#[inline(always)]
pub(crate) fn sqrtf(x: f32) -> f32 {
    #[cfg(all(miri, feature = "std"))]
    return x.sqrt();
    #[cfg(not(all(miri, feature = "std")))]
    libm::sqrtf(x)
}

/// As [`sqrtf`], in f64.
#[inline(always)]
pub(crate) fn sqrt(x: f64) -> f64 {
    #[cfg(all(miri, feature = "std"))]
    return x.sqrt();
    #[cfg(not(all(miri, feature = "std")))]
    libm::sqrt(x)
}
