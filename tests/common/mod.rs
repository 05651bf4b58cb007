//! Shared by the integration tests: a seeded generator of detector-like data and a naive f64
//! reference implementation of docs/contract.md section 1, written independently of the crate (it takes
//! only the gradient norm of each element from the crate, to use the same bins).
#![allow(dead_code)]

use ghm::Reduction;

/// SplitMix64: small, seedable, good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// A detector-like GHM-C batch: ~`pos` positives, easy negatives with confident logits, and a
/// few confident outliers.
pub fn detector_batch(rng: &mut Rng, n: usize, pos: f64, soft: bool) -> (Vec<f32>, Vec<f32>) {
    let mut x = Vec::with_capacity(n);
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let positive = rng.chance(pos);
        let target = if soft {
            rng.unit() as f32
        } else if positive {
            1.0
        } else {
            0.0
        };
        let logit = if rng.chance(0.02) {
            // confident outlier: wrong side
            if positive {
                -rng.range(3.0, 9.0)
            } else {
                rng.range(3.0, 9.0)
            }
        } else if positive {
            rng.normal() * 2.0 + 1.0
        } else {
            rng.normal() * 1.5 - 4.0
        };
        x.push(logit as f32);
        t.push(target);
    }
    (x, t)
}

/// Label weights with about `zeros` of them 0 and the rest in `(0, 2]` or 1.
pub fn label_weights(rng: &mut Rng, n: usize, zeros: f64, ones_only: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            if rng.chance(zeros) {
                0.0
            } else if ones_only {
                1.0
            } else {
                rng.range(0.05, 2.0) as f32
            }
        })
        .collect()
}

/// Which formula.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Logits,
    Probs,
    R { mu: f32 },
}

/// Settings of one reference evaluation.
#[derive(Clone, Copy, Debug)]
pub struct RefCfg {
    pub kind: Kind,
    pub bins: usize,
    pub momentum: f32,
    pub loss_weight: f32,
    pub reduction: Reduction,
    pub grad_scale: f32,
}

/// What the reference computes.
#[derive(Clone, Debug)]
pub struct RefOut {
    pub loss: f64,
    /// `grad_scale * dL/dx`, not accumulated.
    pub grad: Vec<f64>,
    pub loss_elems: Vec<f64>,
    pub counts: Vec<u64>,
    pub tot: f64,
    pub weights: Vec<f64>,
}

/// The f32 edges, by the contract's rule.
pub fn edges(bins: usize, last: f32) -> Vec<f32> {
    let mut e: Vec<f32> = (0..bins).map(|k| k as f32 / bins as f32).collect();
    e.push(last);
    e
}

/// The bin with `e[k] <= g < e[k+1]`, by linear scan of the definition.
pub fn bin_of(e: &[f32], g: f32) -> Option<usize> {
    (0..e.len() - 1).find(|&k| e[k] <= g && g < e[k + 1])
}

/// The crate's f32 gradient norm of one element (the only thing taken from the crate).
pub fn g_of(kind: Kind, x: f32, t: f32) -> f32 {
    match kind {
        Kind::Logits => ghm::__private::ghmc_g(x, t).0,
        Kind::Probs => (x - t).abs(),
        Kind::R { mu } => ghm::__private::ghmr_g(x, t, mu).0,
    }
}

/// `(l, dl/dx)` in f64, straight from docs/contract.md section 1.
pub fn elem_f64(kind: Kind, x: f32, t: f32) -> (f64, f64) {
    let (x, t) = (x as f64, t as f64);
    match kind {
        Kind::Logits => {
            let s = 1.0 / (1.0 + (-x).exp());
            let l = x.max(0.0) - x * t + (-x.abs()).exp().ln_1p();
            (l, s - t)
        }
        Kind::Probs => {
            let lo = 1e-7f32 as f64;
            let hi = (1.0f32 - 1e-7f32) as f64;
            let pc = x.clamp(lo, hi);
            (-(t * pc.ln() + (1.0 - t) * (1.0 - pc).ln()), x - t)
        }
        Kind::R { mu } => {
            let mu = mu as f64;
            let d = x - t;
            let root = (d * d + mu * mu).sqrt();
            // sqrt(d^2 + mu^2) - mu, without the cancellation that costs even f64 digits
            (d * d / (root + mu), d / root)
        }
    }
}

/// The reference of one batch. `ema` (f32, like mmdet's buffer) is updated when
/// `momentum > 0`. Elements whose `bad[i]` is set are left out entirely (skip_bad).
pub fn reference(
    cfg: &RefCfg,
    ema: Option<&mut Vec<f32>>,
    x: &[f32],
    t: &[f32],
    lw: Option<&[f32]>,
    bad: Option<&[bool]>,
) -> RefOut {
    let n = x.len();
    let last = match cfg.kind {
        Kind::R { .. } => 1000.0,
        _ => 1.0 + 1e-6,
    };
    let e = edges(cfg.bins, last);
    let w_of = |i: usize| lw.map_or(1.0, |w| w[i]);
    let is_bad = |i: usize| bad.is_some_and(|b| b[i]);
    let mut bin = vec![None; n];
    let mut counts = vec![0u64; cfg.bins];
    let mut tot = 0.0f64;
    for i in 0..n {
        if is_bad(i) {
            continue;
        }
        if w_of(i) > 0.0 {
            bin[i] = bin_of(&e, g_of(cfg.kind, x[i], t[i]));
            if let Some(k) = bin[i] {
                counts[k] += 1;
            }
        }
        tot += match cfg.kind {
            Kind::R { .. } => w_of(i) as f64,
            _ => (w_of(i) > 0.0) as u32 as f64,
        };
    }
    let tot = tot.max(1.0);
    let nonempty = counts.iter().filter(|&&c| c > 0).count() as f64;
    let mut weights = vec![0.0f64; cfg.bins];
    let mut ema = ema;
    for k in 0..cfg.bins {
        if counts[k] == 0 {
            continue;
        }
        let density = match ema.as_deref_mut() {
            Some(acc) if cfg.momentum > 0.0 => {
                let m = cfg.momentum as f64;
                acc[k] = (m * acc[k] as f64 + (1.0 - m) * counts[k] as f64) as f32;
                acc[k] as f64
            }
            _ => counts[k] as f64,
        };
        weights[k] = tot / density / nonempty;
    }
    let norm = match cfg.reduction {
        Reduction::Mean => 1.0 / (tot + f32::EPSILON as f64),
        _ => 1.0,
    };
    let lwt = cfg.loss_weight as f64;
    let mut loss = 0.0;
    let mut grad = vec![0.0; n];
    let mut loss_elems = vec![0.0; n];
    for i in 0..n {
        if let Some(k) = bin[i] {
            let (l, d) = elem_f64(cfg.kind, x[i], t[i]);
            loss += weights[k] * l;
            loss_elems[i] = lwt * weights[k] * l;
            grad[i] = cfg.grad_scale as f64 * lwt * weights[k] * d * norm;
        }
    }
    RefOut {
        loss: lwt * loss * norm,
        grad,
        loss_elems,
        counts,
        tot,
        weights,
    }
}

/// `max_i |got_i - want_i|` and `max_i |want_i|`.
pub fn max_err(got: &[f32], want: &[f64]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .fold((0.0f64, 0.0f64), |(e, m), (&g, &w)| {
            (e.max((g as f64 - w).abs()), m.max(w.abs()))
        })
}

/// Relative error, with `|want|` floored at `floor`.
pub fn rel_err(got: f64, want: f64, floor: f64) -> f64 {
    if got == want {
        0.0
    } else {
        (got - want).abs() / want.abs().max(floor)
    }
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns its stdout.
pub fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `tool --version` runs and succeeds.
pub fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The `cargo` running the tests.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The C libraries (`libghm.a`, `libghm.so`, release, as `CARGO_TARGET_DIR=target/ffi cargo
/// rustc --release --lib --crate-type staticlib,cdylib` builds them) and the directory that
/// holds them, `target/ffi/release`. Every test that links C programs takes them from here, so
/// a run compiles them once: the first caller builds them, later ones (and CI's C examples)
/// find them up to date. (Release rather than the dev profile: on 2 cores, from a fresh target
/// dir, tests/ffi_c.rs took 67 s with it against 103 s. CI's sanitizer and valgrind steps use
/// the dev profile's, in target/ffi/debug.) A target dir of its own: the outer `cargo test`
/// holds the lock on the main one.
pub fn c_libraries() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let target_dir = root.join("target").join("ffi");
    run(std::process::Command::new(cargo())
        .args([
            "rustc",
            "--release",
            "--lib",
            "--crate-type",
            "staticlib,cdylib",
            "--manifest-path",
        ])
        .arg(root.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_BUILD_TARGET"));
    let libdir = target_dir.join("release");
    for lib in ["libghm.a", "libghm.so"] {
        assert!(
            libdir.join(lib).is_file(),
            "{lib} was not built in {libdir:?}"
        );
    }
    libdir
}

/// `Some(why)` when this test binary is cross-compiled (e.g. aarch64 under qemu): then the
/// host's cargo and cc build for another architecture, and this binary cannot start itself
/// again. `None` on a native run.
pub fn cross_compiled() -> Option<String> {
    let vv = run(std::process::Command::new(cargo()).arg("-vV"));
    let host = vv
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or_else(|| panic!("no `host:` line in `cargo -vV`:\n{vv}"));
    let host = host.split('-').next().unwrap_or(host);
    (host != std::env::consts::ARCH).then(|| {
        format!(
            "test binary is {} but the host toolchain builds {host} (cross-compiled run)",
            std::env::consts::ARCH
        )
    })
}

/// The first C block of the README's section `heading` (a `### ...` line), checked to be the
/// code of `example` (a path from the repository root): a README recipe is a tested program.
/// Returns the block.
pub fn readme_recipe(heading: &str, example: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let code = std::fs::read_to_string(format!("{root}/{example}")).expect("the example");
    let section = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("the README's section {heading:?}"));
    let block = section
        .split("```c\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its C block");
    assert!(
        code.contains(block),
        "the README's recipe under {heading:?} differs from {example}"
    );
    block.to_owned()
}

/// The backend chosen through the C ABI (`ghm_set_backend`) is the process's: one test at a
/// time goes through [`on_every_backend`].
static C_BACKEND: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` once per backend this machine runs, each selected through the C ABI
/// (`ghm_set_backend`), then restores the automatic choice.
pub fn on_every_backend(mut f: impl FnMut(ghm::Backend)) {
    let _one = C_BACKEND.lock().unwrap_or_else(|e| e.into_inner());
    for b in ghm::Backend::all_available() {
        // SAFETY: a NUL-terminated backend name.
        let s = unsafe { ghm::ffi::ghm_set_backend(b.c_name().as_ptr()) };
        assert_eq!(s, ghm::ffi::GHM_OK, "ghm_set_backend({})", b.name());
        f(b);
    }
    // SAFETY: NULL restores the automatic choice.
    unsafe { ghm::ffi::ghm_set_backend(core::ptr::null()) };
}
