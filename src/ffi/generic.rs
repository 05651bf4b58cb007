//! The C ABI of generic GHM ("bring your own g", [`GhmG`]): the same steps as the rest of the
//! C layer (NULL checks, configuration, sizes, overlaps, then the safe API; nothing written on
//! error), over per-sample gradient norms, losses and validity weights, and gradient rows of
//! `k` floats `row_stride` apart, rescaled in place.
//!
//! Aligned buffers go to the safe API as slices. If any is misaligned, the call runs through
//! the phased API on aligned stack copies, [`BOUNCE`] samples at a time (the rows read and
//! written in place, unaligned): the factors are the same, bit for bit.

use core::ffi::CStr;

use super::{
    disjoint, one, one_required, read, region, status, Buf, Named, Region, Results, BOUNCE,
};
use crate::config::{EmaStart, Plan, Reduction};
use crate::error::Error;
use crate::fault::Fault;
use crate::generic::{self, GOut, GhmG, GradRows, RowLayout, Samples};
use crate::state::{Ema, Hist, Stats, Weights};

/// Generic GHM configuration ("bring your own g": GHM for any loss). Get the defaults from
/// `ghm_g_config_default()`.
///
/// GHM needs one number per sample: its gradient norm g, how far the sample is from being
/// learned, in [0, g_max]. The built-in losses use g = |sigmoid(x) - t| (GHM-C) and
/// g = |d| / sqrt(d^2 + mu^2), d = x - t (GHM-R), both in [0, 1]. For your own loss, take its
/// gradient with respect to what the network outputs for the sample, and a norm of it that
/// stays in [0, g_max]. Two worked examples:
///  - smooth-L1 box loss (beta): per offset d = pred - target, dl/dd = d / beta if |d| < beta,
///    else sign(d), in [-1, 1]; g = mean of the 4 |dl/dd| (in [0, 1]); the 4 dl/dd are the
///    sample's gradient row (k = 4), rescaled in place.
///  - softmax cross-entropy over C classes: p = softmax(x), gradient row p - onehot(y);
///    g = 1 - p_y = half the L1 norm of that row (in [0, 1]); the row is k = C floats. (Built
///    in, loss and gradient computed for you: `ghm_softmax_loss_grad`.)
///
/// An unbounded gradient (a raw L1 or L2 residual): g_max = a high percentile of the g seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ghm_g_config {
    /// Number of bins, 1..=GHM_MAX_BINS (default 10).
    pub bins: u32,
    /// EMA momentum in [0, 1); 0 disables the EMA (default 0).
    pub momentum: f32,
    /// Multiplies the loss and the gradient factors (default 1).
    pub loss_weight: f32,
    /// GHM_REDUCTION_* (default MEAN: the loss and the factors divided by tot + FLT_EPSILON,
    /// tot the number of valid samples).
    pub reduction: u32,
    /// Multiplies the gradient factors (default 1; -1 gives Darknet's delta).
    pub grad_scale: f32,
    /// The gradient norm that fills the last bin, positive and finite (default 1). A sample's
    /// bin is that of min(g / g_max, 1): every g >= g_max is in the last bin. Use the largest
    /// g the loss can produce if it is bounded, a high percentile of the observed g if not.
    pub g_max: f32,
    /// 1: exclude bad samples (factor 0, counted in stats.skipped); 0: fail with
    /// GHM_ERR_INPUT (default 0).
    pub skip_bad: u32,
    /// GHM_EMA_START_* (default ZERO, mmdet).
    pub ema_start: u32,
}

impl From<&GhmG> for ghm_g_config {
    fn from(c: &GhmG) -> Self {
        ghm_g_config {
            bins: c.bins,
            momentum: c.momentum,
            loss_weight: c.loss_weight,
            reduction: c.reduction as u32,
            grad_scale: c.grad_scale,
            g_max: c.g_max,
            skip_bad: c.skip_bad as u32,
            ema_start: c.ema_start as u32,
        }
    }
}

impl super::FromC<ghm_g_config> for GhmG {
    fn from_c(c: &ghm_g_config) -> Result<GhmG, Fault> {
        Ok(GhmG {
            bins: c.bins,
            momentum: c.momentum,
            loss_weight: c.loss_weight,
            reduction: super::known::<Reduction>(c.reduction, c"reduction")?,
            grad_scale: c.grad_scale,
            g_max: c.g_max,
            skip_bad: super::flag(c.skip_bad, c"skip_bad")?,
            ema_start: super::known::<EmaStart>(c.ema_start, c"ema_start")?,
            backend: None,
        })
    }
    fn bad_field(&self) -> Option<Fault> {
        GhmG::bad_field(self)
    }
}

/// The configuration behind `cfg`, validated, with its region for the overlap checks.
///
/// # Safety
/// `cfg` is NULL or points to a valid `ghm_g_config`.
unsafe fn config(cfg: *const ghm_g_config) -> Result<(GhmG, Plan, Option<Region>), Fault> {
    // SAFETY: forwarded from the caller.
    let (value, region) = unsafe { super::config_value::<_, GhmG>(cfg) };
    value.map(|(cfg, plan)| (cfg, plan, region))
}

/// The samples as C passes them.
struct Source {
    g: Buf<f32>,
    loss: Option<Buf<f32>>,
    valid: Option<Buf<f32>>,
    n: usize,
}

impl Source {
    fn new(g: *const f32, loss: *const f32, valid: *const f32, n: usize) -> Result<Source, Fault> {
        Ok(Source {
            g: Buf::required(g, n, c"g")?,
            loss: Buf::optional(loss, n, c"sample_loss")?,
            valid: Buf::optional(valid, n, c"valid")?,
            n,
        })
    }

    fn named(&self) -> [Named; 3] {
        [
            (c"g", Some(self.g.region())),
            (c"sample_loss", region(self.loss)),
            (c"valid", region(self.valid)),
        ]
    }

    fn aligned(&self) -> bool {
        self.g.aligned()
            && self.loss.is_none_or(|b| b.aligned())
            && self.valid.is_none_or(|b| b.aligned())
    }

    /// The samples as slices.
    ///
    /// # Safety
    /// Aligned ([`Source::aligned`]) and valid for reads, as the C contract says.
    unsafe fn samples(&self) -> Samples<'_> {
        // SAFETY: forwarded from the caller.
        unsafe {
            Samples {
                g: self.g.slice(),
                loss: self.loss.map(|b| b.slice()),
                valid: self.valid.map(|b| b.slice()),
            }
        }
    }

    /// Calls `f` with aligned stack copies of the samples, [`BOUNCE`] at a time, and the index
    /// of each chunk's first sample.
    ///
    /// # Safety
    /// The buffers are valid for reads.
    unsafe fn chunks(
        &self,
        mut f: impl FnMut(usize, &Samples<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut g = [0.0f32; BOUNCE];
        let mut l = [0.0f32; BOUNCE];
        let mut w = [0.0f32; BOUNCE];
        let mut start = 0;
        while start < self.n {
            let len = BOUNCE.min(self.n - start);
            for j in 0..len {
                // SAFETY: start + j < n; valid for reads (caller).
                unsafe {
                    g[j] = self.g.get(start + j);
                    l[j] = self.loss.map_or(0.0, |b| b.get(start + j));
                    w[j] = self.valid.map_or(1.0, |b| b.get(start + j));
                }
            }
            let samples = Samples {
                g: &g[..len],
                loss: self.loss.map(|_| &l[..len]),
                valid: Some(&w[..len]),
            };
            f(start, &samples)?;
            start += len;
        }
        Ok(())
    }

    /// The first bad sample, explained (the caller knows there is one).
    ///
    /// # Safety
    /// The buffers are valid for reads.
    unsafe fn first_bad(&self) -> Fault {
        let good = |v: f32| (0.0..=f32::MAX).contains(&v);
        let bad = |name: &'static CStr, i: usize, v: f32| {
            let why = c"is not finite and >= 0";
            Fault::new(Error::Input, name, why).at(i).value(v as f64)
        };
        for i in 0..self.n {
            // SAFETY: i < n; valid for reads (caller).
            let (g, l, w) = unsafe {
                (
                    self.g.get(i),
                    self.loss.map_or(0.0, |b| b.get(i)),
                    self.valid.map_or(1.0, |b| b.get(i)),
                )
            };
            if !good(g) {
                return bad(c"g", i, g);
            }
            if !good(l) {
                return bad(c"sample_loss", i, l);
            }
            if !good(w) {
                return bad(c"valid", i, w);
            }
        }
        Error::Input.into()
    }
}

/// Where each sample's gradient lies, for generic GHM: `k` floats per sample, float `j` of
/// sample `i` of block `b` at
/// `grad[b * block_stride + i * row_stride + j * elem_stride]`, `block_len` samples to a block.
/// Rows of adjacent floats: elem_stride 1, row_stride >= k. Planar rows (`[k][n]`):
/// row_stride 1, elem_stride >= n. Darknet's box deltas in place, for a layer's
/// `[batch][anchor][4 + 1 + C][h * w]` delta buffer: grad = delta, k 4, row_stride 1,
/// elem_stride h * w, block_len h * w, block_stride (5 + C) * h * w (the samples in image,
/// anchor, position order). No float may belong to two samples, nor be two floats of one
/// sample (GHM_ERR_SHAPE).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ghm_g_rows {
    /// Float 0 of sample 0's gradient (multiplied in place by the sample's factor).
    pub grad: *mut f32,
    /// Floats per sample, at least 1.
    pub k: usize,
    /// Floats from one sample's first float to the next sample's (in a block).
    pub row_stride: usize,
    /// Floats from one float of a sample to its next.
    pub elem_stride: usize,
    /// Samples per block; 0: one block of all the samples.
    pub block_len: usize,
    /// Floats from one block's first float to the next block's.
    pub block_stride: usize,
}

/// Whether the samples, the rows and the factors can all be the safe API's slices.
fn aligned(src: &Source, rows: Option<Rows>, factor: Option<Buf<f32>>) -> bool {
    src.aligned() && rows.is_none_or(|r| r.buf.aligned()) && factor.is_none_or(|f| f.aligned())
}

/// Gradient rows as C passes them (see [`ghm_g_rows`]).
#[derive(Clone, Copy)]
struct Rows {
    buf: Buf<f32>,
    layout: RowLayout,
    n: usize,
    /// The descriptor's own bytes (an input of the call).
    desc: Region,
}

impl Rows {
    /// `None` for NULL. [`Error::Shape`] if `k` is 0, two samples share a float (within a
    /// block, neither stride steps over all the other covers; or blocks closer than a block's
    /// extent) or the extent overflows.
    ///
    /// # Safety
    /// `rows` is NULL or points to a valid `ghm_g_rows`.
    unsafe fn new(rows: *const ghm_g_rows, n: usize) -> Result<Option<Rows>, Fault> {
        let Some(b) = one(rows, c"rows")? else {
            return Ok(None);
        };
        // SAFETY: valid per the C contract.
        let r = unsafe { read(b) };
        let layout = RowLayout {
            k: r.k,
            stride: r.row_stride,
            elem_stride: r.elem_stride,
            block_len: r.block_len,
            block_stride: r.block_stride,
        };
        let extent = layout.extent(n).map_err(|(field, v, why)| {
            Fault::new(Error::Shape, c"rows", why)
                .field(field)
                .value(v as f64)
        })?;
        let buf =
            Buf::required(r.grad as *const f32, extent, c"rows").map_err(|f| f.field(c"grad"))?;
        Ok(Some(Rows {
            buf,
            layout,
            n,
            desc: b.region(),
        }))
    }

    /// The bytes the rows cover, for the overlap checks: exact for one block of rows of
    /// adjacent floats or of planar rows, and for blocks of planar rows whose floats are
    /// adjacent (Darknet's); otherwise a block is taken as the whole span it reaches, gaps
    /// included.
    fn region(&self) -> Region {
        use crate::view::View;
        let RowLayout {
            k,
            stride: s,
            elem_stride: e,
            ..
        } = self.layout;
        let (len, count) = self.layout.block_shape(self.n);
        if self.n == 0 {
            return self.buf.view_region(View::new(0, 1), 0, 0);
        }
        if count == 1 {
            if len == 1 || k == 1 || e == 1 || s > (k - 1) * e {
                return self.buf.view_region(View::new(0, s), len, (k - 1) * e + 1);
            }
            return self.buf.view_region(View::new(0, e), k, (len - 1) * s + 1);
        }
        let block = (len - 1) * s + (k - 1) * e + 1;
        let view = View::new(0, self.layout.block_stride);
        self.buf.view_region(view, count, block)
    }

    /// The rows as the safe API's.
    ///
    /// # Safety
    /// Aligned, valid for reads and writes, overlapping nothing else in use.
    unsafe fn rows<'a>(self) -> GradRows<'a> {
        // SAFETY: forwarded from the caller.
        GradRows::with_layout(unsafe { self.buf.slice_mut() }, self.layout)
    }

    /// Multiplies the rows of samples `first..` by `factors`, unaligned, as
    /// [`GradRows`] does.
    ///
    /// # Safety
    /// Valid for reads and writes; the samples are inside the rows.
    unsafe fn rescale(&self, first: usize, factors: &[f32]) {
        for (i, &f) in factors.iter().enumerate() {
            for j in 0..self.layout.k {
                let x = self.layout.float(first + i, j);
                // SAFETY: inside the rows' extent (caller); valid (caller).
                unsafe { self.buf.set(x, generic::scaled(self.buf.get(x), f)) };
            }
        }
    }
}

/// A refused call's error explained from its arguments (see `ffi::explain_with`).
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
    // SAFETY: valid for reads (caller).
    let first_bad = || src.map(|s| unsafe { s.first_bad() });
    super::explain_with(e, plan, first_bad, ema, h, w)
}

/// Generic GHM defaults: bins 10, momentum 0, loss_weight 1, MEAN, grad_scale 1, g_max 1,
/// skip_bad 0, EMA from zeros.
#[no_mangle]
pub extern "C" fn ghm_g_config_default() -> ghm_g_config {
    (&GhmG::default()).into()
}

/// Generic GHM ("bring your own g") of `n` samples, in one call: bins each sample's gradient
/// norm `g[i]` (finite, >= 0; the bin of min(g / g_max, 1)), updates the EMA, and multiplies
/// each sample's gradient row in place by its factor
/// `grad_scale * loss_weight * w_bin / (tot + FLT_EPSILON)` (MEAN; without the division for
/// SUM and NONE; 0 for invalid and skipped samples, whose rows become +0).
///
/// `sample_loss` (NULL: no loss; `*loss` is then 0) holds each sample's unweighted loss
/// (finite, >= 0), `valid` (NULL: all valid) its validity weight (> 0 valid, 0 excluded: a
/// mask, not a multiplier). `rows` (NULL: none) says where each sample's gradient lies (see
/// `ghm_g_rows`: adjacent floats, planar rows, blocks inside a trainer's delta buffer). `factor` (NULL:
/// not written) receives each sample's factor; `loss` the reduced weighted loss
/// `loss_weight * sum(w_i * l_i)` (/ (tot + FLT_EPSILON) for MEAN); `stats` what the call did.
/// `ema` may be NULL when momentum is 0. On error nothing was written.
///
/// # Safety
/// Every non-NULL pointer is valid for its size: `g`, `sample_loss`, `valid`, `factor`: `n`
/// floats; `rows` one `ghm_g_rows`, whose `grad` holds every sample's floats.
#[no_mangle]
pub unsafe extern "C" fn ghm_g_loss_grad(
    cfg: *const ghm_g_config,
    ema: *mut Ema,
    g: *const f32,
    sample_loss: *const f32,
    valid: *const f32,
    n: usize,
    rows: *const ghm_g_rows,
    factor: *mut f32,
    loss: *mut f32,
    stats: *mut Stats,
) -> super::ghm_status {
    let run = || -> Result<(), Fault> {
        let (cfg, plan, cfg_region) = unsafe { config(cfg) }?;
        let src = Source::new(g, sample_loss, valid, n)?;
        let rows = unsafe { Rows::new(rows, n) }?;
        let factor = Buf::optional(factor as *const f32, n, c"factor")?;
        let res = Results::new(loss, stats, ema)?;
        let [a, b, c] = src.named();
        let [r0, r1, r2] = res.named();
        disjoint(
            &[
                a,
                b,
                c,
                (c"cfg", cfg_region),
                (c"rows", rows.map(|r| r.desc)),
            ],
            &[
                (c"rows", rows.map(|r| r.region())),
                (c"factor", region(factor)),
                r0,
                r1,
                r2,
            ],
        )?;
        // SAFETY: valid per the C contract; outputs disjoint from everything (checked).
        let core = || -> Result<(), Error> {
            unsafe {
                let mut ema_local = res.ema.map(|e| read(e));
                let mut stats_local = Stats::default();
                let value = if aligned(&src, rows, factor) {
                    let out = GOut {
                        rows: rows.map(|r| r.rows()),
                        factor: factor.map(|f| f.slice_mut()),
                        stats: Some(&mut stats_local),
                    };
                    cfg.loss_grad(ema_local.as_mut(), &src.samples(), out)?
                } else {
                    bounced(
                        &cfg,
                        &plan,
                        ema_local.as_mut(),
                        &src,
                        rows,
                        factor,
                        &mut stats_local,
                    )?
                };
                res.write(&plan, n, value, &stats_local, ema_local);
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

/// The one call on aligned copies: accumulate every chunk, finalize, then each chunk's
/// factors and rows. Returns the loss.
///
/// # Safety
/// The buffers are valid as the C contract says; outputs overlap nothing.
unsafe fn bounced(
    cfg: &GhmG,
    plan: &Plan,
    ema: Option<&mut Ema>,
    src: &Source,
    rows: Option<Rows>,
    factor: Option<Buf<f32>>,
    stats: &mut Stats,
) -> Result<f32, Error> {
    crate::api::check_ema(plan, ema.as_deref())?;
    if src.n == 0 {
        return Ok(0.0);
    }
    let mut hist = Hist::new(plan.bins as u32)?;
    // SAFETY: forwarded from the caller.
    unsafe { src.chunks(|_, s| cfg.accumulate(s, &mut hist)) }?;
    let weights = cfg.finalize(ema, &hist)?;
    if rows.is_some() || factor.is_some() {
        // SAFETY: forwarded from the caller.
        unsafe { apply_chunks(cfg, &weights, src, rows, factor) }?;
    }
    *stats = Stats::of(&hist, &weights);
    Ok(weights.loss as f32)
}

/// Each chunk's factors (the samples already checked, or skipped), written to `factor` and
/// applied to `rows`, unaligned.
///
/// # Safety
/// As [`bounced`].
unsafe fn apply_chunks(
    cfg: &GhmG,
    weights: &Weights,
    src: &Source,
    rows: Option<Rows>,
    factor: Option<Buf<f32>>,
) -> Result<(), Error> {
    let cfg = GhmG {
        skip_bad: true,
        ..*cfg
    };
    let mut f = [0.0f32; BOUNCE];
    // SAFETY: forwarded from the caller; every index is a sample's.
    unsafe {
        src.chunks(|start, s| {
            let f = &mut f[..s.g.len()];
            cfg.apply(weights, s, None, Some(f))?;
            if let Some(out) = factor {
                for (j, &v) in f.iter().enumerate() {
                    out.set(start + j, v);
                }
            }
            if let Some(rows) = rows {
                rows.rescale(start, f);
            }
            Ok(())
        })
    }
}

/// Phase 1 of generic GHM: adds a chunk of `n` samples to `*h` (`sample_loss` and `valid` as
/// in `ghm_g_loss_grad`).
///
/// # Safety
/// `g`, `sample_loss`, `valid`: NULL or valid for `n` floats; `h` points to a valid histogram.
#[no_mangle]
pub unsafe extern "C" fn ghm_g_accumulate(
    cfg: *const ghm_g_config,
    g: *const f32,
    sample_loss: *const f32,
    valid: *const f32,
    n: usize,
    h: *mut Hist,
) -> super::ghm_status {
    let run = || -> Result<(), Fault> {
        let hist = one_required(h as *const Hist, c"h")?;
        let (cfg, plan, cfg_region) = unsafe { config(cfg) }?;
        let src = Source::new(g, sample_loss, valid, n)?;
        let [a, b, c] = src.named();
        disjoint(
            &[a, b, c, (c"cfg", cfg_region)],
            &[(c"h", Some(hist.region()))],
        )?;
        // SAFETY: valid per the C contract; the histogram overlaps no input (checked).
        let core = || -> Result<(), Error> {
            unsafe {
                let mut acc = read(hist);
                if src.aligned() {
                    cfg.accumulate(&src.samples(), &mut acc)?;
                } else {
                    if acc.bins as usize != plan.bins {
                        return Err(Error::State);
                    }
                    src.chunks(|_, s| cfg.accumulate(s, &mut acc))?;
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

/// Phase 2 of generic GHM, once per batch: EMA update (`ema` may be NULL when momentum is 0),
/// the weights, the gradient factors per bin and the batch's loss into `*w`.
///
/// # Safety
/// `h` points to a valid histogram, `w` to writable memory for a `ghm_weights`, `ema` is NULL
/// or valid.
#[no_mangle]
pub unsafe extern "C" fn ghm_g_finalize(
    cfg: *const ghm_g_config,
    ema: *mut Ema,
    h: *const Hist,
    w: *mut Weights,
) -> super::ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (plan, region) = super::config::<_, GhmG>(cfg);
        super::finalize(plan, ema, h, w, region)
    }
}

/// Phase 3 of generic GHM: multiplies the gradient rows of a chunk of `n` samples by their
/// factors (and writes the factors to `factor`, if not NULL). Unless skip_bad is 1 the chunk
/// is checked first: nothing is written if a sample is bad. Pass the chunk's `sample_loss`
/// as to `ghm_g_accumulate` (or NULL): with skip_bad, a sample whose loss is bad gets factor
/// 0, as accumulate excluded it. Pointers as `ghm_g_loss_grad`.
///
/// # Safety
/// As `ghm_g_loss_grad`; `w` points to valid weights.
#[no_mangle]
pub unsafe extern "C" fn ghm_g_apply(
    cfg: *const ghm_g_config,
    w: *const Weights,
    g: *const f32,
    sample_loss: *const f32,
    valid: *const f32,
    n: usize,
    rows: *const ghm_g_rows,
    factor: *mut f32,
) -> super::ghm_status {
    let run = || -> Result<(), Fault> {
        let wb = one_required(w, c"w")?;
        let (cfg, plan, cfg_region) = unsafe { config(cfg) }?;
        let src = Source::new(g, sample_loss, valid, n)?;
        let rows = unsafe { Rows::new(rows, n) }?;
        let factor = Buf::optional(factor as *const f32, n, c"factor")?;
        let [a, b, c] = src.named();
        disjoint(
            &[a, b, c, (c"cfg", cfg_region), (c"w", Some(wb.region()))],
            &[
                (c"grad", rows.map(|r| r.region())),
                (c"factor", region(factor)),
            ],
        )?;
        // SAFETY: valid per the C contract; outputs overlap nothing (checked).
        let core = || -> Result<(), Error> {
            unsafe {
                let weights = read(wb);
                if aligned(&src, rows, factor) {
                    let rows = rows.map(|r| r.rows());
                    cfg.apply(
                        &weights,
                        &src.samples(),
                        rows,
                        factor.map(|f| f.slice_mut()),
                    )?;
                } else {
                    // Refuse bad weights and bad samples before the first chunk is written.
                    weights.check(plan.bins)?;
                    if !plan.skip_bad {
                        let mut h = Hist::new(plan.bins as u32)?;
                        src.chunks(|_, s| cfg.accumulate(s, &mut h))?;
                    }
                    if rows.is_some() || factor.is_some() {
                        apply_chunks(&cfg, &weights, &src, rows, factor)?;
                    }
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
