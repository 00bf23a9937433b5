//! A diffusers folder held in memory as (relative path -> bytes), for platforms without
//! a file system (the web page passes fetched or user-picked files) and for tests. The
//! same component layout, file choice and error messages as the on-disk loaders.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{ModelError, Result};
use crate::tokenizer::{ClipTokenizer, Files};
use crate::weights::{Weights, pick_weight_files};

/// Files of a diffusers folder by relative path (`unet/config.json`, ...).
#[derive(Default)]
pub struct MemoryFolder {
    origin: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for MemoryFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryFolder")
            .field("origin", &self.origin)
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MemoryFolder {
    /// An empty folder; `origin` names it in errors (a URL or the picked folder's name).
    pub fn new(origin: &str) -> MemoryFolder {
        MemoryFolder {
            origin: origin.trim_end_matches('/').to_string(),
            files: BTreeMap::new(),
        }
    }

    /// Adds a file; `path` is relative to the folder (leading `./` or `/` ignored).
    pub fn insert(&mut self, path: &str, bytes: Vec<u8>) {
        let path = path.trim_start_matches("./").trim_start_matches('/');
        self.files.insert(path.to_string(), bytes);
    }

    /// The relative paths held.
    pub fn paths(&self) -> Vec<&str> {
        self.files.keys().map(String::as_str).collect()
    }

    /// How `path` is named in errors.
    pub fn label(&self, path: &str) -> String {
        format!("{}/{path}", self.origin)
    }

    /// A file's text, `None` when absent.
    pub fn text(&self, path: &str) -> Result<Option<String>> {
        match self.files.get(path) {
            None => Ok(None),
            Some(b) => String::from_utf8(b.clone())
                .map(Some)
                .map_err(|_| ModelError::Config {
                    path: self.label(path),
                    message: "not UTF-8 text".into(),
                }),
        }
    }

    /// A required JSON file, parsed.
    pub fn json<T: for<'de> serde::Deserialize<'de>>(&self, path: &str) -> Result<T> {
        let text = self.text(path)?.ok_or_else(|| ModelError::Io {
            path: self.label(path),
            message: "missing from the model folder".into(),
        })?;
        crate::config::parse_json(&text, Path::new(&self.label(path)))
    }

    /// `dir/config.json`, validated, and the weights of component `dir` (`""`: the
    /// folder's top level), moved out of the folder so the bytes are held once.
    pub fn take_component<C>(
        &mut self,
        dir: &str,
        validate: impl Fn(&C, &Path) -> Result<()>,
    ) -> Result<(C, Weights)>
    where
        C: for<'de> serde::Deserialize<'de>,
    {
        // "" is the folder itself (a TAESD folder is one component).
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let config_path = format!("{prefix}config.json");
        let config: C = self.json(&config_path)?;
        validate(&config, Path::new(&self.label(&config_path)))?;
        let names: Vec<String> = self
            .files
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(String::from)
            .collect();
        let chosen = pick_weight_files(&self.label(dir.trim_end_matches('/')), &names, None)?;
        let mut files = Vec::with_capacity(chosen.len());
        for name in chosen {
            let path = format!("{prefix}{name}");
            let bytes = self.files.remove(&path).expect("listed above");
            files.push((self.label(&path), bytes));
        }
        Ok((config, Weights::from_bytes(files)?))
    }

    /// The tokenizer in `dir` (tokenizer.json, or vocab.json + merges.txt; pad token from
    /// special_tokens_map.json).
    pub fn tokenizer(&self, dir: &str, max_len: usize) -> Result<ClipTokenizer> {
        let map = format!("{dir}/special_tokens_map.json");
        let pad = match self.text(&map)? {
            Some(text) => {
                crate::tokenizer::pad_from_special_tokens_map(&text, Path::new(&self.label(&map)))?
            }
            None => None,
        };
        let files = Files {
            tokenizer_json: self.text(&format!("{dir}/tokenizer.json"))?,
            vocab_json: self.text(&format!("{dir}/vocab.json"))?,
            merges_txt: self.text(&format!("{dir}/merges.txt"))?,
        };
        ClipTokenizer::from_files(files, pad.as_deref(), max_len, &self.label(dir))
    }

    /// Reads a folder from disk into memory (tests; native tools).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_dir(dir: &Path) -> Result<MemoryFolder> {
        fn walk(root: &Path, dir: &Path, out: &mut MemoryFolder) -> Result<()> {
            for entry in std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))? {
                let path = entry.map_err(|e| ModelError::io(dir, e))?.path();
                if path.is_dir() {
                    walk(root, &path, out)?;
                } else {
                    let rel = path.strip_prefix(root).expect("under root");
                    let bytes = std::fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
                    out.insert(&rel.to_string_lossy().replace('\\', "/"), bytes);
                }
            }
            Ok(())
        }
        let mut out = MemoryFolder::new(&dir.display().to_string());
        walk(dir, dir, &mut out)?;
        Ok(out)
    }
}
