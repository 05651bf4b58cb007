//! Configuration of GHM-C and GHM-R: the Rust mirror of `ghm_c_config` / `ghm_r_config`.

use crate::backend::Backend;
use crate::error::Error;
use crate::fault::Fault;
use core::ffi::CStr;

/// Largest supported number of bins (C: `GHM_MAX_BINS`); the state structs have exactly
/// this many entries.
pub const MAX_BINS: usize = 128;

/// How per-element weighted losses are reduced to the returned loss (docs/contract.md section 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Reduction {
    /// `loss = lw * sum(w * l) / (tot + FLT_EPSILON)` (mmdet's default).
    #[default]
    Mean = 0,
    /// `loss = lw * sum(w * l)`.
    Sum = 1,
    /// The loss is still returned as `sum(lw * w * l)`; use `loss_elems` for the elements.
    None = 2,
}

/// What the GHM-C prediction buffer holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Input {
    /// Logits `x`; the loss is BCE with logits.
    #[default]
    Logits = 0,
    /// Probabilities `p = sigmoid(x)` (Darknet hands these over); gradients are still with
    /// respect to the logit: `p - t`.
    Probs = 1,
}

/// Memory order of `[anchors x classes]` logits with class-index labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Layout {
    /// `[N][C]`: the C logits of an anchor are adjacent (mmdet).
    #[default]
    AnchorMajor = 0,
    /// `[C][N]`: one plane of N anchors per class (Darknet-style maps).
    ClassMajor = 1,
}

/// Whether the harmonizing weights are rescaled per batch, and how.
///
/// GHM's weights average 1 over the valid elements (`sum_k count_k * tot / (count_k * n) =
/// tot`), but they move weight from the many elements with a small gradient norm `g` to the
/// few with a large one, so the batch's total gradient `sum_i w_i |dl/dx_i|` grows: on a
/// dense objectness map (nearly every element an easy negative, `g` near 0) it was 42 times
/// plain BCE's in `ffi-tests/examples/yolo_train.c`, whatever the reduction, and a learning
/// rate tuned for BCE no longer fits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Normalize {
    /// mmdet's weights, as they are.
    #[default]
    None = 0,
    /// Every weight times `s = sum_i g_i / sum_i w_i g_i` (valid elements of the batch; `g =
    /// |dl/dx|`), so that the total weighted gradient equals the unweighted loss's (plain
    /// BCE's, plain ASL1's) under the same reduction: a trainer keeps its learning rate, and
    /// GHM only redistributes the gradient among the elements. The loss, its elements and
    /// `Stats::weights` are scaled alike (the gradient stays the loss's gradient). The sums
    /// of `g` are taken per bin in pass 1, each `g` rounded to a multiple of `2^-23` first,
    /// so they are exact (and the same for any chunking, on any backend) while a batch's
    /// total stays below `2^30`.
    GradMass = 1,
}

/// How the EMA of the bin counts starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum EmaStart {
    /// From zeros (mmdet): the first update makes `acc = (1 - momentum) * count`, so the
    /// first batches' weights are about `1 / (1 - momentum)` times too large (4x at 0.75),
    /// fading as `momentum^t`.
    #[default]
    Zero = 0,
    /// A bin whose average is still 0 takes its count as it is (`acc = count`) instead of
    /// blending it with the zero: the first batch is weighted as without the EMA, and a bin
    /// seen for the first time later starts from its own count.
    FirstCount = 1,
}

macro_rules! enum_from_u32 {
    ($ty:ident { $($v:ident),+ }) => {
        impl TryFrom<u32> for $ty {
            type Error = Error;
            /// The C value, or [`Error::Config`] for an unknown one.
            fn try_from(value: u32) -> Result<Self, Error> {
                $(if value == $ty::$v as u32 { return Ok($ty::$v); })+
                Err(Error::Config)
            }
        }
    };
}
enum_from_u32!(Reduction { Mean, Sum, None });
enum_from_u32!(Input { Logits, Probs });
enum_from_u32!(Normalize { None, GradMass });
enum_from_u32!(EmaStart { Zero, FirstCount });
enum_from_u32!(Layout {
    AnchorMajor,
    ClassMajor
});

/// GHM-C (classification) configuration. `GhmC::default()` is mmdet's `GHMC()`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GhmC {
    /// Number of gradient-norm bins, `1..=MAX_BINS` (default 10).
    pub bins: u32,
    /// EMA momentum in `[0, 1)`; 0 disables the EMA (default 0).
    pub momentum: f32,
    /// Multiplies the loss, its elements and the gradient (default 1).
    pub loss_weight: f32,
    /// Loss reduction (default [`Reduction::Mean`]).
    pub reduction: Reduction,
    /// The gradient written is `grad_scale * dL/dx` (default 1; -1 gives Darknet's delta).
    pub grad_scale: f32,
    /// Add into the gradient buffer instead of overwriting it (default false).
    pub accumulate: bool,
    /// Exclude bad elements (counted in `Stats::skipped`) instead of failing (default false).
    ///
    /// Also faster when only gradients are asked for (and overwritten) on a vector backend:
    /// since nothing can then fail, pass 1 stores `dl/dx` in the gradient buffer and pass 2
    /// only rescales it, instead of reading the inputs again (about 1.4 vs 1.7 ns per element
    /// at 1Mi elements on AVX-512). Without `skip_bad` the one call does the same after
    /// checking its inputs, which reads them a third time: on AVX-512 up to 128Ki elements
    /// (where they sit in the caches), on the other vector backends at every size. On clean
    /// input the gradients are the same bit for bit, and the loss is within 1 ulp.
    pub skip_bad: bool,
    /// Logits or probabilities (default [`Input::Logits`]).
    pub input: Input,
    /// Rescale the weights so that the batch's gradient mass is the plain loss's (default
    /// [`Normalize::None`], mmdet).
    pub normalize: Normalize,
    /// How the EMA starts (default [`EmaStart::Zero`], mmdet).
    pub ema_start: EmaStart,
    /// Force a kernel backend; `None` picks the best one available (default).
    pub backend: Option<Backend>,
}

impl Default for GhmC {
    fn default() -> Self {
        GhmC {
            bins: 10,
            momentum: 0.0,
            loss_weight: 1.0,
            reduction: Reduction::Mean,
            grad_scale: 1.0,
            accumulate: false,
            skip_bad: false,
            input: Input::Logits,
            normalize: Normalize::None,
            ema_start: EmaStart::Zero,
            backend: None,
        }
    }
}

/// GHM-R (regression, Authentic Smooth L1) configuration. `GhmR::default()` is mmdet's
/// `GHMR()`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GhmR {
    /// Number of gradient-norm bins, `1..=MAX_BINS` (default 10).
    pub bins: u32,
    /// EMA momentum in `[0, 1)`; 0 disables the EMA (default 0).
    pub momentum: f32,
    /// The ASL1 parameter `mu`, finite and at least [`GhmR::MU_MIN`] (default 0.02).
    pub mu: f32,
    /// Multiplies the loss, its elements and the gradient (default 1).
    pub loss_weight: f32,
    /// Loss reduction (default [`Reduction::Mean`]).
    pub reduction: Reduction,
    /// The gradient written is `grad_scale * dL/dx` (default 1).
    pub grad_scale: f32,
    /// Add into the gradient buffer instead of overwriting it (default false).
    pub accumulate: bool,
    /// Exclude bad elements instead of failing (default false).
    pub skip_bad: bool,
    /// Rescale the weights so that the batch's gradient mass is the plain loss's (default
    /// [`Normalize::None`], mmdet).
    pub normalize: Normalize,
    /// How the EMA starts (default [`EmaStart::Zero`], mmdet).
    pub ema_start: EmaStart,
    /// Force a kernel backend; `None` picks the best one available (default).
    pub backend: Option<Backend>,
}

impl Default for GhmR {
    fn default() -> Self {
        GhmR {
            bins: 10,
            momentum: 0.0,
            mu: 0.02,
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

/// Which loss, with its per-element parameters: what the kernels need to know beyond the
/// shared settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Loss {
    /// GHM-C on logits.
    CLogits,
    /// GHM-C on probabilities.
    CProbs,
    /// GHM-R with its `mu`.
    R { mu: f32 },
}

/// A validated configuration, common to GHM-C and GHM-R: what every phase works from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub loss: Loss,
    pub bins: usize,
    pub momentum: f32,
    pub loss_weight: f32,
    pub reduction: Reduction,
    pub grad_scale: f32,
    pub accumulate: bool,
    pub skip_bad: bool,
    pub normalize: Normalize,
    pub ema_start: EmaStart,
    pub backend: Backend,
}

impl Plan {
    /// Checks the fields shared by GHM-C and GHM-R and resolves the backend.
    pub(crate) fn validated(mut self, backend: Option<Backend>) -> Result<Plan, Error> {
        if self.bad_field().is_some() {
            return Err(Error::Config);
        }
        self.backend = match backend {
            None => Backend::active(),
            Some(b) if b.is_available() => b,
            Some(_) => return Err(Error::Config),
        };
        Ok(self)
    }

    /// The first shared field out of range, explained (`cfg.<field>` in C).
    pub(crate) fn bad_field(&self) -> Option<Fault> {
        let bad = |field: &'static CStr, v: f64, why: &'static CStr| {
            Some(Fault::new(Error::Config, c"cfg", why).field(field).value(v))
        };
        if !(self.bins >= 1 && self.bins <= MAX_BINS) {
            return bad(c"bins", self.bins as f64, c"is not in 1..=128");
        }
        // `(0.0..1.0).contains` is false for NaN, as it must be.
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(c"momentum", self.momentum as f64, c"is not in [0, 1)");
        }
        if !self.loss_weight.is_finite() {
            return bad(c"loss_weight", self.loss_weight as f64, c"is not finite");
        }
        if !self.grad_scale.is_finite() {
            return bad(c"grad_scale", self.grad_scale as f64, c"is not finite");
        }
        None
    }

    /// The upper edge of the last bin: `1 + 1e-6` for GHM-C, `1000` for GHM-R (mmdet).
    pub fn last_edge(&self) -> f32 {
        match self.loss {
            Loss::CLogits | Loss::CProbs => 1.0 + 1e-6,
            Loss::R { .. } => 1000.0,
        }
    }
}

/// A configuration the library runs from: GHM-C or GHM-R, validated into a [`Plan`].
pub(crate) trait Planned {
    fn plan(&self) -> Result<Plan, Error>;
}

impl Planned for GhmC {
    fn plan(&self) -> Result<Plan, Error> {
        GhmC::plan(self)
    }
}

impl Planned for GhmR {
    fn plan(&self) -> Result<Plan, Error> {
        GhmR::plan(self)
    }
}

impl GhmC {
    /// Checks every field; the error is [`Error::Config`].
    pub fn validate(&self) -> Result<(), Error> {
        self.plan().map(|_| ())
    }

    pub(crate) fn plan(&self) -> Result<Plan, Error> {
        self.raw_plan().validated(self.backend)
    }

    /// The plan, unchecked (the backend still to resolve).
    pub(crate) fn raw_plan(&self) -> Plan {
        let loss = match self.input {
            Input::Logits => Loss::CLogits,
            Input::Probs => Loss::CProbs,
        };
        Plan {
            loss,
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

    /// The first field out of range, explained.
    pub(crate) fn bad_field(&self) -> Option<Fault> {
        self.raw_plan().bad_field()
    }
}

impl GhmR {
    /// The smallest `mu`: `sqrt(f32::MIN_POSITIVE)`, about `1.08e-19`. Below it `mu^2`
    /// underflows f32, and an element predicted exactly (`d = 0`) would get
    /// `g = 0 / sqrt(0 + 0)`, NaN (so would mmdet's f32 arithmetic).
    pub const MU_MIN: f32 = 1.084_202_2e-19;

    /// `mu` out of range, explained.
    pub(crate) fn bad_mu(&self) -> Option<Fault> {
        let ok = self.mu >= Self::MU_MIN && self.mu.is_finite();
        let why = c"is not finite and at least 1.0842022e-19 (below it, mu * mu underflows f32)";
        let f = Fault::new(Error::Config, c"cfg", why).field(c"mu");
        (!ok).then_some(f.value(self.mu as f64))
    }

    /// Checks every field; the error is [`Error::Config`].
    pub fn validate(&self) -> Result<(), Error> {
        self.plan().map(|_| ())
    }

    pub(crate) fn plan(&self) -> Result<Plan, Error> {
        if self.bad_mu().is_some() {
            return Err(Error::Config);
        }
        self.raw_plan().validated(self.backend)
    }

    /// The first field out of range, explained.
    pub(crate) fn bad_field(&self) -> Option<Fault> {
        self.bad_mu().or_else(|| self.raw_plan().bad_field())
    }

    /// The plan, unchecked (the backend still to resolve).
    pub(crate) fn raw_plan(&self) -> Plan {
        Plan {
            loss: Loss::R { mu: self.mu },
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
}
