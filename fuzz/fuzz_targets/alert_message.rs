#![no_main]
//! cargo fuzz target; the body and its properties are in `kbha_fuzz::bodies::alert_message`.

use kbha_fuzz::alert_normalise::{MAX_TEXT_CHARS, normalise_event};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kbha_fuzz::bodies::alert_message(data, MAX_TEXT_CHARS, |event, now| {
        normalise_event(event, now).into_iter().map(|m| (m.event_id, m.alert)).collect()
    })
});
