//! The training log line: one batch's GHM statistics as one line of JSON, written into a
//! caller's buffer without allocating (C: `ghm_log_stats`, `ghm_log_weights`).
//!
//! Schema, version 1 (the `"v"` field; fields are only ever added, in a later version):
//!
//! ```text
//! {"v":1,"iter":120,"tag":"yolo-82 obj","bins":10,"g_max":1.0,
//!  "edges":[0.0,0.1,...,1.0],"counts":[...],"weights":[...],
//!  "nonempty":7,"tot":3042.0,"skipped":0,"loss":0.4821}
//! ```
//!
//! (one line, no spaces). `edges` has `bins + 1` entries, `k / bins * g_max` (the last is
//! `g_max`; GHM-C's and softmax's last bin also takes `g` up to `1 + 1e-6`, GHM-R's and the
//! generic path's every `g` above); `counts` and `weights` have `bins` entries each: the valid
//! elements of each bin in this batch and the bin's harmonizing weight `w_k`. Numbers are
//! JSON numbers, each the shortest decimal that reads back as the same value: as an f32 for
//! `g_max`, `edges`, `weights`, and for `tot` and `loss` when they are f32 values (a C
//! caller's `float` loss), as an f64 otherwise. A non-finite value, which the library never
//! produces in these fields, would be `null`.

use core::fmt::{self, Write};

use crate::config::MAX_BINS;
use crate::error::Error;
use crate::state::{Hist, Stats, Weights};

/// The schema's version, the line's `"v"` field (C: `GHM_LOG_VERSION`).
pub const LOG_VERSION: u32 = 1;

/// The longest tag, in bytes (UTF-8, before escaping; C: `GHM_LOG_TAG_MAX`).
pub const LOG_TAG_MAX: usize = 64;

/// A buffer of this many bytes (C: `GHM_LOG_LINE_MAX`) holds any log line and its NUL: 128 bins of the longest
/// counts, weights and edges, and a tag of [`LOG_TAG_MAX`] bytes that all need escaping.
pub const LOG_LINE_MAX: usize = 10240;

/// One log line: what it says about one batch, borrowed from the statistics of the call.
#[derive(Clone, Copy, Debug)]
pub struct LogLine<'a> {
    /// The caller's iteration (batch) number.
    pub iteration: u64,
    /// The caller's name for this loss, such as `"yolo-82 obj"`: at most [`LOG_TAG_MAX`]
    /// bytes.
    pub tag: &'a str,
    /// The top of the range of `g`: 1 for GHM-C, GHM-R and softmax; the generic
    /// configuration's `g_max`. Finite and positive.
    pub g_max: f32,
    /// The bin count, `1..=MAX_BINS`.
    pub bins: u32,
    /// Valid elements per bin (the first `bins` are written).
    pub counts: &'a [u64; MAX_BINS],
    /// Harmonizing weight `w_k` per bin (the first `bins` are written).
    pub weights: &'a [f32; MAX_BINS],
    /// Bins holding at least one valid element.
    pub nonempty: u32,
    /// The avg factor used, `max(tot, 1)`.
    pub tot: f64,
    /// Bad elements excluded (with `skip_bad`).
    pub skipped: u64,
    /// The reduced loss of the batch.
    pub loss: f64,
}

impl<'a> LogLine<'a> {
    /// The line of a one-call function's [`Stats`] and the loss it returned.
    pub fn from_stats(stats: &'a Stats, loss: f64, iteration: u64, tag: &'a str) -> Self {
        LogLine {
            iteration,
            tag,
            g_max: 1.0,
            bins: stats.bins,
            counts: &stats.counts,
            weights: &stats.weights,
            nonempty: stats.nonempty_bins,
            tot: stats.tot,
            skipped: stats.skipped,
            loss,
        }
    }

    /// The line of the phased API's merged [`Hist`] and the [`Weights`] `finalize` made of it.
    pub fn from_weights(hist: &'a Hist, w: &'a Weights, iteration: u64, tag: &'a str) -> Self {
        LogLine {
            iteration,
            tag,
            g_max: 1.0,
            bins: w.bins,
            counts: &hist.counts,
            weights: &w.weight,
            nonempty: w.nonempty_bins,
            tot: w.tot,
            skipped: hist.skipped,
            loss: w.loss,
        }
    }

    /// The same line with another `g_max` (the generic path's).
    pub fn g_max(self, g_max: f32) -> Self {
        LogLine { g_max, ..self }
    }

    /// What is wrong with the line's fields, if anything.
    pub(crate) fn problem(&self) -> Option<Problem> {
        if self.tag.len() > LOG_TAG_MAX {
            Some(Problem::LongTag)
        } else if !(self.g_max > 0.0 && self.g_max.is_finite()) {
            Some(Problem::GMax)
        } else if self.bins == 0 || self.bins as usize > MAX_BINS {
            Some(Problem::Bins)
        } else if self.nonempty > self.bins {
            Some(Problem::Nonempty)
        } else {
            None
        }
    }

    /// [`Error::Config`] for a tag longer than [`LOG_TAG_MAX`] bytes or a `g_max` that is
    /// not finite and positive, [`Error::State`] for a bin count outside `1..=MAX_BINS` or
    /// more non-empty bins than bins.
    pub fn check(&self) -> Result<(), Error> {
        self.problem().map_or(Ok(()), |p| Err(p.error()))
    }

    /// The line's length in bytes (no newline, no NUL); the line must [`check`](Self::check).
    pub fn len(&self) -> usize {
        let mut c = Count(0);
        // Counting never fails.
        let _ = self.emit(&mut c);
        c.0
    }

    /// Whether the line is empty: never (it is at least `{"v":1,...}`).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the line into the start of `buf` and returns its length (no newline, no NUL).
    /// On error nothing is written: [`LogLine::check`]'s errors, or [`Error::Shape`] when
    /// `buf` is shorter than [`LogLine::len`].
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.check()?;
        let n = self.len();
        let dst = buf.get_mut(..n).ok_or(Error::Shape)?;
        self.write_exact(dst);
        Ok(n)
    }

    /// Writes the line, known to [`check`](Self::check), into `dst`, which is exactly
    /// [`len`](Self::len) bytes long.
    pub(crate) fn write_exact(&self, dst: &mut [u8]) {
        let mut w = Fill { buf: dst, at: 0 };
        let done = self.emit(&mut w);
        debug_assert!(done.is_ok() && w.at == w.buf.len());
    }

    fn emit(&self, w: &mut impl Write) -> fmt::Result {
        let m = (self.bins as usize).min(MAX_BINS);
        write!(
            w,
            "{{\"v\":{LOG_VERSION},\"iter\":{},\"tag\":\"",
            self.iteration
        )?;
        for c in self.tag.chars() {
            match c {
                '"' => w.write_str("\\\"")?,
                '\\' => w.write_str("\\\\")?,
                c if (c as u32) < 0x20 || c == '\u{7f}' => write!(w, "\\u{:04x}", c as u32)?,
                c => w.write_char(c)?,
            }
        }
        write!(w, "\",\"bins\":{m},\"g_max\":")?;
        num32(w, self.g_max)?;
        w.write_str(",\"edges\":")?;
        list(w, (0..=m).map(|k| edge(k, m, self.g_max)), num32)?;
        w.write_str(",\"counts\":")?;
        list(w, self.counts[..m].iter(), |w, c| write!(w, "{c}"))?;
        w.write_str(",\"weights\":")?;
        list(w, self.weights[..m].iter().copied(), num32)?;
        write!(w, ",\"nonempty\":{},\"tot\":", self.nonempty)?;
        num64(w, self.tot)?;
        write!(w, ",\"skipped\":{},\"loss\":", self.skipped)?;
        num64(w, self.loss)?;
        w.write_char('}')
    }
}

/// What [`LogLine::check`] refuses, for the C layer's reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Problem {
    LongTag,
    GMax,
    Bins,
    Nonempty,
}

impl Problem {
    /// The error it is: a bad argument ([`Error::Config`]) or bad statistics
    /// ([`Error::State`]).
    pub(crate) fn error(self) -> Error {
        match self {
            Problem::LongTag | Problem::GMax => Error::Config,
            Problem::Bins | Problem::Nonempty => Error::State,
        }
    }
}

/// `[a,b,...]`: each item written by `each`.
fn list<W: Write, T>(
    w: &mut W,
    items: impl Iterator<Item = T>,
    each: impl Fn(&mut W, T) -> fmt::Result,
) -> fmt::Result {
    w.write_char('[')?;
    for (k, x) in items.enumerate() {
        if k > 0 {
            w.write_char(',')?;
        }
        each(w, x)?;
    }
    w.write_char(']')
}

/// Edge `k` of `m` bins over `[0, g_max]`: `k / m * g_max`, and `g_max` itself for `k = m`.
fn edge(k: usize, m: usize, g_max: f32) -> f32 {
    if k >= m {
        g_max
    } else {
        k as f32 / m as f32 * g_max
    }
}

/// An f32 as a JSON number: Rust's shortest round-trip form (`0.1`, `1.0`, `3e-7`,
/// `3.4028235e38`), all of which JSON reads; `null` if not finite.
fn num32(w: &mut impl Write, x: f32) -> fmt::Result {
    if x.is_finite() {
        write!(w, "{x:?}")
    } else {
        w.write_str("null")
    }
}

/// An f64 as [`num32`] does; in f32's shortest form when it is an f32 (a C caller's `float`
/// loss passed as `double` reads `0.25`, not `0.25000000372529030`).
fn num64(w: &mut impl Write, x: f64) -> fmt::Result {
    if x as f32 as f64 == x {
        num32(w, x as f32)
    } else if x.is_finite() {
        write!(w, "{x:?}")
    } else {
        w.write_str("null")
    }
}

/// Counts the bytes written.
struct Count(usize);

impl Write for Count {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// Writes into a byte buffer, failing (with nothing past its end) when it is full.
struct Fill<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl Write for Fill<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.at.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.buf.get_mut(self.at..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.at = end;
        Ok(())
    }
}
