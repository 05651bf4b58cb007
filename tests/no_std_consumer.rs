//! `ghm` without its `std` feature links into a `#![no_std]` program, and is callable from C.
//!
//! `tests/nostd-consumer` is a `#![no_std]` staticlib that defines its own `#[panic_handler]`,
//! so it does not build at all if `ghm` or any of its dependencies links `std` (duplicate
//! `panic_impl` lang item). This test builds it, links it into a C program with `cc`, and
//! checks that the C program gets the same GHM-C loss as this process.

mod common;

use common::{cargo, cross_compiled, run};

use std::path::{Path, PathBuf};
use std::process::Command;

use ghm::{Dense, GhmC, Out};

#[test]
#[cfg(unix)]
fn no_std_staticlib_links_into_c() {
    let cargo = cargo();
    // When this test binary is cross-compiled (e.g. aarch64 under qemu), the host `cargo` and
    // `cc` would build the consumer for the wrong architecture and the C program could not
    // call it: nothing to compare against this process.
    if let Some(why) = cross_compiled() {
        eprintln!("SKIPPED: no_std_staticlib_links_into_c: {why}");
        return;
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A target dir of its own: the outer `cargo test` holds the lock on the main one.
    let target_dir = root.join("target").join("nostd-consumer");

    // (a) The build is the `no_std` proof.
    run(Command::new(&cargo)
        .args(["build", "--release", "--manifest-path"])
        .arg(root.join("tests/nostd-consumer/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir));
    let lib = target_dir.join("release").join("libnostd_consumer.a");
    assert!(lib.is_file(), "{} was not built", lib.display());

    // (b) Link it into C. The precompiled `core` refers to `rust_eh_personality` from
    // unwinding sections that a `panic = "abort"` program never uses: dropping unused
    // sections removes the reference, and no other library is needed.
    let gc = if cfg!(target_os = "macos") {
        "-Wl,-dead_strip"
    } else {
        "-Wl,--gc-sections"
    };
    // One executable per process, so concurrent runs of this test do not race on it.
    let exe: PathBuf = target_dir.join(format!("nostd_consumer_c-{}", std::process::id()));
    run(Command::new("cc")
        .arg(root.join("tests/nostd-consumer/main.c"))
        .arg(&lib)
        .arg(gc)
        .arg("-o")
        .arg(&exe));

    // A batch that is not a multiple of any vector width (remainder lanes), with easy,
    // hard, soft-target and saturated elements, so several bins are populated.
    let n = 37;
    let pred: Vec<f32> = (0..n)
        .map(|i| (i as f32 * 0.731).sin() * 6.0 + if i == 5 { 40.0 } else { 0.0 })
        .collect();
    let target: Vec<f32> = (0..n)
        .map(|i| match i % 4 {
            0 | 3 => 0.0,
            1 => 1.0,
            _ => 0.25,
        })
        .collect();

    // `{:?}` prints the shortest decimal that round-trips, and `strtof` rounds correctly: the
    // C program sees exactly these f32s.
    let mut c = Command::new(&exe);
    c.arg(n.to_string());
    c.args(pred.iter().chain(&target).map(|v| format!("{v:?}")));
    let printed = run(&mut c);
    let _ = std::fs::remove_file(&exe);
    let from_c: f32 = printed
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("C program printed {printed:?}: {e}"));

    let expected = GhmC::default()
        .loss_grad(None, &Dense::new(&pred, &target), Out::default())
        .expect("loss_grad");
    eprintln!("GHM-C loss: {from_c} from the no_std consumer via C, {expected} in-process");
    assert!(expected.is_finite() && expected > 0.0, "loss {expected}");
    let rel = ((from_c - expected) / expected).abs();
    assert!(
        rel <= 1e-6,
        "no_std consumer loss {from_c} vs {expected} in-process (relative {rel:e})"
    );
}

#[test]
#[cfg(not(unix))]
fn no_std_staticlib_links_into_c() {
    eprintln!("SKIPPED no_std_staticlib_links_into_c: needs a Unix `cc` to link the staticlib");
}
