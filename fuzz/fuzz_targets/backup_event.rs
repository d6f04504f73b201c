#![no_main]
//! cargo fuzz target; the body and its properties are in `kbha_fuzz::bodies::backup_event`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| kbha_fuzz::bodies::backup_event(data));
