//! The C ABI of the training log line ([`LogLine`]): one batch's statistics as one line of
//! JSON in the caller's buffer, NUL-terminated, with the usual checks (NULL, sizes, overlaps,
//! the statistics' bin counts; nothing written on error).

use core::ffi::{c_char, CStr};

use super::{disjoint, ghm_status, one_required, status, Buf, Named};
use crate::error::Error;
use crate::fault::Fault;
use crate::log::{LogLine, Problem, LOG_TAG_MAX};
use crate::state::{Hist, Stats, Weights};

/// The tag: `""` for NULL, else the bytes up to its NUL (read no further, and at most
/// `GHM_LOG_TAG_MAX + 1` bytes), which must be UTF-8; with the bytes it covers, NUL included
/// (for the overlap checks).
///
/// # Safety
/// `tag` is NULL or a NUL-terminated string (or one of more than `GHM_LOG_TAG_MAX` bytes).
unsafe fn read_tag<'a>(tag: *const c_char) -> Result<(&'a str, Named), Fault> {
    if tag.is_null() {
        return Ok(("", (c"tag", None)));
    }
    let mut n = 0;
    // SAFETY: each byte read is before the string's NUL (the loop stops at it), within the
    // C string the caller passed.
    while unsafe { *tag.add(n) } != 0 {
        n += 1;
        if n > LOG_TAG_MAX {
            let f = Fault::new(
                Error::Config,
                c"tag",
                c"is longer than GHM_LOG_TAG_MAX bytes",
            );
            return Err(f);
        }
    }
    // SAFETY: the `n` bytes just read, valid for `'a` per the C contract.
    let bytes = unsafe { core::slice::from_raw_parts(tag as *const u8, n) };
    let s = core::str::from_utf8(bytes)
        .map_err(|_| Fault::new(Error::Config, c"tag", c"is not UTF-8"))?;
    let region = Buf::required(tag as *const u8, n + 1, c"tag")?.region();
    Ok((s, (c"tag", Some(region))))
}

/// Checks `line`, its overlaps with `buf` and `len`, and writes it with its NUL.
///
/// # Safety
/// `buf` is valid for `buf_len` bytes of writes, `len` NULL or valid for one write, and the
/// inputs (`inputs`, their regions) valid for reads while the line is written.
unsafe fn write_line(
    line: LogLine<'_>,
    src: &'static CStr,
    inputs: &[Named],
    buf: *mut c_char,
    buf_len: usize,
    len: *mut usize,
) -> Result<(), Fault> {
    if buf.is_null() {
        return Err(Fault::new(Error::Null, c"buf", c"is NULL"));
    }
    let out = Buf::required(buf as *const u8, buf_len, c"buf")?;
    let len_out = super::one(len as *const usize, c"len")?;
    disjoint(
        inputs,
        &[
            (c"buf", Some(out.region())),
            (c"len", len_out.map(|b| b.region())),
        ],
    )?;
    if let Some(p) = line.problem() {
        let e = p.error();
        return Err(match p {
            Problem::LongTag => Fault::new(e, c"tag", c"is longer than GHM_LOG_TAG_MAX bytes"),
            Problem::GMax => {
                Fault::new(e, c"g_max", c"is not finite and positive").value(line.g_max as f64)
            }
            Problem::Bins => Fault::new(e, src, c"is not in 1..=128")
                .field(c"bins")
                .value(line.bins as f64),
            Problem::Nonempty => Fault::new(e, src, c"is more than bins")
                .field(c"nonempty_bins")
                .value(line.nonempty as f64),
        });
    }
    let n = line.len();
    if n >= buf_len {
        let why = c"is too small: the line and its NUL need this many bytes";
        return Err(Fault::new(Error::Shape, c"buf_len", why).value((n + 1) as f64));
    }
    // SAFETY: valid for `buf_len` writes (the C contract), disjoint from the inputs (checked),
    // aligned (bytes).
    let dst = unsafe { out.slice_mut() };
    line.write_exact(&mut dst[..n]);
    dst[n] = 0;
    if let Some(l) = len_out {
        // SAFETY: valid for one write (the C contract), disjoint from `buf` (checked).
        unsafe { l.set(0, n) };
    }
    Ok(())
}

/// Formats the statistics of one call (`stats`, as a one-call function filled them, and the
/// `loss` it returned) as one line of JSON (schema version GHM_LOG_VERSION, in the README),
/// NUL-terminated, into `buf`; `*len` (if `len` is not NULL) receives its length without the
/// NUL. `tag` (NULL: empty) names the loss in the log, at most GHM_LOG_TAG_MAX bytes of
/// UTF-8; `g_max` is the top of the range of `g` (1 for GHM-C, GHM-R and softmax; the generic
/// configuration's `g_max`). A buffer of GHM_LOG_LINE_MAX bytes always suffices; a smaller
/// one that cannot hold the line is GHM_ERR_SHAPE (the report's value is the bytes needed),
/// with nothing written. Allocates nothing.
///
/// # Safety
/// `stats` points to a `ghm_stats`, `tag` is NULL or a NUL-terminated string, `buf` is valid
/// for `buf_len` bytes, `len` is NULL or valid for one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn ghm_log_stats(
    stats: *const Stats,
    loss: f64,
    iteration: u64,
    tag: *const c_char,
    g_max: f32,
    buf: *mut c_char,
    buf_len: usize,
    len: *mut usize,
) -> ghm_status {
    status((|| {
        let s = one_required(stats, c"stats")?;
        // SAFETY: NULL or NUL-terminated (the C contract).
        let (t, tag_region) = unsafe { read_tag(tag) }?;
        // SAFETY: a valid `ghm_stats` (the C contract), read unaligned.
        let st = unsafe { super::read(s) };
        let line = LogLine::from_stats(&st, loss, iteration, t).g_max(g_max);
        let inputs = [(c"stats", Some(s.region())), tag_region];
        // SAFETY: per this function's contract.
        unsafe { write_line(line, c"stats", &inputs, buf, buf_len, len) }
    })())
}

/// As `ghm_log_stats`, for the phased API: the merged histogram `hist` of the batch and the
/// weights `w` that `*_finalize` made of it (the loss is `w->loss`).
///
/// # Safety
/// `hist` and `w` point to a `ghm_hist` and a `ghm_weights`; the rest as `ghm_log_stats`.
#[no_mangle]
pub unsafe extern "C" fn ghm_log_weights(
    hist: *const Hist,
    w: *const Weights,
    iteration: u64,
    tag: *const c_char,
    g_max: f32,
    buf: *mut c_char,
    buf_len: usize,
    len: *mut usize,
) -> ghm_status {
    status((|| {
        let h = one_required(hist, c"hist")?;
        let wb = one_required(w, c"w")?;
        // SAFETY: NULL or NUL-terminated (the C contract).
        let (t, tag_region) = unsafe { read_tag(tag) }?;
        // SAFETY: a valid `ghm_hist` and `ghm_weights` (the C contract), read unaligned.
        let (hs, ws) = unsafe { (super::read(h), super::read(wb)) };
        if hs.bins != ws.bins {
            let why = c"differs from w.bins (a histogram of another bin count)";
            return Err(Fault::new(Error::State, c"hist", why)
                .field(c"bins")
                .value(hs.bins as f64));
        }
        let line = LogLine::from_weights(&hs, &ws, iteration, t).g_max(g_max);
        let inputs = [
            (c"hist", Some(h.region())),
            (c"w", Some(wb.region())),
            tag_region,
        ];
        // SAFETY: per this function's contract.
        unsafe { write_line(line, c"w", &inputs, buf, buf_len, len) }
    })())
}
