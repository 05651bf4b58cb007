//! The fuzz targets as plain property tests (no libFuzzer, no sanitizer needed): every input
//! of the committed corpora (`corpus/<target>/`, seeds and any input a fuzzer found), then
//! pseudo-random inputs. `FUZZ_REPLAY_CASES` sets how many random inputs per target
//! (default 300); `FUZZ_REPLAY_SEED` their seed; `FUZZ_REPLAY_TARGETS` which targets (e.g.
//! `c_dense,setup`; default all).

use std::path::Path;

/// SplitMix64.
fn next(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The targets to run: all, or those named in `FUZZ_REPLAY_TARGETS` (comma-separated).
fn targets() -> Vec<(&'static str, ghm_fuzz::Target)> {
    let only = std::env::var("FUZZ_REPLAY_TARGETS").unwrap_or_default();
    ghm_fuzz::TARGETS
        .into_iter()
        .filter(|(n, _)| only.is_empty() || only.split(',').any(|o| o == *n))
        .collect()
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn committed_corpora() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, target) in targets() {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no seeds", dir.display());
        for f in &files {
            let data = std::fs::read(f).unwrap();
            eprintln!("{}", f.display());
            target(&data);
        }
        println!("{name}: {} corpus inputs", files.len());
    }
}

#[test]
fn pseudo_random_inputs() {
    let cases = env("FUZZ_REPLAY_CASES", 300);
    let mut s = env("FUZZ_REPLAY_SEED", 0x5eed);
    for (name, target) in targets() {
        for case in 0..cases {
            let len = match next(&mut s) % 4 {
                0 => next(&mut s) % 64,
                1 => next(&mut s) % 512,
                _ => next(&mut s) % 8192,
            } as usize;
            let data: Vec<u8> = (0..len).map(|_| next(&mut s) as u8).collect();
            let seed = s;
            let r = std::panic::catch_unwind(|| target(&data));
            if r.is_err() {
                let path = std::env::temp_dir().join(format!("ghm-fuzz-{name}-{case}"));
                std::fs::write(&path, &data).unwrap();
                panic!(
                    "{name}: case {case} (state {seed:#x}) failed; input in {}",
                    path.display()
                );
            }
        }
        let o: Vec<u64> = ghm_fuzz::harness::OUTCOMES
            .iter()
            .map(|c| c.swap(0, std::sync::atomic::Ordering::Relaxed))
            .collect();
        println!("{name}: {cases} pseudo-random inputs; calls by status (OK, NULL, CONFIG, STATE, INPUT, ALIAS, SHAPE): {o:?}");
    }
}
