//! Kernel backends, which one runs, and how to force one.
//!
//! With the `std` feature the best backend the CPU supports is picked at first use (AVX-512,
//! else AVX2 with FMA, else SSE2 on x86_64; NEON on aarch64) and cached. A `no_std` build
//! picks at compile time, from the target features it is compiled with. Either way the
//! choice can be overridden: by [`set_backend`] (and `ghm_set_backend` in C), or with `std`
//! by the environment variable `GHM_BACKEND` (`scalar`, `sse2`, `avx2`, `avx512`, `neon`,
//! `portable`), read once at first use. A name that is unknown or not available on this
//! machine is ignored; [`Backend::active`] (`ghm_backend()`) says what runs.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::error::Error;

/// A kernel implementation. Every backend computes the gradient norm `g` with the same
/// sequence of correctly rounded f32 operations, so all of them put every element in the same
/// bin; losses and gradients agree to within the accuracy bounds in the crate docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// One element at a time, written to read like the specification (uses `libm`).
    Scalar,
    /// 128-bit SSE2 vectors (the x86_64 baseline), through `wide`.
    Sse2,
    /// 256-bit AVX2 + FMA vectors (x86_64, chosen at run time).
    Avx2,
    /// 512-bit AVX-512 vectors with mask registers (x86_64, chosen at run time).
    Avx512,
    /// 128-bit NEON vectors (the aarch64 baseline), through `wide`.
    Neon,
    /// `wide`'s portable vectors on other architectures.
    Portable,
}

const ALL: [Backend; 6] = [
    Backend::Scalar,
    Backend::Sse2,
    Backend::Avx2,
    Backend::Avx512,
    Backend::Neon,
    Backend::Portable,
];

impl Backend {
    /// The `wide` backend every build has for its target architecture.
    pub const BASELINE: Backend = if cfg!(target_arch = "x86_64") {
        Backend::Sse2
    } else if cfg!(target_arch = "aarch64") {
        Backend::Neon
    } else {
        Backend::Portable
    };

    /// Short lowercase name, as `ghm_backend()` reports it and `GHM_BACKEND` takes it.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            Backend::Sse2 => "sse2",
            Backend::Avx2 => "avx2",
            Backend::Avx512 => "avx512",
            Backend::Neon => "neon",
            Backend::Portable => "portable",
        }
    }

    /// [`Backend::name`] as a NUL-terminated C string.
    pub const fn c_name(self) -> &'static core::ffi::CStr {
        match self {
            Backend::Scalar => c"scalar",
            Backend::Sse2 => c"sse2",
            Backend::Avx2 => c"avx2",
            Backend::Avx512 => c"avx512",
            Backend::Neon => c"neon",
            Backend::Portable => c"portable",
        }
    }

    /// The backend called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Backend> {
        ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether this build can run the backend on this machine.
    pub fn is_available(self) -> bool {
        match self {
            Backend::Scalar => true,
            b if b == Backend::BASELINE => true,
            Backend::Avx2 => x86::has_avx2_fma(),
            Backend::Avx512 => x86::has_avx512(),
            _ => false,
        }
    }

    /// Every backend that [`is_available`](Self::is_available) here, scalar first.
    pub fn all_available() -> impl Iterator<Item = Backend> {
        ALL.into_iter().filter(|b| b.is_available())
    }

    /// The fastest backend this machine runs.
    pub fn best() -> Backend {
        if Backend::Avx512.is_available() {
            Backend::Avx512
        } else if Backend::Avx2.is_available() {
            Backend::Avx2
        } else {
            Backend::BASELINE
        }
    }

    /// The backend used when a configuration does not force one: the override if one is set
    /// (by [`set_backend`] or `GHM_BACKEND`), else [`Backend::best`]. Decided at first use and
    /// cached; thread-safe, allocation-free.
    pub fn active() -> Backend {
        match ACTIVE.load(Ordering::Relaxed) {
            0 => {
                let b = env_override().unwrap_or_else(Backend::best);
                // A racing first use computes the same value, or a set_backend wins.
                let _ = ACTIVE.compare_exchange(0, code(b), Ordering::Relaxed, Ordering::Relaxed);
                decode(ACTIVE.load(Ordering::Relaxed))
            }
            c => decode(c),
        }
    }
}

/// The active backend, as its index in `ALL` plus one; 0 until decided.
static ACTIVE: AtomicU8 = AtomicU8::new(0);

fn code(b: Backend) -> u8 {
    ALL.iter().position(|&x| x == b).map_or(0, |i| i as u8 + 1)
}

fn decode(c: u8) -> Backend {
    ALL.get((c as usize).wrapping_sub(1))
        .copied()
        .unwrap_or(Backend::BASELINE)
}

/// Forces every call that does not name a backend to use `backend` (`None`: back to the
/// automatic choice). This is the library's only global mutable state. Returns
/// [`Error::Config`] if the backend is not available on this machine.
pub fn set_backend(backend: Option<Backend>) -> Result<(), Error> {
    let b = match backend {
        Some(b) if b.is_available() => b,
        Some(_) => return Err(Error::Config),
        None => Backend::best(),
    };
    ACTIVE.store(code(b), Ordering::Relaxed);
    Ok(())
}

/// `GHM_BACKEND`, if it names an available backend.
#[cfg(feature = "std")]
fn env_override() -> Option<Backend> {
    // `var_os` would allocate; the variable is read once, without allocating.
    let mut buf = [0u8; 16];
    let name = env::read("GHM_BACKEND", &mut buf)?;
    Backend::from_name(name).filter(|b| b.is_available())
}

#[cfg(not(feature = "std"))]
fn env_override() -> Option<Backend> {
    None
}

#[cfg(feature = "std")]
mod env {
    /// Copies the value of environment variable `key` into `buf` and returns it, if it is
    /// set, ASCII, and fits.
    #[cfg(unix)]
    pub(super) fn read<'b>(key: &str, buf: &'b mut [u8]) -> Option<&'b str> {
        extern "C" {
            fn getenv(name: *const core::ffi::c_char) -> *const core::ffi::c_char;
        }
        let mut k = [0u8; 32];
        k.get_mut(..key.len())?.copy_from_slice(key.as_bytes());
        // SAFETY: `k` is NUL-terminated (zero-filled past the key); getenv returns NULL or a
        // NUL-terminated string owned by the environment, read here once and copied. (As for
        // any reader of the environment, a concurrent setenv from C is the caller's to avoid.)
        let v = unsafe {
            let p = getenv(k.as_ptr().cast());
            if p.is_null() {
                return None;
            }
            core::ffi::CStr::from_ptr(p)
        };
        let v = v.to_bytes();
        let out = buf.get_mut(..v.len())?;
        out.copy_from_slice(v);
        core::str::from_utf8(out).ok()
    }

    #[cfg(not(unix))]
    pub(super) fn read<'b>(key: &str, buf: &'b mut [u8]) -> Option<&'b str> {
        // One small allocation, once per process.
        let v = std::env::var(key).ok()?;
        let out = buf.get_mut(..v.len())?;
        out.copy_from_slice(v.as_bytes());
        core::str::from_utf8(out).ok()
    }
}

/// CPU feature checks: at run time with `std`, from the compile-time target features without.
mod x86 {
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    pub(super) fn has_avx2_fma() -> bool {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("popcnt")
    }

    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    pub(super) fn has_avx512() -> bool {
        has_avx2_fma()
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512dq")
    }

    #[cfg(all(target_arch = "x86_64", not(feature = "std")))]
    pub(super) fn has_avx2_fma() -> bool {
        cfg!(all(
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "popcnt"
        ))
    }

    #[cfg(all(target_arch = "x86_64", not(feature = "std")))]
    pub(super) fn has_avx512() -> bool {
        cfg!(all(
            target_feature = "avx512f",
            target_feature = "avx512bw",
            target_feature = "avx512vl",
            target_feature = "avx512dq",
            target_feature = "avx2",
            target_feature = "fma",
            target_feature = "popcnt"
        ))
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn has_avx2_fma() -> bool {
        false
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn has_avx512() -> bool {
        false
    }
}
