//! Generates `include/ghm.h` from the C ABI in `src/ffi.rs` with cbindgen (configured by
//! `cbindgen.toml`). The header is committed; CI checks that a build leaves it unchanged.

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
    let config = match cbindgen::Config::from_file(Path::new(&dir).join("cbindgen.toml")) {
        Ok(c) => c,
        Err(e) => return println!("cargo:warning=cbindgen.toml: {e}"),
    };
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

    // Rewrite only on change, and never fail the build when the source tree is read-only
    // (a registry download): the committed header is then the right one already.
    let path = Path::new(&dir).join("include/ghm.h");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(header.as_str()) {
        if let Err(e) = std::fs::write(&path, header) {
            println!("cargo:warning=could not write {}: {e}", path.display());
        }
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
