//! A `#![no_std]` consumer of `ghm`, exported to C. Its existence is the test: this crate
//! defines the `#[panic_handler]`, so linking it fails with a duplicate `panic_impl` if `ghm`
//! (or a dependency of it) links `std`.
#![no_std]

use core::panic::PanicInfo;

#[panic_handler]
fn panic(_info: &PanicInfo) -> ! {
    loop {}
}

/// GHM-C loss (mmdet's `GHMC()` defaults) of `n` logits `pred` against `n` targets `target`,
/// or NaN if `ghm` reports an error.
///
/// # Safety
///
/// `pred` and `target` must each point to `n` readable, initialized `f32`s (or be any
/// non-null, aligned pointer when `n == 0`).
#[no_mangle]
pub unsafe extern "C" fn nostd_ghmc_loss(pred: *const f32, target: *const f32, n: usize) -> f32 {
    // SAFETY: the caller guarantees that both pointers are valid for reads of `n` f32s
    // (see the function's `# Safety` section); the slices are only read, within this call.
    let (pred, target) = unsafe {
        (
            core::slice::from_raw_parts(pred, n),
            core::slice::from_raw_parts(target, n),
        )
    };
    ghm::GhmC::default()
        .loss_grad(None, &ghm::Dense::new(pred, target), ghm::Out::default())
        .unwrap_or(f32::NAN)
}
