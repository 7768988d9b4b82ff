//! Arbitrary bytes into the control-socket command parser, `tipedge::device::control::
//! parse_command` (one line a client sent to `tipedge stream --control`, without its newline).
//! Beyond "returns Ok or Err, never panics", what must hold:
//!
//! - a line longer than `MAX_COMMAND_LEN` is always refused, with a short message;
//! - a refusal is one non-empty line (no '\n' or '\r': it is written to the service log as
//!   `control: refused: {e}`) and bounded: at most `MAX_COMMAND_LEN + MAX_ERR_OVERHEAD` bytes
//!   whatever the input (parse_command escapes and cuts what serde_json quotes of the line);
//! - an `enrol` that parses has 1..=`MAX_ENROL_FRAMES` frames and a class name of
//!   1..=`MAX_CLASS_LEN` bytes without control characters;
//! - what parses, written back as canonical JSON, parses to the same command (nothing in the
//!   line changed the meaning beyond the three fields), and parsing is deterministic.
//!
//! `TIPEDGE_FUZZ_REPORT_LONG_ERR=1` prints every refusal that is longer than any before it
//! (and over 300 bytes), to see how much of the input a refusal echoes.
//!
#![no_main]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tipedge::device::control::{
    parse_command, Command, MAX_CLASS_LEN, MAX_COMMAND_LEN, MAX_ENROL_FRAMES,
};

/// What a refusal may add to the part of the line it quotes.
const MAX_ERR_OVERHEAD: usize = 512;
/// A refusal of an over-long line says so in a sentence, without quoting it.
const MAX_TOO_LONG_ERR: usize = 200;

fn report_long() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TIPEDGE_FUZZ_REPORT_LONG_ERR").is_some_and(|v| v == "1"))
}

fn canonical(command: &Command) -> String {
    match command {
        Command::Status {} => r#"{"cmd":"status"}"#.to_string(),
        Command::Reload {} => r#"{"cmd":"reload"}"#.to_string(),
        Command::Enrol { class, frames, new } => format!(
            r#"{{"cmd":"enrol","class":{},"frames":{frames},"new":{new}}}"#,
            serde_json::to_string(class).expect("a string serialises")
        ),
    }
}

fuzz_target!(|line: &[u8]| {
    let parsed = parse_command(line);
    assert_eq!(parsed, parse_command(line), "parsing is not deterministic");
    match parsed {
        Err(e) => {
            assert!(!e.is_empty(), "empty refusal");
            assert!(
                !e.contains(['\n', '\r']),
                "multi-line refusal ({} bytes): {e:?}",
                e.len()
            );
            assert!(
                e.len() <= MAX_COMMAND_LEN + MAX_ERR_OVERHEAD,
                "refusal of {} bytes for a line of {}",
                e.len(),
                line.len()
            );
            if line.len() > MAX_COMMAND_LEN {
                assert!(
                    e.len() <= MAX_TOO_LONG_ERR,
                    "an over-long line's refusal is {} bytes",
                    e.len()
                );
            }
            if report_long() {
                static LONGEST: AtomicUsize = AtomicUsize::new(300);
                if e.len() > LONGEST.fetch_max(e.len(), Ordering::Relaxed) {
                    eprintln!(
                        "longest refusal so far: {} bytes for a line of {} bytes: {}",
                        e.len(),
                        line.len(),
                        e.escape_debug()
                    );
                }
            }
        }
        Ok(command) => {
            assert!(
                line.len() <= MAX_COMMAND_LEN,
                "a line of {} bytes was accepted",
                line.len()
            );
            if let Command::Enrol { class, frames, .. } = &command {
                assert!(
                    (1..=MAX_ENROL_FRAMES).contains(frames),
                    "enrol of {frames} frames accepted"
                );
                assert!(
                    (1..=MAX_CLASS_LEN).contains(&class.len()),
                    "class name of {} bytes accepted",
                    class.len()
                );
                assert!(
                    !class.chars().any(char::is_control),
                    "class name with a control character accepted: {class:?}"
                );
            }
            let again = canonical(&command);
            assert_eq!(
                parse_command(again.as_bytes()),
                Ok(command),
                "the canonical form {again} does not parse back"
            );
        }
    }
});
