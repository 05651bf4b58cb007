//! Backend selection: the automatic choice, the `GHM_BACKEND` override (read once, at first
//! use, so it is tested in child processes) and `set_backend`.

mod common;

use std::process::Command;

use ghm::{set_backend, Backend, Dense, Error, GhmC, Out};

/// Not a test: the entry point of the child processes started below (it prints the backend
/// the child chose at its first use).
#[test]
#[ignore = "child process of environment_variable_overrides_the_automatic_choice"]
fn child_prints_active_backend() {
    if std::env::var_os("GHM_TEST_CHILD").is_some() {
        println!("active={}", Backend::active().name());
    }
}

fn active_in_child(env: Option<&str>) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "--ignored",
        "child_prints_active_backend",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("GHM_TEST_CHILD", "1")
    .env_remove("GHM_BACKEND");
    if let Some(v) = env {
        cmd.env("GHM_BACKEND", v);
    }
    let out = cmd.output().expect("run the test binary");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split("active=").nth(1))
        .map(|v| v.split_whitespace().next().unwrap_or(""))
        .unwrap_or_else(|| panic!("no backend line in {text}"))
        .to_string()
}

#[test]
fn environment_variable_overrides_the_automatic_choice() {
    // Under qemu-user this binary cannot exec itself (no binfmt handler for the guest).
    if let Some(why) = common::cross_compiled() {
        eprintln!("SKIPPED: environment_variable_overrides_the_automatic_choice: {why}");
        return;
    }
    assert_eq!(active_in_child(None), Backend::best().name());
    for b in Backend::all_available() {
        assert_eq!(
            active_in_child(Some(b.name())),
            b.name(),
            "GHM_BACKEND={}",
            b.name()
        );
    }
    // Unknown or unavailable names are ignored.
    assert_eq!(
        active_in_child(Some("no-such-backend")),
        Backend::best().name()
    );
    let unavailable = ["scalar", "sse2", "avx2", "avx512", "neon", "portable"]
        .into_iter()
        .filter_map(Backend::from_name)
        .find(|b| !b.is_available());
    if let Some(b) = unavailable {
        assert_eq!(
            active_in_child(Some(b.name())),
            Backend::best().name(),
            "{b:?}"
        );
    }
}

#[test]
fn set_backend_forces_and_restores() {
    let x = [0.3f32, -2.0, 4.0, -0.5, 1.5];
    let t = [1.0f32, 0.0, 1.0, 0.0, 0.0];
    let loss_on = |b: Option<Backend>| {
        GhmC {
            backend: b,
            ..GhmC::default()
        }
        .loss_grad(None, &Dense::new(&x, &t), Out::default())
        .unwrap()
    };
    for b in Backend::all_available() {
        set_backend(Some(b)).unwrap();
        assert_eq!(Backend::active(), b);
        // A configuration without a backend now runs on `b`: same result as forcing it.
        assert_eq!(loss_on(None).to_bits(), loss_on(Some(b)).to_bits());
    }
    set_backend(None).unwrap();
    assert_eq!(Backend::active(), Backend::best());
    if let Some(b) = ["avx512", "avx2", "neon", "sse2"]
        .into_iter()
        .filter_map(Backend::from_name)
        .find(|b| !b.is_available())
    {
        assert_eq!(set_backend(Some(b)), Err(Error::Config));
        assert_eq!(
            GhmC {
                backend: Some(b),
                ..GhmC::default()
            }
            .validate(),
            Err(Error::Config)
        );
        assert_eq!(Backend::active(), Backend::best());
    }
    assert!(Backend::all_available().any(|b| b == Backend::Scalar));
    assert!(Backend::all_available().any(|b| b == Backend::BASELINE));
    assert_eq!(Backend::from_name("avx512"), Some(Backend::Avx512));
}
