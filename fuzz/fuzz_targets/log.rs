#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ghm_fuzz::log(data));
