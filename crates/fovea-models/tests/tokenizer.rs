//! The real CLIP BPE (49408 tokens, tests/fixtures/clip_tokenizer, built from
//! open-clip's vocabulary by tests/fixtures/make_fixtures.py) must give exactly
//! transformers' CLIPTokenizer ids, loaded either way an SD folder may ship it.

use std::path::{Path, PathBuf};

use fovea_models::ClipTokenizer;
use fovea_models::tokenizer::Files;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    vocab_size: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    slow_ids: Vec<u32>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn check(tok: &ClipTokenizer, how: &str) {
    let fx: Fixture = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tokenizer_ids.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(tok.vocab_size(), fx.vocab_size, "{how}");
    for case in &fx.cases {
        let ids = tok.encode(&case.prompt).unwrap();
        assert_eq!(ids, case.slow_ids, "{how}: prompt {:?}", case.prompt);
    }
}

#[test]
fn tokenizer_json_matches_transformers_ids() {
    let dir = fixtures().join("clip_tokenizer");
    check(
        &ClipTokenizer::from_dir(&dir, 77).unwrap(),
        "tokenizer.json",
    );
}

#[test]
fn vocab_and_merges_match_transformers_ids() {
    let dir = fixtures().join("clip_tokenizer");
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
    let files = Files {
        tokenizer_json: None,
        vocab_json: Some(read("vocab.json")),
        merges_txt: Some(read("merges.txt")),
    };
    check(
        &ClipTokenizer::from_files(files, None, 77, "clip_tokenizer").unwrap(),
        "vocab.json + merges.txt",
    );
}

#[test]
fn long_prompts_are_truncated_to_the_context_with_the_end_token_kept() {
    let tok = ClipTokenizer::from_dir(&fixtures().join("clip_tokenizer"), 77).unwrap();
    let ids = tok.encode(&"word ".repeat(200)).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[76], tok.eos_id());
}

#[test]
fn missing_or_broken_tokenizer_files_are_named() {
    let e = ClipTokenizer::from_files(Files::default(), None, 77, "model/tokenizer").unwrap_err();
    assert!(
        e.to_string().contains("model/tokenizer") && e.to_string().contains("merges.txt"),
        "{e}"
    );
    let files = Files {
        tokenizer_json: None,
        vocab_json: Some("{not json".into()),
        merges_txt: Some(String::new()),
    };
    let e = ClipTokenizer::from_files(files, None, 77, "model/tokenizer").unwrap_err();
    assert!(e.to_string().contains("vocab.json"), "{e}");
    let files = Files {
        tokenizer_json: None,
        vocab_json: Some(r#"{"a": 0}"#.into()),
        merges_txt: Some("a b c\n".into()),
    };
    let e = ClipTokenizer::from_files(files, None, 77, "model/tokenizer").unwrap_err();
    assert!(
        e.to_string().contains("merges.txt") && e.to_string().contains("line 1"),
        "{e}"
    );
    let files = Files {
        tokenizer_json: None,
        vocab_json: Some(r#"{"a": 0}"#.into()),
        merges_txt: Some(String::new()),
    };
    let e = ClipTokenizer::from_files(files, None, 77, "model/tokenizer").unwrap_err();
    assert!(e.to_string().contains("<|startoftext|>"), "{e}");
}

#[test]
fn count_tokens_reports_what_encode_cuts_off() {
    let tok = ClipTokenizer::from_dir(&fixtures().join("clip_tokenizer"), 77).unwrap();
    let short = "a red apple";
    let n = tok.count_tokens(short).unwrap();
    let ids = tok.encode(short).unwrap();
    // [bos] tokens [eos] pad...: the tokens are the ids between bos and the first eos.
    assert_eq!(ids.iter().skip(1).position(|&i| i == tok.eos_id()), Some(n));
    let long = "apple ".repeat(100);
    assert_eq!(tok.count_tokens(&long).unwrap(), 100);
    assert_eq!(tok.encode(&long).unwrap().len(), 77);
}
