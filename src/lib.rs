//! Gradient Harmonized Mechanism (GHM-C and GHM-R, Li et al., AAAI 2019, arXiv 1811.05181)
//! as branch-free SIMD kernels: `no_std`, allocation-free, exact to mmdetection's `GHMC` and
//! `GHMR`, with the loss and its gradient produced by the same call.
//!
//! GHM re-weights every element of a loss by the inverse density of its gradient norm `g`:
//! elements are put in `bins` equal-width bins of `g`, and each gets the weight
//! `tot / count[bin] / nonempty_bins` (optionally with the counts smoothed by an exponential
//! moving average across batches), so the flood of easy examples and the few outliers stop
//! dominating training.
//!
//! # Use
//!
//! ```
//! use ghm::{Dense, GhmC, Out};
//!
//! let logits = [2.0f32, -1.5, 0.3, -4.0];
//! let targets = [1.0f32, 0.0, 1.0, 0.0];
//! let mut grad = [0.0f32; 4];
//! let ghm = GhmC { bins: 10, ..GhmC::default() };
//! let loss = ghm.loss_grad(None, &Dense::new(&logits, &targets), Out::grad(&mut grad))?;
//! assert!(loss > 0.0 && grad[1] > 0.0 && grad[2] < 0.0);
//! # Ok::<(), ghm::Error>(())
//! ```
//!
//! Beyond GHM-C and GHM-R: [`GhmSoftmax`] is GHM for a softmax classifier (softmax
//! cross-entropy, `g = 1 - p_y`, loss and gradient computed by the library), and [`GhmG`] is
//! GHM for any loss whose per-sample gradient norm the caller computes ("bring your own g",
//! its gradient rows rescaled in place).
//!
//! With an EMA (`momentum > 0`) the caller owns the state ([`Ema`]) and passes it to every
//! call. A batch split across threads, processes or machines goes through the phased API:
//! [`GhmC::accumulate`] per chunk into a [`Hist`], [`Hist::merge`], one [`GhmC::finalize`],
//! then [`GhmC::apply`] per chunk; the gradients are bit-identical to the one-call function.
//!
//! # Semantics
//!
//! Exactly those of the contract, `docs/contract.md` section 1 (mmdet 3.3 `ghm_loss.py` with
//! `weight_reduce_loss`), with these choices where mmdet is silent:
//!
//! - **Bins** are exact with respect to mmdet's f32 edges `k / M` (last edge `1 + 1e-6` for
//!   GHM-C, `1000` for GHM-R). The gradient norm `g` is computed by the same sequence of
//!   correctly rounded f32 operations on every backend, so the bin of an element never
//!   depends on the machine.
//! - **Bad input** (non-finite prediction, target or label weight, negative label weight,
//!   GHM-C target or probability outside `[0, 1]`): [`Error::Input`] and nothing written, or
//!   with `skip_bad` weight 0, gradient 0, counted in `skipped`. With class-index labels a bad
//!   anchor weight makes all `C` elements of the anchor bad.
//! - **`n == 0`**: returns loss 0 and writes nothing (not even the statistics).
//! - **Reductions**: MEAN divides by `tot + FLT_EPSILON` like mmdet 3.3; SUM and NONE (which
//!   mmdet 3.3 rejects for GHM) return `sum(lw * w * l)` and the gradient of that sum.
//! - **Invalid elements** (label weight 0) get gradient +0 and loss element 0.
//! - **Saturation**: GHM-C is finite for every finite logit (`exp` only ever sees `-|x|`).
//!   GHM-R's gradient is finite for every finite input; its loss is `+inf` only where the
//!   true value (about `|x - t|`) exceeds `f32::MAX`.
//! - **Accuracy**: per-element math in f32 (losses and gradients within a few ulp), sums of
//!   losses and of label weights in f64, the per-batch step in f64: the loss is within `1e-5`
//!   relative, and each gradient within `1e-6` of the largest, of an f64 evaluation of the
//!   formulas with the same bins.
//! - **EMA**: updated once per batch, only for non-empty bins, in f64 rounded to f32.
//!
//! # Determinism
//!
//! For any split of a batch into chunks, any order of accumulating and merging them, and any
//! number of threads, processes or machines, the phased API ([`GhmC::accumulate`],
//! [`Hist::merge`], [`GhmC::finalize`], [`GhmC::apply`]) gives **gradients bit-identical** to
//! the one-call function, **the EMA state identical**, and **the loss within 1 ulp** of f32
//! (the per-bin f64 loss sums are added in another order). Gradients depend only on exact
//! quantities (integer bin counts, the valid count, the EMA made from them), and every backend
//! computes the gradient norm and `dl/dx` with the same correctly rounded operations, so this
//! also holds across machines with different backends. For GHM-R, whose `tot` is a sum of
//! label weights, it holds whenever the partial sums are exact in f64 (0/1 or dyadic weights;
//! any f32 weights whose total stays below 2^53 times the largest power of two dividing them
//! all). Per-element losses are bit-identical for any chunking on one backend.
//!
//! # Resources
//!
//! No function allocates (the `rayon` convenience excepted) or touches global state other
//! than the backend choice ([`set_backend`], the `GHM_BACKEND` environment variable read once
//! with `std`). Pass 1 keeps its per-lane histogram on the stack: about 30 KiB.
//!
//! # Layout of the crate
//!
//! | module | what it holds |
//! |---|---|
//! | `api` | the public functions: one call, and the phased accumulate / finalize / apply |
//! | `config`, `error`, `state` | configuration, errors, and the plain-data state shared with C, with the per-batch step |
//! | `model` | the per-element formulas (`g`, `dl/dx`, `l`) of GHM-C and GHM-R |
//! | `bins` | the exact bin rule |
//! | `source` | input layouts: dense, class-index labels anchor-major and class-major |
//! | `kernel` | the two passes, written once over the vector trait |
//! | `generic` | GHM for the caller's own `g` and gradient rows ([`GhmG`]) |
//! | `softmax`, `softmax_kernel` | softmax cross-entropy GHM ([`GhmSoftmax`]) and its two passes over the vector trait |
//! | `scalar` | the same passes one element at a time (the reference path) |
//! | `simd`, `vmath` | the vector trait with its backends, and vector `exp` / `ln` |
//! | `ffi`, `fault` | the C ABI, and its refused calls explained for `ghm_last_error` |
#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

mod api;
mod backend;
mod bins;
mod config;
mod dispatch;
mod error;
mod fault;
pub mod ffi;
mod generic;
mod kernel;
pub mod log;
mod model;
#[cfg(feature = "rayon")]
mod par;
mod scalar;
mod simd;
mod softmax;
mod softmax_kernel;
mod source;
mod state;
mod view;
mod vmath;

pub use api::{Dense, Labels, Out};
pub use backend::{set_backend, Backend};
pub use config::{EmaStart, GhmC, GhmR, Input, Layout, Normalize, Reduction, MAX_BINS};
pub use error::Error;
pub use generic::{GOut, GhmG, GradRows, Samples};
pub use softmax::{GhmSoftmax, SoftmaxOut};
pub use state::{Ema, Hist, Stats, Weights};
pub use view::{Blocks, View};

/// Crate version as `major << 16 | minor << 8 | patch` (what `ghm_version()` returns).
pub const VERSION: u32 = {
    const fn parse(s: &str) -> u32 {
        let b = s.as_bytes();
        let mut i = 0;
        let mut v = 0;
        while i < b.len() {
            v = v * 10 + (b[i] - b'0') as u32;
            i += 1;
        }
        v
    }
    (parse(env!("CARGO_PKG_VERSION_MAJOR")) << 16)
        | (parse(env!("CARGO_PKG_VERSION_MINOR")) << 8)
        | parse(env!("CARGO_PKG_VERSION_PATCH"))
};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[doc(hidden)]
/// Internals exposed for the crate's own tests and benchmarks; not a stable API.
pub mod __private {
    pub use crate::dispatch::Probe;

    /// `f` of every element of `input`, computed by `backend`'s vector math (for measuring
    /// its error); `None` if the backend is not available here.
    pub fn probe(backend: crate::Backend, f: Probe, input: &[f32], out: &mut [f32]) -> Option<()> {
        backend
            .is_available()
            .then(|| crate::dispatch::probe(backend, f, input, out))
    }
    /// The bin of `g` by the scalar path's rule ([`Probe::Bin`] gives the vector rule's on
    /// each backend).
    pub fn bin_scalar(bins: usize, last_edge: f32, g: f32) -> Option<usize> {
        crate::bins::Bins::new(bins, last_edge).scalar(g)
    }
    /// The fused multiply-add emulations: one lane, and eight lanes (SSE2 on x86_64).
    pub fn fma_emulated(a: f32, b: f32, c: f32) -> f32 {
        crate::simd::fma_emu::fma1(a, b, c)
    }
    /// See [`fma_emulated`].
    pub fn fma_emulated8(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        crate::simd::fma_emu::fma8(a, b, c)
    }
    /// The one-line message of the fault made of these parts (an empty `field` or `other`:
    /// none), as `ghm_last_error`'s report carries it, written into `buf`: truncated at a
    /// character boundary, with room kept for the NUL (not written). Returns its length.
    #[allow(clippy::too_many_arguments)]
    pub fn fault_message(
        error: crate::Error,
        argument: &'static core::ffi::CStr,
        field: &'static core::ffi::CStr,
        index: Option<usize>,
        value: Option<f64>,
        other: &'static core::ffi::CStr,
        why: &'static core::ffi::CStr,
        buf: &mut [u8],
    ) -> usize {
        let mut f = crate::fault::Fault::new(error, argument, why)
            .field(field)
            .other(other);
        if let Some(i) = index {
            f = f.at(i);
        }
        if let Some(v) = value {
            f = f.value(v);
        }
        let mut w = crate::fault::Fixed { buf, len: 0 };
        // Writing into a `Fixed` never fails: it truncates.
        let _ = f.write(&mut w);
        w.len
    }
    /// `(g, dl/dx)` of one GHM-C logits element, as every backend computes it.
    pub fn ghmc_g(x: f32, t: f32) -> (f32, f32) {
        use crate::model::Model;
        let e = crate::model::CLogits.eval::<f32, false>(x, t);
        (e.g, e.grad)
    }
    /// `(g, dl/dx)` of one GHM-R element, as every backend computes it.
    pub fn ghmr_g(x: f32, t: f32, mu: f32) -> (f32, f32) {
        use crate::model::Model;
        let e = crate::model::R::new(mu).eval::<f32, false>(x, t);
        (e.g, e.grad)
    }
}
