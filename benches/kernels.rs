//! Criterion benchmarks: GHM-C (30 bins, momentum 0.75; dense targets, with and without
//! `skip_bad`, and class-index labels), GHM-R (10 bins, momentum 0.7) and softmax
//! cross-entropy GHM (80 classes, both layouts), one call (loss and gradient), on every
//! backend this machine runs, at N = 4Ki, 64Ki, 1Mi and 16Mi elements (logits), reported as
//! elements per second.
//!
//! `cargo bench --bench kernels` (filter with e.g. `-- avx512`). For the side-by-side table
//! with the streaming floor, see `examples/bench_report.rs`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ghm::{Backend, Dense, Ema, GhmC, GhmR, GhmSoftmax, Labels, Layout, Out, SoftmaxOut};

const SIZES: [usize; 4] = [4 << 10, 64 << 10, 1 << 20, 16 << 20];
const CLASSES: usize = 16;
/// Classes of the softmax benchmark.
const SOFTMAX_C: usize = 80;

/// Detector-like data (as in the report): ~1% positives, easy negatives, a few confident
/// outliers; regression deltas with 1% large errors.
struct Data {
    logits: Vec<f32>,
    targets: Vec<f32>,
    labels: Vec<i32>,
    reg_pred: Vec<f32>,
    reg_target: Vec<f32>,
}

fn data(n: usize) -> Data {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut unit = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut d = Data {
        logits: Vec::with_capacity(n),
        targets: Vec::with_capacity(n),
        labels: Vec::with_capacity(n / CLASSES),
        reg_pred: Vec::with_capacity(n),
        reg_target: Vec::with_capacity(n),
    };
    for _ in 0..n {
        let pos = unit() < 0.01;
        let noise = unit() + unit() + unit() - 1.5; // roughly normal
        let x = if unit() < 0.003 {
            if pos {
                -6.0
            } else {
                6.0
            }
        } else if pos {
            1.0 + 2.0 * noise
        } else {
            -4.5 + 1.5 * noise
        };
        d.logits.push(x as f32);
        d.targets.push(pos as u32 as f32);
        let t = 2.0 * noise;
        let err = if unit() < 0.01 { 3.0 } else { 0.03 } * (unit() - 0.5);
        d.reg_target.push(t as f32);
        d.reg_pred.push((t + err) as f32);
    }
    for _ in 0..n / CLASSES {
        let l = if unit() < 0.05 {
            (unit() * CLASSES as f64) as i32
        } else {
            CLASSES as i32
        };
        d.labels.push(l);
    }
    d
}

fn kernels(c: &mut Criterion) {
    for &n in &SIZES {
        let d = data(n);
        let mut grad = vec![0.0f32; n];
        for backend in Backend::all_available() {
            let mut g = c.benchmark_group(format!("ghmc_dense/{}", backend.name()));
            g.throughput(Throughput::Elements(n as u64));
            let cfg = GhmC {
                bins: 30,
                momentum: 0.75,
                backend: Some(backend),
                ..GhmC::default()
            };
            let mut ema = Ema::new(30).unwrap();
            let input = Dense::new(&d.logits, &d.targets);
            g.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| black_box(cfg.loss_grad(Some(&mut ema), &input, Out::grad(&mut grad))))
            });
            g.finish();

            // The same with skip_bad: the one call stores dl/dx in pass 1 at every size.
            let mut g = c.benchmark_group(format!("ghmc_dense_skip_bad/{}", backend.name()));
            g.throughput(Throughput::Elements(n as u64));
            let skip = GhmC {
                skip_bad: true,
                ..cfg
            };
            g.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| black_box(skip.loss_grad(Some(&mut ema), &input, Out::grad(&mut grad))))
            });
            g.finish();

            let mut g = c.benchmark_group(format!("ghmc_labels/{}", backend.name()));
            g.throughput(Throughput::Elements((d.labels.len() * CLASSES) as u64));
            let m = d.labels.len() * CLASSES;
            let input = Labels::new(&d.logits[..m], &d.labels, CLASSES, Layout::AnchorMajor);
            g.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| {
                    black_box(cfg.loss_grad_labels(
                        Some(&mut ema),
                        &input,
                        Out::grad(&mut grad[..m]),
                    ))
                })
            });
            g.finish();

            let mut g = c.benchmark_group(format!("ghmr/{}", backend.name()));
            g.throughput(Throughput::Elements(n as u64));
            let cfg = GhmR {
                bins: 10,
                momentum: 0.7,
                backend: Some(backend),
                ..GhmR::default()
            };
            let mut ema = Ema::new(10).unwrap();
            let input = Dense::new(&d.reg_pred, &d.reg_target);
            g.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| black_box(cfg.loss_grad(Some(&mut ema), &input, Out::grad(&mut grad))))
            });
            g.finish();

            // Softmax: the logits as n / 80 samples of 80 classes, in each layout.
            let samples = n / SOFTMAX_C;
            let m = samples * SOFTMAX_C;
            let labels: Vec<i32> = (0..samples).map(|i| (i * 37 % SOFTMAX_C) as i32).collect();
            let mut planes = vec![0.0f32; m];
            for a in 0..samples {
                for k in 0..SOFTMAX_C {
                    planes[k * samples + a] = d.logits[a * SOFTMAX_C + k];
                }
            }
            let cfg = GhmSoftmax {
                momentum: 0.75,
                backend: Some(backend),
                ..GhmSoftmax::default()
            };
            let mut ema = Ema::new(10).unwrap();
            for (name, logits, layout) in [
                ("softmax_rows", &d.logits[..m], Layout::AnchorMajor),
                ("softmax_planes", &planes[..], Layout::ClassMajor),
            ] {
                let mut g = c.benchmark_group(format!("{name}/{}", backend.name()));
                g.throughput(Throughput::Elements(m as u64));
                let input = Labels::new(logits, &labels, SOFTMAX_C, layout);
                g.bench_function(BenchmarkId::from_parameter(n), |b| {
                    b.iter(|| {
                        let out = SoftmaxOut::grad(&mut grad[..m]);
                        black_box(cfg.loss_grad(Some(&mut ema), &input, out))
                    })
                });
                g.finish();
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = kernels
}
criterion_main!(benches);
