//! Plain-data state shared with C: EMA, histogram, weights and statistics, and the per-batch
//! step between the two passes (EMA update, harmonizing weights, reduced loss).
//!
//! Every struct here is `#[repr(C)]` and is the C type of docs/contract.md section 3 itself (`ghm_ema`,
//! `ghm_hist`, `ghm_weights`, `ghm_stats`), so the C layer passes them through untouched.

use crate::config::{EmaStart, Normalize, Plan, Reduction, MAX_BINS};
use crate::error::Error;
use crate::fault::Fault;

/// A state fault; the C layer names the argument.
const fn state(why: &'static core::ffi::CStr) -> Fault {
    Fault::new(Error::State, c"", why)
}

/// [`Error::State`] if there is a fault.
fn refused(fault: Option<Fault>) -> Result<(), Error> {
    fault.map_or(Ok(()), |_| Err(Error::State))
}

/// A state made for `bins` bins where the configuration has another count.
fn other_bins(bins: u32) -> Fault {
    state(c"differs from cfg.bins (made for another bin count)")
        .field(c"bins")
        .value(bins as f64)
}

/// Exponential moving average of the bin counts, owned by the caller and carried across
/// batches (mmdet's `acc_sum` buffer). C: `ghm_ema`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Ema {
    /// The bin count this state was made for.
    pub bins: u32,
    /// Smoothed count per bin; entries at and beyond `bins` are unused.
    pub acc_sum: [f32; MAX_BINS],
}

impl Ema {
    /// All zeros, like mmdet's buffer; [`Error::Config`] if `bins` is not in `1..=MAX_BINS`.
    pub fn new(bins: u32) -> Result<Ema, Error> {
        if bins == 0 || bins as usize > MAX_BINS {
            return Err(Error::Config);
        }
        Ok(Ema {
            bins,
            acc_sum: [0.0; MAX_BINS],
        })
    }

    /// [`Error::State`] unless this state fits `bins` and holds finite, non-negative counts.
    fn check(&self, bins: usize) -> Result<(), Error> {
        refused(self.fault(bins))
    }

    /// What [`Ema::check`] refuses, explained (the argument left for the caller to name).
    pub(crate) fn fault(&self, bins: usize) -> Option<Fault> {
        if self.bins as usize != bins {
            return Some(other_bins(self.bins));
        }
        let bad = self.acc_sum[..bins]
            .iter()
            .position(|a| !(0.0..=f32::MAX).contains(a))?;
        let v = self.acc_sum[bad] as f64;
        Some(
            state(c"is not a finite count >= 0")
                .field(c"acc_sum")
                .at(bad)
                .value(v),
        )
    }
}

/// What the first pass learns about a batch or a chunk of one: plain data that merges by
/// element-wise addition, so chunks accumulated on other threads, processes or machines can
/// be combined (e.g. `MPI_Allreduce` with `MPI_SUM` over each field). C: `ghm_hist`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Hist {
    /// The bin count this histogram was made for.
    pub bins: u32,
    /// Zero.
    pub reserved: u32,
    /// Valid elements per bin.
    pub counts: [u64; MAX_BINS],
    /// Sum of the unweighted per-element losses `l` per bin.
    pub loss_sums: [f64; MAX_BINS],
    /// GHM-C: the number of valid elements; GHM-R: the sum of the label weights.
    pub tot: f64,
    /// Bad elements excluded (with `skip_bad`).
    pub skipped: u64,
    /// Sum of the gradient norms `g` per bin, each rounded to a multiple of `2^-23` (exact
    /// sums); filled only with [`Normalize::GradMass`](crate::Normalize::GradMass).
    pub g_sums: [f64; MAX_BINS],
}

impl Hist {
    /// An empty histogram; [`Error::Config`] if `bins` is not in `1..=MAX_BINS`.
    pub fn new(bins: u32) -> Result<Hist, Error> {
        if bins == 0 || bins as usize > MAX_BINS {
            return Err(Error::Config);
        }
        Ok(Hist {
            bins,
            reserved: 0,
            counts: [0; MAX_BINS],
            loss_sums: [0.0; MAX_BINS],
            tot: 0.0,
            skipped: 0,
            g_sums: [0.0; MAX_BINS],
        })
    }

    /// Adds `other` into `self` (counts saturate). [`Error::State`] if the bin counts differ.
    pub fn merge(&mut self, other: &Hist) -> Result<(), Error> {
        if self.bins != other.bins || self.bins as usize > MAX_BINS {
            return Err(Error::State);
        }
        let m = self.bins as usize;
        for k in 0..m {
            self.counts[k] = self.counts[k].saturating_add(other.counts[k]);
            self.loss_sums[k] += other.loss_sums[k];
            self.g_sums[k] += other.g_sums[k];
        }
        self.tot += other.tot;
        self.skipped = self.skipped.saturating_add(other.skipped);
        Ok(())
    }

    /// [`Error::State`] unless the histogram fits `bins` and its sums are possible.
    pub(crate) fn check(&self, bins: usize) -> Result<(), Error> {
        refused(self.fault(bins))
    }

    /// What [`Hist::check`] refuses, explained (the argument left for the caller to name).
    pub(crate) fn fault(&self, bins: usize) -> Option<Fault> {
        if self.bins as usize != bins {
            return Some(other_bins(self.bins));
        }
        let m = bins.min(MAX_BINS);
        // +inf is allowed in the loss sums: GHM-R losses beyond f32::MAX.
        if let Some(k) = self.loss_sums[..m]
            .iter()
            .position(|s| s.is_nan() || *s < 0.0)
        {
            let f = state(c"is not a sum >= 0").field(c"loss_sums");
            return Some(f.at(k).value(self.loss_sums[k]));
        }
        if let Some(k) = self.g_sums[..m]
            .iter()
            .position(|s| !(*s >= 0.0 && s.is_finite()))
        {
            let f = state(c"is not a finite sum >= 0").field(c"g_sums");
            return Some(f.at(k).value(self.g_sums[k]));
        }
        if !(self.tot >= 0.0 && self.tot.is_finite()) {
            let f = state(c"is not a finite total >= 0").field(c"tot");
            return Some(f.value(self.tot));
        }
        None
    }
}

/// The result of the per-batch step: the harmonizing weight and gradient factor of each bin
/// and the reduced loss of the whole batch. C: `ghm_weights`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Weights {
    /// The bin count.
    pub bins: u32,
    /// Bins holding at least one valid element.
    pub nonempty_bins: u32,
    /// The avg factor used: `max(hist.tot, 1)`.
    pub tot: f64,
    /// Reduced weighted loss of the whole batch.
    pub loss: f64,
    /// `w_k`: the harmonizing weight of bin `k` (before loss weight, `1/tot` and grad scale).
    pub weight: [f32; MAX_BINS],
    /// Gradient factor of bin `k`: `grad = scale[k] * dl/dx`, with the grad scale, loss
    /// weight and (MEAN) `1/(tot + FLT_EPSILON)` folded in.
    pub scale: [f32; MAX_BINS],
}

impl Weights {
    /// [`Error::State`] unless these weights fit `bins` and are finite.
    pub(crate) fn check(&self, bins: usize) -> Result<(), Error> {
        refused(self.fault(bins))
    }

    /// What [`Weights::check`] refuses, explained (the argument left for the caller to name).
    pub(crate) fn fault(&self, bins: usize) -> Option<Fault> {
        if self.bins as usize != bins {
            return Some(other_bins(self.bins));
        }
        let m = bins.min(MAX_BINS);
        for (name, v) in [(c"weight", &self.weight), (c"scale", &self.scale)] {
            if let Some(k) = v[..m].iter().position(|x| !x.is_finite()) {
                return Some(state(c"is not finite").field(name).at(k).value(v[k] as f64));
            }
        }
        None
    }
}

/// What one call did, for logging and tests. C: `ghm_stats`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct Stats {
    /// The bin count.
    pub bins: u32,
    /// Bins holding at least one valid element.
    pub nonempty_bins: u32,
    /// The avg factor used: `max(tot, 1)`.
    pub tot: f64,
    /// This call's valid elements per bin.
    pub counts: [u64; MAX_BINS],
    /// `w` of the elements of each bin (before loss weight, `1/tot` and grad scale).
    pub weights: [f32; MAX_BINS],
    /// Bad elements excluded (with `skip_bad`).
    pub skipped: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            bins: 0,
            nonempty_bins: 0,
            tot: 0.0,
            counts: [0; MAX_BINS],
            weights: [0.0; MAX_BINS],
            skipped: 0,
        }
    }
}

impl Stats {
    pub(crate) fn of(hist: &Hist, w: &Weights) -> Stats {
        Stats {
            bins: hist.bins,
            nonempty_bins: w.nonempty_bins,
            tot: w.tot,
            counts: hist.counts,
            weights: w.weight,
            skipped: hist.skipped,
        }
    }
}

/// The per-batch step of docs/contract.md section 1: from the merged histogram, update the EMA (when
/// `momentum > 0`), derive every bin's weight and gradient factor, and reduce the loss.
///
/// Returns the weights and the EMA state to store; the caller commits the latter only once
/// nothing can fail any more. [`Error::Config`] if a bin's gradient factor
/// `grad_scale * loss_weight * w_k (/ (tot + eps))` overflows f32 (the loss itself may be
/// `+inf`: GHM-R's is where the true value exceeds `f32::MAX`). All arithmetic is f64, rounded once to f32 where the result is
/// f32 (the EMA, the weights, the factors), so it is at least as accurate as mmdet's mix of
/// f32 and f64 and is the same for any chunking of the batch.
pub(crate) fn finalize(
    plan: &Plan,
    ema: Option<&Ema>,
    hist: &Hist,
) -> Result<(Weights, Option<Ema>), Error> {
    let m = plan.bins;
    hist.check(m)?;
    let ema = if plan.momentum > 0.0 {
        let e = ema.ok_or(Error::State)?;
        e.check(m)?;
        Some(*e)
    } else {
        None
    };

    let tot = hist.tot.max(1.0);
    let nonempty = hist.counts[..m].iter().filter(|&&c| c > 0).count();
    let mut new_ema = ema;
    let mut w = Weights {
        bins: m as u32,
        nonempty_bins: nonempty as u32,
        tot,
        loss: 0.0,
        weight: [0.0; MAX_BINS],
        scale: [0.0; MAX_BINS],
    };
    let norm = norm(plan, tot);
    let lw = plan.loss_weight as f64;
    let mut loss = 0.0;
    // mmdet's weights first, then the gradient-mass factor (1 without normalisation).
    let mut mmdet = [0.0f32; MAX_BINS];
    for (k, mk) in mmdet[..m].iter_mut().enumerate() {
        let count = hist.counts[k];
        if count == 0 {
            continue;
        }
        let density = match new_ema.as_mut() {
            Some(e) => {
                let mmt = plan.momentum as f64;
                let acc = if plan.ema_start == EmaStart::FirstCount && e.acc_sum[k] == 0.0 {
                    count as f32
                } else {
                    (mmt * e.acc_sum[k] as f64 + (1.0 - mmt) * count as f64) as f32
                };
                e.acc_sum[k] = acc;
                acc as f64
            }
            None => count as f64,
        };
        *mk = (tot / density / nonempty as f64) as f32;
    }
    let mass = match plan.normalize {
        Normalize::None => 1.0,
        Normalize::GradMass => {
            let plain: f64 = hist.g_sums[..m].iter().sum();
            let weighted: f64 = (0..m).map(|k| mmdet[k] as f64 * hist.g_sums[k]).sum();
            if weighted > 0.0 {
                plain / weighted
            } else {
                1.0
            }
        }
    };
    for (k, &mk) in mmdet[..m].iter().enumerate() {
        if hist.counts[k] == 0 {
            continue;
        }
        let wk = (mk as f64 * mass) as f32;
        let scale = (plan.grad_scale as f64 * lw * wk as f64 * norm) as f32;
        if !scale.is_finite() {
            // grad_scale * loss_weight is so large that a gradient factor overflows f32:
            // refused like any other unusable configuration, before anything is written.
            return Err(Error::Config);
        }
        w.weight[k] = wk;
        w.scale[k] = scale;
        loss += wk as f64 * hist.loss_sums[k];
    }
    w.loss = reduced_loss(plan, tot, loss);
    Ok((w, new_ema))
}

/// The reduction's factor: `1 / (tot + FLT_EPSILON)` for MEAN, 1 otherwise.
fn norm(plan: &Plan, tot: f64) -> f64 {
    match plan.reduction {
        Reduction::Mean => 1.0 / (tot + f32::EPSILON as f64),
        Reduction::Sum | Reduction::None => 1.0,
    }
}

/// The batch's loss from `sum_k(w_k * loss_sums[k])` (or the same sum taken per element).
pub(crate) fn reduced_loss(plan: &Plan, tot: f64, weighted_sum: f64) -> f64 {
    plan.loss_weight as f64 * weighted_sum * norm(plan, tot)
}
