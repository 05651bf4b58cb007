//! Fuzz targets for every exported C function of `ghm`, one per family, driven through the C
//! ABI with raw pointers (see `harness` for the oracle). Each target is a function of the
//! fuzz input's bytes: `fuzz_targets/*.rs` hand them to libFuzzer, `tests/replay.rs` to the
//! seed corpora and to pseudo-random inputs (the same targets as plain property tests).

pub mod harness;

use ghm::ffi::*;
use ghm::{Blocks, View};
use harness::*;

/// A fuzz target: the input's bytes in, a panic on any broken promise.
pub type Target = fn(&[u8]);

/// The targets, by name (as in `fuzz_targets/` and `corpus/`).
pub const TARGETS: [(&str, Target); 9] = [
    ("c_dense", c_dense),
    ("c_labels", c_labels),
    ("r_dense", r_dense),
    ("phased", phased),
    ("blocks", blocks),
    ("generic", generic),
    ("softmax", softmax),
    ("setup", setup),
    ("log", log),
];

// ---------------------------------------------------------------------------------------------
// Configs

const MOMENTA: [f32; 8] = [0.75, 0.9, 0.999, 0.5, 0.75, 1.0, -0.5, 2.0];
const LOSS_WEIGHTS: [f32; 5] = [0.5, 2.0, 0.0, -1.0, 1e30];
const GRAD_SCALES: [f32; 4] = [-1.0, 0.5, 0.0, 1e30];

/// The fields every config has: bins, momentum, loss_weight, reduction, grad_scale.
macro_rules! common_fields {
    ($c:ident, $g:ident) => {
        $c.bins = $g.bins();
        $c.momentum = $g.cfg_f32($c.momentum, &MOMENTA);
        $c.loss_weight = $g.cfg_f32($c.loss_weight, &LOSS_WEIGHTS);
        $c.reduction = $g.cfg_u32($c.reduction, &[1, 2, 1, 2, 3]);
        $c.grad_scale = $g.cfg_f32($c.grad_scale, &GRAD_SCALES);
    };
}

/// A 0/1 field (or enum of two): mostly `usual`, sometimes the other or an unknown value.
fn flag(g: &mut Gen, usual: u32) -> u32 {
    g.cfg_u32(usual, &[1, 1, 1, 2])
}

fn c_config(g: &mut Gen) -> ghm_c_config {
    let mut c = ghm_c_config_default();
    common_fields!(c, g);
    c.accumulate = flag(g, c.accumulate);
    c.skip_bad = flag(g, c.skip_bad);
    c.input = flag(g, c.input);
    c.normalize = flag(g, c.normalize);
    c.ema_start = flag(g, c.ema_start);
    c
}

fn r_config(g: &mut Gen) -> ghm_r_config {
    let mut c = ghm_r_config_default();
    common_fields!(c, g);
    c.mu = g.cfg_f32(c.mu, &[0.0, -0.02, 1e-30, 1e30, 1.0]);
    c.accumulate = flag(g, c.accumulate);
    c.skip_bad = flag(g, c.skip_bad);
    c.normalize = flag(g, c.normalize);
    c.ema_start = flag(g, c.ema_start);
    c
}

fn g_config(g: &mut Gen) -> ghm_g_config {
    let mut c = ghm_g_config_default();
    common_fields!(c, g);
    c.g_max = g.cfg_f32(c.g_max, &[2.0, 0.5, 1e-30, 0.0, 1e30]);
    c.skip_bad = flag(g, c.skip_bad);
    c.ema_start = flag(g, c.ema_start);
    c
}

fn softmax_config(g: &mut Gen) -> ghm_softmax_config {
    let mut c = ghm_softmax_config_default();
    common_fields!(c, g);
    c.accumulate = flag(g, c.accumulate);
    c.skip_bad = flag(g, c.skip_bad);
    c.normalize = flag(g, c.normalize);
    c.ema_start = flag(g, c.ema_start);
    c
}

/// A config, passed by pointer (NULL now and then: the call must refuse).
#[derive(Clone, Copy)]
struct Cfg<T> {
    val: T,
    null: bool,
}

impl<T> Cfg<T> {
    fn new(g: &mut Gen, val: T) -> Cfg<T> {
        Cfg {
            val,
            null: g.chance(3),
        }
    }
    fn ptr(&self) -> *const T {
        if self.null {
            core::ptr::null()
        } else {
            &self.val
        }
    }
}

/// Which of the one call's results are asked for (`loss`, `stats`, `ema`: NULL or not).
#[derive(Clone, Copy)]
struct Results {
    loss: bool,
    stats: bool,
    ema: bool,
}

impl Results {
    fn new(g: &mut Gen) -> Results {
        Results {
            loss: !g.chance(40),
            stats: !g.chance(80),
            ema: !g.chance(40),
        }
    }
    fn ptrs(&self, w: &mut World) -> (*mut f32, *mut StatsT, *mut EmaT) {
        (
            if self.loss {
                &mut w.loss
            } else {
                core::ptr::null_mut()
            },
            if self.stats {
                &mut w.stats
            } else {
                core::ptr::null_mut()
            },
            if self.ema {
                &mut w.ema
            } else {
                core::ptr::null_mut()
            },
        )
    }
}

type StatsT = ghm::Stats;
type EmaT = ghm::Ema;

/// `n` elements of `b` from element `first` (pointer arithmetic of a chunk).
fn sub(b: Option<Buf>, first: usize, n: usize, size: usize) -> Option<Buf> {
    b.map(|b| Buf {
        off: b.off + first * size,
        bytes: n * size,
    })
}

// ---------------------------------------------------------------------------------------------
// Dense batches (GHM-C with targets, GHM-R)

#[derive(Clone, Copy)]
struct Dense {
    /// The `n` passed (hostile: one that must be refused).
    n: usize,
    /// The elements the buffers hold.
    len: usize,
    hostile: bool,
    pred: Option<Buf>,
    target: Option<Buf>,
    weight: Option<Buf>,
    grad: Option<Buf>,
    elems: Option<Buf>,
}

impl Dense {
    fn place(g: &mut Gen, lay: &mut Layout) -> Dense {
        let hostile = g.chance(3);
        let len = g.size();
        let b = 4 * len;
        Dense {
            n: if hostile { g.hostile_size() } else { len },
            len,
            hostile,
            pred: lay.opt(g, b, 4, 3),
            target: lay.opt(g, b, 4, 3),
            weight: lay.opt(g, b, 4, 100),
            grad: lay.opt(g, b, 4, 40),
            elems: lay.opt(g, b, 4, 140),
        }
    }
    fn fill(&self, g: &mut Gen, w: &mut World, bins: u32, probs: bool) {
        let n = self.len;
        g.begin_buffer();
        w.fill_f32(self.pred, n, || g.pred(bins, probs));
        g.begin_buffer();
        w.fill_f32(self.target, n, || g.target(bins));
        g.begin_buffer();
        w.fill_f32(self.weight, n, || g.weight());
        g.begin_buffer();
        w.fill_f32(self.grad, n, || g.before());
        g.begin_buffer();
        w.fill_f32(self.elems, n, || g.before());
    }
    /// Elements `first..first + n` as one chunk.
    fn chunk(&self, first: usize, n: usize) -> Dense {
        Dense {
            n,
            len: n,
            hostile: false,
            pred: sub(self.pred, first, n, 4),
            target: sub(self.target, first, n, 4),
            weight: sub(self.weight, first, n, 4),
            grad: sub(self.grad, first, n, 4),
            elems: sub(self.elems, first, n, 4),
        }
    }
    fn accesses(&self, outputs: bool, elems: Cmp) -> Vec<Access> {
        let n = self.len;
        let mut a = vec![
            Access::read("pred", span(self.pred, 0, n, 4)),
            Access::read("target", span(self.target, 0, n, 4)),
            Access::read("label_weight", span(self.weight, 0, n, 4)),
        ];
        if outputs {
            a.push(Access::write("grad", span(self.grad, 0, n, 4), Cmp::Exact));
            a.push(Access::write(
                "loss_elems",
                span(self.elems, 0, n, 4),
                elems,
            ));
        }
        a
    }
    fn ptrs(&self, w: &mut World) -> [*mut f32; 5] {
        [
            w.ptr(self.pred),
            w.ptr(self.target),
            w.ptr(self.weight),
            w.ptr(self.grad),
            w.ptr(self.elems),
        ]
    }
}

/// GHM-R's per-element losses: the vector formula `d * (d * r)` is within a few ulp of the
/// scalar path's f64 one, down to subnormal `d^2` (`d^2 * r`, before, kept few bits there:
/// up to 14% off, and 1.3% after a huge loss weight scaled a subnormal loss back up).
fn r_elems() -> Cmp {
    Cmp::Ulps(8)
}

/// GHM-C's per-element losses use the vector logarithm (within 2.5 ulp of the true value,
/// so within 8 ulp of the scalar path's after the weighting).
const C_ELEMS: Cmp = Cmp::Ulps(8);

/// The one call of GHM-C (dense targets) or GHM-R.
struct DenseOne {
    f: Family,
    d: Dense,
    res: Results,
}

impl Call for DenseOne {
    fn name(&self) -> &'static str {
        match self.f {
            Family::C(_) => "ghm_c_loss_grad",
            Family::R(_) => "ghm_r_loss_grad",
        }
    }
    fn run(&self, w: &mut World) -> ghm_status {
        let [p, t, lw, gr, el] = self.d.ptrs(w);
        let (loss, stats, ema) = self.res.ptrs(w);
        let n = self.d.n;
        // SAFETY: every buffer holds `n` elements, or `n` is one the call must refuse.
        unsafe {
            match self.f {
                Family::C(c) => ghm_c_loss_grad(c.ptr(), ema, p, t, lw, n, gr, loss, el, stats),
                Family::R(c) => ghm_r_loss_grad(c.ptr(), ema, p, t, lw, n, gr, loss, el, stats),
            }
        }
    }
    fn accesses(&self) -> Vec<Access> {
        let el = match self.f {
            Family::C(_) => C_ELEMS,
            Family::R(_) => r_elems(),
        };
        self.d.accesses(true, el)
    }
    fn must_fail(&self) -> bool {
        self.d.hostile || self.f.cfg_null()
    }
    fn loose(&self) -> bool {
        matches!(self.f, Family::R(_))
    }
}

/// The one call over 1 to 3 batches (the EMA carried): GHM-C with dense targets, or GHM-R
/// (whose predictions and targets, box regression values, may be any float).
fn dense_one(data: &[u8], r: bool) {
    let mut g = Gen::new(data);
    let (c, rc) = if r {
        (ghm_c_config_default(), Some(r_config(&mut g)))
    } else {
        (c_config(&mut g), None)
    };
    let bins = rc.map_or(c.bins, |r| r.bins);
    let probs = rc.is_none() && c.input == GHM_INPUT_PROBS;
    let mut lay = Layout::new(&mut g);
    let d = Dense::place(&mut g, &mut lay);
    let mut w = World::new(lay.end());
    d.fill(&mut g, &mut w, bins, probs);
    w.ema = ema(&mut g, bins);
    let f = match rc {
        Some(r) => Family::R(Cfg::new(&mut g, r)),
        None => Family::C(Cfg::new(&mut g, c)),
    };
    let call = DenseOne {
        f,
        d,
        res: Results::new(&mut g),
    };
    let mut e = Engine::new(&mut g, w);
    for _ in 0..1 + g.below(3) {
        e.step(&call);
    }
}

/// One-call GHM-C with dense targets.
pub fn c_dense(data: &[u8]) {
    dense_one(data, false)
}

/// One-call GHM-R.
pub fn r_dense(data: &[u8]) {
    dense_one(data, true)
}

// ---------------------------------------------------------------------------------------------
// Class-index labels (GHM-C labels, softmax)

#[derive(Clone, Copy)]
struct LabelBatch {
    /// Anchors (samples) and classes passed.
    a: usize,
    c: usize,
    /// Anchors and classes the buffers hold.
    la: usize,
    lc: usize,
    hostile: bool,
    layout: u32,
    pred: Option<Buf>,
    labels: Option<Buf>,
    weight: Option<Buf>,
    grad: Option<Buf>,
    /// Per-element losses (GHM-C: `a * c`), or per-sample losses (softmax: `a`).
    elems: Option<Buf>,
    elems_per_anchor: usize,
}

impl LabelBatch {
    fn place(g: &mut Gen, lay: &mut Layout, softmax: bool) -> LabelBatch {
        let lc = match g.u8() % 8 {
            0 => g.pick(&[80, 81, 1000, 4097]),
            1..=3 => 1 + g.below(40),
            _ => g.pick(&[1, 2, 3, 4, 5, 8, 16, 17]),
        };
        let la = g.size() / lc.clamp(1, 16);
        let la = la.min(40_000 / lc);
        let hostile = g.chance(4);
        let (a, c) = if hostile {
            match g.u8() % 4 {
                0 => (g.hostile_size(), lc.max(2)),
                1 => (la.max(1), g.hostile_size()),
                2 => (la, i32::MAX as usize + 1),
                _ => (usize::MAX / 3 + 1, 3),
            }
        } else {
            (la, lc)
        };
        let per = if softmax { 1 } else { lc };
        let usual = g_layout(g);
        let layout = g.cfg_u32(usual, &[2, u32::MAX]);
        LabelBatch {
            a,
            c,
            la,
            lc,
            hostile,
            layout,
            pred: lay.opt(g, 4 * la * lc, 4, 3),
            labels: lay.opt(g, 4 * la, 4, 3),
            weight: lay.opt(g, 4 * la, 4, 100),
            grad: lay.opt(g, 4 * la * lc, 4, 40),
            elems: lay.opt(g, 4 * la * per, 4, 140),
            elems_per_anchor: per,
        }
    }
    fn fill(&self, g: &mut Gen, w: &mut World, bins: u32, probs: bool) {
        let (a, c) = (self.la, self.lc);
        g.begin_buffer();
        w.fill_f32(self.pred, a * c, || g.pred(bins, probs));
        g.begin_buffer();
        w.fill_i32(self.labels, a, || g.label(c));
        g.begin_buffer();
        w.fill_f32(self.weight, a, || g.weight());
        g.begin_buffer();
        w.fill_f32(self.grad, a * c, || g.before());
        g.begin_buffer();
        w.fill_f32(self.elems, a * self.elems_per_anchor, || g.before());
    }
    /// The bytes of anchors `r` of a buffer of `per` values per anchor, in the batch's layout.
    fn rows(&self, b: Option<Buf>, per: usize, r: (usize, usize)) -> Vec<(usize, usize)> {
        if per == 1 || self.layout != GHM_LAYOUT_CLASS_MAJOR {
            span(b, r.0 * per, (r.1 - r.0) * per, 4)
        } else {
            (0..per)
                .flat_map(|k| span(b, k * self.la + r.0, r.1 - r.0, 4))
                .collect()
        }
    }
    fn accesses(&self, outputs: Option<(usize, usize)>, elems: Cmp) -> Vec<Access> {
        let (a, c) = (self.la, self.lc);
        let mut acc = vec![
            Access::read("pred", span(self.pred, 0, a * c, 4)),
            Access::read("labels", span(self.labels, 0, a, 4)),
            Access::read("anchor_weight", span(self.weight, 0, a, 4)),
        ];
        if let Some(r) = outputs {
            let per = self.elems_per_anchor;
            acc.push(Access::write_part(
                "grad",
                span(self.grad, 0, a * c, 4),
                self.rows(self.grad, c, r),
                Cmp::Exact,
            ));
            acc.push(Access::write_part(
                "loss_elems",
                span(self.elems, 0, a * per, 4),
                self.rows(self.elems, per, r),
                elems,
            ));
        }
        acc
    }
    fn ptrs(&self, w: &mut World) -> (*mut f32, *mut i32, [*mut f32; 3]) {
        (
            w.ptr(self.pred),
            w.ptr(self.labels),
            [w.ptr(self.weight), w.ptr(self.grad), w.ptr(self.elems)],
        )
    }
    /// An anchor range `[begin, end)`: mostly inside the batch, sometimes not.
    fn range(&self, g: &mut Gen) -> (usize, usize) {
        let a = self.la;
        match g.u8() % 16 {
            0 => (g.below(a + 2), g.below(a + 2)),
            1 => (0, g.pick(&[usize::MAX, a + 1])),
            2 => (0, a),
            _ => {
                let b = g.below(a + 1);
                (b, b + g.below(a - b + 1))
            }
        }
    }
    fn range_ok(&self, r: (usize, usize)) -> bool {
        r.0 <= r.1 && r.1 <= self.a
    }
}

fn g_layout(g: &mut Gen) -> u32 {
    if g.chance(128) {
        GHM_LAYOUT_ANCHOR_MAJOR
    } else {
        GHM_LAYOUT_CLASS_MAJOR
    }
}

struct CLabels {
    cfg: Cfg<ghm_c_config>,
    l: LabelBatch,
    res: Results,
}

impl Call for CLabels {
    fn name(&self) -> &'static str {
        "ghm_c_loss_grad_labels"
    }
    fn run(&self, w: &mut World) -> ghm_status {
        let (p, lab, [aw, gr, el]) = self.l.ptrs(w);
        let (loss, stats, ema) = self.res.ptrs(w);
        let l = &self.l;
        // SAFETY: every buffer holds its elements, or the sizes are ones to refuse.
        unsafe {
            ghm_c_loss_grad_labels(
                self.cfg.ptr(),
                ema,
                p,
                lab,
                aw,
                l.a,
                l.c,
                l.layout,
                gr,
                loss,
                el,
                stats,
            )
        }
    }
    fn accesses(&self) -> Vec<Access> {
        self.l.accesses(Some((0, self.l.la)), C_ELEMS)
    }
    fn must_fail(&self) -> bool {
        self.l.hostile || self.cfg.null || self.l.layout > 1
    }
}

/// One-call GHM-C with class-index labels, either layout, over 1 to 3 batches.
pub fn c_labels(data: &[u8]) {
    let mut g = Gen::new(data);
    let cfg = c_config(&mut g);
    let mut lay = Layout::new(&mut g);
    let l = LabelBatch::place(&mut g, &mut lay, false);
    let mut w = World::new(lay.end());
    l.fill(&mut g, &mut w, cfg.bins, cfg.input == GHM_INPUT_PROBS);
    w.ema = ema(&mut g, cfg.bins);
    let call = CLabels {
        cfg: Cfg::new(&mut g, cfg),
        l,
        res: Results::new(&mut g),
    };
    let mut e = Engine::new(&mut g, w);
    for _ in 0..1 + g.below(3) {
        e.step(&call);
    }
}

// ---------------------------------------------------------------------------------------------
// The phased API of GHM-C (dense and labels) and GHM-R

/// `ghm_hist_merge(&hist[into], &hist[from])` (the same histogram twice must be refused).
/// `loose` for GHM-R's histograms (their `tot` may already differ in its last bits).
struct Merge {
    into: usize,
    from: usize,
    loose: bool,
}

impl Call for Merge {
    fn name(&self) -> &'static str {
        "ghm_hist_merge"
    }
    fn run(&self, w: &mut World) -> ghm_status {
        let into: *mut ghm::Hist = &mut w.hist[self.into];
        let from: *const ghm::Hist = &w.hist[self.from];
        // SAFETY: two valid histograms (maybe the same one).
        unsafe { ghm_hist_merge(into, from) }
    }
    fn accesses(&self) -> Vec<Access> {
        Vec::new()
    }
    fn must_fail(&self) -> bool {
        self.into == self.from
    }
    fn aliased(&self) -> bool {
        self.into == self.from
    }
    fn loose(&self) -> bool {
        self.loose
    }
}

#[derive(Clone, Copy)]
enum Family {
    C(Cfg<ghm_c_config>),
    R(Cfg<ghm_r_config>),
}

impl Family {
    fn cfg_null(&self) -> bool {
        match self {
            Family::C(c) => c.null,
            Family::R(c) => c.null,
        }
    }
}

/// A phased call on a dense chunk: accumulate into `hist[h]`, or apply `weights`.
struct DensePhase {
    f: Family,
    d: Dense,
    apply: bool,
    h: usize,
}

impl Call for DensePhase {
    fn name(&self) -> &'static str {
        match (self.f, self.apply) {
            (Family::C(_), false) => "ghm_c_accumulate",
            (Family::C(_), true) => "ghm_c_apply",
            (Family::R(_), false) => "ghm_r_accumulate",
            (Family::R(_), true) => "ghm_r_apply",
        }
    }
    fn run(&self, w: &mut World) -> ghm_status {
        let [p, t, lw, gr, el] = self.d.ptrs(w);
        let h: *mut ghm::Hist = &mut w.hist[self.h];
        let wt: *const ghm::Weights = &w.weights;
        let n = self.d.n;
        // SAFETY: every buffer holds the chunk's `n` elements.
        unsafe {
            match (self.f, self.apply) {
                (Family::C(c), false) => ghm_c_accumulate(c.ptr(), p, t, lw, n, h),
                (Family::C(c), true) => ghm_c_apply(c.ptr(), wt, p, t, lw, n, gr, el),
                (Family::R(c), false) => ghm_r_accumulate(c.ptr(), p, t, lw, n, h),
                (Family::R(c), true) => ghm_r_apply(c.ptr(), wt, p, t, lw, n, gr, el),
            }
        }
    }
    fn accesses(&self) -> Vec<Access> {
        let el = match self.f {
            Family::C(_) => C_ELEMS,
            Family::R(_) => r_elems(),
        };
        self.d.accesses(self.apply, el)
    }
    fn must_fail(&self) -> bool {
        self.f.cfg_null()
    }
    fn loose(&self) -> bool {
        matches!(self.f, Family::R(_))
    }
}

/// A phased call on a range of a label batch.
struct LabelPhase {
    cfg: Cfg<ghm_c_config>,
    l: LabelBatch,
    apply: bool,
    h: usize,
    range: (usize, usize),
}

impl Call for LabelPhase {
    fn name(&self) -> &'static str {
        if self.apply {
            "ghm_c_apply_labels"
        } else {
            "ghm_c_accumulate_labels"
        }
    }
    fn run(&self, w: &mut World) -> ghm_status {
        let (p, lab, [aw, gr, el]) = self.l.ptrs(w);
        let h: *mut ghm::Hist = &mut w.hist[self.h];
        let wt: *const ghm::Weights = &w.weights;
        let (l, (b, e)) = (&self.l, self.range);
        let c = self.cfg.ptr();
        // SAFETY: every buffer holds the whole batch.
        unsafe {
            if self.apply {
                ghm_c_apply_labels(c, wt, p, lab, aw, l.a, l.c, l.layout, b, e, gr, el)
            } else {
                ghm_c_accumulate_labels(c, p, lab, aw, l.a, l.c, l.layout, b, e, h)
            }
        }
    }
    fn accesses(&self) -> Vec<Access> {
        let r = (self.range.0.min(self.l.la), self.range.1.min(self.l.la));
        let r = (r.0.min(r.1), r.1);
        self.l.accesses(self.apply.then_some(r), C_ELEMS)
    }
    fn must_fail(&self) -> bool {
        self.cfg.null || self.l.hostile || !self.l.range_ok(self.range) || self.l.layout > 1
    }
}

/// The config of one of the four losses.
#[derive(Clone, Copy)]
enum AnyCfg {
    Dense(Family),
    G(Cfg<ghm_g_config>),
    S(Cfg<ghm_softmax_config>),
}

/// `ghm_{c,r,g,softmax}_finalize(cfg, ema or NULL, &hist[h], &weights)`.
struct Finalize {
    cfg: AnyCfg,
    h: usize,
    ema: bool,
}

impl Finalize {
    fn new(g: &mut Gen, cfg: AnyCfg, h: usize) -> Finalize {
        Finalize {
            cfg,
            h,
            ema: !g.chance(40),
        }
    }
}

impl Call for Finalize {
    fn name(&self) -> &'static str {
        "ghm_*_finalize"
    }
    fn run(&self, w: &mut World) -> ghm_status {
        let h: *const ghm::Hist = &w.hist[self.h];
        let wt: *mut ghm::Weights = &mut w.weights;
        let ema: *mut ghm::Ema = if self.ema {
            &mut w.ema
        } else {
            core::ptr::null_mut()
        };
        // SAFETY: valid structures (their contents as the fuzz input made them).
        unsafe {
            match self.cfg {
                AnyCfg::Dense(Family::C(c)) => ghm_c_finalize(c.ptr(), ema, h, wt),
                AnyCfg::Dense(Family::R(c)) => ghm_r_finalize(c.ptr(), ema, h, wt),
                AnyCfg::G(c) => ghm_g_finalize(c.ptr(), ema, h, wt),
                AnyCfg::S(c) => ghm_softmax_finalize(c.ptr(), ema, h, wt),
            }
        }
    }
    fn accesses(&self) -> Vec<Access> {
        Vec::new()
    }
    fn must_fail(&self) -> bool {
        match self.cfg {
            AnyCfg::Dense(f) => f.cfg_null(),
            AnyCfg::G(c) => c.null,
            AnyCfg::S(c) => c.null,
        }
    }
    fn loose(&self) -> bool {
        matches!(self.cfg, AnyCfg::Dense(Family::R(_)))
    }
}

/// A chunk `[first, first + n)` of `len` elements, mostly ordinary.
fn chunk(g: &mut Gen, len: usize) -> (usize, usize) {
    let first = g.below(len + 1);
    (first, g.below(len - first + 1))
}

/// The phased API: a sequence of accumulate / merge / finalize / apply calls (GHM-C dense,
/// GHM-C labels or GHM-R), each checked as a call of its own.
pub fn phased(data: &[u8]) {
    let mut g = Gen::new(data);
    let kind = g.u8() % 3;
    let mut lay = Layout::new(&mut g);
    let (fam, bins) = match kind {
        1 => {
            let c = r_config(&mut g);
            (Family::R(Cfg::new(&mut g, c)), c.bins)
        }
        _ => {
            let c = c_config(&mut g);
            (Family::C(Cfg::new(&mut g, c)), c.bins)
        }
    };
    let probs = matches!(fam, Family::C(c) if c.val.input == GHM_INPUT_PROBS);
    let (d, l) = if kind == 2 {
        (None, Some(LabelBatch::place(&mut g, &mut lay, false)))
    } else {
        (Some(Dense::place(&mut g, &mut lay)), None)
    };
    let mut w = World::new(lay.end());
    if let Some(d) = &d {
        d.fill(&mut g, &mut w, bins, probs);
    }
    if let Some(l) = &l {
        l.fill(&mut g, &mut w, bins, probs);
    }
    w.states(&mut g, bins);
    let mut e = Engine::new(&mut g, w);
    for _ in 0..1 + g.below(8) {
        let op = g.u8() % 5;
        let h = g.below(2);
        match op {
            0 | 1 => {
                let apply = op == 1;
                if let Some(d) = d {
                    let (first, n) = chunk(&mut g, d.len);
                    let d = if d.hostile { d } else { d.chunk(first, n) };
                    e.step(&DensePhase {
                        f: fam,
                        d,
                        apply,
                        h,
                    });
                } else if let (Some(l), Family::C(cfg)) = (l, fam) {
                    let range = l.range(&mut g);
                    e.step(&LabelPhase {
                        cfg,
                        l,
                        apply,
                        h,
                        range,
                    });
                }
            }
            2 => {
                let into = g.below(2);
                let loose = matches!(fam, Family::R(_));
                e.step(&Merge {
                    into,
                    from: h,
                    loose,
                });
            }
            _ => {
                e.step(&Finalize::new(&mut g, AnyCfg::Dense(fam), h));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Blocked views

/// The view of one array: mostly blocks apart, sometimes adjacent, repeated (stride 0) or
/// overlapping (an output must then be refused).
fn view(g: &mut Gen, block: usize) -> View {
    let offset = g.below(24);
    let stride = match g.u8() % 8 {
        0 => block,
        1 => 0,
        2 => g.below(block + 1),
        _ => block + g.below(24),
    };
    View { offset, stride }
}

/// Elements a buffer needs for `count` blocks of `block` through `v` (None: overflows).
fn extent(v: View, count: usize, block: usize) -> Option<usize> {
    if count == 0 || block == 0 {
        return Some(0);
    }
    (count - 1)
        .checked_mul(v.stride)?
        .checked_add(v.offset)?
        .checked_add(block)
}

/// A blocked batch: the descriptor (in the arena now and then, where an output must not
/// overlap it) and one buffer per array, each just large enough for its view. For class-index
/// labels (`classes > 0`), a block is `len` anchors: `len * classes` predictions.
#[derive(Clone, Copy)]
struct Blocked {
    b: Blocks,
    classes: usize,
    /// Per-element losses per anchor: `classes` (GHM-C), 1 (softmax), 1 for dense targets.
    elems_per: usize,
    hostile: bool,
    desc: Option<Buf>,
    desc_null: bool,
    pred: Option<Buf>,
    target: Option<Buf>,
    weight: Option<Buf>,
    grad: Option<Buf>,
    elems: Option<Buf>,
}

impl Blocked {
    fn place(g: &mut Gen, lay: &mut Layout, classes: usize, elems_per: usize) -> Blocked {
        let per = classes.max(1);
        let count = g.below(7);
        let len = match g.u8() % 4 {
            0 => g.below(71),
            1 => g.pick(&[1, 13, 16, 169]),
            _ => g.below(20),
        };
        let len = len.min(4096 / per);
        let mut b = Blocks {
            count,
            len,
            pred: view(g, len * per),
            target: view(g, len),
            weight: view(g, len),
            grad: view(g, len * per),
            loss_elems: view(g, len * elems_per),
        };
        let hostile = g.chance(6);
        if hostile {
            b.count = g.pick(&[usize::MAX, usize::MAX / 2, 1 << 40]);
            b.len = b.len.max(1);
            b.pred.stride = b.pred.stride.max(1 << 30);
        }
        // Darknet's interleaving: the gradient in the predictions' buffer, one block further.
        let shared = g.chance(40) && !hostile;
        if shared {
            b.grad = View {
                offset: b.pred.offset + len * per,
                stride: b.pred.stride,
            };
        }
        let bytes = |v: View, block: usize| {
            if hostile {
                4 * 64
            } else {
                4 * extent(v, count, block).unwrap_or(0)
            }
        };
        let desc = (!g.chance(200)).then(|| lay.place(g, size_of::<Blocks>(), 8));
        let pbytes = if shared {
            bytes(b.pred, len * per).max(bytes(b.grad, len * per))
        } else {
            bytes(b.pred, len * per)
        };
        let pred = lay.opt(g, pbytes, 4, 3);
        let target = lay.opt(g, bytes(b.target, len), 4, 3);
        let weight = lay.opt(g, bytes(b.weight, len), 4, 100);
        let grad = if shared {
            pred
        } else {
            lay.opt(g, bytes(b.grad, len * per), 4, 40)
        };
        let elems = lay.opt(g, bytes(b.loss_elems, len * elems_per), 4, 140);
        Blocked {
            b,
            classes,
            elems_per,
            hostile,
            desc,
            desc_null: g.chance(3),
            pred,
            target,
            weight,
            grad,
            elems,
        }
    }
    fn fill(&self, g: &mut Gen, w: &mut World, bins: u32, probs: bool, c: usize) {
        let all = |b: Option<Buf>| b.map_or(0, |b| b.bytes / 4);
        let n = all(self.pred);
        g.begin_buffer();
        w.fill_f32(self.pred, n, || g.pred(bins, probs));
        let n = all(self.target);
        if self.classes > 0 {
            g.begin_buffer();
            w.fill_i32(self.target, n, || g.label(c));
        } else {
            g.begin_buffer();
            w.fill_f32(self.target, n, || g.target(bins));
        }
        let n = all(self.weight);
        g.begin_buffer();
        w.fill_f32(self.weight, n, || g.weight());
        if self.grad != self.pred {
            let n = all(self.grad);
            g.begin_buffer();
            w.fill_f32(self.grad, n, || g.before());
        }
        let n = all(self.elems);
        g.begin_buffer();
        w.fill_f32(self.elems, n, || g.before());
        if let Some(d) = self.desc {
            w.put_struct(d, &self.b);
        }
    }
    /// Blocks `first..first + k` (a chunk of the phased API), the descriptor then on the
    /// caller's stack.
    fn range(&self, first: usize, k: usize) -> Blocked {
        let mv = |v: View| View {
            offset: v.offset + first * v.stride,
            stride: v.stride,
        };
        let b = self.b;
        Blocked {
            b: Blocks {
                count: k,
                len: b.len,
                pred: mv(b.pred),
                target: mv(b.target),
                weight: mv(b.weight),
                grad: mv(b.grad),
                loss_elems: mv(b.loss_elems),
            },
            desc: None,
            ..*self
        }
    }
    fn desc_ptr(&self, w: &mut World) -> *const Blocks {
        if self.desc_null {
            core::ptr::null()
        } else if self.desc.is_some() {
            w.ptr(self.desc)
        } else {
            &self.b
        }
    }
    fn accesses(&self, outputs: bool, elems: Cmp) -> Vec<Access> {
        if self.hostile {
            return Vec::new();
        }
        let b = self.b;
        let per = self.classes.max(1);
        let vs = |buf, v: View, block| view_span(buf, v.offset, v.stride, b.count, block, 4);
        let mut acc = vec![
            Access::read(
                "blocks",
                self.desc
                    .map(|d| (d.off, d.off + d.bytes))
                    .into_iter()
                    .collect(),
            ),
            Access::read("pred", vs(self.pred, b.pred, b.len * per)),
            Access::read("target", vs(self.target, b.target, b.len)),
            Access::read("weight", vs(self.weight, b.weight, b.len)),
        ];
        if outputs {
            let g = vs(self.grad, b.grad, b.len * per);
            acc.push(Access::write("grad", g, Cmp::Exact));
            let e = vs(self.elems, b.loss_elems, b.len * self.elems_per);
            acc.push(Access::write("loss_elems", e, elems));
        }
        acc
    }
    fn must_fail(&self) -> bool {
        self.hostile || self.desc_null
    }
}

/// A call through blocked views: the one call, or a phased step over a range of blocks;
/// GHM-C with dense targets or class-index labels (`labels`), or GHM-R.
struct BlocksCall {
    f: Family,
    labels: bool,
    v: Blocked,
    layout: u32,
    res: Results,
    /// 0: one call, 1: accumulate into hist[h], 2: apply.
    phase: u8,
    h: usize,
}

impl Call for BlocksCall {
    fn name(&self) -> &'static str {
        match (self.f, self.labels) {
            (Family::R(_), _) => "ghm_r_*_blocks",
            (_, true) => "ghm_c_*_labels_blocks",
            _ => "ghm_c_*_blocks",
        }
    }
    fn run(&self, w: &mut World) -> ghm_status {
        let bp = self.v.desc_ptr(w);
        let v = &self.v;
        let (p, t, lw, gr, el) = (
            w.ptr::<f32>(v.pred),
            w.ptr::<f32>(v.target),
            w.ptr::<f32>(v.weight),
            w.ptr::<f32>(v.grad),
            w.ptr::<f32>(v.elems),
        );
        let (loss, stats, ema) = self.res.ptrs(w);
        let h: *mut ghm::Hist = &mut w.hist[self.h];
        let wt: *const ghm::Weights = &w.weights;
        let (nc, lay, lab) = (v.classes, self.layout, t as *const i32);
        // SAFETY: every buffer holds its view's extent, or the descriptor is one to refuse.
        unsafe {
            match (self.f, self.labels, self.phase) {
                (Family::R(r), _, 0) => {
                    ghm_r_loss_grad_blocks(r.ptr(), ema, bp, p, t, lw, gr, loss, el, stats)
                }
                (Family::R(r), _, 1) => ghm_r_accumulate_blocks(r.ptr(), bp, p, t, lw, h),
                (Family::R(r), _, _) => ghm_r_apply_blocks(r.ptr(), wt, bp, p, t, lw, gr, el),
                (Family::C(c), false, 0) => {
                    ghm_c_loss_grad_blocks(c.ptr(), ema, bp, p, t, lw, gr, loss, el, stats)
                }
                (Family::C(c), false, 1) => ghm_c_accumulate_blocks(c.ptr(), bp, p, t, lw, h),
                (Family::C(c), false, _) => ghm_c_apply_blocks(c.ptr(), wt, bp, p, t, lw, gr, el),
                (Family::C(c), true, 0) => ghm_c_loss_grad_labels_blocks(
                    c.ptr(),
                    ema,
                    bp,
                    p,
                    lab,
                    lw,
                    nc,
                    lay,
                    gr,
                    loss,
                    el,
                    stats,
                ),
                (Family::C(c), true, 1) => {
                    ghm_c_accumulate_labels_blocks(c.ptr(), bp, p, lab, lw, nc, lay, h)
                }
                (Family::C(c), true, _) => {
                    ghm_c_apply_labels_blocks(c.ptr(), wt, bp, p, lab, lw, nc, lay, gr, el)
                }
            }
        }
    }
    fn accesses(&self) -> Vec<Access> {
        let el = match self.f {
            Family::C(_) => C_ELEMS,
            Family::R(_) => r_elems(),
        };
        self.v.accesses(self.phase != 1, el)
    }
    fn must_fail(&self) -> bool {
        self.v.must_fail() || self.f.cfg_null() || (self.labels && self.layout > 1)
    }
    fn loose(&self) -> bool {
        matches!(self.f, Family::R(_))
    }
}

/// Every `_blocks` entry point (GHM-C dense and labels, GHM-R; one call and phased), through
/// views that are interleaved, repeated, overlapping or overflowing.
pub fn blocks(data: &[u8]) {
    let mut g = Gen::new(data);
    let fam = g.u8() % 3;
    let c = c_config(&mut g);
    let r = r_config(&mut g);
    let bins = if fam == 2 { r.bins } else { c.bins };
    let classes = if fam == 1 {
        g.pick(&[1, 2, 3, 5, 16, 17, 80])
    } else {
        0
    };
    let mut lay = Layout::new(&mut g);
    let elems_per = classes.max(1);
    let v = Blocked::place(&mut g, &mut lay, classes, elems_per);
    let mut w = World::new(lay.end());
    v.fill(
        &mut g,
        &mut w,
        bins,
        c.input == GHM_INPUT_PROBS && fam != 2,
        classes,
    );
    w.states(&mut g, bins);
    let usual = g_layout(&mut g);
    let layout = g.cfg_u32(usual, &[2]);
    let (c, r) = (Cfg::new(&mut g, c), Cfg::new(&mut g, r));
    let f = if fam == 2 { Family::R(r) } else { Family::C(c) };
    let res = Results::new(&mut g);
    let mut e = Engine::new(&mut g, w);
    for _ in 0..1 + g.below(6) {
        let phase = g.u8() % 5;
        let h = g.below(2);
        if phase >= 3 {
            e.step(&Finalize::new(&mut g, AnyCfg::Dense(f), h));
            continue;
        }
        let v = if phase > 0 && !v.hostile && g.chance(128) {
            let first = g.below(v.b.count + 1);
            v.range(first, g.below(v.b.count - first + 1))
        } else {
            v
        };
        e.step(&BlocksCall {
            f,
            labels: fam == 1,
            v,
            layout,
            res,
            phase,
            h,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Generic GHM

/// Gradient rows of generic GHM: the descriptor and every float it reaches.
#[derive(Clone, Copy)]
struct RowsDesc {
    rows: ghm_g_rows,
    buf: Option<Buf>,
    hostile: bool,
}

impl RowsDesc {
    fn place(g: &mut Gen, lay: &mut Layout, n: usize) -> Option<RowsDesc> {
        if g.chance(60) {
            return None;
        }
        let k = 1 + g.below(5);
        let (row_stride, elem_stride, block_len, block_stride) = match g.u8() % 6 {
            0 => (k + g.below(3), 1, 0, 0),
            1 => (1, n + g.below(3), 0, 0),
            2 => {
                let bl = 1 + g.below(n.max(1));
                (k, 1, bl, bl * k + g.below(8))
            }
            3 => (g.below(4), g.below(4), g.below(4), g.below(8)),
            4 => (usize::MAX / 2, 1, 0, 0),
            _ => (k, 1, 0, 0),
        };
        let mut rows = ghm_g_rows {
            grad: core::ptr::null_mut(),
            k,
            row_stride,
            elem_stride,
            block_len,
            block_stride,
        };
        // Hostile: the extent overflows in floats or in bytes (the call must refuse). A
        // large extent that does not overflow is a legal call: not made.
        let max = Self::max_index(&rows, n);
        let hostile = max.is_none_or(|m| m > isize::MAX as usize / 4);
        if !hostile && max.unwrap() > MAX_ARENA / 8 {
            (rows.row_stride, rows.elem_stride, rows.block_len) = (k, 1, 0);
        }
        let floats = if hostile {
            64
        } else {
            Self::max_index(&rows, n).unwrap()
        };
        let buf = Some(lay.place(g, 4 * floats, 4));
        Some(RowsDesc { rows, buf, hostile })
    }
    /// Index of float `j` of sample `i`.
    fn at(r: &ghm_g_rows, n: usize, i: usize, j: usize) -> Option<usize> {
        let bl = if r.block_len == 0 {
            n.max(1)
        } else {
            r.block_len
        };
        (i / bl)
            .checked_mul(r.block_stride)?
            .checked_add((i % bl).checked_mul(r.row_stride)?)?
            .checked_add(j.checked_mul(r.elem_stride)?)
    }
    /// One past the largest float index (None: overflows).
    fn max_index(r: &ghm_g_rows, n: usize) -> Option<usize> {
        let mut m = 0usize;
        for i in 0..n {
            for j in 0..r.k {
                m = m.max(Self::at(r, n, i, j)?.checked_add(1)?);
            }
        }
        Some(m)
    }
    /// Each block's span, first float to last (what the library's overlap check may take
    /// for spaced rows).
    fn spans(&self, n: usize) -> Vec<(usize, usize)> {
        let mut v: Vec<(usize, usize)> = Vec::new();
        let bl = if self.rows.block_len == 0 {
            n.max(1)
        } else {
            self.rows.block_len
        };
        for chunk in self.floats(n).chunks(bl * self.rows.k) {
            let lo = chunk.iter().map(|r| r.0).min().unwrap_or(0);
            let hi = chunk.iter().map(|r| r.1).max().unwrap_or(0);
            v.push((lo, hi));
        }
        v
    }
    fn floats(&self, n: usize) -> Vec<(usize, usize)> {
        let Some(b) = self.buf else { return Vec::new() };
        let mut v = Vec::new();
        for i in 0..n {
            for j in 0..self.rows.k {
                let at = b.off + 4 * Self::at(&self.rows, n, i, j).unwrap();
                v.push((at, at + 4));
            }
        }
        v
    }
}

struct GenericCall {
    cfg: Cfg<ghm_g_config>,
    n: usize,
    hostile: bool,
    g: Option<Buf>,
    loss: Option<Buf>,
    valid: Option<Buf>,
    factor: Option<Buf>,
    rows: Option<RowsDesc>,
    res: Results,
    /// 0: one call, 1: accumulate into hist[h], 2: apply.
    phase: u8,
    h: usize,
}

impl Call for GenericCall {
    fn name(&self) -> &'static str {
        ["ghm_g_loss_grad", "ghm_g_accumulate", "ghm_g_apply"][self.phase as usize]
    }
    fn run(&self, w: &mut World) -> ghm_status {
        let (gp, lp, vp, fp) = (
            w.ptr::<f32>(self.g),
            w.ptr::<f32>(self.loss),
            w.ptr::<f32>(self.valid),
            w.ptr::<f32>(self.factor),
        );
        let rows = self.rows.map(|r| ghm_g_rows {
            grad: w.ptr(r.buf),
            ..r.rows
        });
        let rp = rows
            .as_ref()
            .map_or(core::ptr::null(), |r| r as *const ghm_g_rows);
        let (loss, stats, ema) = self.res.ptrs(w);
        let h: *mut ghm::Hist = &mut w.hist[self.h];
        let wt: *const ghm::Weights = &w.weights;
        let (c, n) = (self.cfg.ptr(), self.n);
        // SAFETY: every buffer holds `n` samples (the rows every float they reach), or the
        // sizes are ones to refuse.
        unsafe {
            match self.phase {
                0 => ghm_g_loss_grad(c, ema, gp, lp, vp, n, rp, fp, loss, stats),
                1 => ghm_g_accumulate(c, gp, lp, vp, n, h),
                _ => ghm_g_apply(c, wt, gp, lp, vp, n, rp, fp),
            }
        }
    }
    fn accesses(&self) -> Vec<Access> {
        let n = if self.hostile { 0 } else { self.n };
        let mut acc = vec![
            Access::read("g", span(self.g, 0, n, 4)),
            Access::read("sample_loss", span(self.loss, 0, n, 4)),
            Access::read("valid", span(self.valid, 0, n, 4)),
        ];
        if self.phase != 1 {
            acc.push(Access::write(
                "factor",
                span(self.factor, 0, n, 4),
                Cmp::Exact,
            ));
            if let Some(r) = self.rows.filter(|r| !r.hostile) {
                let mut a = Access::write("rows", r.floats(n), Cmp::Exact);
                a.span = Some(r.spans(n));
                acc.push(a);
            }
        }
        acc
    }
    fn must_fail(&self) -> bool {
        self.hostile
            || self.cfg.null
            || (self.phase != 1 && self.rows.is_some_and(|r| r.hostile && self.n > 0))
    }
}

/// Generic GHM ("bring your own g"): the one call and the phased API, with gradient rows of
/// every layout (adjacent, planar, blocked, overlapping, overflowing).
pub fn generic(data: &[u8]) {
    let mut g = Gen::new(data);
    let cfg = g_config(&mut g);
    let mut lay = Layout::new(&mut g);
    let len = g.size().min(2000);
    let hostile = g.chance(3);
    let n = if hostile { g.hostile_size() } else { len };
    let b = 4 * len;
    let gb = lay.opt(&mut g, b, 4, 3);
    let lb = lay.opt(&mut g, b, 4, 100);
    let vb = lay.opt(&mut g, b, 4, 100);
    let fb = lay.opt(&mut g, b, 4, 100);
    let rows = RowsDesc::place(&mut g, &mut lay, len);
    let mut w = World::new(lay.end());
    let gmax = cfg.g_max;
    g.begin_buffer();
    w.fill_f32(gb, len, || match g.u8() % 8 {
        0 => g.special(),
        1 | 2 => g.edge(cfg.bins) * gmax,
        _ => g.u8() as f32 / 200.0 * gmax,
    });
    g.begin_buffer();
    w.fill_f32(lb, len, || match g.u8() % 8 {
        0 => g.special(),
        _ => g.u8() as f32 / 16.0,
    });
    g.begin_buffer();
    w.fill_f32(vb, len, || g.weight());
    g.begin_buffer();
    w.fill_f32(fb, len, || g.before());
    if let Some(r) = rows {
        let floats = r.buf.map_or(0, |b| b.bytes / 4);
        g.begin_buffer();
        w.fill_f32(r.buf, floats, || g.before());
    }
    w.states(&mut g, cfg.bins);
    let cfg = Cfg::new(&mut g, cfg);
    let res = Results::new(&mut g);
    let mut e = Engine::new(&mut g, w);
    for _ in 0..1 + g.below(6) {
        let op = g.u8() % 6;
        let h = g.below(2);
        match op {
            0..=2 => {
                // Accumulate over a chunk; the one call and apply over the whole batch.
                let (first, k) = if op == 1 && !hostile {
                    chunk(&mut g, len)
                } else {
                    (0, n)
                };
                e.step(&GenericCall {
                    cfg,
                    n: k,
                    hostile,
                    g: sub(gb, first, k.min(len), 4),
                    loss: sub(lb, first, k.min(len), 4),
                    valid: sub(vb, first, k.min(len), 4),
                    factor: sub(fb, first, k.min(len), 4),
                    rows,
                    res,
                    phase: op,
                    h,
                });
            }
            3 => {
                let into = g.below(2);
                e.step(&Merge {
                    into,
                    from: h,
                    loose: false,
                });
            }
            _ => {
                e.step(&Finalize::new(&mut g, AnyCfg::G(cfg), h));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax cross-entropy GHM

struct SoftmaxCall {
    cfg: Cfg<ghm_softmax_config>,
    l: LabelBatch,
    v: Option<Blocked>,
    res: Results,
    /// 0: one call, 1: accumulate into hist[h], 2: apply.
    phase: u8,
    h: usize,
    range: (usize, usize),
}

impl Call for SoftmaxCall {
    fn name(&self) -> &'static str {
        match (self.v.is_some(), self.phase) {
            (false, 0) => "ghm_softmax_loss_grad",
            (false, 1) => "ghm_softmax_accumulate",
            (false, _) => "ghm_softmax_apply",
            (true, 0) => "ghm_softmax_loss_grad_blocks",
            (true, 1) => "ghm_softmax_accumulate_blocks",
            (true, _) => "ghm_softmax_apply_blocks",
        }
    }
    fn run(&self, w: &mut World) -> ghm_status {
        let (loss, stats, ema) = self.res.ptrs(w);
        let h: *mut ghm::Hist = &mut w.hist[self.h];
        let wt: *const ghm::Weights = &w.weights;
        let c = self.cfg.ptr();
        let l = &self.l;
        let (b, e) = self.range;
        if let Some(v) = &self.v {
            let bp = v.desc_ptr(w);
            let (p, lab, sw, gr, sl) = (
                w.ptr::<f32>(v.pred),
                w.ptr::<i32>(v.target),
                w.ptr::<f32>(v.weight),
                w.ptr::<f32>(v.grad),
                w.ptr::<f32>(v.elems),
            );
            let (nc, lay) = (v.classes, l.layout);
            // SAFETY: every buffer holds its view's extent, or the call must refuse.
            return unsafe {
                match self.phase {
                    0 => ghm_softmax_loss_grad_blocks(
                        c, ema, bp, p, lab, sw, nc, lay, gr, loss, sl, stats,
                    ),
                    1 => ghm_softmax_accumulate_blocks(c, bp, p, lab, sw, nc, lay, h),
                    _ => ghm_softmax_apply_blocks(c, wt, bp, p, lab, sw, nc, lay, gr, sl),
                }
            };
        }
        let (p, lab, [sw, gr, sl]) = l.ptrs(w);
        // SAFETY: every buffer holds the whole batch, or the sizes are ones to refuse.
        unsafe {
            match self.phase {
                0 => ghm_softmax_loss_grad(
                    c, ema, p, lab, sw, l.a, l.c, l.layout, gr, loss, sl, stats,
                ),
                1 => ghm_softmax_accumulate(c, p, lab, sw, l.a, l.c, l.layout, b, e, h),
                _ => ghm_softmax_apply(c, wt, p, lab, sw, l.a, l.c, l.layout, b, e, gr, sl),
            }
        }
    }
    fn accesses(&self) -> Vec<Access> {
        if let Some(v) = &self.v {
            return v.accesses(self.phase != 1, Cmp::Exact);
        }
        let r = match self.phase {
            0 => (0, self.l.la),
            _ => (self.range.0.min(self.l.la), self.range.1.min(self.l.la)),
        };
        let r = (r.0.min(r.1), r.1);
        self.l.accesses((self.phase != 1).then_some(r), Cmp::Exact)
    }
    fn must_fail(&self) -> bool {
        let shape = match &self.v {
            Some(v) => v.must_fail(),
            None => self.l.hostile || (self.phase > 0 && !self.l.range_ok(self.range)),
        };
        shape || self.cfg.null || self.l.layout > 1
    }
}

/// Softmax cross-entropy GHM: the one call, the phased API and their blocked variants, with
/// 1 to 4097 classes in either layout.
pub fn softmax(data: &[u8]) {
    let mut g = Gen::new(data);
    let cfg = softmax_config(&mut g);
    let mut lay = Layout::new(&mut g);
    let blocked = g.chance(80);
    let l = LabelBatch::place(&mut g, &mut lay, true);
    let v = blocked.then(|| Blocked::place(&mut g, &mut lay, l.lc.min(80), 1));
    let mut w = World::new(lay.end());
    l.fill(&mut g, &mut w, cfg.bins, false);
    if let Some(v) = &v {
        v.fill(&mut g, &mut w, cfg.bins, false, v.classes);
    }
    w.states(&mut g, cfg.bins);
    let cfg = Cfg::new(&mut g, cfg);
    let res = Results::new(&mut g);
    let mut e = Engine::new(&mut g, w);
    for _ in 0..1 + g.below(6) {
        let op = g.u8() % 6;
        let h = g.below(2);
        match op {
            0..=2 => {
                let range = l.range(&mut g);
                let v = match v {
                    Some(v) if op > 0 && !v.hostile && g.chance(128) => {
                        let first = g.below(v.b.count + 1);
                        Some(v.range(first, g.below(v.b.count - first + 1)))
                    }
                    v => v,
                };
                e.step(&SoftmaxCall {
                    cfg,
                    l,
                    v,
                    res,
                    phase: op,
                    h,
                    range,
                });
            }
            3 => {
                let into = g.below(2);
                e.step(&Merge {
                    into,
                    from: h,
                    loose: false,
                });
            }
            _ => {
                e.step(&Finalize::new(&mut g, AnyCfg::S(cfg), h));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Setup: configs, states, backend selection, errors

/// The small entry points: defaults, `ghm_ema_init`, `ghm_hist_init`, `ghm_hist_merge`,
/// `ghm_set_backend` with any string, `ghm_backend`, `ghm_status_str` of any status,
/// `ghm_last_error`, `ghm_version`.
pub fn setup(data: &[u8]) {
    let mut g = Gen::new(data);
    for _ in 0..1 + g.below(8) {
        match g.u8() % 8 {
            0 => {
                let bins = g.bins();
                let mut e = ema(&mut g, 10);
                let before = e;
                // SAFETY: a valid EMA, or NULL.
                let s = unsafe {
                    if g.chance(20) {
                        ghm_ema_init(core::ptr::null_mut(), bins)
                    } else {
                        ghm_ema_init(&mut e, bins)
                    }
                };
                if s == GHM_OK {
                    assert!((1..=128).contains(&bins), "ghm_ema_init({bins}) accepted");
                    assert!(e.bins == bins && e.acc_sum.iter().all(|&v| v == 0.0));
                } else {
                    let same = format!("{e:?}") == format!("{before:?}");
                    assert!(same, "ghm_ema_init refused but wrote");
                }
            }
            1 => {
                let bins = g.bins();
                let mut h = hist(&mut g, 10);
                let before = format!("{h:?}");
                // SAFETY: a valid histogram.
                let s = unsafe { ghm_hist_init(&mut h, bins) };
                if s == GHM_OK {
                    assert!((1..=128).contains(&bins), "ghm_hist_init({bins}) accepted");
                    assert!(h.bins == bins && h.counts.iter().all(|&c| c == 0) && h.tot == 0.0);
                } else {
                    assert_eq!(format!("{h:?}"), before, "ghm_hist_init refused but wrote");
                }
            }
            2 => {
                let bins = g.bins();
                let mut a = hist(&mut g, bins);
                let b = hist(&mut g, bins);
                for k in 0..ghm::MAX_BINS {
                    a.counts[k] = a.counts[k].wrapping_add(g.u8() as u64);
                }
                let before = a;
                // SAFETY: two valid histograms.
                let s = unsafe { ghm_hist_merge(&mut a, &b) };
                if s == GHM_OK {
                    // Counts saturate; bins beyond `bins` are left alone.
                    for k in 0..ghm::MAX_BINS {
                        let want = if k < bins as usize {
                            before.counts[k].saturating_add(b.counts[k])
                        } else {
                            before.counts[k]
                        };
                        assert_eq!(a.counts[k], want, "ghm_hist_merge: counts[{k}]");
                    }
                    assert_eq!(a.skipped, before.skipped.saturating_add(b.skipped));
                } else {
                    assert_eq!(
                        format!("{a:?}"),
                        format!("{before:?}"),
                        "merge refused, wrote"
                    );
                }
            }
            3 => {
                let len = g.below(12);
                let mut name: Vec<u8> = (0..len).map(|_| g.u8().max(1)).collect();
                if g.chance(128) {
                    let known = g.pick(&["scalar", "sse2", "avx2", "avx512", "neon", "portable"]);
                    name = known.as_bytes().to_vec();
                }
                name.push(0);
                let before = active();
                // SAFETY: a NUL-terminated string, or NULL.
                let s = unsafe {
                    if g.chance(20) {
                        ghm_set_backend(core::ptr::null())
                    } else {
                        ghm_set_backend(name.as_ptr() as *const core::ffi::c_char)
                    }
                };
                if s != GHM_OK {
                    assert_eq!(active(), before, "ghm_set_backend refused but changed it");
                }
                // SAFETY: NULL restores the automatic choice.
                unsafe { ghm_set_backend(core::ptr::null()) };
            }
            4 => {
                let s = g.u32() as i32;
                let p = ghm_status_str(s);
                assert!(!p.is_null());
                // SAFETY: a static NUL-terminated string.
                let m = unsafe { core::ffi::CStr::from_ptr(p) };
                assert!(!m.to_bytes().is_empty());
            }
            5 => {
                // SAFETY: NULL or a valid report.
                unsafe {
                    if g.chance(128) {
                        assert_eq!(ghm_last_error(core::ptr::null_mut()), GHM_ERR_NULL);
                    } else {
                        let mut r: ghm_report = core::mem::zeroed();
                        assert_eq!(ghm_last_error(&mut r), GHM_OK);
                        assert!(r.status <= 0 && r.message.contains(&0), "report");
                    }
                }
            }
            6 => {
                assert_eq!(ghm_version(), ghm::VERSION);
                let _ = (ghm_c_config_default(), ghm_r_config_default());
                let _ = (ghm_g_config_default(), ghm_softmax_config_default());
            }
            _ => {
                // A refused call, to give ghm_last_error something to report.
                let mut cfg = ghm_c_config_default();
                cfg.bins = g.bins();
                cfg.momentum = g.special();
                let x = [g.special(); 4];
                // SAFETY: four elements each.
                let s = unsafe {
                    let mut grad = [0f32; 4];
                    ghm_c_loss_grad(
                        &cfg,
                        core::ptr::null_mut(),
                        x.as_ptr(),
                        x.as_ptr(),
                        core::ptr::null(),
                        4,
                        grad.as_mut_ptr(),
                        core::ptr::null_mut(),
                        core::ptr::null_mut(),
                        core::ptr::null_mut(),
                    )
                };
                let _ = s;
            }
        }
    }
}

fn active() -> String {
    // SAFETY: a static NUL-terminated name.
    unsafe { core::ffi::CStr::from_ptr(ghm_backend()) }
        .to_string_lossy()
        .into_owned()
}

// ---------------------------------------------------------------------------------------------
// The training log line

/// Where each argument of a log call lies in the arena (`None`: NULL).
struct LogPlace {
    src: Option<usize>,
    w: Option<usize>,
    tag: Option<usize>,
    buf: Option<usize>,
    buf_len: usize,
    len: Option<usize>,
}

/// `ghm_log_stats` and `ghm_log_weights`: statistics of any content (bin counts out of range,
/// NaN weights and totals), tags of any bytes (long, not UTF-8, quotes and control bytes), any
/// `g_max`, and the buffer, its length and `len` anywhere in one arena, overlapping the inputs
/// or not. Oracles: a call succeeds exactly when none of its refusals applies; a refusal
/// changes no byte of the arena; a success writes exactly `LogLine::write`'s line, its NUL and
/// `*len`, and nothing else.
pub fn log(data: &[u8]) {
    let mut g = Gen::new(data);
    let phased = g.chance(96);
    let bins = if g.chance(32) {
        g.bins()
    } else {
        1 + g.below(ghm::MAX_BINS) as u32
    };
    // The statistics (or the histogram and weights), filled with anything.
    let mut stats: ghm::Stats = zeroed();
    stats.bins = bins;
    stats.nonempty_bins = if g.chance(16) {
        g.u32()
    } else {
        g.below(bins as usize + 1) as u32
    };
    stats.tot = if g.chance(16) {
        g.special() as f64
    } else {
        g.u32() as f64
    };
    stats.skipped = if g.chance(16) {
        u64::MAX
    } else {
        g.below(5) as u64
    };
    for k in 0..ghm::MAX_BINS {
        stats.counts[k] = match g.u8() % 8 {
            0 => u64::MAX,
            1..=3 => 0,
            _ => g.u32() as u64,
        };
        stats.weights[k] = if g.chance(32) {
            g.special()
        } else {
            g.u8() as f32 / 7.0
        };
    }
    let mut hist = hist(&mut g, bins);
    hist.counts = stats.counts;
    hist.skipped = stats.skipped;
    let mut w = weights(&mut g, bins);
    w.nonempty_bins = stats.nonempty_bins;
    w.tot = stats.tot;
    w.loss = if g.chance(16) {
        g.special() as f64
    } else {
        g.u32() as f64 / 64.0
    };
    w.weight = stats.weights;
    if g.chance(16) {
        w.bins = g.bins();
    }
    // The tag and its NUL: mostly up to 32 bytes of printable ASCII, quotes, backslashes,
    // control bytes and UTF-8; sometimes up to 70 bytes, or any bytes.
    let wild = g.chance(24);
    let n = if g.chance(16) {
        g.below(71)
    } else {
        g.below(33)
    };
    let mut tag: Vec<u8> = Vec::with_capacity(n + 1);
    while tag.len() < n {
        match g.u8() % 8 {
            _ if wild => tag.push(g.u8().max(1)),
            0 => tag.push(g.pick(&[b'"', b'\\', 0x7f, 1, b'\n', b'\t'])),
            1 => tag.extend_from_slice("é".as_bytes()),
            _ => tag.push(b' ' + g.u8() % 95),
        }
    }
    let g_max = if g.chance(32) { g.special() } else { 1.0 };
    let (loss, iteration) = (g.special() as f64, g.u64());
    // The arena: the inputs, then the buffer (sometimes over an input), then `len`.
    let (src_size, w_size) = if phased {
        (size_of::<ghm::Hist>(), size_of::<ghm::Weights>())
    } else {
        (size_of::<ghm::Stats>(), 0)
    };
    let buf_len = match g.u8() % 8 {
        0 => g.below(64),
        1 => g.below(1200),
        2 => ghm::log::LOG_LINE_MAX,
        _ => 200 + 8 * (bins.min(128) as usize) * 8 + g.below(64),
    };
    let mut at = g.below(8);
    let src = at;
    at += src_size + g.below(8);
    let wpos = at;
    at += w_size + g.below(8);
    let tpos = at;
    at += tag.len() + 1 + g.below(8);
    let mut p = LogPlace {
        src: Some(src),
        w: phased.then_some(wpos),
        tag: Some(tpos),
        buf: Some(at + g.below(8)),
        buf_len,
        len: None,
    };
    at = p.buf.unwrap() + buf_len + g.below(8);
    p.len = Some(at);
    at += size_of::<usize>();
    let total = at + g.below(8);
    match g.u8() % 32 {
        0 => p.src = None,
        1 => p.w = p.w.and(None),
        2 => p.tag = None,
        3 => p.buf = None,
        4 => p.len = None,
        5 => p.buf = Some(src + g.below(src_size)), // over the statistics
        6 => p.buf = Some(tpos.saturating_sub(g.below(4))), // over the tag
        7 => p.len = p.buf.map(|b| b + g.below(buf_len.max(1))), // inside the buffer
        _ => {}
    }
    if let Some(b) = p.buf {
        if b + buf_len > total {
            p.buf_len = total - b; // stays inside the arena
        }
    }
    let mut arena = vec![0u8; total];
    for (i, v) in arena.iter_mut().enumerate() {
        *v = (i as u8).wrapping_mul(37) ^ 0x5a;
    }
    let put = |arena: &mut [u8], at: usize, bytes: &[u8]| {
        arena[at..at + bytes.len()].copy_from_slice(bytes)
    };
    if phased {
        put(&mut arena, src, raw(&hist));
        put(&mut arena, wpos, raw(&w));
    } else {
        put(&mut arena, src, raw(&stats));
    }
    let mut t = tag.clone();
    t.push(0);
    put(&mut arena, tpos, &t);
    let before = arena.clone();
    let base = arena.as_mut_ptr();
    // SAFETY: every offset is inside the arena (the buffer clipped to it).
    let ptr = |o: Option<usize>| o.map_or(core::ptr::null_mut(), |o| unsafe { base.add(o) });
    let (sp, wp, tp, bp, lp) = (ptr(p.src), ptr(p.w), ptr(p.tag), ptr(p.buf), ptr(p.len));
    // SAFETY: every pointer is NULL or inside the arena, sized as the call reads it (the tag
    // NUL-terminated within it); the overlaps are the library's to refuse.
    let s = unsafe {
        if phased {
            ghm_log_weights(
                sp as *const ghm::Hist,
                wp as *const ghm::Weights,
                iteration,
                tp as *const core::ffi::c_char,
                g_max,
                bp as *mut core::ffi::c_char,
                p.buf_len,
                lp as *mut usize,
            )
        } else {
            ghm_log_stats(
                sp as *const ghm::Stats,
                loss,
                iteration,
                tp as *const core::ffi::c_char,
                g_max,
                bp as *mut core::ffi::c_char,
                p.buf_len,
                lp as *mut usize,
            )
        }
    };
    // What the call had to refuse, in the harness's own terms.
    let text = core::str::from_utf8(&tag).ok();
    let tag_str = if p.tag.is_some() {
        text.unwrap_or("")
    } else {
        ""
    };
    let l = if phased {
        ghm::log::LogLine::from_weights(&hist, &w, iteration, tag_str).g_max(g_max)
    } else {
        ghm::log::LogLine::from_stats(&stats, loss, iteration, tag_str).g_max(g_max)
    };
    let overlaps =
        |a: usize, an: usize, b: usize, bn: usize| an > 0 && bn > 0 && a < b + bn && b < a + an;
    let tag_span = p.tag.map(|t| (t, tag.len() + 1));
    // The spans the call reads and writes, each pair of an output and anything else refused.
    let mut inputs = vec![(src, src_size)];
    if phased {
        inputs.push((wpos, w_size));
    }
    inputs.extend(tag_span);
    let outputs: Vec<(usize, usize)> = [
        p.buf.map(|b| (b, p.buf_len)),
        p.len.map(|l| (l, size_of::<usize>())),
    ]
    .into_iter()
    .flatten()
    .collect();
    let aliased = outputs.iter().enumerate().any(|(i, &(o, on))| {
        let others = inputs.iter().chain(&outputs[i + 1..]);
        others.into_iter().any(|&(a, an)| overlaps(o, on, a, an))
    });
    let (bins_of_line, nonempty) = if phased {
        (w.bins, w.nonempty_bins)
    } else {
        (stats.bins, stats.nonempty_bins)
    };
    let must_fail = p.src.is_none()
        || (phased && p.w.is_none())
        || p.buf.is_none()
        || (p.tag.is_some() && (tag.len() > 64 || text.is_none()))
        || !(g_max > 0.0 && g_max.is_finite())
        || (phased && hist.bins != w.bins)
        || aliased
        || !(1..=128).contains(&bins_of_line)
        || nonempty > bins_of_line
        || l.len() >= p.buf_len;
    if let Some(c) = OUTCOMES.get(s.unsigned_abs() as usize) {
        c.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
    if must_fail {
        assert_ne!(
            s, GHM_OK,
            "the log call succeeded although it had to refuse"
        );
        assert!(arena == before, "a refused log call wrote (status {s})");
        return;
    }
    assert_eq!(s, GHM_OK, "the log call refused a good line");
    let mut want = vec![0u8; l.len()];
    assert_eq!(l.write(&mut want), Ok(want.len()));
    let b = p.buf.unwrap();
    assert_eq!(&arena[b..b + want.len()], &want[..], "the line");
    assert_eq!(arena[b + want.len()], 0, "its NUL");
    let mut expect = before.clone();
    expect[b..b + want.len()].copy_from_slice(&want);
    expect[b + want.len()] = 0;
    if let Some(lp) = p.len {
        expect[lp..lp + size_of::<usize>()].copy_from_slice(&want.len().to_ne_bytes());
    }
    assert!(
        arena == expect,
        "the log call wrote outside its line, NUL and len"
    );
}
