//! Errors: one enum, whose discriminants are the C status codes of `docs/contract.md` section 3.

use core::ffi::CStr;
use core::fmt;

/// Why a call was refused. Whatever the error, the call wrote nothing: no output buffer, no
/// EMA state, no histogram and no statistics were modified.
///
/// The discriminants are the C ABI's `ghm_status` values (`GHM_ERR_*`); success is `0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Error {
    /// A required pointer was NULL (C ABI only; safe Rust cannot express it).
    Null = -1,
    /// A configuration value is out of range: `bins` outside `1..=MAX_BINS`, `momentum`
    /// outside `[0, 1)` or NaN, `mu` not finite or below `GhmR::MU_MIN`, a non-finite
    /// `loss_weight` or `grad_scale`, an unknown enum value; or `loss_weight * grad_scale` so
    /// large that a bin's gradient factor overflows f32.
    Config = -2,
    /// Caller-owned state does not fit the call: EMA state missing while `momentum > 0`, or
    /// EMA, histogram or weights made for another bin count, or holding impossible values.
    State = -3,
    /// An input element is bad (non-finite prediction, target or label weight, a negative
    /// label weight, or for GHM-C a target or probability outside `[0, 1]`) and `skip_bad` is
    /// off.
    Input = -4,
    /// An output buffer overlaps an input or another output (C ABI only; the borrow checker
    /// rules it out in Rust).
    Alias = -5,
    /// Buffer lengths disagree, a size product overflows, or an anchor range is out of
    /// bounds.
    Shape = -6,
}

impl Error {
    /// The C status code (`GHM_ERR_*`).
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// One sentence saying what went wrong; the same text `ghm_status_str` returns.
    pub fn message(self) -> &'static str {
        self.c_message().to_str().unwrap_or("ghm error")
    }

    /// [`Error::message`] as a NUL-terminated C string.
    pub const fn c_message(self) -> &'static CStr {
        match self {
            Error::Null => c"a required pointer argument was NULL",
            Error::Config => {
                c"invalid configuration: bins must be 1..=128, momentum in [0, 1), mu finite and at \
                  least 2^-63, loss_weight and grad_scale finite (and their product small enough that \
                  no gradient factor overflows), and every enum field a known value"
            }
            Error::State => {
                c"caller-owned state does not match the call: EMA state is missing while \
                  momentum > 0, or an EMA, histogram or weights object was made for another bin \
                  count or holds impossible values"
            }
            Error::Input => {
                c"bad input element: a prediction, target or label weight is NaN or infinite, a \
                  label weight is negative, or a GHM-C target or probability is outside [0, 1] \
                  (set skip_bad to exclude such elements instead)"
            }
            Error::Alias => c"an output buffer overlaps an input buffer or another output buffer",
            Error::Shape => {
                c"inconsistent sizes: buffer lengths differ, a size product overflows, or an \
                  anchor range is out of bounds"
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
