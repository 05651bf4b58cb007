//! The two passes over the elements, written once over [`Vector`]: every vector backend runs
//! this code, instantiated with its own vector type.
//!
//! - [`accumulate`] (pass 1) validates every element, computes its gradient norm, bin and
//!   loss, and returns the chunk's [`Hist`]: counts, per-bin loss sums, `tot`, `skipped`.
//! - [`apply`] (pass 2) recomputes `g` and `dl/dx` (cheaper than storing them: it reads the
//!   inputs once more instead of writing and re-reading an intermediate) and writes
//!   `grad = scale[bin] * dl/dx` and, if asked, `loss_elems = lw * w[bin] * l`.
//!
//! Per element there is no branch: bad, invalid and padding lanes are masked, the bin comes
//! from [`Bins::vector`], and the histogram update is a store of the lane's bin index and
//! loss followed by `LANES` unconditional adds into [`COPIES`] interleaved accumulator sets
//! (invalid lanes land in a trash bin).

use core::marker::PhantomData;
use core::ops::Range;

use crate::bins::Bins;
use crate::config::MAX_BINS;
use crate::error::Error;
use crate::model::Model;
use crate::simd::{Vector, MAX_LANES};
use crate::source::{Batch, Targets, Visitor};
use crate::state::{Hist, Weights};

/// Interleaved copies of the per-bin accumulators: lane `j` adds into copy `j % COPIES`, so a
/// run of elements in one bin (the usual case: most are easy negatives) forms `COPIES`
/// independent dependency chains through memory instead of one.
const COPIES: usize = 4;

/// Lanes `0..len` of a vector, all lanes for a full one.
#[inline(always)]
fn live<V: Vector>(tail: Option<usize>) -> V::M {
    V::first_lanes(tail.unwrap_or(V::LANES))
}

/// Lanes holding a bad element (SPEC section 2), among the `live` ones.
#[inline(always)]
fn bad_lanes<V: Vector, M: Model>(model: &M, x: V, t: V, bad_w: V::M, live: V::M) -> V::M {
    let not_ok = V::m_andnot(V::first_lanes(V::LANES), model.ok(x, t));
    V::m_and(live, V::m_or(bad_w, not_ok))
}

/// Walks one segment a vector at a time, handing each step the prediction, the targets and,
/// for the last partial vector, its length.
#[inline(always)]
fn walk<V: Vector, T: Targets<V>>(
    pred: &[f32],
    targets: &mut T,
    mut step: impl FnMut(usize, V, (V, V, V::M), Option<usize>) -> Result<(), Error>,
) -> Result<(), Error> {
    let n = pred.len();
    let mut i = 0;
    while i + V::LANES <= n {
        step(i, V::load(&pred[i..]), targets.next(V::LANES), None)?;
        i += V::LANES;
    }
    if i < n {
        let len = n - i;
        step(i, V::load_partial(&pred[i..]), targets.next(len), Some(len))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pass 1

struct Accumulate<'a, V, M> {
    model: M,
    bins: &'a Bins,
    pred: &'a [f32],
    skip_bad: bool,
    /// `(loss sum, count)` per copy and bin; index `M` is the trash bin.
    cells: [[[f64; 2]; MAX_BINS + 1]; COPIES],
    /// Per-lane sums of label weights (GHM-R's `tot`).
    weight_sums: [f64; MAX_LANES],
    skipped: u64,
    _v: PhantomData<V>,
}

impl<V: Vector, M: Model> Visitor<V> for Accumulate<'_, V, M> {
    fn segment<T: Targets<V>>(&mut self, range: Range<usize>, mut targets: T) -> Result<(), Error> {
        let pred = &self.pred[range];
        let Accumulate {
            model,
            bins,
            skip_bad,
            cells,
            weight_sums,
            skipped,
            ..
        } = self;
        walk(pred, &mut targets, |_, x: V, (t, w, bad_w), tail| {
            let live = live::<V>(tail);
            let bad = bad_lanes(model, x, t, bad_w, live);
            if V::m_any(bad) {
                if !*skip_bad {
                    return Err(Error::Input);
                }
                *skipped += V::m_count(bad) as u64;
            }
            let valid = V::m_andnot(V::m_and(live, w.gt(V::splat(0.0))), bad);
            let e = model.eval::<V, true>(x, t);
            let k = V::i_to_array(bins.vector(e.g, valid));
            let l = e.loss.to_array();
            for j in 0..V::LANES {
                let cell = &mut cells[j % COPIES][(k[j] as u32 as usize).min(MAX_BINS)];
                cell[0] += l[j] as f64;
                cell[1] += 1.0;
            }
            V::select(valid, w, V::splat(0.0)).add_to_f64(weight_sums);
            Ok(())
        })
    }
}

/// Pass 1 over `batch`: its histogram, or [`Error::Input`] at the first bad element unless
/// `skip_bad`. `tot_is_weight_sum` selects GHM-R's `tot` (sum of label weights) over GHM-C's
/// (valid count).
pub(crate) fn accumulate<V: Vector, M: Model>(
    model: M,
    bins: &Bins,
    batch: &Batch<'_>,
    skip_bad: bool,
    tot_is_weight_sum: bool,
) -> Result<Hist, Error> {
    let pred = batch.pred();
    let mut acc = Accumulate::<V, M> {
        model,
        bins,
        pred,
        skip_bad,
        cells: [[[0.0; 2]; MAX_BINS + 1]; COPIES],
        weight_sums: [0.0; MAX_LANES],
        skipped: 0,
        _v: PhantomData,
    };
    batch.visit::<V, _>(&mut acc)?;

    let m = bins.m;
    let mut hist = Hist::new(m as u32)?;
    let mut valid = 0u64;
    for k in 0..m {
        let (mut sum, mut count) = (0.0, 0.0);
        for copy in &acc.cells {
            sum += copy[k][0];
            count += copy[k][1];
        }
        hist.loss_sums[k] = sum;
        hist.counts[k] = count as u64;
        valid += count as u64;
    }
    hist.tot = if tot_is_weight_sum {
        acc.weight_sums.iter().sum()
    } else {
        valid as f64
    };
    hist.skipped = acc.skipped;
    Ok(hist)
}

// ---------------------------------------------------------------------------------------------
// Validation alone (the phased `apply` must refuse bad input before writing anything)

struct Check<'a, V, M> {
    model: M,
    pred: &'a [f32],
    _v: PhantomData<V>,
}

impl<V: Vector, M: Model> Visitor<V> for Check<'_, V, M> {
    fn segment<T: Targets<V>>(&mut self, range: Range<usize>, mut targets: T) -> Result<(), Error> {
        let model = &self.model;
        walk(
            &self.pred[range],
            &mut targets,
            |_, x: V, (t, _, bad_w), tail| {
                if V::m_any(bad_lanes(model, x, t, bad_w, live::<V>(tail))) {
                    return Err(Error::Input);
                }
                Ok(())
            },
        )
    }
}

/// [`Error::Input`] if any element of `batch` is bad.
pub(crate) fn check<V: Vector, M: Model>(model: M, batch: &Batch<'_>) -> Result<(), Error> {
    let pred = batch.pred();
    batch.visit::<V, _>(&mut Check::<V, M> {
        model,
        pred,
        _v: PhantomData,
    })
}

// ---------------------------------------------------------------------------------------------
// Pass 2

/// Where pass 2 writes, and what with.
pub(crate) struct Outputs<'a> {
    pub grad: Option<&'a mut [f32]>,
    pub loss_elems: Option<&'a mut [f32]>,
    pub accumulate: bool,
}

/// Per-bin lookup tables of pass 2, padded to 256 entries; index `M` (trash) and beyond hold 0.
pub(crate) struct Tables {
    scale: [f32; 256],
    weighted: [f32; 256],
}

impl Tables {
    /// `scale[k]` and `loss_weight * weight[k]` of the bins of `w`.
    pub(crate) fn new(w: &Weights, loss_weight: f32) -> Tables {
        let m = (w.bins as usize).min(MAX_BINS);
        let mut t = Tables {
            scale: [0.0; 256],
            weighted: [0.0; 256],
        };
        for k in 0..m {
            t.scale[k] = w.scale[k];
            t.weighted[k] = loss_weight * w.weight[k];
        }
        t
    }
}

struct Apply<'a, V, M, const LOSS: bool> {
    model: M,
    bins: &'a Bins,
    tables: &'a Tables,
    pred: &'a [f32],
    out: Outputs<'a>,
    skip_bad: bool,
    _v: PhantomData<V>,
}

impl<V: Vector, M: Model, const LOSS: bool> Visitor<V> for Apply<'_, V, M, LOSS> {
    fn segment<T: Targets<V>>(&mut self, range: Range<usize>, mut targets: T) -> Result<(), Error> {
        let Apply {
            model,
            bins,
            tables,
            pred,
            out,
            skip_bad,
            ..
        } = self;
        let accumulate = out.accumulate;
        let mut grad = out.grad.as_deref_mut().map(|g| &mut g[range.clone()]);
        let mut loss_elems = out.loss_elems.as_deref_mut().map(|l| &mut l[range.clone()]);
        walk(
            &pred[range],
            &mut targets,
            |i, x: V, (t, w, bad_w), tail| {
                let live = live::<V>(tail);
                let mut valid = V::m_and(live, w.gt(V::splat(0.0)));
                if *skip_bad {
                    valid = V::m_andnot(valid, bad_lanes(model, x, t, bad_w, live));
                }
                let e = model.eval::<V, LOSS>(x, t);
                let k = bins.vector(e.g, valid);
                let zero = V::splat(0.0);
                if let Some(g) = grad.as_deref_mut() {
                    let mut v = V::select(valid, V::lut(&tables.scale, k).mul(e.grad), zero);
                    store(&mut g[i..], tail, |old: V| {
                        if accumulate {
                            v = old.add(v);
                        }
                        v
                    });
                }
                if LOSS {
                    if let Some(le) = loss_elems.as_deref_mut() {
                        let v = V::select(valid, V::lut(&tables.weighted, k).mul(e.loss), zero);
                        store(&mut le[i..], tail, |_: V| v);
                    }
                }
                Ok(())
            },
        )
    }
}

/// Stores `value(old)` into the first `LANES` (or `tail`) slots of `out`; `old` holds their
/// current contents.
#[inline(always)]
fn store<V: Vector>(out: &mut [f32], tail: Option<usize>, value: impl FnOnce(V) -> V) {
    match tail {
        None => value(V::load(out)).store(out),
        Some(len) => {
            let out = &mut out[..len];
            value(V::load_partial(out)).store_partial(out)
        }
    }
}

/// Pass 2 over `batch`: writes the requested outputs. Never fails on valid shapes; the caller
/// has already refused bad input unless `skip_bad`.
pub(crate) fn apply<V: Vector, M: Model>(
    model: M,
    bins: &Bins,
    tables: &Tables,
    batch: &Batch<'_>,
    out: Outputs<'_>,
    skip_bad: bool,
) -> Result<(), Error> {
    let pred = batch.pred();
    if out.loss_elems.is_some() {
        batch.visit::<V, _>(&mut Apply::<V, M, true> {
            model,
            bins,
            tables,
            pred,
            out,
            skip_bad,
            _v: PhantomData,
        })
    } else {
        batch.visit::<V, _>(&mut Apply::<V, M, false> {
            model,
            bins,
            tables,
            pred,
            out,
            skip_bad,
            _v: PhantomData,
        })
    }
}
