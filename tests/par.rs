//! The rayon one-call convenience (feature `rayon`): bit-identical gradients, loss within
//! 1 ulp, identical EMA and statistics, against the serial one call.
#![cfg(feature = "rayon")]

mod common;

use common::*;
use ghm::{Backend, Dense, Ema, GhmC, GhmR, Labels, Layout, Out, Stats};

fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

#[test]
fn parallel_equals_serial() {
    let mut r = Rng(9);
    for &n in &[1000usize, 65_536, 65_537, 300_001] {
        let (x, t) = detector_batch(&mut r, n, 0.02, false);
        let lw = label_weights(&mut r, n, 0.05, true);
        for backend in Backend::all_available() {
            let c = GhmC {
                bins: 30,
                momentum: 0.75,
                backend: Some(backend),
                ..GhmC::default()
            };
            let (mut e1, mut e2) = (Ema::new(30).unwrap(), Ema::new(30).unwrap());
            let (mut g1, mut g2) = (vec![0.0f32; n], vec![0.0f32; n]);
            let (mut s1, mut s2) = (Stats::default(), Stats::default());
            let input = Dense::new(&x, &t).label_weight(&lw);
            for _ in 0..2 {
                let l1 = c
                    .loss_grad(
                        Some(&mut e1),
                        &input,
                        Out {
                            grad: Some(&mut g1),
                            loss_elems: None,
                            stats: Some(&mut s1),
                        },
                    )
                    .unwrap();
                let l2 = c
                    .loss_grad_par(
                        Some(&mut e2),
                        &input,
                        Out {
                            grad: Some(&mut g2),
                            loss_elems: None,
                            stats: Some(&mut s2),
                        },
                    )
                    .unwrap();
                assert!(g1 == g2, "n {n} {backend:?}: gradients");
                assert!(ulps(l1, l2) <= 1, "n {n} {backend:?}: {l1} vs {l2}");
                assert_eq!(e1, e2);
                assert_eq!(
                    (s1.counts, s1.tot, s1.weights),
                    (s2.counts, s2.tot, s2.weights)
                );
            }
            let rc = GhmR {
                backend: Some(backend),
                ..GhmR::default()
            };
            let l1 = rc.loss_grad(None, &input, Out::grad(&mut g1)).unwrap();
            let l2 = rc.loss_grad_par(None, &input, Out::grad(&mut g2)).unwrap();
            assert!(g1 == g2 && ulps(l1, l2) <= 1, "GHM-R n {n} {backend:?}");
        }
        // Labels, anchor-major (split by anchors) and class-major (serial).
        let classes = 8;
        let anchors = n / classes;
        let labels: Vec<i32> = (0..anchors).map(|_| r.below(classes + 1) as i32).collect();
        let pred = &x[..anchors * classes];
        for layout in [Layout::AnchorMajor, Layout::ClassMajor] {
            let c = GhmC {
                bins: 20,
                ..GhmC::default()
            };
            let input = Labels::new(pred, &labels, classes, layout);
            let (mut g1, mut g2) = (vec![0.0f32; pred.len()], vec![0.0f32; pred.len()]);
            let l1 = c
                .loss_grad_labels(None, &input, Out::grad(&mut g1))
                .unwrap();
            let l2 = c
                .loss_grad_labels_par(None, &input, Out::grad(&mut g2))
                .unwrap();
            assert!(g1 == g2 && ulps(l1, l2) <= 1, "labels {layout:?} n {n}");
        }
    }
    // Shape errors are reported, not panicked on, however large the batch.
    let big = vec![0.5f32; 200_000];
    let short = vec![0.0f32; 199_999];
    let mut g = vec![5.0f32; 200_000];
    let r = GhmC::default().loss_grad_par(None, &Dense::new(&big, &short), Out::grad(&mut g));
    assert_eq!(r, Err(ghm::Error::Shape));
    let r = GhmC::default().loss_grad_par(None, &Dense::new(&big, &big), Out::grad(&mut g[..10]));
    assert_eq!(r, Err(ghm::Error::Shape));
    // Errors are the serial call's: nothing written.
    let x = vec![f32::NAN; 200_000];
    let t = vec![0.0f32; 200_000];
    let mut g = vec![5.0f32; 200_000];
    let r = GhmC::default().loss_grad_par(None, &Dense::new(&x, &t), Out::grad(&mut g));
    assert_eq!(r, Err(ghm::Error::Input));
    assert!(g.iter().all(|&v| v == 5.0));
}
