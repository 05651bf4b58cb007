//! Parallel one-call functions (feature `rayon`): the phased API run over chunks on rayon's
//! thread pool. Accumulate every chunk in parallel, merge, finalize once, apply every chunk in
//! parallel: by the phased API's guarantee the gradients are bit-identical to the serial one
//! call and the loss is within 1 ulp of it. (Unlike the core, this convenience allocates: the
//! chunk lists here, and whatever rayon's scheduling needs.)

use core::ops::Range;

use rayon::prelude::*;
use std::vec::Vec;

use crate::api::{self, Dense, Labels, Out};
use crate::config::{GhmC, GhmR, Layout, Plan};
use crate::error::Error;
use crate::source::Batch;
use crate::state::{Ema, Hist, Stats};

/// Elements per parallel chunk: large enough that a chunk's cost dwarfs scheduling.
const CHUNK: usize = 1 << 16;

/// A batch cut into self-contained chunks, whose outputs are consecutive `span`-long pieces
/// of `out` in the batch's output buffers; `None` when it is better run serially (small, or
/// class-major, whose anchors are strided across the class planes).
struct Pieces<'a> {
    chunks: Vec<Batch<'a>>,
    out: Range<usize>,
    span: usize,
}

/// Cuts `batch`, whose shapes have been checked.
fn pieces<'a>(batch: &Batch<'a>) -> Option<Pieces<'a>> {
    match *batch {
        Batch::Dense {
            pred,
            target,
            weight,
            blocks: None,
        } => {
            let n = pred.len();
            let chunks = (0..n)
                .step_by(CHUNK)
                .map(|s| {
                    let r = s..n.min(s + CHUNK);
                    Batch::Dense {
                        pred: &pred[r.clone()],
                        target: &target[r.clone()],
                        weight: weight.map(|w| &w[r]),
                        blocks: None,
                    }
                })
                .collect();
            Some(Pieces {
                chunks,
                out: 0..n,
                span: CHUNK,
            })
        }
        Batch::Labels {
            pred,
            labels,
            weight,
            classes,
            layout: Layout::AnchorMajor,
            ref anchors,
            blocks: None,
        } if classes > 0 => {
            let per = (CHUNK / classes).max(1);
            let (a0, a1) = (anchors.start, anchors.end);
            let chunks = (a0..a1)
                .step_by(per)
                .map(|s| {
                    let e = a1.min(s + per);
                    Batch::Labels {
                        pred: &pred[s * classes..e * classes],
                        labels: &labels[s..e],
                        weight: weight.map(|w| &w[s..e]),
                        classes,
                        layout: Layout::AnchorMajor,
                        anchors: 0..e - s,
                        blocks: None,
                    }
                })
                .collect();
            Some(Pieces {
                chunks,
                out: a0 * classes..a1 * classes,
                span: per * classes,
            })
        }
        // Class-major labels and blocked views run serially.
        _ => None,
    }
}

/// `buf[range]` in consecutive pieces of `span` (or `count` Nones for an absent buffer).
fn split(
    buf: Option<&mut [f32]>,
    range: Range<usize>,
    span: usize,
    count: usize,
) -> Vec<Option<&mut [f32]>> {
    match buf {
        Some(b) => b[range].chunks_mut(span).map(Some).collect(),
        None => (0..count).map(|_| None).collect(),
    }
}

/// The one call of `plan` over `batch`, on rayon's pool when it pays.
fn loss_grad_par(
    plan: Plan,
    ema: Option<&mut Ema>,
    batch: Batch<'_>,
    out: Out<'_>,
) -> Result<f32, Error> {
    let shapes_ok = batch.check().is_ok()
        && api::check_outputs(&batch, out.grad.as_deref(), out.loss_elems.as_deref()).is_ok();
    // Cut only a batch whose shapes are right (the slicing relies on it).
    let p = match shapes_ok.then(|| pieces(&batch)).flatten() {
        Some(p) if p.chunks.len() > 1 => p,
        // Small or strided batches, and every shape error report, are the serial call's.
        _ => return api::loss_grad(plan, ema, batch, out),
    };
    let empty = Hist::new(plan.bins as u32)?;
    let hist = p
        .chunks
        .par_iter()
        .map(|chunk| {
            let mut h = empty;
            api::accumulate(plan, chunk.clone(), &mut h)?;
            Ok(h)
        })
        .try_reduce(
            || empty,
            |mut a, b| {
                a.merge(&b)?;
                Ok(a)
            },
        )?;
    let w = api::finalize(plan, ema, &hist)?;
    let Out {
        grad,
        loss_elems,
        stats,
    } = out;
    if grad.is_some() || loss_elems.is_some() {
        let count = p.chunks.len();
        let grads = split(grad, p.out.clone(), p.span, count);
        let elems = split(loss_elems, p.out, p.span, count);
        // Accumulate (with skip_bad off) has refused any bad element, so apply may skip its
        // own check of the inputs: identical results, one read of the inputs less.
        let checked = Plan {
            skip_bad: true,
            ..plan
        };
        p.chunks
            .par_iter()
            .zip(grads)
            .zip(elems)
            .try_for_each(|((chunk, g), l)| api::apply(checked, &w, chunk.clone(), g, l))?;
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
        loss_grad_par(self.plan()?, ema, input.batch(), out)
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
        loss_grad_par(self.plan()?, ema, input.batch(), out)
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
        loss_grad_par(self.plan()?, ema, input.batch(), out)
    }
}
