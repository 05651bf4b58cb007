//! `make install` lays out a prefix that C programs build against with pkg-config alone.
//!
//! The test takes the C libraries the FFI tests share (`common::c_libraries`: built once per
//! run), installs them into a fresh prefix under `target/` with `make install PREFIX=...
//! LIBDIR=...`, then compiles a small C program twice, exactly as the README tells C users
//! to:
//!
//! - dynamically: `cc app.c $(pkg-config --cflags --libs ghm)`, run with `LD_LIBRARY_PATH`;
//! - statically against the installed `libghm.a`, with the system libraries from
//!   `pkg-config --static` (its `Libs.private`), run without `LD_LIBRARY_PATH`;
//!
//! and checks that both print this process's GHM-C loss for the same batch; then the same
//! program from a CMake project through the installed CMake package (`find_package(ghm
//! CONFIG)`, targets `ghm::ghm` and `ghm::ghm_static`) and through `pkg_check_modules`.

mod common;

use common::{c_libraries, cross_compiled, have, run};

use std::path::Path;
use std::process::Command;

use ghm::{Dense, GhmC, Out};

/// What `make install` lays out under the prefix (besides the shared library's names, which
/// [`shared_library_names`] checks).
const INSTALLED: [&str; 5] = [
    "include/ghm.h",
    "lib/libghm.a",
    "lib/pkgconfig/ghm.pc",
    "lib/cmake/ghm/ghmConfig.cmake",
    "lib/cmake/ghm/ghmConfigVersion.cmake",
];

/// A CMake project using the installed package both ways CMake users do: the package's own
/// configuration (`find_package(ghm CONFIG)`, the imported targets `ghm::ghm` and
/// `ghm::ghm_static`) and pkg-config (`pkg_check_modules(... IMPORTED_TARGET ghm)`). Its
/// programs must print this process's loss. A version the install cannot satisfy (another
/// ABI) must not be found. Skipped, loudly, without cmake.
fn cmake_consumers(tmp: &Path, prefix: &Path, expected: f32) {
    if !have("cmake") {
        eprintln!("SKIPPED: the CMake consumers: cmake not found (CI installs it)");
        return;
    }
    let version = env!("CARGO_PKG_VERSION");
    let project = format!(
        "cmake_minimum_required(VERSION 3.16)\n\
         project(ghm_consumer C)\n\
         find_package(ghm {version} CONFIG REQUIRED)\n\
         add_executable(app_config app.c)\n\
         target_link_libraries(app_config PRIVATE ghm::ghm)\n\
         add_executable(app_config_static app.c)\n\
         target_link_libraries(app_config_static PRIVATE ghm::ghm_static)\n\
         find_package(PkgConfig REQUIRED)\n\
         pkg_check_modules(GHM REQUIRED IMPORTED_TARGET ghm)\n\
         add_executable(app_pkgconfig app.c)\n\
         target_link_libraries(app_pkgconfig PRIVATE PkgConfig::GHM)\n"
    );
    let src = tmp.join("cmake-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("CMakeLists.txt"), project).unwrap();
    std::fs::copy(tmp.join("app.c"), src.join("app.c")).unwrap();
    let build = tmp.join("cmake-build");
    let cmake = |args: &[&std::ffi::OsStr]| {
        run(Command::new("cmake")
            .args(args)
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")))
    };
    cmake(&[
        "-S".as_ref(),
        src.as_os_str(),
        "-B".as_ref(),
        build.as_os_str(),
        format!("-DCMAKE_PREFIX_PATH={}", prefix.display()).as_ref(),
    ]);
    cmake(&["--build".as_ref(), build.as_os_str()]);
    for app in ["app_config", "app_config_static", "app_pkgconfig"] {
        let printed = run(Command::new(build.join(app))
            .env("LD_LIBRARY_PATH", prefix.join("lib"))
            .env("DYLD_LIBRARY_PATH", prefix.join("lib")));
        check_output(&format!("CMake {app}"), &printed, expected);
    }

    // Another ABI is not this install: find_package must not accept it.
    let other = match env!("CARGO_PKG_VERSION_MAJOR") {
        "0" => format!(
            "0.{}",
            env!("CARGO_PKG_VERSION_MINOR").parse::<u32>().unwrap() + 1
        ),
        major => format!("{}", major.parse::<u32>().unwrap() + 1),
    };
    let probe = tmp.join("cmake-probe");
    std::fs::create_dir_all(&probe).unwrap();
    std::fs::write(
        probe.join("CMakeLists.txt"),
        format!(
            "cmake_minimum_required(VERSION 3.16)\nproject(probe NONE)\n\
             find_package(ghm {other} CONFIG)\n\
             message(STATUS \"ghm found: ${{ghm_FOUND}}\")\n"
        ),
    )
    .unwrap();
    let out = cmake(&[
        "-S".as_ref(),
        probe.as_os_str(),
        "-B".as_ref(),
        probe.join("build").as_os_str(),
        format!("-DCMAKE_PREFIX_PATH={}", prefix.display()).as_ref(),
    ]);
    assert!(
        out.contains("ghm found: 0"),
        "find_package(ghm {other}) accepted version {version}:\n{out}"
    );
}

/// The shared library's ABI version: the major version, or `0.<minor>` before 1.0.
fn abi() -> String {
    match env!("CARGO_PKG_VERSION_MAJOR") {
        "0" => format!("0.{}", env!("CARGO_PKG_VERSION_MINOR")),
        major => major.to_owned(),
    }
}

/// The shared library installed as a system library is: `libghm.so.<version>` (a file whose
/// SONAME is `libghm.so.<abi>`), `libghm.so.<abi>` linking to it and `libghm.so` to that.
fn shared_library_names(lib: &Path) {
    let real = format!("libghm.so.{}", env!("CARGO_PKG_VERSION"));
    let soname = format!("libghm.so.{}", abi());
    let meta = std::fs::symlink_metadata(lib.join(&real)).expect("the versioned library");
    assert!(meta.is_file(), "{real} is a file");
    for (link, to) in [
        (soname.as_str(), real.as_str()),
        ("libghm.so", soname.as_str()),
    ] {
        let target = std::fs::read_link(lib.join(link))
            .unwrap_or_else(|e| panic!("lib/{link} is not a symbolic link: {e}"));
        assert_eq!(target, Path::new(to), "lib/{link} links to {to}");
    }
    if have("readelf") {
        let dynamic = run(Command::new("readelf").arg("-d").arg(lib.join(&real)));
        assert!(
            dynamic.contains(&format!("Library soname: [{soname}]")),
            "{real}'s SONAME is {soname}:\n{dynamic}"
        );
    } else {
        eprintln!("readelf not found: the SONAME itself is not checked");
    }
}

/// A C program computing the default GHM-C loss of `pred` / `target`; it prints the library
/// version and the loss.
fn c_program(pred: &[f32], target: &[f32]) -> String {
    // `{:?}` prints the shortest decimal that round-trips, and C rounds float literals
    // correctly: the program sees exactly these f32s.
    let list = |v: &[f32]| {
        v.iter()
            .map(|x| format!("{x:?}f"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"#include <stdio.h>
#include <ghm.h>

static const float pred[] = {{{pred}}};
static const float target[] = {{{target}}};

int main(void) {{
    ghm_c_config cfg = ghm_c_config_default();
    float loss = 0.0f;
    ghm_status s = ghm_c_loss_grad(&cfg, NULL, pred, target, NULL, sizeof pred / sizeof pred[0],
                                   NULL, &loss, NULL, NULL);
    if (s != GHM_OK) {{
        fprintf(stderr, "ghm_c_loss_grad: %s\n", ghm_status_str(s));
        return 1;
    }}
    unsigned v = ghm_version();
    printf("%u.%u.%u %.9g\n", v >> 16, (v >> 8) & 255u, v & 255u, (double)loss);
    return 0;
}}
"#,
        pred = list(pred),
        target = list(target),
    )
}

/// Checks one C program's output: the crate version and `expected` within 1e-6 relative.
fn check_output(what: &str, printed: &str, expected: f32) {
    let mut words = printed.split_whitespace();
    let version = words.next().unwrap_or_default();
    assert_eq!(
        version,
        env!("CARGO_PKG_VERSION"),
        "{what}: the library reports version {version:?} (printed {printed:?})"
    );
    let loss: f32 = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no loss in {printed:?}"));
    eprintln!("{what}: GHM-C loss {loss} (in-process {expected})");
    let rel = ((loss - expected) / expected).abs();
    assert!(
        rel <= 1e-6,
        "{what}: loss {loss} vs {expected} in-process (relative {rel:e})"
    );
}

#[test]
#[cfg(unix)]
fn make_install_then_pkg_config() {
    for tool in ["cc", "make", "pkg-config"] {
        if !have(tool) {
            eprintln!("SKIPPED: make_install_then_pkg_config: `{tool}` not found");
            return;
        }
    }
    // Cross-compiled (e.g. aarch64 under qemu): the host cargo and cc would build a library and
    // programs this process cannot compare against.
    if let Some(why) = cross_compiled() {
        eprintln!("SKIPPED: make_install_then_pkg_config: {why}");
        return;
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The C libraries every FFI test shares (built once per run).
    let libdir = c_libraries();

    // One directory per process, so concurrent runs do not race.
    let tmp = root
        .join("target")
        .join(format!("install-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("create the test directory");
    let prefix = tmp.join("prefix");

    // `make TARGET PREFIX=prefix ARGS...` in the repository (not under cargo's make flags).
    let make = |target: &str, args: &[String]| {
        run(Command::new("make")
            .arg("-C")
            .arg(root)
            .arg(target)
            .arg(format!("PREFIX={}", prefix.display()))
            .args(args)
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS"))
    };
    // Libraries from the build above: `make install` must not run cargo itself.
    make("install", &[format!("LIBDIR={}", libdir.display())]);
    for f in INSTALLED {
        assert!(prefix.join(f).is_file(), "make install did not install {f}");
    }
    shared_library_names(&prefix.join("lib"));
    // Installed without debug info (the built archive carries the standard library's).
    if have("readelf") {
        let sections = run(Command::new("readelf")
            .args(["-S", "--wide"])
            .arg(prefix.join("lib/libghm.a")));
        assert!(
            !sections.contains(".debug_"),
            "the installed libghm.a still has debug sections"
        );
        // On Linux (GNU binutils), the slim archive: one object, no LLVM bitcode, and no
        // global symbol but the ghm_ functions (the standard library's are local to it).
        if cfg!(target_os = "linux") && have("nm") {
            assert!(
                !sections.contains(".llvmbc"),
                "the installed libghm.a still carries LLVM bitcode (no slim step?)"
            );
            let globals = run(Command::new("nm")
                .args(["-g", "--defined-only"])
                .arg(prefix.join("lib/libghm.a")));
            let names: Vec<&str> = globals
                .lines()
                .filter_map(|l| l.split_whitespace().nth(2))
                .collect();
            let built = run(Command::new("nm")
                .args(["-g", "--defined-only"])
                .arg(libdir.join("libghm.a")));
            let exported = built.lines().filter(|l| l.contains(" T ghm_")).count();
            assert!(
                !names.is_empty() && names.iter().all(|n| n.starts_with("ghm_")),
                "the installed libghm.a has other global symbols: {:?}",
                names
                    .iter()
                    .filter(|n| !n.starts_with("ghm_"))
                    .take(5)
                    .collect::<Vec<_>>()
            );
            assert_eq!(
                names.len(),
                exported,
                "every ghm_ function of the built archive"
            );
            let size = std::fs::metadata(prefix.join("lib/libghm.a"))
                .unwrap()
                .len();
            println!("installed libghm.a: {:.2} MB", size as f64 / 1e6);
        }
    }
    assert_eq!(
        std::fs::read(prefix.join("include/ghm.h")).unwrap(),
        std::fs::read(root.join("include/ghm.h")).unwrap(),
        "the installed ghm.h differs from include/ghm.h"
    );

    let pkgconfig = |args: &[&str]| {
        run(Command::new("pkg-config")
            .args(args)
            .arg("ghm")
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")))
        .trim()
        .to_owned()
    };
    assert_eq!(
        pkgconfig(&["--modversion"]),
        env!("CARGO_PKG_VERSION"),
        "ghm.pc's Version"
    );
    assert_eq!(
        pkgconfig(&["--variable=prefix"]),
        prefix.display().to_string(),
        "ghm.pc's prefix"
    );

    // A batch that is not a multiple of any vector width, with easy, hard, soft-target and
    // saturated elements, so that several bins are populated.
    let n = 29;
    let pred: Vec<f32> = (0..n)
        .map(|i| (i as f32 * 0.913).cos() * 5.0 + if i == 7 { -30.0 } else { 0.0 })
        .collect();
    let target: Vec<f32> = (0..n)
        .map(|i| match i % 5 {
            0 => 1.0,
            3 => 0.5,
            _ => 0.0,
        })
        .collect();
    let expected = GhmC::default()
        .loss_grad(None, &Dense::new(&pred, &target), Out::default())
        .expect("loss_grad");
    assert!(expected.is_finite() && expected > 0.0, "loss {expected}");
    std::fs::write(tmp.join("app.c"), c_program(&pred, &target)).expect("write app.c");

    let sh = |script: &str| {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(script)
            .current_dir(&tmp)
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
            .env("GHM_PREFIX", &prefix);
        c
    };

    // Dynamic, exactly the README's line.
    run(&mut sh(
        "cc app.c -o app_shared $(pkg-config --cflags --libs ghm)",
    ));
    let printed = run(Command::new(tmp.join("app_shared"))
        .env("LD_LIBRARY_PATH", prefix.join("lib"))
        .env("DYLD_LIBRARY_PATH", prefix.join("lib")));
    check_output("shared libghm.so", &printed, expected);
    // The program records the SONAME, not the file name it was linked with.
    if have("readelf") {
        let needed = run(Command::new("readelf")
            .arg("-d")
            .arg(tmp.join("app_shared")));
        let soname = format!("libghm.so.{}", abi());
        assert!(
            needed.contains(&format!("Shared library: [{soname}]")),
            "the program needs {soname}:\n{needed}"
        );
    }

    // Static: the archive by path (a plain `-lghm` picks the .so), then what `--static` adds.
    // The `-lghm` in that list finds nothing left to resolve; --as-needed keeps the linker from
    // recording libghm.so as needed anyway (Debian's gcc passes it by default, not every one).
    run(&mut sh(
        "cc app.c -o app_static $(pkg-config --cflags ghm) \
         \"$GHM_PREFIX/lib/libghm.a\" -Wl,--as-needed $(pkg-config --static --libs ghm)",
    ));
    // No LD_LIBRARY_PATH: fails to start if it needs libghm.so.
    let printed = run(Command::new(tmp.join("app_static"))
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("DYLD_LIBRARY_PATH"));
    check_output("static libghm.a", &printed, expected);

    cmake_consumers(&tmp, &prefix, expected);

    // `make uninstall` removes what `make install` put there.
    make("uninstall", &[]);
    for f in INSTALLED {
        assert!(!prefix.join(f).exists(), "make uninstall left {f}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
#[cfg(not(unix))]
fn make_install_then_pkg_config() {
    eprintln!("SKIPPED: make_install_then_pkg_config: needs a Unix cc, make and pkg-config");
}
