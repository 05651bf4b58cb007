//! Vector math, written once over [`Vector`](crate::simd::Vector), one function per file in
//! the manner of `libm`: each file names its algorithm's source and its measured error bound.

// Coefficients are quoted as published, beyond f32 precision.
#![allow(clippy::excessive_precision)]

mod exp;
mod ln;

pub(crate) use exp::exp_neg;
pub(crate) use ln::{ln, ln_1m, ln_1p};
