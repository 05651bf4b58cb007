//! Parity with the real mmdetection 3.3 outputs in `tests/data/mmdet/` (see its README), on
//! every backend this machine runs, including the EMA across iterations and, for class-index
//! labels, the class-major layout (the anchor-major case transposed).

use ghm::{Backend, Dense, Ema, GhmC, GhmR, Labels, Layout, Out, Reduction};
use serde_json::Value;

const LOSS_REL: f64 = 1e-5;
const GRAD_REL: f64 = 1e-5;
const ACC_REL: f64 = 1e-6;

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn cases() -> Vec<(String, Value)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mmdet");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(dir)
        .expect("tests/data/mmdet")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read");
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, serde_json::from_str(&text).expect("json"))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(out.len(), 19, "every reference case is present");
    out
}

/// Worst errors seen, per quantity.
#[derive(Default, Debug)]
struct Worst {
    loss_rel: f64,
    grad_rel: f64,
    elems_rel: f64,
    acc_rel: f64,
}

impl Worst {
    fn add(&mut self, o: &Worst) {
        self.loss_rel = self.loss_rel.max(o.loss_rel);
        self.grad_rel = self.grad_rel.max(o.grad_rel);
        self.elems_rel = self.elems_rel.max(o.elems_rel);
        self.acc_rel = self.acc_rel.max(o.acc_rel);
    }
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
    }
}

/// `max |got - want| / max |want|` (0 when both are all zeros).
fn max_rel(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, &w| m.max((w as f64).abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (&g, &w)| m.max((g as f64 - w as f64).abs()));
    if err == 0.0 {
        0.0
    } else {
        err / scale.max(f64::MIN_POSITIVE)
    }
}

/// `[N][C]` to `[C][N]`.
fn transpose(a: &[f32], n: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0.0; a.len()];
    for i in 0..n {
        for j in 0..c {
            t[j * n + i] = a[i * c + j];
        }
    }
    t
}

fn reduction(case: &Value) -> Reduction {
    match case["reduction"].as_str().unwrap() {
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        "none" => Reduction::None,
        r => panic!("unknown reduction {r}"),
    }
}

/// Runs every iteration of `case` on `backend` (in `layout` for label cases) and checks it.
fn run_case(name: &str, case: &Value, backend: Backend, layout: Layout) -> Worst {
    let bins = case["bins"].as_u64().unwrap() as u32;
    let momentum = case["momentum"].as_f64().unwrap() as f32;
    let loss_weight = case["loss_weight"].as_f64().unwrap() as f32;
    let red = reduction(case);
    let is_c = case["kind"] == "ghmc";
    let mut ema = Ema::new(bins).unwrap();
    let mut worst = Worst::default();
    for (it, iter) in case["iters"].as_array().unwrap().iter().enumerate() {
        let ctx = format!("{name} iter {it} on {backend:?} {layout:?}");
        let mut pred = f32s(&iter["pred"]);
        let lw = f32s(&iter["label_weight"]);
        let exp = &iter["expected"];
        let mut want_grad = f32s(&exp["grad"]);
        let mut want_elems = exp.get("loss_elems").map(f32s);
        let mut grad = vec![0.0f32; pred.len()];
        let mut elems = vec![0.0f32; pred.len()];
        let out = Out {
            grad: Some(&mut grad),
            loss_elems: want_elems.as_ref().map(|_| &mut elems[..]),
            stats: None,
        };
        let ema_arg = (momentum > 0.0).then_some(&mut ema);
        let loss = if is_c {
            let cfg = GhmC {
                bins,
                momentum,
                loss_weight,
                reduction: red,
                backend: Some(backend),
                ..GhmC::default()
            };
            if let Some(labels) = iter.get("labels") {
                let labels: Vec<i32> = labels
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_i64().unwrap() as i32)
                    .collect();
                let shape = case["shape"].as_array().unwrap();
                let (n, c) = (
                    shape[0].as_u64().unwrap() as usize,
                    shape[1].as_u64().unwrap() as usize,
                );
                if layout == Layout::ClassMajor {
                    pred = transpose(&pred, n, c);
                    want_grad = transpose(&want_grad, n, c);
                    want_elems = want_elems.map(|e| transpose(&e, n, c));
                }
                let input = Labels::new(&pred, &labels, c, layout).anchor_weight(&lw);
                cfg.loss_grad_labels(ema_arg, &input, out)
            } else {
                let target = f32s(&iter["target"]);
                cfg.loss_grad(ema_arg, &Dense::new(&pred, &target).label_weight(&lw), out)
            }
        } else {
            let cfg = GhmR {
                bins,
                momentum,
                mu: case["mu"].as_f64().unwrap() as f32,
                loss_weight,
                reduction: red,
                backend: Some(backend),
                ..GhmR::default()
            };
            let target = f32s(&iter["target"]);
            cfg.loss_grad(ema_arg, &Dense::new(&pred, &target).label_weight(&lw), out)
        }
        .unwrap_or_else(|e| panic!("{ctx}: {e}"));

        let want_loss = exp["loss"].as_f64().unwrap();
        let w = Worst {
            loss_rel: if want_loss == 0.0 {
                (loss as f64).abs()
            } else {
                rel(loss as f64, want_loss)
            },
            grad_rel: max_rel(&grad, &want_grad),
            elems_rel: want_elems.as_ref().map_or(0.0, |we| max_rel(&elems, we)),
            acc_rel: exp.get("acc_sum").map_or(0.0, |a| {
                f32s(a)
                    .iter()
                    .zip(&ema.acc_sum)
                    .fold(0.0, |m, (&want, &got)| m.max(rel(got as f64, want as f64)))
            }),
        };
        assert!(
            w.loss_rel <= LOSS_REL,
            "{ctx}: loss {loss} vs {want_loss} ({w:?})"
        );
        assert!(w.grad_rel <= GRAD_REL, "{ctx}: gradient ({w:?})");
        assert!(w.elems_rel <= GRAD_REL, "{ctx}: loss elements ({w:?})");
        assert!(w.acc_rel <= ACC_REL, "{ctx}: EMA ({w:?})");
        worst.add(&w);
    }
    worst
}

#[test]
fn every_reference_case_on_every_backend() {
    let cases = cases();
    for backend in Backend::all_available() {
        let mut worst = Worst::default();
        let mut runs = 0;
        for (name, case) in &cases {
            worst.add(&run_case(name, case, backend, Layout::AnchorMajor));
            runs += 1;
            if case["iters"][0].get("labels").is_some() {
                worst.add(&run_case(name, case, backend, Layout::ClassMajor));
                runs += 1;
            }
        }
        println!(
            "{:>8}: {runs} runs, max loss rel err {:.2e}, max grad err / max|grad| {:.2e}, \
             max loss_elems err / max {:.2e}, max EMA rel err {:.2e}",
            backend.name(),
            worst.loss_rel,
            worst.grad_rel,
            worst.elems_rel,
            worst.acc_rel
        );
    }
}

/// The EMA really carries over: the momentum cases differ from a fresh EMA after iteration 0.
#[test]
fn ema_cases_depend_on_history() {
    let (_, case) = cases()
        .into_iter()
        .find(|(n, _)| n == "ghmc_dense_momentum")
        .unwrap();
    let iter = &case["iters"][1];
    let pred = f32s(&iter["pred"]);
    let target = f32s(&iter["target"]);
    let lw = f32s(&iter["label_weight"]);
    let cfg = GhmC {
        bins: 30,
        momentum: 0.75,
        ..GhmC::default()
    };
    let mut fresh = Ema::new(30).unwrap();
    let loss = cfg
        .loss_grad(
            Some(&mut fresh),
            &Dense::new(&pred, &target).label_weight(&lw),
            Out::default(),
        )
        .unwrap() as f64;
    let want = iter["expected"]["loss"].as_f64().unwrap();
    assert!(
        rel(loss, want) > 1e-3,
        "a fresh EMA should not reproduce iteration 1"
    );
}
