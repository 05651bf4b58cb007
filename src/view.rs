//! Strided views: a batch read and written in place inside larger buffers.
//!
//! A trainer's tensors rarely hold one loss's elements contiguously. Darknet's YOLO output is
//! `[batch][anchor][4 + 1 + C][h * w]`: the objectness of one (image, anchor) is `h * w`
//! contiguous floats, and the next one's starts `(5 + C) * h * w` floats later. A [`Blocks`]
//! describes such a batch: `count` blocks of `len` elements, and for every array (predictions,
//! targets or labels, label weights, gradient, per-element losses) a [`View`]: where its block
//! `b` starts. The kernels walk the blocks one after the other within each pass, so the density
//! is over the whole batch; each block adds at most one partial vector (its tail) to the
//! contiguous path's work.

use crate::error::Error;

/// Where the blocks of one array lie: block `b` starts at element `offset + b * stride` of
/// the array's buffer (in elements of the array's type, not bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Element index of block 0.
    pub offset: usize,
    /// Elements from the start of one block to the start of the next (unused when
    /// `count == 1`).
    pub stride: usize,
}

impl View {
    /// Block 0 at element `offset`, blocks `stride` elements apart.
    pub const fn new(offset: usize, stride: usize) -> View {
        View { offset, stride }
    }

    /// Blocks packed one after the other: block `b` at `b * len`.
    pub const fn packed(len: usize) -> View {
        View {
            offset: 0,
            stride: len,
        }
    }

    /// The first element of block `b` (in bounds once [`View::extent`] has been checked).
    #[inline(always)]
    pub(crate) fn at(self, b: usize) -> usize {
        self.offset + b * self.stride
    }

    /// The elements of block `b`, `n` of them: from [`View::at`], or `0..0` for a block of
    /// none (whose view's offset may lie outside a buffer of none: found by fuzzing).
    #[inline(always)]
    pub(crate) fn block(self, b: usize, n: usize) -> core::ops::Range<usize> {
        let start = if n == 0 { 0 } else { self.at(b) };
        start..start + n
    }

    /// Elements a buffer needs to hold `count` blocks of `block` elements through this view:
    /// one past the last element of the last block (0 for no element). [`Error::Shape`] on
    /// overflow.
    pub(crate) fn extent(self, count: usize, block: usize) -> Result<usize, Error> {
        if count == 0 || block == 0 {
            return Ok(0);
        }
        (count - 1)
            .checked_mul(self.stride)
            .and_then(|s| s.checked_add(self.offset))
            .and_then(|s| s.checked_add(block))
            .ok_or(Error::Shape)
    }

    /// Whether blocks of `block` elements through this view share no element (an output
    /// must not: an element would be written twice).
    pub(crate) fn self_disjoint(self, count: usize, block: usize) -> bool {
        count <= 1 || block == 0 || self.stride >= block
    }
}

/// A batch as `count` blocks of `len` elements, with one view (`ghm_view`) per array.
///
/// - Dense targets (GHM-C, GHM-R): every array's block is `len` elements.
/// - Class-index labels: a block is `len` anchors; its predictions, gradients and
///   per-element losses are `len * C` elements in the call's layout (anchor-major
///   `[len][C]` or class-major `[C][len]`), its labels and anchor weights `len` elements.
///   `target` is the labels' view, `weight` the anchor weights'.
///
/// Views of outputs must not overlap themselves (`stride >= ` the block's elements, or one
/// block); two views of one buffer that share no element are fine (the C layer checks this
/// exactly). Everything else (overlapping input blocks, a stride of 0 to reuse one target
/// block for every block) is allowed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Blocks {
    /// Number of blocks.
    pub count: usize,
    /// Elements per block (anchors per block, for class-index labels).
    pub len: usize,
    /// Predictions (logits or probabilities).
    pub pred: View,
    /// Targets, or class-index labels.
    pub target: View,
    /// Label weights, or anchor weights (ignored when there are none).
    pub weight: View,
    /// Gradient (ignored when not asked for).
    pub grad: View,
    /// Per-element losses (ignored when not asked for).
    pub loss_elems: View,
}

impl Blocks {
    /// `count` blocks of `len` elements, every array with the same `view`.
    pub const fn uniform(count: usize, len: usize, view: View) -> Blocks {
        Blocks {
            count,
            len,
            pred: view,
            target: view,
            weight: view,
            grad: view,
            loss_elems: view,
        }
    }

    /// One block of `len` elements at the start of every buffer: the contiguous batch.
    pub const fn contiguous(len: usize) -> Blocks {
        Blocks::uniform(1, len, View::packed(len))
    }

    /// Elements of the whole batch, `count * len * per` ([`Error::Shape`] on overflow).
    pub(crate) fn elements(&self, per: usize) -> Result<usize, Error> {
        self.count
            .checked_mul(self.len)
            .and_then(|n| n.checked_mul(per))
            .ok_or(Error::Shape)
    }
}
