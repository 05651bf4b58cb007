//! The passes of softmax cross-entropy GHM ([`crate::GhmSoftmax`]), written once over
//! [`Vector`]: every backend, the scalar one included (`f32` as a one-lane vector), runs this
//! code.
//!
//! Per sample (a row of `C` logits `x`, its label `y`): `m = max(x)`, `e_c = exp(x_c - m)`,
//! `S = sum(e_c)`, `p = e / S`; the gradient norm `g = 1 - p_y`, the loss
//! `CE = ln(S) - (x_y - m)` and the gradient `p - onehot(y)`. The logits are read a vector at a
//! time: across a row's classes for anchor-major `[N][C]` logits, across samples for
//! class-major `[C][N]` ones.
//!
//! Accuracy: the classes holding the maximum have `e = 1` exactly; they are counted (`k` of
//! them), and the others summed into `T`, so `S - 1 = (k - 1) + T` keeps every digit of the
//! small terms. Then `CE = log1p(S - 1) - (x_y - m)`, and for a label at the maximum
//! `g = (S - 1) / S` (its gradient entry `-g`), without cancelling 1 against `p_y`; a label
//! below the maximum has `p_y <= 1/2` and `g = 1 - p_y` loses nothing. Easy samples (`p_y`
//! near 1) so get their small loss and gradient to a few ulp, where `ln(S)` and `p_y - 1`
//! would lose most of their digits (an f32 `S` of `1 + 1e-6` holds about one).
//!
//! The same results on every backend and in both layouts, bit for bit: `m` is exact, `exp`
//! is [`exp_neg`] (the same bits on every backend), and `T` is summed in one fixed order
//! whatever the vector width: class `c` goes to partial sum `c % 16` (a vector's lanes, or the
//! lanes of two, four or sixteen narrower vectors), each partial sum adds its classes in
//! increasing order, and the 16 partial sums are added pairwise (`s[i] += s[i + 8]`, then 4,
//! 2, 1). What follows per sample (`1 / S`, `p_y`, `g`, `log1p`, the bin) is computed for
//! `LANES` samples at once ([`classify`]) with lane-wise correctly rounded operations,
//! `exp_neg` and [`log1p`] (`libm::log1pf`'s bits), the same on every backend.
//!
//! Pass 1 ([`accumulate`]) bins every valid sample and sums its loss per bin. Pass 2
//! ([`apply`]) writes each sample's gradient row, `factor * (p - onehot)` with the factor of
//! its bin (0 for invalid and skipped samples), and its weighted loss. Overwriting, pass 2
//! keeps `e` in the gradient row between its sum and its scaling (one `exp` per logit);
//! accumulating into the caller's gradient, it computes `e` again.

use core::ops::Range;

use crate::bins::Bins;
use crate::config::{Layout, MAX_BINS};
use crate::error::Error;
use crate::kernel::Tables;
use crate::simd::{Vector, MAX_LANES};
use crate::source::{prefetch, PREFETCH_MIN};
use crate::vmath::{exp_neg, log1p};

/// Partial sums of `S`: class `c` is added into sum `c % SUMS`.
const SUMS: usize = 16;
const _: () = assert!(SUMS == MAX_LANES);

/// The samples of one block: `len` anchors, of which `anchors` are walked.
#[derive(Clone, Debug)]
pub(crate) struct Rows<'a> {
    /// `len * classes` logits in `layout` order.
    pub x: &'a [f32],
    /// `len` labels (`0..classes` a class, anything else ignored).
    pub labels: &'a [i32],
    /// `len` validity weights (`> 0` valid), or all valid.
    pub weight: Option<&'a [f32]>,
    /// `C`, at least 1.
    pub classes: usize,
    pub layout: Layout,
    /// Anchors in the block (the plane length of class-major logits).
    pub len: usize,
    /// The anchors walked.
    pub anchors: Range<usize>,
}

/// What pass 1 adds up: per-bin counts, loss sums and `g` sums, the valid samples and the
/// bad ones skipped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sums {
    pub counts: [u64; MAX_BINS],
    pub loss: [f64; MAX_BINS],
    pub g: [f64; MAX_BINS],
    pub valid: u64,
    pub skipped: u64,
}

impl Sums {
    pub(crate) fn new() -> Sums {
        Sums {
            counts: [0; MAX_BINS],
            loss: [0.0; MAX_BINS],
            g: [0.0; MAX_BINS],
            valid: 0,
            skipped: 0,
        }
    }
}

/// Where pass 2 writes (each the block's part of its buffer).
pub(crate) struct Dest<'a> {
    /// `len * classes` floats in the logits' layout.
    pub grad: Option<&'a mut [f32]>,
    /// `len` floats: each sample's `loss_weight * w_bin * CE`.
    pub loss: Option<&'a mut [f32]>,
    /// Add into `grad` instead of overwriting it.
    pub accumulate: bool,
}

/// A sample's statistics: the row's maximum, the sum of its exponentials below the maximum
/// and the number of maxima (`S = maxima + t`), and whether every logit is finite.
#[derive(Clone, Copy)]
struct Stat {
    m: f32,
    /// The sum of `e_c` over the classes below the maximum (the maxima's are exactly 1).
    t: f32,
    /// How many classes hold the maximum (at least 1 in a finite row).
    maxima: u32,
    finite: bool,
}

/// The 16 partial sums added pairwise: `S`.
#[inline(always)]
fn tree(mut s: [f32; SUMS]) -> f32 {
    let mut h = SUMS / 2;
    while h > 0 {
        for i in 0..h {
            s[i] += s[i + h];
        }
        h /= 2;
    }
    s[0]
}

/// Whether every lane of `keys` (absolute values' bits) is a finite float's.
#[inline(always)]
fn all_finite<V: Vector>(keys: V::I) -> bool {
    let max = V::i_splat(f32::MAX.to_bits() as i32);
    V::m_count(V::i_eq(V::i_min_u(keys, max), keys)) as usize == V::LANES
}

/// Sample `a`'s weight (1 without weights).
#[inline(always)]
fn weight_of(rows: &Rows<'_>, a: usize) -> f32 {
    rows.weight.map_or(1.0, |w| w[a])
}

/// What up to `LANES` samples are, once their statistics are known: per lane, whether it is
/// valid or bad (neither: ignored, or a padding lane), and a valid sample's bin, `g`, `1 / S`
/// and loss.
struct Kinds {
    /// Bit `i`: sample `i` is valid (its label in `0..C`, its weight > 0, finite).
    valid: u32,
    /// Bit `i`: a logit is not finite, or the weight not in `[0, f32::MAX]`.
    bad: u32,
    bin: [i32; MAX_LANES],
    g: [f32; MAX_LANES],
    inv: [f32; MAX_LANES],
    ce: [f32; MAX_LANES],
}

impl Kinds {
    /// Sample `i`'s factor, `1 / S`, `g` and weighted loss (all 0 unless it is valid).
    #[inline(always)]
    fn factor(&self, t: &Tables, i: usize) -> (f32, f32, f32, f32) {
        if self.valid >> i & 1 == 0 {
            return (0.0, 0.0, 0.0, 0.0);
        }
        let bin = self.bin[i] as usize;
        let l = t.weighted_of(bin, self.ce[i]);
        (t.scale_of(bin), self.inv[i], self.g[i], l)
    }
}

/// Classifies the `n` (`1..=LANES`) samples from anchor `a` from their statistics, a vector
/// for all of them; their losses only if `want_ce` (0 otherwise: pass 2 without per-sample
/// losses needs none).
///
/// Per sample, with `d = x_y - m` and `S - 1 = (maxima - 1) + T`: `1 / S`; `g = (S - 1) / S`
/// when the label is a maximum (`d = 0`: without cancelling 1 against `p_y`), `1 - e^d / S`
/// otherwise (then `p_y <= 1/2`: no cancellation); `CE = log1p(S - 1) - d`; the bin of `g` by
/// [`Bins::vector_any`] (the scalar rule's bins, see `exact_bin_rule`). Lane-wise correctly
/// rounded operations, [`exp_neg`] and [`log1p`] (`libm::log1pf`'s bits): the same bits on
/// every backend, whatever the width. (One sample at a time, with `libm::log1pf`, the bin's
/// search and `exp` in lane 0 of a vector, this was a fifth of softmax GHM's time on
/// AVX-512.)
#[inline(always)]
fn classify<V: Vector>(
    rows: &Rows<'_>,
    bins: &Bins,
    a: usize,
    n: usize,
    st: &Lanes,
    want_ce: bool,
) -> Kinds {
    // Padding lanes: weight 0 and no label (neither valid nor bad).
    let mut w = [0.0f32; MAX_LANES];
    let mut y = [-1i32; MAX_LANES];
    let mut x_y = [0.0f32; MAX_LANES];
    let mut finite = [0i32; MAX_LANES];
    let mut maxima = [1.0f32; MAX_LANES];
    for i in 0..n {
        w[i] = weight_of(rows, a + i);
        y[i] = rows.labels[a + i];
        x_y[i] = label_logit(rows, a + i);
        finite[i] = if st.finite[i] { -1 } else { 0 };
        maxima[i] = st.maxima[i] as f32;
    }
    let zero = V::splat(0.0);
    let one = V::splat(1.0);
    let w = V::from_array(&w);
    let y = V::i_load(&y);
    let ok = V::m_and(
        V::i_eq(V::i_load(&finite), V::i_splat(-1)),
        w.in_range(0.0, f32::MAX),
    );
    let bad = V::m_andnot(V::first_lanes(n), ok);
    // A label in 0..C: unsigned, y <= C - 1 (every y >= 0 when C > i32::MAX).
    let top = V::i_splat((rows.classes.clamp(1, 1 << 31) - 1) as i32);
    let labelled = V::i_eq(V::i_min_u(y, top), y);
    let valid = V::m_andnot(V::m_and(labelled, w.gt(zero)), bad);
    // Bad lanes compute a harmless sample (their statistics may be NaN or infinite).
    let m = V::select(bad, zero, V::from_array(&st.m));
    let t = V::select(bad, zero, V::from_array(&st.t));
    let maxima = V::select(bad, one, V::from_array(&maxima));
    let d = V::select(bad, zero, V::from_array(&x_y)).sub(m);
    // S - 1: the other maxima (each exactly 1) and the rest.
    let s_1 = maxima.sub(one).add(t);
    let inv = one.div(maxima.add(t));
    // A valid sample's d is at most 0: d >= 0 is d == 0, the label a maximum.
    let g = V::select(d.ge(zero), s_1.mul(inv), one.sub(exp_neg(d).mul(inv)));
    // -log p_y = log(S) - d = log1p(S - 1) - d.
    let ce = if want_ce { log1p(s_1).sub(d) } else { zero };
    // g is in [0, 1] (below the last edge); the bin of anything else is clamped.
    let bin = V::i_min_u(bins.vector_any(g.max(zero)), V::i_splat(bins.m as i32 - 1));
    Kinds {
        valid: V::m_bits(valid),
        bad: V::m_bits(bad),
        bin: V::i_to_array(bin),
        g: g.to_array(),
        inv: inv.to_array(),
        ce: ce.to_array(),
    }
}

/// The logit of sample `a`'s label (any finite value when the label is not a class).
#[inline(always)]
fn label_logit(rows: &Rows<'_>, a: usize) -> f32 {
    let y = rows.labels[a];
    if (y as u32 as usize) >= rows.classes {
        return 0.0;
    }
    match rows.layout {
        Layout::AnchorMajor => rows.x[a * rows.classes + y as usize],
        Layout::ClassMajor => rows.x[y as usize * rows.len + a],
    }
}

// ---------------------------------------------------------------------------------------------
// Anchor-major rows: a vector across a row's classes

/// `e = exp(x - m)` and the lanes of `live` where `x` is the maximum `m` (there `e` is 1).
#[inline(always)]
fn exp_below<V: Vector>(x: V, m: V, live: V::M) -> (V, V::M) {
    let d = x.sub(m);
    // `x - m` is exactly 0 where `x == m`, and negative elsewhere.
    (exp_neg(d), V::m_and(live, d.ge(V::splat(0.0))))
}

/// `m`, `S` (summed in the fixed order), whether the row is finite; with `store`, each `e_c`
/// is written to `store[c]`.
#[inline(always)]
fn row_stat<V: Vector>(row: &[f32], mut store: Option<&mut [f32]>) -> Stat {
    let c = row.len();
    let l = V::LANES;
    let full = c / l;
    let mut mx = V::splat(f32::NEG_INFINITY);
    let mut keys = V::i_splat(0);
    for j in 0..full {
        let x = V::load(&row[j * l..]);
        mx = mx.max(x);
        keys = V::i_max_u(keys, x.abs().to_bits());
    }
    if full * l < c {
        let live = V::first_lanes(c - full * l);
        // Padding lanes are zeros: finite, and below no maximum once masked.
        let x = V::load_partial(&row[full * l..]);
        mx = mx.max(V::select(live, x, V::splat(f32::NEG_INFINITY)));
        keys = V::i_max_u(keys, x.abs().to_bits());
    }
    // Pairwise, not a chain of 16 dependent maxima (the order does not change a maximum).
    let mut lanes = mx.to_array();
    let mut h = l / 2;
    while h > 0 {
        for i in 0..h {
            lanes[i] = lanes[i].max(lanes[i + h]);
        }
        h /= 2;
    }
    let m = lanes[0];
    if !all_finite::<V>(keys) {
        return Stat {
            m,
            t: 0.0,
            maxima: 1,
            finite: false,
        };
    }
    let mv = V::splat(m);
    // Vector `j` goes to accumulator `j % k`: lane `i` of it is partial sum `(j % k) * l + i`,
    // which is `c % 16` for its class `c = j * l + i`.
    // The maxima's exponentials (exactly 1) are counted, not summed: `S - 1` then keeps every
    // digit of the other terms, which `1 - p_y` and the loss of an easy sample are made of.
    let k = SUMS / l;
    let mut acc = [V::splat(0.0); SUMS];
    let mut maxima = 0;
    let all = V::first_lanes(l);
    let mut j = 0;
    while j + k <= full {
        for (q, a) in acc[..k].iter_mut().enumerate() {
            let at = (j + q) * l;
            let (e, top) = exp_below::<V>(V::load(&row[at..]), mv, all);
            if let Some(s) = store.as_deref_mut() {
                e.store(&mut s[at..]);
            }
            *a = a.add(V::select(top, V::splat(0.0), e));
            maxima += V::m_count(top);
        }
        j += k;
    }
    for (q, a) in acc[..full - j].iter_mut().enumerate() {
        let at = (j + q) * l;
        let (e, top) = exp_below::<V>(V::load(&row[at..]), mv, all);
        if let Some(s) = store.as_deref_mut() {
            e.store(&mut s[at..]);
        }
        *a = a.add(V::select(top, V::splat(0.0), e));
        maxima += V::m_count(top);
    }
    if full * l < c {
        let at = full * l;
        let live = V::first_lanes(c - at);
        let (e, top) = exp_below::<V>(V::load_partial(&row[at..]), mv, live);
        if let Some(s) = store {
            e.store_partial(&mut s[at..c]);
        }
        let below = V::m_andnot(live, top);
        acc[full - j] = acc[full - j].add(V::select(below, e, V::splat(0.0)));
        maxima += V::m_count(top);
    }
    let mut s = [0.0f32; SUMS];
    for (q, a) in acc[..k].iter().enumerate() {
        s[q * l..(q + 1) * l].copy_from_slice(&a.to_array()[..l]);
    }
    Stat {
        m,
        t: tree(s),
        maxima,
        finite: true,
    }
}

/// Writes `f * (p - onehot(y))` over a row: `e` read back from `out` (`recompute`: computed
/// again from `row` and `m`), `out` overwritten or added to (`accumulate`); the label's entry
/// `p_y - 1` is `-g`, as [`classify`] computed it. `y` may be any value (no class: no one).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn row_write<V: Vector>(
    row: &[f32],
    out: &mut [f32],
    m: f32,
    inv: f32,
    f: f32,
    y: i32,
    g: f32,
    recompute: bool,
    accumulate: bool,
) {
    let c = row.len();
    let l = V::LANES;
    let (mv, iv, fv) = (V::splat(m), V::splat(inv), V::splat(f));
    // `0 - g`, not `-g`: +0 when g is 0, as `p_y - 1` is (and as the planes compute it).
    let at_y = V::splat(0.0 - g);
    let mut at = 0;
    while at < c {
        let n = (c - at).min(l);
        let tail = n < l;
        let e = if recompute {
            let x = if tail {
                V::load_partial(&row[at..])
            } else {
                V::load(&row[at..])
            };
            exp_neg(x.sub(mv))
        } else if tail {
            V::load_partial(&out[at..c])
        } else {
            V::load(&out[at..])
        };
        let is_y = V::i_eq(V::i_add(V::i_iota(), V::i_splat(at as i32)), V::i_splat(y));
        let d = V::select(is_y, at_y, e.mul(iv));
        let mut v = fv.mul(d);
        if accumulate {
            let old = if tail {
                V::load_partial(&out[at..c])
            } else {
                V::load(&out[at..])
            };
            v = old.add(v);
        }
        if tail {
            v.store_partial(&mut out[at..c]);
        } else {
            v.store(&mut out[at..]);
        }
        at += l;
    }
}

// ---------------------------------------------------------------------------------------------
// Class-major planes: a vector across samples

/// `s[at..at + n]` as a vector (`n <= LANES`; zero lanes past `n`). A function, not a
/// closure: a closure that is not inlined is compiled without the caller's target features,
/// and every intrinsic in it becomes a call (AVX2's planes ran 4x slower so).
#[inline(always)]
fn load_n<V: Vector>(s: &[f32], at: usize, n: usize) -> V {
    if n < V::LANES {
        V::load_partial(&s[at..at + n])
    } else {
        V::load(&s[at..])
    }
}

/// The statistics of up to `LANES` samples, one per lane ([`Stat`]'s fields).
struct Lanes {
    m: [f32; MAX_LANES],
    t: [f32; MAX_LANES],
    maxima: [i32; MAX_LANES],
    finite: [bool; MAX_LANES],
}

impl Lanes {
    /// No samples yet (each lane a finite row with one maximum).
    #[inline(always)]
    fn new() -> Lanes {
        Lanes {
            m: [0.0; MAX_LANES],
            t: [0.0; MAX_LANES],
            maxima: [1; MAX_LANES],
            finite: [true; MAX_LANES],
        }
    }

    /// Lane `i` holds sample `st`.
    #[inline(always)]
    fn set(&mut self, i: usize, st: Stat) {
        self.m[i] = st.m;
        self.t[i] = st.t;
        self.maxima[i] = st.maxima as i32;
        self.finite[i] = st.finite;
    }
}

/// How far ahead of its samples [`plane_stat`] prefetches each plane: 256 bytes.
const PLANE_AHEAD: usize = 64;

/// The statistics of the `n` (`1..=LANES`) samples from anchor `a` (see [`Stat`]); with
/// `store`, each `e` written to the gradient planes.
#[inline(always)]
fn plane_stat<V: Vector>(
    rows: &Rows<'_>,
    a: usize,
    n: usize,
    mut store: Option<&mut [f32]>,
) -> Lanes {
    let (c, len) = (rows.classes, rows.len);
    let tail = n < V::LANES;
    let mut mx = V::splat(f32::NEG_INFINITY);
    let mut keys = V::i_splat(0);
    // Far outside the caches, the planes are C streams at once, more than the hardware
    // prefetchers follow: each plane's line PLANE_AHEAD samples on is asked for (and the
    // gradient's, to be written).
    let far = len.saturating_mul(c) >= PREFETCH_MIN;
    for k in 0..c {
        if far {
            let ahead = k * len + a + PLANE_AHEAD;
            prefetch(rows.x, ahead, 1);
            if let Some(g) = store.as_deref() {
                prefetch(g, ahead, 1);
            }
        }
        let x = load_n::<V>(rows.x, k * len + a, n);
        mx = mx.max(x);
        keys = V::i_max_u(keys, x.abs().to_bits());
    }
    let mut acc = [V::splat(0.0); SUMS];
    let mut maxima = V::i_splat(0);
    let all = V::first_lanes(V::LANES);
    // Whole groups of 16 classes with a fixed trip count (the sums stay in registers where
    // there are enough), then the rest.
    let mut k = 0;
    while k < c {
        let group = (c - k).min(SUMS);
        for (q, s) in acc.iter_mut().enumerate() {
            if group < SUMS && q >= group {
                break;
            }
            let at = (k + q) * len + a;
            let (e, top) = exp_below::<V>(load_n::<V>(rows.x, at, n), mx, all);
            if let Some(g) = store.as_deref_mut() {
                if tail {
                    e.store_partial(&mut g[at..at + n]);
                } else {
                    e.store(&mut g[at..]);
                }
            }
            *s = s.add(V::select(top, V::splat(0.0), e));
            maxima = V::i_inc(maxima, top);
        }
        k += SUMS;
    }
    let mut h = SUMS / 2;
    while h > 0 {
        for i in 0..h {
            acc[i] = acc[i].add(acc[i + h]);
        }
        h /= 2;
    }
    let max = f32::MAX.to_bits() as i32;
    let keys = V::i_to_array(keys);
    let mut finite = [true; MAX_LANES];
    for (f, &k) in finite.iter_mut().zip(&keys) {
        // Unsigned: a NaN's absolute bits are above f32::MAX's.
        *f = (k as u32) <= max as u32;
    }
    Lanes {
        m: mx.to_array(),
        t: acc[0].to_array(),
        maxima: V::i_to_array(maxima),
        finite,
    }
}

/// Writes `f * (p - onehot)` into the gradient planes of the `n` samples from anchor `a`
/// (per lane `m`, `1 / S`, the factor, the label and `g`: the label's entry is `-g`). A lane whose factor is 0 (an invalid or
/// bad sample, whose `e` may be NaN) writes +0, or leaves the gradient as it is when adding.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn plane_write<V: Vector>(
    rows: &Rows<'_>,
    out: &mut [f32],
    a: usize,
    n: usize,
    m: &[f32; MAX_LANES],
    inv: &[f32; MAX_LANES],
    f: &[f32; MAX_LANES],
    g: &[f32; MAX_LANES],
    recompute: bool,
    accumulate: bool,
) {
    let (c, len) = (rows.classes, rows.len);
    let tail = n < V::LANES;
    let (mv, iv, fv) = (V::from_array(m), V::from_array(inv), V::from_array(f));
    let at_y = V::splat(0.0).sub(V::from_array(g));
    let labels = &rows.labels[a..a + n];
    let y = if tail {
        V::i_load_partial(labels)
    } else {
        V::i_load(labels)
    };
    let live = fv.abs().gt(V::splat(0.0));
    for k in 0..c {
        let at = k * len + a;
        let e = if recompute {
            exp_neg(load_n::<V>(rows.x, at, n).sub(mv))
        } else {
            load_n::<V>(out, at, n)
        };
        let d = V::select(V::i_eq(y, V::i_splat(k as i32)), at_y, e.mul(iv));
        let v = if accumulate {
            let old = load_n::<V>(out, at, n);
            V::select(live, old.add(fv.mul(d)), old)
        } else {
            V::select(live, fv.mul(d), V::splat(0.0))
        };
        if tail {
            v.store_partial(&mut out[at..at + n]);
        } else {
            v.store(&mut out[at..]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The passes

/// Pass 1's work for the `n` samples from anchor `a`: classifies them and adds the valid ones
/// to `sums` in order. (A function, not a closure, so that it is compiled with the backend's
/// target features: as a closure it was not inlined, and its `exp` called `fmaf`.)
#[inline(always)]
fn add<V: Vector>(
    rows: &Rows<'_>,
    bins: &Bins,
    skip_bad: bool,
    sums: &mut Sums,
    (a, n): (usize, usize),
    st: &Lanes,
) -> Result<(), Error> {
    let k = classify::<V>(rows, bins, a, n, st, true);
    for i in 0..n {
        if k.valid >> i & 1 != 0 {
            let bin = k.bin[i] as usize;
            sums.counts[bin] += 1;
            sums.loss[bin] += k.ce[i] as f64;
            // Rounded to a multiple of 2^-23, as GHM-C's (exact sums in any order).
            sums.g[bin] += ((k.g[i] + 1.0) - 1.0) as f64;
            sums.valid += 1;
        } else if k.bad >> i & 1 != 0 {
            if !skip_bad {
                return Err(Error::Input);
            }
            sums.skipped += 1;
        }
    }
    Ok(())
}

/// Rows of anchor-major logits classified together in pass 2: up to `LANES`, and up to this
/// many floats (their `e` wait in the gradient rows meanwhile, which should stay in L1).
const GROUP_FLOATS: usize = 2048;

/// Samples of anchor-major rows taken together: `LANES`, fewer for long rows.
#[inline(always)]
fn row_group<V: Vector>(classes: usize) -> usize {
    V::LANES.min(GROUP_FLOATS / classes.max(1)).max(1)
}

/// Pass 1 over a block's anchors: adds each valid sample to `sums` (its bin's count, loss and
/// `g`), counts the bad ones if `skip_bad`, and fails with [`Error::Input`] on the first bad
/// one otherwise.
#[inline(always)]
pub(crate) fn accumulate<V: Vector>(
    rows: &Rows<'_>,
    bins: &Bins,
    skip_bad: bool,
    sums: &mut Sums,
) -> Result<(), Error> {
    let mut a = rows.anchors.start;
    while a < rows.anchors.end {
        let n = (rows.anchors.end - a).min(V::LANES);
        let lanes = match rows.layout {
            Layout::AnchorMajor => {
                let c = rows.classes;
                let mut lanes = Lanes::new();
                for i in 0..n {
                    let row = &rows.x[(a + i) * c..(a + i + 1) * c];
                    lanes.set(i, row_stat::<V>(row, None));
                }
                lanes
            }
            Layout::ClassMajor => plane_stat::<V>(rows, a, n, None),
        };
        add::<V>(rows, bins, skip_bad, sums, (a, n), &lanes)?;
        a += n;
    }
    Ok(())
}

/// Pass 2 over a block's anchors, known to be good (or `skip_bad`: the bad ones get factor 0):
/// each sample's gradient row `scale[bin] * (p - onehot)` and weighted loss
/// `loss_weight * (w[bin] * CE)` (0 and a row of zeros for invalid and bad samples; with
/// `accumulate`, their rows are left as they are).
#[inline(always)]
pub(crate) fn apply<V: Vector>(rows: &Rows<'_>, bins: &Bins, t: &Tables, mut dest: Dest<'_>) {
    let accumulate = dest.accumulate;
    let want_ce = dest.loss.is_some();
    // `e` can wait in the gradient buffer only when it is being overwritten.
    let keep = !accumulate;
    match rows.layout {
        Layout::AnchorMajor => {
            let c = rows.classes;
            let group = row_group::<V>(c);
            let mut a = rows.anchors.start;
            while a < rows.anchors.end {
                let n = (rows.anchors.end - a).min(group);
                // Sample i's row of logits and of the gradient.
                let row = |i: usize| (a + i) * c..(a + i + 1) * c;
                let mut lanes = Lanes::new();
                for i in 0..n {
                    let out = dest.grad.as_deref_mut().filter(|_| keep);
                    lanes.set(
                        i,
                        row_stat::<V>(&rows.x[row(i)], out.map(|g| &mut g[row(i)])),
                    );
                }
                let kinds = classify::<V>(rows, bins, a, n, &lanes, want_ce);
                for i in 0..n {
                    let (f, inv, g, l) = kinds.factor(t, i);
                    let x = &rows.x[row(i)];
                    if let Some(out) = dest.grad.as_deref_mut().map(|g| &mut g[row(i)]) {
                        if f == 0.0 && !accumulate {
                            out.fill(0.0);
                        } else if f != 0.0 {
                            let y = rows.labels[a + i];
                            let m = lanes.m[i];
                            row_write::<V>(x, out, m, inv, f, y, g, !keep, accumulate);
                        }
                    }
                    if let Some(le) = dest.loss.as_deref_mut() {
                        le[a + i] = l;
                    }
                }
                a += n;
            }
        }
        Layout::ClassMajor => {
            let mut a = rows.anchors.start;
            while a < rows.anchors.end {
                let n = (rows.anchors.end - a).min(V::LANES);
                let lanes = plane_stat::<V>(rows, a, n, dest.grad.as_deref_mut().filter(|_| keep));
                let kinds = classify::<V>(rows, bins, a, n, &lanes, want_ce);
                let mut f = [0.0f32; MAX_LANES];
                let (mut inv, mut g) = (f, f);
                for i in 0..n {
                    let l;
                    (f[i], inv[i], g[i], l) = kinds.factor(t, i);
                    if let Some(le) = dest.loss.as_deref_mut() {
                        le[a + i] = l;
                    }
                }
                if let Some(out) = dest.grad.as_deref_mut() {
                    let m = &lanes.m;
                    plane_write::<V>(rows, out, a, n, m, &inv, &f, &g, !keep, accumulate);
                }
                a += n;
            }
        }
    }
}
