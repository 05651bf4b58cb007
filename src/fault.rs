//! What a refused C call can tell its caller: the error code, the argument (and field, and
//! element index) it is about, and why. C reads the last one with `ghm_last_error`.
//!
//! The C layer builds a [`Fault`] where it refuses a call; errors the safe core returns
//! carry only their [`Error`], and the C layer explains them from its arguments on that cold
//! path (which EMA, histogram or weights field, which configuration field, which element).
//! Every exported function that returns a status records its outcome for the calling
//! thread (with `std`; without it, for the process: see [`record`]).

use core::ffi::CStr;
use core::fmt::{self, Write};

use crate::error::Error;

/// A refused call, explained. Every string is a static C string (C reads them as they are);
/// `argument` is a parameter name as the C header spells it, or empty when no single argument
/// is to blame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Fault {
    pub error: Error,
    /// The parameter: `"pred"`, `"cfg"`, `"blocks"`, `"h"`, ...
    pub argument: &'static CStr,
    /// The member of a struct argument (`"momentum"`, `"grad.stride"`), or empty.
    pub field: &'static CStr,
    /// The element (or bin) of the argument: `pred[index]` in the caller's buffer.
    pub index: Option<u64>,
    /// The offending value, when there is one.
    pub value: Option<f64>,
    /// The other argument involved (the input an output overlaps), or empty.
    pub other: &'static CStr,
    /// Why, as a phrase that follows the argument ("is NULL", "is not finite").
    pub why: &'static CStr,
}

impl Fault {
    pub const fn new(error: Error, argument: &'static CStr, why: &'static CStr) -> Fault {
        Fault {
            error,
            argument,
            field: c"",
            index: None,
            value: None,
            other: c"",
            why,
        }
    }

    /// The same fault, about `argument`.
    pub const fn named(mut self, argument: &'static CStr) -> Fault {
        self.argument = argument;
        self
    }

    pub const fn field(mut self, field: &'static CStr) -> Fault {
        self.field = field;
        self
    }

    pub const fn at(mut self, index: usize) -> Fault {
        self.index = Some(index as u64);
        self
    }

    pub const fn value(mut self, v: f64) -> Fault {
        self.value = Some(v);
        self
    }

    pub const fn other(mut self, other: &'static CStr) -> Fault {
        self.other = other;
        self
    }

    /// Writes the one-line message: `argument.field[index] = value: why other`, or the
    /// code's general sentence when no argument is named.
    pub fn write(&self, out: &mut impl Write) -> fmt::Result {
        let text = |c: &'static CStr| c.to_str().unwrap_or("?");
        if self.argument.is_empty() {
            return out.write_str(self.error.message());
        }
        out.write_str(text(self.argument))?;
        if !self.field.is_empty() {
            write!(out, ".{}", text(self.field))?;
        }
        if let Some(i) = self.index {
            write!(out, "[{i}]")?;
        }
        match self.value {
            // A count, an index or an integral value prints as an integer.
            Some(v) if libm::trunc(v) == v && (0.0..1.8e19).contains(&v) => {
                write!(out, " = {}", v as u64)?
            }
            Some(v) if libm::trunc(v) == v && (-9.2e18..0.0).contains(&v) => {
                write!(out, " = {}", v as i64)?
            }
            // An f32 (a configuration field, an element) prints as one: 0.1, not 0.10000000149.
            Some(v) if (v as f32) as f64 == v || v.is_nan() => write!(out, " = {}", v as f32)?,
            Some(v) => write!(out, " = {v}")?,
            None => {}
        }
        write!(out, " {}", text(self.why))?;
        if !self.other.is_empty() {
            write!(out, " {}", text(self.other))?;
        }
        Ok(())
    }
}

/// A bare error: no argument named (only the safe core's own errors that the C layer could
/// not pin down become this; the tests require that none of the documented paths does).
impl From<Error> for Fault {
    fn from(error: Error) -> Fault {
        Fault::new(error, c"", c"")
    }
}

/// Writes into a fixed buffer, truncating (at a character boundary) and always leaving room
/// for the NUL.
pub(crate) struct Fixed<'a> {
    pub buf: &'a mut [u8],
    pub len: usize,
}

impl Write for Fixed<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len().saturating_sub(1 + self.len);
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// The outcome of the calling thread's last call: `None` for success.
#[cfg(feature = "std")]
mod slot {
    use super::Fault;
    use std::cell::Cell;

    std::thread_local! {
        static LAST: Cell<Option<Fault>> = const { Cell::new(None) };
    }

    pub fn set(f: Option<Fault>) {
        LAST.with(|l| l.set(f));
    }

    pub fn get() -> Option<Fault> {
        LAST.with(|l| l.get())
    }
}

/// Without `std` there are no thread-locals: one slot for the process, behind a flag that a
/// second thread finding it taken gives up on (its outcome is then not recorded) rather than
/// waits for. A single-threaded program, the usual no_std one, always sees its last call.
#[cfg(not(feature = "std"))]
mod slot {
    use super::Fault;
    use core::cell::UnsafeCell;
    use core::sync::atomic::{AtomicBool, Ordering};

    struct Slot {
        busy: AtomicBool,
        last: UnsafeCell<Option<Fault>>,
    }

    // SAFETY: `last` is only touched by the thread that set `busy` (acquire/release below).
    unsafe impl Sync for Slot {}

    static SLOT: Slot = Slot {
        busy: AtomicBool::new(false),
        last: UnsafeCell::new(None),
    };

    fn with<R>(f: impl FnOnce(&mut Option<Fault>) -> R) -> Option<R> {
        if SLOT
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // SAFETY: this thread holds `busy`, so no other reference to `last` exists.
        let r = f(unsafe { &mut *SLOT.last.get() });
        SLOT.busy.store(false, Ordering::Release);
        Some(r)
    }

    pub fn set(f: Option<Fault>) {
        with(|l| *l = f);
    }

    pub fn get() -> Option<Fault> {
        with(|l| *l).flatten()
    }
}

/// Records a call's outcome for [`last`].
pub(crate) fn record(outcome: Result<(), Fault>) {
    slot::set(outcome.err());
}

/// The last recorded outcome's fault (`None`: it succeeded, or nothing was called yet).
pub(crate) fn last() -> Option<Fault> {
    slot::get()
}
