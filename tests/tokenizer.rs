//! Parity of `tipedge::text` with open_clip's tokenizer.
//!
//! The reference ids in `models/fixtures/reference/tokens.json` are produced by
//! `models/make_token_refs.py` with `open_clip.tokenize` (OpenAI CLIP's
//! SimpleTokenizer). Every case must match exactly.
#![cfg(feature = "runtime")]

use tipedge::text::{Tokenizer, EOT, SOT, VOCAB_SIZE};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/fixtures/reference/tokens.json"
);

struct Case {
    text: String,
    ids: Vec<i64>,
}

fn load() -> (String, usize, Vec<Case>) {
    let raw = std::fs::read_to_string(FIXTURE).unwrap_or_else(|e| panic!("reading {FIXTURE}: {e}"));
    let doc: serde_json::Value = serde_json::from_str(&raw).expect("tokens.json is valid JSON");
    let generator = doc["generator"].as_str().expect("generator").to_string();
    let context_length = doc["context_length"].as_u64().expect("context_length") as usize;
    let cases = doc["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().expect("text").to_string(),
            ids: c["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_i64().expect("integer id"))
                .collect(),
        })
        .collect();
    (generator, context_length, cases)
}

#[test]
fn matches_open_clip_reference_ids() {
    let (generator, context_length, cases) = load();
    assert!(
        cases.len() >= 200,
        "expected at least 200 reference cases, got {}",
        cases.len()
    );
    let tok = Tokenizer::new();
    let mut failures = Vec::new();
    for case in &cases {
        assert_eq!(
            case.ids.len(),
            context_length,
            "malformed fixture row for {:?}",
            case.text
        );
        let got = tok.tokenize(&case.text, context_length);
        if got != case.ids {
            let first_diff = got
                .iter()
                .zip(&case.ids)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            failures.push(format!(
                "text {:?}\n  first difference at position {first_diff}\n  expected {:?}\n  got      {:?}",
                case.text, case.ids, got
            ));
        }
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("MISMATCH {f}");
        }
        panic!(
            "{} of {} cases differ from {generator}",
            failures.len(),
            cases.len()
        );
    }
    println!("{} cases identical to {generator}", cases.len());
}

#[test]
fn batch_matches_reference_rows() {
    let (_, context_length, cases) = load();
    let tok = Tokenizer::new();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let batch = tok.tokenize_batch(&texts, context_length);
    assert_eq!(batch.len(), cases.len() * context_length);
    for (row, case) in batch.chunks_exact(context_length).zip(&cases) {
        assert_eq!(row, case.ids.as_slice(), "batch row for {:?}", case.text);
    }
}

#[test]
fn reference_rows_are_well_formed() {
    let (_, _, cases) = load();
    for case in &cases {
        assert_eq!(case.ids[0], SOT as i64);
        assert!(
            case.ids.contains(&(EOT as i64)),
            "no EOT for {:?}",
            case.text
        );
        assert!(case
            .ids
            .iter()
            .all(|&x| (0..VOCAB_SIZE as i64).contains(&x)));
    }
}
