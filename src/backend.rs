//! Kernel backends: which implementation runs the per-element passes.

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
    /// 128-bit NEON vectors (the aarch64 baseline), through `wide`.
    Neon,
    /// `wide`'s portable vectors on other architectures.
    Portable,
}

impl Backend {
    /// The vector backend every build of this crate has for its target architecture.
    pub const BASELINE: Backend = if cfg!(target_arch = "x86_64") {
        Backend::Sse2
    } else if cfg!(target_arch = "aarch64") {
        Backend::Neon
    } else {
        Backend::Portable
    };

    /// Short lowercase name, as `ghm_backend()` reports it.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            Backend::Sse2 => "sse2",
            Backend::Neon => "neon",
            Backend::Portable => "portable",
        }
    }

    /// [`Backend::name`] as a NUL-terminated C string.
    pub const fn c_name(self) -> &'static core::ffi::CStr {
        match self {
            Backend::Scalar => c"scalar",
            Backend::Sse2 => c"sse2",
            Backend::Neon => c"neon",
            Backend::Portable => c"portable",
        }
    }

    /// Whether this build can run the backend on this machine.
    pub fn is_available(self) -> bool {
        self == Backend::Scalar || self == Backend::BASELINE
    }

    /// Every backend that [`is_available`](Self::is_available) here, scalar first.
    pub fn all_available() -> impl Iterator<Item = Backend> {
        [Backend::Scalar, Backend::BASELINE].into_iter()
    }

    /// The backend used when a configuration does not force one.
    pub fn active() -> Backend {
        Backend::BASELINE
    }
}
