//! The scalar path: one element at a time, written to read like docs/contract.md section 1.
//!
//! It is the fallback where no vector backend applies, the backend to force when in doubt,
//! and the oracle the vector kernels are tested against. It shares with them only the input
//! layouts, the bin edges and the function that computes the gradient norm (so that both put
//! every element in the same bin); its losses come from `libm` and its bins from
//! [`Bins::scalar`].

use crate::bins::Bins;
use crate::config::MAX_BINS;
use crate::error::Error;
use crate::kernel::{weighted_loss, Outputs};
use crate::model::Model;
use crate::simd::Vector;
use crate::source::{Batch, Scratch, Seg, Src, Visitor, STAGE};
use crate::state::{Hist, Weights};
use crate::view::View;

/// One element as the passes see it.
struct Element {
    x: f32,
    t: f32,
    w: f32,
    bad: bool,
}

/// Calls `f` with each element of a segment and its index, in order, until it fails.
fn each_element<M: Model>(
    model: &M,
    pred: &[f32],
    mut targets: Src<'_>,
    scratch: &mut Scratch,
    mut f: impl FnMut(usize, Element) -> Result<(), Error>,
) -> Result<(), Error> {
    let Scratch { t, w, .. } = scratch;
    for (b, xs) in pred.chunks(STAGE).enumerate() {
        // A block's targets at a time, as the vector kernels read them.
        let (ts, ws) = targets.stage_part::<f32>(xs.len(), t, w);
        for (j, ((&x, &t), &w)) in xs.iter().zip(ts).zip(ws).enumerate() {
            // The vector kernels' rule for a bad weight (`kernel::bad_lanes`), on one lane.
            let bad = !w.in_range(0.0, f32::MAX) || !model.ok(x, t);
            f(b * STAGE + j, Element { x, t, w, bad })?;
        }
    }
    Ok(())
}

struct Accumulate<'a, M> {
    model: M,
    bins: &'a Bins,
    pred: &'a [f32],
    skip_bad: bool,
    hist: Hist,
}

impl<M: Model> Visitor<f32> for Accumulate<'_, M> {
    fn segment(&mut self, seg: Seg, targets: Src<'_>, scratch: &mut Scratch) -> Result<(), Error> {
        let (model, bins, skip_bad) = (&self.model, self.bins, self.skip_bad);
        let h = &mut self.hist;
        each_element(model, &self.pred[seg.pred()], targets, scratch, |_, el| {
            if el.bad {
                if !skip_bad {
                    return Err(Error::Input);
                }
                h.skipped += 1;
                return Ok(());
            }
            if el.w > 0.0 {
                let g = model.eval::<f32, false>(el.x, el.t).g;
                if let Some(k) = bins.scalar(g) {
                    h.counts[k] += 1;
                    h.loss_sums[k] += model.loss_scalar(el.x, el.t) as f64;
                    // Rounded to a multiple of 2^-23, as the vector kernels do.
                    h.g_sums[k] += ((g + 1.0) - 1.0) as f64;
                }
            }
            h.tot += el.w as f64; // GHM-R's tot; GHM-C's is recomputed below
            Ok(())
        })
    }
}

/// Pass 1, one element at a time (see [`crate::kernel::accumulate`]).
pub(crate) fn accumulate<M: Model>(
    model: M,
    bins: &Bins,
    batch: &Batch<'_>,
    skip_bad: bool,
    g_sums: bool,
) -> Result<Hist, Error> {
    let mut acc = Accumulate {
        model,
        bins,
        pred: batch.pred(),
        skip_bad,
        hist: Hist::new(bins.m as u32)?,
    };
    batch.visit::<f32, _>(&mut acc)?;
    let mut hist = acc.hist;
    // As the vector kernels: the sums of `g` in place of the loss sums when asked for.
    if g_sums {
        hist.loss_sums = [0.0; MAX_BINS];
    } else {
        hist.g_sums = [0.0; MAX_BINS];
    }
    if !M::TOT_IS_WEIGHT_SUM {
        hist.tot = hist.counts[..bins.m.min(MAX_BINS)].iter().sum::<u64>() as f64;
    }
    Ok(hist)
}

struct Check<'a, M> {
    model: M,
    pred: &'a [f32],
}

impl<M: Model> Visitor<f32> for Check<'_, M> {
    fn segment(&mut self, seg: Seg, targets: Src<'_>, scratch: &mut Scratch) -> Result<(), Error> {
        each_element(
            &self.model,
            &self.pred[seg.pred()],
            targets,
            scratch,
            |_, el| match el.bad {
                true => Err(Error::Input),
                false => Ok(()),
            },
        )
    }
}

/// [`Error::Input`] if any element of `batch` is bad.
pub(crate) fn check<M: Model>(model: M, batch: &Batch<'_>) -> Result<(), Error> {
    batch.visit::<f32, _>(&mut Check {
        model,
        pred: batch.pred(),
    })
}

struct Apply<'a, M> {
    model: M,
    bins: &'a Bins,
    weights: &'a Weights,
    loss_weight: f32,
    pred: &'a [f32],
    out: Outputs<'a>,
    /// Where each block's part of the gradient and of the per-element losses lies.
    views: (View, View),
    sum: f64,
}

impl<M: Model> Visitor<f32> for Apply<'_, M> {
    fn segment(&mut self, seg: Seg, targets: Src<'_>, scratch: &mut Scratch) -> Result<(), Error> {
        let (gi, li) = (seg.out(self.views.0).start, seg.out(self.views.1).start);
        let pred: &[f32] = self.pred;
        let pred = &pred[seg.pred()];
        let model = self.model;
        each_element(&model, pred, targets, scratch, |j, el| {
            let (gi, li) = (gi + j, li + j);
            // The bin and `dl/dx` of a valid element (bad elements only reach this pass with
            // skip_bad: they get weight 0). `g` and `dl/dx`, and the loss, are evaluated once
            // per element here, not left to the optimizer to merge: when it did not, the
            // scalar path ran 40% slower.
            let binned = if el.w > 0.0 && !el.bad {
                let e = self.model.eval::<f32, false>(el.x, el.t);
                self.bins.scalar(e.g).map(|k| (k, e.grad))
            } else {
                None
            };
            if let Some(grad) = self.out.grad.as_deref_mut() {
                let g = match binned {
                    Some((k, d)) => self.weights.scale[k] * d,
                    None => 0.0,
                };
                grad[gi] = if self.out.accumulate { grad[gi] + g } else { g };
            }
            let wants_loss = self.out.sum_loss || self.out.loss_elems.is_some();
            let l = match binned {
                Some((k, _)) if wants_loss => Some((k, self.model.loss_scalar(el.x, el.t))),
                _ => None,
            };
            if let (true, Some((k, l))) = (self.out.sum_loss, l) {
                self.sum += self.weights.weight[k] as f64 * l as f64;
            }
            if let Some(le) = self.out.loss_elems.as_deref_mut() {
                le[li] = match l {
                    Some((k, l)) => weighted_loss(self.loss_weight, self.weights.weight[k], l),
                    None => 0.0,
                };
            }
            Ok(())
        })
    }
}

/// Pass 2, one element at a time (see [`crate::kernel::apply`]).
pub(crate) fn apply<M: Model>(
    model: M,
    bins: &Bins,
    weights: &Weights,
    loss_weight: f32,
    batch: &Batch<'_>,
    out: Outputs<'_>,
) -> Result<f64, Error> {
    let mut a = Apply {
        model,
        bins,
        weights,
        loss_weight,
        pred: batch.pred(),
        out,
        views: (batch.geometry().grad, batch.geometry().loss_elems),
        sum: 0.0,
    };
    batch.visit::<f32, _>(&mut a)?;
    Ok(a.sum)
}
