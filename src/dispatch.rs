//! Runs a pass on a backend: the scalar path, the `wide` baseline, or the generic kernel
//! instantiated with a `core::arch` vector type inside a `#[target_feature]` function.
//!
//! This is how one generic kernel body serves every backend. `wide` fixes its instructions
//! when the crate is compiled, so it cannot give a second, run-time-selected instruction set
//! in the same binary; the AVX2 and AVX-512 backends therefore supply the [`Vector`]
//! primitives with `core::arch` intrinsics ([`crate::simd::avx2`], [`crate::simd::avx512`]),
//! and the kernel (all `#[inline(always)]` down to the intrinsics) is compiled once more
//! inside each function below, with that backend's target features enabled. Each mode of
//! pass 1 and each kind of pass 2 is a function of its own (`kernel::Passes`): one function
//! holding them all was slower to build.
//!
//! [`Vector`]: crate::simd::Vector

use crate::backend::Backend;
use crate::bins::Bins;
use crate::error::Error;
use crate::kernel::{self, ApplyArgs, Mode, Outputs, Pass1Opts, Tables};
use crate::model::Model;
use crate::scalar;
use crate::simd::{Vector, MAX_LANES};
use crate::softmax_kernel::{self, Dest, Rows, Sums};
use crate::source::Batch;
use crate::state::{Hist, Weights};

/// Whether [`accumulate`] can store the gradients on `backend`: every vector backend can; the
/// scalar path (the oracle) keeps to its two independent passes.
pub(crate) fn stores_grad(backend: Backend) -> bool {
    backend != Backend::Scalar
}

/// Pass 1 of `batch` on `backend`, which must be available on this machine (every
/// [`crate::config::Plan`] holds one that is). With `grad` (only where [`stores_grad`]
/// holds; the scalar path ignores it), also stores every element's `dl/dx` there for
/// [`rescale`] (see [`kernel::accumulate`]). The scalar path always sums the losses.
pub(crate) fn accumulate<M: Model>(
    backend: Backend,
    model: M,
    bins: &Bins,
    batch: &Batch<'_>,
    opts: Pass1Opts,
    grad: Option<&mut [f32]>,
) -> Result<Hist, Error> {
    match backend {
        Backend::Scalar => scalar::accumulate(model, bins, batch, opts.skip_bad, opts.g),
        // SAFETY: the backend is available, so the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => unsafe { x86::accumulate_avx512(model, bins, batch, opts, grad) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => unsafe { x86::accumulate_avx2(model, bins, batch, opts, grad) },
        _ => kernel::accumulate::<wide::f32x8, M, _>(Plain, model, bins, batch, opts, grad),
    }
}

/// [`kernel::Passes`] for the backend built with the crate's own target features (`wide`):
/// each mode of pass 1, the check and each kind of pass 2 a function of its own, not inlined.
#[derive(Clone, Copy)]
struct Plain;

impl<V: Vector> kernel::Passes<V> for Plain {
    #[inline(never)]
    fn pass1<M: Model, P: Mode>(
        self,
        model: M,
        bins: &Bins,
        batch: &Batch<'_>,
        opts: Pass1Opts,
        grad: &mut [f32],
    ) -> Result<kernel::Pass1Out, Error> {
        kernel::pass1::<V, M, P>(model, bins, batch, opts, grad)
    }
    #[inline(never)]
    fn check<M: Model>(self, model: M, batch: &Batch<'_>) -> Result<(), Error> {
        kernel::check::<V, M>(model, batch)
    }
    #[inline(never)]
    fn apply<M: Model, const LOSS: bool, const ONE: bool>(
        self,
        args: ApplyArgs<'_, '_, M>,
        out: Outputs<'_>,
        skip_bad: bool,
    ) -> Result<[f64; MAX_LANES], Error> {
        kernel::apply_kind::<V, M, LOSS, ONE>(args, out, skip_bad)
    }
}

/// Pass 2 from the gradients [`accumulate`] stored in `grad` (a vector backend's).
pub(crate) fn rescale(
    backend: Backend,
    bins: &Bins,
    w: &Weights,
    loss_weight: f32,
    batch: &Batch<'_>,
    grad: &mut [f32],
) -> Result<(), Error> {
    let t = Tables::new(w, loss_weight);
    match backend {
        // SAFETY: the backend is available, so the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => unsafe { x86::rescale_avx512(bins, &t, batch, grad) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => unsafe { x86::rescale_avx2(bins, &t, batch, grad) },
        _ => kernel::rescale::<wide::f32x8>(bins, &t, batch, grad),
    }
}

/// The input check alone, on `backend`.
pub(crate) fn check<M: Model>(backend: Backend, model: M, batch: &Batch<'_>) -> Result<(), Error> {
    match backend {
        Backend::Scalar => scalar::check(model, batch),
        // SAFETY: the backend is available, so the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => unsafe { x86::check_avx512(model, batch) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => unsafe { x86::check_avx2(model, batch) },
        _ => kernel::check::<wide::f32x8, M>(model, batch),
    }
}

/// Pass 2 of `batch` on `backend`; returns the loss sum if `out.sum_loss` (see
/// [`kernel::apply`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply<M: Model>(
    backend: Backend,
    model: M,
    bins: &Bins,
    w: &Weights,
    loss_weight: f32,
    batch: &Batch<'_>,
    out: Outputs<'_>,
    skip_bad: bool,
) -> Result<f64, Error> {
    if backend == Backend::Scalar {
        return scalar::apply(model, bins, w, loss_weight, batch, out);
    }
    let t = Tables::new(w, loss_weight);
    let sum_loss = out.sum_loss;
    let sum = match backend {
        // SAFETY: the backend is available, so the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => unsafe { x86::apply_avx512(model, bins, &t, batch, out, skip_bad) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => unsafe { x86::apply_avx2(model, bins, &t, batch, out, skip_bad) },
        _ => kernel::apply::<wide::f32x8, M, _>(Plain, model, bins, &t, batch, out, skip_bad),
    }?;
    if sum_loss && !sum.is_finite() {
        // The one call rounds each `w_k * l` to f32 before its f64 sum (see `kernel::apply`):
        // a loss near f32::MAX in a bin of weight > 1 made it +inf where the exact product
        // is finite (found by fuzzing). The exact sum, as the scalar path takes it; no
        // training gets here, so the kernels keep their speed.
        let out = Outputs {
            grad: None,
            loss_elems: None,
            accumulate: false,
            sum_loss: true,
        };
        return scalar::apply(model, bins, w, loss_weight, batch, out);
    }
    Ok(sum)
}

/// Pass 1 with per-bin loss sums on `backend` (see [`kernel::accumulate_sums`]): the generic
/// path's only mode.
pub(crate) fn accumulate_sums<M: Model>(
    backend: Backend,
    model: M,
    bins: &Bins,
    batch: &Batch<'_>,
    skip_bad: bool,
) -> Result<Hist, Error> {
    match backend {
        Backend::Scalar => scalar::accumulate(model, bins, batch, skip_bad, false),
        // SAFETY: the backend is available, so the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => unsafe { x86::accumulate_sums_avx512(model, bins, batch, skip_bad) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => unsafe { x86::accumulate_sums_avx2(model, bins, batch, skip_bad) },
        _ => kernel::accumulate_sums::<wide::f32x8, M, _>(Plain, model, bins, batch, skip_bad),
    }
}

/// Pass 2 writing (overwriting) the gradient only, on `backend` (see [`kernel::apply_grad`]),
/// bad elements masked as with `skip_bad` (their gradient 0). `tables` are `w`'s (made once
/// by the caller for all its calls: the vector backends read them, the scalar path `w`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_grad<M: Model>(
    backend: Backend,
    model: M,
    bins: &Bins,
    w: &Weights,
    tables: &Tables,
    loss_weight: f32,
    batch: &Batch<'_>,
    grad: &mut [f32],
) -> Result<(), Error> {
    let out = Outputs {
        grad: Some(grad),
        loss_elems: None,
        accumulate: false,
        sum_loss: false,
    };
    let args = (model, bins, tables, batch);
    match backend {
        Backend::Scalar => scalar::apply(model, bins, w, loss_weight, batch, out).map(|_| ()),
        // SAFETY: the backend is available, so the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => unsafe { x86::apply_grad_avx512(args, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => unsafe { x86::apply_grad_avx2(args, out) },
        _ => kernel::apply_grad::<wide::f32x8, M, _>(Plain, args, out),
    }
}

/// Pass 1 of softmax GHM over one block's samples on `backend` (see
/// [`softmax_kernel::accumulate`]).
pub(crate) fn softmax_accumulate(
    backend: Backend,
    rows: &Rows<'_>,
    bins: &Bins,
    skip_bad: bool,
    sums: &mut Sums,
) -> Result<(), Error> {
    match backend {
        Backend::Scalar => softmax_kernel::accumulate::<f32>(rows, bins, skip_bad, sums),
        // SAFETY: the backend is available, so the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => unsafe { x86::softmax_accumulate_avx512(rows, bins, skip_bad, sums) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => unsafe { x86::softmax_accumulate_avx2(rows, bins, skip_bad, sums) },
        _ => softmax_kernel::accumulate::<wide::f32x8>(rows, bins, skip_bad, sums),
    }
}

/// Pass 2 of softmax GHM over one block's samples on `backend` (see
/// [`softmax_kernel::apply`]).
pub(crate) fn softmax_apply(
    backend: Backend,
    rows: &Rows<'_>,
    bins: &Bins,
    tables: &Tables,
    dest: Dest<'_>,
) {
    match backend {
        Backend::Scalar => softmax_kernel::apply::<f32>(rows, bins, tables, dest),
        // SAFETY: the backend is available, so the CPU has its features.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => unsafe { x86::softmax_apply_avx512(rows, bins, tables, dest) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => unsafe { x86::softmax_apply_avx2(rows, bins, tables, dest) },
        _ => softmax_kernel::apply::<wide::f32x8>(rows, bins, tables, dest),
    }
}

/// A vector-math function, for measuring it on every backend (`__private::probe`).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Probe {
    /// `exp(-a)`.
    ExpNeg,
    /// `ln(x)`.
    Ln,
    /// `ln(1 + e)`.
    Ln1p,
    /// `log1p(x)` for `x >= 0` as softmax GHM computes it (`libm::log1pf`'s bits).
    Log1p,
    /// `1 / x` as [`Vector::recip`](crate::simd::Vector::recip) computes it (GHM-R's loss).
    Recip,
    /// `sigmoid(x)` as the GHM-C kernel computes it.
    Sigmoid,
    /// The bin of a gradient norm `g` (as f32; the trash bin `bins` for "no bin") by
    /// [`Bins::vector`] with these edges, every lane valid; `g` must not be NaN.
    Bin { bins: usize, last_edge: f32 },
}

/// `f` of every element of `input`, on the vector type `V`.
#[inline(always)]
fn probe_with<V: crate::simd::Vector>(f: Probe, input: &[f32], out: &mut [f32]) {
    use crate::vmath;
    let bins = match f {
        Probe::Bin { bins, last_edge } => Some(Bins::new(bins, last_edge)),
        _ => None,
    };
    let one = V::splat(1.0);
    for (i, o) in input.chunks(V::LANES).zip(out.chunks_mut(V::LANES)) {
        let x = V::load_partial(i);
        let y = match f {
            Probe::ExpNeg => vmath::exp_neg(x),
            Probe::Ln => vmath::ln(x),
            Probe::Ln1p => vmath::ln_1p(x),
            Probe::Log1p => vmath::log1p(x),
            Probe::Recip => x.recip(),
            Probe::Sigmoid => {
                let e = vmath::exp_neg(x.abs());
                let r = one.div(one.add(e));
                V::select(x.ge(V::splat(0.0)), r, e.mul(r))
            }
            Probe::Bin { .. } => {
                let all = V::first_lanes(V::LANES);
                let k = bins.as_ref().map_or(V::i_splat(-1), |b| b.vector(x, all));
                V::from_array(&V::i_to_array(k).map(|k| k as f32))
            }
        };
        y.store_partial(o);
    }
}

/// `f` of every element of `input` on `backend` (which must be available).
pub(crate) fn probe(backend: Backend, f: Probe, input: &[f32], out: &mut [f32]) {
    match backend {
        Backend::Scalar => probe_with::<f32>(f, input, out),
        // SAFETY: the caller passes an available backend.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => unsafe { x86::probe_avx512(f, input, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => unsafe { x86::probe_avx2(f, input, out) },
        _ => probe_with::<wide::f32x8>(f, input, out),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use crate::simd::avx2::F32x8;
    use crate::simd::avx512::F32x16;

    /// The passes compiled for one `core::arch` vector type and its target features.
    macro_rules! instantiate {
        (
            $features:literal,
            $v:ty,
            $accumulate:ident,
            $accumulate_sums:ident,
            $apply_grad:ident,
            $passes:ident,
            $pass1:ident,
            $apply_in:ident,
            $check:ident,
            $apply:ident,
            $rescale:ident,
            $probe:ident,
            $softmax_accumulate:ident,
            $softmax_apply:ident
        ) => {
            /// # Safety
            /// The CPU has the target features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $softmax_accumulate(
                rows: &Rows<'_>,
                bins: &Bins,
                skip_bad: bool,
                sums: &mut Sums,
            ) -> Result<(), Error> {
                softmax_kernel::accumulate::<$v>(rows, bins, skip_bad, sums)
            }

            /// # Safety
            /// The CPU has the target features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $softmax_apply(
                rows: &Rows<'_>,
                bins: &Bins,
                tables: &Tables,
                dest: Dest<'_>,
            ) {
                softmax_kernel::apply::<$v>(rows, bins, tables, dest)
            }

            /// # Safety
            /// The CPU has the target features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $probe(f: Probe, input: &[f32], out: &mut [f32]) {
                probe_with::<$v>(f, input, out)
            }

            /// # Safety
            /// The CPU has the target features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $accumulate<M: Model>(
                model: M,
                bins: &Bins,
                batch: &Batch<'_>,
                opts: Pass1Opts,
                grad: Option<&mut [f32]>,
            ) -> Result<Hist, Error> {
                // The caller guarantees the features.
                let passes = $passes(());
                kernel::accumulate::<$v, M, _>(passes, model, bins, batch, opts, grad)
            }

            /// # Safety
            /// The CPU has the target features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $accumulate_sums<M: Model>(
                model: M,
                bins: &Bins,
                batch: &Batch<'_>,
                skip_bad: bool,
            ) -> Result<Hist, Error> {
                // The caller guarantees the features.
                let passes = $passes(());
                kernel::accumulate_sums::<$v, M, _>(passes, model, bins, batch, skip_bad)
            }

            /// # Safety
            /// The CPU has the target features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $apply_grad<M: Model>(
                args: ApplyArgs<'_, '_, M>,
                out: Outputs<'_>,
            ) -> Result<(), Error> {
                // The caller guarantees the features.
                let passes = $passes(());
                kernel::apply_grad::<$v, M, _>(passes, args, out)
            }

            /// [`kernel::Passes`] for this backend. Its field is private to this module, where
            /// a value is made only in this backend's accumulate and apply functions, whose
            /// callers guarantee that the CPU has the features: holding one proves it.
            #[derive(Clone, Copy)]
            pub(super) struct $passes(());

            impl kernel::Passes<$v> for $passes {
                #[inline(always)]
                fn pass1<M: Model, P: Mode>(
                    self,
                    model: M,
                    bins: &Bins,
                    batch: &Batch<'_>,
                    opts: Pass1Opts,
                    grad: &mut [f32],
                ) -> Result<kernel::Pass1Out, Error> {
                    // SAFETY: `self` exists, so the CPU has the features (see the type).
                    unsafe { $pass1::<M, P>(model, bins, batch, opts, grad) }
                }
                #[inline(always)]
                fn check<M: Model>(self, model: M, batch: &Batch<'_>) -> Result<(), Error> {
                    // SAFETY: as above.
                    unsafe { $check::<M>(model, batch) }
                }
                #[inline(always)]
                fn apply<M: Model, const LOSS: bool, const ONE: bool>(
                    self,
                    args: ApplyArgs<'_, '_, M>,
                    out: Outputs<'_>,
                    skip_bad: bool,
                ) -> Result<[f64; MAX_LANES], Error> {
                    // SAFETY: as above.
                    unsafe { $apply_in::<M, LOSS, ONE>(args, out, skip_bad) }
                }
            }

            /// # Safety
            /// The CPU has the target features.
            #[target_feature(enable = $features)]
            #[inline(never)]
            unsafe fn $apply_in<M: Model, const LOSS: bool, const ONE: bool>(
                args: ApplyArgs<'_, '_, M>,
                out: Outputs<'_>,
                skip_bad: bool,
            ) -> Result<[f64; MAX_LANES], Error> {
                kernel::apply_kind::<$v, M, LOSS, ONE>(args, out, skip_bad)
            }

            /// # Safety
            /// The CPU has the target features.
            #[target_feature(enable = $features)]
            #[inline(never)]
            unsafe fn $pass1<M: Model, P: Mode>(
                model: M,
                bins: &Bins,
                batch: &Batch<'_>,
                opts: Pass1Opts,
                grad: &mut [f32],
            ) -> Result<kernel::Pass1Out, Error> {
                kernel::pass1::<$v, M, P>(model, bins, batch, opts, grad)
            }

            /// # Safety
            /// The CPU has the target features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $rescale(
                bins: &Bins,
                tables: &Tables,
                batch: &Batch<'_>,
                grad: &mut [f32],
            ) -> Result<(), Error> {
                kernel::rescale::<$v>(bins, tables, batch, grad)
            }

            /// # Safety
            /// The CPU has the target features.
            #[target_feature(enable = $features)]
            #[inline(never)]
            pub(super) unsafe fn $check<M: Model>(
                model: M,
                batch: &Batch<'_>,
            ) -> Result<(), Error> {
                kernel::check::<$v, M>(model, batch)
            }

            /// # Safety
            /// The CPU has the target features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $apply<M: Model>(
                model: M,
                bins: &Bins,
                tables: &Tables,
                batch: &Batch<'_>,
                out: Outputs<'_>,
                skip_bad: bool,
            ) -> Result<f64, Error> {
                // The caller guarantees the features.
                let passes = $passes(());
                kernel::apply::<$v, M, _>(passes, model, bins, tables, batch, out, skip_bad)
            }
        };
    }

    instantiate!(
        "avx2,fma,popcnt",
        F32x8,
        accumulate_avx2,
        accumulate_sums_avx2,
        apply_grad_avx2,
        PassesAvx2,
        pass1_avx2,
        apply_in_avx2,
        check_avx2,
        apply_avx2,
        rescale_avx2,
        probe_avx2,
        softmax_accumulate_avx2,
        softmax_apply_avx2
    );
    instantiate!(
        "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,popcnt",
        F32x16,
        accumulate_avx512,
        accumulate_sums_avx512,
        apply_grad_avx512,
        PassesAvx512,
        pass1_avx512,
        apply_in_avx512,
        check_avx512,
        apply_avx512,
        rescale_avx512,
        probe_avx512,
        softmax_accumulate_avx512,
        softmax_apply_avx512
    );
}
