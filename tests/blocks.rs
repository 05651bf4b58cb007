//! Blocked views against the contiguous path: a batch read and written in place through
//! `Blocks` gives, on every backend, the gradients, per-element losses, statistics and EMA of
//! the same elements packed into contiguous buffers, bit for bit (the loss within 1 ulp: its
//! f64 lanes are summed in another order). Elements between the blocks are never read (they
//! hold NaN, which would fail the input check) and never written (they hold a sentinel).

mod common;

use common::Rng;
use ghm::{
    Backend, Blocks, Dense, Ema, Error, GhmC, GhmR, Hist, Input, Labels, Layout, Out, Reduction,
    Stats, View,
};

/// What the gaps of every output buffer hold, and must still hold after a call.
const SENTINEL: f32 = 12345.0;

/// A random geometry: `count` blocks of `len`, each array with its own offset and a stride
/// of at least its block (`per` elements per block for predictions and outputs).
fn geometry(rng: &mut Rng, count: usize, len: usize, per: usize) -> Blocks {
    let mut view = |block: usize| View::new(rng.below(5), block + rng.below(4));
    Blocks {
        count,
        len,
        pred: view(len * per),
        target: view(len),
        weight: view(len),
        grad: view(len * per),
        loss_elems: view(len * per),
    }
}

/// A buffer holding `src` (`count` blocks of `block` values, packed) through `view`, `fill`
/// everywhere else.
fn spread<T: Copy>(src: &[T], view: View, count: usize, block: usize, fill: T) -> Vec<T> {
    let need = if count * block == 0 {
        view.offset
    } else {
        view.offset + (count - 1) * view.stride + block
    };
    let mut out = vec![fill; need];
    for b in 0..count {
        let at = view.offset + b * view.stride;
        out[at..at + block].copy_from_slice(&src[b * block..(b + 1) * block]);
    }
    out
}

/// The blocks of `buf` through `view`, packed; panics if a value between them is not the
/// sentinel.
fn gather(buf: &[f32], view: View, count: usize, block: usize) -> Vec<f32> {
    let mut inside = vec![false; buf.len()];
    let mut out = Vec::new();
    for b in 0..count {
        let at = view.offset + b * view.stride;
        out.extend_from_slice(&buf[at..at + block]);
        inside[at..at + block].iter_mut().for_each(|i| *i = true);
    }
    for (i, (&v, &ins)) in buf.iter().zip(&inside).enumerate() {
        assert!(ins || v == SENTINEL, "gap element {i} written: {v}");
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

/// The outputs of one call, packed.
#[derive(Debug)]
struct Got {
    loss: f32,
    grad: Vec<f32>,
    loss_elems: Option<Vec<f32>>,
    stats: Stats,
    ema: Ema,
}

fn same(what: &str, got: &Got, want: &Got) {
    assert!(
        ulps(got.loss, want.loss) <= 1,
        "{what}: loss {} vs {}",
        got.loss,
        want.loss
    );
    assert_eq!(bits(&got.grad), bits(&want.grad), "{what}: grad");
    assert_eq!(
        got.loss_elems.as_deref().map(bits),
        want.loss_elems.as_deref().map(bits),
        "{what}: loss_elems"
    );
    assert_eq!(got.stats, want.stats, "{what}: stats");
    assert_eq!(got.ema, want.ema, "{what}: ema");
}

/// Lengths around every vector width (4, 8, 16), and 0.
const LENS: [usize; 14] = [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 33, 129, 300];

/// The loss call a test runs: GHM-C or GHM-R, one config.
#[derive(Clone, Copy)]
enum Loss {
    C(GhmC),
    R(GhmR),
}

impl Loss {
    fn bins(&self) -> u32 {
        match self {
            Loss::C(c) => c.bins,
            Loss::R(r) => r.bins,
        }
    }
    fn accumulate(&self) -> bool {
        match self {
            Loss::C(c) => c.accumulate,
            Loss::R(r) => r.accumulate,
        }
    }
    fn call(&self, ema: &mut Ema, d: &Dense<'_>, out: Out<'_>) -> Result<f32, Error> {
        match self {
            Loss::C(c) => c.loss_grad(Some(ema), d, out),
            Loss::R(r) => r.loss_grad(Some(ema), d, out),
        }
    }
}

/// Dense inputs of `n` elements for `loss`, with a few label weights 0.
fn dense_inputs(rng: &mut Rng, loss: &Loss, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut x, t) = common::detector_batch(rng, n, 0.1, false);
    if let Loss::C(GhmC {
        input: Input::Probs,
        ..
    }) = loss
    {
        x.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
    }
    let t = match loss {
        Loss::C(_) => t,
        Loss::R(_) => (0..n).map(|_| rng.normal() as f32 * 0.3).collect(),
    };
    let w = (0..n)
        .map(|_| if rng.chance(0.1) { 0.0 } else { 1.0 })
        .collect();
    (x, t, w)
}

/// One dense call through random views against the same call on packed buffers, two
/// batches so that the EMA carries over.
fn dense_case(rng: &mut Rng, loss: Loss, count: usize, len: usize, with_le: bool) {
    let g = geometry(rng, count, len, 1);
    let n = count * len;
    let bins = loss.bins();
    let (mut ema_b, mut ema_c) = (Ema::new(bins).unwrap(), Ema::new(bins).unwrap());
    for batch in 0..2 {
        let (x, t, w) = dense_inputs(rng, &loss, n);
        let start: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        // Packed.
        let mut grad = start.clone();
        let mut le = vec![0.0; n];
        let mut stats = Stats::default();
        let out = Out {
            grad: Some(&mut grad),
            loss_elems: with_le.then_some(&mut le[..]),
            stats: Some(&mut stats),
        };
        let dense = Dense::new(&x, &t).label_weight(&w);
        let l = loss.call(&mut ema_c, &dense, out).unwrap();
        let want = Got {
            loss: l,
            grad,
            loss_elems: with_le.then_some(le),
            stats,
            ema: ema_c,
        };
        // Through the views, NaN between the input blocks.
        let xs = spread(&x, g.pred, count, len, f32::NAN);
        let ts = spread(&t, g.target, count, len, f32::NAN);
        let ws = spread(&w, g.weight, count, len, f32::NAN);
        let mut gs = spread(&start, g.grad, count, len, SENTINEL);
        let mut ls = spread(&vec![0.0; n], g.loss_elems, count, len, SENTINEL);
        let mut stats = Stats::default();
        let out = Out {
            grad: Some(&mut gs),
            loss_elems: with_le.then_some(&mut ls[..]),
            stats: Some(&mut stats),
        };
        let dense = Dense::new(&xs, &ts).label_weight(&ws).blocks(g);
        let l = loss.call(&mut ema_b, &dense, out).unwrap();
        let got = Got {
            loss: l,
            grad: gather(&gs, g.grad, count, len),
            loss_elems: with_le.then(|| gather(&ls, g.loss_elems, count, len)),
            stats,
            ema: ema_b,
        };
        let what = format!(
            "count {count} len {len} batch {batch} acc {}",
            loss.accumulate()
        );
        same(&what, &got, &want);
    }
}

fn backends() -> Vec<Backend> {
    Backend::all_available().collect()
}

/// The views tests' GHM-C: 30 bins, momentum 0.75, on `backend`.
fn ghm_c(backend: Backend) -> GhmC {
    GhmC {
        bins: 30,
        momentum: 0.75,
        backend: Some(backend),
        ..GhmC::default()
    }
}

#[test]
fn dense_views_match_the_contiguous_path() {
    let mut rng = Rng(0xb10c);
    for backend in backends() {
        for (i, &len) in LENS.iter().enumerate() {
            let count = 1 + i % 4;
            let c = ghm_c(backend);
            // Gradients only (the stored path), and every other output combination.
            dense_case(&mut rng, Loss::C(c), count, len, false);
            let sum = GhmC {
                reduction: Reduction::Sum,
                accumulate: true,
                grad_scale: -1.0,
                input: Input::Probs,
                ..c
            };
            dense_case(&mut rng, Loss::C(sum), count, len, true);
            let skip = GhmC {
                skip_bad: true,
                ..c
            };
            dense_case(&mut rng, Loss::C(skip), count, len, false);
            let r = GhmR {
                momentum: 0.7,
                backend: Some(backend),
                ..GhmR::default()
            };
            dense_case(&mut rng, Loss::R(r), count, len, i % 2 == 0);
        }
    }
}

/// Class-index labels through views (`len` anchors per block, `C` classes) against dense
/// one-hot targets of the packed blocks.
fn labels_case(rng: &mut Rng, c: GhmC, count: usize, len: usize, classes: usize, layout: Layout) {
    let g = geometry(rng, count, len, classes);
    let per = len * classes;
    let n = count * per;
    let (x, _) = common::detector_batch(rng, n, 0.1, false);
    let labels: Vec<i32> = (0..count * len)
        .map(|_| rng.below(classes + 2) as i32 - 1)
        .collect();
    let aw: Vec<f32> = (0..count * len)
        .map(|_| if rng.chance(0.3) { 0.0 } else { 1.0 })
        .collect();
    // The packed dense equivalent: block by block, in the block's layout.
    let (mut t, mut w) = (vec![0.0; n], vec![0.0; n]);
    for b in 0..count {
        for a in 0..len {
            for k in 0..classes {
                let i = b * per
                    + match layout {
                        Layout::AnchorMajor => a * classes + k,
                        Layout::ClassMajor => k * len + a,
                    };
                t[i] = (labels[b * len + a] == k as i32) as u32 as f32;
                w[i] = aw[b * len + a];
            }
        }
    }
    let mut grad = vec![0.0; n];
    let mut le = vec![0.0; n];
    let mut stats = Stats::default();
    let mut ema = Ema::new(c.bins).unwrap();
    let out = Out {
        grad: Some(&mut grad),
        loss_elems: Some(&mut le),
        stats: Some(&mut stats),
    };
    let l = c
        .loss_grad(Some(&mut ema), &Dense::new(&x, &t).label_weight(&w), out)
        .unwrap();
    let want = Got {
        loss: l,
        grad,
        loss_elems: Some(le),
        stats,
        ema,
    };
    let xs = spread(&x, g.pred, count, per, f32::NAN);
    // Gaps in the labels hold a class, in the weights NaN: either would change the result.
    let ls = spread(&labels, g.target, count, len, 0);
    let ws = spread(&aw, g.weight, count, len, f32::NAN);
    let mut gs = spread(&vec![0.0; n], g.grad, count, per, SENTINEL);
    let mut les = spread(&vec![0.0; n], g.loss_elems, count, per, SENTINEL);
    let mut stats = Stats::default();
    let mut ema = Ema::new(c.bins).unwrap();
    let input = Labels::new(&xs, &ls, classes, layout)
        .anchor_weight(&ws)
        .blocks(g);
    let out = Out {
        grad: Some(&mut gs),
        loss_elems: Some(&mut les),
        stats: Some(&mut stats),
    };
    let l = c.loss_grad_labels(Some(&mut ema), &input, out).unwrap();
    let got = Got {
        loss: l,
        grad: gather(&gs, g.grad, count, per),
        loss_elems: Some(gather(&les, g.loss_elems, count, per)),
        stats,
        ema,
    };
    same(
        &format!("labels {layout:?} count {count} len {len} C {classes}"),
        &got,
        &want,
    );
}

#[test]
fn label_views_match_dense_one_hot() {
    let mut rng = Rng(0x1abe1);
    for backend in backends() {
        let c = ghm_c(backend);
        for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
            for &classes in &[1usize, 3, 16, 20] {
                for (i, &len) in LENS.iter().enumerate() {
                    labels_case(&mut rng, c, 1 + i % 3, len, classes, layout);
                }
            }
        }
    }
}

/// Batches of 256Ki elements or more prefetch ahead: short blocks whole, a few blocks ahead,
/// and blocks longer than the prefetch distance (1024 elements) within themselves. Neither
/// may change a bit, nor read past a buffer (the last blocks have no blocks ahead of them).
#[test]
fn large_batches_through_views_match_the_contiguous_path() {
    let mut rng = Rng(0x1a49e);
    for backend in backends() {
        let c = ghm_c(backend);
        // Darknet's objectness (13x13) and a block longer than the distance, each just over
        // 256Ki elements in all.
        for (count, len) in [(1552, 169), (173, 1517)] {
            assert!(count * len >= 1 << 18);
            dense_case(&mut rng, Loss::C(c), count, len, true);
        }
        let (count, anchors, classes) = (195, 169, 8);
        assert!(count * anchors * classes >= 1 << 18);
        for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
            labels_case(&mut rng, c, count, anchors, classes, layout);
        }
    }
}

/// The phased API over a blocked batch cut into ranges of blocks (each a view with its
/// offsets moved) gives the one call's gradients, bit for bit.
#[test]
fn phased_views_over_block_ranges_match_the_one_call() {
    let mut rng = Rng(0xfa5e);
    for backend in backends() {
        let c = ghm_c(backend);
        let (count, len) = (7, 45);
        let g = geometry(&mut rng, count, len, 1);
        let (x, t, w) = dense_inputs(&mut rng, &Loss::C(c), count * len);
        let xs = spread(&x, g.pred, count, len, f32::NAN);
        let ts = spread(&t, g.target, count, len, f32::NAN);
        let ws = spread(&w, g.weight, count, len, f32::NAN);
        let zeros = vec![0.0; count * len];
        let mut one = spread(&zeros, g.grad, count, len, SENTINEL);
        let mut ema = Ema::new(30).unwrap();
        let whole = Dense::new(&xs, &ts).label_weight(&ws).blocks(g);
        c.loss_grad(Some(&mut ema), &whole, Out::grad(&mut one))
            .unwrap();
        // Blocks 0..3 and 3..7 as two chunks.
        let part = |first: usize, n: usize| {
            let mv = |v: View| View::new(v.offset + first * v.stride, v.stride);
            Blocks {
                count: n,
                pred: mv(g.pred),
                target: mv(g.target),
                weight: mv(g.weight),
                grad: mv(g.grad),
                loss_elems: mv(g.loss_elems),
                ..g
            }
        };
        let chunks = [part(0, 3), part(3, 4)];
        let mut hist = Hist::new(30).unwrap();
        for b in chunks {
            let d = Dense::new(&xs, &ts).label_weight(&ws).blocks(b);
            c.accumulate(&d, &mut hist).unwrap();
        }
        let mut ema = Ema::new(30).unwrap();
        let weights = c.finalize(Some(&mut ema), &hist).unwrap();
        let mut phased = spread(&zeros, g.grad, count, len, SENTINEL);
        for b in chunks.iter().rev() {
            let d = Dense::new(&xs, &ts).label_weight(&ws).blocks(*b);
            c.apply(&weights, &d, Some(&mut phased), None).unwrap();
        }
        assert_eq!(bits(&one), bits(&phased), "{backend:?}");
    }
}

/// Shapes and overlaps of views: a buffer shorter than its view's extent is
/// `Error::Shape`, an output view whose blocks overlap is `Error::Alias`, an overflowing
/// extent is `Error::Shape`; nothing is written in any of them.
#[test]
fn view_errors_write_nothing() {
    let c = GhmC::default();
    let (count, len) = (3, 10);
    let g = Blocks::uniform(count, len, View::new(2, 12));
    let x = vec![0.5f32; 2 + 2 * 12 + 10];
    let t = vec![1.0f32; x.len()];
    let mut grad = vec![SENTINEL; x.len()];
    let d = Dense::new(&x, &t).blocks(g);
    assert!(c.loss_grad(None, &d, Out::grad(&mut grad)).is_ok());
    grad.fill(SENTINEL);
    // One element short, in each input and in the output.
    let short = &x[..x.len() - 1];
    for (input, out_len) in [
        (Dense::new(short, &t).blocks(g), x.len()),
        (Dense::new(&x, &t[..x.len() - 1]).blocks(g), x.len()),
        (Dense::new(&x, &t).label_weight(short).blocks(g), x.len()),
        (Dense::new(&x, &t).blocks(g), x.len() - 1),
    ] {
        let r = c.loss_grad(None, &input, Out::grad(&mut grad[..out_len]));
        assert_eq!(r, Err(Error::Shape));
    }
    // Output blocks 12 apart holding 13 elements each overlap.
    let overlapping = Blocks {
        len: 13,
        ..Blocks::uniform(count, 13, View::new(0, 13))
    };
    let bad = Blocks {
        grad: View::new(0, 12),
        ..overlapping
    };
    let big = vec![0.5f32; 64];
    let tb = vec![1.0f32; 64];
    let d = Dense::new(&big, &tb).blocks(bad);
    let r = c.loss_grad(None, &d, Out::grad(&mut grad));
    assert_eq!(r, Err(Error::Alias));
    // An extent past usize::MAX.
    let huge = Blocks::uniform(2, 1, View::new(0, usize::MAX));
    let d = Dense::new(&big, &tb).blocks(huge);
    assert_eq!(
        c.loss_grad(None, &d, Out::grad(&mut grad)),
        Err(Error::Shape)
    );
    assert!(grad.iter().all(|&v| v == SENTINEL));
}

/// The README's Darknet recipe is the code that the YOLO-style example runs in CI: every
/// line of its C block is in `ffi-tests/examples/yolo_train.c`, in order.
#[test]
fn readme_darknet_recipe_is_the_example_code() {
    let heading = "### Darknet's YOLO layer, in place";
    let block = common::readme_recipe(heading, "ffi-tests/examples/yolo_train.c");
    assert!(block.lines().count() > 30, "the recipe is the whole layer");
}

// ---------------------------------------------------------------------------------------------
// The trainer's scale: gradient-mass normalisation and the EMA's warm start.

/// Sum of `|x|` over the valid elements, in f64.
fn mass(v: &[f32], w: &[f32]) -> f64 {
    v.iter()
        .zip(w)
        .filter(|(_, &w)| w > 0.0)
        .map(|(g, _)| g.abs() as f64)
        .sum()
}

/// With `Normalize::GradMass` the batch's total `|grad|` is the plain loss's (BCE: `|p - t|`,
/// ASL1: `|d| / sqrt(d^2 + mu^2)`) under the same reduction, on every backend; without it,
/// the detector-like batch's is several times larger (so the test can tell them apart).
#[test]
fn grad_mass_normalisation_gives_the_plain_loss_mass() {
    let mut rng = Rng(0x6a55);
    let n = 20_000;
    for backend in backends() {
        for reduction in [Reduction::Sum, Reduction::Mean] {
            let c = GhmC {
                bins: 30,
                momentum: 0.75,
                reduction,
                backend: Some(backend),
                normalize: ghm::Normalize::GradMass,
                ..GhmC::default()
            };
            let (x, t, w) = dense_inputs(&mut rng, &Loss::C(c), n);
            let valid = w.iter().filter(|&&w| w > 0.0).count() as f64;
            let per = if reduction == Reduction::Mean {
                1.0 / (valid + f32::EPSILON as f64)
            } else {
                1.0
            };
            let plain: f64 = x
                .iter()
                .zip(&t)
                .zip(&w)
                .filter(|(_, &w)| w > 0.0)
                .map(|((&x, &t), _)| (1.0 / (1.0 + (-(x as f64)).exp()) - t as f64).abs())
                .sum::<f64>()
                * per;
            let mut ema = Ema::new(30).unwrap();
            for batch in 0..2 {
                let mut grad = vec![0.0; n];
                let d = Dense::new(&x, &t).label_weight(&w);
                c.loss_grad(Some(&mut ema), &d, Out::grad(&mut grad))
                    .unwrap();
                let got = mass(&grad, &w);
                assert!(
                    (got - plain).abs() <= 1e-5 * plain,
                    "{backend:?} {reduction:?} batch {batch}: mass {got} vs plain {plain}"
                );
                let raw = GhmC {
                    normalize: ghm::Normalize::None,
                    ..c
                };
                let mut g2 = vec![0.0; n];
                let mut e2 = Ema::new(30).unwrap();
                raw.loss_grad(Some(&mut e2), &d, Out::grad(&mut g2))
                    .unwrap();
                assert!(mass(&g2, &w) > 3.0 * plain, "raw mass {}", mass(&g2, &w));
            }
        }
        // GHM-R against ASL1's gradient mass.
        let r = GhmR {
            backend: Some(backend),
            normalize: ghm::Normalize::GradMass,
            reduction: Reduction::Sum,
            ..GhmR::default()
        };
        let (x, t, w) = dense_inputs(&mut rng, &Loss::R(r), n);
        let plain: f64 = x
            .iter()
            .zip(&t)
            .zip(&w)
            .filter(|(_, &w)| w > 0.0)
            .map(|((&x, &t), _)| {
                let d = x as f64 - t as f64;
                d.abs() / (d * d + 0.02f64 * 0.02).sqrt()
            })
            .sum();
        let mut grad = vec![0.0; n];
        r.loss_grad(
            None,
            &Dense::new(&x, &t).label_weight(&w),
            Out::grad(&mut grad),
        )
        .unwrap();
        let got = mass(&grad, &w);
        assert!(
            (got - plain).abs() <= 1e-5 * plain,
            "GHM-R {got} vs {plain}"
        );
    }
}

/// Normalised weights are mmdet's times one factor: the loss, its elements and the
/// statistics' weights carry it too, and the phased API (any chunking) gives the one call's
/// gradients bit for bit.
#[test]
fn normalised_weights_are_one_factor_and_chunk_exactly() {
    let mut rng = Rng(0x5ca1e);
    let n = 9_000;
    for backend in backends() {
        let c = GhmC {
            bins: 20,
            momentum: 0.0,
            backend: Some(backend),
            normalize: ghm::Normalize::GradMass,
            ..GhmC::default()
        };
        let raw = GhmC {
            normalize: ghm::Normalize::None,
            ..c
        };
        let (x, t, w) = dense_inputs(&mut rng, &Loss::C(c), n);
        let d = Dense::new(&x, &t).label_weight(&w);
        let (mut g, mut le, mut st) = (vec![0.0; n], vec![0.0; n], Stats::default());
        let out = Out {
            grad: Some(&mut g),
            loss_elems: Some(&mut le),
            stats: Some(&mut st),
        };
        let loss = c.loss_grad(None, &d, out).unwrap();
        let (mut g0, mut le0, mut st0) = (vec![0.0; n], vec![0.0; n], Stats::default());
        let out = Out {
            grad: Some(&mut g0),
            loss_elems: Some(&mut le0),
            stats: Some(&mut st0),
        };
        let loss0 = raw.loss_grad(None, &d, out).unwrap();
        let ratios: Vec<f64> = (0..20)
            .filter(|&k| st0.counts[k] > 0)
            .map(|k| st.weights[k] as f64 / st0.weights[k] as f64)
            .collect();
        let s = ratios[0];
        assert!(s < 0.9, "the factor shrinks this batch's weights: {s}");
        assert!(
            ratios.iter().all(|r| (r / s - 1.0).abs() < 2e-7),
            "{ratios:?}"
        );
        assert!(
            ((loss / loss0) as f64 / s - 1.0).abs() < 1e-5,
            "loss {loss} vs {loss0}"
        );
        // MEAN: the loss is the elements' sum over `tot + eps`.
        let sum_le: f64 = le.iter().map(|&v| v as f64).sum();
        let mean = sum_le / (st.tot + f32::EPSILON as f64);
        assert!(
            (mean / loss as f64 - 1.0).abs() < 1e-5,
            "loss elements {mean} vs {loss}"
        );
        // Phased, in uneven chunks accumulated out of order.
        let cuts = [0, 17, 4000, 4001, n];
        let mut hist = Hist::new(20).unwrap();
        for win in cuts.windows(2).rev() {
            let r = win[0]..win[1];
            let part = Dense::new(&x[r.clone()], &t[r.clone()]).label_weight(&w[r]);
            c.accumulate(&part, &mut hist).unwrap();
        }
        let weights = c.finalize(None, &hist).unwrap();
        let mut gp = vec![0.0; n];
        for win in cuts.windows(2) {
            let r = win[0]..win[1];
            let part = Dense::new(&x[r.clone()], &t[r.clone()]).label_weight(&w[r.clone()]);
            c.apply(&weights, &part, Some(&mut gp[r]), None).unwrap();
        }
        assert_eq!(bits(&g), bits(&gp), "{backend:?}: phased != one call");
        assert!(ulps(weights.loss as f32, loss) <= 1);
    }
}

/// `EmaStart::FirstCount`: the first batch is weighted as without the EMA (its average is
/// the counts); a bin first seen later starts from its own count; bins seen before blend as
/// mmdet's. The default (`Zero`) starts from `(1 - momentum) * count`.
#[test]
fn ema_first_count_starts_from_the_counts() {
    let mut rng = Rng(0xe3a);
    let n = 3000;
    let warm = GhmC {
        bins: 10,
        momentum: 0.75,
        ema_start: ghm::EmaStart::FirstCount,
        ..GhmC::default()
    };
    let (x, t, _) = dense_inputs(&mut rng, &Loss::C(warm), n);
    // Batch 1: only easy elements (bins 0 and 1 at most); batch 2: all of them.
    let easy: Vec<usize> = (0..n)
        .filter(|&i| {
            let p = 1.0 / (1.0 + (-x[i]).exp());
            (p - t[i]).abs() < 0.15
        })
        .collect();
    let (x1, t1): (Vec<f32>, Vec<f32>) = easy.iter().map(|&i| (x[i], t[i])).unzip();
    let mut ema = Ema::new(10).unwrap();
    let (mut s1, mut s0) = (Stats::default(), Stats::default());
    let mut g = vec![0.0; x1.len()];
    let out = Out {
        grad: Some(&mut g),
        loss_elems: None,
        stats: Some(&mut s1),
    };
    warm.loss_grad(Some(&mut ema), &Dense::new(&x1, &t1), out)
        .unwrap();
    let plain = GhmC {
        momentum: 0.0,
        ..warm
    };
    let mut g0 = vec![0.0; x1.len()];
    let out = Out {
        grad: Some(&mut g0),
        loss_elems: None,
        stats: Some(&mut s0),
    };
    plain.loss_grad(None, &Dense::new(&x1, &t1), out).unwrap();
    assert_eq!(bits(&g), bits(&g0), "first batch = no EMA");
    for k in 0..10 {
        assert_eq!(ema.acc_sum[k], s1.counts[k] as f32, "bin {k}");
    }
    let seen = ema;
    let mut s2 = Stats::default();
    let mut g2 = vec![0.0; n];
    let out = Out {
        grad: Some(&mut g2),
        loss_elems: None,
        stats: Some(&mut s2),
    };
    warm.loss_grad(Some(&mut ema), &Dense::new(&x, &t), out)
        .unwrap();
    let mut fresh = 0;
    for k in 0..10 {
        let c = s2.counts[k] as f64;
        let want = if seen.acc_sum[k] == 0.0 {
            fresh += (c > 0.0) as usize;
            c as f32
        } else if c > 0.0 {
            (0.75 * seen.acc_sum[k] as f64 + 0.25 * c) as f32
        } else {
            seen.acc_sum[k]
        };
        assert_eq!(ema.acc_sum[k], want, "bin {k}");
    }
    assert!(fresh >= 3, "bins first seen in batch 2: {fresh}");
    // mmdet's start.
    let zero = GhmC {
        ema_start: ghm::EmaStart::Zero,
        ..warm
    };
    let mut ez = Ema::new(10).unwrap();
    zero.loss_grad(Some(&mut ez), &Dense::new(&x1, &t1), Out::grad(&mut g))
        .unwrap();
    for k in 0..10 {
        assert_eq!(
            ez.acc_sum[k],
            (0.25 * s1.counts[k] as f64) as f32,
            "bin {k}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Counts beyond 32 bits.

/// 2^31 + 7 elements in one call, exactly counted: one block of 5895 elements read 364289
/// times through input views of stride 0 (45 * 131 * 364289 = 2^31 + 7), so no 8 GiB buffer
/// is needed. The histogram must be the single block's times the block count, bin by bin, on
/// the backend in use (the vector kernel, the same code on every vector backend, keeps
/// per-lane 32-bit cells and moves them into 64-bit totals every 2^31 elements; the scalar
/// path counts in 64 bits throughout). One backend, for time: about 10 s on AVX-512, where
/// the three x86 backends took 70 s. x86_64 only: under qemu (the aarch64 leg) 2^31 elements
/// would take hours.
#[test]
#[cfg(target_arch = "x86_64")]
fn counts_beyond_32_bits_are_exact() {
    let (len, count) = (5895usize, 364_289usize);
    assert_eq!((len * count) as u64, (1u64 << 31) + 7);
    let mut rng = Rng(31);
    let (pred, target) = common::detector_batch(&mut rng, len, 0.05, false);
    let reuse = View::new(0, 0);
    let blocks = Blocks {
        count,
        len,
        pred: reuse,
        target: reuse,
        weight: reuse,
        grad: View::packed(len),
        loss_elems: View::packed(len),
    };
    let backend = Backend::active();
    let cfg = GhmC {
        backend: Some(backend),
        ..GhmC::default()
    };
    let mut one = Hist::new(cfg.bins).unwrap();
    cfg.accumulate(&Dense::new(&pred, &target), &mut one)
        .unwrap();
    let mut all = Hist::new(cfg.bins).unwrap();
    let input = Dense::new(&pred, &target).blocks(blocks);
    cfg.accumulate(&input, &mut all).unwrap();
    for k in 0..cfg.bins as usize {
        assert_eq!(
            all.counts[k],
            one.counts[k] * count as u64,
            "{backend:?} bin {k}"
        );
    }
    assert_eq!(all.tot, one.tot * count as f64, "{backend:?} tot");
    assert_eq!(all.counts.iter().sum::<u64>(), (1u64 << 31) + 7);
}
