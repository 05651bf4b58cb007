//! Buffers that end exactly at a page boundary, an inaccessible page after them: a read or
//! write one byte past any buffer is a segmentation fault, not a silent over-read. Every
//! entry point family through the C ABI, on every backend, at every length 0..=70 (each
//! tail around every vector width) and a few longer ones, with the buffers' ends on the
//! boundary and 1 to 3 bytes before it (unaligned).
#![cfg(target_os = "linux")]

mod common;

use common::on_every_backend;
use core::ffi::c_void;
use core::ptr::{null, null_mut};
use ghm::ffi::*;
use ghm::{Hist, Weights};

extern "C" {
    fn mmap(addr: *mut c_void, len: usize, prot: i32, flags: i32, fd: i32, off: i64)
        -> *mut c_void;
    fn mprotect(addr: *mut c_void, len: usize, prot: i32) -> i32;
    fn munmap(addr: *mut c_void, len: usize) -> i32;
    fn sysconf(name: i32) -> i64;
}

const PROT_NONE: i32 = 0;
const PROT_READ_WRITE: i32 = 1 | 2;
const MAP_PRIVATE_ANONYMOUS: i32 = 0x02 | 0x20;
const SC_PAGESIZE: i32 = 30;

/// `bytes` bytes ending `gap` bytes before an inaccessible page.
struct PageEnd {
    map: *mut u8,
    map_len: usize,
    ptr: *mut u8,
}

impl PageEnd {
    fn new(bytes: usize, gap: usize) -> PageEnd {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { sysconf(SC_PAGESIZE) } as usize;
        let data_pages = (bytes + gap).div_ceil(page).max(1);
        let map_len = (data_pages + 1) * page;
        // SAFETY: a fresh anonymous private mapping; its last page made inaccessible.
        unsafe {
            let m = mmap(
                null_mut(),
                map_len,
                PROT_READ_WRITE,
                MAP_PRIVATE_ANONYMOUS,
                -1,
                0,
            );
            assert!(m as isize != -1, "mmap failed");
            let m = m as *mut u8;
            let guard = m.add(data_pages * page);
            assert_eq!(mprotect(guard as *mut c_void, page, PROT_NONE), 0);
            PageEnd {
                map: m,
                map_len,
                ptr: guard.sub(gap + bytes),
            }
        }
    }
    /// `v` as f32s (unaligned when `gap` is not a multiple of 4).
    fn floats(v: &[f32], gap: usize) -> PageEnd {
        let p = PageEnd::new(4 * v.len(), gap);
        // SAFETY: the mapping holds these bytes.
        unsafe { core::ptr::copy_nonoverlapping(v.as_ptr() as *const u8, p.ptr, 4 * v.len()) };
        p
    }
    fn ints(v: &[i32], gap: usize) -> PageEnd {
        let p = PageEnd::new(4 * v.len(), gap);
        // SAFETY: as above.
        unsafe { core::ptr::copy_nonoverlapping(v.as_ptr() as *const u8, p.ptr, 4 * v.len()) };
        p
    }
    fn f(&self) -> *mut f32 {
        self.ptr as *mut f32
    }
    fn i(&self) -> *const i32 {
        self.ptr as *const i32
    }
}

impl Drop for PageEnd {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { munmap(self.map as *mut c_void, self.map_len) };
    }
}

fn lengths() -> impl Iterator<Item = usize> {
    (0..=70).chain([127, 128, 129, 255, 1000, 4099])
}

fn logits(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 2.0)
        .collect()
}

fn targets(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 5 == 0) as u8 as f32).collect()
}

#[test]
fn dense_one_call_and_phased_at_the_page_end() {
    on_every_backend(|b| {
        for n in lengths() {
            for gap in [0, 1, 3] {
                let (x, t) = (logits(n), targets(n));
                let w: Vec<f32> = (0..n).map(|i| (i % 7 != 3) as u8 as f32).collect();
                let (px, pt, pw) = (
                    PageEnd::floats(&x, gap),
                    PageEnd::floats(&t, gap),
                    PageEnd::floats(&w, gap),
                );
                let (pg, pe) = (PageEnd::new(4 * n, gap), PageEnd::new(4 * n, gap));
                let mut loss = 0.0f32;
                let mut cfg = ghm_c_config_default();
                cfg.bins = 30;
                let mut rcfg = ghm_r_config_default();
                rcfg.bins = 30;
                let ctx = format!("{b:?} n {n} gap {gap}");
                // SAFETY: every buffer holds n elements, up to the guard page.
                unsafe {
                    let s = ghm_c_loss_grad(
                        &cfg,
                        null_mut(),
                        px.f(),
                        pt.f(),
                        pw.f(),
                        n,
                        pg.f(),
                        &mut loss,
                        pe.f(),
                        null_mut(),
                    );
                    assert_eq!(s, GHM_OK, "GHM-C {ctx}");
                    let s = ghm_r_loss_grad(
                        &rcfg,
                        null_mut(),
                        px.f(),
                        pt.f(),
                        pw.f(),
                        n,
                        pg.f(),
                        &mut loss,
                        pe.f(),
                        null_mut(),
                    );
                    assert_eq!(s, GHM_OK, "GHM-R {ctx}");
                    let mut h: Hist = core::mem::zeroed();
                    assert_eq!(ghm_hist_init(&mut h, 30), GHM_OK);
                    let s = ghm_c_accumulate(&cfg, px.f(), pt.f(), pw.f(), n, &mut h);
                    assert_eq!(s, GHM_OK, "accumulate {ctx}");
                    let mut wts: Weights = core::mem::zeroed();
                    let s = ghm_c_finalize(&cfg, null_mut(), &h, &mut wts);
                    assert_eq!(s, GHM_OK, "finalize {ctx}");
                    let s = ghm_c_apply(&cfg, &wts, px.f(), pt.f(), pw.f(), n, pg.f(), pe.f());
                    assert_eq!(s, GHM_OK, "apply {ctx}");
                }
            }
        }
    });
}

#[test]
fn labels_and_softmax_at_the_page_end() {
    on_every_backend(|b| {
        for classes in [1usize, 3, 16, 17, 80] {
            for anchors in (0..=40).chain([129]) {
                for gap in [0, 2] {
                    for layout in [GHM_LAYOUT_ANCHOR_MAJOR, GHM_LAYOUT_CLASS_MAJOR] {
                        let n = anchors * classes;
                        let x = logits(n);
                        let labels: Vec<i32> = (0..anchors)
                            .map(|a| (a % (classes + 2)) as i32 - 1)
                            .collect();
                        let aw: Vec<f32> =
                            (0..anchors).map(|a| (a % 4 != 1) as u8 as f32).collect();
                        let (px, pl, pw) = (
                            PageEnd::floats(&x, gap),
                            PageEnd::ints(&labels, gap),
                            PageEnd::floats(&aw, gap),
                        );
                        let (pg, pe, ps) = (
                            PageEnd::new(4 * n, gap),
                            PageEnd::new(4 * n, gap),
                            PageEnd::new(4 * anchors, gap),
                        );
                        let mut loss = 0.0f32;
                        let cfg = ghm_c_config_default();
                        let scfg = ghm_softmax_config_default();
                        let ctx =
                            format!("{b:?} C {classes} A {anchors} gap {gap} layout {layout}");
                        // SAFETY: every buffer holds its elements, up to the guard page.
                        unsafe {
                            let s = ghm_c_loss_grad_labels(
                                &cfg,
                                null_mut(),
                                px.f(),
                                pl.i(),
                                pw.f(),
                                anchors,
                                classes,
                                layout,
                                pg.f(),
                                &mut loss,
                                pe.f(),
                                null_mut(),
                            );
                            assert_eq!(s, GHM_OK, "labels {ctx}");
                            let s = ghm_softmax_loss_grad(
                                &scfg,
                                null_mut(),
                                px.f(),
                                pl.i(),
                                pw.f(),
                                anchors,
                                classes,
                                layout,
                                pg.f(),
                                &mut loss,
                                ps.f(),
                                null_mut(),
                            );
                            assert_eq!(s, GHM_OK, "softmax {ctx}");
                        }
                    }
                }
            }
        }
    });
}

#[test]
fn views_and_generic_rows_at_the_page_end() {
    on_every_backend(|b| {
        for len in lengths().filter(|&l| l <= 300) {
            for gap in [0, 1] {
                // Three blocks of `len`, 2 * len apart: the last block ends at the page end.
                let ext = if len == 0 { 0 } else { 4 * len + len };
                let x = logits(ext);
                let t = targets(ext);
                let (px, pt) = (PageEnd::floats(&x, gap), PageEnd::floats(&t, gap));
                let pg = PageEnd::new(4 * ext, gap);
                let blocks = ghm::Blocks::uniform(3, len, ghm::View::new(0, 2 * len));
                let cfg = ghm_c_config_default();
                let mut loss = 0.0f32;
                let ctx = format!("{b:?} len {len} gap {gap}");
                // SAFETY: every view's extent (4 len + len) is in its buffer.
                unsafe {
                    let s = ghm_c_loss_grad_blocks(
                        &cfg,
                        null_mut(),
                        &blocks,
                        px.f(),
                        pt.f(),
                        null(),
                        pg.f(),
                        &mut loss,
                        null_mut(),
                        null_mut(),
                    );
                    assert_eq!(s, GHM_OK, "blocks {ctx}");
                }
                // Generic GHM over `len` samples, rows of 3 floats, at the page end.
                let g: Vec<f32> = (0..len).map(|i| (i % 11) as f32 / 10.0).collect();
                let l: Vec<f32> = (0..len).map(|i| (i % 3) as f32).collect();
                let (pgn, pl) = (PageEnd::floats(&g, gap), PageEnd::floats(&l, gap));
                let rows_buf = PageEnd::floats(&vec![1.0f32; 3 * len], gap);
                let pf = PageEnd::new(4 * len, gap);
                let rows = ghm_g_rows {
                    grad: rows_buf.f(),
                    k: 3,
                    row_stride: 3,
                    elem_stride: 1,
                    block_len: 0,
                    block_stride: 0,
                };
                let gcfg = ghm_g_config_default();
                // SAFETY: len samples, rows of 3 adjacent floats.
                unsafe {
                    let s = ghm_g_loss_grad(
                        &gcfg,
                        null_mut(),
                        pgn.f(),
                        pl.f(),
                        null(),
                        len,
                        &rows,
                        pf.f(),
                        &mut loss,
                        null_mut(),
                    );
                    assert_eq!(s, GHM_OK, "generic {ctx}");
                }
            }
        }
    });
}
