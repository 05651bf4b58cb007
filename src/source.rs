//! Input layouts: where each element's prediction, target and label weight come from.
//!
//! A batch is walked as *segments*: runs of elements that are contiguous in the prediction
//! (and so in the gradient and per-element loss buffers), each with a [`Targets`] provider that
//! yields the matching targets and label weights lane-vector by lane-vector. Dense targets are
//! one segment; class-index labels in anchor-major order are one segment per piece of
//! anchors, with targets made on the fly from `labels[a] == c`; in class-major order every
//! class plane is a segment whose targets are `labels[a] == c` for that plane's `c`. No one-hot
//! target is ever materialised.

use core::ops::Range;

use crate::config::Layout;
use crate::error::Error;
use crate::simd::{Vector, MAX_LANES};
use crate::view::{Blocks, View};

/// Elements per block: the kernels walk a segment in blocks of this many (see
/// `kernel::walk`: the model's `pre` runs over a block before the rest of the work), and
/// [`Targets::block`] hands out a whole block at once. (128 rather than 256: GHM-C's one call
/// 6.6% faster at 64Ki elements, GHM-R 2% slower, as whole-process medians of 9 alternating
/// runs; no change at 1Mi and 16Mi. Measured again after the loop lost its per-vector flags
/// and bounds checks: 64 and 256 were 6% and 9% slower than 128, medians of 8 alternating
/// in-process runs.)
pub(crate) const STAGE: usize = 128;

/// Batches of at least this many elements are prefetched (1 MiB per f32 input: the three
/// inputs no longer fit in L2 together).
pub(crate) const PREFETCH_MIN: usize = 1 << 18;

/// How far ahead the prefetches reach, in elements (4 KiB of each f32 input: 8 stage blocks).
pub(crate) const PREFETCH_AHEAD: usize = 8 * STAGE;

/// Label weights of a block without a weight buffer.
static ONES: [f32; STAGE] = [1.0; STAGE];

/// Yields the targets and label weights of one segment, in order.
pub(crate) trait Targets<V: Vector> {
    /// The next [`STAGE`] elements, as whole vectors.
    type Block<'b>: TargetBlock<V>
    where
        Self: 'b;
    /// The next [`STAGE`] elements of the segment (which has that many left). Their targets
    /// come from fixed-size arrays, so that reading a vector of them checks no bounds: one
    /// check per block and input instead of one per vector. (GHM-C's one call 2.7% faster at
    /// 64Ki elements, a median of 12 alternating in-process runs: within this machine's
    /// noise.)
    fn block(&mut self) -> Self::Block<'_>;
    /// Targets and label weights (all ones if there are none) of the next `len`
    /// (`1..=V::LANES`) elements. Lanes at and beyond `len` are unspecified. (Whether a weight
    /// is bad is left to the kernels, which only ask when they check element by element:
    /// computed here for every vector, it cost GHM-C's one call 2.3% at 64Ki elements, a
    /// median of 10 alternating runs, within this machine's noise.)
    fn next(&mut self, len: usize) -> (V, V);
}

/// The targets and label weights of one block (see [`Targets::block`]).
pub(crate) trait TargetBlock<V: Vector> {
    /// Vector `j` (`j < STAGE / LANES`) of the block: its targets and label weights.
    fn get(&mut self, j: usize) -> (V, V);
    /// A hint: elements `at..at + len` of the segment will be read soon.
    #[inline(always)]
    fn prefetch(&self, _at: usize, _len: usize) {}
}

/// Vector `j` of a block's array.
#[inline(always)]
fn lanes<V: Vector>(a: &[f32; STAGE], j: usize) -> V {
    V::load(&a[j * V::LANES..(j + 1) * V::LANES])
}

/// `s[at..at + STAGE]`, as an array.
#[inline(always)]
fn stage<T>(s: &[T], at: usize) -> &[T; STAGE] {
    s[at..at + STAGE].try_into().expect("STAGE elements")
}

/// Asks the CPU to start loading the cache lines of `s[at..at + len]` (those inside `s`).
/// Worth it once the data is far outside the caches: the kernels' long per-vector dependency
/// chains keep few loads in flight, so the hardware prefetchers alone fall behind.
#[inline(always)]
pub(crate) fn prefetch<T>(s: &[T], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let line = 64 / core::mem::size_of::<T>().max(1);
        for item in s.iter().skip(at).take(len).step_by(line) {
            // SAFETY: SSE is part of the x86_64 baseline; a prefetch never faults and reads
            // nothing (the address is inside `s` anyway).
            unsafe { _mm_prefetch::<_MM_HINT_T0>((item as *const T).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, at, len);
}

/// Label weights: present, or absent (all ones).
#[inline(always)]
fn weights<V: Vector>(w: Option<&[f32]>, pos: usize, len: usize) -> V {
    match w {
        Some(w) if len == V::LANES => V::load(&w[pos..pos + V::LANES]),
        Some(w) => V::load_partial(&w[pos..pos + len]),
        None => V::splat(1.0),
    }
}

/// Dense targets, one per element.
pub(crate) struct DenseTargets<'a> {
    target: &'a [f32],
    weight: Option<&'a [f32]>,
    pos: usize,
}

/// A block of [`DenseTargets`].
pub(crate) struct DenseBlock<'a> {
    target: &'a [f32; STAGE],
    weight: &'a [f32; STAGE],
    /// The whole segment's, for prefetching.
    all: &'a DenseTargets<'a>,
}

impl<V: Vector> TargetBlock<V> for DenseBlock<'_> {
    #[inline(always)]
    fn get(&mut self, j: usize) -> (V, V) {
        (lanes(self.target, j), lanes(self.weight, j))
    }
    #[inline(always)]
    fn prefetch(&self, at: usize, len: usize) {
        prefetch(self.all.target, at, len);
        if let Some(w) = self.all.weight {
            prefetch(w, at, len);
        }
    }
}

impl<V: Vector> Targets<V> for DenseTargets<'_> {
    type Block<'b>
        = DenseBlock<'b>
    where
        Self: 'b;
    #[inline(always)]
    fn block(&mut self) -> DenseBlock<'_> {
        let at = self.pos;
        self.pos += STAGE;
        DenseBlock {
            target: stage(self.target, at),
            weight: self.weight.map_or(&ONES, |w| stage(w, at)),
            all: self,
        }
    }
    #[inline(always)]
    fn next(&mut self, len: usize) -> (V, V) {
        let t = if len == V::LANES {
            V::load(&self.target[self.pos..self.pos + V::LANES])
        } else {
            V::load_partial(&self.target[self.pos..self.pos + len])
        };
        let w = weights::<V>(self.weight, self.pos, len);
        self.pos += len;
        (t, w)
    }
}

/// One class plane of class-major `[C][N]` logits: anchors are contiguous, the class fixed.
pub(crate) struct ClassPlane<'a> {
    labels: &'a [i32],
    weight: Option<&'a [f32]>,
    class: i32,
    pos: usize,
}

/// A block of a [`ClassPlane`].
pub(crate) struct PlaneBlock<'a> {
    labels: &'a [i32; STAGE],
    weight: &'a [f32; STAGE],
    /// The whole plane, for its class and for prefetching.
    all: &'a ClassPlane<'a>,
}

impl<V: Vector> TargetBlock<V> for PlaneBlock<'_> {
    #[inline(always)]
    fn get(&mut self, j: usize) -> (V, V) {
        let labels = V::i_load(&self.labels[j * V::LANES..(j + 1) * V::LANES]);
        let hit = V::i_eq(labels, V::i_splat(self.all.class));
        let t = V::select(hit, V::splat(1.0), V::splat(0.0));
        (t, lanes(self.weight, j))
    }
    #[inline(always)]
    fn prefetch(&self, at: usize, len: usize) {
        prefetch(self.all.labels, at, len);
        if let Some(w) = self.all.weight {
            prefetch(w, at, len);
        }
    }
}

impl<V: Vector> Targets<V> for ClassPlane<'_> {
    type Block<'b>
        = PlaneBlock<'b>
    where
        Self: 'b;
    #[inline(always)]
    fn block(&mut self) -> PlaneBlock<'_> {
        let at = self.pos;
        self.pos += STAGE;
        PlaneBlock {
            labels: stage(self.labels, at),
            weight: self.weight.map_or(&ONES, |w| stage(w, at)),
            all: self,
        }
    }
    #[inline(always)]
    fn next(&mut self, len: usize) -> (V, V) {
        let labels = if len == V::LANES {
            V::i_load(&self.labels[self.pos..self.pos + V::LANES])
        } else {
            V::i_load_partial(&self.labels[self.pos..self.pos + len])
        };
        let hit = V::i_eq(labels, V::i_splat(self.class));
        let t = V::select(hit, V::splat(1.0), V::splat(0.0));
        let w = weights::<V>(self.weight, self.pos, len);
        self.pos += len;
        (t, w)
    }
}

/// Target 0 and weight 1 for every element: what the input screen of a label batch walks
/// with when the model's prediction key ignores the target (see `kernel::check`), so that it
/// reads only the predictions, never the labels.
pub(crate) struct Blind;

impl<V: Vector> TargetBlock<V> for Blind {
    #[inline(always)]
    fn get(&mut self, _: usize) -> (V, V) {
        (V::splat(0.0), V::splat(1.0))
    }
}

impl<V: Vector> Targets<V> for Blind {
    type Block<'b> = Blind;
    #[inline(always)]
    fn block(&mut self) -> Blind {
        Blind
    }
    #[inline(always)]
    fn next(&mut self, _: usize) -> (V, V) {
        TargetBlock::<V>::get(self, 0)
    }
}

/// Anchor-major `[N][C]` logits: lane `j` of the next vector is anchor `anchor[j]`, class
/// `class[j]`; both advance by `LANES` elements per step.
///
/// When `C` is a multiple of `LANES` (80 or 16 classes, on every backend), every vector lies
/// in one anchor's row and takes that anchor's label and weight broadcast instead. GHM-C's one
/// call at 64Ki elements on AVX2, against the general way: 0.90 with 16 classes, 0.88 with 80
/// (8 and 6 alternating processes); with 20 classes, which take the general way in both
/// builds, 0.976. The choice is a flag tested per vector, not a targets type of its own: as
/// a type, every kernel was compiled once more (the C library's code 24% larger) for 1% more
/// speed.
pub(crate) struct AnchorRows<'a, V: Vector> {
    labels: &'a [i32],
    weight: Option<&'a [f32]>,
    classes: i32,
    anchor: V::I,
    class: V::I,
    /// The anchor and class of lane 0.
    anchor0: usize,
    class0: i32,
    /// `LANES / C` and `LANES % C`.
    step_anchor: i32,
    step_class: i32,
    /// `C` is a multiple of `LANES`: every vector lies in one anchor's row.
    whole: bool,
}

/// The first `LANES` values of `s` (zeros past its end).
#[inline(always)]
fn load_from<V: Vector>(s: &[f32]) -> V {
    match s.get(..V::LANES) {
        Some(full) => V::load(full),
        None => V::load_partial(s),
    }
}

/// [`load_from`] for i32 data.
#[inline(always)]
fn i_load_from<V: Vector>(s: &[i32]) -> V::I {
    match s.get(..V::LANES) {
        Some(full) => V::i_load(full),
        None => V::i_load_partial(s),
    }
}

impl<'a, V: Vector> AnchorRows<'a, V> {
    #[inline(always)]
    fn new(labels: &'a [i32], weight: Option<&'a [f32]>, classes: usize) -> Self {
        // classes fits i32 (checked by Batch::check).
        let c = classes as i32;
        let mut anchor = [0i32; MAX_LANES];
        let mut class = [0i32; MAX_LANES];
        for j in 0..V::LANES {
            anchor[j] = j as i32 / c;
            class[j] = j as i32 % c;
        }
        AnchorRows {
            labels,
            weight,
            classes: c,
            anchor: V::i_load(&anchor),
            class: V::i_load(&class),
            anchor0: 0,
            class0: 0,
            step_anchor: V::LANES as i32 / c,
            step_class: V::LANES as i32 % c,
            whole: classes.is_multiple_of(V::LANES),
        }
    }
}

/// A block of [`AnchorRows`]: its vectors one after the other.
impl<V: Vector> TargetBlock<V> for &mut AnchorRows<'_, V> {
    #[inline(always)]
    fn get(&mut self, _: usize) -> (V, V) {
        <AnchorRows<'_, V> as Targets<V>>::next(self, V::LANES)
    }
}

impl<'a, V: Vector> Targets<V> for AnchorRows<'a, V> {
    type Block<'b>
        = &'b mut AnchorRows<'a, V>
    where
        Self: 'b;
    #[inline(always)]
    fn block(&mut self) -> &mut AnchorRows<'a, V> {
        self
    }
    #[inline(always)]
    fn next(&mut self, _len: usize) -> (V, V) {
        if self.whole {
            // One anchor's label, broadcast, against consecutive classes; its weight,
            // broadcast. A segment is whole rows, so every vector is whole and `anchor0` in
            // bounds (read with `get` all the same: no panic path in a kernel).
            let a = self.anchor0;
            let label = self.labels.get(a).copied().unwrap_or(-1);
            let class = V::i_add(V::i_iota(), V::i_splat(self.class0));
            let hit = V::i_eq(V::i_splat(label), class);
            let t = V::select(hit, V::splat(1.0), V::splat(0.0));
            let w = match self.weight {
                Some(w) => V::splat(w.get(a).copied().unwrap_or(0.0)),
                None => V::splat(1.0),
            };
            self.class0 += V::LANES as i32;
            if self.class0 == self.classes {
                self.class0 = 0;
                self.anchor0 += 1;
            }
            return (t, w);
        }
        // A vector spans at most LANES anchors from lane 0's: load the labels (and weights)
        // of that many and permute them into place, rather than gather. Lanes past the
        // segment end read zeros; the kernel masks them.
        let a0 = self.anchor0.min(self.labels.len());
        let rel = V::i_sub(self.anchor, V::i_splat(a0 as i32));
        let label = V::i_permute(i_load_from::<V>(&self.labels[a0..]), rel);
        let hit = V::i_eq(label, self.class);
        let t = V::select(hit, V::splat(1.0), V::splat(0.0));
        let w = match self.weight {
            Some(w) => load_from::<V>(&w[a0.min(w.len())..]).permute(rel),
            None => V::splat(1.0),
        };
        self.class0 += self.step_class;
        self.anchor0 += self.step_anchor as usize;
        if self.class0 >= self.classes {
            self.class0 -= self.classes;
            self.anchor0 += 1;
        }
        // Advance by LANES elements: one wrap at most, since step_class < C.
        let class = V::i_add(self.class, V::i_splat(self.step_class));
        let anchor = V::i_add(self.anchor, V::i_splat(self.step_anchor));
        let wrap = V::m_andnot(
            V::first_lanes(V::LANES),
            V::i_lt(class, V::i_splat(self.classes)),
        );
        self.class = V::i_select(wrap, V::i_sub(class, V::i_splat(self.classes)), class);
        self.anchor = V::i_inc(anchor, wrap);
        (t, w)
    }
}

/// A segment of a batch: elements `at..at + len` of block `block`, whose predictions are
/// `pred..pred + len` of the prediction buffer. Each output buffer finds its part through its
/// own view ([`Seg::out`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seg {
    pub block: usize,
    pub at: usize,
    pub len: usize,
    pub pred: usize,
    /// The whole batch is at least [`PREFETCH_MIN`] elements (a view's blocks may each be
    /// short; their batch is not). The kernels then prefetch ahead within the segment if it is
    /// longer than [`PREFETCH_AHEAD`]; shorter blocks are prefetched by
    /// [`Batch::segments`].
    pub far: bool,
}

impl Seg {
    /// The segment's range of the prediction buffer.
    #[inline(always)]
    pub(crate) fn pred(&self) -> Range<usize> {
        self.pred..self.pred + self.len
    }

    /// The segment's range of a buffer seen through `view` (an output's).
    #[inline(always)]
    pub(crate) fn out(&self, view: View) -> Range<usize> {
        let start = view.at(self.block) + self.at;
        start..start + self.len
    }
}

/// Receives the segments of a batch.
pub(crate) trait Visitor<V: Vector> {
    /// One segment, with its targets.
    fn segment<T: Targets<V>>(&mut self, seg: Seg, targets: T) -> Result<(), Error>;

    /// Block `b` (`len` predictions) is a few blocks ahead ([`Batch::segments`] prefetches
    /// its inputs): prefetch the outputs the visitor will write there, if any.
    #[inline(always)]
    fn prefetch_out(&self, _b: usize, _len: usize) {}
}

/// Anchors per anchor-major segment: keeps in-segment anchor indices well inside i32.
const ANCHORS_PER_SEGMENT: usize = 1 << 24;

/// The inputs of one call: a whole batch or, for the phased API, one chunk of it.
///
/// `blocks: None` is a contiguous batch, whose buffers have exactly its length (outputs too);
/// with [`Blocks`], every buffer is read (and written) through its view and need only hold
/// its blocks.
#[derive(Clone, Debug)]
pub(crate) enum Batch<'a> {
    /// Element `i` of block `b` has prediction `pred[pred_view.at(b) + i]`, and so on.
    Dense {
        pred: &'a [f32],
        target: &'a [f32],
        weight: Option<&'a [f32]>,
        blocks: Option<Blocks>,
    },
    /// `[N x C]` logits per block (`N` anchors: all of `labels` for a contiguous batch,
    /// `blocks.len` otherwise) with one label and weight per anchor; only the anchors
    /// `anchors` of each block are covered.
    Labels {
        pred: &'a [f32],
        labels: &'a [i32],
        weight: Option<&'a [f32]>,
        classes: usize,
        layout: Layout,
        anchors: Range<usize>,
        blocks: Option<Blocks>,
    },
}

/// `s[at..at + len]` (in bounds once the batch is checked).
#[inline(always)]
fn part<T>(s: &[T], at: usize, len: usize) -> &[T] {
    &s[at..at + len]
}

impl<'a> Batch<'a> {
    /// The whole prediction buffer.
    pub(crate) fn pred(&self) -> &'a [f32] {
        match self {
            Batch::Dense { pred, .. } | Batch::Labels { pred, .. } => pred,
        }
    }

    /// Predictions per block element: 1, or `C` for class-index labels.
    fn per_element_of_block(&self) -> usize {
        match self {
            Batch::Dense { .. } => 1,
            Batch::Labels { classes, .. } => *classes,
        }
    }

    /// Elements of each array's block: predictions and outputs, then targets and weights.
    fn block_sizes(&self) -> (usize, usize) {
        let len = self.geometry().len;
        (len.saturating_mul(self.per_element_of_block()), len)
    }

    /// Whether the batch came with views (its buffers need only hold their blocks), rather
    /// than as contiguous buffers of exactly its length.
    fn blocked(&self) -> bool {
        matches!(
            self,
            Batch::Dense {
                blocks: Some(_),
                ..
            } | Batch::Labels {
                blocks: Some(_),
                ..
            }
        )
    }

    /// The batch's blocks: its views, or one block at the start of every buffer.
    pub(crate) fn geometry(&self) -> Blocks {
        match self {
            Batch::Dense {
                blocks: Some(b), ..
            }
            | Batch::Labels {
                blocks: Some(b), ..
            } => *b,
            Batch::Dense { pred, .. } => Blocks::contiguous(pred.len()),
            Batch::Labels { labels, .. } => Blocks::contiguous(labels.len()),
        }
    }

    /// Number of elements this batch (or chunk) covers.
    pub(crate) fn elements(&self) -> usize {
        let count = self.geometry().count;
        match self {
            Batch::Dense { .. } => count * self.geometry().len,
            Batch::Labels {
                classes, anchors, ..
            } => count * anchors.len() * classes,
        }
    }

    /// Checks that the buffers hold the batch ([`Error::Shape`] otherwise).
    pub(crate) fn check(&self) -> Result<(), Error> {
        if let Batch::Labels {
            classes, anchors, ..
        } = self
        {
            let n = self.geometry().len;
            if *classes > i32::MAX as usize || anchors.start > anchors.end || anchors.end > n {
                return Err(Error::Shape);
            }
        }
        let (pred, target, weight) = match self {
            Batch::Dense {
                pred,
                target,
                weight,
                ..
            } => (pred.len(), target.len(), weight.map(|w| w.len())),
            Batch::Labels {
                pred,
                labels,
                weight,
                ..
            } => (pred.len(), labels.len(), weight.map(|w| w.len())),
        };
        let g = self.geometry();
        g.elements(self.per_element_of_block())?;
        let (bp, bt) = self.block_sizes();
        let blocked = self.blocked();
        let fits = |have: usize, view: View, block: usize| -> Result<bool, Error> {
            let need = view.extent(g.count, block)?;
            Ok(if blocked { have >= need } else { have == need })
        };
        let ok = fits(pred, g.pred, bp)?
            && fits(target, g.target, bt)?
            && match weight {
                Some(w) => fits(w, g.weight, bt)?,
                None => true,
            };
        if ok {
            Ok(())
        } else {
            Err(Error::Shape)
        }
    }

    /// Checks that an output buffer of `have` elements (`None`: not asked for) holds the
    /// batch's outputs through `view`: [`Error::Shape`] if it is too short (or, for a
    /// contiguous batch, not exactly as long as the predictions), [`Error::Alias`] if the
    /// view's blocks share elements.
    pub(crate) fn check_output(&self, have: Option<usize>, view: View) -> Result<(), Error> {
        let Some(have) = have else { return Ok(()) };
        let g = self.geometry();
        let (bp, _) = self.block_sizes();
        let need = view.extent(g.count, bp)?;
        let blocked = self.blocked();
        if !view.self_disjoint(g.count, bp) {
            return Err(Error::Alias);
        }
        if (blocked && have < need) || (!blocked && have != need) {
            return Err(Error::Shape);
        }
        Ok(())
    }

    /// The largest bit pattern of the covered anchors' label weights (0 for dense targets,
    /// or without weights).
    pub(crate) fn anchor_weight_max_bits(&self) -> u32 {
        let Batch::Labels {
            weight: Some(w),
            anchors,
            ..
        } = self
        else {
            return 0;
        };
        let g = self.geometry();
        (0..g.count)
            .flat_map(|b| w[g.weight.at(b) + anchors.start..g.weight.at(b) + anchors.end].iter())
            .map(|w| w.to_bits())
            .max()
            .unwrap_or(0)
    }

    /// Hands every segment to `v`, block by block, in memory order within each class plane.
    #[inline(always)]
    pub(crate) fn visit<V: Vector, S: Visitor<V>>(&self, v: &mut S) -> Result<(), Error> {
        self.segments::<V, S, false>(v)
    }

    /// [`Batch::visit`], but a label batch's segments come with [`Blind`] targets (target 0,
    /// weight 1), so that the labels and weights are not read. Dense targets are handed over
    /// as they are.
    #[inline(always)]
    pub(crate) fn visit_blind<V: Vector, S: Visitor<V>>(&self, v: &mut S) -> Result<(), Error> {
        self.segments::<V, S, true>(v)
    }

    /// Prefetches the inputs of block `b` (`bp` predictions, `bt` targets and weights; not
    /// the targets if `BLIND`).
    #[inline(always)]
    fn prefetch_block<const BLIND: bool>(&self, g: &Blocks, b: usize, bp: usize, bt: usize) {
        prefetch(self.pred(), g.pred.at(b), bp);
        if BLIND {
            return;
        }
        let weight = match *self {
            Batch::Dense { target, weight, .. } => {
                prefetch(target, g.target.at(b), bt);
                weight
            }
            Batch::Labels { labels, weight, .. } => {
                prefetch(labels, g.target.at(b), bt);
                weight
            }
        };
        if let Some(w) = weight {
            prefetch(w, g.weight.at(b), bt);
        }
    }

    #[inline(always)]
    fn segments<V: Vector, S: Visitor<V>, const BLIND: bool>(
        &self,
        v: &mut S,
    ) -> Result<(), Error> {
        let g = self.geometry();
        let len = g.len;
        let far = self.elements() >= PREFETCH_MIN;
        // Blocks shorter than the prefetch distance: a block's own walk reaches no element
        // ahead of it, so each block's inputs are prefetched whole, that many blocks ahead
        // (as many prefetches per element as the walk's, issued a block at a time).
        let (bp, bt) = self.block_sizes();
        let ahead = if far && bp < PREFETCH_AHEAD {
            PREFETCH_AHEAD.div_ceil(bp.max(1))
        } else {
            0
        };
        for b in 0..g.count {
            let pred = g.pred.at(b);
            if ahead > 0 && b + ahead < g.count {
                self.prefetch_block::<BLIND>(&g, b + ahead, bp, bt);
                v.prefetch_out(b + ahead, bp);
            }
            match *self {
                Batch::Dense { target, weight, .. } => {
                    let seg = Seg {
                        block: b,
                        at: 0,
                        len,
                        pred,
                        far,
                    };
                    let targets = DenseTargets {
                        target: part(target, g.target.at(b), len),
                        weight: weight.map(|w| part(w, g.weight.at(b), len)),
                        pos: 0,
                    };
                    v.segment(seg, targets)?;
                }
                Batch::Labels {
                    labels,
                    weight,
                    classes,
                    layout,
                    ref anchors,
                    ..
                } => {
                    if classes == 0 || anchors.is_empty() {
                        return Ok(());
                    }
                    let labels = part(labels, g.target.at(b), len);
                    let weight = weight.map(|w| part(w, g.weight.at(b), len));
                    let seg = |r: Range<usize>| Seg {
                        block: b,
                        at: r.start,
                        len: r.len(),
                        pred: pred + r.start,
                        far,
                    };
                    match layout {
                        Layout::AnchorMajor => {
                            let mut a = anchors.start;
                            while a < anchors.end {
                                let e = anchors.end.min(a + ANCHORS_PER_SEGMENT);
                                let s = seg(a * classes..e * classes);
                                if BLIND {
                                    v.segment(s, Blind)?;
                                } else {
                                    let rows = AnchorRows::<V>::new(
                                        &labels[a..e],
                                        weight.map(|w| &w[a..e]),
                                        classes,
                                    );
                                    v.segment(s, rows)?;
                                }
                                a = e;
                            }
                        }
                        Layout::ClassMajor => {
                            for c in 0..classes {
                                let start = c * len;
                                let s = seg(start + anchors.start..start + anchors.end);
                                if BLIND {
                                    v.segment(s, Blind)?;
                                    continue;
                                }
                                let plane = ClassPlane {
                                    labels: &labels[anchors.clone()],
                                    weight: weight.map(|w| &w[anchors.clone()]),
                                    class: c as i32,
                                    pos: 0,
                                };
                                v.segment(s, plane)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
