//! CLIP's BPE tokenizer on the `tokenizers` crate, loaded from a diffusers `tokenizer/`
//! folder: `tokenizer.json` when present, else `vocab.json` + `merges.txt` (what SD
//! folders usually ship), assembled into the same pipeline transformers' fast CLIP
//! tokenizer uses (NFC, whitespace folding, lowercase; CLIP's split regex then byte-level
//! BPE with `</w>` word ends). Prompts are encoded as diffusers does:
//! `[bos] tokens [eos] pad...`, truncated to the model's 77 positions.

use std::collections::HashMap;
use std::path::Path;

use serde_json::json;
use tokenizers::Tokenizer;

use crate::error::{ModelError, Result};

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
/// CLIP's pre-tokenisation regex (transformers' CLIPConverter).
const CLIP_SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A CLIP tokenizer with its special ids and context length.
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    bos: u32,
    eos: u32,
    pad: u32,
    max_len: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("max_len", &self.max_len)
            .finish()
    }
}

fn tok_err(path: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::Config {
        path: path.to_string(),
        message: e.to_string(),
    }
}

impl ClipTokenizer {
    /// Loads `dir/tokenizer.json`, or `dir/vocab.json` + `dir/merges.txt`. The pad token
    /// comes from `special_tokens_map.json` (SD 1.x pads with `<|endoftext|>`, SD 2.x
    /// with `!`), defaulting to `<|endoftext|>`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &Path, max_len: usize) -> Result<ClipTokenizer> {
        let read = |name: &str| -> Result<Option<String>> {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ModelError::io(&p, e)),
            }
        };
        let pad_token = match read("special_tokens_map.json")? {
            Some(text) => pad_from_special_tokens_map(&text, &dir.join("special_tokens_map.json"))?,
            None => None,
        };
        let files = Files {
            tokenizer_json: read("tokenizer.json")?,
            vocab_json: read("vocab.json")?,
            merges_txt: read("merges.txt")?,
        };
        Self::from_files(
            files,
            pad_token.as_deref(),
            max_len,
            &dir.display().to_string(),
        )
    }

    /// Builds from file contents (the web page passes fetched text).
    pub fn from_files(
        files: Files,
        pad_token: Option<&str>,
        max_len: usize,
        origin: &str,
    ) -> Result<ClipTokenizer> {
        let inner = match (files.tokenizer_json, files.vocab_json, files.merges_txt) {
            (Some(json), _, _) => {
                let path = format!("{origin}/tokenizer.json");
                // JSON syntax first: tokenizers 0.22 panics (`expect("Helper")` in its
                // decoder deserializer) on a syntax error inside the "decoder" field,
                // where a user needs an error naming the file. Found by `cargo xtask fuzz`.
                serde_json::from_str::<serde_json::Value>(&json).map_err(|e| tok_err(&path, e))?;
                Tokenizer::from_bytes(json.as_bytes()).map_err(|e| tok_err(&path, e))?
            }
            (None, Some(vocab), Some(merges)) => from_vocab_merges(&vocab, &merges, origin)?,
            _ => {
                return Err(ModelError::Io {
                    path: origin.to_string(),
                    message: "no tokenizer.json, and not both vocab.json and merges.txt".into(),
                });
            }
        };
        let id = |token: &str| {
            inner.token_to_id(token).ok_or_else(|| ModelError::Config {
                path: origin.to_string(),
                message: format!("the vocabulary has no `{token}` token"),
            })
        };
        let (bos, eos) = (id(BOS)?, id(EOS)?);
        let pad = id(pad_token.unwrap_or(EOS))?;
        if max_len < 2 {
            return Err(ModelError::Config {
                path: origin.to_string(),
                message: format!("max_len {max_len} leaves no room for the start and end tokens"),
            });
        }
        Ok(ClipTokenizer {
            inner,
            bos,
            eos,
            pad,
            max_len,
        })
    }

    /// Vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The context length prompts are padded/truncated to.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Id of the end token (its position marks the pooled output).
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// Encodes a prompt as diffusers does: `[bos] tokens [eos]`, the tokens truncated so
    /// that this fits `max_len`, then padded with the pad id to exactly `max_len`.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(prompt, false)
            .map_err(|e| tok_err("tokenizer", format!("cannot encode {prompt:?}: {e}")))?;
        let mut ids = Vec::with_capacity(self.max_len);
        ids.push(self.bos);
        ids.extend(enc.get_ids().iter().take(self.max_len - 2));
        ids.push(self.eos);
        ids.resize(self.max_len, self.pad);
        Ok(ids)
    }

    /// How many tokens `prompt` has (without the start and end tokens); more than
    /// `max_len - 2` are cut off by [`encode`](Self::encode).
    pub fn count_tokens(&self, prompt: &str) -> Result<usize> {
        let enc = self
            .inner
            .encode(prompt, false)
            .map_err(|e| tok_err("tokenizer", format!("cannot encode {prompt:?}: {e}")))?;
        Ok(enc.get_ids().len())
    }
}

/// Tokenizer file contents; `tokenizer_json` wins when present.
#[derive(Clone, Debug, Default)]
pub struct Files {
    /// `tokenizer.json`.
    pub tokenizer_json: Option<String>,
    /// `vocab.json`.
    pub vocab_json: Option<String>,
    /// `merges.txt`.
    pub merges_txt: Option<String>,
}

/// The pad token named by a `special_tokens_map.json` (a string or `{"content": ...}`).
pub fn pad_from_special_tokens_map(text: &str, path: &Path) -> Result<Option<String>> {
    let v: serde_json::Value = crate::config::parse_json(text, path)?;
    Ok(match v.get("pad_token") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        // {"content": "!", "lstrip": false, ...}
        Some(serde_json::Value::Object(o)) => {
            o.get("content").and_then(|c| c.as_str()).map(String::from)
        }
        _ => None,
    })
}

/// Assembles transformers' fast CLIP tokenizer definition around `vocab.json` and
/// `merges.txt`.
fn from_vocab_merges(vocab_json: &str, merges_txt: &str, origin: &str) -> Result<Tokenizer> {
    let vocab_path = format!("{origin}/vocab.json");
    let vocab: HashMap<String, u32> =
        serde_json::from_str(vocab_json).map_err(|e| tok_err(&vocab_path, e))?;
    let mut merges = Vec::new();
    for (i, line) in merges_txt.lines().enumerate() {
        if line.starts_with("#version") || line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) => merges.push(json!([a, b])),
            _ => {
                return Err(tok_err(
                    &format!("{origin}/merges.txt"),
                    format!("line {}: expected two tokens, got {line:?}", i + 1),
                ));
            }
        }
    }
    let special = |token: &str| -> Result<serde_json::Value> {
        let id = vocab
            .get(token)
            .ok_or_else(|| tok_err(&vocab_path, format!("no `{token}` token")))?;
        Ok(
            json!({"id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}),
        )
    };
    let (bos_id, eos_id) = (vocab.get(BOS).copied(), vocab.get(EOS).copied());
    let def = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(BOS)?, special(EOS)?],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CLIP_SPLIT}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": [EOS, eos_id], "cls": [BOS, bos_id], "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": EOS, "continuing_subword_prefix": "",
            "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges
        }
    });
    Tokenizer::from_bytes(def.to_string().as_bytes()).map_err(|e| tok_err(origin, e))
}
