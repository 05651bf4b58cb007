//! The machinery every target shares: a byte-driven generator of hostile values and sizes,
//! a guarded arena that holds every buffer of a call, and the oracle that runs each call on
//! the scalar backend and on the backend under test and checks what the contract promises.

use arbitrary::Unstructured;
use core::ffi::CStr;
use core::sync::atomic::{AtomicU64, Ordering};
use ghm::ffi::{ghm_last_error, ghm_report, ghm_set_backend, ghm_status, GHM_ERR_ALIAS, GHM_OK};
use ghm::{Backend, Ema, Hist, Stats, Weights, MAX_BINS};

/// Guard bytes before and after the buffers of a call (and between them, where the layout
/// leaves a gap): a write there is a write outside the buffers the call was given.
pub const GUARD: usize = 64;
/// What the arena holds before the buffers are filled: guard bytes keep it.
pub const GUARD_BYTE: u8 = 0xA5;

// ---------------------------------------------------------------------------------------------
// Values

/// The fuzz input, read front to back; once it runs out, a pseudo-random stream seeded by
/// the whole input continues it (so that a short input still makes a full call).
pub struct Gen<'a> {
    u: Unstructured<'a>,
    rest: u64,
    /// Whether the buffer being filled gets special values (NaN, infinities, ...) among its
    /// ordinary ones; decided per buffer, so that most calls get past the input check.
    spice: bool,
}

/// Values a numerics library gets wrong: zeros of both signs, NaN, infinities, subnormals,
/// the largest finite values, 1 ulp around 1, where `exp` overflows and underflows.
pub const SPECIAL: [f32; 30] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    f32::NAN,
    -f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MIN_POSITIVE,
    1e-45,
    -1e-45,
    1.1754942e-38, // the largest subnormal
    3e38,
    -3e38,
    f32::MAX,
    f32::MIN,
    f32::EPSILON,
    0.99999994, // 1 - 2^-24
    1.0000001,
    88.72284,
    -88.72284,
    103.97208,
    -103.97208,
    1e-7,
    16.0,
    -16.0,
    1e4,
    -1e4,
    1.000001, // GHM's last edge, 1 + 1e-6
];

impl<'a> Gen<'a> {
    pub fn new(data: &'a [u8]) -> Gen<'a> {
        // FNV-1a of the input seeds the continuation.
        let seed = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Gen {
            u: Unstructured::new(data),
            rest: seed,
            spice: false,
        }
    }
    fn next(&mut self) -> u64 {
        self.rest = self.rest.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rest;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn u8(&mut self) -> u8 {
        if self.u.is_empty() {
            return self.next() as u8;
        }
        self.u.arbitrary().unwrap_or(0)
    }
    pub fn u32(&mut self) -> u32 {
        if self.u.len() < 4 {
            return self.next() as u32;
        }
        self.u.arbitrary().unwrap_or(0)
    }
    pub fn u64(&mut self) -> u64 {
        if self.u.len() < 8 {
            return self.next();
        }
        self.u.arbitrary().unwrap_or(0)
    }
    /// Decides whether the next buffer gets special values.
    pub fn begin_buffer(&mut self) {
        self.spice = self.chance(64);
    }
    /// In `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        (self.u64() % n as u64) as usize
    }
    /// True with probability `p / 256`.
    pub fn chance(&mut self, p: u32) -> bool {
        (self.u8() as u32) < p
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    pub fn special(&mut self) -> f32 {
        self.pick(&SPECIAL)
    }
    /// A bin edge `k / bins` of `bins` (clamped to 1..=128), or 1 ulp either side of it.
    pub fn edge(&mut self, bins: u32) -> f32 {
        let b = bins.clamp(1, MAX_BINS as u32);
        let e = self.below(b as usize + 1) as f32 / b as f32;
        match self.below(3) {
            0 => f32::from_bits(e.to_bits().saturating_sub(1)),
            1 => e,
            _ => f32::from_bits(e.to_bits() + 1),
        }
    }
    /// An element count: mostly every length around the vector widths (1, 4, 8, 16 lanes,
    /// unrolled 4 times), sometimes longer.
    pub fn size(&mut self) -> usize {
        match self.u8() % 16 {
            0..=7 => self.below(71),
            8..=11 => self.below(301),
            12 | 13 => 16 * (1 + self.below(70)) + self.below(3) - 1,
            14 => 1000 + self.below(1100),
            _ => 4096 + self.below(2048),
        }
    }
    /// A prediction: a logit, or a probability when `probs`.
    pub fn pred(&mut self, bins: u32, probs: bool) -> f32 {
        match self.u8() % 16 {
            0 | 1 if self.spice => self.special(),
            2 if self.spice => f32::from_bits(self.u32()),
            3 | 4 => {
                // g = |sigmoid(x) - t| on a bin edge for target 0.
                let e = self.edge(bins);
                if probs {
                    e
                } else {
                    (e as f64 / (1.0 - e as f64)).ln() as f32
                }
            }
            5 => (self.u8() as i8) as f32 * 2.0,
            _ => {
                let v = (self.u8() as i8) as f32 / 16.0;
                if probs {
                    1.0 / (1.0 + (-v).exp())
                } else {
                    v
                }
            }
        }
    }
    /// A target: mostly 0 or 1.
    pub fn target(&mut self, bins: u32) -> f32 {
        match self.u8() % 16 {
            0 if self.spice => self.special(),
            1 if self.spice => f32::from_bits(self.u32()),
            2 => self.edge(bins),
            3 => self.u8() as f32 / 255.0,
            4..=9 => 0.0,
            _ => 1.0,
        }
    }
    /// A label weight, anchor weight or sample weight: mostly 1, some 0.
    pub fn weight(&mut self) -> f32 {
        match self.u8() % 16 {
            0 if self.spice => self.special(),
            1 if self.spice => f32::from_bits(self.u32()),
            2 | 3 => 0.0,
            4 => self.u8() as f32 / 64.0,
            _ => 1.0,
        }
    }
    /// A class index for `c` classes: mostly valid, some ignored (negative, `c` and beyond).
    pub fn label(&mut self, c: usize) -> i32 {
        match self.u8() % 16 {
            0 => -1,
            1 => c as i32,
            2 => self.pick(&[i32::MIN, i32::MAX, -2, c as i32 + 1]),
            3 => self.u32() as i32,
            _ => self.below(c) as i32,
        }
    }
    /// What an output buffer holds before the call (the gradient is added to, with accumulate).
    pub fn before(&mut self) -> f32 {
        match self.u8() % 8 {
            0 if self.spice => self.special(),
            1 | 2 => 0.0,
            _ => (self.u8() as i8) as f32 / 32.0,
        }
    }
    /// A config float: mostly `usual`, sometimes any of the special values or any bits.
    pub fn cfg_f32(&mut self, usual: f32, others: &[f32]) -> f32 {
        match self.u8() % 64 {
            0 => self.special(),
            1 => f32::from_bits(self.u32()),
            2..=9 => self.pick(others),
            _ => usual,
        }
    }
    /// A config enum or count: mostly `usual`, sometimes another listed value or any u32.
    pub fn cfg_u32(&mut self, usual: u32, others: &[u32]) -> u32 {
        match self.u8() % 64 {
            0 => self.u32(),
            1..=12 => self.pick(others),
            _ => usual,
        }
    }
    /// A bin count: mostly valid, sometimes 0, 129 or any u32.
    pub fn bins(&mut self) -> u32 {
        match self.u8() % 64 {
            0 => self.pick(&[0, 129, u32::MAX, 1 << 31]),
            1..=7 => 1 + self.below(MAX_BINS) as u32,
            8..=11 => self.pick(&[1, 2, 16, 17, 30, 64, 127, 128]),
            _ => 10,
        }
    }
    /// A size that must be refused (its bytes or a product overflow): never passed with a
    /// buffer that small unless the call has to refuse it.
    pub fn hostile_size(&mut self) -> usize {
        self.pick(&[
            usize::MAX,
            usize::MAX / 2 + 1,
            usize::MAX / 4 + 1,
            isize::MAX as usize / 4 + 1,
            isize::MAX as usize / 2,
        ])
    }
}

// ---------------------------------------------------------------------------------------------
// Buffers

/// A buffer of a call: `bytes` bytes at byte `off` of the arena's contents (after the first
/// guard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    pub off: usize,
    pub bytes: usize,
}

/// Places the buffers of a call in one arena: one after another with gaps of guard bytes,
/// unaligned when the input says so, and now and then overlapping one placed before (the
/// call must then refuse if an output is involved).
pub struct Layout {
    placed: Vec<Buf>,
    end: usize,
    misalign: bool,
}

/// The most bytes a call's buffers take (beyond it, the sizes are cut down).
pub const MAX_ARENA: usize = 1 << 20;

impl Layout {
    pub fn new(g: &mut Gen) -> Layout {
        Layout {
            placed: Vec::new(),
            end: 0,
            misalign: g.chance(48),
        }
    }
    /// Places `bytes` bytes with alignment `align` (when the layout is aligned; 8-byte
    /// structures always are).
    pub fn place(&mut self, g: &mut Gen, bytes: usize, align: usize) -> Buf {
        let align = if self.misalign && align < 8 { 1 } else { align };
        let off = if !self.placed.is_empty() && g.chance(10) {
            let o = self.placed[g.below(self.placed.len())];
            (o.off + g.below(o.bytes + 1)) / align * align
        } else {
            self.end.div_ceil(align) * align + align * g.below(3)
        };
        let b = Buf { off, bytes };
        self.end = self.end.max(off + bytes);
        self.placed.push(b);
        b
    }
    /// As `place`, or NULL with probability `null / 256`.
    pub fn opt(&mut self, g: &mut Gen, bytes: usize, align: usize, null: u32) -> Option<Buf> {
        if g.chance(null) {
            None
        } else {
            Some(self.place(g, bytes, align))
        }
    }
    pub fn end(&self) -> usize {
        self.end
    }
}

/// Everything a call may read or write: the arena (every buffer, between guards) and the
/// caller's structures. Two copies run side by side: one on the scalar backend, one on the
/// backend under test.
#[derive(Clone)]
pub struct World {
    mem: Vec<u64>,
    len: usize,
    pub ema: Ema,
    pub hist: [Hist; 2],
    pub weights: Weights,
    pub stats: Stats,
    pub loss: f32,
}

pub fn raw<T>(t: &T) -> &[u8] {
    // SAFETY: the structures here are plain old data of integers and floats (repr(C), no
    // padding): every byte is initialised.
    unsafe { core::slice::from_raw_parts(t as *const T as *const u8, size_of::<T>()) }
}

pub fn zeroed<T>() -> T {
    // SAFETY: only used for the crate's repr(C) structures of integers and floats, for which
    // all-zero bytes are a valid value.
    unsafe { core::mem::MaybeUninit::zeroed().assume_init() }
}

impl World {
    /// An arena of `content` bytes (plus the guards), every byte a guard byte until filled.
    pub fn new(content: usize) -> World {
        let len = GUARD + content + GUARD;
        let mut w = World {
            mem: vec![0u64; len.div_ceil(8)],
            len,
            ema: zeroed(),
            hist: [zeroed(), zeroed()],
            weights: zeroed(),
            stats: zeroed(),
            loss: -7.0,
        };
        w.bytes_mut().fill(GUARD_BYTE);
        w
    }
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `mem` holds at least `len` bytes.
        unsafe { core::slice::from_raw_parts(self.mem.as_ptr() as *const u8, self.len) }
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`.
        unsafe { core::slice::from_raw_parts_mut(self.mem.as_mut_ptr() as *mut u8, self.len) }
    }
    /// The C pointer to `b` (NULL for none).
    pub fn ptr<T>(&mut self, b: Option<Buf>) -> *mut T {
        match b {
            None => core::ptr::null_mut(),
            // SAFETY: the buffer lies inside the arena.
            Some(b) => unsafe { (self.mem.as_mut_ptr() as *mut u8).add(GUARD + b.off) as *mut T },
        }
    }
    pub fn put<const N: usize>(&mut self, b: Buf, i: usize, v: [u8; N]) {
        let at = GUARD + b.off + i * N;
        self.bytes_mut()[at..at + N].copy_from_slice(&v);
    }
    pub fn get_f32(&self, at: usize) -> f32 {
        let b = self.bytes();
        f32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }
    /// Fills `b` (if any) with `n` floats from `f`.
    pub fn fill_f32(&mut self, b: Option<Buf>, n: usize, mut f: impl FnMut() -> f32) {
        if let Some(b) = b {
            for i in 0..n.min(b.bytes / 4) {
                self.put(b, i, f().to_ne_bytes());
            }
        }
    }
    pub fn fill_i32(&mut self, b: Option<Buf>, n: usize, mut f: impl FnMut() -> i32) {
        if let Some(b) = b {
            for i in 0..n.min(b.bytes / 4) {
                self.put(b, i, f().to_ne_bytes());
            }
        }
    }
    /// Writes a structure's bytes (a `ghm_blocks` descriptor placed in the arena).
    pub fn put_struct<T>(&mut self, b: Buf, t: &T) {
        let at = GUARD + b.off;
        self.bytes_mut()[at..at + size_of::<T>()].copy_from_slice(raw(t));
    }
    /// The EMA, both histograms and the weights for `bins`, as [`ema`], [`hist`] and
    /// [`weights`] make them (ordinary, or corrupt now and then).
    pub fn states(&mut self, g: &mut Gen, bins: u32) {
        self.ema = ema(g, bins);
        self.hist = [hist(g, bins), hist(g, bins)];
        self.weights = weights(g, bins);
    }

    fn same_bytes(&self, o: &World) -> bool {
        self.bytes() == o.bytes()
            && raw(&self.ema) == raw(&o.ema)
            && raw(&self.hist) == raw(&o.hist)
            && raw(&self.weights) == raw(&o.weights)
            && raw(&self.stats) == raw(&o.stats)
            && self.loss.to_bits() == o.loss.to_bits()
    }
}

// ---------------------------------------------------------------------------------------------
// States

/// An EMA for `bins`: zeros (as `ghm_ema_init`), one that has seen batches, or a corrupt one
/// (another bin count, NaN, negative or huge values).
pub fn ema(g: &mut Gen, bins: u32) -> Ema {
    let mut e: Ema = zeroed();
    e.bins = bins;
    match g.u8() % 16 {
        0..=9 => {}
        10..=13 => {
            for v in e.acc_sum.iter_mut().take(bins.min(128) as usize) {
                *v = g.u8() as f32 / 4.0;
            }
        }
        14 => {
            e.bins = g.bins();
        }
        _ => {
            let k = g.below(MAX_BINS);
            e.acc_sum[k] = g.special();
        }
    }
    e
}

/// A histogram for `bins`: empty (as `ghm_hist_init`), or corrupt (another bin count, huge
/// or NaN counts and sums).
pub fn hist(g: &mut Gen, bins: u32) -> Hist {
    let mut h: Hist = zeroed();
    h.bins = bins;
    if g.chance(16) {
        let k = g.below(MAX_BINS);
        match g.u8() % 7 {
            0 => h.bins = g.bins(),
            1 => h.counts[k] = g.pick(&[u64::MAX, 1 << 63, 1 << 53, 3]),
            2 => h.loss_sums[k] = g.special() as f64,
            3 => h.tot = g.pick(&[f64::NAN, -1.0, f64::INFINITY, 1e300, 5.0]),
            4 => h.skipped = u64::MAX,
            5 => h.g_sums[k] = g.special() as f64,
            _ => h.reserved = g.u32(),
        }
    }
    h
}

/// Weights that no finalize produced: zeros, or some fields set (a phased `apply` must
/// check what it is given).
pub fn weights(g: &mut Gen, bins: u32) -> Weights {
    let mut w: Weights = zeroed();
    w.bins = bins;
    if g.chance(64) {
        let k = g.below(MAX_BINS);
        w.scale[k] = g.special();
        w.weight[k] = g.special();
    }
    if g.chance(32) {
        w.bins = g.bins();
    }
    w
}

// ---------------------------------------------------------------------------------------------
// Calls and the oracle

/// How an output element of the backend under test must compare with the scalar backend's.
#[derive(Clone, Copy, Debug)]
pub enum Cmp {
    /// The same bits (any NaN equals any NaN).
    Exact,
    /// Within this many ulp.
    Ulps(u32),
}

/// What a call touches in the arena: byte ranges (`[start, end)` of the contents), and for
/// an output how its floats compare across backends.
pub struct Access {
    pub name: &'static str,
    /// What the overlap checks cover (for an output of a phased call over a range of the
    /// batch: the whole batch's extent).
    pub ranges: Vec<(usize, usize)>,
    pub write: Option<Cmp>,
    /// What an output may write, when less than `ranges` (the call's range of the batch).
    pub written: Option<Vec<(usize, usize)>>,
    /// The span the library's overlap check may take instead of `ranges` (generic GHM's
    /// spaced rows: a block's whole span, as the contract says); GHM_ERR_ALIAS is then
    /// allowed where the span overlaps, and required only where `ranges` do.
    pub span: Option<Vec<(usize, usize)>>,
}

impl Access {
    pub fn read(name: &'static str, ranges: Vec<(usize, usize)>) -> Access {
        Access {
            name,
            ranges,
            write: None,
            written: None,
            span: None,
        }
    }
    pub fn write(name: &'static str, ranges: Vec<(usize, usize)>, cmp: Cmp) -> Access {
        Access {
            name,
            ranges,
            write: Some(cmp),
            written: None,
            span: None,
        }
    }
    /// An output of `whole` (for the overlap checks) that writes only `part`.
    pub fn write_part(
        name: &'static str,
        whole: Vec<(usize, usize)>,
        part: Vec<(usize, usize)>,
        cmp: Cmp,
    ) -> Access {
        Access {
            name,
            ranges: whole,
            write: Some(cmp),
            written: Some(part),
            span: None,
        }
    }
    fn writes(&self) -> &[(usize, usize)] {
        self.written.as_deref().unwrap_or(&self.ranges)
    }
}

/// The bytes of elements `first..first + n` of `b` (elements of `size` bytes), if given.
pub fn span(b: Option<Buf>, first: usize, n: usize, size: usize) -> Vec<(usize, usize)> {
    match b {
        Some(b) if n > 0 => vec![(b.off + first * size, b.off + (first + n) * size)],
        _ => Vec::new(),
    }
}

/// The bytes of `count` blocks of `len` elements through a view of `b`.
pub fn view_span(
    b: Option<Buf>,
    offset: usize,
    stride: usize,
    count: usize,
    len: usize,
    size: usize,
) -> Vec<(usize, usize)> {
    let Some(b) = b else { return Vec::new() };
    if len == 0 {
        return Vec::new();
    }
    (0..count)
        .map(|k| {
            let s = b.off + (offset + k * stride) * size;
            (s, s + len * size)
        })
        .collect()
}

/// One entry point called with one set of arguments.
pub trait Call {
    fn name(&self) -> &'static str;
    /// Calls it with pointers into `w`.
    fn run(&self, w: &mut World) -> ghm_status;
    /// What it reads and writes in the arena.
    fn accesses(&self) -> Vec<Access>;
    /// It must not succeed: a size whose bytes or product overflow, a required NULL.
    fn must_fail(&self) -> bool {
        false
    }
    /// Results that depend on sums of arbitrary floats in f64 (GHM-R's `tot`, summed in
    /// another order by each backend): floats compare within a few ulp instead of exactly.
    fn loose(&self) -> bool {
        false
    }
    /// Two of its structures are the same one (outside the arena, so not in `accesses`).
    fn aliased(&self) -> bool {
        false
    }
}

/// An output shares a byte with an input, with another output, or with itself (two of its
/// own blocks): the contract says GHM_ERR_ALIAS. (A sweep over the ranges sorted by start:
/// generic GHM's rows are a range per float.)
/// With `spans`, an access's `span` stands for its ranges where it has one.
pub fn overlapping(acc: &[Access], spans: bool) -> Option<String> {
    let mut all: Vec<(usize, usize, usize)> = acc
        .iter()
        .enumerate()
        .flat_map(|(i, a)| {
            let r = match (&a.span, spans) {
                (Some(s), true) => s,
                _ => &a.ranges,
            };
            r.iter().filter(|r| r.0 < r.1).map(move |r| (r.0, r.1, i))
        })
        .collect();
    all.sort_unstable();
    let mut active: Vec<(usize, usize)> = Vec::new(); // (end, access)
    for (start, end, i) in all {
        active.retain(|&(e, _)| e > start);
        for &(_, j) in &active {
            let (a, b) = (&acc[i], &acc[j]);
            if a.write.is_some() || b.write.is_some() {
                return Some(if i == j {
                    format!("{} overlaps itself", a.name)
                } else {
                    format!("{} overlaps {}", a.name, b.name)
                });
            }
        }
        active.push((end, i));
    }
    None
}

fn ulps(a: f32, b: f32) -> u64 {
    if a.is_nan() && b.is_nan() {
        return 0;
    }
    if a.is_nan() || b.is_nan() {
        return u64::MAX;
    }
    let ord = |x: f32| {
        let b = x.to_bits();
        if b >> 31 == 1 {
            -((b & 0x7fff_ffff) as i64)
        } else {
            b as i64
        }
    };
    ord(a).abs_diff(ord(b))
}

fn close64(a: f64, b: f64, rel: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= rel * a.abs().max(b.abs())
}

/// Sums of per-element losses: within 1e-6, or both tiny (GHM-R's vector formula underflows
/// for |d| below about 1e-19 where the scalar path's f64 does not: absolute 1e-30).
fn sums_close(a: f64, b: f64) -> bool {
    close64(a, b, 1e-6) || (a - b).abs() <= 1e-30
}

fn same32(a: f32, b: f32, loose: bool) -> bool {
    ulps(a, b) <= if loose { 8 } else { 0 }
}

fn report() -> (ghm_status, i64, String) {
    let mut r: ghm_report = zeroed();
    // SAFETY: a valid, writable report.
    let s = unsafe { ghm_last_error(&mut r) };
    assert_eq!(s, GHM_OK, "ghm_last_error with a report");
    let arg = if r.argument.is_null() {
        String::new()
    } else {
        // SAFETY: the library's static NUL-terminated names.
        unsafe { CStr::from_ptr(r.argument) }
            .to_string_lossy()
            .into_owned()
    };
    (r.status, r.index, arg)
}

/// How many checked calls ended with each status (`GHM_OK`, then `GHM_ERR_NULL` ... `_SHAPE`),
/// for the property tests to show what the inputs reached.
pub static OUTCOMES: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

/// Selects `b` through the C ABI.
pub fn select(b: Backend) {
    // SAFETY: a NUL-terminated name.
    let s = unsafe { ghm_set_backend(b.c_name().as_ptr()) };
    assert_eq!(s, GHM_OK, "ghm_set_backend({}) refused", b.name());
}

/// Runs calls on two copies of a world, the scalar backend's and the tested backend's, and
/// checks every promise of the contract after each.
pub struct Engine {
    pub a: World,
    pub b: World,
    pub backend: Backend,
}

impl Engine {
    /// The tested backend is one this machine runs, picked by the input.
    pub fn new(g: &mut Gen, world: World) -> Engine {
        let all: Vec<Backend> = Backend::all_available().collect();
        let backend = all[g.below(all.len())];
        Engine {
            b: world.clone(),
            a: world,
            backend,
        }
    }

    pub fn step(&mut self, call: &dyn Call) -> ghm_status {
        let (before_a, before_b) = (self.a.clone(), self.b.clone());
        select(Backend::Scalar);
        let sa = call.run(&mut self.a);
        let ra = report();
        select(self.backend);
        let sb = call.run(&mut self.b);
        let rb = report();
        select(Backend::Scalar);
        let (name, bk) = (call.name(), self.backend.name());
        assert_eq!(sa, sb, "{name}: status {sa} on scalar, {sb} on {bk}");
        if let Some(c) = OUTCOMES.get((-sa) as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let acc = call.accesses();
        let overlap = overlapping(&acc, false);
        if sa != GHM_OK {
            assert!(
                self.a.same_bytes(&before_a),
                "{name}: refused ({sa}) but wrote"
            );
            assert!(
                self.b.same_bytes(&before_b),
                "{name}: refused ({sb}) on {bk} but wrote"
            );
            assert_eq!(ra.0, sa, "{name}: ghm_last_error reports another status");
            assert_eq!(ra, rb, "{name}: the report differs on {bk}");
            if sa == GHM_ERR_ALIAS {
                let why = overlapping(&acc, true).is_some() || call.aliased();
                assert!(why, "{name}: GHM_ERR_ALIAS but no buffer overlaps");
            }
            return sa;
        }
        assert!(
            !call.must_fail(),
            "{name}: succeeded with a hostile size or a NULL"
        );
        if let Some(why) = overlap {
            panic!("{name}: succeeded although {why}");
        }
        let loose = call.loose();
        let mut allowed = vec![false; self.a.len];
        for o in acc.iter().filter(|o| o.write.is_some()) {
            for &(s, e) in o.writes() {
                allowed[GUARD + s..GUARD + e].fill(true);
            }
        }
        for (w, before, bk) in [(&self.a, &before_a, "scalar"), (&self.b, &before_b, bk)] {
            let (now, was) = (w.bytes(), before.bytes());
            if let Some(i) = (0..now.len()).find(|&i| !allowed[i] && now[i] != was[i]) {
                panic!(
                    "{name} on {bk}: wrote byte {i} of the arena, outside its outputs (guard {GUARD})"
                );
            }
        }
        for o in &acc {
            let Some(cmp) = o.write else { continue };
            let tol = match (cmp, loose) {
                (Cmp::Exact, false) => 0,
                (Cmp::Exact, true) => 8,
                (Cmp::Ulps(u), _) => u as u64,
            };
            for &(s, e) in o.writes() {
                for at in (GUARD + s..GUARD + e).step_by(4) {
                    let (x, y) = (self.a.get_f32(at), self.b.get_f32(at));
                    assert!(
                        ulps(x, y) <= tol,
                        "{name}: {} at byte {} is {x:e} on scalar, {y:e} on {bk} (allowed {tol} ulp)",
                        o.name,
                        at - GUARD - s
                    );
                }
            }
        }
        self.compare_structs(name, loose);
        // Each step is compared from the same inputs: outputs within their tolerance (GHM-R's
        // ulps) must not become the next step's inputs on one side only (a gradient written
        // over a later call's predictions moved a GHM-R loss sum by 5e-6 relatively).
        self.b = self.a.clone();
        sa
    }

    /// The caller's structures after a successful call: counts exact, weights, scales, EMA
    /// and `tot` exact (within 8 ulp when `loose`), sums of losses within 1e-6 (f64 sums of
    /// per-element losses that may differ in their last bits).
    fn compare_structs(&self, name: &str, loose: bool) {
        let (a, b, bk) = (&self.a, &self.b, self.backend.name());
        let rel = if loose { 1e-5 } else { 0.0 };
        assert_eq!(a.ema.bins, b.ema.bins, "{name}: ema.bins");
        for k in 0..MAX_BINS {
            let (x, y) = (a.ema.acc_sum[k], b.ema.acc_sum[k]);
            assert!(same32(x, y, loose), "{name}: ema[{k}] {x} vs {y} on {bk}");
        }
        for (h, i) in a.hist.iter().zip(&b.hist) {
            assert_eq!(
                (h.bins, h.reserved, h.counts, h.skipped),
                (i.bins, i.reserved, i.counts, i.skipped),
                "{name}: hist counts on {bk}"
            );
            assert!(close64(h.tot, i.tot, rel), "{name}: hist.tot on {bk}");
            for k in 0..MAX_BINS {
                let (x, y) = (h.loss_sums[k], i.loss_sums[k]);
                assert!(
                    sums_close(x, y),
                    "{name}: loss_sums[{k}] {x:e} vs {y:e} on {bk}"
                );
                assert!(close64(h.g_sums[k], i.g_sums[k], rel), "{name}: g_sums");
            }
        }
        let (s, t) = (&a.stats, &b.stats);
        assert_eq!(
            (s.bins, s.nonempty_bins, s.counts, s.skipped),
            (t.bins, t.nonempty_bins, t.counts, t.skipped),
            "{name}: stats on {bk}"
        );
        assert!(close64(s.tot, t.tot, rel), "{name}: stats.tot on {bk}");
        for k in 0..MAX_BINS {
            let (x, y) = (s.weights[k], t.weights[k]);
            assert!(
                same32(x, y, loose),
                "{name}: stats.weights[{k}] {x} vs {y} on {bk}"
            );
        }
        let (v, u) = (&a.weights, &b.weights);
        assert_eq!(
            (v.bins, v.nonempty_bins),
            (u.bins, u.nonempty_bins),
            "{name}: weights.bins on {bk}"
        );
        assert!(close64(v.tot, u.tot, rel), "{name}: weights.tot on {bk}");
        let (x, y) = (v.loss, u.loss);
        assert!(
            sums_close(x, y),
            "{name}: weights.loss {x:e} vs {y:e} on {bk}"
        );
        for k in 0..MAX_BINS {
            let (x, y) = (v.weight[k], u.weight[k]);
            assert!(
                same32(x, y, loose),
                "{name}: weights.weight[{k}] {x} vs {y} on {bk}"
            );
            let (x, y) = (v.scale[k], u.scale[k]);
            assert!(
                same32(x, y, loose),
                "{name}: weights.scale[{k}] {x} vs {y} on {bk}"
            );
        }
        assert!(
            ulps(a.loss, b.loss) <= 8,
            "{name}: loss {} on scalar, {} on {bk}",
            a.loss,
            b.loss
        );
    }
}
