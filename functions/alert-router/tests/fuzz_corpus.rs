//! Replays the committed `cargo fuzz` corpus of the `alert_message` target
//! (`fuzz/corpus/alert_message/`) through the target's body (`fuzz/src/bodies.rs`) with
//! this crate's `normalise_event`, so a regression fails the ordinary `cargo test`.

// Only `alert_message` is this crate's; kbha-core's tests replay the others.
#[allow(dead_code)]
#[path = "../../../fuzz/src/bodies.rs"]
mod bodies;

use std::path::Path;

use kbha_alert_router::normalise::{MAX_TEXT_CHARS, normalise_event};

fn alert_message(data: &[u8]) {
    bodies::alert_message(data, MAX_TEXT_CHARS, |event, now| {
        normalise_event(event, now).into_iter().map(|m| (m.event_id, m.alert)).collect()
    });
}

#[test]
fn alert_message_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/alert_message");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()).unwrap_or_else(|e| panic!("{}: {e}", dir.display())))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no corpus", dir.display());
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| alert_message(&data)).is_err() {
            panic!("alert_message: {} fails (the panic above says why)", path.display());
        }
    }
    println!("alert_message: {} corpus inputs replayed", files.len());
}
