//! The C ABI tested from C and C++ (`ffi-tests/`): this test builds `libghm.a` and
//! `libghm.so`, runs `make -C ffi-tests test` (a C99 and a C++17 program, each linked against
//! both libraries), and checks what the shared library exports and what the header declares.
//!
//! `cargo test` does not refresh `target/debug/libghm.a` (an integration test only needs the
//! rlib), so the C libraries come from a nested `cargo rustc --crate-type staticlib,cdylib`
//! into `target/ffi`, built once per run for every test that needs them
//! (`common::c_libraries`).
//! The sanitizer and valgrind runs of the same programs are CI steps (`.ci/run`).

mod common;

use common::{c_libraries, cross_compiled, have, run};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The functions the C layer (`src/ffi.rs` and `src/ffi/*.rs`) exports: the `fn` after each
/// `#[no_mangle]`.
fn no_mangle_functions() -> BTreeSet<String> {
    let mut src = std::fs::read_to_string(root().join("src/ffi.rs")).expect("src/ffi.rs");
    let dir = std::fs::read_dir(root().join("src/ffi")).expect("src/ffi/");
    let mut files: Vec<_> = dir.map(|e| e.expect("src/ffi/ entry").path()).collect();
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        src.push_str(&std::fs::read_to_string(f).expect("a src/ffi/ file"));
    }
    let mut names = BTreeSet::new();
    let mut pending = false;
    for line in src.lines().map(str::trim) {
        if line == "#[no_mangle]" || line == "#[unsafe(no_mangle)]" {
            pending = true;
        } else if pending && !line.starts_with("#[") && !line.starts_with("//") {
            let name = line
                .split_once("fn ")
                .and_then(|(_, rest)| rest.split(['(', '<']).next())
                .unwrap_or_else(|| panic!("no `fn` after #[no_mangle]: {line}"));
            names.insert(name.trim().to_owned());
            pending = false;
        }
    }
    names
}

/// The functions `include/ghm.h` declares: top-level lines with `ghm_...(`, outside comments
/// and preprocessor lines.
fn header_functions(header: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in header.lines() {
        let decl = !line.starts_with([' ', '\t', '/', '#', '*', '}']) && !line.is_empty();
        if let (true, Some(paren)) = (decl, line.find('(')) {
            let head = &line[..paren];
            let start = head
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            if head[start..].starts_with("ghm_") {
                names.insert(head[start..].to_owned());
            }
        }
    }
    names
}

/// Whether `header` declares function `name`: `name(` not preceded by an identifier character.
fn declares(header: &str, name: &str) -> bool {
    let pat = format!("{name}(");
    header.match_indices(&pat).any(|(i, _)| {
        header[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
    })
}

/// (d) The committed header declares every function the C layer exports (grep level: it needs
/// no compiler, so it runs everywhere, cross runs included).
#[test]
fn header_declares_every_no_mangle_function() {
    let header = std::fs::read_to_string(root().join("include/ghm.h")).expect("include/ghm.h");
    let exported = no_mangle_functions();
    assert!(
        exported.len() >= 19,
        "only {} #[no_mangle] functions found in src/ffi.rs: {exported:?}",
        exported.len()
    );
    let missing: Vec<&String> = exported.iter().filter(|f| !declares(&header, f)).collect();
    assert!(
        missing.is_empty(),
        "include/ghm.h does not declare {missing:?} (regenerate it: `cargo build`)"
    );
    let declared = header_functions(&header);
    let extra: Vec<&String> = declared.difference(&exported).collect();
    assert!(
        extra.is_empty(),
        "include/ghm.h declares {extra:?}, which src/ffi.rs does not export"
    );
    eprintln!(
        "include/ghm.h declares all {} exported functions",
        exported.len()
    );
}

/// `nm -D --defined-only` of the shared library: only `ghm_*` symbols, and among them every
/// function the header declares.
fn check_exports(so: &Path) {
    let nm = run(Command::new("nm").args(["-D", "--defined-only"]).arg(so));
    let symbols: BTreeSet<String> = nm
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|s| s.split('@').next().unwrap_or(s).to_owned())
        .collect();
    let foreign: Vec<&String> = symbols.iter().filter(|s| !s.starts_with("ghm_")).collect();
    assert!(
        foreign.is_empty(),
        "libghm.so exports symbols outside the ghm_ namespace: {foreign:?}"
    );
    let header = std::fs::read_to_string(root().join("include/ghm.h")).expect("include/ghm.h");
    let declared = header_functions(&header);
    let unexported: Vec<&String> = declared.difference(&symbols).collect();
    assert!(
        unexported.is_empty(),
        "include/ghm.h declares {unexported:?}, which libghm.so does not export"
    );
    eprintln!(
        "libghm.so exports {} symbols, all ghm_*, including the {} the header declares",
        symbols.len(),
        declared.len()
    );
}

#[test]
#[cfg(unix)]
fn c_abi_from_c_and_cpp() {
    // A cross-compiled test binary (aarch64 under qemu): the host `cargo` and `cc` would build
    // and run host programs, which says nothing about the target.
    if let Some(why) = cross_compiled() {
        eprintln!("SKIPPED: c_abi_from_c_and_cpp: {why}");
        return;
    }
    let missing: Vec<&str> = ["cc", "c++", "make"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        eprintln!("SKIPPED: c_abi_from_c_and_cpp: {missing:?} not found");
        return;
    }

    // (a) The C libraries, built once per run (shared with tests/install.rs).
    let libdir: PathBuf = c_libraries();

    // (c) The shared library exports the C API and nothing else (checked first: it does not
    // depend on the programs passing).
    if have("nm") {
        check_exports(&libdir.join("libghm.so"));
    } else {
        eprintln!("SKIPPED: (part of c_abi_from_c_and_cpp) `nm` not found, exports not checked");
    }

    // (b) The C and C++ programs against both libraries. Without cargo's LD_LIBRARY_PATH (it
    // lists target/debug, where a stale libghm.so could shadow the one just built).
    let out = output(
        Command::new("make")
            .arg("-C")
            .arg(root().join("ffi-tests"))
            .arg("test")
            .arg(format!("LIBDIR={}", libdir.display()))
            .env_remove("LD_LIBRARY_PATH"),
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "make -C ffi-tests test failed ({}): see the output above",
        out.status
    );
}

#[test]
#[cfg(not(unix))]
fn c_abi_from_c_and_cpp() {
    eprintln!("SKIPPED: c_abi_from_c_and_cpp: needs a Unix cc, c++ and make");
}

/// The header's version macros are Cargo.toml's version, `ghm_version()` agrees with them,
/// and `GHM_SONAME` is the ABI name of the policy (the major version, or `0.<minor>` before
/// 1.0; README "Versions and the ABI").
#[test]
fn header_version_macros_are_cargo_tomls() {
    let header = std::fs::read_to_string(root().join("include/ghm.h")).expect("include/ghm.h");
    let define = |name: &str| -> String {
        let prefix = format!("#define {name} ");
        header
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("include/ghm.h defines {name}"))
            .trim()
            .to_owned()
    };
    let part = |name: &str| -> u32 { define(name).parse().expect("a number") };
    let (major, minor, patch) = (
        part("GHM_VERSION_MAJOR"),
        part("GHM_VERSION_MINOR"),
        part("GHM_VERSION_PATCH"),
    );
    let cargo = |v: &str| -> u32 { v.parse().unwrap() };
    assert_eq!(major, cargo(env!("CARGO_PKG_VERSION_MAJOR")));
    assert_eq!(minor, cargo(env!("CARGO_PKG_VERSION_MINOR")));
    assert_eq!(patch, cargo(env!("CARGO_PKG_VERSION_PATCH")));
    assert_eq!(ghm::ffi::ghm_version(), major << 16 | minor << 8 | patch);
    let abi = if major == 0 {
        format!("0.{minor}")
    } else {
        major.to_string()
    };
    assert_eq!(define("GHM_SONAME"), format!("\"libghm.so.{abi}\""));
}
