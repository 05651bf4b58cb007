//! Input layouts: where each element's prediction, target and label weight come from.
//!
//! A batch is walked as *segments*: runs of elements that are contiguous in the prediction
//! (and so in the gradient and per-element loss buffers), each with its targets as a [`Src`],
//! which hands the kernels the matching targets and label weights a block ([`STAGE`]
//! elements) at a time, as arrays. Dense targets are one segment per block, read in place;
//! class-index labels in anchor-major order are one segment per piece of anchors, with a
//! block's targets made from `labels[a] == c`; in class-major order every class plane is a
//! segment whose targets are `labels[a] == c` for that plane's `c`. No one-hot target is ever
//! materialised beyond one block.

use core::ops::Range;

use crate::config::Layout;
use crate::error::Error;
use crate::simd::Vector;
use crate::view::{Blocks, View};

/// Elements per block: the kernels walk a segment in blocks of this many (see
/// `kernel::walk`: the model's `pre` runs over a block before the rest of the work), and
/// [`Src::stage`] hands out a whole block's targets at once. (128 rather than 256: GHM-C's one call
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
    let line = 64 / core::mem::size_of::<T>().max(1);
    // A plain loop over the lines: the iterator chain it replaces (`skip`, `take`,
    // `step_by`), inlined into every kernel, was 114 KB of the library's 3.7 MB of code.
    let end = s.len().min(at.saturating_add(len));
    let mut i = at;
    while i < end {
        touch(s, i);
        i += line;
    }
}

/// Asks the CPU to start loading the cache line of `s[at]`, without a bounds check: `at` may
/// lie past the end of `s` (a prefetch never faults, and the address is only computed, with
/// wrapping arithmetic).
#[inline(always)]
pub(crate) fn touch<T>(s: &[T], at: usize) {
    touch_ptr(s.as_ptr().wrapping_add(at).cast());
}

/// [`touch`] of an address (x86_64 only; elsewhere nothing).
#[inline(always)]
fn touch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of the x86_64 baseline; a prefetch never faults and reads
        // nothing.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Dense targets, one per element.
pub(crate) struct DenseTargets<'a> {
    target: &'a [f32],
    weight: Option<&'a [f32]>,
    pos: usize,
}

/// One class plane of class-major `[C][N]` logits: anchors are contiguous, the class fixed.
pub(crate) struct ClassPlane<'a> {
    labels: &'a [i32],
    weight: Option<&'a [f32]>,
    class: i32,
    pos: usize,
}

/// Anchor-major `[N][C]` logits: a segment of whole rows, anchor `a`'s row holding its `C`
/// classes. Staged per anchor (see [`AnchorRows::stage`]), so that no class count takes a
/// slower way: a row's target is one element set to 1, its weight one value.
pub(crate) struct AnchorRows<'a> {
    labels: &'a [i32],
    weight: Option<&'a [f32]>,
    /// `C`, at least 1.
    classes: usize,
    /// Elements of the segment staged so far.
    pos: usize,
}

impl<'a> AnchorRows<'a> {
    #[inline(always)]
    fn new(labels: &'a [i32], weight: Option<&'a [f32]>, classes: usize) -> Self {
        AnchorRows {
            labels,
            weight,
            classes: classes.max(1),
            pos: 0,
        }
    }
}

/// Targets of a block without targets to read ([`Src::Blind`]).
static ZEROS: [f32; STAGE] = [0.0; STAGE];

impl AnchorRows<'_> {
    /// The next `len` (`1..=STAGE`) targets and weights of the segment, written into `t` and
    /// `w` (the weights read in place with one class, all ones without a weight buffer).
    /// With one class, a vector at a time, as a class plane. Otherwise per anchor: `t` is
    /// zeroed and each anchor with a label in `0..C` sets one element; each anchor's weight
    /// fills its part of the row. (Scanning the labels a vector at a time for the labelled
    /// anchors was 10-15% slower than a branch per anchor on AVX-512, with 5 and 20 classes
    /// and 10% of the anchors labelled: the bit loop's branches mispredict.) `t` has a spare
    /// slot past the block.
    #[inline(always)]
    fn stage<'s, V: Vector>(
        &mut self,
        len: usize,
        t: &'s mut [f32; STAGE + 1],
        w: &'s mut [f32; STAGE],
    ) -> (&'s [f32], &'s [f32])
    where
        Self: 's,
    {
        let len = len.clamp(1, STAGE);
        let c = self.classes;
        let (start, end) = (self.pos, self.pos + len);
        self.pos = end;
        if c == 1 {
            let t = equal_to::<V>(&self.labels[start..end], 0, &mut t[..STAGE]);
            let w = match self.weight {
                Some(wd) => &wd[start..end],
                None => &ONES[..len],
            };
            return (t, w);
        }
        let (a_lo, a_hi) = (start / c, (end - 1) / c + 1);
        *t = [0.0; STAGE + 1];
        for a in a_lo..a_hi {
            // A label outside 0..C (background, or ignored) sets no target: its 1 goes to the
            // spare slot `t[STAGE]`, without a branch (one per anchor mispredicts on
            // random labels).
            let l = self.labels.get(a).copied().unwrap_or(-1);
            let e = (a * c).wrapping_add(l as usize).wrapping_sub(start);
            let hit = (l as u32) < c as u32 && e < len;
            t[if hit { e } else { STAGE }] = 1.0;
        }
        let w: &[f32] = match self.weight {
            None => &ONES[..len],
            Some(wd) => {
                for a in a_lo..a_hi {
                    let (lo, hi) = ((a * c).max(start) - start, ((a + 1) * c).min(end) - start);
                    w[lo..hi].fill(wd.get(a).copied().unwrap_or(0.0));
                }
                &w[..len]
            }
        };
        (&t[..len], w)
    }
}

/// `labels[i] == class` as 1.0 or 0.0 into `t[i]`, a vector at a time (`labels` holds at
/// most [`STAGE`], `t` at least that many); returns `t[..labels.len()]`.
#[inline(always)]
fn equal_to<'s, V: Vector>(labels: &[i32], class: i32, t: &'s mut [f32]) -> &'s [f32] {
    let len = labels.len().min(STAGE);
    let mut i = 0;
    while i < len {
        let l = &labels[i..len];
        let l = match l.get(..V::LANES) {
            Some(full) => V::i_load(full),
            None => V::i_load_partial(l),
        };
        let hit = V::i_eq(l, V::i_splat(class));
        // A whole vector fits: STAGE is a multiple of LANES and i < len <= STAGE.
        V::select(hit, V::splat(1.0), V::splat(0.0)).store(&mut t[i..]);
        i += V::LANES;
    }
    &t[..len]
}

impl<'a> ClassPlane<'a> {
    /// The next `len` (`1..=STAGE`) targets and weights of the plane: the targets written
    /// into `t` a vector at a time, the weights read in place.
    #[inline(always)]
    fn stage<'s, V: Vector>(
        &mut self,
        len: usize,
        t: &'s mut [f32; STAGE + 1],
    ) -> (&'s [f32], &'s [f32])
    where
        'a: 's,
    {
        let len = len.min(STAGE);
        let at = self.pos;
        self.pos += len;
        let t = equal_to::<V>(&self.labels[at..at + len], self.class, &mut t[..STAGE]);
        let w = match self.weight {
            Some(w) => &w[at..at + len],
            None => &ONES[..len],
        };
        (t, w)
    }
}

/// The targets of one segment, whatever the batch's layout: what the kernels walk with.
///
/// One type for every layout, chosen per segment, rather than a type parameter: the kernels
/// read targets and weights from arrays a block at a time ([`Src::stage`]), so each kernel
/// body is compiled once per step rather than once per step and layout (the label layouts'
/// per-vector target code, inlined into every step of every pass, was most of the crate's
/// build time). Label targets are written into a staging array per block and read back.
pub(crate) enum Src<'a> {
    Dense(DenseTargets<'a>),
    Rows(AnchorRows<'a>),
    Plane(ClassPlane<'a>),
    /// Target 0 and weight 1 for every element: what the input screen of a label batch
    /// walks with when the model's prediction key ignores the target (see `kernel::check`),
    /// so that it reads only the predictions, never the labels.
    Blind,
}

impl<'a> Src<'a> {
    /// Targets and label weights of the next [`STAGE`] elements of the segment (which has
    /// that many left), as arrays: a dense block is read in place; label targets are written
    /// into `t` (and weights into `w`) first.
    #[inline(always)]
    pub(crate) fn stage<'s, V: Vector>(
        &mut self,
        t: &'s mut [f32; STAGE + 1],
        w: &'s mut [f32; STAGE],
    ) -> (&'s [f32; STAGE], &'s [f32; STAGE])
    where
        'a: 's,
    {
        if let Src::Dense(d) = self {
            let at = d.pos;
            d.pos += STAGE;
            return (
                stage(d.target, at),
                d.weight.map_or(&ONES, |w| stage(w, at)),
            );
        }
        let (ts, ws) = self.stage_part::<V>(STAGE, t, w);
        // STAGE elements each (see `stage_part`).
        (
            ts.try_into().unwrap_or(&ZEROS),
            ws.try_into().unwrap_or(&ONES),
        )
    }

    /// [`Src::stage`] for the next `len` (`1..=STAGE`) elements: slices of `len` each.
    #[inline(always)]
    pub(crate) fn stage_part<'s, V: Vector>(
        &mut self,
        len: usize,
        t: &'s mut [f32; STAGE + 1],
        w: &'s mut [f32; STAGE],
    ) -> (&'s [f32], &'s [f32])
    where
        'a: 's,
    {
        let len = len.min(STAGE);
        match self {
            Src::Dense(d) => {
                let at = d.pos;
                d.pos += len;
                let w = match d.weight {
                    Some(w) => &w[at..at + len],
                    None => &ONES[..len],
                };
                (&d.target[at..at + len], w)
            }
            Src::Rows(r) => r.stage::<V>(len, t, w),
            Src::Plane(p) => p.stage::<V>(len, t),
            Src::Blind => (&ZEROS[..len], &ONES[..len]),
        }
    }

    /// What to prefetch ahead within the segment ([`Ahead::touch`]), besides `pred` (the
    /// segment's predictions): its targets (or labels) and weights, or `pred` again where it
    /// has none. Chosen once per block, not per vector.
    #[inline(always)]
    pub(crate) fn ahead(&self, pred: &[f32]) -> Ahead {
        let p = pred.as_ptr().cast::<u8>();
        let (t, w) = match self {
            Src::Dense(d) => (
                d.target.as_ptr().cast(),
                d.weight.map(|w| w.as_ptr().cast()),
            ),
            Src::Plane(c) => (
                c.labels.as_ptr().cast(),
                c.weight.map(|w| w.as_ptr().cast()),
            ),
            Src::Rows(_) | Src::Blind => (p, None),
        };
        Ahead {
            t,
            w: w.unwrap_or(p),
        }
    }
}

/// Element 0 of a segment's targets (or labels) and weights, as bytes (4 per element), to
/// prefetch ahead in.
#[derive(Clone, Copy)]
pub(crate) struct Ahead {
    t: *const u8,
    w: *const u8,
}

impl Ahead {
    /// A hint: element `at` of the segment's targets and weights will be read soon.
    #[inline(always)]
    pub(crate) fn touch(&self, at: usize) {
        touch_ptr(self.t.wrapping_add(4 * at));
        touch_ptr(self.w.wrapping_add(4 * at));
    }
}

/// Staging arrays of one block, kept across a batch's segments (so that no segment
/// initialises its own): the model's `pre` of the predictions, and targets and label weights
/// for [`Src::stage`].
pub(crate) struct Scratch {
    pub pre: [[f32; STAGE]; 2],
    /// With a spare slot past the block (see [`AnchorRows::stage`]).
    pub t: [f32; STAGE + 1],
    pub w: [f32; STAGE],
}

impl Scratch {
    #[inline(always)]
    fn new() -> Scratch {
        Scratch {
            pre: [[0.0; STAGE]; 2],
            t: [0.0; STAGE + 1],
            w: [0.0; STAGE],
        }
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
    /// One segment, with its targets, and the staging arrays for the kernels' blocks.
    fn segment(&mut self, seg: Seg, src: Src<'_>, scratch: &mut Scratch) -> Result<(), Error>;

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
        self.segments::<V, S>(v, false)
    }

    /// [`Batch::visit`], but a label batch's segments come with [`Src::Blind`] targets
    /// (target 0, weight 1), so that the labels and weights are not read. Dense targets are
    /// handed over as they are.
    #[inline(always)]
    pub(crate) fn visit_blind<V: Vector, S: Visitor<V>>(&self, v: &mut S) -> Result<(), Error> {
        self.segments::<V, S>(v, true)
    }

    /// Prefetches the inputs of block `b` (`bp` predictions, `bt` targets and weights; not
    /// the targets if `blind`). Out of line, one copy for every kernel: it runs once per
    /// block, and only for short blocks in batches far outside the caches. (Inlined into
    /// each of the kernels' walks it was 42 KB of the shared library's 2.25 MB of code and
    /// 2% of the crate's build time; AVX2 instructions per call, callgrind: the same at 64Ki
    /// contiguous, 0.986 in 169-element blocks at 64Ki and 256Ki.)
    #[inline(never)]
    fn prefetch_block(&self, g: &Blocks, b: usize, bp: usize, bt: usize, blind: bool) {
        prefetch(self.pred(), g.pred.at(b), bp);
        if blind {
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

    /// Hands every segment to `v` (see [`Batch::visit`]), from one call site: each kernel is
    /// inlined there once, whatever the layout.
    #[inline(always)]
    fn segments<V: Vector, S: Visitor<V>>(&self, v: &mut S, blind: bool) -> Result<(), Error> {
        let g = self.geometry();
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
        let mut scratch = Scratch::new();
        for b in 0..g.count {
            if ahead > 0 && b + ahead < g.count {
                self.prefetch_block(&g, b + ahead, bp, bt, blind);
                v.prefetch_out(b + ahead, bp);
            }
            let mut k = 0;
            while let Some((seg, src)) = self.segment(&g, b, k, far, blind) {
                v.segment(seg, src, &mut scratch)?;
                k += 1;
            }
        }
        Ok(())
    }

    /// Segment `k` of block `b`, with its targets (`blind`: [`Src::Blind`] for labels), or
    /// `None` past the block's last. Dense targets are one segment per block; anchor-major
    /// labels one per [`ANCHORS_PER_SEGMENT`] anchors; class-major labels one per class plane.
    #[inline(always)]
    fn segment(
        &self,
        g: &Blocks,
        b: usize,
        k: usize,
        far: bool,
        blind: bool,
    ) -> Option<(Seg, Src<'a>)> {
        let len = g.len;
        let pred = g.pred.at(b);
        let seg = |r: Range<usize>| Seg {
            block: b,
            at: r.start,
            len: r.len(),
            pred: pred + r.start,
            far,
        };
        match *self {
            Batch::Dense { target, weight, .. } => (k == 0).then(|| {
                let targets = DenseTargets {
                    target: part(target, g.target.at(b), len),
                    weight: weight.map(|w| part(w, g.weight.at(b), len)),
                    pos: 0,
                };
                (seg(0..len), Src::Dense(targets))
            }),
            Batch::Labels {
                labels,
                weight,
                classes,
                layout,
                ref anchors,
                ..
            } => {
                if classes == 0 || anchors.is_empty() {
                    return None;
                }
                let labels = part(labels, g.target.at(b), len);
                let weight = weight.map(|w| part(w, g.weight.at(b), len));
                match layout {
                    Layout::AnchorMajor => {
                        let a = anchors
                            .start
                            .checked_add(k.checked_mul(ANCHORS_PER_SEGMENT)?)?;
                        if a >= anchors.end {
                            return None;
                        }
                        let e = anchors.end.min(a + ANCHORS_PER_SEGMENT);
                        let src = if blind {
                            Src::Blind
                        } else {
                            Src::Rows(AnchorRows::new(
                                &labels[a..e],
                                weight.map(|w| &w[a..e]),
                                classes,
                            ))
                        };
                        Some((seg(a * classes..e * classes), src))
                    }
                    Layout::ClassMajor => {
                        if k >= classes {
                            return None;
                        }
                        let start = k * len;
                        let src = if blind {
                            Src::Blind
                        } else {
                            Src::Plane(ClassPlane {
                                labels: &labels[anchors.clone()],
                                weight: weight.map(|w| &w[anchors.clone()]),
                                class: k as i32,
                                pos: 0,
                            })
                        };
                        Some((seg(start + anchors.start..start + anchors.end), src))
                    }
                }
            }
        }
    }
}
