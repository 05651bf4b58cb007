//! Generates `include/ghm.h` from the C ABI in `src/ffi.rs` with cbindgen (configured by
//! `cbindgen.toml`), and gives the shared library its SONAME. The header is committed; in the
//! repository a build rewrites it when the C ABI changed, and CI checks that a build leaves it
//! unchanged. Elsewhere (a registry download, `cargo package`'s verification) it is only
//! written to `OUT_DIR`.

use std::path::Path;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo");
    for f in [
        "src/ffi.rs",
        "src/state.rs",
        "src/config.rs",
        "src/ffi/generic.rs",
        "src/ffi/softmax.rs",
        "cbindgen.toml",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let version =
        |part: &str| std::env::var(format!("CARGO_PKG_VERSION_{part}")).unwrap_or_default();
    let (major, minor, patch) = (version("MAJOR"), version("MINOR"), version("PATCH"));
    let soname = format!("libghm.so.{}", abi_version(&major, &minor));
    // The shared library's SONAME, on ELF systems: every cdylib build of the crate carries it
    // (`cargo rustc --crate-type cdylib`, `make build`, the tests' C libraries). As a link
    // argument of every target of this package: `rustc-cdylib-link-arg` warns on each build,
    // the manifest's own crate type being rlib (the C libraries are `cargo rustc` builds), and
    // a SONAME in the package's test and example executables does nothing. It does not reach
    // crates that depend on ghm.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(
        os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd"
    ) {
        println!("cargo:rustc-link-arg=-Wl,-soname,{soname}");
    }
    let mut config = match cbindgen::Config::from_file(Path::new(&dir).join("cbindgen.toml")) {
        Ok(c) => c,
        Err(e) => return println!("cargo:warning=cbindgen.toml: {e}"),
    };
    config.after_includes = Some(format!(
        "\n/* The version of the library this header belongs to (Cargo.toml's); ghm_version()\n \
         * returns GHM_VERSION of the library actually linked. GHM_SONAME: the shared library's\n \
         * ABI name (README: \"Versions and the ABI\"). */\n\
         #define GHM_VERSION_MAJOR {major}\n\
         #define GHM_VERSION_MINOR {minor}\n\
         #define GHM_VERSION_PATCH {patch}\n\
         #define GHM_VERSION ((GHM_VERSION_MAJOR << 16) | (GHM_VERSION_MINOR << 8) | \
         GHM_VERSION_PATCH)\n\
         #define GHM_SONAME \"{soname}\""
    ));
    let bindings = match cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
    {
        Ok(b) => b,
        // A syntax error is for rustc to report; don't mask it with a build-script failure.
        Err(e) => return println!("cargo:warning=cbindgen could not generate ghm.h: {e}"),
    };
    let mut raw = Vec::new();
    bindings.write(&mut raw);
    let header = parenthesize_negative_defines(&String::from_utf8_lossy(&raw));

    // Always into OUT_DIR. Into the source tree only in a git work tree (the repository, where
    // CI then checks that the committed header is this one), and only on change: never in a
    // registry download or `cargo package`'s verification build, whose sources must stay as
    // they were packaged (the packaged header is the committed one).
    if let Ok(out) = std::env::var("OUT_DIR") {
        let _ = std::fs::write(Path::new(&out).join("ghm.h"), &header);
    }
    if !Path::new(&dir).join(".git").exists() {
        return;
    }
    let path = Path::new(&dir).join("include/ghm.h");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(header.as_str()) {
        if let Err(e) = std::fs::write(&path, header) {
            println!("cargo:warning=could not write {}: {e}", path.display());
        }
    }
}

/// The ABI version in the shared library's name: the major version from 1.0 on; before it,
/// `0.<minor>` (a 0.x minor release may change the ABI, as Cargo's semver reads 0.x).
fn abi_version(major: &str, minor: &str) -> String {
    if major == "0" {
        format!("0.{minor}")
    } else {
        major.to_owned()
    }
}

/// `#define X -1` becomes `#define X (-1)`, so that `a-X` cannot expand to `a--1`.
fn parenthesize_negative_defines(header: &str) -> String {
    let mut out = String::with_capacity(header.len() + 64);
    for line in header.lines() {
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("#define"), Some(name), Some(v)) if v.starts_with('-') => {
                out.push_str(&format!("#define {name} ({v})"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
