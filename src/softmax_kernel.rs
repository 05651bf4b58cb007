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
//! 2, 1). What follows per sample (`1 / S`, `p_y`, `g`, `log1p`, the bin) is scalar code and
//! `exp_neg`, the same on every backend.
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
use crate::vmath::exp_neg;

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

/// What a sample is, once its statistics are known.
#[derive(Clone, Copy)]
enum Kind {
    /// Valid: its bin, `g`, `1 / S` and its loss.
    Valid {
        bin: usize,
        g: f32,
        inv: f32,
        ce: f32,
    },
    /// Ignored (its label outside `0..C`, or its weight 0): counts nowhere.
    Ignored,
    /// A logit not finite, or its weight not in `[0, f32::MAX]`.
    Bad,
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

/// Classifies sample `a` from its statistics (scalar arithmetic and `exp_neg`: the same on
/// every backend); its loss only if `want_ce` (0 otherwise: pass 2 without per-sample losses
/// needs none, and `logf` was a tenth of its time).
#[inline(always)]
fn classify<V: Vector>(
    rows: &Rows<'_>,
    bins: &Bins,
    a: usize,
    st: Stat,
    x_y: f32,
    want_ce: bool,
) -> Kind {
    let w = weight_of(rows, a);
    if !st.finite || !(0.0..=f32::MAX).contains(&w) {
        return Kind::Bad;
    }
    let y = rows.labels[a];
    if !((y as u32 as usize) < rows.classes && w > 0.0) {
        return Kind::Ignored;
    }
    let d = x_y - st.m;
    // S - 1: the other maxima (each exactly 1) and the rest.
    let s_1 = (st.maxima - 1) as f32 + st.t;
    let inv = 1.0 / (st.maxima as f32 + st.t);
    let g = if d == 0.0 {
        // The label is a maximum: 1 - p_y = (S - 1) / S, without cancelling 1 against p_y.
        s_1 * inv
    } else {
        // exp(d) in lane 0 of a vector: the same bits as the scalar path's (see `exp_neg`),
        // with the backend's own fused multiply-adds rather than calls to `fmaf`. Here
        // p_y <= 1/2 (a larger probability is a maximum's): no cancellation.
        1.0 - exp_neg(V::splat(d)).to_array()[0] * inv
    };
    // -log p_y = log(S) - d = log1p(S - 1) - d.
    let ce = if want_ce { libm::log1pf(s_1) - d } else { 0.0 };
    // g is in [0, 1].
    let bin = bins.scalar(g.max(0.0)).unwrap_or(bins.m - 1);
    Kind::Valid { bin, g, inv, ce }
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

/// The statistics of up to `LANES` samples, one per lane.
struct Lanes {
    m: [f32; MAX_LANES],
    t: [f32; MAX_LANES],
    maxima: [i32; MAX_LANES],
    finite: [bool; MAX_LANES],
}

impl Lanes {
    #[inline(always)]
    fn stat(&self, i: usize) -> Stat {
        Stat {
            m: self.m[i],
            t: self.t[i],
            maxima: self.maxima[i] as u32,
            finite: self.finite[i],
        }
    }
}

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
    for k in 0..c {
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

/// Pass 1's work per sample. (A function, not a closure, so that it is compiled with the
/// backend's target features: as a closure it was not inlined, and its `exp` called `fmaf`.)
#[inline(always)]
fn add<V: Vector>(
    rows: &Rows<'_>,
    bins: &Bins,
    skip_bad: bool,
    sums: &mut Sums,
    a: usize,
    st: Stat,
) -> Result<(), Error> {
    match classify::<V>(rows, bins, a, st, label_logit(rows, a), true) {
        Kind::Valid { bin, g, ce, .. } => {
            sums.counts[bin] += 1;
            sums.loss[bin] += ce as f64;
            // Rounded to a multiple of 2^-23, as GHM-C's (exact sums in any order).
            sums.g[bin] += ((g + 1.0) - 1.0) as f64;
            sums.valid += 1;
        }
        Kind::Ignored => {}
        Kind::Bad if skip_bad => sums.skipped += 1,
        Kind::Bad => return Err(Error::Input),
    }
    Ok(())
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
    match rows.layout {
        Layout::AnchorMajor => {
            let c = rows.classes;
            for a in rows.anchors.clone() {
                let st = row_stat::<V>(&rows.x[a * c..(a + 1) * c], None);
                add::<V>(rows, bins, skip_bad, sums, a, st)?;
            }
        }
        Layout::ClassMajor => {
            let mut a = rows.anchors.start;
            while a < rows.anchors.end {
                let n = (rows.anchors.end - a).min(V::LANES);
                let lanes = plane_stat::<V>(rows, a, n, None);
                for i in 0..n {
                    add::<V>(rows, bins, skip_bad, sums, a + i, lanes.stat(i))?;
                }
                a += n;
            }
        }
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
    // A sample's factor, 1 / S, g and weighted loss (all 0 for invalid and bad samples).
    let factor = |kind: Kind| match kind {
        Kind::Valid { bin, g, inv, ce } => (t.scale_of(bin), inv, g, t.weighted_of(bin, ce)),
        Kind::Ignored | Kind::Bad => (0.0, 0.0, 0.0, 0.0),
    };
    match rows.layout {
        Layout::AnchorMajor => {
            let c = rows.classes;
            for a in rows.anchors.clone() {
                let x = &rows.x[a * c..(a + 1) * c];
                let mut out = dest.grad.as_deref_mut().map(|g| &mut g[a * c..(a + 1) * c]);
                let st = row_stat::<V>(x, out.as_deref_mut().filter(|_| keep));
                let kind = classify::<V>(rows, bins, a, st, label_logit(rows, a), want_ce);
                let (f, inv, g, l) = factor(kind);
                if let Some(out) = out {
                    if f == 0.0 && !accumulate {
                        out.fill(0.0);
                    } else if f != 0.0 {
                        let y = rows.labels[a];
                        row_write::<V>(x, out, st.m, inv, f, y, g, !keep, accumulate);
                    }
                }
                if let Some(le) = dest.loss.as_deref_mut() {
                    le[a] = l;
                }
            }
        }
        Layout::ClassMajor => {
            let mut a = rows.anchors.start;
            while a < rows.anchors.end {
                let n = (rows.anchors.end - a).min(V::LANES);
                let lanes = plane_stat::<V>(rows, a, n, dest.grad.as_deref_mut().filter(|_| keep));
                let mut f = [0.0f32; MAX_LANES];
                let (mut inv, mut g) = (f, f);
                for i in 0..n {
                    let (st, x_y) = (lanes.stat(i), label_logit(rows, a + i));
                    let kind = classify::<V>(rows, bins, a + i, st, x_y, want_ce);
                    let l;
                    (f[i], inv[i], g[i], l) = factor(kind);
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
