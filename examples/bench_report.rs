//! The side-by-side performance report: ns per element of each kernel on each backend this
//! machine runs, at N = 4Ki, 64Ki, 1Mi and 16Mi, next to the streaming floor measured in the
//! same process.
//!
//! The floor is what a two-pass fused kernel must at least move: one pass that reads three
//! f32 and writes one per element, plus one that reads one and writes one. The ratio
//! kernel / floor says how close to memory-bound the kernel is (at 16Mi the data is far
//! outside the caches; at 4Ki and 64Ki it is inside them and the ratio measures compute).
//!
//! `cargo run --release --example bench_report` (add `-- quick` for a shorter run).
//! Times are medians over several timed runs, each run of a kernel right after one of the
//! floor (the ratio is the median of the per-pair ratios); one thread. The report ends with
//! the performance targets, read off the run for the backend picked at run time.

use std::hint::black_box;
use std::time::Instant;

use ghm::{
    Backend, Blocks, Dense, Ema, GOut, GhmC, GhmG, GhmR, GhmSoftmax, GradRows, Labels, Layout, Out,
    Samples, SoftmaxOut, View,
};

/// SplitMix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-300), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Detector-like GHM-C data: ~1% positives, easy negatives, a few confident outliers; and
/// GHM-R box deltas with 1% large errors.
struct Data {
    logits: Vec<f32>,
    targets: Vec<f32>,
    weights: Vec<f32>,
    labels: Vec<i32>,
    reg_pred: Vec<f32>,
    reg_target: Vec<f32>,
}

/// Classes of the label-layout benchmark.
const CLASSES: usize = 16;

impl Data {
    fn new(n: usize) -> Data {
        let mut r = Rng(42);
        let mut d = Data {
            logits: Vec::with_capacity(n),
            targets: Vec::with_capacity(n),
            weights: Vec::with_capacity(n),
            labels: Vec::with_capacity(n / CLASSES),
            reg_pred: Vec::with_capacity(n),
            reg_target: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let pos = r.next() < 0.01;
            let outlier = r.next() < 0.003;
            let x = match (pos, outlier) {
                (true, false) => 1.0 + 1.5 * r.normal(),
                (false, false) => -4.5 + r.normal(),
                (true, true) => -5.0 - 4.0 * r.next(),
                (false, true) => 5.0 + 4.0 * r.next(),
            };
            d.logits.push(x as f32);
            d.targets.push(pos as u32 as f32);
            d.weights.push(if r.next() < 0.02 { 0.0 } else { 1.0 });
            let t = r.normal();
            let err = if r.next() < 0.01 { 3.0 } else { 0.03 } * r.normal();
            d.reg_target.push(t as f32);
            d.reg_pred.push((t + err) as f32);
        }
        for _ in 0..n / CLASSES {
            d.labels.push(if r.next() < 0.05 {
                (r.next() * CLASSES as f64) as i32
            } else {
                CLASSES as i32
            });
        }
        d
    }
}

/// The softmax rows' names, and their class count.
const SOFTMAX_ROWS: &str = "softmax CE [N/80][80]";
const SOFTMAX_PLANES: &str = "softmax CE [80][N/80]";
const SOFTMAX_C: usize = 80;

/// Softmax inputs: the dense logits as `N / 80` samples of 80 classes (row-major, and
/// transposed), one label per sample.
struct Softmax {
    planes: Vec<f32>,
    labels: Vec<i32>,
}

impl Softmax {
    fn new(d: &Data) -> Softmax {
        let n = d.logits.len() / SOFTMAX_C;
        let mut r = Rng(7);
        let labels = (0..n)
            .map(|_| (r.next() * SOFTMAX_C as f64) as i32)
            .collect();
        let mut planes = vec![0.0f32; n * SOFTMAX_C];
        for a in 0..n {
            for k in 0..SOFTMAX_C {
                planes[k * n + a] = d.logits[a * SOFTMAX_C + k];
            }
        }
        Softmax { planes, labels }
    }
}

/// The generic row's name.
const GENERIC: &str = "generic GHM, rows of 4";
/// Floats per sample of the generic row's gradient rows.
const GEN_K: usize = 4;

/// Generic GHM's inputs, from GHM-R's data: each sample's `g` and ASL1 loss (`mu` 0.02) and a
/// gradient row of 4 floats, rescaled in place by every call. The rows hold zeros, which stay
/// zeros: values would be multiplied again by every timed call, and drift into subnormals
/// (slow on x86) or overflow; the traffic and the operations are the same.
struct Generic {
    g: Vec<f32>,
    loss: Vec<f32>,
    rows: Vec<f32>,
}

impl Generic {
    fn new(d: &Data) -> Generic {
        let (g, loss) = d
            .reg_pred
            .iter()
            .zip(&d.reg_target)
            .map(|(&x, &t)| {
                let diff = x - t;
                let root = (diff * diff + 0.0004f32).sqrt();
                (diff.abs() / root, root - 0.02)
            })
            .unzip();
        Generic {
            g,
            loss,
            rows: vec![0.0; d.reg_pred.len() * GEN_K],
        }
    }
}

/// Seconds per call of `f` over `reps` calls; after one untimed call if `warm` (it brings the
/// data back into the caches after whatever ran before).
fn time_per_call(warm: bool, reps: usize, f: &mut impl FnMut()) -> f64 {
    if warm {
        f();
    }
    let start = Instant::now();
    for _ in 0..reps {
        f();
    }
    start.elapsed().as_secs_f64() / reps as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Calls per timed run, so each run takes a few milliseconds at least.
fn reps_for(n: usize) -> usize {
    (2_000_000 / n).clamp(1, 500)
}

/// Where a row's blocks lie in each of its buffers: `count` blocks of `len` elements, block
/// `b` at element `offset + b * stride` (one block of `n` for the contiguous rows).
#[derive(Clone, Copy, Debug)]
struct Geom {
    count: usize,
    len: usize,
    offset: usize,
    stride: usize,
}

impl Geom {
    fn contiguous(n: usize) -> Geom {
        Geom {
            count: 1,
            len: n,
            offset: 0,
            stride: n,
        }
    }

    /// Elements a buffer needs to hold the blocks.
    fn extent(&self) -> usize {
        if self.count == 0 {
            0
        } else {
            self.offset + (self.count - 1) * self.stride + self.len
        }
    }

    /// Elements the blocks cover.
    fn covered(&self) -> usize {
        self.count * self.len
    }

    fn ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        (0..self.count).map(|b| {
            let at = self.offset + b * self.stride;
            at..at + self.len
        })
    }

    fn blocks(&self) -> Blocks {
        Blocks::uniform(self.count, self.len, View::new(self.offset, self.stride))
    }

    /// The blocks, or (`split > 0`) their first `split` elements and the rest of each.
    fn split(&self, split: usize) -> (Blocks, Option<Blocks>) {
        if split == 0 {
            return (self.blocks(), None);
        }
        let view = |at: usize| View::new(self.offset + at, self.stride);
        (
            Blocks::uniform(self.count, split, view(0)),
            Some(Blocks::uniform(self.count, self.len - split, view(split))),
        )
    }
}

/// The streaming floor over one geometry: a pass that reads three f32 and writes one per
/// element, then one that reads one and writes one, each walking the blocks in order (for
/// views, through buffers laid out as the kernel's: the same gaps for the prefetchers).
struct Floor {
    geom: Geom,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    o: Vec<f32>,
    o2: Vec<f32>,
    /// Generic GHM's floor instead (see [`Floor::generic`]): gradient rows of this many floats
    /// per sample, in `o` (0: the two-pass kernels' floor).
    rows_k: usize,
}

impl Floor {
    fn new(n: usize) -> Floor {
        Floor::over(Geom::contiguous(n))
    }

    fn over(geom: Geom) -> Floor {
        let n = geom.extent();
        Floor {
            geom,
            a: vec![1.0; n],
            b: vec![2.0; n],
            c: vec![0.5; n],
            o: vec![0.0; n],
            o2: vec![0.0; n],
            rows_k: 0,
        }
    }

    /// Generic GHM's own traffic over `n` samples with gradient rows of `k` floats: a pass
    /// that reads three f32 per sample (`g`, the loss, the validity weight), then one that
    /// reads two (`g`, the validity weight) and reads and writes the sample's `k` floats.
    fn generic(n: usize, k: usize) -> Floor {
        let mut f = Floor::new(n);
        f.o = vec![0.0; n * k]; // zeros, as the kernel's rows (see `Generic`)
        f.rows_k = k;
        f
    }

    /// [`Floor::generic`]'s passes. (The first sums into 16 lanes, so that it is not bound by
    /// one chain of additions.)
    fn run_generic(&mut self) {
        let (a, b, c) = (black_box(&self.a), black_box(&self.b), black_box(&self.c));
        let mut acc = [0.0f32; 16];
        for ((a, b), c) in a
            .chunks_exact(16)
            .zip(b.chunks_exact(16))
            .zip(c.chunks_exact(16))
        {
            for j in 0..16 {
                acc[j] += a[j] + b[j] * c[j];
            }
        }
        black_box(acc);
        let k = self.rows_k;
        for ((row, &a), &c) in self.o.chunks_exact_mut(k).zip(a).zip(c) {
            let f = a * c;
            for v in row {
                *v *= f;
            }
        }
        black_box(&mut self.o);
    }

    fn run(&mut self) {
        if self.rows_k > 0 {
            return self.run_generic();
        }
        let (a, b, c) = (black_box(&self.a), black_box(&self.b), black_box(&self.c));
        for r in self.geom.ranges() {
            let (a, b, c) = (&a[r.clone()], &b[r.clone()], &c[r.clone()]);
            for (((o, &a), &b), &c) in self.o[r].iter_mut().zip(a).zip(b).zip(c) {
                *o = a + b * c;
            }
        }
        let o = black_box(&self.o);
        for r in self.geom.ranges() {
            for (o2, &o) in self.o2[r.clone()].iter_mut().zip(&o[r]) {
                *o2 = o * 0.5;
            }
        }
        black_box(&mut self.o2);
    }
}

/// One kernel's row: ns per element of the kernel (median and fastest run) and of the floor
/// (median), and the median of the per-pair ratios.
struct Row {
    ns: f64,
    best: f64,
    floor: f64,
    ratio: f64,
}

/// Times `kernel` (`reps` calls per run) and the floor (`reps_for(n)` per run, `n` the
/// elements the floor's blocks cover, which the kernel's must too) in `runs`
/// pairs of runs, each kernel run right after a floor run, and takes medians: of each time,
/// and of the per-pair ratios. A pair lasts milliseconds and a shared machine's slow phases
/// last seconds (on the one in the README), so the two halves of a pair run in the same
/// phase. That does not remove noise that strikes one half only: at 64Ki the floor's data
/// (1.25 MiB) straddles that machine's L2, and in a calm phase its runs took 0.29 to 0.56 ns
/// per element while the kernel's took 2.9 to 3.7. The fastest kernel run is printed beside
/// the median, to show how far noise moved the median.
fn paired(runs: usize, floor: &mut Floor, reps: usize, mut kernel: impl FnMut()) -> Row {
    let n = floor.geom.covered();
    // Up to 64Ki elements a kernel's data is about the size of L2 (1 MiB on the README's
    // machine: GHM-C dense's inputs and gradient are exactly that, the floor's 1.25 MiB a
    // little more), and the other half of the pair has just evicted it. Beyond, it comes
    // from L3 or memory on every call anyway.
    let warm = n <= 1 << 16;
    kernel(); // first touch of the outputs' pages

    let mut run_floor = || floor.run();
    let (mut ks, mut fs, mut ratios) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        let f = time_per_call(warm, reps_for(n), &mut run_floor);
        let k = time_per_call(warm, reps, &mut kernel);
        ks.push(k / n as f64 * 1e9);
        fs.push(f / n as f64 * 1e9);
        ratios.push(k / f);
    }
    Row {
        best: ks.iter().copied().fold(f64::INFINITY, f64::min),
        ns: median(ks),
        floor: median(fs),
        ratio: median(ratios),
    }
}

fn main() -> Result<(), ghm::Error> {
    let quick = std::env::args().any(|a| a == "quick");
    let runs = if quick { 3 } else { 7 };
    let sizes = [4096, MID, 1 << 20, BIG];
    let backends: Vec<Backend> = Backend::all_available().collect();
    println!(
        "ghm bench_report: one thread; ns per element, median of {runs} runs; auto backend: {}",
        Backend::active().name()
    );
    println!(
        "floor = read 3 + write 1 f32, then read 1 + write 1 (the least a two-pass kernel moves);\n\
         each kernel run comes right after a floor run; ratio = median of the per-pair ratios;\n\
         best = the fastest kernel run\n"
    );
    println!(
        "{:<30} {:>8} {:>9} {:>10} {:>8} {:>8} {:>8} {:>12}",
        "kernel", "backend", "N", "ns/elem", "best", "floor", "ratio", "Melem/s"
    );
    let mut rows = Rows(Vec::new());
    for &n in &sizes {
        let d = Data::new(n);
        let mut floor = Floor::new(n);
        let mut grad = vec![0.0f32; n];
        let mut gen = Generic::new(&d);
        let sm = Softmax::new(&d);
        let sm_n = sm.labels.len() * SOFTMAX_C;
        // The same data through views, in place in larger buffers as a trainer holds it (see
        // `Spread`), each with the floor over the same layout.
        let mut spreads: Vec<(Spread, Floor, Vec<f32>)> = Spread::KINDS
            .into_iter()
            .filter_map(|kind| {
                let v = Spread::new(&d, n, kind)?;
                let floor = Floor::over(v.geom);
                let grad = vec![0.0f32; v.logits.len()];
                Some((v, floor, grad))
            })
            .collect();
        for &backend in &backends {
            let c = GhmC {
                bins: 30,
                momentum: 0.75,
                backend: Some(backend),
                ..GhmC::default()
            };
            let r = GhmR {
                bins: 10,
                momentum: 0.7,
                backend: Some(backend),
                ..GhmR::default()
            };
            let c_skip = GhmC {
                skip_bad: true,
                ..c
            };
            let g = GhmG {
                bins: 10,
                momentum: 0.75,
                backend: Some(backend),
                ..GhmG::default()
            };
            let mut ema_c = Ema::new(30)?;
            let mut ema_r = Ema::new(10)?;
            let mut ema_g = Ema::new(10)?;
            let soft = GhmSoftmax {
                momentum: 0.75,
                backend: Some(backend),
                ..GhmSoftmax::default()
            };
            let mut ema_s = Ema::new(10)?;
            let reps = if backend == Backend::Scalar {
                reps_for(n).div_ceil(8)
            } else {
                reps_for(n)
            };
            let mut kernels: Vec<(&str, Row)> = vec![
                ("GHM-C dense (30 bins)", {
                    let input = Dense::new(&d.logits, &d.targets).label_weight(&d.weights);
                    paired(runs, &mut floor, reps, || {
                        black_box(
                            c.loss_grad(Some(&mut ema_c), &input, Out::grad(&mut grad))
                                .unwrap(),
                        );
                    })
                }),
                // skip_bad: pass 1 may store dl/dx in grad (no input re-read in pass 2).
                ("GHM-C dense, skip_bad", {
                    let input = Dense::new(&d.logits, &d.targets).label_weight(&d.weights);
                    paired(runs, &mut floor, reps, || {
                        black_box(
                            c_skip
                                .loss_grad(Some(&mut ema_c), &input, Out::grad(&mut grad))
                                .unwrap(),
                        );
                    })
                }),
                ("GHM-C labels [N/16][16]", {
                    let input = Labels::new(
                        &d.logits[..d.labels.len() * CLASSES],
                        &d.labels,
                        CLASSES,
                        Layout::AnchorMajor,
                    );
                    let g = &mut grad[..d.labels.len() * CLASSES];
                    paired(runs, &mut floor, reps, || {
                        black_box(
                            c.loss_grad_labels(Some(&mut ema_c), &input, Out::grad(g))
                                .unwrap(),
                        );
                    })
                }),
                ("GHM-R (10 bins)", {
                    let input = Dense::new(&d.reg_pred, &d.reg_target).label_weight(&d.weights);
                    paired(runs, &mut floor, reps, || {
                        black_box(
                            r.loss_grad(Some(&mut ema_r), &input, Out::grad(&mut grad))
                                .unwrap(),
                        );
                    })
                }),
                // Per sample: its g, loss and validity, and a gradient row of 4 floats.
                (GENERIC, {
                    let samples = Samples::new(&gen.g).loss(&gen.loss).valid(&d.weights);
                    let mut floor = Floor::generic(n, GEN_K);
                    paired(runs, &mut floor, reps, || {
                        let out = GOut {
                            rows: Some(GradRows::new(&mut gen.rows, GEN_K)),
                            ..GOut::default()
                        };
                        black_box(g.loss_grad(Some(&mut ema_g), &samples, out).unwrap());
                    })
                }),
                // C = 80, gradient only: the same logits as N / 80 samples, in each layout.
                (SOFTMAX_ROWS, {
                    let input = Labels::new(
                        &d.logits[..sm_n],
                        &sm.labels,
                        SOFTMAX_C,
                        Layout::AnchorMajor,
                    );
                    let g = &mut grad[..sm_n];
                    paired(runs, &mut floor, reps, || {
                        let out = SoftmaxOut::grad(g);
                        black_box(soft.loss_grad(Some(&mut ema_s), &input, out).unwrap());
                    })
                }),
                (SOFTMAX_PLANES, {
                    let input = Labels::new(&sm.planes, &sm.labels, SOFTMAX_C, Layout::ClassMajor);
                    let g = &mut grad[..sm_n];
                    paired(runs, &mut floor, reps, || {
                        let out = SoftmaxOut::grad(g);
                        black_box(soft.loss_grad(Some(&mut ema_s), &input, out).unwrap());
                    })
                }),
            ];
            for (v, floor, vgrad) in &mut spreads {
                let dense = Dense::new(&v.logits, &v.targets).label_weight(&v.weights);
                let (head, tail) = v.geom.split(v.kind.split);
                let (head, tail) = (dense.blocks(head), tail.map(|t| dense.blocks(t)));
                let mut ema_tail = Ema::new(30)?;
                let row = paired(runs, floor, reps, || {
                    black_box(
                        c.loss_grad(Some(&mut ema_c), &head, Out::grad(vgrad))
                            .unwrap(),
                    );
                    if let Some(tail) = &tail {
                        black_box(
                            c.loss_grad(Some(&mut ema_tail), tail, Out::grad(vgrad))
                                .unwrap(),
                        );
                    }
                });
                kernels.push((v.kind.name, row));
            }
            for (name, row) in kernels {
                println!(
                    "{:<30} {:>8} {:>9} {:>10.3} {:>8.3} {:>8.3} {:>8.2} {:>12.1}",
                    name,
                    backend.name(),
                    n,
                    row.ns,
                    row.best,
                    row.floor,
                    row.ratio,
                    1e3 / row.ns
                );
                rows.0.push((name, backend, n, row));
            }
        }
        println!();
    }
    println!("at N = 64Ki, speed-up over the scalar path:");
    for (name, backend, n, _) in &rows.0 {
        if *n != MID || *backend == Backend::Scalar {
            continue;
        }
        if let Some(x) = rows.speedup(name, *backend) {
            println!("  {:<30} {:>8}: {:>6.1}x", name, backend.name(), x);
        }
    }
    println!();
    targets(&rows);
    Ok(())
}

/// A views row: GHM-C over blocks of the dense data, in place in larger buffers.
#[derive(Clone, Copy)]
struct SpreadKind {
    name: &'static str,
    /// Elements per block, and per block of the whole buffer (the block and its gap).
    len: usize,
    stride: usize,
    /// Where block 0 starts.
    offset: usize,
    /// Two uses of GHM-C per block, each with its own EMA, as a trainer calls them: the
    /// first `split` elements of every block, then the rest (0: one call over the blocks).
    split: usize,
}

/// The first `count * len` elements of the dense GHM-C data, in blocks laid out as `kind`
/// says in every buffer (the gradient's too, whose buffer is the caller's); the gaps hold
/// other values, as a trainer's buffers do.
struct Spread {
    kind: SpreadKind,
    geom: Geom,
    logits: Vec<f32>,
    targets: Vec<f32>,
    weights: Vec<f32>,
}

impl Spread {
    /// Blocks of 169 elements (Darknet's objectness on a 13x13 map: the most partial vectors
    /// per element) with as many elements of gap as of block: the worst case, where the
    /// hardware prefetchers bring in every gap.
    const HALF: SpreadKind = SpreadKind {
        name: "GHM-C views 169 of 338",
        len: 169,
        stride: 2 * 169,
        offset: 0,
        split: 0,
    };

    /// Darknet's class block on a 13x13 map with 80 classes, as the README's recipe reads it:
    /// blocks of 80 * 169 elements, 85 * 169 apart, from 5 * 169 (box and objectness first).
    const CLASSES: SpreadKind = SpreadKind {
        name: "GHM-C views 80x169 of 85x169",
        len: 80 * 169,
        stride: 85 * 169,
        offset: 5 * 169,
        split: 0,
    };

    /// Darknet's objectness on a 13x13 map with 80 classes: blocks of 169 elements,
    /// 85 * 169 apart, from 4 * 169 (the boxes first).
    const OBJ: SpreadKind = SpreadKind {
        name: "GHM-C views 169 of 85x169",
        len: 169,
        stride: 85 * 169,
        offset: 4 * 169,
        split: 0,
    };

    /// A whole Darknet layer's GHM work (13x13, 80 classes), as the README's recipe does it:
    /// per block (one image and anchor), objectness (169 elements from 4 * 169) and the class
    /// block right after it (80 * 169), two calls with an EMA each, timed together. Per
    /// element of both, against the contiguous row: what GHM costs a trainer's layer in place.
    /// (Its batches are whole blocks of 81 * 169 elements: 54,756 at 64Ki, 1,040,364 at 1Mi,
    /// 16,769,025 at 16Mi; none at 4Ki.)
    const LAYER: SpreadKind = SpreadKind {
        name: "GHM-C Darknet layer, in place",
        len: 81 * 169,
        stride: 85 * 169,
        offset: 4 * 169,
        split: 169,
    };

    /// The views rows, in the report's order (the targets read them in the same order).
    const KINDS: [SpreadKind; 4] = [Spread::HALF, Spread::OBJ, Spread::CLASSES, Spread::LAYER];

    /// Buffers of at most this many elements (with the floor's, nine of them: 3.4 GiB); a
    /// sparser view's row stops at the size that would need more (objectness at 16Mi would
    /// need 1.4G elements per buffer).
    const MAX_EXTENT: usize = 96 << 20;

    /// `None` when not one block fits in `n` elements, or the buffers would be larger than
    /// [`Spread::MAX_EXTENT`].
    fn new(d: &Data, n: usize, kind: SpreadKind) -> Option<Spread> {
        let geom = Geom {
            count: n / kind.len,
            len: kind.len,
            offset: kind.offset,
            stride: kind.stride,
        };
        if geom.count == 0 || geom.extent() > Spread::MAX_EXTENT {
            return None;
        }
        let spread = |src: &[f32]| {
            let mut out = vec![0.5f32; geom.extent()];
            for (b, r) in geom.ranges().enumerate() {
                out[r].copy_from_slice(&src[b * kind.len..(b + 1) * kind.len]);
            }
            out
        };
        Some(Spread {
            kind,
            geom,
            logits: spread(&d.logits),
            targets: spread(&d.targets),
            weights: spread(&d.weights),
        })
    }
}

/// 64Ki and 16Mi elements: where the targets are set.
const MID: usize = 1 << 16;
const BIG: usize = 1 << 24;

/// Every row of the report: kernel, backend, N.
struct Rows(Vec<(&'static str, Backend, usize, Row)>);

impl Rows {
    fn get(&self, name: &str, backend: Backend, n: usize) -> Option<&Row> {
        self.0
            .iter()
            .find(|(k, b, m, _)| *k == name && *b == backend && *m == n)
            .map(|(_, _, _, r)| r)
    }

    /// The scalar path's time over `backend`'s, for kernel `name` at 64Ki.
    fn speedup(&self, name: &str, backend: Backend) -> Option<f64> {
        Some(self.get(name, Backend::Scalar, MID)?.ns / self.get(name, backend, MID)?.ns)
    }
}

/// The project's performance targets (set for an x86_64 machine with AVX-512, one thread),
/// read off this run for the backend picked at run time. The fifth, a plain release build
/// within 10% of a `-C target-cpu=native` one, takes two builds: this prints which kind this
/// one is.
fn targets(rows: &Rows) {
    let auto = Backend::active();
    let (c, r) = ("GHM-C dense (30 bins)", "GHM-R (10 bins)");
    let verdict = |met: bool| if met { "met" } else { "not met" };
    println!(
        "targets (set for x86_64 with AVX-512, one thread), backend {}:",
        auto.name()
    );
    if let Some(big) = rows.get(c, auto, BIG) {
        println!(
            "  GHM-C one call at 16Mi <= 1.5x the floor: {:.2}x  {}",
            big.ratio,
            verdict(big.ratio <= 1.5)
        );
    }
    if let Some(mid) = rows.get(c, auto, MID) {
        println!(
            "  GHM-C one call at 64Ki <= 1.0 ns per element: {:.3} ns  {}",
            mid.ns,
            verdict(mid.ns <= 1.0)
        );
    }
    if let Some(x) = rows.speedup(c, auto).filter(|_| auto != Backend::Scalar) {
        println!(
            "  SIMD >= 8x the scalar path at 64Ki: {x:.1}x  {}",
            verdict(x >= 8.0)
        );
    }
    let r_over_c: Vec<(&str, f64)> = [("64Ki", MID), ("16Mi", BIG)]
        .into_iter()
        .filter_map(|(at, n)| Some((at, rows.get(r, auto, n)?.ns / rows.get(c, auto, n)?.ns)))
        .collect();
    if !r_over_c.is_empty() {
        let shown: Vec<String> = r_over_c
            .iter()
            .map(|(at, q)| format!("{q:.2} at {at}"))
            .collect();
        println!(
            "  GHM-R no slower than GHM-C: R / C {}  {}",
            shown.join(", "),
            verdict(r_over_c.iter().all(|&(_, q)| q <= 1.0))
        );
    }
    if let Some(big) = rows.get(GENERIC, auto, BIG) {
        println!(
            "  generic GHM (rows of 4) at 16Mi <= 1.3x its own floor: {:.2}x  {}",
            big.ratio,
            verdict(big.ratio <= 1.3)
        );
    }
    for name in [SOFTMAX_ROWS, SOFTMAX_PLANES] {
        let q: Vec<(&str, f64)> = [("64Ki", MID), ("16Mi", BIG)]
            .into_iter()
            .filter_map(|(at, n)| {
                Some((at, rows.get(name, auto, n)?.ns / rows.get(c, auto, n)?.ns))
            })
            .collect();
        if q.is_empty() {
            continue;
        }
        let shown: Vec<String> = q.iter().map(|(at, x)| format!("{x:.2} at {at}")).collect();
        println!(
            "  {name} <= 1.5x GHM-C dense per element: {}  {}",
            shown.join(", "),
            verdict(q.iter().all(|&(_, x)| x <= 1.5))
        );
    }
    // Per element against the contiguous row, and against its own floor: the kernel / floor
    // ratio over the contiguous row's (the same traffic, gaps and all, in both halves).
    println!("  views within 10% of contiguous per element, at 64Ki and 16Mi (or 1Mi):");
    // A row without 16Mi (its buffers would be too large) is read at 1Mi instead, far outside
    // the caches too, and says so.
    for name in Spread::KINDS.map(|k| k.name) {
        let ratios = |n: usize| {
            let (v, k) = (rows.get(name, auto, n)?, rows.get(c, auto, n)?);
            Some((v.ns / k.ns, v.ratio / k.ratio))
        };
        let out = [("16Mi", BIG), ("1Mi", 1 << 20)]
            .into_iter()
            .find_map(|(label, n)| Some((label, ratios(n)?)));
        let q: Vec<(&str, (f64, f64))> = ratios(MID)
            .map(|r| ("64Ki", r))
            .into_iter()
            .chain(out)
            .collect();
        if q.is_empty() {
            continue;
        }
        let show = |f: fn(&(f64, f64)) -> f64| {
            q.iter()
                .map(|(label, x)| format!("{label} {:.3}", f(x)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let raw = q.iter().all(|(_, x)| x.0 <= 1.1);
        let own = q.iter().all(|(_, x)| x.1 <= 1.1);
        println!(
            "    {:<29} {}; over its own floor {}  {}",
            name,
            show(|x| x.0),
            show(|x| x.1),
            match (raw, own) {
                (true, _) => "met",
                (false, true) => "met over its own floor (the rest is the layout's traffic)",
                (false, false) => "not met",
            }
        );
    }
    let native = if cfg!(target_feature = "avx512f") {
        "AVX-512F"
    } else if cfg!(target_feature = "avx2") {
        "AVX2"
    } else {
        ""
    };
    let head = "  plain build within 10% of -C target-cpu=native:";
    if native.is_empty() {
        println!("{head} this build is plain (no AVX2 or AVX-512");
        println!(
            "  at compile time); compare with the same report built with \
             RUSTFLAGS=\"-C target-cpu=native\""
        );
    } else {
        println!("{head} this build has {native} at compile");
        println!("  time; compare with the same report from a plain build");
    }
}
