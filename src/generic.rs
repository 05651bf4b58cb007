//! Generic GHM, "bring your own g": GHM for any loss whose per-sample gradient norm the
//! caller computes ([`GhmG`]).
//!
//! The caller gives, per sample (an anchor, a pixel, a box, a softmax row...), its gradient
//! norm `g` (finite, `>= 0`), optionally a validity weight (`> 0` valid, as GHM-C's label
//! weights), optionally its unweighted loss `l`, and optionally its gradient: `k` floats per
//! sample, rescaled in place by the sample's GHM factor. Bins, EMA, weights and reductions
//! are GHM-C's (edges `k / bins`, the last `1 + 1e-6`; `tot` the number of valid samples),
//! on `min(g / g_max, 1)`: every `g >= g_max` goes to the last bin.
//!
//! The passes are the GHM-C kernels' with a model whose prediction is `g` and whose `dl/dx`
//! is 1: pass 1 counts (and sums the losses per bin), pass 2 writes each sample's factor
//! `scale[bin]`, and the caller's gradient rows are multiplied by it. So GHM-C or GHM-R fed
//! their own `g` and `dl/dx` through this path give their own weights and gradients, bit for
//! bit. One mode of pass 1 and one kind of pass 2 are compiled for it, per backend.

use core::ffi::CStr;

use crate::backend::Backend;
use crate::bins::Bins;
use crate::config::{EmaStart, Loss, Normalize, Plan, Planned, Reduction, MAX_BINS};
use crate::dispatch;
use crate::error::Error;
use crate::fault::Fault;
use crate::kernel::Tables;
use crate::model::G;
use crate::source::Batch;
use crate::state::{self, Ema, Hist, Stats, Weights};

/// The upper edge of the last bin (GHM-C's).
const LAST_EDGE: f32 = 1.0 + 1e-6;

/// Samples per pass-2 call: the factors of a chunk are written to a stack buffer of this many
/// floats when the caller does not ask for them.
const CHUNK: usize = 2048;

/// Generic GHM configuration ("bring your own g"). `GhmG::default()` has GHM-C's defaults and
/// `g_max = 1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GhmG {
    /// Number of gradient-norm bins, `1..=MAX_BINS` (default 10).
    pub bins: u32,
    /// EMA momentum in `[0, 1)`; 0 disables the EMA (default 0).
    pub momentum: f32,
    /// Multiplies the loss and the gradient factors (default 1).
    pub loss_weight: f32,
    /// Loss reduction (default [`Reduction::Mean`]): MEAN divides the loss and the factors
    /// by `tot + FLT_EPSILON` (`tot`: the number of valid samples).
    pub reduction: Reduction,
    /// Multiplies the gradient factors (default 1; -1 gives Darknet's delta).
    pub grad_scale: f32,
    /// The gradient norm that fills the last bin, positive and finite (default 1: every
    /// built-in loss's `g` is in `[0, 1]`). A sample's bin is that of `min(g / g_max, 1)`:
    /// bins are equal-width on `[0, g_max]` and everything above lands in the last one. Pick
    /// it as the largest `g` your loss can produce, if it is bounded (`|p - y|` of a
    /// sigmoid: 1; half the L1 norm of `softmax - onehot`: 1), or a high percentile of the
    /// `g` you observe otherwise (an unbounded `g`, such as a raw L1 or L2 residual, would
    /// otherwise stretch the bins over its outliers and leave every other sample in bin 0).
    pub g_max: f32,
    /// Exclude bad samples (counted in `Stats::skipped`, factor 0) instead of failing
    /// (default false).
    pub skip_bad: bool,
    /// How the EMA starts (default [`EmaStart::Zero`], mmdet).
    pub ema_start: EmaStart,
    /// Force a kernel backend; `None` picks the best one available (default).
    pub backend: Option<Backend>,
}

impl Default for GhmG {
    fn default() -> Self {
        GhmG {
            bins: 10,
            momentum: 0.0,
            loss_weight: 1.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
            g_max: 1.0,
            skip_bad: false,
            ema_start: EmaStart::Zero,
            backend: None,
        }
    }
}

/// The samples of a batch (or of a chunk, for the phased API).
#[derive(Clone, Copy, Debug)]
pub struct Samples<'a> {
    /// Gradient norm of each sample: finite and `>= 0`.
    pub g: &'a [f32],
    /// Unweighted loss of each sample (finite, `>= 0`); `None`: no loss is computed (the
    /// returned loss is 0).
    pub loss: Option<&'a [f32]>,
    /// Validity weights: `> 0` valid, `0` excluded (a mask, as GHM-C's label weights, not a
    /// multiplier); `None`: every sample valid.
    pub valid: Option<&'a [f32]>,
}

impl<'a> Samples<'a> {
    /// Gradient norms only: every sample valid, no loss.
    pub fn new(g: &'a [f32]) -> Self {
        Samples {
            g,
            loss: None,
            valid: None,
        }
    }

    /// With each sample's unweighted loss.
    pub fn loss(mut self, loss: &'a [f32]) -> Self {
        self.loss = Some(loss);
        self
    }

    /// With validity weights.
    pub fn valid(mut self, valid: &'a [f32]) -> Self {
        self.valid = Some(valid);
        self
    }

    /// [`Error::Shape`] unless every buffer has one value per sample.
    fn check(&self) -> Result<(), Error> {
        let n = self.g.len();
        let ok = |b: Option<&[f32]>| b.is_none_or(|b| b.len() == n);
        if ok(self.loss) && ok(self.valid) {
            Ok(())
        } else {
            Err(Error::Shape)
        }
    }

    /// Samples `range` as the kernels' batch: the prediction is `g`, the target the loss
    /// (or `g` again, when there is none or `loss` is false: pass 2 of samples already
    /// checked need not read the losses; their per-bin sums are dropped).
    fn batch(&self, range: core::ops::Range<usize>, loss: bool) -> Batch<'a> {
        let g = &self.g[range.clone()];
        let l = self.loss.filter(|_| loss);
        Batch::Dense {
            pred: g,
            target: l.map_or(g, |l| &l[range.clone()]),
            weight: self.valid.map(|w| &w[range]),
            blocks: None,
        }
    }
}

/// Each sample's gradient, rescaled in place: `k` floats per sample, float `j` of sample `i`
/// at `data[i * stride + j * elem_stride]`. Rows of adjacent floats (`elem_stride` 1: a box's
/// 4 coordinates, a softmax row's `C` logits), or planar ones (`stride` 1, `elem_stride` the
/// sample count: `[4][N]` box deltas). With blocks ([`GradRows::blocks`]) the samples are
/// `block_len` to a block, block `b` starting `b * block_stride` floats in: a trainer's delta
/// buffer holding other outputs between them (Darknet's `[batch][anchor][4 + 1 + C][h * w]`:
/// the box deltas of one image and anchor are a block of `h * w` planar rows).
#[derive(Debug)]
pub struct GradRows<'a> {
    /// The rows; at least the extent of the samples' floats.
    pub data: &'a mut [f32],
    /// Floats per sample, at least 1.
    pub k: usize,
    /// Floats from one sample's first float to the next sample's (within a block).
    pub stride: usize,
    /// Floats from one float of a row to the next.
    pub elem_stride: usize,
    /// Samples per block; 0: one block of all the samples.
    pub block_len: usize,
    /// Floats from one block's first float to the next block's.
    pub block_stride: usize,
}

impl<'a> GradRows<'a> {
    /// Rows of `k` floats, packed (`stride = k`).
    pub fn new(data: &'a mut [f32], k: usize) -> Self {
        GradRows::strided(data, k, k)
    }

    /// Rows of `k` adjacent floats, `stride` apart.
    pub fn strided(data: &'a mut [f32], k: usize, stride: usize) -> Self {
        GradRows::laid_out(data, k, stride, 1)
    }

    /// Rows of `k` floats `elem_stride` apart, `stride` from one row to the next.
    pub fn laid_out(data: &'a mut [f32], k: usize, stride: usize, elem_stride: usize) -> Self {
        GradRows {
            data,
            k,
            stride,
            elem_stride,
            block_len: 0,
            block_stride: 0,
        }
    }

    /// Rows laid out as `layout` says.
    pub(crate) fn with_layout(data: &'a mut [f32], l: RowLayout) -> Self {
        let rows = GradRows::laid_out(data, l.k, l.stride, l.elem_stride);
        rows.blocks(l.block_len, l.block_stride)
    }

    /// The same rows in blocks of `len` samples, `stride` floats apart (block `b`'s first
    /// float at `b * stride`). For the phased [`GhmG::apply`], a chunk's rows start at a
    /// block's first float and its samples at that block's first sample.
    pub fn blocks(mut self, len: usize, stride: usize) -> Self {
        self.block_len = len;
        self.block_stride = stride;
        self
    }

    /// [`Error::Shape`] unless the rows of `n` samples are a valid layout ([`RowLayout`])
    /// that fits in `data`.
    fn check(&self, n: usize) -> Result<(), Error> {
        let extent = self.layout().extent(n).map_err(|_| Error::Shape)?;
        if self.data.len() < extent {
            return Err(Error::Shape);
        }
        Ok(())
    }

    fn layout(&self) -> RowLayout {
        RowLayout {
            k: self.k,
            stride: self.stride,
            elem_stride: self.elem_stride,
            block_len: self.block_len,
            block_stride: self.block_stride,
        }
    }

    /// Multiplies the rows of samples `first..first + factors.len()` by their factors (see
    /// [`scaled`]), a block's part at a time.
    fn rescale(&mut self, first: usize, factors: &[f32]) {
        let len = match self.block_len {
            0 => usize::MAX,
            len => len,
        };
        let (mut s, mut done) = (first, 0);
        while done < factors.len() {
            let (b, i) = (s / len, s % len);
            let part = (len - i).min(factors.len() - done);
            let base = b * self.block_stride;
            self.rescale_in_block(base, i, &factors[done..done + part]);
            s += part;
            done += part;
        }
    }

    /// [`GradRows::rescale`] for samples `first..` of the block starting at float `base`.
    /// Packed rows of 1, 2, 3, 4 or 8 floats take a loop compiled for their width, which the
    /// compiler vectorizes across samples; planar rows (`stride` 1) a contiguous loop per
    /// float.
    fn rescale_in_block(&mut self, base: usize, first: usize, factors: &[f32]) {
        let (k, s, e) = (self.k, self.stride, self.elem_stride);
        let data = &mut self.data[base..];
        if s == k && (e == 1 || k == 1) {
            let rows = &mut data[first * k..(first + factors.len()) * k];
            match k {
                1 => return rescale_packed::<1>(rows, factors),
                2 => return rescale_packed::<2>(rows, factors),
                3 => return rescale_packed::<3>(rows, factors),
                4 => return rescale_packed::<4>(rows, factors),
                8 => return rescale_packed::<8>(rows, factors),
                _ => {}
            }
        }
        if s == 1 {
            for j in 0..k {
                let at = first + j * e;
                let floats = &mut data[at..at + factors.len()];
                for (v, &f) in floats.iter_mut().zip(factors) {
                    *v = scaled(*v, f);
                }
            }
            return;
        }
        for (i, &f) in factors.iter().enumerate() {
            let at = (first + i) * s;
            for j in 0..k {
                let v = &mut data[at + j * e];
                *v = scaled(*v, f);
            }
        }
    }
}

/// Where the gradient rows of the samples lie, without the buffer: [`GradRows`]' fields, and
/// the C layer's `ghm_g_rows`, checked by one rule.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowLayout {
    pub k: usize,
    pub stride: usize,
    pub elem_stride: usize,
    pub block_len: usize,
    pub block_stride: usize,
}

/// Which field of a [`RowLayout`] is wrong, its value, and why.
pub(crate) type BadLayout = (&'static CStr, usize, &'static CStr);

impl RowLayout {
    /// The samples of each block (all `n` without blocks) and the number of blocks.
    pub(crate) fn block_shape(&self, n: usize) -> (usize, usize) {
        match self.block_len {
            0 => (n, 1),
            len if len >= n => (n, 1),
            len => (len, n.div_ceil(len)),
        }
    }

    /// The index of float `j` of sample `sample`.
    pub(crate) fn float(&self, sample: usize, j: usize) -> usize {
        let (b, i) = match self.block_len {
            0 => (0, sample),
            len => (sample / len, sample % len),
        };
        b * self.block_stride + i * self.stride + j * self.elem_stride
    }

    /// The floats the rows of `n` samples reach (one past the last), or the field at fault:
    /// `k >= 1`; within a block one of the two strides must step over everything the other
    /// covers (rows of adjacent floats: `stride >= (k - 1) * elem_stride + 1`; planar rows:
    /// `elem_stride >= (len - 1) * stride + 1`), so that no float belongs to two samples;
    /// blocks at least a block's extent apart; no extent beyond `usize`.
    pub(crate) fn extent(&self, n: usize) -> Result<usize, BadLayout> {
        let (k, s, e) = (self.k, self.stride, self.elem_stride);
        if k == 0 {
            return Err((c"k", k, c"is 0"));
        }
        if n == 0 {
            return Ok(0);
        }
        let (len, count) = self.block_shape(n);
        let overflow = |field, v| (field, v, c"makes the rows' extent overflow");
        let rows = (len - 1).checked_mul(s).ok_or(overflow(c"row_stride", s))?;
        let floats = (k - 1).checked_mul(e).ok_or(overflow(c"elem_stride", e))?;
        // Each row's floats inside one step of the rows, or each float's samples inside one
        // step of the floats. One sample needs distinct floats (elem_stride >= 1), one float
        // per sample distinct samples (row_stride >= 1): with a stride of 0, one float would
        // be scaled several times (found by fuzzing).
        let distinct = match (len == 1, k == 1) {
            (true, true) => true,
            (true, false) => e >= 1,
            (false, true) => s >= 1,
            (false, false) => (e >= 1 && s > floats) || (s >= 1 && e > rows),
        };
        if !distinct && len == 1 {
            let why = c"is 0: a sample's floats would be one float";
            return Err((c"elem_stride", e, why));
        }
        if !distinct {
            let why = c"makes two samples share a float (it must step over a whole row)";
            return Err((c"row_stride", s, why));
        }
        let block = rows
            .checked_add(floats + 1)
            .ok_or(overflow(c"row_stride", s))?;
        if count > 1 && self.block_stride < block {
            let why = c"is less than a block's extent: blocks overlap";
            return Err((c"block_stride", self.block_stride, why));
        }
        // The last block may hold fewer samples: its extent is at most `block`.
        let last = n - (count - 1) * len;
        let last_extent = (last - 1) * s + floats + 1;
        (count - 1)
            .checked_mul(self.block_stride)
            .and_then(|x| x.checked_add(last_extent))
            .ok_or(overflow(c"block_stride", self.block_stride))
    }
}

/// [`GradRows::rescale`] for packed rows of `K` floats.
fn rescale_packed<const K: usize>(rows: &mut [f32], factors: &[f32]) {
    for (row, &f) in rows.chunks_exact_mut(K).zip(factors) {
        for v in row {
            *v = scaled(*v, f);
        }
    }
}

/// A gradient value `v` times its sample's factor `f`; `+0.0` where the factor is 0 (invalid
/// and skipped samples: a row of zeros, as GHM-C's gradient, whatever it held).
#[inline(always)]
pub(crate) fn scaled(v: f32, f: f32) -> f32 {
    if f == 0.0 {
        0.0
    } else {
        v * f
    }
}

impl Planned for GhmG {
    fn plan(&self) -> Result<Plan, Error> {
        self.planned().map(|(plan, _)| plan)
    }
}

/// Optional outputs of [`GhmG::loss_grad`]; each `None` is not computed.
#[derive(Debug, Default)]
pub struct GOut<'a> {
    /// The samples' gradients, multiplied in place by their factors.
    pub rows: Option<GradRows<'a>>,
    /// Each sample's factor: `grad_scale * loss_weight * w_bin / (tot + FLT_EPSILON)` for
    /// MEAN (without the division for SUM and NONE), 0 for invalid and skipped samples. One
    /// per sample.
    pub factor: Option<&'a mut [f32]>,
    /// What the call did.
    pub stats: Option<&'a mut Stats>,
}

impl GhmG {
    /// Checks every field; the error is [`Error::Config`].
    pub fn validate(&self) -> Result<(), Error> {
        self.planned().map(|_| ())
    }

    /// The shared plan (validated, backend resolved) and the model.
    fn planned(&self) -> Result<(Plan, G), Error> {
        if self.bad_g_max().is_some() {
            return Err(Error::Config);
        }
        Ok((self.raw_plan().validated(self.backend)?, G::new(self.g_max)))
    }

    /// `g_max` out of range, explained.
    fn bad_g_max(&self) -> Option<Fault> {
        let ok = self.g_max > 0.0 && self.g_max.is_finite();
        let f = Fault::new(Error::Config, c"cfg", c"is not positive and finite").field(c"g_max");
        (!ok).then_some(f.value(self.g_max as f64))
    }

    /// The first field out of range, explained.
    pub(crate) fn bad_field(&self) -> Option<Fault> {
        self.bad_g_max().or_else(|| self.raw_plan().bad_field())
    }

    /// The plan, unchecked (the backend still to resolve).
    fn raw_plan(&self) -> Plan {
        Plan {
            // Not read on this path: the model is `G`, passed to the kernels directly, and
            // the bins are made with GHM-C's last edge (`LAST_EDGE`). `finalize` reads no loss.
            loss: Loss::CLogits,
            bins: self.bins as usize,
            momentum: self.momentum,
            loss_weight: self.loss_weight,
            reduction: self.reduction,
            grad_scale: self.grad_scale,
            accumulate: false,
            skip_bad: self.skip_bad,
            normalize: Normalize::None,
            ema_start: self.ema_start,
            backend: Backend::Scalar,
        }
    }

    /// Generic GHM of a batch, in one call: counts the samples' bins, updates the EMA, and
    /// multiplies each sample's gradient row by its factor. Returns the reduced weighted loss
    /// (`loss_weight * sum(w_i * l_i)`, divided by `tot + FLT_EPSILON` for MEAN), or 0 without
    /// losses.
    ///
    /// `ema` is required when `momentum > 0` (and updated), ignored otherwise. On an error
    /// nothing is written.
    pub fn loss_grad(
        &self,
        ema: Option<&mut Ema>,
        samples: &Samples<'_>,
        mut out: GOut<'_>,
    ) -> Result<f32, Error> {
        let (plan, model) = self.planned()?;
        crate::api::check_ema(&plan, ema.as_deref())?;
        let n = samples.g.len();
        check_outputs(samples, out.rows.as_ref(), out.factor.as_deref())?;
        if n == 0 {
            return Ok(0.0);
        }
        let bins = Bins::new(plan.bins, LAST_EDGE);
        let hist = pass1(&plan, model, &bins, samples)?;
        let (weights, new_ema) = state::finalize(&plan, ema.as_deref(), &hist)?;
        // Nothing can fail from here on: commit.
        if let (Some(ema), Some(new)) = (ema, new_ema) {
            *ema = new;
        }
        if out.rows.is_some() || out.factor.is_some() {
            // Pass 1 has refused any bad sample (or `skip_bad` is set).
            pass2(&plan, model, &bins, &weights, samples, out.rows, out.factor)?;
        }
        if let Some(stats) = out.stats.as_deref_mut() {
            *stats = Stats::of(&hist, &weights);
        }
        Ok(weights.loss as f32)
    }

    /// Phase 1: adds a chunk of a batch to `hist`.
    pub fn accumulate(&self, samples: &Samples<'_>, hist: &mut Hist) -> Result<(), Error> {
        let (plan, model) = self.planned()?;
        samples.check()?;
        if hist.bins as usize != plan.bins {
            return Err(Error::State);
        }
        if samples.g.is_empty() {
            return Ok(());
        }
        let bins = Bins::new(plan.bins, LAST_EDGE);
        let chunk = pass1(&plan, model, &bins, samples)?;
        hist.merge(&chunk)
    }

    /// Phase 2, once per batch: EMA update, weights and the batch's loss.
    pub fn finalize(&self, ema: Option<&mut Ema>, hist: &Hist) -> Result<Weights, Error> {
        let (plan, _) = self.planned()?;
        crate::api::finalize(plan, ema, hist)
    }

    /// Phase 3: multiplies the gradient rows of a chunk's samples by their factors (and
    /// writes the factors, if asked for). Unless `skip_bad` is set, the chunk is checked
    /// first (its pass 1 again), since nothing may be written if a sample is bad.
    pub fn apply(
        &self,
        weights: &Weights,
        samples: &Samples<'_>,
        rows: Option<GradRows<'_>>,
        factor: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        let (plan, model) = self.planned()?;
        weights.check(plan.bins)?;
        check_outputs(samples, rows.as_ref(), factor.as_deref())?;
        if samples.g.is_empty() || (rows.is_none() && factor.is_none()) {
            return Ok(());
        }
        let bins = Bins::new(plan.bins, LAST_EDGE);
        if !plan.skip_bad {
            pass1(&plan, model, &bins, samples)?;
        }
        pass2(&plan, model, &bins, weights, samples, rows, factor)
    }
}

/// [`Error::Shape`] unless the samples' buffers, the rows and the factors all hold the
/// samples.
fn check_outputs(
    samples: &Samples<'_>,
    rows: Option<&GradRows<'_>>,
    factor: Option<&[f32]>,
) -> Result<(), Error> {
    samples.check()?;
    let n = samples.g.len();
    if let Some(rows) = rows {
        rows.check(n)?;
    }
    if factor.is_some_and(|f| f.len() != n) {
        return Err(Error::Shape);
    }
    Ok(())
}

/// Pass 1 of the samples: counts, `tot`, skipped and, with losses, the per-bin loss sums.
fn pass1(plan: &Plan, model: G, bins: &Bins, samples: &Samples<'_>) -> Result<Hist, Error> {
    let batch = samples.batch(0..samples.g.len(), true);
    let mut hist = dispatch::accumulate_sums(plan.backend, model, bins, &batch, plan.skip_bad)?;
    if samples.loss.is_none() {
        // The sums are of `g` (the stand-in target): no loss.
        hist.loss_sums = [0.0; MAX_BINS];
    }
    Ok(hist)
}

/// Pass 2: each sample's factor (into `factor`, or a chunk at a time into a stack buffer),
/// then its row multiplied by it. The samples are known to be good (or `skip_bad` is set).
fn pass2(
    plan: &Plan,
    model: G,
    bins: &Bins,
    weights: &Weights,
    samples: &Samples<'_>,
    mut rows: Option<GradRows<'_>>,
    mut factor: Option<&mut [f32]>,
) -> Result<(), Error> {
    let n = samples.g.len();
    let tables = Tables::new(weights, plan.loss_weight);
    let mut buf = [0.0f32; CHUNK];
    let mut start = 0;
    while start < n {
        let len = match factor {
            Some(_) => n,
            None => CHUNK.min(n - start),
        };
        let range = start..start + len;
        let f: &mut [f32] = match factor.as_deref_mut() {
            Some(f) => &mut f[range.clone()],
            None => &mut buf[..len],
        };
        // With `skip_bad`, a sample whose loss is bad was excluded by pass 1 and must get
        // factor 0 here too: the losses are read again. Otherwise every sample is good.
        let batch = samples.batch(range, plan.skip_bad);
        let (b, lw) = (plan.backend, plan.loss_weight);
        dispatch::apply_grad(b, model, bins, weights, &tables, lw, &batch, f)?;
        if let Some(rows) = rows.as_mut() {
            rows.rescale(start, f);
        }
        start += len;
    }
    Ok(())
}
