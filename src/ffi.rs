//! The C ABI of docs/contract.md section 3: a thin layer over the safe API.
//!
//! Every entry point does the same few things, in this order:
//! 1. required pointers non-NULL (`GHM_ERR_NULL`); data pointers may be NULL only when the
//!    element count is 0;
//! 2. the C configuration converted to the Rust one, every enum-like field checked
//!    (`GHM_ERR_CONFIG`; booleans must be 0 or 1);
//! 3. byte sizes computed with overflow checks (`GHM_ERR_SHAPE`);
//! 4. every output region disjoint from every input and every other output
//!    (`GHM_ERR_ALIAS`);
//! 5. caller structs (EMA, histogram, weights) read with unaligned reads into locals, the
//!    safe API called, and results written back only on success: an error writes nothing.
//!
//! Data buffers of any alignment are accepted. Aligned ones are handed to the safe API as
//! slices. If any is misaligned (which a Rust slice may not be), the call runs through the
//! phased API on aligned stack copies, `BOUNCE` (256) elements at a time: accumulate every chunk,
//! finalize once, apply every chunk. The phased API's guarantee makes this bit-identical to
//! the direct call for gradients and within 1 ulp for the loss.
//!
//! No function allocates. None can unwind into C: no panic is reachable, and a Rust panic
//! inside an `extern "C"` function aborts rather than unwinds.
#![allow(non_camel_case_types)]

use core::ffi::{c_char, CStr};
use core::mem::size_of;
use core::ops::Range;
use core::ptr;

use crate::api::{self, BadPart, Out};
use crate::backend::Backend;
use crate::config::{
    EmaStart, GhmC, GhmR, Input, Layout, Loss, Normalize, Plan, Planned, Reduction, MAX_BINS,
};
use crate::error::Error;
use crate::fault::{self, Fault, Fixed};
use crate::source::Batch;
use crate::state::{Ema, Hist, Stats, Weights};
use crate::view::{Blocks, View};

mod generic;
mod log;
mod softmax;
pub use generic::{
    ghm_g_accumulate, ghm_g_apply, ghm_g_config, ghm_g_config_default, ghm_g_finalize,
    ghm_g_loss_grad, ghm_g_rows,
};
pub use log::{ghm_log_stats, ghm_log_weights};
pub use softmax::{
    ghm_softmax_accumulate, ghm_softmax_accumulate_blocks, ghm_softmax_apply,
    ghm_softmax_apply_blocks, ghm_softmax_config, ghm_softmax_config_default, ghm_softmax_finalize,
    ghm_softmax_loss_grad, ghm_softmax_loss_grad_blocks,
};

/// No elements.
const EMPTY: Batch<'static> = Batch::Dense {
    pred: &[],
    target: &[],
    weight: None,
    blocks: None,
};

/// Status of a call: `GHM_OK` (0) or a negative `GHM_ERR_*` code.
pub type ghm_status = i32;

/// Success.
pub const GHM_OK: ghm_status = 0;
/// A required pointer was NULL.
pub const GHM_ERR_NULL: ghm_status = -1;
/// Invalid configuration (bins, momentum, mu, loss_weight, grad_scale, or an enum value).
pub const GHM_ERR_CONFIG: ghm_status = -2;
/// EMA, histogram or weights missing, or made for another bin count.
pub const GHM_ERR_STATE: ghm_status = -3;
/// A bad input element (and skip_bad is 0).
pub const GHM_ERR_INPUT: ghm_status = -4;
/// An output buffer overlaps an input or another output.
pub const GHM_ERR_ALIAS: ghm_status = -5;
/// Sizes whose product overflows, or an anchor range out of bounds.
pub const GHM_ERR_SHAPE: ghm_status = -6;

/// `reduction`: `lw * sum(w * l) / (tot + FLT_EPSILON)`.
pub const GHM_REDUCTION_MEAN: u32 = 0;
/// `reduction`: `lw * sum(w * l)`.
pub const GHM_REDUCTION_SUM: u32 = 1;
/// `reduction`: per-element losses (the returned loss is their sum).
pub const GHM_REDUCTION_NONE: u32 = 2;
/// `input`: logits.
pub const GHM_INPUT_LOGITS: u32 = 0;
/// `input`: probabilities (gradients still with respect to the logit).
pub const GHM_INPUT_PROBS: u32 = 1;
/// `layout`: `[N][C]`, the classes of an anchor adjacent (mmdet).
pub const GHM_LAYOUT_ANCHOR_MAJOR: u32 = 0;
/// `layout`: `[C][N]`, one plane per class (Darknet-style maps).
pub const GHM_LAYOUT_CLASS_MAJOR: u32 = 1;
/// `normalize`: mmdet's weights as they are.
pub const GHM_NORMALIZE_NONE: u32 = 0;
/// `normalize`: weights scaled so that the batch's total |gradient| is the plain loss's.
pub const GHM_NORMALIZE_GRAD_MASS: u32 = 1;
/// `ema_start`: the EMA starts from zeros (mmdet).
pub const GHM_EMA_START_ZERO: u32 = 0;
/// `ema_start`: a bin whose average is still 0 takes its count as it is.
pub const GHM_EMA_START_FIRST_COUNT: u32 = 1;

// The C values are literals (cbindgen copies them into the header); they must stay those of
// the Rust enums.
const _: () = {
    assert!(GHM_ERR_NULL == Error::Null as i32 && GHM_ERR_CONFIG == Error::Config as i32);
    assert!(GHM_ERR_STATE == Error::State as i32 && GHM_ERR_INPUT == Error::Input as i32);
    assert!(GHM_ERR_ALIAS == Error::Alias as i32 && GHM_ERR_SHAPE == Error::Shape as i32);
    assert!(GHM_REDUCTION_MEAN == Reduction::Mean as u32);
    assert!(GHM_REDUCTION_SUM == Reduction::Sum as u32);
    assert!(GHM_REDUCTION_NONE == Reduction::None as u32);
    assert!(GHM_INPUT_LOGITS == Input::Logits as u32 && GHM_INPUT_PROBS == Input::Probs as u32);
    assert!(GHM_LAYOUT_ANCHOR_MAJOR == Layout::AnchorMajor as u32);
    assert!(GHM_LAYOUT_CLASS_MAJOR == Layout::ClassMajor as u32);
    assert!(GHM_NORMALIZE_NONE == Normalize::None as u32);
    assert!(GHM_NORMALIZE_GRAD_MASS == Normalize::GradMass as u32);
    assert!(GHM_EMA_START_ZERO == EmaStart::Zero as u32);
    assert!(GHM_EMA_START_FIRST_COUNT == EmaStart::FirstCount as u32);
    assert!(MAX_BINS == 128);
};

/// GHM-C configuration. Get the defaults from `ghm_c_config_default()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ghm_c_config {
    /// Number of bins, 1..=GHM_MAX_BINS (default 10).
    pub bins: u32,
    /// EMA momentum in [0, 1); 0 disables the EMA (default 0).
    pub momentum: f32,
    /// Multiplies loss, loss elements and gradient (default 1).
    pub loss_weight: f32,
    /// GHM_REDUCTION_* (default MEAN).
    pub reduction: u32,
    /// The gradient written is grad_scale * dL/dx (default 1; -1 gives Darknet's delta).
    pub grad_scale: f32,
    /// 1: add into the gradient buffer; 0: overwrite it (default 0).
    pub accumulate: u32,
    /// 1: exclude bad elements and count them; 0: fail with GHM_ERR_INPUT (default 0).
    /// 1 is also faster when only grad is asked for and overwritten (see the README).
    pub skip_bad: u32,
    /// GHM_INPUT_* (default LOGITS).
    pub input: u32,
    /// GHM_NORMALIZE_* (default NONE, mmdet). GHM_NORMALIZE_GRAD_MASS scales the weights so
    /// that the batch's total |gradient| equals plain BCE's: a trainer keeps its learning
    /// rate (see the README's Darknet recipe).
    pub normalize: u32,
    /// GHM_EMA_START_* (default ZERO, mmdet). GHM_EMA_START_FIRST_COUNT: a bin whose average
    /// is still 0 takes its count as it is instead of blending it with the zero.
    pub ema_start: u32,
}

/// GHM-R configuration. Get the defaults from `ghm_r_config_default()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ghm_r_config {
    /// Number of bins, 1..=GHM_MAX_BINS (default 10).
    pub bins: u32,
    /// EMA momentum in [0, 1); 0 disables the EMA (default 0).
    pub momentum: f32,
    /// The ASL1 parameter, finite and at least 1.0842022e-19 (2^-63; below it mu * mu
    /// underflows f32 and an exact prediction would get g = 0/0) (default 0.02).
    pub mu: f32,
    /// Multiplies loss, loss elements and gradient (default 1).
    pub loss_weight: f32,
    /// GHM_REDUCTION_* (default MEAN).
    pub reduction: u32,
    /// The gradient written is grad_scale * dL/dx (default 1).
    pub grad_scale: f32,
    /// 1: add into the gradient buffer; 0: overwrite it (default 0).
    pub accumulate: u32,
    /// 1: exclude bad elements and count them; 0: fail with GHM_ERR_INPUT (default 0).
    pub skip_bad: u32,
    /// GHM_NORMALIZE_* (default NONE): as in ghm_c_config, against plain ASL1.
    pub normalize: u32,
    /// GHM_EMA_START_* (default ZERO): as in ghm_c_config.
    pub ema_start: u32,
}

fn flag(v: u32, field: &'static CStr) -> Result<bool, Fault> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(cfg_fault(field, v, c"is not 0 or 1")),
    }
}

/// A configuration field out of range.
fn cfg_fault(field: &'static CStr, v: u32, why: &'static CStr) -> Fault {
    Fault::new(Error::Config, c"cfg", why)
        .field(field)
        .value(v as f64)
}

/// An enum-like configuration field converted, or explained.
fn known<T: TryFrom<u32>>(v: u32, field: &'static CStr) -> Result<T, Fault> {
    T::try_from(v).map_err(|_| cfg_fault(field, v, c"is not one of its GHM_* values"))
}

/// A C configuration as the Rust one, with its faults explained (field by field).
trait FromC<C>: Sized + Planned {
    fn from_c(c: &C) -> Result<Self, Fault>;
    /// The first field [`Planned::plan`] refuses, explained.
    fn bad_field(&self) -> Option<Fault>;
}

impl FromC<ghm_c_config> for GhmC {
    fn from_c(c: &ghm_c_config) -> Result<GhmC, Fault> {
        Ok(GhmC {
            bins: c.bins,
            momentum: c.momentum,
            loss_weight: c.loss_weight,
            reduction: known(c.reduction, c"reduction")?,
            grad_scale: c.grad_scale,
            accumulate: flag(c.accumulate, c"accumulate")?,
            skip_bad: flag(c.skip_bad, c"skip_bad")?,
            input: known(c.input, c"input")?,
            normalize: known(c.normalize, c"normalize")?,
            ema_start: known(c.ema_start, c"ema_start")?,
            backend: None,
        })
    }
    fn bad_field(&self) -> Option<Fault> {
        GhmC::bad_field(self)
    }
}

impl FromC<ghm_r_config> for GhmR {
    fn from_c(c: &ghm_r_config) -> Result<GhmR, Fault> {
        Ok(GhmR {
            bins: c.bins,
            momentum: c.momentum,
            mu: c.mu,
            loss_weight: c.loss_weight,
            reduction: known(c.reduction, c"reduction")?,
            grad_scale: c.grad_scale,
            accumulate: flag(c.accumulate, c"accumulate")?,
            skip_bad: flag(c.skip_bad, c"skip_bad")?,
            normalize: known(c.normalize, c"normalize")?,
            ema_start: known(c.ema_start, c"ema_start")?,
            backend: None,
        })
    }
    fn bad_field(&self) -> Option<Fault> {
        GhmR::bad_field(self)
    }
}

impl TryFrom<&ghm_c_config> for GhmC {
    type Error = Error;
    fn try_from(c: &ghm_c_config) -> Result<GhmC, Error> {
        let cfg = GhmC::from_c(c).map_err(|f| f.error)?;
        cfg.validate()?;
        Ok(cfg)
    }
}

impl TryFrom<&ghm_r_config> for GhmR {
    type Error = Error;
    fn try_from(c: &ghm_r_config) -> Result<GhmR, Error> {
        let cfg = GhmR::from_c(c).map_err(|f| f.error)?;
        cfg.validate()?;
        Ok(cfg)
    }
}

impl From<&GhmC> for ghm_c_config {
    fn from(c: &GhmC) -> Self {
        ghm_c_config {
            bins: c.bins,
            momentum: c.momentum,
            loss_weight: c.loss_weight,
            reduction: c.reduction as u32,
            grad_scale: c.grad_scale,
            accumulate: c.accumulate as u32,
            skip_bad: c.skip_bad as u32,
            input: c.input as u32,
            normalize: c.normalize as u32,
            ema_start: c.ema_start as u32,
        }
    }
}

impl From<&GhmR> for ghm_r_config {
    fn from(c: &GhmR) -> Self {
        ghm_r_config {
            bins: c.bins,
            momentum: c.momentum,
            mu: c.mu,
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

// ---------------------------------------------------------------------------------------------
// Pointers from C

/// A buffer of `len` `T`s from C; NULL is allowed only for `len == 0` (and for optional ones).
struct Buf<T> {
    ptr: *const T,
    len: usize,
}

impl<T> Clone for Buf<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Buf<T> {}

/// The bytes a buffer (or a view of one) covers, for the overlap checks: `count` blocks of
/// `block` bytes, `stride` bytes apart from `start`. A plain buffer is one block.
#[derive(Clone, Copy, Debug)]
struct Region {
    start: usize,
    block: usize,
    stride: usize,
    count: usize,
}

impl Region {
    /// `bytes` bytes from `start`.
    fn whole(start: usize, bytes: usize) -> Region {
        Region {
            start,
            block: bytes,
            stride: 0,
            count: 1,
        }
    }

    fn is_empty(&self) -> bool {
        self.count == 0 || self.block == 0
    }

    /// One past the last byte (the buffer's extent, checked not to overflow when it was made).
    fn end(&self) -> usize {
        self.start + (self.count - 1) * self.stride + self.block
    }

    /// Whether the two share a byte: exact for strided views, so that two interleaved views
    /// of one buffer (Darknet's objectness and class blocks) are disjoint. Linear in the
    /// smaller block count.
    fn overlaps(&self, o: &Region) -> bool {
        if self.is_empty() || o.is_empty() || self.start >= o.end() || o.start >= self.end() {
            return false;
        }
        let (few, many) = if self.count <= o.count {
            (self, o)
        } else {
            (o, self)
        };
        (0..few.count).any(|i| {
            let s = few.start + i * few.stride;
            many.hits(s, s + few.block)
        })
    }

    /// Whether a block of `self` shares a byte with `[s, e)` (`s < e`).
    fn hits(&self, s: usize, e: usize) -> bool {
        if self.count == 1 || self.stride < self.block {
            // One block, or blocks that touch or overlap: one interval.
            return s < self.end() && self.start < e;
        }
        // Blocks `j` with start + j * stride < e and start + j * stride + block > s.
        let (start, stride) = (self.start as i128, self.stride as i128);
        let above = e as i128 - start; // j * stride < above
        if above <= 0 {
            return false;
        }
        let below = s as i128 - start - self.block as i128; // j * stride > below
        let first = if below < 0 { 0 } else { below / stride + 1 };
        let last = ((above - 1) / stride).min(self.count as i128 - 1);
        first <= last
    }
}

impl<T> Buf<T> {
    /// A required buffer: NULL is an error unless it is empty.
    fn required(ptr: *const T, len: usize, name: &'static CStr) -> Result<Buf<T>, Fault> {
        if ptr.is_null() && len > 0 {
            return Err(Fault::new(Error::Null, name, c"is NULL but has elements"));
        }
        Buf::optional(ptr, len, name).map(|b| b.unwrap_or(Buf { ptr, len: 0 }))
    }

    /// An optional buffer: `None` for NULL.
    fn optional(ptr: *const T, len: usize, name: &'static CStr) -> Result<Option<Buf<T>>, Fault> {
        if ptr.is_null() {
            return Ok(None);
        }
        let huge =
            Fault::new(Error::Shape, name, c"would reach past the address space").value(len as f64);
        let bytes = len.checked_mul(size_of::<T>()).ok_or(huge)?;
        let end = (ptr as usize).checked_add(bytes).ok_or(huge)?;
        if bytes > isize::MAX as usize || end < ptr as usize {
            return Err(huge);
        }
        Ok(Some(Buf { ptr, len }))
    }

    fn region(&self) -> Region {
        Region::whole(self.ptr as usize, self.len * size_of::<T>())
    }

    /// The bytes that `count` blocks of `block` elements through `view` cover (inside the
    /// buffer, which was made with their extent).
    fn view_region(&self, view: View, count: usize, block: usize) -> Region {
        if count == 0 || block == 0 {
            return Region::whole(self.ptr as usize, 0);
        }
        let t = size_of::<T>();
        // One block's stride is never used (it may be anything, even beyond the address
        // space: found by fuzzing); more blocks' fit the buffer, which was checked.
        let stride = if count == 1 { block } else { view.stride };
        Region {
            start: self.ptr as usize + view.offset * t,
            block: block * t,
            stride: stride * t,
            count,
        }
    }

    fn aligned(&self) -> bool {
        self.ptr.is_null() || self.ptr.is_aligned()
    }

    /// The buffer as a slice.
    ///
    /// # Safety
    /// `self` must be aligned (or empty) and, as the C contract requires, valid for reads of
    /// `len` elements for `'a`.
    unsafe fn slice<'a>(&self) -> &'a [T] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: non-null (checked at construction for len > 0), aligned (caller), valid for
        // `len` reads (the C caller's contract), size <= isize::MAX (checked).
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The buffer as a mutable slice.
    ///
    /// # Safety
    /// As [`Buf::slice`], valid for writes too, and not overlapping any other buffer in use
    /// (checked by [`disjoint`]).
    unsafe fn slice_mut<'a>(&self) -> &'a mut [T] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as `slice`; exclusive because outputs overlap nothing else (checked).
        unsafe { core::slice::from_raw_parts_mut(self.ptr as *mut T, self.len) }
    }

    /// Element `i`, read without alignment requirements.
    ///
    /// # Safety
    /// `i < len` and the buffer valid for reads.
    unsafe fn get(&self, i: usize) -> T {
        // SAFETY: in bounds (caller); unaligned reads are allowed by read_unaligned.
        unsafe { ptr::read_unaligned(self.ptr.add(i)) }
    }

    /// Writes element `i` without alignment requirements.
    ///
    /// # Safety
    /// `i < len` and the buffer valid for writes.
    unsafe fn set(&self, i: usize, v: T) {
        // SAFETY: in bounds (caller); unaligned writes are allowed by write_unaligned.
        unsafe { ptr::write_unaligned(self.ptr.add(i) as *mut T, v) }
    }
}

/// One struct from C, as a buffer of one (for alias checks) and read/written unaligned.
fn one<T>(ptr: *const T, name: &'static CStr) -> Result<Option<Buf<T>>, Fault> {
    Buf::optional(ptr, 1, name)
}

/// A required struct: [`Error::Null`] for NULL.
fn one_required<T>(ptr: *const T, name: &'static CStr) -> Result<Buf<T>, Fault> {
    one(ptr, name)?.ok_or(Fault::new(Error::Null, name, c"is NULL"))
}

/// A region with the name of its argument.
type Named = (&'static CStr, Option<Region>);

/// [`Error::Alias`] unless every output region is disjoint from every input and every other
/// output (the fault names the output and what it overlaps).
fn disjoint(inputs: &[Named], outputs: &[Named]) -> Result<(), Fault> {
    for (i, (name, o)) in outputs.iter().enumerate() {
        let Some(o) = o else { continue };
        let others = inputs.iter().chain(&outputs[i + 1..]);
        if let Some((other, _)) = others
            .clone()
            .find(|(_, r)| r.is_some_and(|r| r.overlaps(o)))
        {
            return Err(Fault::new(Error::Alias, name, c"overlaps").other(other));
        }
    }
    Ok(())
}

fn region<T>(b: Option<Buf<T>>) -> Option<Region> {
    b.map(|b| b.region())
}

/// Reads a caller struct (any alignment).
///
/// # Safety
/// `b` points to a valid `T`.
unsafe fn read<T>(b: Buf<T>) -> T {
    // SAFETY: valid for reads (caller); read_unaligned has no alignment requirement.
    unsafe { b.get(0) }
}

/// The status of a call, recorded (with its fault) for `ghm_last_error`.
fn status(r: Result<(), Fault>) -> ghm_status {
    let code = match r {
        Ok(()) => GHM_OK,
        Err(f) => f.error.code(),
    };
    fault::record(r);
    code
}

// ---------------------------------------------------------------------------------------------
// The inputs of a call, as C passes them

/// Dense inputs or class-index labels, with the anchor range a phased call covers.
#[derive(Clone, Copy)]
enum Kind {
    Dense {
        pred: Buf<f32>,
        target: Buf<f32>,
        weight: Option<Buf<f32>>,
    },
    Labels {
        pred: Buf<f32>,
        labels: Buf<i32>,
        weight: Option<Buf<f32>>,
        classes: usize,
        layout: Layout,
        anchors: (usize, usize),
    },
}

/// The inputs of a call, with their blocks: one contiguous block (`blocked` false: the
/// buffers are exactly the batch), or the caller's [`Blocks`].
#[derive(Clone, Copy)]
struct Source {
    kind: Kind,
    blocks: Blocks,
    blocked: bool,
}

/// The caller's blocks: [`Error::Null`] for NULL.
///
/// # Safety
/// `b` is NULL or points to a valid `Blocks`.
unsafe fn blocks(b: *const Blocks) -> Result<(Blocks, Region), Fault> {
    let buf = one_required(b, c"blocks")?;
    // SAFETY: valid per the C contract.
    Ok((unsafe { read(buf) }, buf.region()))
}

/// The two outputs written through views.
#[derive(Clone, Copy)]
enum Output {
    Grad,
    LossElems,
}

/// `count * len (* num_classes)` overflows.
fn too_many(argument: &'static CStr, v: usize) -> Fault {
    let why = c"is too large: the element count overflows size_t";
    let f = Fault::new(Error::Shape, argument, why).value(v as f64);
    if argument == c"blocks" {
        f.field(c"count")
    } else {
        f
    }
}

/// A view whose extent overflows.
fn past_end(field: &'static CStr) -> Fault {
    let why = c"reaches past the address space (offset + (count - 1) * stride + len overflows)";
    Fault::new(Error::Shape, c"blocks", why).field(field)
}

impl Source {
    fn dense(
        pred: *const f32,
        target: *const f32,
        weight: *const f32,
        n: usize,
    ) -> Result<Source, Fault> {
        Source::dense_in(pred, target, weight, Blocks::contiguous(n), false)
    }

    fn dense_in(
        pred: *const f32,
        target: *const f32,
        weight: *const f32,
        b: Blocks,
        blocked: bool,
    ) -> Result<Source, Fault> {
        b.elements(1).map_err(|_| too_many(c"blocks", b.count))?;
        let ext = |v: View, field| v.extent(b.count, b.len).map_err(|_| past_end(field));
        Ok(Source {
            kind: Kind::Dense {
                pred: Buf::required(pred, ext(b.pred, c"pred")?, c"pred")?,
                target: Buf::required(target, ext(b.target, c"target")?, c"target")?,
                weight: Buf::optional(weight, ext(b.weight, c"weight")?, c"label_weight")?,
            },
            blocks: b,
            blocked,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn labels(
        pred: *const f32,
        labels: *const i32,
        weight: *const f32,
        anchors: usize,
        classes: usize,
        layout: u32,
        range: (usize, usize),
    ) -> Result<Source, Fault> {
        let b = Blocks::contiguous(anchors);
        Source::labels_in(pred, labels, weight, classes, layout, range, b, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn labels_in(
        pred: *const f32,
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
        if classes > i32::MAX as usize {
            let f = Fault::new(Error::Shape, c"num_classes", c"is more than INT32_MAX");
            return Err(f.value(classes as f64));
        }
        if blocked {
            b.elements(classes)
                .map_err(|_| too_many(c"blocks", b.count))?;
        } else {
            b.elements(classes)
                .map_err(|_| too_many(c"num_anchors", b.len))?;
        }
        if range.1 > b.len {
            let f = Fault::new(Error::Shape, c"anchor_end", c"is more than num_anchors");
            return Err(f.value(range.1 as f64));
        }
        if range.0 > range.1 {
            let f = Fault::new(Error::Shape, c"anchor_begin", c"is more than anchor_end");
            return Err(f.value(range.0 as f64));
        }
        let ext = |v: View, per: usize, field| {
            v.extent(b.count, b.len * per).map_err(|_| past_end(field))
        };
        Ok(Source {
            kind: Kind::Labels {
                pred: Buf::required(pred, ext(b.pred, classes, c"pred")?, c"pred")?,
                labels: Buf::required(labels, ext(b.target, 1, c"target")?, c"labels")?,
                weight: Buf::optional(weight, ext(b.weight, 1, c"weight")?, c"anchor_weight")?,
                classes,
                layout,
                anchors: range,
            },
            blocks: b,
            blocked,
        })
    }

    /// Elements of a block of predictions (and of the outputs).
    fn pred_block(&self) -> usize {
        match self.kind {
            Kind::Dense { .. } => self.blocks.len,
            Kind::Labels { classes, .. } => self.blocks.len * classes,
        }
    }

    /// An output buffer for the blocks through `view` (NULL: `None`): [`Error::Alias`] if the
    /// view's blocks share elements, [`Error::Shape`] if its extent overflows.
    fn output(&self, ptr: *mut f32, out: Output) -> Result<Option<Buf<f32>>, Fault> {
        if ptr.is_null() {
            return Ok(None);
        }
        let (count, block) = (self.blocks.count, self.pred_block());
        let (view, name, field, stride) = match out {
            Output::Grad => (self.blocks.grad, c"grad", c"grad", c"grad.stride"),
            Output::LossElems => (
                self.blocks.loss_elems,
                c"loss_elems",
                c"loss_elems",
                c"loss_elems.stride",
            ),
        };
        if !view.self_disjoint(count, block) {
            let why = c"is less than a block's elements: the blocks overlap one another";
            let f = Fault::new(Error::Alias, c"blocks", why).field(stride);
            return Err(f.value(view.stride as f64));
        }
        let len = view.extent(count, block).map_err(|_| past_end(field))?;
        Buf::optional(ptr as *const f32, len, name)
    }

    /// The bytes an output written through `view` covers.
    fn output_region(&self, b: Option<Buf<f32>>, view: View) -> Option<Region> {
        b.map(|b| b.view_region(view, self.blocks.count, self.pred_block()))
    }

    fn regions(&self) -> [Option<Region>; 3] {
        let b = self.blocks;
        let (count, len) = (b.count, b.len);
        match self.kind {
            Kind::Dense {
                pred,
                target,
                weight,
            } => [
                Some(pred.view_region(b.pred, count, len)),
                Some(target.view_region(b.target, count, len)),
                weight.map(|w| w.view_region(b.weight, count, len)),
            ],
            Kind::Labels {
                pred,
                labels,
                weight,
                classes,
                ..
            } => [
                Some(pred.view_region(b.pred, count, len * classes)),
                Some(labels.view_region(b.target, count, len)),
                weight.map(|w| w.view_region(b.weight, count, len)),
            ],
        }
    }

    /// The input regions, named as the C parameters.
    fn named(&self) -> [Named; 3] {
        let [a, b, c] = self.regions();
        match self.kind {
            Kind::Dense { .. } => [(c"pred", a), (c"target", b), (c"label_weight", c)],
            Kind::Labels { .. } => [(c"pred", a), (c"labels", b), (c"anchor_weight", c)],
        }
    }

    /// The first bad covered element, explained ([`Error::Input`] refused the call).
    ///
    /// # Safety
    /// The buffers are valid for reads.
    unsafe fn first_bad(&self, plan: &Plan) -> Fault {
        let v = self.blocks;
        for (b, seg) in self.segments() {
            for i in seg {
                // SAFETY: (b, i) is in a segment; buffers valid (caller).
                let (x, t, w) = unsafe { self.element(b, i) };
                let Some(part) = api::bad_part(plan, x, t, w) else {
                    continue;
                };
                let pred_why = match plan.loss {
                    Loss::CProbs => c"is not a probability in [0, 1] (skip_bad is 0)",
                    _ => c"is not finite (skip_bad is 0)",
                };
                let target_why = match plan.loss {
                    Loss::R { .. } => c"is not finite (skip_bad is 0)",
                    _ => c"is not in [0, 1] (skip_bad is 0)",
                };
                let weight_why = c"is NaN, infinite or negative (skip_bad is 0)";
                let (name, index, value, why) = match (part, self.kind) {
                    (BadPart::Pred, _) => (c"pred", v.pred.at(b) + i, x, pred_why),
                    (BadPart::Target, _) => (c"target", v.target.at(b) + i, t, target_why),
                    (BadPart::Weight, Kind::Dense { .. }) => {
                        (c"label_weight", v.weight.at(b) + i, w, weight_why)
                    }
                    (
                        BadPart::Weight,
                        Kind::Labels {
                            classes, layout, ..
                        },
                    ) => {
                        let a = match layout {
                            Layout::AnchorMajor => i / classes,
                            Layout::ClassMajor => i % v.len,
                        };
                        (c"anchor_weight", v.weight.at(b) + a, w, weight_why)
                    }
                };
                return Fault::new(Error::Input, name, why)
                    .at(index)
                    .value(value as f64);
            }
        }
        Error::Input.into()
    }

    fn aligned(&self) -> bool {
        match self.kind {
            Kind::Dense {
                pred,
                target,
                weight,
            } => pred.aligned() && target.aligned() && weight.is_none_or(|w| w.aligned()),
            Kind::Labels {
                pred,
                labels,
                weight,
                ..
            } => pred.aligned() && labels.aligned() && weight.is_none_or(|w| w.aligned()),
        }
    }

    /// Runs `f` on the safe API's view of aligned inputs.
    ///
    /// # Safety
    /// The buffers are valid for reads and [`Source::aligned`].
    unsafe fn with<R>(&self, f: impl FnOnce(Batch<'_>) -> R) -> R {
        let blocks = self.blocked.then_some(self.blocks);
        // SAFETY: valid and aligned (caller).
        unsafe {
            match self.kind {
                Kind::Dense {
                    pred,
                    target,
                    weight,
                } => f(Batch::Dense {
                    pred: pred.slice(),
                    target: target.slice(),
                    weight: weight.map(|w| w.slice()),
                    blocks,
                }),
                Kind::Labels {
                    pred,
                    labels,
                    weight,
                    classes,
                    layout,
                    anchors,
                } => f(Batch::Labels {
                    pred: pred.slice(),
                    labels: labels.slice(),
                    weight: weight.map(|w| w.slice()),
                    classes,
                    layout,
                    anchors: anchors.0..anchors.1,
                    blocks,
                }),
            }
        }
    }

    /// The covered elements: block, and a range of the block's predictions.
    fn segments(&self) -> impl Iterator<Item = (usize, Range<usize>)> + '_ {
        let len = self.blocks.len;
        let (planes, seg) = match self.kind {
            Kind::Dense { .. } => (1, (0, len, 0)),
            Kind::Labels {
                classes,
                layout,
                anchors: (a0, a1),
                ..
            } => match layout {
                Layout::AnchorMajor => (1, (a0 * classes, a1 * classes, 0)),
                Layout::ClassMajor => (classes, (a0, a1, len)),
            },
        };
        (0..self.blocks.count)
            .flat_map(move |b| (0..planes).map(move |c| (b, seg.0 + c * seg.2..seg.1 + c * seg.2)))
    }

    /// Prediction, target and weight of element `i` of block `b`'s predictions.
    ///
    /// # Safety
    /// `(b, i)` is in one of [`Source::segments`] and the buffers are valid for reads.
    unsafe fn element(&self, b: usize, i: usize) -> (f32, f32, f32) {
        let v = self.blocks;
        // SAFETY: indices in bounds: the buffers were made with the views' extents, and the
        // anchor a < blocks.len (caller).
        unsafe {
            match self.kind {
                Kind::Dense {
                    pred,
                    target,
                    weight,
                } => (
                    pred.get(v.pred.at(b) + i),
                    target.get(v.target.at(b) + i),
                    weight.map_or(1.0, |w| w.get(v.weight.at(b) + i)),
                ),
                Kind::Labels {
                    pred,
                    labels,
                    weight,
                    classes,
                    layout,
                    ..
                } => {
                    let (a, c) = match layout {
                        Layout::AnchorMajor => (i / classes, i % classes),
                        Layout::ClassMajor => (i % v.len, i / v.len),
                    };
                    let t = (labels.get(v.target.at(b) + a) == c as i32) as u32 as f32;
                    let w = weight.map_or(1.0, |w| w.get(v.weight.at(b) + a));
                    (pred.get(v.pred.at(b) + i), t, w)
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Misaligned buffers: the phased API on aligned stack copies

/// Elements per stack copy on the misaligned path.
const BOUNCE: usize = 256;

/// Calls `f` with aligned copies of consecutive chunks of the covered elements (as dense
/// inputs: labels become one-hot targets and per-element weights, which the labels path is
/// tested to match bit for bit), the block each chunk came from and its range of the
/// block's predictions.
///
/// # Safety
/// The source's buffers are valid for reads.
unsafe fn for_each_chunk(
    src: &Source,
    mut f: impl FnMut(usize, Range<usize>, &Batch<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut x = [0.0f32; BOUNCE];
    let mut t = [0.0f32; BOUNCE];
    let mut w = [0.0f32; BOUNCE];
    for (b, seg) in src.segments() {
        let mut i = seg.start;
        while i < seg.end {
            let len = BOUNCE.min(seg.end - i);
            for j in 0..len {
                // SAFETY: i + j is inside a segment; buffers valid (caller).
                (x[j], t[j], w[j]) = unsafe { src.element(b, i + j) };
            }
            let input = Batch::Dense {
                pred: &x[..len],
                target: &t[..len],
                weight: Some(&w[..len]),
                blocks: None,
            };
            f(b, i..i + len, &input)?;
            i += len;
        }
    }
    Ok(())
}

/// Accumulates every chunk into a copy of `hist`.
///
/// # Safety
/// The source's buffers are valid for reads.
unsafe fn accumulate_bounced(plan: Plan, src: &Source, hist: &Hist) -> Result<Hist, Error> {
    let mut h = *hist;
    // SAFETY: forwarded from the caller.
    unsafe {
        for_each_chunk(src, |_, _, input| {
            api::accumulate(plan, input.clone(), &mut h)
        })?
    };
    Ok(h)
}

/// [`Error::Input`] if any covered element is bad.
///
/// # Safety
/// The source's buffers are valid for reads.
unsafe fn check_bounced(plan: Plan, src: &Source) -> Result<(), Error> {
    // SAFETY: forwarded from the caller.
    unsafe { for_each_chunk(src, |_, _, input| api::check(plan, input)) }
}

/// Applies every chunk, through stack copies of the outputs. The inputs have been checked
/// already (or `skip_bad` is set): the chunks are not checked again.
///
/// # Safety
/// The source's buffers are valid for reads, `grad` and `loss_elems` (made by
/// [`Source::output`]) for reads and writes.
unsafe fn apply_bounced(
    plan: Plan,
    w: &Weights,
    src: &Source,
    grad: Option<Buf<f32>>,
    loss_elems: Option<Buf<f32>>,
) -> Result<(), Error> {
    let plan = Plan {
        skip_bad: true,
        ..plan
    };
    let mut g = [0.0f32; BOUNCE];
    let mut le = [0.0f32; BOUNCE];
    // SAFETY: forwarded from the caller; every index is inside the prediction range.
    unsafe {
        for_each_chunk(src, |b, range, input| {
            let len = range.len();
            let gi = src.blocks.grad.at(b) + range.start;
            let li = src.blocks.loss_elems.at(b) + range.start;
            if let (Some(gb), true) = (grad, plan.accumulate) {
                for (j, v) in g[..len].iter_mut().enumerate() {
                    *v = gb.get(gi + j);
                }
            }
            api::apply(
                plan,
                w,
                input.clone(),
                grad.map(|_| &mut g[..len]),
                loss_elems.map(|_| &mut le[..len]),
            )?;
            for (j, (&gv, &lv)) in g[..len].iter().zip(&le[..len]).enumerate() {
                if let Some(gb) = grad {
                    gb.set(gi + j, gv);
                }
                if let Some(lb) = loss_elems {
                    lb.set(li + j, lv);
                }
            }
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The drivers shared by GHM-C and GHM-R

/// One call: loss, gradient, loss elements, statistics.
///
/// # Safety
/// Every non-NULL pointer is valid as the C contract says.
#[allow(clippy::too_many_arguments)]
unsafe fn one_call(
    plan: Result<Plan, Fault>,
    ema: *mut Ema,
    src: Result<Source, Fault>,
    grad: *mut f32,
    loss: *mut f32,
    loss_elems: *mut f32,
    stats: *mut Stats,
    cfg_region: Option<Region>,
    blocks_region: Option<Region>,
) -> ghm_status {
    let run = || -> Result<(), Fault> {
        let plan = plan?;
        let src = src?;
        let n = src.blocks.count * src.pred_block();
        let grad = src.output(grad, Output::Grad)?;
        let loss_elems = src.output(loss_elems, Output::LossElems)?;
        let res = Results::new(loss, stats, ema)?;
        let [a, b, c] = src.named();
        let [r0, r1, r2] = res.named();
        let outs = [
            (c"grad", src.output_region(grad, src.blocks.grad)),
            (
                c"loss_elems",
                src.output_region(loss_elems, src.blocks.loss_elems),
            ),
            r0,
            r1,
            r2,
        ];
        let ins = [a, b, c, (c"cfg", cfg_region), (c"blocks", blocks_region)];
        disjoint(&ins, &outs)?;

        // SAFETY: valid per the C contract; outputs disjoint from everything (checked).
        let core = || -> Result<(), Error> {
            unsafe {
                let mut ema_local = res.ema.map(|e| read(e));
                let mut stats_local = Stats::default();
                let value = if src.aligned()
                    && grad.is_none_or(|g| g.aligned())
                    && loss_elems.is_none_or(|l| l.aligned())
                {
                    let out = Out {
                        grad: grad.map(|g| g.slice_mut()),
                        loss_elems: loss_elems.map(|l| l.slice_mut()),
                        stats: res.stats.map(|_| &mut stats_local),
                    };
                    src.with(|input| api::loss_grad(plan, ema_local.as_mut(), input, out))?
                } else {
                    if n == 0 || src.segments().all(|(_, s)| s.is_empty()) {
                        // Validate the configuration and state the same way, then nothing.
                        api::loss_grad(plan, ema_local.as_mut(), EMPTY, Out::default())?
                    } else {
                        // Accumulate checks every element, so apply need not check again.
                        let hist = accumulate_bounced(plan, &src, &Hist::new(plan.bins as u32)?)?;
                        let w = api::finalize(plan, ema_local.as_mut(), &hist)?;
                        if grad.is_some() || loss_elems.is_some() {
                            apply_bounced(plan, &w, &src, grad, loss_elems)?;
                        }
                        stats_local = Stats::of(&hist, &w);
                        w.loss as f32
                    }
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

/// The per-call results of a one call as C passes them: `*loss`, `*stats` and the EMA (each
/// may be NULL).
#[derive(Clone, Copy)]
struct Results {
    loss: Option<Buf<f32>>,
    stats: Option<Buf<Stats>>,
    ema: Option<Buf<Ema>>,
}

impl Results {
    fn new(loss: *mut f32, stats: *mut Stats, ema: *mut Ema) -> Result<Results, Fault> {
        Ok(Results {
            loss: one(loss as *const f32, c"loss")?,
            stats: one(stats as *const Stats, c"stats")?,
            ema: one(ema as *const Ema, c"ema")?,
        })
    }

    /// Their regions, for the overlap checks (all outputs).
    fn named(&self) -> [Named; 3] {
        [
            (c"loss", region(self.loss)),
            (c"stats", region(self.stats)),
            (c"ema", region(self.ema)),
        ]
    }

    /// Writes a successful call's results: the loss, and for a batch with elements the
    /// statistics and the EMA (when `momentum > 0`). A batch of none writes only the loss.
    ///
    /// # Safety
    /// The buffers are valid for writes.
    unsafe fn write(&self, plan: &Plan, n: usize, loss: f32, stats: &Stats, ema: Option<Ema>) {
        // SAFETY: valid for writes (caller).
        unsafe {
            if let (Some(e), Some(v), true) = (self.ema, ema, plan.momentum > 0.0 && n > 0) {
                e.set(0, v);
            }
            if let (Some(s), true) = (self.stats, n > 0) {
                s.set(0, *stats);
            }
            if let Some(l) = self.loss {
                l.set(0, loss);
            }
        }
    }
}

/// Phase 1 into `*hist`.
///
/// # Safety
/// Every non-NULL pointer is valid as the C contract says.
unsafe fn accumulate(
    plan: Result<Plan, Fault>,
    src: Result<Source, Fault>,
    hist: *mut Hist,
    cfg_region: Option<Region>,
    blocks_region: Option<Region>,
) -> ghm_status {
    let run = || -> Result<(), Fault> {
        let hist_buf = one_required(hist as *const Hist, c"h")?;
        let plan = plan?;
        let src = src?;
        let [a, b, c] = src.named();
        disjoint(
            &[a, b, c, (c"cfg", cfg_region), (c"blocks", blocks_region)],
            &[(c"h", Some(hist_buf.region()))],
        )?;
        // SAFETY: valid per the C contract; the histogram overlaps no input (checked).
        let core = || -> Result<(), Error> {
            unsafe {
                let mut h = read(hist_buf);
                if src.aligned() {
                    src.with(|input| api::accumulate(plan, input, &mut h))?;
                } else {
                    if h.bins as usize != plan.bins {
                        return Err(Error::State);
                    }
                    h = accumulate_bounced(plan, &src, &h)?;
                }
                hist_buf.set(0, h);
            }
            Ok(())
        };
        core().map_err(|e| {
            // SAFETY: valid per the C contract, and unchanged (the call failed).
            let h = unsafe { read(hist_buf) };
            // SAFETY: as above.
            unsafe { explain(e, &plan, Some(&src), None, Some(&h), None) }
        })
    };
    status(run())
}

/// Phase 2: EMA update and weights.
///
/// # Safety
/// Every non-NULL pointer is valid as the C contract says.
unsafe fn finalize(
    plan: Result<Plan, Fault>,
    ema: *mut Ema,
    hist: *const Hist,
    weights: *mut Weights,
    cfg_region: Option<Region>,
) -> ghm_status {
    let run = || -> Result<(), Fault> {
        let h = one_required(hist, c"h")?;
        let w = one_required(weights as *const Weights, c"w")?;
        let plan = plan?;
        let e = one(ema as *const Ema, c"ema")?;
        disjoint(
            &[(c"h", Some(h.region())), (c"cfg", cfg_region)],
            &[(c"w", Some(w.region())), (c"ema", region(e))],
        )?;
        // SAFETY: valid per the C contract; outputs overlap nothing (checked).
        let core = || -> Result<(), Error> {
            unsafe {
                let mut ema_local = e.map(|e| read(e));
                let result = api::finalize(plan, ema_local.as_mut(), &read(h))?;
                if let (Some(e), Some(v)) = (e, ema_local) {
                    if plan.momentum > 0.0 {
                        e.set(0, v);
                    }
                }
                w.set(0, result);
            }
            Ok(())
        };
        core().map_err(|err| {
            // SAFETY: valid per the C contract, and unchanged (the call failed).
            let (h, ema) = unsafe { (read(h), e.map(|e| read(e))) };
            // SAFETY: no source is read.
            unsafe { explain(err, &plan, None, Some(ema.as_ref()), Some(&h), None) }
        })
    };
    status(run())
}

/// Phase 3: gradients and loss elements of a chunk.
///
/// # Safety
/// Every non-NULL pointer is valid as the C contract says.
unsafe fn apply(
    plan: Result<Plan, Fault>,
    weights: *const Weights,
    src: Result<Source, Fault>,
    grad: *mut f32,
    loss_elems: *mut f32,
    cfg_region: Option<Region>,
    blocks_region: Option<Region>,
) -> ghm_status {
    let run = || -> Result<(), Fault> {
        let wb = one_required(weights, c"w")?;
        let plan = plan?;
        let src = src?;
        let grad = src.output(grad, Output::Grad)?;
        let loss_elems = src.output(loss_elems, Output::LossElems)?;
        let [a, b, c] = src.named();
        let ins = [
            a,
            b,
            c,
            (c"cfg", cfg_region),
            (c"w", Some(wb.region())),
            (c"blocks", blocks_region),
        ];
        disjoint(
            &ins,
            &[
                (c"grad", src.output_region(grad, src.blocks.grad)),
                (
                    c"loss_elems",
                    src.output_region(loss_elems, src.blocks.loss_elems),
                ),
            ],
        )?;
        // SAFETY: valid per the C contract; outputs overlap nothing (checked).
        let core = || -> Result<(), Error> {
            unsafe {
                let w = read(wb);
                if src.aligned()
                    && grad.is_none_or(|g| g.aligned())
                    && loss_elems.is_none_or(|l| l.aligned())
                {
                    src.with(|input| {
                        api::apply(
                            plan,
                            &w,
                            input,
                            grad.map(|g| g.slice_mut()),
                            loss_elems.map(|l| l.slice_mut()),
                        )
                    })?;
                } else {
                    // Refuse bad weights and bad input before the first chunk is written.
                    w.check(plan.bins)?;
                    if !plan.skip_bad {
                        check_bounced(plan, &src)?;
                    }
                    apply_bounced(plan, &w, &src, grad, loss_elems)?;
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

/// The C configuration behind `cfg`, converted, with its region for the alias checks.
///
/// # Safety
/// `cfg` is NULL or points to a valid `C`.
unsafe fn config<C: Copy, L: FromC<C>>(cfg: *const C) -> (Result<Plan, Fault>, Option<Region>) {
    // SAFETY: forwarded from the caller.
    let (value, region) = unsafe { config_value::<C, L>(cfg) };
    (value.map(|(_, plan)| plan), region)
}

/// [`config`], with the Rust configuration itself.
///
/// # Safety
/// As [`config`].
unsafe fn config_value<C: Copy, L: FromC<C>>(
    cfg: *const C,
) -> (Result<(L, Plan), Fault>, Option<Region>) {
    match one_required(cfg, c"cfg") {
        Ok(b) => {
            // SAFETY: valid per the C contract.
            let c = unsafe { read(b) };
            let value = L::from_c(&c).and_then(|l| {
                let plan = l
                    .plan()
                    .map_err(|e| l.bad_field().unwrap_or_else(|| e.into()))?;
                Ok((l, plan))
            });
            (value, Some(b.region()))
        }
        Err(f) => (Err(f), None),
    }
}

/// An error of the safe core explained from the call's arguments (the cold path of a
/// refused call): which state and field, which element, which configuration field.
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
    let first_bad = || src.map(|s| unsafe { s.first_bad(plan) });
    explain_with(e, plan, first_bad, ema, h, w)
}

/// [`explain`] with the first bad element found by `first_bad` (`None`: no data to look at):
/// shared by every family of entry points.
fn explain_with(
    e: Error,
    plan: &Plan,
    first_bad: impl FnOnce() -> Option<Fault>,
    ema: Option<Option<&Ema>>,
    h: Option<&Hist>,
    w: Option<&Weights>,
) -> Fault {
    match e {
        Error::State => {
            if let Some(f) = h.and_then(|h| h.fault(plan.bins)) {
                return f.named(c"h");
            }
            if let (Some(ema), true) = (ema, plan.momentum > 0.0) {
                let Some(ema) = ema else {
                    return Fault::new(e, c"ema", c"is NULL while cfg.momentum > 0");
                };
                if let Some(f) = ema.fault(plan.bins) {
                    return f.named(c"ema");
                }
            }
            if let Some(f) = w.and_then(|w| w.fault(plan.bins)) {
                return f.named(c"w");
            }
            e.into()
        }
        Error::Input => first_bad().unwrap_or(e.into()),
        Error::Config => {
            let why = c"times grad_scale is so large that a bin's gradient factor overflows f32";
            let f = Fault::new(e, c"cfg", why).field(c"loss_weight");
            f.value(plan.loss_weight as f64)
        }
        _ => e.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The exported functions

/// A static, NUL-terminated sentence describing `s`; never NULL (unknown codes get a
/// sentence too).
#[no_mangle]
pub extern "C" fn ghm_status_str(s: ghm_status) -> *const c_char {
    let msg = match s {
        GHM_OK => c"success",
        GHM_ERR_NULL => Error::Null.c_message(),
        GHM_ERR_CONFIG => Error::Config.c_message(),
        GHM_ERR_STATE => Error::State.c_message(),
        GHM_ERR_INPUT => Error::Input.c_message(),
        GHM_ERR_ALIAS => Error::Alias.c_message(),
        GHM_ERR_SHAPE => Error::Shape.c_message(),
        _ => c"unknown ghm status code",
    };
    msg.as_ptr()
}

/// Bytes of `ghm_report.message`, its NUL included.
pub const GHM_REPORT_MESSAGE_SIZE: usize = 256;

/// Why the calling thread's last call returned what it did: written by `ghm_last_error`.
///
/// Every function returning a `ghm_status` records its outcome for the calling thread
/// (success included), so the report describes the latest such call. The strings are static
/// (never NULL, empty when they do not apply); `message` is the whole of it as one line, e.g.
/// `pred[1037] = NaN is not finite (skip_bad is 0)` or `grad overlaps pred`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ghm_report {
    /// The status that call returned (GHM_OK: the other fields are empty).
    pub status: ghm_status,
    /// 1 if `value` holds the offending value.
    pub has_value: u32,
    /// The offending element or bin of `argument` (`pred[index]` in the caller's own buffer,
    /// views included), or -1.
    pub index: i64,
    /// The offending value (an element, a configuration field, a size) when `has_value`.
    pub value: f64,
    /// The parameter at fault, as the header names it ("pred", "cfg", "blocks", "h", ...).
    pub argument: *const c_char,
    /// The member of a struct argument ("momentum", "grad.stride", "acc_sum", ...).
    pub field: *const c_char,
    /// The other parameter involved (the input an output overlaps).
    pub other: *const c_char,
    /// What is wrong with it ("is NULL but has elements", "is not in [0, 1)", ...).
    pub why: *const c_char,
    /// `argument.field[index] = value why other`, NUL-terminated (truncated to fit).
    pub message: [c_char; GHM_REPORT_MESSAGE_SIZE],
}

/// Writes the calling thread's last outcome to `*report` (see `ghm_report`). Writes only
/// `*report`; records nothing itself. GHM_ERR_NULL if `report` is NULL.
///
/// Without the crate's `std` feature there are no thread-locals: the last outcome is then
/// the process's (exact for a single-threaded program; with several threads, the latest call
/// that found the slot free).
///
/// # Safety
/// `report` is NULL or points to writable memory of `sizeof(ghm_report)` bytes.
#[no_mangle]
pub unsafe extern "C" fn ghm_last_error(report: *mut ghm_report) -> ghm_status {
    if report.is_null() {
        return GHM_ERR_NULL;
    }
    let last = fault::last();
    let mut text = [0u8; GHM_REPORT_MESSAGE_SIZE];
    let mut w = Fixed {
        buf: &mut text,
        len: 0,
    };
    if let Some(f) = &last {
        // Fixed never fails.
        let _ = f.write(&mut w);
    }
    let f = last.unwrap_or(Fault::new(Error::Null, c"", c""));
    let mut r = ghm_report {
        status: if last.is_some() {
            f.error.code()
        } else {
            GHM_OK
        },
        has_value: f.value.is_some() as u32,
        index: f.index.map_or(-1, |i| i as i64),
        value: f.value.unwrap_or(0.0),
        argument: f.argument.as_ptr(),
        field: f.field.as_ptr(),
        other: f.other.as_ptr(),
        why: f.why.as_ptr(),
        message: [0; GHM_REPORT_MESSAGE_SIZE],
    };
    for (d, s) in r.message.iter_mut().zip(&text) {
        *d = *s as c_char;
    }
    // SAFETY: writable per the C contract; write_unaligned has no alignment requirement.
    unsafe { ptr::write_unaligned(report, r) };
    GHM_OK
}

/// The library version: `major << 16 | minor << 8 | patch`.
#[no_mangle]
pub extern "C" fn ghm_version() -> u32 {
    crate::VERSION
}

/// The name of the kernel backend in use ("avx512", "avx2", "sse2", "neon", "scalar", ...).
#[no_mangle]
pub extern "C" fn ghm_backend() -> *const c_char {
    Backend::active().c_name().as_ptr()
}

/// Forces the kernel backend for every later call (`name`: "scalar", "sse2", "avx2", "avx512",
/// "neon", "portable"), or returns to the automatic choice (`name` NULL). The same as the
/// `GHM_BACKEND` environment variable, but at run time. GHM_ERR_CONFIG for an unknown name
/// or a backend this machine cannot run (the active backend is then unchanged).
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn ghm_set_backend(name: *const c_char) -> ghm_status {
    let backend = if name.is_null() {
        None
    } else {
        // SAFETY: a NUL-terminated string per the C contract.
        let name = unsafe { core::ffi::CStr::from_ptr(name) };
        match name.to_str().ok().and_then(Backend::from_name) {
            Some(b) => Some(b),
            None => {
                let why = c"is not a backend name (scalar, sse2, avx2, avx512, neon, portable)";
                return status(Err(Fault::new(Error::Config, c"name", why)));
            }
        }
    };
    let why = c"is a backend this build or machine cannot run";
    status(crate::backend::set_backend(backend).map_err(|e| Fault::new(e, c"name", why)))
}

/// `bins` refused by `ghm_ema_init` / `ghm_hist_init`.
fn bad_bins(e: Error, bins: u32) -> Fault {
    Fault::new(e, c"bins", c"is not in 1..=128").value(bins as f64)
}

/// GHM-C defaults (mmdet's `GHMC()`): bins 10, momentum 0, loss_weight 1, MEAN,
/// grad_scale 1, accumulate 0, skip_bad 0, LOGITS.
#[no_mangle]
pub extern "C" fn ghm_c_config_default() -> ghm_c_config {
    (&GhmC::default()).into()
}

/// GHM-R defaults (mmdet's `GHMR()`): mu 0.02, bins 10, momentum 0, loss_weight 1, MEAN,
/// grad_scale 1, accumulate 0, skip_bad 0.
#[no_mangle]
pub extern "C" fn ghm_r_config_default() -> ghm_r_config {
    (&GhmR::default()).into()
}

/// Sets `*ema` to an all-zero EMA for `bins` bins (like mmdet's buffer).
///
/// # Safety
/// `ema` is NULL or points to writable memory of `sizeof(ghm_ema)` bytes.
#[no_mangle]
pub unsafe extern "C" fn ghm_ema_init(ema: *mut Ema, bins: u32) -> ghm_status {
    status((|| {
        let e = one_required(ema as *const Ema, c"ema")?;
        let v = Ema::new(bins).map_err(|e| bad_bins(e, bins))?;
        // SAFETY: writable per the C contract.
        unsafe { e.set(0, v) };
        Ok(())
    })())
}

/// Sets `*h` to an empty histogram for `bins` bins.
///
/// # Safety
/// `h` is NULL or points to writable memory of `sizeof(ghm_hist)` bytes.
#[no_mangle]
pub unsafe extern "C" fn ghm_hist_init(h: *mut Hist, bins: u32) -> ghm_status {
    status((|| {
        let b = one_required(h as *const Hist, c"h")?;
        let v = Hist::new(bins).map_err(|e| bad_bins(e, bins))?;
        // SAFETY: writable per the C contract.
        unsafe { b.set(0, v) };
        Ok(())
    })())
}

/// Adds `*from` into `*into` (element-wise; the same as an MPI_SUM reduction of the fields).
///
/// # Safety
/// Both point to valid histograms (or are NULL).
#[no_mangle]
pub unsafe extern "C" fn ghm_hist_merge(into: *mut Hist, from: *const Hist) -> ghm_status {
    status((|| {
        let i = one_required(into as *const Hist, c"into")?;
        let f = one_required(from, c"from")?;
        disjoint(
            &[(c"from", Some(f.region()))],
            &[(c"into", Some(i.region()))],
        )?;
        // SAFETY: valid per the C contract; disjoint (checked).
        unsafe {
            let (mut h, from) = (read(i), read(f));
            h.merge(&from).map_err(|e| {
                if h.bins as usize > MAX_BINS {
                    let f = Fault::new(e, c"into", c"is more than 128").field(c"bins");
                    f.value(h.bins as f64)
                } else {
                    let why = c"differs from into.bins (histograms of other bin counts)";
                    Fault::new(e, c"from", why)
                        .field(c"bins")
                        .value(from.bins as f64)
                }
            })?;
            i.set(0, h);
        }
        Ok(())
    })())
}

/// GHM-C loss and gradient of `n` elements with dense targets, in one call.
///
/// `ema` may be NULL when momentum is 0; `label_weight` NULL means all ones; `grad`, `loss`,
/// `loss_elems` and `stats` may each be NULL (not computed). Returns GHM_OK or an error, in
/// which case nothing was written.
///
/// # Safety
/// Every non-NULL pointer is valid for the element count given (`n` floats for the buffers).
#[no_mangle]
pub unsafe extern "C" fn ghm_c_loss_grad(
    cfg: *const ghm_c_config,
    ema: *mut Ema,
    pred: *const f32,
    target: *const f32,
    label_weight: *const f32,
    n: usize,
    grad: *mut f32,
    loss: *mut f32,
    loss_elems: *mut f32,
    stats: *mut Stats,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmC>(cfg);
        let src = Source::dense(pred, target, label_weight, n);
        one_call(c, ema, src, grad, loss, loss_elems, stats, r, None)
    }
}

/// GHM-C loss and gradient with class-index labels (`labels[a]` in `0..num_classes` is a
/// class, anything else background) for `[num_anchors x num_classes]` logits in `layout`
/// (GHM_LAYOUT_*). `anchor_weight` (NULL: all ones) has one weight per anchor.
///
/// # Safety
/// Every non-NULL pointer is valid for its size: `pred`, `grad`, `loss_elems`:
/// `num_anchors * num_classes` floats; `labels`, `anchor_weight`: `num_anchors`.
#[no_mangle]
pub unsafe extern "C" fn ghm_c_loss_grad_labels(
    cfg: *const ghm_c_config,
    ema: *mut Ema,
    pred: *const f32,
    labels: *const i32,
    anchor_weight: *const f32,
    num_anchors: usize,
    num_classes: usize,
    layout: u32,
    grad: *mut f32,
    loss: *mut f32,
    loss_elems: *mut f32,
    stats: *mut Stats,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmC>(cfg);
        let src = Source::labels(
            pred,
            labels,
            anchor_weight,
            num_anchors,
            num_classes,
            layout,
            (0, num_anchors),
        );
        one_call(c, ema, src, grad, loss, loss_elems, stats, r, None)
    }
}

/// GHM-R loss and gradient of `n` elements, in one call (pointers as `ghm_c_loss_grad`).
///
/// # Safety
/// As `ghm_c_loss_grad`.
#[no_mangle]
pub unsafe extern "C" fn ghm_r_loss_grad(
    cfg: *const ghm_r_config,
    ema: *mut Ema,
    pred: *const f32,
    target: *const f32,
    label_weight: *const f32,
    n: usize,
    grad: *mut f32,
    loss: *mut f32,
    loss_elems: *mut f32,
    stats: *mut Stats,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmR>(cfg);
        let src = Source::dense(pred, target, label_weight, n);
        one_call(c, ema, src, grad, loss, loss_elems, stats, r, None)
    }
}

/// Phase 1 of GHM-C: adds a chunk of `n` elements (dense targets) to `*h`.
///
/// # Safety
/// As `ghm_c_loss_grad`; `h` points to a valid histogram.
#[no_mangle]
pub unsafe extern "C" fn ghm_c_accumulate(
    cfg: *const ghm_c_config,
    pred: *const f32,
    target: *const f32,
    label_weight: *const f32,
    n: usize,
    h: *mut Hist,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmC>(cfg);
        accumulate(c, Source::dense(pred, target, label_weight, n), h, r, None)
    }
}

/// Phase 1 of GHM-C with class-index labels: adds anchors `[anchor_begin, anchor_end)` of the
/// full `[num_anchors x num_classes]` batch to `*h` (buffers are the full batch's).
///
/// # Safety
/// As `ghm_c_loss_grad_labels`; `h` points to a valid histogram.
#[no_mangle]
pub unsafe extern "C" fn ghm_c_accumulate_labels(
    cfg: *const ghm_c_config,
    pred: *const f32,
    labels: *const i32,
    anchor_weight: *const f32,
    num_anchors: usize,
    num_classes: usize,
    layout: u32,
    anchor_begin: usize,
    anchor_end: usize,
    h: *mut Hist,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmC>(cfg);
        let src = Source::labels(
            pred,
            labels,
            anchor_weight,
            num_anchors,
            num_classes,
            layout,
            (anchor_begin, anchor_end),
        );
        accumulate(c, src, h, r, None)
    }
}

/// Phase 2 of GHM-C, once per batch: updates `*ema` (if momentum > 0) and writes the bin
/// weights, gradient factors and the batch's loss to `*w`.
///
/// # Safety
/// `h` and `w` point to valid structs; `ema` is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn ghm_c_finalize(
    cfg: *const ghm_c_config,
    ema: *mut Ema,
    h: *const Hist,
    w: *mut Weights,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmC>(cfg);
        finalize(c, ema, h, w, r)
    }
}

/// Phase 3 of GHM-C: gradients (and loss elements) of a chunk of `n` elements.
///
/// With skip_bad = 0 the inputs are checked before anything is written (an extra read pass).
/// A chunk already accumulated with skip_bad = 0 holds no bad element: applying it with
/// skip_bad = 1 gives identical results without that pass.
///
/// # Safety
/// As `ghm_c_loss_grad`; `w` points to valid weights.
#[no_mangle]
pub unsafe extern "C" fn ghm_c_apply(
    cfg: *const ghm_c_config,
    w: *const Weights,
    pred: *const f32,
    target: *const f32,
    label_weight: *const f32,
    n: usize,
    grad: *mut f32,
    loss_elems: *mut f32,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmC>(cfg);
        apply(
            c,
            w,
            Source::dense(pred, target, label_weight, n),
            grad,
            loss_elems,
            r,
            None,
        )
    }
}

/// Phase 3 of GHM-C with class-index labels: writes the gradients (and loss elements) of
/// anchors `[anchor_begin, anchor_end)` into the full-size `grad` / `loss_elems`.
///
/// # Safety
/// As `ghm_c_loss_grad_labels`; `w` points to valid weights.
#[no_mangle]
pub unsafe extern "C" fn ghm_c_apply_labels(
    cfg: *const ghm_c_config,
    w: *const Weights,
    pred: *const f32,
    labels: *const i32,
    anchor_weight: *const f32,
    num_anchors: usize,
    num_classes: usize,
    layout: u32,
    anchor_begin: usize,
    anchor_end: usize,
    grad: *mut f32,
    loss_elems: *mut f32,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmC>(cfg);
        let src = Source::labels(
            pred,
            labels,
            anchor_weight,
            num_anchors,
            num_classes,
            layout,
            (anchor_begin, anchor_end),
        );
        apply(c, w, src, grad, loss_elems, r, None)
    }
}

/// Phase 1 of GHM-R: adds a chunk of `n` elements to `*h`.
///
/// # Safety
/// As `ghm_r_loss_grad`; `h` points to a valid histogram.
#[no_mangle]
pub unsafe extern "C" fn ghm_r_accumulate(
    cfg: *const ghm_r_config,
    pred: *const f32,
    target: *const f32,
    label_weight: *const f32,
    n: usize,
    h: *mut Hist,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmR>(cfg);
        accumulate(c, Source::dense(pred, target, label_weight, n), h, r, None)
    }
}

/// Phase 2 of GHM-R, once per batch (see `ghm_c_finalize`).
///
/// # Safety
/// As `ghm_c_finalize`.
#[no_mangle]
pub unsafe extern "C" fn ghm_r_finalize(
    cfg: *const ghm_r_config,
    ema: *mut Ema,
    h: *const Hist,
    w: *mut Weights,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmR>(cfg);
        finalize(c, ema, h, w, r)
    }
}

/// Phase 3 of GHM-R: gradients (and loss elements) of a chunk of `n` elements.
///
/// # Safety
/// As `ghm_c_apply`.
#[no_mangle]
pub unsafe extern "C" fn ghm_r_apply(
    cfg: *const ghm_r_config,
    w: *const Weights,
    pred: *const f32,
    target: *const f32,
    label_weight: *const f32,
    n: usize,
    grad: *mut f32,
    loss_elems: *mut f32,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmR>(cfg);
        apply(
            c,
            w,
            Source::dense(pred, target, label_weight, n),
            grad,
            loss_elems,
            r,
            None,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Blocked views: the same calls, in place inside a trainer's tensors

/// `ghm_c_loss_grad` over `blocks->count` blocks of `blocks->len` elements, each array read
/// (and `grad`, `loss_elems` written) through its view: element `i` of block `b` is
/// `pred[blocks->pred.offset + b * blocks->pred.stride + i]`, and so on. The density is over
/// the whole batch (one call per layer). Views of one buffer that share no element are fine
/// (GHM_ERR_ALIAS only if an output shares an element with an input, another output, or
/// itself).
///
/// # Safety
/// `blocks` points to a valid `ghm_blocks`; every non-NULL pointer is valid for its view's
/// extent (`offset + (count - 1) * stride + len` elements).
#[no_mangle]
pub unsafe extern "C" fn ghm_c_loss_grad_blocks(
    cfg: *const ghm_c_config,
    ema: *mut Ema,
    blocks: *const Blocks,
    pred: *const f32,
    target: *const f32,
    label_weight: *const f32,
    grad: *mut f32,
    loss: *mut f32,
    loss_elems: *mut f32,
    stats: *mut Stats,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmC>(cfg);
        let (src, br) = dense_blocks(blocks, pred, target, label_weight);
        one_call(c, ema, src, grad, loss, loss_elems, stats, r, br)
    }
}

/// `ghm_c_loss_grad_labels` over `blocks->count` blocks of `blocks->len` anchors each: a
/// block's `pred`, `grad` and `loss_elems` are `len * num_classes` contiguous floats in
/// `layout` order (Darknet's class planes of one (image, anchor): class-major), its `labels`
/// (view `blocks->target`) and `anchor_weight` (view `blocks->weight`) `len` values.
///
/// # Safety
/// As `ghm_c_loss_grad_blocks`.
#[no_mangle]
pub unsafe extern "C" fn ghm_c_loss_grad_labels_blocks(
    cfg: *const ghm_c_config,
    ema: *mut Ema,
    blocks: *const Blocks,
    pred: *const f32,
    labels: *const i32,
    anchor_weight: *const f32,
    num_classes: usize,
    layout: u32,
    grad: *mut f32,
    loss: *mut f32,
    loss_elems: *mut f32,
    stats: *mut Stats,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmC>(cfg);
        let (src, br) = labels_blocks(blocks, pred, labels, anchor_weight, num_classes, layout);
        one_call(c, ema, src, grad, loss, loss_elems, stats, r, br)
    }
}

/// `ghm_r_loss_grad` through blocked views (see `ghm_c_loss_grad_blocks`).
///
/// # Safety
/// As `ghm_c_loss_grad_blocks`.
#[no_mangle]
pub unsafe extern "C" fn ghm_r_loss_grad_blocks(
    cfg: *const ghm_r_config,
    ema: *mut Ema,
    blocks: *const Blocks,
    pred: *const f32,
    target: *const f32,
    label_weight: *const f32,
    grad: *mut f32,
    loss: *mut f32,
    loss_elems: *mut f32,
    stats: *mut Stats,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmR>(cfg);
        let (src, br) = dense_blocks(blocks, pred, target, label_weight);
        one_call(c, ema, src, grad, loss, loss_elems, stats, r, br)
    }
}

/// The source of a dense blocked call, and the region of its `ghm_blocks`.
///
/// # Safety
/// `blocks` is NULL or valid.
unsafe fn dense_blocks(
    blocks: *const Blocks,
    pred: *const f32,
    target: *const f32,
    weight: *const f32,
) -> (Result<Source, Fault>, Option<Region>) {
    // SAFETY: forwarded from the caller.
    match unsafe { self::blocks(blocks) } {
        Ok((b, br)) => (Source::dense_in(pred, target, weight, b, true), Some(br)),
        Err(e) => (Err(e), None),
    }
}

/// The source of a blocked call with class-index labels (every anchor of every block), and
/// the region of its `ghm_blocks`.
///
/// # Safety
/// `blocks` is NULL or valid.
unsafe fn labels_blocks(
    blocks: *const Blocks,
    pred: *const f32,
    labels: *const i32,
    weight: *const f32,
    classes: usize,
    layout: u32,
) -> (Result<Source, Fault>, Option<Region>) {
    // SAFETY: forwarded from the caller.
    match unsafe { self::blocks(blocks) } {
        Ok((b, br)) => {
            let range = (0, b.len);
            let src = Source::labels_in(pred, labels, weight, classes, layout, range, b, true);
            (src, Some(br))
        }
        Err(e) => (Err(e), None),
    }
}

/// `ghm_c_accumulate` through blocked views. A chunk of a blocked batch is a range of its
/// blocks: `count` and `offset`s moved (`offset + first * stride`).
///
/// # Safety
/// As `ghm_c_loss_grad_blocks`; `h` points to a valid histogram.
#[no_mangle]
pub unsafe extern "C" fn ghm_c_accumulate_blocks(
    cfg: *const ghm_c_config,
    blocks: *const Blocks,
    pred: *const f32,
    target: *const f32,
    label_weight: *const f32,
    h: *mut Hist,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmC>(cfg);
        let (src, br) = dense_blocks(blocks, pred, target, label_weight);
        accumulate(c, src, h, r, br)
    }
}

/// `ghm_c_accumulate_labels` through blocked views (every anchor of every block).
///
/// # Safety
/// As `ghm_c_loss_grad_labels_blocks`; `h` points to a valid histogram.
#[no_mangle]
pub unsafe extern "C" fn ghm_c_accumulate_labels_blocks(
    cfg: *const ghm_c_config,
    blocks: *const Blocks,
    pred: *const f32,
    labels: *const i32,
    anchor_weight: *const f32,
    num_classes: usize,
    layout: u32,
    h: *mut Hist,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmC>(cfg);
        let (src, br) = labels_blocks(blocks, pred, labels, anchor_weight, num_classes, layout);
        accumulate(c, src, h, r, br)
    }
}

/// `ghm_c_apply` through blocked views.
///
/// # Safety
/// As `ghm_c_loss_grad_blocks`; `w` points to valid weights.
#[no_mangle]
pub unsafe extern "C" fn ghm_c_apply_blocks(
    cfg: *const ghm_c_config,
    w: *const Weights,
    blocks: *const Blocks,
    pred: *const f32,
    target: *const f32,
    label_weight: *const f32,
    grad: *mut f32,
    loss_elems: *mut f32,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmC>(cfg);
        let (src, br) = dense_blocks(blocks, pred, target, label_weight);
        apply(c, w, src, grad, loss_elems, r, br)
    }
}

/// `ghm_c_apply_labels` through blocked views (every anchor of every block).
///
/// # Safety
/// As `ghm_c_loss_grad_labels_blocks`; `w` points to valid weights.
#[no_mangle]
pub unsafe extern "C" fn ghm_c_apply_labels_blocks(
    cfg: *const ghm_c_config,
    w: *const Weights,
    blocks: *const Blocks,
    pred: *const f32,
    labels: *const i32,
    anchor_weight: *const f32,
    num_classes: usize,
    layout: u32,
    grad: *mut f32,
    loss_elems: *mut f32,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmC>(cfg);
        let (src, br) = labels_blocks(blocks, pred, labels, anchor_weight, num_classes, layout);
        apply(c, w, src, grad, loss_elems, r, br)
    }
}

/// `ghm_r_accumulate` through blocked views.
///
/// # Safety
/// As `ghm_c_loss_grad_blocks`; `h` points to a valid histogram.
#[no_mangle]
pub unsafe extern "C" fn ghm_r_accumulate_blocks(
    cfg: *const ghm_r_config,
    blocks: *const Blocks,
    pred: *const f32,
    target: *const f32,
    label_weight: *const f32,
    h: *mut Hist,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmR>(cfg);
        let (src, br) = dense_blocks(blocks, pred, target, label_weight);
        accumulate(c, src, h, r, br)
    }
}

/// `ghm_r_apply` through blocked views.
///
/// # Safety
/// As `ghm_c_loss_grad_blocks`; `w` points to valid weights.
#[no_mangle]
pub unsafe extern "C" fn ghm_r_apply_blocks(
    cfg: *const ghm_r_config,
    w: *const Weights,
    blocks: *const Blocks,
    pred: *const f32,
    target: *const f32,
    label_weight: *const f32,
    grad: *mut f32,
    loss_elems: *mut f32,
) -> ghm_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (c, r) = config::<_, GhmR>(cfg);
        let (src, br) = dense_blocks(blocks, pred, target, label_weight);
        apply(c, w, src, grad, loss_elems, r, br)
    }
}
