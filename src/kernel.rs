//! The two passes over the elements, written once over [`Vector`]: every vector backend runs
//! this code, instantiated with its own vector type.
//!
//! - [`accumulate`] (pass 1) validates the elements, computes their gradient norms and bins and
//!   returns the chunk's [`Hist`]: counts, `tot`, `skipped` and, for the phased API, per-bin
//!   loss sums. The one call usually skips the loss here.
//! - [`apply`] (pass 2) recomputes `g` and `dl/dx` from the inputs (the outputs must not be
//!   written before pass 1 has seen every element, so there is nowhere to keep them) and
//!   writes `grad = scale[bin] * dl/dx` and, if asked, `loss_elems = lw * (w[bin] * l)`; for
//!   the one call it also sums `w[bin] * l` in f64 lanes, which is its loss.
//! - With `skip_bad` no element can make the call fail, so the one call (GHM-C, gradients
//!   only) may store `dl/dx` in `grad` during pass 1, with the per-bin loss sums; pass 2 is
//!   then [`rescale`], which reads that back and never touches the inputs. Small batches
//!   without `skip_bad` do the same after [`check`] has found every element good.
//! - Validation without `skip_bad` is a screen (unsigned maxima of the raw bits, see
//!   [`check`]), with an exact element-by-element check only when the screen flags something.
//!
//! Per element there is no branch: bad, invalid and padding lanes are masked and the bin comes
//! from [`Bins::vector`] (or [`Bins::vector_any`], where every use of it is masked). The
//! histogram update keeps the most common bin in registers (counted from a comparison mask, its
//! losses summed in f64 lanes), compresses the other valid lanes' bins (and losses) into a
//! buffer, and adds the buffer into per-lane accumulators once per block. When only counts are
//! asked for and there are at most [`PACKED_MAX_BINS`] bins (the default of 10 among them),
//! pass 1 counts in packed byte counters in registers instead, whatever the spread of the bins:
//! GHM-R at 64Ki elements went from 1.82 to 1.30 ns per element (its gradient norms spread over
//! the bins, so nearly every element went through the buffer). Measured and dropped: the
//! scatter interleaved with the vector math (45% slower on AVX-512: its instructions crowd the
//! long dependency chains out of the out-of-order window).

use core::marker::PhantomData;

use crate::bins::Bins;
use crate::config::MAX_BINS;
use crate::error::Error;
use crate::model::Model;
use crate::simd::{Vector, MAX_LANES};
use crate::source::{prefetch, touch, Batch, Scratch, Seg, Src, Visitor, PREFETCH_AHEAD, STAGE};
use crate::state::{Hist, Weights};
use crate::view::View;

/// Per-bin accumulators, one per lane: `cells[bin * MAX_LANES + lane]`. A run of elements in
/// one bin (the usual case: most are easy negatives) then forms `LANES` independent dependency
/// chains through memory instead of one chain of store-to-load forwards. (Invalid lanes, in
/// the trash bin `M`, never reach them.)
const CELLS: usize = MAX_BINS * MAX_LANES;
const _: () = assert!(CELLS.is_power_of_two());

/// f32 elements per 64-byte cache line: whole blocks prefetch once per line (see [`walk`]).
const LINE: usize = 16;

/// Elements buffered between the vector math and the histogram update.
const BLOCK: usize = 256;

/// Lanes `0..len` of a vector, all lanes for a full one.
#[inline(always)]
fn live<V: Vector>(tail: Option<usize>) -> V::M {
    V::first_lanes(tail.unwrap_or(V::LANES))
}

/// Lanes holding a bad element (docs/contract.md section 2), among the `live` ones: a prediction or
/// target the model refuses, or a label weight that is not in `[0, f32::MAX]` (negative or
/// not finite).
#[inline(always)]
fn bad_lanes<V: Vector, M: Model>(model: &M, x: V, t: V, w: V, live: V::M) -> V::M {
    let ok = V::m_and(model.ok(x, t), w.in_range(0.0, f32::MAX));
    V::m_andnot(live, ok)
}

/// The work done on one vector of a segment. (A trait rather than a closure: every step must
/// be inlined into the `#[target_feature]` function that runs the kernel, and a closure
/// would be compiled without that function's target features if it were not inlined.)
trait Step<V: Vector> {
    /// Whether the step uses the model's `pre` (the input check alone does not).
    const PRE: bool = true;
    /// Whether [`walk`] stores what each step returns in the segment's output buffer.
    const OUT: bool = false;
    /// Elements `at..at + LANES` of the segment (or `at..at + tail`, for its last vector),
    /// with their predictions `x` and their targets and weights. Returns the vector to store
    /// when [`Step::OUT`] (anything otherwise).
    fn step(
        &mut self,
        at: usize,
        x: V,
        pre: (V, V),
        tw: (V, V),
        tail: Option<usize>,
    ) -> Result<V, Error>;
}

/// Walks one segment a vector at a time, in blocks: first the model's `pre` for the whole
/// block (a short dependency chain, so the out-of-order core overlaps many vectors of it),
/// then the rest. One long chain per vector would fill the scheduler with waiting work.
/// `out`: the segment's output buffer if [`Step::OUT`] (empty otherwise). `far`: the batch is
/// far outside the caches ([`Seg::far`]): prefetch ahead within the segment.
#[inline(always)]
fn walk<V: Vector, M: Model, S: Step<V>>(
    model: &M,
    pred: &[f32],
    out: &mut [f32],
    src: &mut Src<'_>,
    scratch: &mut Scratch,
    step: &mut S,
    far: bool,
) -> Result<(), Error> {
    let n = pred.len();
    let mut base = 0;
    // Software prefetch in large batches: each whole block asks for the cache lines of its
    // inputs `ahead` elements further on, one line per input every 64 bytes, spread through
    // the block. (Prefetching a whole block at its start was 13-18% slower at 16Mi elements
    // than spreading the same prefetches out.) `ahead` is 0 (no prefetch) inside the caches
    // and in a segment no longer than the distance, which has nothing of its own ahead (the
    // batch prefetches such short blocks whole, a few blocks ahead: `Batch::segments`). It is
    // tested per line, not compiled apart: a prefetching copy of every whole block was 30% of
    // the crate's build time (36.9-38.1 s -> 26.0 s without it, Intel Xeon, 2 cores). The
    // test measured the same as that copy at 64Ki elements on AVX-512 (0.998 and 1.001);
    // prefetching the lines about to be read instead of testing was 5.5% slower there.
    let ahead = if far && n > PREFETCH_AHEAD {
        PREFETCH_AHEAD
    } else {
        0
    };
    while base < n {
        let end = n.min(base + STAGE);
        // A whole block is whole vectors: compiled apart, without tail lanes. (Only the last
        // block can be partial, and there is nothing ahead of it to prefetch.)
        if end - base == STAGE {
            block::<V, M, S, true>(model, pred, out, base, ahead, scratch, src, step)?;
        } else {
            block::<V, M, S, false>(model, pred, out, base, 0, scratch, src, step)?;
        }
        base = end;
    }
    Ok(())
}

/// One block of [`walk`]: the elements `base..` of the segment whose predictions are `all`;
/// `FULL` when it holds exactly [`STAGE`] of them (then prefetching `ahead` elements further
/// on, see [`walk`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block<V: Vector, M: Model, S: Step<V>, const FULL: bool>(
    model: &M,
    all: &[f32],
    out: &mut [f32],
    base: usize,
    ahead: usize,
    scratch: &mut Scratch,
    src: &mut Src<'_>,
    step: &mut S,
) -> Result<(), Error> {
    let has_pre = M::HAS_PRE && S::PRE;
    let Scratch { pre, t, w } = scratch;
    if FULL {
        // Every input and output of the block as a fixed-size array: one bounds check each
        // per block, none per vector.
        let xs: &[f32; STAGE] = all[base..base + STAGE].try_into().expect("a full block");
        let mut outs: Option<&mut [f32; STAGE]> = S::OUT.then(|| {
            (&mut out[base..base + STAGE])
                .try_into()
                .expect("a full block")
        });
        let [p0, p1] = pre;
        let lanes = |j: usize| j * V::LANES..(j + 1) * V::LANES;
        if has_pre {
            for j in 0..STAGE / V::LANES {
                let (a, b) = model.pre(V::load(&xs[lanes(j)]));
                a.store(&mut p0[lanes(j)]);
                b.store(&mut p1[lanes(j)]);
            }
        }
        let lines = src.ahead(all);
        let (ts, ws) = src.stage::<V>(t, w);
        for j in 0..STAGE / V::LANES {
            if (j * V::LANES) % LINE == 0 && ahead > 0 {
                let at = base + ahead + j * V::LANES;
                touch(all, at);
                lines.touch(at);
            }
            let x = V::load(&xs[lanes(j)]);
            let p = if has_pre {
                (V::load(&p0[lanes(j)]), V::load(&p1[lanes(j)]))
            } else {
                (x, x)
            };
            let tw = (V::load(&ts[lanes(j)]), V::load(&ws[lanes(j)]));
            let v = step.step(base + j * V::LANES, x, p, tw, None)?;
            if let Some(o) = outs.as_deref_mut() {
                v.store(&mut o[lanes(j)]);
            }
        }
        return Ok(());
    }
    let xs = &all[base..all.len().min(base + STAGE)];
    let n = xs.len();
    let (ts, ws) = src.stage_part::<V>(n, t, w);
    if has_pre {
        let mut i = 0;
        while i < n {
            let x = load::<V>(&xs[i..], (n - i < V::LANES).then_some(n - i));
            let (a, b) = model.pre(x);
            a.store(&mut pre[0][i..]);
            b.store(&mut pre[1][i..]);
            i += V::LANES;
        }
    }
    let mut i = 0;
    while i < n {
        let tail = (n - i < V::LANES).then_some(n - i);
        let x = load::<V>(&xs[i..], tail);
        let p = if has_pre {
            (V::load(&pre[0][i..]), V::load(&pre[1][i..]))
        } else {
            (x, x)
        };
        let tw = (load::<V>(&ts[i..], tail), load::<V>(&ws[i..], tail));
        let v = step.step(base + i, x, p, tw, tail)?;
        if S::OUT {
            store(&mut out[base + i..], tail, v);
        }
        i += V::LANES;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pass 1

/// Elements after which the `u32` count cells are moved into `u64` totals (no cell can
/// overflow).
const COUNT_SPAN: u64 = 1 << 31;

/// Words of byte counters in the packed count (see [`Pass1::count_packed`]).
const PACKED_WORDS: usize = 3;

/// Bin counts up to which pass 1 without loss sums counts in packed byte counters.
pub(crate) const PACKED_MAX_BINS: usize = 4 * PACKED_WORDS;

/// Vectors after which the packed byte counters are emptied (a byte holds at most 255).
const PACKED_SPAN: u32 = 255;

/// `1 << (8 * b)` in lane `b` (and `b + 4`, ...): the count added to byte `b` of a word.
const BYTE_ONES: [i32; MAX_LANES] = {
    let mut t = [0; MAX_LANES];
    let mut j = 0;
    while j < MAX_LANES {
        t[j] = 1 << (8 * (j % 4));
        j += 1;
    }
    t
};

/// Pass 1's arrays: the per-lane cells, the totals and the buffer. Kept apart from [`Pass1`],
/// which holds only what each vector updates (the hot bin's count and loss lanes, the packed
/// counters, the screen, the buffer's fill, GHM-R's weight sums): nothing indexes that part at
/// run time and no function that is not inlined sees it, so it can stay in registers. As one
/// struct, with `settle` and `unpack` called out of line, it all went through memory; split,
/// GHM-R's one call is 11% faster at 64Ki elements and GHM-C's unchanged (median of 8
/// alternating in-process runs).
///
/// The hot loss lanes are drained by [`Cells::drain_hot`], out of line, on a copy: with that
/// loop inlined into the kernels, LLVM stopped with "Cannot emit physreg copy instruction"
/// (rustc 1.97.0-nightly of 2026-05-19, and 1.95 with other constants).
struct Cells {
    counts: [u32; CELLS],
    loss_cells: [f64; CELLS],
    /// Counts moved out of `counts`, per bin.
    totals: [u64; MAX_BINS],
    since: u64,
    /// Cell indices (and loss bits) of the elements since the last flush, except those in the
    /// hot bin; room for one more vector than a flush holds.
    block_cell: [i32; BLOCK + MAX_LANES],
    block_loss: [i32; BLOCK + MAX_LANES],
}

impl Cells {
    /// Each of the first `m` bins' loss (or `g`) cells summed over the lanes, into `sums`.
    /// Once per pass, after it: a function of its own, compiled once (inlined, it was copied
    /// into every kernel). The steps a flush may take (`settle`, `drain_hot`, picking the hot
    /// bin) stay inlined, although as rare: as calls inside the per-vector loop, they made
    /// GHM-C's one call 5-7% slower on AVX-512 (whole-process pairs; likely the loop's vector
    /// state kept in memory around the calls, not confirmed in the disassembly).
    #[inline(never)]
    fn lane_sums(&self, m: usize, sums: &mut [f64]) {
        for (k, sum) in sums[..m].iter_mut().enumerate() {
            *sum = self.loss_cells[k * MAX_LANES..(k + 1) * MAX_LANES]
                .iter()
                .sum();
        }
    }

    /// Adds the hot bin's per-lane loss sums to the cells of bin `hot`.
    fn drain_hot(&mut self, hot: usize, lanes: [f64; MAX_LANES]) {
        let at = hot * MAX_LANES;
        if let Some(cells) = self.loss_cells.get_mut(at..at + MAX_LANES) {
            for (cell, lane) in cells.iter_mut().zip(lanes) {
                *cell += lane;
            }
        }
    }

    /// Adds packed byte counters (`lanes` lanes of each word) to the totals of the `m` bins.
    fn unpack(&mut self, words: &[[i32; MAX_LANES]; PACKED_WORDS], lanes: usize, m: usize) {
        for (j, word) in words.iter().enumerate() {
            for &lane in &word[..lanes] {
                for b in 0..4 {
                    if let Some(total) = self.totals[..m].get_mut(4 * j + b) {
                        *total += (lane as u32 >> (8 * b)) as u64 & 0xff;
                    }
                }
            }
        }
    }

    /// Moves the count cells of the `m` bins into the totals.
    fn settle(&mut self, m: usize) {
        // Only bins below M are ever counted in the cells. (Whole rows of cells, which the
        // compiler vectorizes: element by element, this took 6.5% of GHM-C's one call at 8Ki
        // elements.)
        let rows = self.counts.chunks_exact_mut(MAX_LANES);
        for (total, row) in self.totals[..m].iter_mut().zip(rows) {
            *total += row.iter().map(|&c| c as u64).sum::<u64>();
            row.fill(0);
        }
        self.since = 0;
    }
}

/// The hot bin of [`Pass1`]: counted from a comparison mask and its losses summed in f64
/// lanes, all in registers.
struct Hot<V: Vector> {
    bin: usize,
    /// `bin` in every lane.
    k: V::I,
    count: u64,
    /// Per-lane loss sums.
    loss: [f64; MAX_LANES],
}

impl<V: Vector> Hot<V> {
    fn new(bin: usize) -> Hot<V> {
        Hot {
            bin,
            k: V::i_splat(bin as i32),
            count: 0,
            loss: [0.0; MAX_LANES],
        }
    }

    /// Counts the `valid` lanes in this bin; returns them, and the valid lanes not in it.
    #[inline(always)]
    fn take(&mut self, valid: V::M, k: V::I) -> (V::M, V::M) {
        let mine = V::i_eq_in(valid, k, self.k);
        self.count += V::m_count(mine) as u64;
        (mine, V::i_ne_in(valid, k, self.k))
    }

    /// Moves the count into the totals.
    #[inline(always)]
    fn settle(&mut self, totals: &mut [u64]) {
        if let Some(t) = totals.get_mut(self.bin) {
            *t += self.count;
        }
        self.count = 0;
    }

    /// Moves the loss lanes into the cells and makes `bin` the hot bin.
    #[inline(always)]
    fn set(&mut self, cells: &mut Cells, bin: usize) {
        cells.drain_hot(self.bin, self.loss);
        *self = Hot::new(bin);
    }
}

/// What a pass 1 is compiled for: its per-vector loop tests no flags for these.
pub(crate) trait Mode {
    /// Per-bin sums of the loss (or of `g`, when [`Pass1Opts::g`] asks).
    const LOSS: bool;
    /// Counts in packed byte counters (see [`Pass1::count_packed`]; not with `LOSS`).
    const PACKED: bool;
    /// The one call's stored path (`LOSS` too): also stores each element's `dl/dx`. Without
    /// `skip_bad` (read at run time) the batch has passed [`check`] first.
    const STORE: bool;
}

/// Counts only, in the per-lane cells.
struct Counts;
/// Counts only, packed.
struct Packed;
/// Counts and per-bin sums of the loss (the phased API), or of the gradient norms `g`
/// ([`Pass1Opts::g`], read at run time: one copy of pass 1 for both).
struct LossSums;
/// The stored path: of a batch that has passed [`check`], or with `skip_bad`.
struct Stored;

macro_rules! modes {
    ($($name:ident: $loss:expr, $packed:expr, $store:expr;)*) => {$(
        impl Mode for $name {
            const LOSS: bool = $loss;
            const PACKED: bool = $packed;
            const STORE: bool = $store;
        }
    )*};
}

modes! {
    Counts: false, false, false;
    Packed: false, true, false;
    LossSums: true, false, false;
    Stored: true, false, true;
}

/// Pass 1: counts per bin and, if `P::LOSS`, per-bin sums of the loss.
///
/// The mode `P` (see [`Mode`]) is fixed at compile time, so that the per-vector loop of the
/// path the one call takes on small batches (`Stored`) tests no output flags. (When the
/// stored path was first compiled per mode, `skip_bad` and GHM-R's `tot` kind included,
/// GHM-C's one call was 9% faster at 64Ki elements, median of 12 alternating in-process
/// runs.) `skip_bad` is now read at run time in every mode, one predictable test per vector:
/// a stored mode of its own (`StoredSkip`) cost two copies of pass 1 per backend, and reading
/// it at run time measured GHM-C's one call at 64Ki 1.009 (AVX2) and 1.015 (SSE2) of that
/// copy's time, with `skip_bad` 0.952 and 0.989 (AMD EPYC Zen 3, medians of 7 alternating
/// processes).
///
/// The most common bin ("hot": bin 0 until the first flush, then the most common so far) is
/// counted from comparison masks and its losses summed in f64 lanes, in registers; the other
/// lanes' cells (and losses) are compressed into a buffer that [`Pass1::flush`] adds into
/// per-lane cells.
///
/// The hot bin's losses are widened to f64 and added every vector (seven 512-bit operations on
/// AVX-512), not summed in f32 lanes over groups of vectors and widened once per group,
/// although that made GHM-C's one call at 64Ki elements 11% faster (0.889: the f64 sums are
/// 1.12x it, median of 16 alternating in-process runs): an f32 sum rounds on the way, and equal
/// losses all round the same way, so the errors add up (a group of 8 is within `7 * 2^-24` of
/// exact, not within `2^-53`). Where the groups start depends on the chunking, so the phased
/// API and the one call no longer agreed to the 1 ulp docs/contract.md section 3 requires: 2 ulp on 64Ki
/// equal logits in chunks of 48 (`equal_losses_stay_within_one_ulp_for_any_chunking`). A second
/// hot bin in registers (the two most common bins) was 6% faster with those f32 sums; with f64
/// sums, two hot bins and one measured the same (1.003 in 12 runs at 64Ki elements; 1.011 and
/// 0.967 in two sets of 16 at 256Ki, where no loss is summed): what the second keeps out of the
/// buffer, its own compares and widening cost. One is simpler.
struct Pass1<'a, V: Vector, M, P> {
    model: M,
    bins: &'a Bins,
    pred: &'a [f32],
    /// Without `P::STORE`: exclude bad elements (checking every lane) instead of screening.
    skip_bad: bool,
    /// Without `P::STORE` and `skip_bad`: the screen of the elements seen.
    keys: Keys<V>,
    /// `P::STORE`: where to store each element's `dl/dx` (NaN for invalid lanes), for
    /// [`rescale`].
    grad: &'a mut [f32],
    /// Where each block's part of `grad` lies.
    grad_view: View,
    /// The per-lane cells, the totals and the buffer, in memory.
    cells: &'a mut Cells,
    /// Elements in the buffer (`cells.block_cell`).
    fill: usize,
    /// The most common bin.
    hot: Hot<V>,
    picked: bool,
    /// `P::PACKED` only: byte counters, four bins to an i32 lane (see [`Pass1::count_packed`]).
    packed: [V::I; PACKED_WORDS],
    /// Vectors counted into `packed` since it was last emptied.
    packed_n: u32,
    /// Per-lane sums of label weights, kept for GHM-R's `tot` only.
    weight_sums: [f64; MAX_LANES],
    /// GHM-R's `tot`: the valid elements counted while every valid label weight was 1 (the
    /// later ones' weights go to `weight_sums`).
    unit_weights: u64,
    /// Whether every valid label weight so far was 1.
    unit: bool,
    skipped: u64,
    /// [`Pass1Opts::g`]: sum `g` per bin instead of the loss (see [`Pass1::sums_g`]).
    g_sums: bool,
    _v: PhantomData<(V, P)>,
}

impl<V: Vector, M: Model, P: Mode> Step<V> for Pass1<'_, V, M, P> {
    const OUT: bool = P::STORE;
    #[inline(always)]
    fn step(
        &mut self,
        _: usize,
        x: V,
        pre: (V, V),
        (t, w): (V, V),
        tail: Option<usize>,
    ) -> Result<V, Error> {
        let live = live::<V>(tail);
        let mut valid = V::m_and(live, w.gt(V::splat(0.0)));
        if self.skip_bad {
            let bad = bad_lanes(&self.model, x, t, w, live);
            if V::m_any(bad) {
                self.skipped += V::m_count(bad) as u64;
            }
            valid = V::m_andnot(valid, bad);
        } else if !P::STORE {
            // Screened, and checked exactly at the end only if the screen flags something (a
            // bad element meanwhile lands in some bin; the pass then fails).
            self.keys.add(&self.model, x, t, w, tail);
        }
        let e = if P::LOSS {
            self.model.eval_pre::<V, true>(x, t, pre)
        } else {
            self.model.eval_pre::<V, false>(x, t, pre)
        };
        // What pass 1 sums per bin: the loss, or `g` rounded to a multiple of 2^-23 (g is in
        // [0, 1], so `g + 1` has that ulp), whose f64 sums are exact in any order.
        let summed = if self.sums_g() {
            e.g.add(V::splat(1.0)).sub(V::splat(1.0))
        } else {
            e.loss
        };
        let k = if P::PACKED {
            self.bins.vector(e.g, valid)
        } else {
            self.bins.vector_any(e.g)
        };
        // `P::STORE`: `dl/dx`, which `walk` stores in `grad`.
        let d = V::select(valid, e.grad, V::splat(f32::NAN));
        if M::TOT_IS_WEIGHT_SUM {
            // A label weight is usually a 0/1 mask: while every valid weight so far is 1, they
            // are counted (exact, like their f64 sum; one compare instead of seven
            // operations); from the first vector with another weight on, summed in f64.
            // (Choosing per vector was 4% slower on weights mixed so that about half the
            // vectors hold only ones: the branch then mispredicts.)
            let ones = V::i_eq_in(valid, w.to_bits(), V::i_splat(1.0f32.to_bits() as i32));
            if self.unit && V::m_bits(ones) == V::m_bits(valid) {
                self.unit_weights += V::m_count(ones) as u64;
            } else {
                self.unit = false;
                w.add_to_f64_in(valid, &mut self.weight_sums);
            }
        }
        if P::PACKED {
            self.count_packed(k);
            return Ok(d);
        }
        // Valid lanes in a hot bin are only counted (and summed); the other valid lanes go to
        // the buffer. Invalid lanes (their `k` anything) are neither. (Split before the flush
        // below, which may pick a new hot bin.)
        let (mine, rest) = self.hot.take(valid, k);
        if P::LOSS {
            // In f64 lanes, exactly: see [`Pass1`] on why not in f32.
            summed.add_to_f64_in(mine, &mut self.hot.loss);
        }
        if self.fill > BLOCK {
            self.flush();
        }
        let f = self.fill;
        // Cell of lane j in bin k: k * MAX_LANES + j.
        let cell = V::i_add(V::i_shl::<4>(k), V::i_iota());
        self.fill += V::i_compress(cell, rest, &mut self.cells.block_cell[f..]);
        if P::LOSS {
            V::i_compress(summed.to_bits(), rest, &mut self.cells.block_loss[f..]);
        }
        Ok(d)
    }
}

impl<V: Vector, M: Model, P: Mode> Pass1<'_, V, M, P> {
    /// Whether the per-bin sums are of `g` rather than of the loss (the loss-sums mode asked
    /// for `g`; fixed per mode where it cannot be).
    #[inline(always)]
    fn sums_g(&self) -> bool {
        P::LOSS && !P::STORE && self.g_sums
    }

    /// Counts the bins `k` of one vector (`M <= PACKED_MAX_BINS`, no loss sums): lane `j` in
    /// bin `k` adds 1 to byte `k % 4` of lane `j` of word `k / 4`. That is a handful of vector
    /// operations whatever the spread of the bins, where the hot bin plus buffer costs a
    /// scalar increment for every element outside the hot bin (GHM-R's gradient norms spread
    /// over all the bins).
    ///
    /// An invalid lane (trash bin `M`) lands past the last word, or in a byte above bin `M - 1`
    /// of the last one; a byte's carry only moves upward, so it never reaches a real bin.
    /// Each byte takes at most one count per vector, and [`Pass1::unpack`] empties them every
    /// [`PACKED_SPAN`] vectors, before any can overflow.
    #[inline(always)]
    fn count_packed(&mut self, k: V::I) {
        let word = V::i_sra::<2>(k);
        let byte = V::i_sub(k, V::i_shl::<2>(word));
        // 1 << (8 * byte), looked up (LANES >= 4, so byte is a valid permute index).
        let one = V::i_permute(V::i_load(&BYTE_ONES), byte);
        for (j, acc) in self.packed.iter_mut().enumerate() {
            let mine = V::i_eq(word, V::i_splat(j as i32));
            *acc = V::i_select(mine, V::i_add(*acc, one), *acc);
        }
        self.packed_n += 1;
        if self.packed_n == PACKED_SPAN {
            self.unpack();
        }
    }

    /// Moves the byte counters into the `u64` totals.
    #[inline(always)]
    fn unpack(&mut self) {
        let words = self.packed.map(V::i_to_array);
        self.cells.unpack(&words, V::LANES, self.bins.m);
        self.packed = [V::i_splat(0); PACKED_WORDS];
        self.packed_n = 0;
    }

    /// Adds the buffered elements into the per-lane cells. (Kept apart from the vector math so
    /// that the out-of-order core overlaps many vectors' long dependency chains, which the
    /// scatter's instructions would otherwise crowd out of its window.)
    #[inline(always)]
    fn flush(&mut self) {
        let n = self.fill;
        // Cells are below M * MAX_LANES <= CELLS, a power of two: the mask keeps the index
        // inside without a bounds-check branch per element, and changes no valid one. One
        // loop for both the count and the loss: GHM-C's one call 2.3% faster at 64Ki elements
        // than a loop for each with a bounds check per element (median of 10 alternating
        // in-process runs; within this machine's noise, where a binary timed against itself
        // once gave 0.972).
        if P::LOSS {
            for (&c, &l) in self.cells.block_cell[..n]
                .iter()
                .zip(&self.cells.block_loss[..n])
            {
                let c = c as usize & (CELLS - 1);
                self.cells.counts[c] += 1;
                self.cells.loss_cells[c] += f32::from_bits(l as u32) as f64;
            }
        } else {
            for &c in &self.cells.block_cell[..n] {
                self.cells.counts[c as usize & (CELLS - 1)] += 1;
            }
        }
        self.fill = 0;
        self.cells.since += n as u64;
        if self.cells.since >= COUNT_SPAN {
            self.settle();
        }
        if !self.picked {
            // First flush: from now on the most common bin so far is the hot one.
            self.picked = true;
            self.settle();
            let m = self.bins.m;
            let totals = self.cells.totals[..m].iter().enumerate();
            if let Some((k, _)) = totals.max_by_key(|&(_, &c)| c) {
                self.hot.set(self.cells, k);
            }
        }
    }

    /// Moves the count cells and the hot bin's count into the `u64` totals.
    #[inline(always)]
    fn settle(&mut self) {
        self.hot.settle(&mut self.cells.totals);
        self.cells.settle(self.bins.m);
    }
}

impl<V: Vector, M: Model, P: Mode> Visitor<V> for Pass1<'_, V, M, P> {
    #[inline(always)]
    fn segment(&mut self, seg: Seg, mut src: Src<'_>, scratch: &mut Scratch) -> Result<(), Error> {
        let pred = &self.pred[seg.pred()];
        let grad = core::mem::take(&mut self.grad);
        let out = if P::STORE {
            &mut grad[seg.out(self.grad_view)]
        } else {
            &mut [][..]
        };
        let model = self.model;
        let done = walk(&model, pred, out, &mut src, scratch, self, seg.far);
        self.grad = grad;
        done
    }
}

/// What pass 1 is asked for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pass1Opts {
    /// Per-bin loss sums (the phased API); off, they stay zero (the one call sums the
    /// weighted loss in pass 2 instead, see [`apply`]).
    pub loss: bool,
    /// Exclude and count bad elements instead of failing with [`Error::Input`].
    pub skip_bad: bool,
    /// Per-bin sums of `g` (into `g_sums`) instead of the loss (not with `loss`).
    pub g: bool,
}

/// Pass 1 over `batch`: its histogram, or [`Error::Input`] if an element is bad, unless
/// `opts.skip_bad` (then bad elements are checked lane by lane, excluded and counted).
/// Without it, the elements are screened on the way (see [`check`]) and checked exactly after
/// the pass only if the screen flags something.
///
/// With `grad` (models with [`Model::STORED_PASS`] only; others ignore it), also sums the
/// losses per bin and stores every element's `dl/dx` in `grad` (NaN for the invalid ones) for
/// [`rescale`]. Nothing may be written when an element is bad: without `skip_bad` the batch
/// is then checked first (see [`check`]), and pass 1 skips its own check.
///
/// `S` runs each mode of pass 1, and the check, as a function of its own (see [`Passes`]).
#[inline(always)]
pub(crate) fn accumulate<V: Vector, M: Model, S: Passes<V>>(
    passes: S,
    model: M,
    bins: &Bins,
    batch: &Batch<'_>,
    opts: Pass1Opts,
    grad: Option<&mut [f32]>,
) -> Result<Hist, Error> {
    debug_assert!(grad.is_none() || M::STORED_PASS);
    if let Some(grad) = grad.filter(|_| M::STORED_PASS) {
        if !opts.skip_bad {
            passes.check::<M>(model, batch)?;
        }
        return screened::<V, M, Stored, S>(passes, model, bins, batch, opts, grad);
    }
    let none = &mut [][..];
    if opts.g || opts.loss {
        screened::<V, M, LossSums, S>(passes, model, bins, batch, opts, none)
    } else if bins.m <= PACKED_MAX_BINS && V::LANES >= 4 {
        screened::<V, M, Packed, S>(passes, model, bins, batch, opts, none)
    } else {
        screened::<V, M, Counts, S>(passes, model, bins, batch, opts, none)
    }
}

/// Pass 1 in mode `P`; where its screen flagged an element, [`check`] decides (screening
/// again, then element by element), out of line: one copy of the exact check per model and
/// backend, not one in every mode of pass 1 (they were 8% of the shared library's code).
#[inline(always)]
fn screened<V: Vector, M: Model, P: Mode, S: Passes<V>>(
    passes: S,
    model: M,
    bins: &Bins,
    batch: &Batch<'_>,
    opts: Pass1Opts,
    grad: &mut [f32],
) -> Result<Hist, Error> {
    let (hist, flagged) = passes.pass1::<M, P>(model, bins, batch, opts, grad)?;
    if flagged {
        passes.check::<M>(model, batch)?;
    }
    Ok(hist)
}

/// Pass 1 with per-bin loss sums, and nothing else chosen at run time: the one mode the
/// generic path ([`crate::GhmG`]) takes, so that it adds one copy of pass 1 per backend, not
/// six.
#[inline(always)]
pub(crate) fn accumulate_sums<V: Vector, M: Model, S: Passes<V>>(
    passes: S,
    model: M,
    bins: &Bins,
    batch: &Batch<'_>,
    skip_bad: bool,
) -> Result<Hist, Error> {
    let opts = Pass1Opts {
        loss: true,
        skip_bad,
        g: false,
    };
    screened::<V, M, LossSums, S>(passes, model, bins, batch, opts, &mut [])
}

/// Pass 2 writing the gradient only, overwritten, bad elements masked (the generic path's
/// factors): one kind of [`apply`], the only one the generic path instantiates.
#[inline(always)]
pub(crate) fn apply_grad<V: Vector, M: Model, S: Passes<V>>(
    passes: S,
    args: ApplyArgs<'_, '_, M>,
    out: Outputs<'_>,
) -> Result<(), Error> {
    passes.apply::<M, false, false>(args, out, true).map(|_| ())
}

/// How a backend runs each mode of pass 1, the check and each kind of pass 2: as a function of
/// its own per model and mode, compiled with the backend's target features and not inlined
/// into its caller (`dispatch` implements it; a call per pass and batch). When every mode was
/// inlined into one function per backend and model, LLVM took longer over the same code: the
/// crate's release build took 47-52 s, and 36-41 s split (Intel Xeon, 2 cores). AVX2
/// instructions per call (callgrind): -2.7% dense and -3.4% in 169-element blocks at 64Ki,
/// +1.3% dense at 1Mi.
pub(crate) trait Passes<V: Vector>: Copy {
    /// [`pass1`] in mode `P`.
    fn pass1<M: Model, P: Mode>(
        self,
        model: M,
        bins: &Bins,
        batch: &Batch<'_>,
        opts: Pass1Opts,
        grad: &mut [f32],
    ) -> Result<Pass1Out, Error>;
    /// [`check`].
    fn check<M: Model>(self, model: M, batch: &Batch<'_>) -> Result<(), Error>;
    /// [`apply_kind`].
    fn apply<M: Model, const LOSS: bool, const ONE: bool>(
        self,
        args: ApplyArgs<'_, '_, M>,
        out: Outputs<'_>,
        skip_bad: bool,
    ) -> Result<[f64; MAX_LANES], Error>;
}

/// Pass 1's histogram, and whether its screen flagged an element (see [`screened`]).
pub(crate) type Pass1Out = (Hist, bool);

#[inline(always)]
pub(crate) fn pass1<V: Vector, M: Model, P: Mode>(
    model: M,
    bins: &Bins,
    batch: &Batch<'_>,
    opts: Pass1Opts,
    grad: &mut [f32],
) -> Result<Pass1Out, Error> {
    let mut cells = Cells {
        counts: [0; CELLS],
        loss_cells: [0.0; CELLS],
        totals: [0; MAX_BINS],
        since: 0,
        block_cell: [0; BLOCK + MAX_LANES],
        block_loss: [0; BLOCK + MAX_LANES],
    };
    let mut acc = Pass1::<V, M, P> {
        model,
        bins,
        pred: batch.pred(),
        skip_bad: opts.skip_bad,
        keys: Keys::new(),
        grad,
        grad_view: batch.geometry().grad,
        cells: &mut cells,
        fill: 0,
        hot: Hot::new(0),
        picked: false,
        packed: [V::i_splat(0); PACKED_WORDS],
        packed_n: 0,
        weight_sums: [0.0; MAX_LANES],
        unit_weights: 0,
        unit: true,
        skipped: 0,
        g_sums: opts.g,
        _v: PhantomData,
    };
    batch.visit::<V, _>(&mut acc)?;
    let flagged = !P::STORE && !opts.skip_bad && !acc.keys.pass::<M>();
    acc.unpack();
    acc.flush();
    acc.settle();
    let bin = acc.hot.bin;
    acc.hot.set(acc.cells, bin); // moves the hot lanes' losses into the cells

    let m = bins.m;
    let mut hist = Hist::new(m as u32)?;
    hist.counts[..m].copy_from_slice(&acc.cells.totals[..m]);
    let sums = if acc.sums_g() {
        &mut hist.g_sums
    } else {
        &mut hist.loss_sums
    };
    acc.cells.lane_sums(m, sums);
    hist.tot = if M::TOT_IS_WEIGHT_SUM {
        acc.weight_sums.iter().sum::<f64>() + acc.unit_weights as f64
    } else {
        acc.cells.totals[..m].iter().sum::<u64>() as f64
    };
    hist.skipped = acc.skipped;
    Ok((hist, flagged))
}

// ---------------------------------------------------------------------------------------------
// Validation alone (the phased `apply` must refuse bad input before writing anything)

/// The screen of [`check`] (and of pass 1 without `skip_bad`): unsigned maxima of the
/// model's keys and of the label weights' bits.
struct Keys<V: Vector>(V::I, V::I, V::I);

impl<V: Vector> Keys<V> {
    fn new() -> Keys<V> {
        Keys(V::i_splat(0), V::i_splat(0), V::i_splat(0))
    }

    /// Takes in one vector of elements (`tail`: only its first lanes).
    #[inline(always)]
    fn add<M: Model>(&mut self, model: &M, x: V, t: V, w: V, tail: Option<usize>) {
        let (mut kx, mut kt) = model.keys(x, t);
        // A weight is good iff it is in [+0, f32::MAX]: iff its bits are at most MAX's.
        let mut kw = w.to_bits();
        if tail.is_some() {
            // Lanes past the end hold anything: they count as good.
            let live = live::<V>(tail);
            let zero = V::i_splat(0);
            (kx, kt, kw) = (
                V::i_select(live, kx, zero),
                V::i_select(live, kt, zero),
                V::i_select(live, kw, zero),
            );
        }
        self.0 = V::i_max_u(self.0, kx);
        self.1 = V::i_max_u(self.1, kt);
        self.2 = V::i_max_u(self.2, kw);
    }

    /// Whether every element taken in is good. (`false` does not mean that one is bad: the
    /// exact check decides.)
    #[inline(always)]
    fn pass<M: Model>(&self) -> bool {
        let (lx, lt) = M::KEY_LIMITS;
        within::<V>(self.0, lx)
            && within::<V>(self.1, lt)
            && within::<V>(self.2, f32::MAX.to_bits())
    }
}

/// The input check over a batch: exactly, element by element (`EXACT`), or by the screen of
/// [`Keys`].
struct Check<'a, V: Vector, M, const EXACT: bool> {
    model: M,
    pred: &'a [f32],
    keys: Keys<V>,
}

impl<V: Vector, M: Model, const EXACT: bool> Step<V> for Check<'_, V, M, EXACT> {
    const PRE: bool = false;
    #[inline(always)]
    fn step(
        &mut self,
        _: usize,
        x: V,
        _: (V, V),
        (t, w): (V, V),
        tail: Option<usize>,
    ) -> Result<V, Error> {
        if !EXACT {
            self.keys.add(&self.model, x, t, w, tail);
        } else if V::m_any(bad_lanes(&self.model, x, t, w, live::<V>(tail))) {
            return Err(Error::Input);
        }
        Ok(x)
    }
}

impl<V: Vector, M: Model, const EXACT: bool> Visitor<V> for Check<'_, V, M, EXACT> {
    #[inline(always)]
    fn segment(&mut self, seg: Seg, mut src: Src<'_>, scratch: &mut Scratch) -> Result<(), Error> {
        let pred = &self.pred[seg.pred()];
        let model = self.model;
        walk(&model, pred, &mut [], &mut src, scratch, self, seg.far)
    }
}

/// Whether every lane of `keys`, as `u32`, is at most `limit`.
#[inline(always)]
fn within<V: Vector>(keys: V::I, limit: u32) -> bool {
    let capped = V::i_min_u(keys, V::i_splat(limit as i32));
    V::m_count(V::i_eq(capped, keys)) as usize == V::LANES
}

/// [`Error::Input`] if any element of `batch` is bad.
///
/// A screen first: per vector, unsigned maxima of the model's keys (see [`Model::keys`]) and
/// of the label weights' bits, a few operations where the exact check takes a dozen
/// comparisons and mask operations. Only when the screen finds a key above its limit does the
/// exact check run, from the start, to decide (a target or weight of `-0.0` passes it; a NaN
/// does not).
///
/// A batch of class-index labels, for a model whose prediction key ignores the target
/// ([`Model::PRED_KEY_ALONE`]: both GHM-C models), is screened without its targets: they are 0
/// and 1, so only the predictions are read, and the label weights once per anchor rather
/// than once per element. GHM-C's one call at 64Ki elements on AVX2, against screening the
/// targets made from the labels: 0.94 with 20 classes and 0.95 with 16 (anchor-major), 0.97
/// with 20 (class-major, where the screen read every plane's labels again); 0.98-0.99 at
/// 16Mi (lowest third of 8 and 5 alternating processes).
#[inline(always)]
pub(crate) fn check<V: Vector, M: Model>(model: M, batch: &Batch<'_>) -> Result<(), Error> {
    let mut screen = Check::<V, M, false> {
        model,
        pred: batch.pred(),
        keys: Keys::new(),
    };
    if M::PRED_KEY_ALONE {
        // A label batch is screened without its targets: they are 0 and 1 (the walk takes in
        // 0's key, the line below 1's), and each label weight is its anchor's, screened once
        // per anchor instead of once per class. (Dense targets are walked as they are.)
        batch.visit_blind::<V, _>(&mut screen)?;
        let keys = &mut screen.keys;
        keys.1 = V::i_max_u(keys.1, model.keys(V::splat(0.0), V::splat(1.0)).1);
        let bits = batch.anchor_weight_max_bits();
        keys.2 = V::i_max_u(keys.2, V::i_splat(bits as i32));
    } else {
        batch.visit::<V, _>(&mut screen)?;
    }
    if screen.keys.pass::<M>() {
        return Ok(());
    }
    check_exactly::<V, M>(model, batch)
}

/// [`Error::Input`] if any element of `batch` is bad, element by element.
#[inline(always)]
fn check_exactly<V: Vector, M: Model>(model: M, batch: &Batch<'_>) -> Result<(), Error> {
    batch.visit::<V, _>(&mut Check::<V, M, true> {
        model,
        pred: batch.pred(),
        keys: Keys::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// Pass 2

/// Where pass 2 writes, and what with.
pub(crate) struct Outputs<'a> {
    pub grad: Option<&'a mut [f32]>,
    pub loss_elems: Option<&'a mut [f32]>,
    pub accumulate: bool,
    /// Also sum `weight[bin] * l` over the valid elements (in f64): the one call's loss,
    /// when its pass 1 skipped the per-bin loss sums.
    pub sum_loss: bool,
}

/// The weighted loss `loss_weight * (w * l)` of a loss `l >= 0` with weight `w` (finite,
/// `>= 0`), and `+0` when `loss_weight` is 0 (either sign), whatever `w * l`.
///
/// In this order, never `0 * inf`: `w * l` is finite or `+inf`, and is only multiplied by a
/// non-zero `loss_weight`. `(loss_weight * w) * l` overflowed for a huge `loss_weight` (say
/// `FLT_MAX` with MEAN, whose gradient factors stay finite) and made a loss that is 0 NaN
/// (and one that rounds to a subnormal on another backend `+inf` there).
#[inline(always)]
pub(crate) fn weighted_loss(loss_weight: f32, w: f32, l: f32) -> f32 {
    if loss_weight == 0.0 {
        0.0
    } else {
        loss_weight * (w * l)
    }
}

/// Per-bin lookup tables of pass 2, padded to 256 entries; index `M` (trash) and beyond hold 0.
pub(crate) struct Tables {
    scale: [f32; 256],
    weight: [f32; 256],
    loss_weight: f32,
}

impl Tables {
    /// Bin `k`'s gradient factor (0 past the bins).
    #[inline(always)]
    pub(crate) fn scale_of(&self, k: usize) -> f32 {
        self.scale[k & 255]
    }

    /// [`weighted_loss`] of a loss `l` in bin `k` (0 past the bins).
    #[inline(always)]
    pub(crate) fn weighted_of(&self, k: usize, l: f32) -> f32 {
        weighted_loss(self.loss_weight, self.weight[k & 255], l)
    }

    /// [`weighted_loss`] per lane, of the lanes' losses in their bins `k`.
    #[inline(always)]
    pub(crate) fn weighted<V: Vector>(&self, k: V::I, m: usize, l: V) -> V {
        if self.loss_weight == 0.0 {
            return V::splat(0.0);
        }
        V::splat(self.loss_weight).mul(V::lut(&self.weight, k, m).mul(l))
    }

    /// `scale[k]` and the weights of the bins of `w`.
    pub(crate) fn new(w: &Weights, loss_weight: f32) -> Tables {
        let m = (w.bins as usize).min(MAX_BINS);
        let mut t = Tables {
            scale: [0.0; 256],
            weight: [0.0; 256],
            loss_weight,
        };
        for k in 0..m {
            t.scale[k] = w.scale[k];
            t.weight[k] = w.weight[k];
        }
        t
    }
}

/// What pass 2 reads.
struct ApplyCtx<'a, V, M> {
    model: M,
    bins: &'a Bins,
    tables: &'a Tables,
    pred: &'a [f32],
    accumulate: bool,
    skip_bad: bool,
    sum_loss: bool,
    _v: PhantomData<V>,
}

/// Pass 2 over a batch: what it reads, and the full output buffers. `LOSS`: the loss of
/// each element is needed (for `loss_elems` or the loss sum); `ONE`: see [`ApplySegment`].
struct Apply<'a, V, M, const LOSS: bool, const ONE: bool> {
    ctx: ApplyCtx<'a, V, M>,
    grad: Option<&'a mut [f32]>,
    loss_elems: Option<&'a mut [f32]>,
    /// Where each block's part of `grad` and of `loss_elems` lies.
    views: (View, View),
    /// Per-lane sums of `weight[bin] * l`.
    sums: [f64; MAX_LANES],
}

/// Pass 2 over one segment: its part of the output buffers.
///
/// `ONE`: the one call's pass 2, fixed at compile time (gradients overwritten, no per-element
/// losses, the loss summed; `walk` stores the gradients); the loop then tests no output flags
/// and checks no bounds per vector: GHM-R's one call 1.7% faster at 64Ki elements (median of
/// 10 alternating in-process runs, all ten faster). Without `ONE` the outputs are read at run
/// time. `skip_bad` is read at run time in both (a `ONE` kind of its own for it was three
/// copies of pass 2 per backend; GHM-R's one call at 64Ki without it: 1.005 on AVX2).
struct ApplySegment<'s, 'a, V, M, const LOSS: bool, const ONE: bool> {
    ctx: &'s ApplyCtx<'a, V, M>,
    grad: Option<&'s mut [f32]>,
    loss_elems: Option<&'s mut [f32]>,
    sums: &'s mut [f64; MAX_LANES],
}

impl<V: Vector, M: Model, const LOSS: bool, const ONE: bool> Step<V>
    for ApplySegment<'_, '_, V, M, LOSS, ONE>
{
    const OUT: bool = ONE;
    #[inline(always)]
    fn step(
        &mut self,
        i: usize,
        x: V,
        pre: (V, V),
        (t, w): (V, V),
        tail: Option<usize>,
    ) -> Result<V, Error> {
        let c = self.ctx;
        let live = live::<V>(tail);
        let mut valid = V::m_and(live, w.gt(V::splat(0.0)));
        if c.skip_bad {
            valid = V::m_andnot(valid, bad_lanes(&c.model, x, t, w, live));
        }
        let e = c.model.eval_pre::<V, LOSS>(x, t, pre);
        // Every output below is masked by `valid`: no trash bin needed.
        let k = c.bins.vector_any(e.g);
        let m = c.bins.m;
        let zero = V::splat(0.0);
        if ONE {
            // Invalid lanes add nothing (their loss may be anything, even NaN). The product
            // is rounded to f32 before the f64 sum (two widenings fewer per vector than an
            // f64 product): within 2^-24 of it, relatively, and every term is >= 0, so the sum
            // stays within 2^-24 of the phased API's and its f32 loss within 1 ulp. GHM-R's
            // one call 3.7% faster at 64Ki elements (median of 10 alternating runs).
            V::lut(&c.tables.weight, k, m)
                .mul(e.loss)
                .add_to_f64_in(valid, self.sums);
            return Ok(V::select(
                valid,
                V::lut(&c.tables.scale, k, m).mul(e.grad),
                zero,
            ));
        }
        if let Some(g) = self.grad.as_deref_mut() {
            let v = V::select(valid, V::lut(&c.tables.scale, k, m).mul(e.grad), zero);
            let g = &mut g[i..];
            if c.accumulate {
                store(g, tail, load::<V>(g, tail).add(v));
            } else {
                store(g, tail, v);
            }
        }
        if LOSS {
            if let Some(le) = self.loss_elems.as_deref_mut() {
                let l = c.model.elem_loss(x, t, e.loss);
                let v = V::select(valid, c.tables.weighted(k, m, l), zero);
                store(&mut le[i..], tail, v);
            }
            if c.sum_loss {
                // Invalid lanes add 0 * 0 (their loss may be anything, even NaN).
                let l = V::select(valid, e.loss, zero);
                V::lut(&c.tables.weight, k, m).mul_add_to_f64(l, self.sums);
            }
        }
        Ok(x)
    }
}

impl<V: Vector, M: Model, const LOSS: bool, const ONE: bool> Visitor<V>
    for Apply<'_, V, M, LOSS, ONE>
{
    #[inline(always)]
    fn segment(&mut self, seg: Seg, mut src: Src<'_>, scratch: &mut Scratch) -> Result<(), Error> {
        let (gv, lv) = self.views;
        let grad = self.grad.as_deref_mut().map(|g| &mut g[seg.out(gv)]);
        // `ONE`: `walk` stores the gradients (there is always a buffer).
        let (grad, out) = if ONE {
            (None, grad.unwrap_or_default())
        } else {
            (grad, &mut [][..])
        };
        let mut part = ApplySegment::<V, M, LOSS, ONE> {
            ctx: &self.ctx,
            grad,
            loss_elems: self.loss_elems.as_deref_mut().map(|l| &mut l[seg.out(lv)]),
            sums: &mut self.sums,
        };
        walk(
            &self.ctx.model,
            &self.ctx.pred[seg.pred()],
            out,
            &mut src,
            scratch,
            &mut part,
            seg.far,
        )
    }

    #[inline(always)]
    fn prefetch_out(&self, b: usize, len: usize) {
        let (gv, lv) = self.views;
        if let Some(g) = self.grad.as_deref() {
            prefetch(g, gv.at(b), len);
        }
        if LOSS {
            if let Some(l) = self.loss_elems.as_deref() {
                prefetch(l, lv.at(b), len);
            }
        }
    }
}

/// The views of `batch`'s gradient and per-element loss buffers.
fn views(batch: &Batch<'_>) -> (View, View) {
    let g = batch.geometry();
    (g.grad, g.loss_elems)
}

/// The first `LANES` (or `tail`) values of `s`.
#[inline(always)]
fn load<V: Vector>(s: &[f32], tail: Option<usize>) -> V {
    match tail {
        None => V::load(s),
        Some(len) => V::load_partial(&s[..len]),
    }
}

/// Stores `v` into the first `LANES` (or `tail`) slots of `out`.
#[inline(always)]
fn store<V: Vector>(out: &mut [f32], tail: Option<usize>, v: V) {
    match tail {
        None => v.store(out),
        Some(len) => v.store_partial(&mut out[..len]),
    }
}

/// Pass 2 over `batch`: writes the requested outputs and returns the sum of
/// `weight[bin] * l` over the valid elements if `out.sum_loss` (0 otherwise). Never fails on
/// valid shapes; the caller has already refused bad input unless `skip_bad`. `S` runs each
/// kind of pass 2 as a function of its own (see [`Passes`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply<V: Vector, M: Model, S: Passes<V>>(
    passes: S,
    model: M,
    bins: &Bins,
    tables: &Tables,
    batch: &Batch<'_>,
    out: Outputs<'_>,
    skip_bad: bool,
) -> Result<f64, Error> {
    let one = out.grad.is_some() && out.loss_elems.is_none() && !out.accumulate && out.sum_loss;
    let a = (model, bins, tables, batch);
    let sums = if one {
        passes.apply::<M, true, true>(a, out, skip_bad)?
    } else if out.loss_elems.is_some() || out.sum_loss {
        passes.apply::<M, true, false>(a, out, skip_bad)?
    } else {
        passes.apply::<M, false, false>(a, out, skip_bad)?
    };
    Ok(sums.iter().sum())
}

/// One kind of [`apply`]: `LOSS` (sum the loss, write per-element losses if asked), `ONE` (the
/// one call: gradients only, overwritten, and the loss sum). Returns the per-lane loss sums.
#[inline(always)]
pub(crate) fn apply_kind<V: Vector, M: Model, const LOSS: bool, const ONE: bool>(
    (model, bins, tables, batch): ApplyArgs<'_, '_, M>,
    out: Outputs<'_>,
    skip_bad: bool,
) -> Result<[f64; MAX_LANES], Error> {
    let ctx = ApplyCtx {
        model,
        bins,
        tables,
        pred: batch.pred(),
        accumulate: out.accumulate,
        skip_bad,
        sum_loss: out.sum_loss,
        _v: PhantomData,
    };
    let mut a = Apply::<V, M, LOSS, ONE> {
        ctx,
        grad: out.grad,
        loss_elems: if LOSS && !ONE { out.loss_elems } else { None },
        views: views(batch),
        sums: [0.0; MAX_LANES],
    };
    batch.visit::<V, _>(&mut a)?;
    Ok(a.sums)
}

/// [`apply_kind`]'s inputs: the model, the bins, the tables and the batch.
pub(crate) type ApplyArgs<'a, 'b, M> = (M, &'a Bins, &'a Tables, &'a Batch<'b>);

// ---------------------------------------------------------------------------------------------
// Pass 2 from stored gradients

/// Pass 2 when pass 1 stored each element's `dl/dx` in `grad`: the bin is recomputed from
/// `g = |dl/dx|` (every model's `g` is exactly that), so the inputs are not read again.
struct Rescale<'a, V> {
    bins: &'a Bins,
    tables: &'a Tables,
    grad: &'a mut [f32],
    grad_view: View,
    _v: PhantomData<V>,
}

impl<V: Vector> Rescale<'_, V> {
    /// Rescales `grad[range]`.
    #[inline(always)]
    fn run(&mut self, range: core::ops::Range<usize>) {
        let (bins, scale) = (self.bins, &self.tables.scale);
        let mut chunks = self.grad[range].chunks_exact_mut(V::LANES);
        for g in &mut chunks {
            rescaled(bins, scale, V::load(g)).store(g);
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            rescaled(bins, scale, V::load_partial(rest)).store_partial(rest);
        }
    }
}

impl<V: Vector> Visitor<V> for Rescale<'_, V> {
    #[inline(always)]
    fn segment(&mut self, seg: Seg, _: Src<'_>, _: &mut Scratch) -> Result<(), Error> {
        self.run(seg.out(self.grad_view));
        Ok(())
    }
}

/// `scale[bin(|d|)] * d`; lanes holding NaN (invalid) get a zero gradient. (A function, not
/// a closure, so that it is inlined into the `#[target_feature]` caller.)
#[inline(always)]
fn rescaled<V: Vector>(bins: &Bins, scale: &[f32; 256], d: V) -> V {
    let valid = d.is_finite();
    let g = d.abs();
    // Where the bin rule divides, a NaN lane would make the vector take the division; 0 in
    // its place does not. (Where 2% of the label weights are 0, as in the benchmark's data,
    // 15% of the vectors of 8 hold an invalid lane.) Where the rule looks the edge up, the
    // select would be one operation more for nothing.
    let g = if bins.divides::<V>() {
        V::select(valid, g, V::splat(0.0))
    } else {
        g
    };
    let k = bins.vector_any(g);
    V::select(valid, V::lut(scale, k, bins.m).mul(d), V::splat(0.0))
}

/// Pass 2 over `batch` from the `dl/dx` that [`accumulate`] stored in `grad`: writes
/// `grad = scale[bin] * dl/dx` (0 for invalid elements), bit-identical to [`apply`]'s.
#[inline(always)]
pub(crate) fn rescale<V: Vector>(
    bins: &Bins,
    tables: &Tables,
    batch: &Batch<'_>,
    grad: &mut [f32],
) -> Result<(), Error> {
    let g = batch.geometry();
    let mut r = Rescale::<V> {
        bins,
        tables,
        grad,
        grad_view: g.grad,
        _v: PhantomData,
    };
    if let Batch::Dense { .. } = batch {
        // A dense batch's segments are its whole blocks: walked straight through the
        // gradient's view (no targets to stage: rescale reads nothing else).
        for b in 0..g.count {
            r.run(g.grad.block(b, g.len));
        }
        return Ok(());
    }
    batch.visit::<V, _>(&mut r)
}
