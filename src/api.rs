//! The safe Rust API: one-call and phased functions of GHM-C and GHM-R.
//!
//! Every function validates everything (configuration, caller state, shapes, and the inputs
//! in the first pass) before it writes anything, so an `Err` leaves every output, the EMA,
//! the histogram and the statistics exactly as they were.

use core::ops::Range;

use crate::backend::Backend;
use crate::bins::Bins;
use crate::config::{GhmC, GhmR, Layout, Normalize, Plan};
use crate::dispatch;
use crate::error::Error;
use crate::kernel::{Outputs, Pass1Opts};
use crate::model::{AnyModel, Model};
use crate::source::Batch;
use crate::state::{self, Ema, Hist, Stats, Weights};
use crate::view::Blocks;

/// Dense inputs: one prediction, one target and optionally one label weight per element.
#[derive(Clone, Copy, Debug)]
pub struct Dense<'a> {
    /// Logits (or probabilities, for [`Input::Probs`](crate::Input::Probs)); GHM-R:
    /// predictions.
    pub pred: &'a [f32],
    /// Targets: in `[0, 1]` for GHM-C (hard or soft), any finite value for GHM-R.
    pub target: &'a [f32],
    /// Label weights: a validity mask, not multipliers (`> 0` is valid, `0` excludes the
    /// element; the value itself scales nothing, as in mmdet); `None` means all ones.
    pub label_weight: Option<&'a [f32]>,
    /// `None`: the buffers are the batch, element `i` at index `i` of each (outputs as long
    /// as `pred`). `Some`: the batch is `count` blocks read and written in place through a
    /// view of each buffer (see [`Blocks`]).
    pub blocks: Option<Blocks>,
}

impl<'a> Dense<'a> {
    /// Predictions and targets, all label weights 1.
    pub fn new(pred: &'a [f32], target: &'a [f32]) -> Self {
        Dense {
            pred,
            target,
            label_weight: None,
            blocks: None,
        }
    }

    /// Read (and write the outputs) through `blocks`' views instead of contiguously.
    pub fn blocks(mut self, blocks: Blocks) -> Self {
        self.blocks = Some(blocks);
        self
    }

    /// With label weights.
    pub fn label_weight(mut self, w: &'a [f32]) -> Self {
        self.label_weight = Some(w);
        self
    }

    pub(crate) fn batch(&self) -> Batch<'a> {
        Batch::Dense {
            pred: self.pred,
            target: self.target,
            weight: self.label_weight,
            blocks: self.blocks,
        }
    }
}

/// GHM-C inputs with class-index labels: `[N x C]` logits in either layout and one label per
/// anchor (`0 <= label < C` is a class, anything else background), without one-hot targets.
#[derive(Clone, Debug)]
pub struct Labels<'a> {
    /// All `N * C` logits (or probabilities), in `layout` order.
    pub pred: &'a [f32],
    /// One label per anchor (`N` of them).
    pub labels: &'a [i32],
    /// One weight per anchor, applied to its `C` elements: a validity mask (`> 0` is valid),
    /// not a multiplier; `None` means all ones (every anchor counts, RetinaNet's semantics;
    /// pass 1 for positives and 0 elsewhere for YOLO's class loss).
    pub anchor_weight: Option<&'a [f32]>,
    /// `C`.
    pub num_classes: usize,
    /// Memory order of `pred` (and of the gradient and per-element loss buffers).
    pub layout: Layout,
    /// The anchors this call covers: all of them for a whole batch, a chunk's range for the
    /// phased API. Output buffers are always the full `N * C` elements; only this range's
    /// elements are written. With `blocks`, the range within every block.
    pub anchors: Range<usize>,
    /// `None`: one contiguous batch of `labels.len()` anchors. `Some`: `count` blocks of
    /// `len` anchors through a view of each buffer (see [`Blocks`]).
    pub blocks: Option<Blocks>,
}

impl<'a> Labels<'a> {
    /// All `labels.len()` anchors, all weights 1.
    pub fn new(pred: &'a [f32], labels: &'a [i32], num_classes: usize, layout: Layout) -> Self {
        Labels {
            pred,
            labels,
            anchor_weight: None,
            num_classes,
            layout,
            anchors: 0..labels.len(),
            blocks: None,
        }
    }

    /// `blocks.count` blocks of `blocks.len` anchors, in place through `blocks`' views (all
    /// anchors of every block).
    pub fn blocks(mut self, blocks: Blocks) -> Self {
        self.anchors = 0..blocks.len;
        self.blocks = Some(blocks);
        self
    }

    /// With per-anchor weights.
    pub fn anchor_weight(mut self, w: &'a [f32]) -> Self {
        self.anchor_weight = Some(w);
        self
    }

    /// Only anchors `range` (a chunk, for the phased API).
    pub fn anchors(mut self, range: Range<usize>) -> Self {
        self.anchors = range;
        self
    }

    pub(crate) fn batch(&self) -> Batch<'a> {
        Batch::Labels {
            pred: self.pred,
            labels: self.labels,
            weight: self.anchor_weight,
            classes: self.num_classes,
            layout: self.layout,
            anchors: self.anchors.clone(),
            blocks: self.blocks,
        }
    }
}

/// Optional outputs of a one-call function; each `None` is not computed.
#[derive(Debug, Default)]
pub struct Out<'a> {
    /// `grad_scale * dL/dx` (written, or added with `accumulate`); as long as `pred`.
    pub grad: Option<&'a mut [f32]>,
    /// `loss_weight * w_i * l_i`; as long as `pred`.
    pub loss_elems: Option<&'a mut [f32]>,
    /// What the call did.
    pub stats: Option<&'a mut Stats>,
}

impl<'a> Out<'a> {
    /// Only the gradient.
    pub fn grad(grad: &'a mut [f32]) -> Self {
        Out {
            grad: Some(grad),
            ..Out::default()
        }
    }
}

/// Runs `$body` with `$m` bound to the concrete model of `$plan`.
macro_rules! with_model {
    ($plan:expr, |$m:ident| $body:expr) => {
        match AnyModel::of($plan.loss) {
            AnyModel::CLogits($m) => $body,
            AnyModel::CProbs($m) => $body,
            AnyModel::R($m) => $body,
        }
    };
}

/// Pass 1 on the plan's backend, with per-bin loss sums if `loss`, and with the per-bin sums
/// of `g` that [`Normalize::GradMass`] needs (a pass of their own: the loss is summed in
/// another, when asked for).
fn pass1<M: Model>(
    plan: &Plan,
    model: M,
    bins: &Bins,
    batch: &Batch<'_>,
    loss: bool,
) -> Result<Hist, Error> {
    let opts = Pass1Opts {
        loss,
        skip_bad: plan.skip_bad,
        g: false,
    };
    if plan.normalize == Normalize::None {
        return dispatch::accumulate(plan.backend, model, bins, batch, opts, None);
    }
    let g_opts = Pass1Opts { g: true, ..opts };
    let mut hist = dispatch::accumulate(plan.backend, model, bins, batch, g_opts, None)?;
    if loss {
        hist.loss_sums =
            dispatch::accumulate(plan.backend, model, bins, batch, opts, None)?.loss_sums;
    }
    Ok(hist)
}

/// Pass 2 on the plan's backend; returns the loss sum if `out.sum_loss`.
fn pass2<M: Model>(
    plan: &Plan,
    model: M,
    bins: &Bins,
    w: &Weights,
    batch: &Batch<'_>,
    out: Outputs<'_>,
) -> Result<f64, Error> {
    let (lw, skip) = (plan.loss_weight, plan.skip_bad);
    dispatch::apply(plan.backend, model, bins, w, lw, batch, out, skip)
}

/// [`Error::Shape`] unless every present output holds the batch's outputs (for a contiguous
/// batch: has exactly its length), [`Error::Alias`] if an output's view overlaps itself.
pub(crate) fn check_outputs(
    batch: &Batch<'_>,
    grad: Option<&[f32]>,
    loss_elems: Option<&[f32]>,
) -> Result<(), Error> {
    let g = batch.geometry();
    batch.check_output(grad.map(|b| b.len()), g.grad)?;
    batch.check_output(loss_elems.map(|b| b.len()), g.loss_elems)
}

/// [`Error::State`] if the EMA is needed (`momentum > 0`) but missing or made for other bins.
pub(crate) fn check_ema(plan: &Plan, ema: Option<&Ema>) -> Result<(), Error> {
    if plan.momentum > 0.0 && ema.is_none_or(|e| e.bins as usize != plan.bins) {
        return Err(Error::State);
    }
    Ok(())
}

/// Both passes and the step between them: the one-call functions of GHM-C and GHM-R, and
/// what the C layer and the rayon convenience build on.
pub(crate) fn loss_grad(
    plan: Plan,
    ema: Option<&mut Ema>,
    batch: Batch<'_>,
    mut out: Out<'_>,
) -> Result<f32, Error> {
    check_ema(&plan, ema.as_deref())?;
    batch.check()?;
    check_outputs(&batch, out.grad.as_deref(), out.loss_elems.as_deref())?;
    if batch.elements() == 0 {
        return Ok(0.0);
    }
    let bins = Bins::new(plan.bins, plan.last_edge());
    with_model!(plan, |model| {
        if let Some(grad) = out.grad.as_deref_mut() {
            let checked_first =
                !plan.skip_bad && batch.elements() <= stored_checked_max(plan.backend);
            if (plan.skip_bad || checked_first)
                && plan.normalize == Normalize::None
                && stored_pass(&model)
                && out.loss_elems.is_none()
                && !plan.accumulate
                && dispatch::stores_grad(plan.backend)
                && finalize_cannot_fail(&plan, ema.as_deref(), batch.elements())
            {
                return stored_two_pass(&plan, model, &bins, ema, &batch, grad, out.stats);
            }
        }
        // With a second pass, pass 1 only counts and pass 2 sums the weighted loss (one f32
        // product and one f64 addition per element in vector registers, instead of a loss and
        // two f64 additions per element into per-bin sums). The phased API sums
        // `w_k * sum(l_i)` in f64; the products `w_k * l_i`, rounded to f32 here, are within
        // 2^-24 of it relatively (every term is >= 0), so the f32 losses are within 1 ulp.
        let two_pass = out.grad.is_some() || out.loss_elems.is_some();
        let hist = pass1(&plan, model, &bins, &batch, !two_pass)?;
        let (mut weights, new_ema) = state::finalize(&plan, ema.as_deref(), &hist)?;
        // Nothing can fail from here on: commit.
        if let (Some(ema), Some(new)) = (ema, new_ema) {
            *ema = new;
        }
        if two_pass {
            let outputs = Outputs {
                grad: out.grad,
                loss_elems: out.loss_elems,
                accumulate: plan.accumulate,
                sum_loss: true,
            };
            let sum = pass2(&plan, model, &bins, &weights, &batch, outputs)?;
            weights.loss = state::reduced_loss(&plan, weights.tot, sum);
        }
        if let Some(stats) = out.stats {
            *stats = Stats::of(&hist, &weights);
        }
        Ok(weights.loss as f32)
    })
}

/// Whether the per-batch step is known, before pass 1 writes `grad`, to succeed (the stored
/// path writes `grad` before it; the other path only after it): the EMA holds possible values,
/// and no gradient factor can overflow f32. For GHM-C without normalisation a factor is at
/// most `|grad_scale * loss_weight| * N / (1 - momentum)`: `w_k = tot / (acc_k * n)` with
/// `tot <= N`, `acc_k >= (1 - momentum) * count_k >= 1 - momentum` for a non-empty bin, and a
/// MEAN divisor of at least 1.
fn finalize_cannot_fail(plan: &Plan, ema: Option<&Ema>, n: usize) -> bool {
    let ema_ok = plan.momentum == 0.0 || ema.is_some_and(|e| e.fault(plan.bins).is_none());
    let product = (plan.grad_scale as f64 * plan.loss_weight as f64).abs();
    let bound = product * n as f64 / (1.0 - plan.momentum as f64);
    ema_ok && bound <= f32::MAX as f64 / 2.0
}

/// The one call with `skip_bad` (or up to [`stored_checked_max`] elements), when only `grad`
/// is asked for (and overwritten), on a vector backend: pass 1 stores each element's `dl/dx`
/// in `grad` while it counts (with per-bin loss sums), and pass 2 reads only that back,
/// recomputes the bin from `g = |dl/dx|` and scales it. Pass 2 then moves 8 bytes per element
/// instead of reading the inputs again and recomputing the model. The gradients are bit-identical to the other path's (the same
/// `dl/dx` times the same `scale[bin]`); the loss is the phased API's.
///
/// Without `skip_bad` nothing may be written before every element is known to be good: the
/// inputs are checked first, and pass 1 then skips its per-lane check. That third read of
/// the inputs costs less than recomputing the model, except on AVX-512 above 128Ki elements
/// (see [`stored_checked_max`]).
/// Only for GHM-C (see [`Model::STORED_PASS`]).
fn stored_two_pass<M: Model>(
    plan: &Plan,
    model: M,
    bins: &Bins,
    ema: Option<&mut Ema>,
    batch: &Batch<'_>,
    grad: &mut [f32],
    stats: Option<&mut Stats>,
) -> Result<f32, Error> {
    let opts = Pass1Opts {
        loss: true,
        skip_bad: plan.skip_bad,
        g: false,
    };
    // Without `skip_bad`, pass 1 checks the inputs before it writes anything, and fails on a
    // bad one. Once it writes `grad`, nothing can fail: pass 1 skips (or has ruled out) bad
    // elements, and `finalize` only refuses an EMA (checked before the call) or a histogram
    // with negative or NaN sums or a non-finite `tot`, which pass 1 never produces from valid
    // elements.
    let hist = dispatch::accumulate(plan.backend, model, bins, batch, opts, Some(grad))?;
    let (weights, new_ema) = state::finalize(plan, ema.as_deref(), &hist)?;
    if let (Some(ema), Some(new)) = (ema, new_ema) {
        *ema = new;
    }
    dispatch::rescale(plan.backend, bins, &weights, plan.loss_weight, batch, grad)?;
    if let Some(stats) = stats {
        *stats = Stats::of(&hist, &weights);
    }
    Ok(weights.loss as f32)
}

/// Elements up to which the one call without `skip_bad` also takes [`stored_two_pass`] on
/// `backend`, after checking its inputs ([`dispatch::check`]: a screen of the raw bits, then
/// the exact check only if the screen flags something). That reads the inputs a third time
/// and saves pass 2 the model's second evaluation (`exp`, `log1p`, the sigmoid).
///
/// - AVX-512, where the model is cheap, only while the inputs sit in the caches: 128Ki.
///   Measured on an Intel Xeon (Sapphire Rapids class, 2 MiB of L2 per core), GHM-C one call,
///   ns per element, recomputing vs checked and stored (alternating runs): 1.69-1.72 vs
///   1.50-1.57 at 64Ki, 1.73-1.79 vs 1.50-1.57 at 128Ki, 1.70 vs 1.72 at 256Ki, and 2.1-2.2
///   vs 2.6-2.8 at 16Mi, where the third read comes from memory.
/// - The narrower backends at every size: their second evaluation costs more than the third
///   read even from memory. Measured on an AMD EPYC (family 25, AVX2, 1 MiB of L2 per core),
///   GHM-C one call, checked and stored against recomputing (medians of alternating
///   in-process runs): AVX2 0.84 at 256Ki, 0.75 at 1Mi and 0.76 at 16Mi (5 runs each); SSE2
///   0.67 at 256Ki and 0.63 at 16Mi (4 each). NEON was not measured (it runs under
///   emulation here); it is taken with SSE2, whose width it has.
fn stored_checked_max(backend: Backend) -> usize {
    match backend {
        Backend::Avx512 => 1 << 17,
        _ => usize::MAX,
    }
}

/// [`Model::STORED_PASS`] of a model value.
fn stored_pass<M: Model>(_: &M) -> bool {
    M::STORED_PASS
}

/// Pass 1 of a chunk, merged into `hist`.
pub(crate) fn accumulate(plan: Plan, batch: Batch<'_>, hist: &mut Hist) -> Result<(), Error> {
    batch.check()?;
    if hist.bins as usize != plan.bins {
        return Err(Error::State);
    }
    if batch.elements() == 0 {
        return Ok(());
    }
    let bins = Bins::new(plan.bins, plan.last_edge());
    let chunk = with_model!(plan, |model| pass1(&plan, model, &bins, &batch, true))?;
    hist.merge(&chunk)
}

/// The per-batch step, committing the EMA.
pub(crate) fn finalize(plan: Plan, ema: Option<&mut Ema>, hist: &Hist) -> Result<Weights, Error> {
    let (weights, new_ema) = state::finalize(&plan, ema.as_deref(), hist)?;
    if let (Some(ema), Some(new)) = (ema, new_ema) {
        *ema = new;
    }
    Ok(weights)
}

/// Which part of an element makes it bad: the rule of the kernels (`kernel::bad_lanes`,
/// `scalar::elements`), on one element, told apart. `None` for a good element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BadPart {
    /// The prediction (non-finite; for GHM-C probabilities, outside `[0, 1]`).
    Pred,
    /// The target (non-finite; for GHM-C, outside `[+0, 1]`).
    Target,
    /// The label weight (NaN, infinite or negative).
    Weight,
}

/// The bad part of element `(x, t, w)` under `plan`'s model, if any.
pub(crate) fn bad_part(plan: &Plan, x: f32, t: f32, w: f32) -> Option<BadPart> {
    use crate::simd::Vector;
    with_model!(plan, |model| {
        if model.ok(x, t) {
            // The weight rule of the kernels (`!w.in_range(0, MAX)`).
            (!w.in_range(0.0, f32::MAX)).then_some(BadPart::Weight)
        } else if model.ok(x, 0.5) {
            Some(BadPart::Target)
        } else {
            Some(BadPart::Pred)
        }
    })
}

/// [`Error::Input`] if any element of `batch` is bad (the input check alone).
pub(crate) fn check(plan: Plan, batch: &Batch<'_>) -> Result<(), Error> {
    with_model!(plan, |model| dispatch::check(plan.backend, model, batch))
}

/// Pass 2 of a chunk, after checking its inputs (unless `skip_bad`).
pub(crate) fn apply(
    plan: Plan,
    weights: &Weights,
    batch: Batch<'_>,
    grad: Option<&mut [f32]>,
    loss_elems: Option<&mut [f32]>,
) -> Result<(), Error> {
    weights.check(plan.bins)?;
    batch.check()?;
    check_outputs(&batch, grad.as_deref(), loss_elems.as_deref())?;
    if batch.elements() == 0 || (grad.is_none() && loss_elems.is_none()) {
        return Ok(());
    }
    let bins = Bins::new(plan.bins, plan.last_edge());
    if !plan.skip_bad {
        check(plan, &batch)?;
    }
    with_model!(plan, |model| {
        let out = Outputs {
            grad,
            loss_elems,
            accumulate: plan.accumulate,
            sum_loss: false,
        };
        pass2(&plan, model, &bins, weights, &batch, out).map(|_| ())
    })
}

impl GhmC {
    /// GHM-C loss and gradient of a batch with dense targets, in one call. Returns the loss.
    ///
    /// `ema` is required when `momentum > 0` (and updated), ignored otherwise.
    pub fn loss_grad(
        &self,
        ema: Option<&mut Ema>,
        input: &Dense<'_>,
        out: Out<'_>,
    ) -> Result<f32, Error> {
        loss_grad(self.plan()?, ema, input.batch(), out)
    }

    /// GHM-C loss and gradient of a batch with class-index labels, in one call.
    pub fn loss_grad_labels(
        &self,
        ema: Option<&mut Ema>,
        input: &Labels<'_>,
        out: Out<'_>,
    ) -> Result<f32, Error> {
        loss_grad(self.plan()?, ema, input.batch(), out)
    }

    /// Phase 1: adds a chunk of a batch (dense targets) to `hist`.
    pub fn accumulate(&self, input: &Dense<'_>, hist: &mut Hist) -> Result<(), Error> {
        accumulate(self.plan()?, input.batch(), hist)
    }

    /// Phase 1 for a chunk of anchors with class-index labels.
    pub fn accumulate_labels(&self, input: &Labels<'_>, hist: &mut Hist) -> Result<(), Error> {
        accumulate(self.plan()?, input.batch(), hist)
    }

    /// Phase 2, once per batch: EMA update, weights and the batch's loss.
    pub fn finalize(&self, ema: Option<&mut Ema>, hist: &Hist) -> Result<Weights, Error> {
        finalize(self.plan()?, ema, hist)
    }

    /// Phase 3: gradients (and per-element losses) of a chunk (dense targets).
    ///
    /// Unless `skip_bad` is set, the chunk's inputs are checked first (a separate read pass),
    /// since nothing may be written if one is bad. A chunk that already went through
    /// [`GhmC::accumulate`] with `skip_bad` off cannot hold a bad element, so applying it with
    /// `skip_bad: true` gives identical results and saves that pass.
    pub fn apply(
        &self,
        weights: &Weights,
        input: &Dense<'_>,
        grad: Option<&mut [f32]>,
        loss_elems: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        apply(self.plan()?, weights, input.batch(), grad, loss_elems)
    }

    /// Phase 3 for a chunk of anchors with class-index labels (outputs are full-size).
    pub fn apply_labels(
        &self,
        weights: &Weights,
        input: &Labels<'_>,
        grad: Option<&mut [f32]>,
        loss_elems: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        apply(self.plan()?, weights, input.batch(), grad, loss_elems)
    }
}

impl GhmR {
    /// GHM-R loss and gradient of a batch, in one call. Returns the loss.
    pub fn loss_grad(
        &self,
        ema: Option<&mut Ema>,
        input: &Dense<'_>,
        out: Out<'_>,
    ) -> Result<f32, Error> {
        loss_grad(self.plan()?, ema, input.batch(), out)
    }

    /// Phase 1: adds a chunk of a batch to `hist`.
    pub fn accumulate(&self, input: &Dense<'_>, hist: &mut Hist) -> Result<(), Error> {
        accumulate(self.plan()?, input.batch(), hist)
    }

    /// Phase 2, once per batch: EMA update, weights and the batch's loss.
    pub fn finalize(&self, ema: Option<&mut Ema>, hist: &Hist) -> Result<Weights, Error> {
        finalize(self.plan()?, ema, hist)
    }

    /// Phase 3: gradients (and per-element losses) of a chunk. (On `skip_bad` and the input
    /// check, see [`GhmC::apply`].)
    pub fn apply(
        &self,
        weights: &Weights,
        input: &Dense<'_>,
        grad: Option<&mut [f32]>,
        loss_elems: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        apply(self.plan()?, weights, input.batch(), grad, loss_elems)
    }
}
