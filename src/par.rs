//! Parallel one-call functions (feature `rayon`): the phased API run over chunks on rayon's
//! thread pool. Accumulate every chunk in parallel, merge, finalize once, apply every chunk in
//! parallel: by the phased API's guarantee the gradients are bit-identical to the serial one
//! call and the loss is within 1 ulp of it. (Unlike the core, this convenience allocates: the
//! chunk lists here, and whatever rayon's scheduling needs.)

use rayon::prelude::*;
use std::vec::Vec;

use crate::api::{Dense, Labels, Out};
use crate::config::{GhmC, GhmR, Layout};
use crate::error::Error;
use crate::state::{Ema, Hist, Stats, Weights};

/// Elements per parallel chunk: large enough that a chunk's cost dwarfs scheduling.
const CHUNK: usize = 1 << 16;

/// What the parallel driver needs of GHM-C and GHM-R on dense inputs.
trait DensePhases: Sync {
    fn bins(&self) -> u32;
    fn accumulate_dense(&self, input: &Dense<'_>, hist: &mut Hist) -> Result<(), Error>;
    fn finalize_hist(&self, ema: Option<&mut Ema>, hist: &Hist) -> Result<Weights, Error>;
    fn apply_dense(
        &self,
        w: &Weights,
        input: &Dense<'_>,
        grad: Option<&mut [f32]>,
        loss_elems: Option<&mut [f32]>,
    ) -> Result<(), Error>;
    fn one_call(
        &self,
        ema: Option<&mut Ema>,
        input: &Dense<'_>,
        out: Out<'_>,
    ) -> Result<f32, Error>;
}

macro_rules! dense_phases {
    ($t:ty) => {
        impl DensePhases for $t {
            fn bins(&self) -> u32 {
                self.bins
            }
            fn accumulate_dense(&self, input: &Dense<'_>, hist: &mut Hist) -> Result<(), Error> {
                self.accumulate(input, hist)
            }
            fn finalize_hist(&self, ema: Option<&mut Ema>, hist: &Hist) -> Result<Weights, Error> {
                self.finalize(ema, hist)
            }
            fn apply_dense(
                &self,
                w: &Weights,
                input: &Dense<'_>,
                grad: Option<&mut [f32]>,
                loss_elems: Option<&mut [f32]>,
            ) -> Result<(), Error> {
                // After a successful accumulate over the same data (see `dense_par`).
                Self {
                    skip_bad: true,
                    ..*self
                }
                .apply(w, input, grad, loss_elems)
            }
            fn one_call(
                &self,
                ema: Option<&mut Ema>,
                input: &Dense<'_>,
                out: Out<'_>,
            ) -> Result<f32, Error> {
                self.loss_grad(ema, input, out)
            }
        }
    };
}
dense_phases!(GhmC);
dense_phases!(GhmR);

/// The chunk `range` of a dense input.
fn sub<'a>(input: &Dense<'a>, r: core::ops::Range<usize>) -> Dense<'a> {
    Dense {
        pred: &input.pred[r.clone()],
        target: &input.target[r.clone()],
        label_weight: input.label_weight.map(|w| &w[r]),
    }
}

/// Apply after a successful accumulate over the same data: `skip_bad` lets apply skip its own
/// validation pass (accumulate with `skip_bad` off has refused any bad element, so there is
/// nothing to skip and the results are identical), reading the inputs once less.
fn dense_par<L: DensePhases>(
    cfg: &L,
    ema: Option<&mut Ema>,
    input: &Dense<'_>,
    out: Out<'_>,
) -> Result<f32, Error> {
    let n = input.pred.len();
    let shapes_ok = input.target.len() == n
        && input.label_weight.is_none_or(|w| w.len() == n)
        && out.grad.as_deref().is_none_or(|g| g.len() == n)
        && out.loss_elems.as_deref().is_none_or(|l| l.len() == n);
    if n <= CHUNK || !shapes_ok {
        // Small batches, and every error report, are the serial call's.
        return cfg.one_call(ema, input, out);
    }
    let starts: Vec<usize> = (0..n).step_by(CHUNK).collect();
    let hist = accumulate_par(cfg.bins(), &starts, |s, h| {
        cfg.accumulate_dense(&sub(input, s..n.min(s + CHUNK)), h)
    })?;
    let w = cfg.finalize_hist(ema, &hist)?;
    let Out {
        grad,
        loss_elems,
        stats,
    } = out;
    if grad.is_some() || loss_elems.is_some() {
        let grads = split(grad, 0..n, CHUNK, starts.len());
        let elems = split(loss_elems, 0..n, CHUNK, starts.len());
        starts
            .par_iter()
            .zip(grads)
            .zip(elems)
            .try_for_each(|((&s, g), l)| {
                cfg.apply_dense(&w, &sub(input, s..n.min(s + CHUNK)), g, l)
            })?;
    }
    if let Some(stats) = stats {
        *stats = Stats::of(&hist, &w);
    }
    Ok(w.loss as f32)
}

impl GhmC {
    /// [`GhmC::loss_grad`] on rayon's thread pool, for large batches: the same gradients bit
    /// for bit, the loss within 1 ulp. Batches of at most 64Ki elements run serially.
    pub fn loss_grad_par(
        &self,
        ema: Option<&mut Ema>,
        input: &Dense<'_>,
        out: Out<'_>,
    ) -> Result<f32, Error> {
        self.validate()?;
        dense_par(self, ema, input, out)
    }

    /// [`GhmC::loss_grad_labels`] on rayon's thread pool. Anchor-major batches are split into
    /// ranges of anchors; class-major ones (whose anchors are strided across the class planes)
    /// run serially.
    pub fn loss_grad_labels_par(
        &self,
        ema: Option<&mut Ema>,
        input: &Labels<'_>,
        out: Out<'_>,
    ) -> Result<f32, Error> {
        self.validate()?;
        let c = input.num_classes.max(1);
        let (a0, a1) = (input.anchors.start, input.anchors.end);
        let n = input.pred.len();
        let shapes_ok = input.labels.len().checked_mul(input.num_classes) == Some(n)
            && input
                .anchor_weight
                .is_none_or(|w| w.len() == input.labels.len())
            && a0 <= a1
            && a1 <= input.labels.len()
            && out.grad.as_deref().is_none_or(|g| g.len() == n)
            && out.loss_elems.as_deref().is_none_or(|l| l.len() == n);
        if input.layout != Layout::AnchorMajor || !shapes_ok || (a1 - a0) * c <= CHUNK {
            return self.loss_grad_labels(ema, input, out);
        }
        // Each chunk is a self-contained anchor-major batch over its own sub-slices.
        let per = (CHUNK / c).max(1);
        let chunk = |s: usize| -> Labels<'_> {
            let e = a1.min(s + per);
            Labels {
                pred: &input.pred[s * c..e * c],
                labels: &input.labels[s..e],
                anchor_weight: input.anchor_weight.map(|w| &w[s..e]),
                num_classes: input.num_classes,
                layout: Layout::AnchorMajor,
                anchors: 0..e - s,
            }
        };
        let starts: Vec<usize> = (a0..a1).step_by(per).collect();
        let hist = accumulate_par(self.bins, &starts, |s, h| {
            self.accumulate_labels(&chunk(s), h)
        })?;
        let w = self.finalize(ema, &hist)?;
        let Out {
            grad,
            loss_elems,
            stats,
        } = out;
        let span = per * c;
        let (grads, elems) = (
            split(grad, a0 * c..a1 * c, span, starts.len()),
            split(loss_elems, a0 * c..a1 * c, span, starts.len()),
        );
        // After a successful accumulate over the same data (see `dense_par`).
        let checked = GhmC {
            skip_bad: true,
            ..*self
        };
        starts
            .par_iter()
            .zip(grads)
            .zip(elems)
            .try_for_each(|((&s, g), l)| checked.apply_labels(&w, &chunk(s), g, l))?;
        if let Some(stats) = stats {
            *stats = Stats::of(&hist, &w);
        }
        Ok(w.loss as f32)
    }
}

/// Phase 1 of the chunks starting at `starts`, in parallel, merged into one histogram.
fn accumulate_par(
    bins: u32,
    starts: &[usize],
    accumulate: impl Fn(usize, &mut Hist) -> Result<(), Error> + Sync,
) -> Result<Hist, Error> {
    let empty = Hist::new(bins)?;
    starts
        .par_iter()
        .map(|&s| {
            let mut h = empty;
            accumulate(s, &mut h)?;
            Ok(h)
        })
        .try_reduce(
            || empty,
            |mut a, b| {
                a.merge(&b)?;
                Ok(a)
            },
        )
}

/// `buf[range]` in pieces of `span` (or `count` Nones for an absent buffer).
fn split(
    buf: Option<&mut [f32]>,
    range: core::ops::Range<usize>,
    span: usize,
    count: usize,
) -> Vec<Option<&mut [f32]>> {
    match buf {
        Some(b) => b[range].chunks_mut(span).map(Some).collect(),
        None => (0..count).map(|_| None).collect(),
    }
}

impl GhmR {
    /// [`GhmR::loss_grad`] on rayon's thread pool, for large batches: the same gradients bit
    /// for bit, the loss within 1 ulp. Batches of at most 64Ki elements run serially.
    pub fn loss_grad_par(
        &self,
        ema: Option<&mut Ema>,
        input: &Dense<'_>,
        out: Out<'_>,
    ) -> Result<f32, Error> {
        self.validate()?;
        dense_par(self, ema, input, out)
    }
}
