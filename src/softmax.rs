//! Softmax cross-entropy GHM ([`GhmSoftmax`]): GHM-C's harmonizing for a `C`-way softmax
//! classifier, fused loss and gradient.
//!
//! Per sample (an anchor, a pixel, an image) with logits `x` (`C` of them) and a class-index
//! label `y`: `p = softmax(x)` and the gradient norm `g = 1 - p_y`. That is half the L1 norm
//! of the cross-entropy's gradient `p - onehot(y)`: its entries are `p_c >= 0` for `c != y`,
//! summing to `1 - p_y`, and `p_y - 1 = -(1 - p_y)`, so `|p - onehot(y)|_1 = 2 (1 - p_y)`. It is
//! in `[0, 1]`, like GHM-C's `|sigmoid(x) - t|` (which is the same quantity for `C = 2` with
//! logits `(0, x)`), so the bins, the EMA and the weights are GHM-C's: edges `k / bins`, the
//! last `1 + 1e-6`, weights `tot / (count_k * nonempty)`, `tot` the number of valid samples.
//!
//! The loss of a sample is `CE = -ln p_y = ln(sum_c exp(x_c - m)) - (x_y - m)` with
//! `m = max(x)` (no overflow for any finite logits; a label whose probability underflows still
//! has a finite loss and gradient), reduced as GHM-C's: MEAN `loss_weight * sum(w_i CE_i) / tot`,
//! SUM without `/ tot`, NONE per sample. The gradient written for sample `i` is
//! `grad_scale * loss_weight * w_i * (p - onehot(y)) / tot` (MEAN). Easy samples keep their
//! digits: `S - 1` is summed without the maxima's terms (exactly 1), the loss is
//! `log1p(S - 1) - (x_y - m)` and a label at the maximum has `1 - p_y = (S - 1) / S` (see
//! `softmax_kernel`). Against a float64 evaluation: the loss within 1e-6 relative and every
//! gradient entry within 1e-6 of the batch's largest (the tests' bounds, GHM-C's).
//!
//! A label outside `0..C` (a negative ignore index, or `>= C`) and a sample whose weight is 0
//! are ignored: no count, no loss, a gradient row of zeros. A sample is bad if one of its
//! logits is not finite or its weight is negative or not finite: an error with nothing
//! written, or, with `skip_bad`, excluded and counted in `Stats::skipped`.

use crate::backend::Backend;
use crate::bins::Bins;
use crate::config::{EmaStart, Layout, Loss, Normalize, Plan, Planned, Reduction};
use crate::dispatch;
use crate::error::Error;
use crate::fault::Fault;
use crate::kernel::Tables;
use crate::softmax_kernel::{Dest, Rows, Sums};
use crate::state::{Ema, Hist, Stats, Weights};
use crate::view::{Blocks, View};
use crate::Labels;

/// Softmax cross-entropy GHM configuration. `GhmSoftmax::default()` has GHM-C's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GhmSoftmax {
    /// Number of gradient-norm bins, `1..=MAX_BINS` (default 10).
    pub bins: u32,
    /// EMA momentum in `[0, 1)`; 0 disables the EMA (default 0).
    pub momentum: f32,
    /// Multiplies the loss, the per-sample losses and the gradient (default 1).
    pub loss_weight: f32,
    /// Loss reduction (default [`Reduction::Mean`]).
    pub reduction: Reduction,
    /// The gradient written is `grad_scale * dL/dx` (default 1; -1 gives Darknet's delta).
    pub grad_scale: f32,
    /// Add into the gradient buffer instead of overwriting it (default false; a little
    /// slower: each exponential is computed twice).
    pub accumulate: bool,
    /// Exclude bad samples (counted in `Stats::skipped`) instead of failing (default false).
    pub skip_bad: bool,
    /// Rescale the weights so that the batch's gradient mass (the sum of `g`) is the plain
    /// loss's (default [`Normalize::None`]).
    pub normalize: Normalize,
    /// How the EMA starts (default [`EmaStart::Zero`], mmdet).
    pub ema_start: EmaStart,
    /// Force a kernel backend; `None` picks the best one available (default).
    pub backend: Option<Backend>,
}

impl Default for GhmSoftmax {
    fn default() -> Self {
        GhmSoftmax {
            bins: 10,
            momentum: 0.0,
            loss_weight: 1.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
            accumulate: false,
            skip_bad: false,
            normalize: Normalize::None,
            ema_start: EmaStart::Zero,
            backend: None,
        }
    }
}

impl Planned for GhmSoftmax {
    fn plan(&self) -> Result<Plan, Error> {
        self.raw_plan().validated(self.backend)
    }
}

/// Optional outputs of the softmax functions; each `None` is not computed.
#[derive(Debug, Default)]
pub struct SoftmaxOut<'a> {
    /// `grad_scale * dL/dx`, in the logits' layout (written, or added with `accumulate`); as
    /// long as the logits.
    pub grad: Option<&'a mut [f32]>,
    /// Each sample's `loss_weight * w_i * CE_i` (0 for ignored samples); one per sample.
    pub loss: Option<&'a mut [f32]>,
    /// What the call did.
    pub stats: Option<&'a mut Stats>,
}

impl<'a> SoftmaxOut<'a> {
    /// Only the gradient.
    pub fn grad(grad: &'a mut [f32]) -> Self {
        SoftmaxOut {
            grad: Some(grad),
            ..SoftmaxOut::default()
        }
    }
}

impl GhmSoftmax {
    /// Checks every field; the error is [`Error::Config`].
    pub fn validate(&self) -> Result<(), Error> {
        self.plan().map(|_| ())
    }

    /// The first field out of range, explained.
    pub(crate) fn bad_field(&self) -> Option<Fault> {
        self.raw_plan().bad_field()
    }

    fn raw_plan(&self) -> Plan {
        Plan {
            // GHM-C's bins (last edge 1 + 1e-6); the model itself is the softmax kernel's.
            loss: Loss::CLogits,
            bins: self.bins as usize,
            momentum: self.momentum,
            loss_weight: self.loss_weight,
            reduction: self.reduction,
            grad_scale: self.grad_scale,
            accumulate: self.accumulate,
            skip_bad: self.skip_bad,
            normalize: self.normalize,
            ema_start: self.ema_start,
            backend: Backend::Scalar,
        }
    }

    /// Softmax cross-entropy GHM of a batch, in one call: `input.pred` holds the logits
    /// (`[N][C]` for [`Layout::AnchorMajor`], `[C][N]` for [`Layout::ClassMajor`]),
    /// `input.labels` one class index per sample, `input.anchor_weight` a validity mask
    /// (`> 0` valid). Returns the reduced loss; writes the gradient (same layout as the
    /// logits) and the per-sample losses if asked for. `input.blocks` reads (and writes) the
    /// batch through views: a block is `len` samples, whose logits and gradient are
    /// `len * C` floats in the layout and whose labels, weights and per-sample losses are
    /// `len`.
    ///
    /// `ema` is required when `momentum > 0` (and updated), ignored otherwise. On an error
    /// nothing is written.
    pub fn loss_grad(
        &self,
        ema: Option<&mut Ema>,
        input: &Labels<'_>,
        out: SoftmaxOut<'_>,
    ) -> Result<f32, Error> {
        let plan = self.plan()?;
        crate::api::check_ema(&plan, ema.as_deref())?;
        let shape = Shape::of(input)?;
        shape.check_outputs(out.grad.as_deref(), out.loss.as_deref())?;
        if shape.blocks.count == 0 || input.anchors.is_empty() {
            return Ok(0.0);
        }
        let bins = Bins::new(plan.bins, plan.last_edge());
        let hist = pass1(&plan, &bins, input, &shape)?;
        // Commits the EMA: nothing can fail after it (pass 2 cannot).
        let weights = crate::api::finalize(plan, ema, &hist)?;
        if out.grad.is_some() || out.loss.is_some() {
            // Pass 1 has refused any bad sample (or `skip_bad` is set).
            pass2(&plan, &bins, &weights, input, &shape, out.grad, out.loss);
        }
        if let Some(stats) = out.stats {
            *stats = Stats::of(&hist, &weights);
        }
        Ok(weights.loss as f32)
    }

    /// Phase 1: adds the samples `input.anchors` (of every block) to `hist`.
    pub fn accumulate(&self, input: &Labels<'_>, hist: &mut Hist) -> Result<(), Error> {
        let plan = self.plan()?;
        let shape = Shape::of(input)?;
        if hist.bins as usize != plan.bins {
            return Err(Error::State);
        }
        let bins = Bins::new(plan.bins, plan.last_edge());
        let chunk = pass1(&plan, &bins, input, &shape)?;
        hist.merge(&chunk)
    }

    /// Phase 2, once per batch: EMA update, weights and the batch's loss.
    pub fn finalize(&self, ema: Option<&mut Ema>, hist: &Hist) -> Result<Weights, Error> {
        crate::api::finalize(self.plan()?, ema, hist)
    }

    /// Phase 3: the gradient rows and per-sample losses of the samples `input.anchors` (into
    /// full-size outputs, as [`GhmSoftmax::loss_grad`]'s). Unless `skip_bad` is set, the
    /// samples are checked first (their logits' and weights' bits): nothing is written if one
    /// is bad.
    pub fn apply(
        &self,
        weights: &Weights,
        input: &Labels<'_>,
        grad: Option<&mut [f32]>,
        loss: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        let plan = self.plan()?;
        weights.check(plan.bins)?;
        let shape = Shape::of(input)?;
        shape.check_outputs(grad.as_deref(), loss.as_deref())?;
        if grad.is_none() && loss.is_none() {
            return Ok(());
        }
        let bins = Bins::new(plan.bins, plan.last_edge());
        if !plan.skip_bad {
            check(input, &shape)?;
        }
        pass2(&plan, &bins, weights, input, &shape, grad, loss);
        Ok(())
    }
}

/// A batch's geometry, checked: `count` blocks of `len` samples of `C` classes.
struct Shape {
    blocks: Blocks,
    classes: usize,
    /// The input buffers are exactly the batch (no views).
    contiguous: bool,
}

impl Shape {
    /// [`Error::Shape`] unless `C >= 1`, the anchor range is inside a block and every input
    /// buffer holds its blocks (is exactly as long as the batch, without views).
    fn of(input: &Labels<'_>) -> Result<Shape, Error> {
        let c = input.num_classes;
        let blocks = input
            .blocks
            .unwrap_or_else(|| Blocks::contiguous(input.labels.len()));
        let (len, count) = (blocks.len, blocks.count);
        let contiguous = input.blocks.is_none();
        if c == 0 || c > i32::MAX as usize {
            return Err(Error::Shape);
        }
        if input.anchors.start > input.anchors.end || input.anchors.end > len {
            return Err(Error::Shape);
        }
        let row = len.checked_mul(c).ok_or(Error::Shape)?;
        count.checked_mul(row).ok_or(Error::Shape)?;
        let shape = Shape {
            blocks,
            classes: c,
            contiguous,
        };
        let views = if contiguous {
            (View::packed(row), View::packed(len), View::packed(len))
        } else {
            (blocks.pred, blocks.target, blocks.weight)
        };
        let ok = shape.fits(input.pred.len(), views.0, row)?
            && shape.fits(input.labels.len(), views.1, len)?
            && match input.anchor_weight {
                Some(w) => shape.fits(w.len(), views.2, len)?,
                None => true,
            };
        if ok {
            Ok(shape)
        } else {
            Err(Error::Shape)
        }
    }

    /// Whether a buffer of `have` elements holds the blocks of `block` elements through
    /// `view` (is exactly as long, for a contiguous batch).
    fn fits(&self, have: usize, view: View, block: usize) -> Result<bool, Error> {
        let need = view.extent(self.blocks.count, block)?;
        Ok(if self.contiguous {
            have == need
        } else {
            have >= need
        })
    }

    /// [`Error::Shape`] unless each output present holds the batch's outputs, [`Error::Alias`]
    /// if an output's view overlaps itself.
    fn check_outputs(&self, grad: Option<&[f32]>, loss: Option<&[f32]>) -> Result<(), Error> {
        let b = &self.blocks;
        let row = b.len * self.classes;
        for (have, view, block) in [
            (grad.map(|g| g.len()), self.view(b.grad, row), row),
            (loss.map(|l| l.len()), self.view(b.loss_elems, b.len), b.len),
        ] {
            let Some(have) = have else { continue };
            if !view.self_disjoint(b.count, block) {
                return Err(Error::Alias);
            }
            if !self.fits(have, view, block)? {
                return Err(Error::Shape);
            }
        }
        Ok(())
    }

    /// An output's view: its own with blocks, packed otherwise.
    fn view(&self, v: View, block: usize) -> View {
        if self.contiguous {
            View::packed(block)
        } else {
            v
        }
    }

    /// Block `b` of the input, as the kernel's rows.
    fn rows<'a>(&self, input: &Labels<'a>, b: usize) -> Rows<'a> {
        let bl = &self.blocks;
        let (len, c) = (bl.len, self.classes);
        let (pv, tv, wv) = if self.contiguous {
            (View::packed(len * c), View::packed(len), View::packed(len))
        } else {
            (bl.pred, bl.target, bl.weight)
        };
        Rows {
            x: &input.pred[pv.block(b, len * c)],
            labels: &input.labels[tv.block(b, len)],
            weight: input.anchor_weight.map(|a| &a[wv.block(b, len)]),
            classes: c,
            layout: input.layout,
            len,
            anchors: input.anchors.clone(),
        }
    }
}

/// [`Error::Input`] if a covered sample is bad (a logit not finite, or a weight not in
/// `[0, f32::MAX]`): the input check of the phased `apply`, which reads the logits' bits only
/// (pass 1 would compute every exponential again just to find none bad).
fn check(input: &Labels<'_>, shape: &Shape) -> Result<(), Error> {
    // The largest absolute value's bits: above f32::MAX's for an infinity or a NaN.
    let finite = |s: &[f32]| {
        let max = s.iter().fold(0u32, |m, x| m.max(x.to_bits() & 0x7fff_ffff));
        max <= f32::MAX.to_bits()
    };
    let (a0, a1) = (input.anchors.start, input.anchors.end);
    for b in 0..shape.blocks.count {
        let rows = shape.rows(input, b);
        let (c, len) = (rows.classes, rows.len);
        let logits_ok = match rows.layout {
            Layout::AnchorMajor => finite(&rows.x[a0 * c..a1 * c]),
            Layout::ClassMajor => (0..c).all(|k| finite(&rows.x[k * len + a0..k * len + a1])),
        };
        let weights_ok = rows
            .weight
            .is_none_or(|w| w[a0..a1].iter().all(|w| (0.0..=f32::MAX).contains(w)));
        if !(logits_ok && weights_ok) {
            return Err(Error::Input);
        }
    }
    Ok(())
}

/// Pass 1 over every block: the histogram of the samples `input.anchors`.
fn pass1(plan: &Plan, bins: &Bins, input: &Labels<'_>, shape: &Shape) -> Result<Hist, Error> {
    let mut sums = Sums::new();
    for b in 0..shape.blocks.count {
        let rows = shape.rows(input, b);
        dispatch::softmax_accumulate(plan.backend, &rows, bins, plan.skip_bad, &mut sums)?;
    }
    let mut hist = Hist::new(plan.bins as u32)?;
    hist.counts = sums.counts;
    hist.loss_sums = sums.loss;
    if plan.normalize != Normalize::None {
        hist.g_sums = sums.g;
    }
    hist.tot = sums.valid as f64;
    hist.skipped = sums.skipped;
    Ok(hist)
}

/// Pass 2 over every block (the samples known good, or `skip_bad`).
fn pass2(
    plan: &Plan,
    bins: &Bins,
    weights: &Weights,
    input: &Labels<'_>,
    shape: &Shape,
    mut grad: Option<&mut [f32]>,
    mut loss: Option<&mut [f32]>,
) {
    let t = Tables::new(weights, plan.loss_weight);
    let bl = &shape.blocks;
    let row = bl.len * shape.classes;
    let (gv, lv) = (shape.view(bl.grad, row), shape.view(bl.loss_elems, bl.len));
    for b in 0..bl.count {
        let rows = shape.rows(input, b);
        let dest = Dest {
            grad: grad.as_deref_mut().map(|g| &mut g[gv.block(b, row)]),
            loss: loss.as_deref_mut().map(|l| &mut l[lv.block(b, bl.len)]),
            accumulate: plan.accumulate,
        };
        dispatch::softmax_apply(plan.backend, &rows, bins, &t, dest);
    }
}
