//! The C ABI of softmax cross-entropy GHM ([`GhmSoftmax`]): the same steps as the rest of the
//! C layer (NULL checks, configuration, sizes, overlaps, then the safe API; nothing written on
//! error), over `[N][C]` or `[C][N]` logits and one class-index label per sample.
//!
//! Aligned buffers go to the safe API as slices. If any is misaligned, the call runs through
//! the phased API on aligned stack copies of whole samples ([`BOUNCE_FLOATS`] logits at a
//! time, so at most that many classes): the results are the same, bit for bit.

use core::ffi::CStr;

use super::{disjoint, one_required, read, status, Buf, Named, Region, Results};
use crate::config::{EmaStart, Layout, Normalize, Plan, Reduction};
use crate::error::Error;
use crate::fault::Fault;
use crate::softmax::{GhmSoftmax, SoftmaxOut};
use crate::state::{Ema, Hist, Stats, Weights};
use crate::view::{Blocks, View};
use crate::Labels;

/// Logits per aligned stack copy when a buffer is misaligned (16 KiB).
const BOUNCE_FLOATS: usize = 4096;

/// Softmax cross-entropy GHM configuration. Get the defaults from
/// `ghm_softmax_config_default()`.
///
/// Per sample: `p = softmax(x)` over its C logits, `g = 1 - p[y]` (half the L1 norm of the
/// gradient `p - onehot(y)`, in [0, 1]), binned, counted and weighted exactly as GHM-C's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ghm_softmax_config {
    /// Number of bins, 1..=GHM_MAX_BINS (default 10).
    pub bins: u32,
    /// EMA momentum in [0, 1); 0 disables the EMA (default 0).
    pub momentum: f32,
    /// Multiplies the loss, the per-sample losses and the gradient (default 1).
    pub loss_weight: f32,
    /// GHM_REDUCTION_* (default MEAN: divided by tot + FLT_EPSILON, tot the number of valid
    /// samples).
    pub reduction: u32,
    /// The gradient written is grad_scale * dL/dx (default 1; -1 gives Darknet's delta).
    pub grad_scale: f32,
    /// 1: add into the gradient buffer (each exponential computed twice); 0: overwrite it
    /// (default 0).
    pub accumulate: u32,
    /// 1: exclude bad samples (counted in stats.skipped, a gradient row of zeros); 0: fail
    /// with GHM_ERR_INPUT (default 0).
    pub skip_bad: u32,
    /// GHM_NORMALIZE_* (default NONE): GRAD_MASS keeps the batch's summed g, as in
    /// ghm_c_config.
    pub normalize: u32,
    /// GHM_EMA_START_* (default ZERO, mmdet).
    pub ema_start: u32,
}

impl From<&GhmSoftmax> for ghm_softmax_config {
    fn from(c: &GhmSoftmax) -> Self {
        ghm_softmax_config {
            bins: c.bins,
            momentum: c.momentum,
            loss_weight: c.loss_weight,
            reduction: c.reduction as u32,
            grad_scale: c.grad_scale,
            accumulate: c.accumulate as u32,
            skip_bad: c.skip_bad as u32,
            normalize: c.normalize as u32,
            ema_start: c.ema_start as u32,
        }
    }
}

impl super::FromC<ghm_softmax_config> for GhmSoftmax {
    fn from_c(c: &ghm_softmax_config) -> Result<GhmSoftmax, Fault> {
        Ok(GhmSoftmax {
            bins: c.bins,
            momentum: c.momentum,
            loss_weight: c.loss_weight,
            reduction: super::known::<Reduction>(c.reduction, c"reduction")?,
            grad_scale: c.grad_scale,
            accumulate: super::flag(c.accumulate, c"accumulate")?,
            skip_bad: super::flag(c.skip_bad, c"skip_bad")?,
            normalize: super::known::<Normalize>(c.normalize, c"normalize")?,
            ema_start: super::known::<EmaStart>(c.ema_start, c"ema_start")?,
            backend: None,
        })
    }
    fn bad_field(&self) -> Option<Fault> {
        GhmSoftmax::bad_field(self)
    }
}

/// The configuration behind `cfg`, validated, with its region for the overlap checks.
///
/// # Safety
/// `cfg` is NULL or points to a valid `ghm_softmax_config`.
unsafe fn config(
    cfg: *const ghm_softmax_config,
) -> Result<(GhmSoftmax, Plan, Option<super::Region>), Fault> {
    // SAFETY: forwarded from the caller.
    let (value, region) = unsafe { super::config_value::<_, GhmSoftmax>(cfg) };
    value.map(|(cfg, plan)| (cfg, plan, region))
}

/// A batch as C passes it: `blocks.count` blocks of `blocks.len` samples, read (and written)
/// through the blocks' views; without blocks, one block of all the samples at the start of
/// every buffer.
#[derive(Clone, Copy)]
struct Source {
    logits: Buf<f32>,
    labels: Buf<i32>,
    weight: Option<Buf<f32>>,
    blocks: Blocks,
    /// The caller's blocks (the buffers need only hold them), or none (the buffers are
    /// exactly the batch).
    blocked: bool,
    classes: usize,
    layout: Layout,
    /// The samples of each block this call covers.
    range: (usize, usize),
    /// The caller's blocks descriptor's bytes (an input of the call), if any.
    desc: Option<Region>,
}

impl Source {
    /// A contiguous batch of `n` samples, of which `range` are covered.
    #[allow(clippy::too_many_arguments)]
    fn new(
        logits: *const f32,
        labels: *const i32,
        weight: *const f32,
        n: usize,
        classes: usize,
        layout: u32,
        range: (usize, usize),
    ) -> Result<Source, Fault> {
        let b = Blocks::contiguous(n);
        Source::in_blocks(logits, labels, weight, classes, layout, range, b, false)
    }

    /// A batch in the caller's blocks (every sample of each); [`Error::Null`] for NULL
    /// `blocks`.
    ///
    /// # Safety
    /// `blocks` is NULL or points to a valid `ghm_blocks`.
    unsafe fn blocked(
        blocks: *const Blocks,
        logits: *const f32,
        labels: *const i32,
        weight: *const f32,
        classes: usize,
        layout: u32,
    ) -> Result<Source, Fault> {
        // SAFETY: forwarded from the caller.
        let (b, desc) = unsafe { super::blocks(blocks) }?;
        let src = Source::in_blocks(logits, labels, weight, classes, layout, (0, b.len), b, true)?;
        Ok(Source {
            desc: Some(desc),
            ..src
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn in_blocks(
        logits: *const f32,
        labels: *const i32,
        weight: *const f32,
        classes: usize,
        layout: u32,
        range: (usize, usize),
        b: Blocks,
        blocked: bool,
    ) -> Result<Source, Fault> {
        let layout = Layout::try_from(layout).map_err(|_| {
            Fault::new(Error::Config, c"layout", c"is not a GHM_LAYOUT_* value")
                .value(layout as f64)
        })?;
        if classes == 0 || classes > i32::MAX as usize {
            let f = Fault::new(Error::Shape, c"num_classes", c"is not in 1..=INT32_MAX");
            return Err(f.value(classes as f64));
        }
        let huge = || {
            let f = if blocked {
                Fault::new(Error::Shape, c"blocks", c"makes a buffer's extent overflow")
            } else {
                Fault::new(Error::Shape, c"num_samples", c"times num_classes overflows")
            };
            f.value(b.len as f64)
        };
        let row = b.len.checked_mul(classes).ok_or_else(huge)?;
        b.count.checked_mul(row).ok_or_else(huge)?;
        if range.1 > b.len {
            let f = Fault::new(Error::Shape, c"sample_end", c"is more than num_samples");
            return Err(f.value(range.1 as f64));
        }
        if range.0 > range.1 {
            let f = Fault::new(Error::Shape, c"sample_begin", c"is more than sample_end");
            return Err(f.value(range.0 as f64));
        }
        let ext = |v: View, block: usize| v.extent(b.count, block).map_err(|_| huge());
        Ok(Source {
            logits: Buf::required(logits, ext(b.pred, row)?, c"logits")?,
            labels: Buf::required(labels, ext(b.target, b.len)?, c"labels")?,
            weight: Buf::optional(weight, ext(b.weight, b.len)?, c"sample_weight")?,
            blocks: b,
            blocked,
            classes,
            layout,
            range,
            desc: None,
        })
    }

    /// An output through `view`, of blocks of `block` floats: `None` for NULL.
    fn output(
        &self,
        ptr: *mut f32,
        view: View,
        block: usize,
        name: &'static CStr,
    ) -> Result<Option<Buf<f32>>, Fault> {
        let b = &self.blocks;
        if self.blocked && !view.self_disjoint(b.count, block) && !ptr.is_null() {
            let why = c"has blocks that overlap each other (stride below the block's size)";
            return Err(Fault::new(Error::Alias, c"blocks", why).value(view.stride as f64));
        }
        let extent = view.extent(b.count, block).map_err(|_| {
            Fault::new(Error::Shape, c"blocks", c"makes a buffer's extent overflow")
        })?;
        Buf::optional(ptr as *const f32, extent, name)
    }

    /// The gradient output (`len * C` floats a block, through `blocks.grad`).
    fn grad(&self, ptr: *mut f32) -> Result<Option<Buf<f32>>, Fault> {
        let row = self.blocks.len * self.classes;
        self.output(ptr, self.blocks.grad, row, c"grad")
    }

    /// The per-sample losses (`len` a block, through `blocks.loss_elems`).
    fn loss(&self, ptr: *mut f32) -> Result<Option<Buf<f32>>, Fault> {
        self.output(ptr, self.blocks.loss_elems, self.blocks.len, c"sample_loss")
    }

    /// The bytes an output's blocks cover.
    fn out_region(&self, b: Option<Buf<f32>>, view: View, block: usize) -> Option<Region> {
        b.map(|b| b.view_region(view, self.blocks.count, block))
    }

    fn named(&self) -> [Named; 3] {
        let (b, c) = (&self.blocks, self.classes);
        let w = self.weight.map(|w| w.view_region(b.weight, b.count, b.len));
        [
            (
                c"logits",
                Some(self.logits.view_region(b.pred, b.count, b.len * c)),
            ),
            (
                c"labels",
                Some(self.labels.view_region(b.target, b.count, b.len)),
            ),
            (c"sample_weight", w),
        ]
    }

    fn aligned(&self) -> bool {
        self.logits.aligned() && self.labels.aligned() && self.weight.is_none_or(|b| b.aligned())
    }

    /// The batch as the safe API's input.
    ///
    /// # Safety
    /// Aligned and valid for reads, as the C contract says.
    unsafe fn input(&self) -> Labels<'_> {
        // SAFETY: forwarded from the caller.
        unsafe {
            let mut l = Labels::new(
                self.logits.slice(),
                self.labels.slice(),
                self.classes,
                self.layout,
            );
            l.anchor_weight = self.weight.map(|w| w.slice());
            if self.blocked {
                l = l.blocks(self.blocks);
            }
            l.anchors(self.range.0..self.range.1)
        }
    }

    /// Index of logit `k` of sample `i` within a block.
    fn local(&self, i: usize, k: usize) -> usize {
        match self.layout {
            Layout::AnchorMajor => i * self.classes + k,
            Layout::ClassMajor => k * self.blocks.len + i,
        }
    }

    /// Samples per aligned copy; [`Error::Shape`] if one sample does not fit.
    fn per_chunk(&self) -> Result<usize, Error> {
        match BOUNCE_FLOATS / self.classes {
            0 => Err(Error::Shape),
            k => Ok(k),
        }
    }

    /// Calls `f` with aligned stack copies of the covered samples, a chunk of one block at a
    /// time, as a batch of their own (`grad_in`: with each chunk's gradient rows copied in
    /// too); `f` may write the chunk's gradient and per-sample losses, which are then copied
    /// out to `grad` and `loss` (if given) through their views.
    ///
    /// # Safety
    /// The buffers are valid (reads; writes for `grad` and `loss`).
    unsafe fn chunks(
        &self,
        grad: Option<Buf<f32>>,
        loss: Option<Buf<f32>>,
        grad_in: bool,
        mut f: impl FnMut(&Labels<'_>, &mut [f32], &mut [f32]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let per = self.per_chunk()?;
        let mut x = [0.0f32; BOUNCE_FLOATS];
        let mut g = [0.0f32; BOUNCE_FLOATS];
        let mut y = [0i32; BOUNCE_FLOATS];
        let mut w = [0.0f32; BOUNCE_FLOATS];
        let mut l = [0.0f32; BOUNCE_FLOATS];
        let (c, bl) = (self.classes, self.blocks);
        for b in 0..bl.count {
            let (px, pt, pw) = (bl.pred.at(b), bl.target.at(b), bl.weight.at(b));
            let (pg, pl) = (bl.grad.at(b), bl.loss_elems.at(b));
            let mut s = self.range.0;
            while s < self.range.1 {
                let k = per.min(self.range.1 - s);
                // Sample `a` of the chunk, class `j`: its index in the chunk's own layout.
                let chunk = |a: usize, j: usize| match self.layout {
                    Layout::AnchorMajor => a * c + j,
                    Layout::ClassMajor => j * k + a,
                };
                for a in 0..k {
                    // SAFETY: every index is inside its buffer's extent; valid (caller).
                    unsafe {
                        y[a] = self.labels.get(pt + s + a);
                        w[a] = self.weight.map_or(1.0, |v| v.get(pw + s + a));
                        for j in 0..c {
                            x[chunk(a, j)] = self.logits.get(px + self.local(s + a, j));
                            if let (Some(gb), true) = (grad, grad_in) {
                                g[chunk(a, j)] = gb.get(pg + self.local(s + a, j));
                            }
                        }
                    }
                }
                let mut input = Labels::new(&x[..k * c], &y[..k], c, self.layout);
                if self.weight.is_some() {
                    input = input.anchor_weight(&w[..k]);
                }
                f(&input, &mut g[..k * c], &mut l[..k])?;
                for a in 0..k {
                    // SAFETY: as above; valid for writes (caller).
                    unsafe {
                        if let Some(lb) = loss {
                            lb.set(pl + s + a, l[a]);
                        }
                        if let Some(gb) = grad {
                            for j in 0..c {
                                gb.set(pg + self.local(s + a, j), g[chunk(a, j)]);
                            }
                        }
                    }
                }
                s += k;
            }
        }
        Ok(())
    }

    /// The first bad sample, explained (the caller knows there is one): the index is the
    /// element's in the caller's buffer.
    ///
    /// # Safety
    /// The buffers are valid for reads.
    unsafe fn first_bad(&self) -> Fault {
        let bl = self.blocks;
        for b in 0..bl.count {
            for a in self.range.0..self.range.1 {
                for k in 0..self.classes {
                    let i = bl.pred.at(b) + self.local(a, k);
                    // SAFETY: inside the logits' extent; valid for reads (caller).
                    let v = unsafe { self.logits.get(i) };
                    if !v.is_finite() {
                        let f = Fault::new(Error::Input, c"logits", c"is not finite");
                        return f.at(i).value(v as f64);
                    }
                }
                let i = bl.weight.at(b) + a;
                // SAFETY: inside the weights' extent; valid for reads (caller).
                let w = self.weight.map_or(1.0, |v| unsafe { v.get(i) });
                if !(0.0..=f32::MAX).contains(&w) {
                    let f = Fault::new(Error::Input, c"sample_weight", c"is not finite and >= 0");
                    return f.at(i).value(w as f64);
                }
            }
        }
        Error::Input.into()
    }
}

/// Whether every buffer can be the safe API's slice.
fn aligned(src: &Source, grad: Option<Buf<f32>>, loss: Option<Buf<f32>>) -> bool {
    src.aligned() && grad.is_none_or(|b| b.aligned()) && loss.is_none_or(|b| b.aligned())
}

/// A refused call's error explained from its arguments.
///
/// # Safety
/// `src`'s buffers are valid for reads.
unsafe fn explain(
    e: Error,
    plan: &Plan,
    src: Option<&Source>,
    ema: Option<Option<&Ema>>,
    h: Option<&Hist>,
    w: Option<&Weights>,
) -> Fault {
    if e == Error::Shape {
        if let Some(s) = src.filter(|s| s.per_chunk().is_err()) {
            let why = c"is more than 4096 with a misaligned buffer";
            return Fault::new(e, c"num_classes", why).value(s.classes as f64);
        }
    }
    // SAFETY: valid for reads (caller).
    let first_bad = || src.map(|s| unsafe { s.first_bad() });
    super::explain_with(e, plan, first_bad, ema, h, w)
}

/// Softmax GHM defaults: bins 10, momentum 0, loss_weight 1, MEAN, grad_scale 1, overwrite,
/// skip_bad 0, no normalisation, EMA from zeros.
#[no_mangle]
pub extern "C" fn ghm_softmax_config_default() -> ghm_softmax_config {
    (&GhmSoftmax::default()).into()
}

/// The one call, for either way of passing the batch.
///
/// # Safety
/// Every non-NULL pointer is valid as the C contract says.
#[allow(clippy::too_many_arguments)]
unsafe fn one_call(
    cfg: *const ghm_softmax_config,
    ema: *mut Ema,
    src: impl FnOnce() -> Result<Source, Fault>,
    grad: *mut f32,
    loss: *mut f32,
    sample_loss: *mut f32,
    stats: *mut Stats,
) -> super::ghm_status {
    let run = || -> Result<(), Fault> {
        let (cfg, plan, cfg_region) = unsafe { config(cfg) }?;
        let src = src()?;
        let (g, l) = (src.grad(grad)?, src.loss(sample_loss)?);
        let res = Results::new(loss, stats, ema)?;
        let bl = src.blocks;
        let [a, b, c] = src.named();
        let [r0, r1, r2] = res.named();
        let gr = src.out_region(g, bl.grad, bl.len * src.classes);
        let lr = src.out_region(l, bl.loss_elems, bl.len);
        disjoint(
            &[a, b, c, (c"cfg", cfg_region), (c"blocks", src.desc)],
            &[(c"grad", gr), (c"sample_loss", lr), r0, r1, r2],
        )?;
        let samples = bl.count * (src.range.1 - src.range.0);
        // SAFETY: valid per the C contract; outputs disjoint from everything (checked).
        let core = || -> Result<(), Error> {
            unsafe {
                let mut ema_local = res.ema.map(|e| read(e));
                let mut stats_local = Stats::default();
                let value = if aligned(&src, g, l) {
                    let out = SoftmaxOut {
                        grad: g.map(|b| b.slice_mut()),
                        loss: l.map(|b| b.slice_mut()),
                        stats: Some(&mut stats_local),
                    };
                    cfg.loss_grad(ema_local.as_mut(), &src.input(), out)?
                } else {
                    bounced(
                        &cfg,
                        &plan,
                        ema_local.as_mut(),
                        &src,
                        g,
                        l,
                        &mut stats_local,
                    )?
                };
                res.write(&plan, samples, value, &stats_local, ema_local);
            }
            Ok(())
        };
        core().map_err(|e| {
            // SAFETY: valid per the C contract, and unchanged (the call failed).
            let ema = res.ema.map(|e| unsafe { read(e) });
            // SAFETY: as above.
            unsafe { explain(e, &plan, Some(&src), Some(ema.as_ref()), None, None) }
        })
    };
    status(run())
}

/// Softmax cross-entropy GHM of `num_samples` samples, in one call, fused loss and gradient.
///
/// `logits`: `num_samples * num_classes` floats in `layout` (GHM_LAYOUT_ANCHOR_MAJOR:
/// `[N][C]`, a sample's logits adjacent; GHM_LAYOUT_CLASS_MAJOR: `[C][N]`, planes of one
/// class). `labels`: one class index per sample; a label < 0 or >= num_classes is ignored (no
/// loss, no count, a gradient row of zeros). `sample_weight` (NULL: all 1) is a validity
/// mask: a weight above 0 is valid, 0 ignored (not a multiplier). Per valid sample:
/// `p = softmax(x)`, `g = 1 - p[y]` binned as GHM-C's, loss `CE = -log p[y]`, computed as
/// `log1p(S - 1) - (x[y] - max)` with `S = sum(exp(x - max))` (the maxima's terms, exactly 1,
/// counted apart so that `S - 1` is exact): accurate for easy samples, and finite for any
/// finite logits whose difference is within FLT_MAX.
///
/// Writes `grad` (NULL: not computed; same layout as the logits)
/// `= grad_scale * loss_weight * w_bin * (p - onehot(y)) / (tot + FLT_EPSILON)` (MEAN;
/// without the division for SUM and NONE; added with cfg.accumulate), `sample_loss` (NULL: not
/// written; one per sample) `= loss_weight * w_bin * CE`, `*loss` the reduced loss
/// `loss_weight * sum(w_bin * CE) / (tot + FLT_EPSILON)` (MEAN), `*stats`. `ema` may be NULL
/// when momentum is 0. On error nothing was written.
///
/// # Safety
/// Every non-NULL pointer is valid for its size: `logits`, `grad`:
/// `num_samples * num_classes` floats; `labels`, `sample_weight`, `sample_loss`:
/// `num_samples`.
#[no_mangle]
pub unsafe extern "C" fn ghm_softmax_loss_grad(
    cfg: *const ghm_softmax_config,
    ema: *mut Ema,
    logits: *const f32,
    labels: *const i32,
    sample_weight: *const f32,
    num_samples: usize,
    num_classes: usize,
    layout: u32,
    grad: *mut f32,
    loss: *mut f32,
    sample_loss: *mut f32,
    stats: *mut Stats,
) -> super::ghm_status {
    let n = num_samples;
    let src = || {
        Source::new(
            logits,
            labels,
            sample_weight,
            n,
            num_classes,
            layout,
            (0, n),
        )
    };
    // SAFETY: forwarded from the caller.
    unsafe { one_call(cfg, ema, src, grad, loss, sample_loss, stats) }
}

/// `ghm_softmax_loss_grad` over `blocks->count` blocks of `blocks->len` samples each, read and
/// written in place through the views of `blocks`: a block's `logits` (view `blocks->pred`)
/// and `grad` (view `blocks->grad`) are `len * num_classes` floats in `layout` order, its
/// `labels` (view `blocks->target`), `sample_weight` (view `blocks->weight`) and
/// `sample_loss` (view `blocks->loss_elems`) `len` values. A segmentation head's NCHW output
/// `[batch][C][h * w]` is class-major blocks of `h * w` samples, `C * h * w` floats apart.
///
/// # Safety
/// `blocks` points to a valid `ghm_blocks`; every non-NULL buffer holds its blocks.
#[no_mangle]
pub unsafe extern "C" fn ghm_softmax_loss_grad_blocks(
    cfg: *const ghm_softmax_config,
    ema: *mut Ema,
    blocks: *const Blocks,
    logits: *const f32,
    labels: *const i32,
    sample_weight: *const f32,
    num_classes: usize,
    layout: u32,
    grad: *mut f32,
    loss: *mut f32,
    sample_loss: *mut f32,
    stats: *mut Stats,
) -> super::ghm_status {
    // SAFETY: forwarded from the caller.
    let src =
        || unsafe { Source::blocked(blocks, logits, labels, sample_weight, num_classes, layout) };
    // SAFETY: forwarded from the caller.
    unsafe { one_call(cfg, ema, src, grad, loss, sample_loss, stats) }
}

/// The one call on aligned copies: accumulate every chunk, finalize, apply every chunk.
///
/// # Safety
/// The buffers are valid as the C contract says; outputs overlap nothing.
unsafe fn bounced(
    cfg: &GhmSoftmax,
    plan: &Plan,
    ema: Option<&mut Ema>,
    src: &Source,
    grad: Option<Buf<f32>>,
    loss: Option<Buf<f32>>,
    stats: &mut Stats,
) -> Result<f32, Error> {
    crate::api::check_ema(plan, ema.as_deref())?;
    src.per_chunk()?;
    if src.blocks.count == 0 || src.range.0 == src.range.1 {
        return Ok(0.0);
    }
    let mut hist = Hist::new(plan.bins as u32)?;
    // SAFETY: forwarded from the caller.
    unsafe { src.chunks(None, None, false, |s, _, _| cfg.accumulate(s, &mut hist)) }?;
    let weights = cfg.finalize(ema, &hist)?;
    // SAFETY: forwarded from the caller.
    unsafe { apply_chunks(cfg, &weights, src, grad, loss) }?;
    *stats = Stats::of(&hist, &weights);
    Ok(weights.loss as f32)
}

/// Each chunk's gradient rows and per-sample losses (the samples already checked).
///
/// # Safety
/// As [`bounced`].
unsafe fn apply_chunks(
    cfg: &GhmSoftmax,
    weights: &Weights,
    src: &Source,
    grad: Option<Buf<f32>>,
    loss: Option<Buf<f32>>,
) -> Result<(), Error> {
    if grad.is_none() && loss.is_none() {
        return Ok(());
    }
    let cfg = GhmSoftmax {
        skip_bad: true,
        ..*cfg
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        src.chunks(grad, loss, cfg.accumulate, |s, g, l| {
            let g = grad.map(|_| g);
            let l = loss.map(|_| l);
            cfg.apply(weights, s, g, l)
        })
    }
}

/// Phase 1 for either way of passing the batch.
///
/// # Safety
/// Every non-NULL pointer is valid as the C contract says.
unsafe fn accumulate(
    cfg: *const ghm_softmax_config,
    src: impl FnOnce() -> Result<Source, Fault>,
    h: *mut Hist,
) -> super::ghm_status {
    let run = || -> Result<(), Fault> {
        let hist = one_required(h as *const Hist, c"h")?;
        let (cfg, plan, cfg_region) = unsafe { config(cfg) }?;
        let src = src()?;
        let [a, b, c] = src.named();
        disjoint(
            &[a, b, c, (c"cfg", cfg_region), (c"blocks", src.desc)],
            &[(c"h", Some(hist.region()))],
        )?;
        // SAFETY: valid per the C contract; the histogram overlaps no input (checked).
        let core = || -> Result<(), Error> {
            unsafe {
                let mut acc = read(hist);
                if src.aligned() {
                    cfg.accumulate(&src.input(), &mut acc)?;
                } else {
                    if acc.bins as usize != plan.bins {
                        return Err(Error::State);
                    }
                    src.chunks(None, None, false, |s, _, _| cfg.accumulate(s, &mut acc))?;
                }
                hist.set(0, acc);
            }
            Ok(())
        };
        core().map_err(|e| {
            // SAFETY: valid per the C contract, and unchanged (the call failed).
            let h = unsafe { read(hist) };
            // SAFETY: as above.
            unsafe { explain(e, &plan, Some(&src), None, Some(&h), None) }
        })
    };
    status(run())
}

/// Phase 1 of softmax GHM: adds samples `[sample_begin, sample_end)` of the batch to `*h`
/// (buffers and sizes are the whole batch's, as in `ghm_softmax_loss_grad`).
///
/// # Safety
/// As `ghm_softmax_loss_grad`; `h` points to a valid histogram.
#[no_mangle]
pub unsafe extern "C" fn ghm_softmax_accumulate(
    cfg: *const ghm_softmax_config,
    logits: *const f32,
    labels: *const i32,
    sample_weight: *const f32,
    num_samples: usize,
    num_classes: usize,
    layout: u32,
    sample_begin: usize,
    sample_end: usize,
    h: *mut Hist,
) -> super::ghm_status {
    let range = (sample_begin, sample_end);
    let n = num_samples;
    let src = || Source::new(logits, labels, sample_weight, n, num_classes, layout, range);
    // SAFETY: forwarded from the caller.
    unsafe { accumulate(cfg, src, h) }
}

/// `ghm_softmax_accumulate` through blocked views (see `ghm_softmax_loss_grad_blocks`). A
/// chunk of a blocked batch is a range of its blocks: `count` and the `offset`s moved
/// (`offset + first * stride`).
///
/// # Safety
/// As `ghm_softmax_loss_grad_blocks`; `h` points to a valid histogram.
#[no_mangle]
pub unsafe extern "C" fn ghm_softmax_accumulate_blocks(
    cfg: *const ghm_softmax_config,
    blocks: *const Blocks,
    logits: *const f32,
    labels: *const i32,
    sample_weight: *const f32,
    num_classes: usize,
    layout: u32,
    h: *mut Hist,
) -> super::ghm_status {
    // SAFETY: forwarded from the caller.
    let src =
        || unsafe { Source::blocked(blocks, logits, labels, sample_weight, num_classes, layout) };
    // SAFETY: forwarded from the caller.
    unsafe { accumulate(cfg, src, h) }
}

/// Phase 2 of softmax GHM, once per batch: EMA update (`ema` may be NULL when momentum is 0),
/// the bin weights and gradient factors, and the batch's loss into `*w`.
///
/// # Safety
/// `h` points to a valid histogram, `w` to writable memory for a `ghm_weights`, `ema` is NULL
/// or valid.
#[no_mangle]
pub unsafe extern "C" fn ghm_softmax_finalize(
    cfg: *const ghm_softmax_config,
    ema: *mut Ema,
    h: *const Hist,
    w: *mut Weights,
) -> super::ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (plan, region) = super::config::<_, GhmSoftmax>(cfg);
        super::finalize(plan, ema, h, w, region)
    }
}

/// Phase 3 for either way of passing the batch.
///
/// # Safety
/// Every non-NULL pointer is valid as the C contract says.
unsafe fn apply(
    cfg: *const ghm_softmax_config,
    w: *const Weights,
    src: impl FnOnce() -> Result<Source, Fault>,
    grad: *mut f32,
    sample_loss: *mut f32,
) -> super::ghm_status {
    let run = || -> Result<(), Fault> {
        let wb = one_required(w, c"w")?;
        let (cfg, plan, cfg_region) = unsafe { config(cfg) }?;
        let src = src()?;
        let (g, l) = (src.grad(grad)?, src.loss(sample_loss)?);
        let bl = src.blocks;
        let gr = src.out_region(g, bl.grad, bl.len * src.classes);
        let lr = src.out_region(l, bl.loss_elems, bl.len);
        let [a, b, c] = src.named();
        disjoint(
            &[
                a,
                b,
                c,
                (c"cfg", cfg_region),
                (c"w", Some(wb.region())),
                (c"blocks", src.desc),
            ],
            &[(c"grad", gr), (c"sample_loss", lr)],
        )?;
        // SAFETY: valid per the C contract; outputs overlap nothing (checked).
        let core = || -> Result<(), Error> {
            unsafe {
                let weights = read(wb);
                if aligned(&src, g, l) {
                    let (gs, ls) = (g.map(|b| b.slice_mut()), l.map(|b| b.slice_mut()));
                    cfg.apply(&weights, &src.input(), gs, ls)?;
                } else {
                    // Refuse bad weights and bad samples before the first chunk is written.
                    weights.check(plan.bins)?;
                    src.per_chunk()?;
                    if !plan.skip_bad {
                        let mut h = Hist::new(plan.bins as u32)?;
                        src.chunks(None, None, false, |s, _, _| cfg.accumulate(s, &mut h))?;
                    }
                    apply_chunks(&cfg, &weights, &src, g, l)?;
                }
            }
            Ok(())
        };
        core().map_err(|e| {
            // SAFETY: valid per the C contract, and unchanged (the call failed).
            let w = unsafe { read(wb) };
            // SAFETY: as above.
            unsafe { explain(e, &plan, Some(&src), None, None, Some(&w)) }
        })
    };
    status(run())
}

/// Phase 3 of softmax GHM: the gradient rows and per-sample losses of samples
/// `[sample_begin, sample_end)`, written into the whole batch's `grad` and `sample_loss`
/// (pointers as `ghm_softmax_loss_grad`). Unless skip_bad is 1 the samples are checked
/// first: nothing is written if one is bad.
///
/// # Safety
/// As `ghm_softmax_loss_grad`; `w` points to valid weights.
#[no_mangle]
pub unsafe extern "C" fn ghm_softmax_apply(
    cfg: *const ghm_softmax_config,
    w: *const Weights,
    logits: *const f32,
    labels: *const i32,
    sample_weight: *const f32,
    num_samples: usize,
    num_classes: usize,
    layout: u32,
    sample_begin: usize,
    sample_end: usize,
    grad: *mut f32,
    sample_loss: *mut f32,
) -> super::ghm_status {
    let range = (sample_begin, sample_end);
    let n = num_samples;
    let src = || Source::new(logits, labels, sample_weight, n, num_classes, layout, range);
    // SAFETY: forwarded from the caller.
    unsafe { apply(cfg, w, src, grad, sample_loss) }
}

/// `ghm_softmax_apply` through blocked views (see `ghm_softmax_loss_grad_blocks`; a chunk is
/// a range of blocks, as for `ghm_softmax_accumulate_blocks`).
///
/// # Safety
/// As `ghm_softmax_loss_grad_blocks`; `w` points to valid weights.
#[no_mangle]
pub unsafe extern "C" fn ghm_softmax_apply_blocks(
    cfg: *const ghm_softmax_config,
    w: *const Weights,
    blocks: *const Blocks,
    logits: *const f32,
    labels: *const i32,
    sample_weight: *const f32,
    num_classes: usize,
    layout: u32,
    grad: *mut f32,
    sample_loss: *mut f32,
) -> super::ghm_status {
    // SAFETY: forwarded from the caller.
    let src =
        || unsafe { Source::blocked(blocks, logits, labels, sample_weight, num_classes, layout) };
    // SAFETY: forwarded from the caller.
    unsafe { apply(cfg, w, src, grad, sample_loss) }
}
