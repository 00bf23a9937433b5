//! Where the default model (`models/fovea-tiny`) is found when `--model` is not given.
//!
//! The places, in order (the first folder with a `model_index.json` wins):
//!
//! 1. `$FOVEA_MODEL`: any diffusers folder; when set it must be one (a typo is an error,
//!    not a silent fall-through to another model);
//! 2. `./models/fovea-tiny`: running inside a checkout, as the README's first command does;
//! 3. next to the executable: `<bin>/../share/fovea/models/fovea-tiny` (a `cargo install`
//!    into `~/.cargo/bin` pairs with `~/.cargo/share/fovea`, `/usr/local/bin` with
//!    `/usr/local/share/fovea`) and `<bin>/models/fovea-tiny` (an unpacked archive);
//! 4. the XDG data directories: `$XDG_DATA_HOME` (default `~/.local/share`), then each of
//!    `$XDG_DATA_DIRS` (default `/usr/local/share:/usr/share`), under `fovea/models/fovea-tiny`;
//! 5. the source tree the binary was built from (its compile-time path), so that
//!    `cargo install --path crates/fovea-cli` works from any directory while the checkout
//!    stays where it was.
//!
//! The model is not embedded in the binary: it is replaced by newer checkpoints under the
//! same name, a copy in every binary (test binaries included) would add its ~25 MB to each
//! build, and a data folder can be updated without rebuilding.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The default model's folder name under `models/`.
pub const DEFAULT_MODEL: &str = "fovea-tiny";

/// What the lookup reads from the process, gathered once so tests can supply their own.
#[derive(Clone, Debug, Default)]
pub struct LookupEnv {
    /// `$FOVEA_MODEL`.
    pub fovea_model: Option<OsString>,
    /// The current directory.
    pub cwd: Option<PathBuf>,
    /// The running executable.
    pub exe: Option<PathBuf>,
    /// `$XDG_DATA_HOME`.
    pub xdg_data_home: Option<OsString>,
    /// `$HOME`.
    pub home: Option<OsString>,
    /// `$XDG_DATA_DIRS`.
    pub xdg_data_dirs: Option<OsString>,
    /// The checkout this binary was built from.
    pub source_tree: Option<PathBuf>,
}

impl LookupEnv {
    /// This process's environment.
    pub fn from_process() -> LookupEnv {
        LookupEnv {
            fovea_model: std::env::var_os("FOVEA_MODEL").filter(|v| !v.is_empty()),
            cwd: std::env::current_dir().ok(),
            exe: std::env::current_exe().ok(),
            xdg_data_home: std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()),
            home: std::env::var_os("HOME").filter(|v| !v.is_empty()),
            xdg_data_dirs: std::env::var_os("XDG_DATA_DIRS").filter(|v| !v.is_empty()),
            source_tree: Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))),
        }
    }

    /// The places the default model may be, in lookup order, each with why it is looked at.
    pub fn candidates(&self) -> Vec<(PathBuf, &'static str)> {
        let rel = Path::new("models").join(DEFAULT_MODEL);
        let in_share = Path::new("fovea").join(&rel);
        let mut out = Vec::new();
        if let Some(cwd) = &self.cwd {
            out.push((cwd.join(&rel), "the current directory"));
        }
        if let Some(bin) = self.exe.as_ref().and_then(|e| e.parent()) {
            if let Some(prefix) = bin.parent() {
                out.push((
                    prefix.join("share").join(&in_share),
                    "the data folder next to the executable",
                ));
            }
            out.push((bin.join(&rel), "the executable's folder"));
        }
        let data_home = match (&self.xdg_data_home, &self.home) {
            (Some(d), _) if Path::new(d).is_absolute() => Some(PathBuf::from(d)),
            (_, Some(h)) => Some(Path::new(h).join(".local/share")),
            _ => None,
        };
        if let Some(d) = data_home {
            out.push((d.join(&in_share), "$XDG_DATA_HOME (default ~/.local/share)"));
        }
        let dirs = self
            .xdg_data_dirs
            .clone()
            .unwrap_or_else(|| OsString::from("/usr/local/share:/usr/share"));
        for d in std::env::split_paths(&dirs).filter(|d| d.is_absolute()) {
            out.push((d.join(&in_share), "$XDG_DATA_DIRS"));
        }
        if let Some(src) = &self.source_tree {
            out.push((
                normalize(&src.join(&rel)),
                "the source tree fovea was built from",
            ));
        }
        // The same folder reached twice (e.g. run from the checkout) is looked at once.
        let mut seen = std::collections::HashSet::new();
        out.retain(|(p, _)| seen.insert(p.clone()));
        out
    }

    /// The default model's folder, or a message naming every place looked at and the fixes.
    pub fn find(&self) -> Result<PathBuf, String> {
        if let Some(dir) = &self.fovea_model {
            let dir = PathBuf::from(dir);
            return if is_model(&dir) {
                Ok(dir)
            } else {
                Err(format!(
                    "FOVEA_MODEL={} is not a diffusers model folder (no model_index.json there); \
                     point it at one, or unset it to use the default model",
                    dir.display()
                ))
            };
        }
        let candidates = self.candidates();
        if let Some((dir, _)) = candidates.iter().find(|(d, _)| is_model(d)) {
            return Ok(dir.clone());
        }
        let mut msg = format!(
            "the default model ({DEFAULT_MODEL}) was not found; fovea looked in:\n  \
             $FOVEA_MODEL (not set)\n"
        );
        for (dir, why) in &candidates {
            msg.push_str(&format!("  {} ({why})\n", dir.display()));
        }
        let data = candidates
            .iter()
            .find(|(_, why)| why.starts_with("$XDG_DATA_HOME"))
            .map(|(d, _)| d.display().to_string())
            .unwrap_or_else(|| format!("~/.local/share/fovea/models/{DEFAULT_MODEL}"));
        msg.push_str(&format!(
            "to fix it: pass --model DIR (any diffusers Stable Diffusion folder), set \
             FOVEA_MODEL=DIR, or copy a checkout's models/{DEFAULT_MODEL} to {data}"
        ));
        Err(msg)
    }
}

fn is_model(dir: &Path) -> bool {
    dir.join("model_index.json").is_file()
}

/// Drops `.` and folds `dir/..` so messages show a plain path (no file-system access:
/// the folder may not exist).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fovea-lookup-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn make_model(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("model_index.json"), "{}").unwrap();
    }

    /// Every place set, each inside `root`, none holding a model yet.
    fn env_under(root: &Path) -> LookupEnv {
        LookupEnv {
            fovea_model: None,
            cwd: Some(root.join("cwd")),
            exe: Some(root.join("prefix/bin/fovea")),
            xdg_data_home: Some(root.join("data_home").into()),
            home: Some(root.join("home").into()),
            xdg_data_dirs: Some(
                std::env::join_paths([root.join("sys1"), root.join("sys2")]).unwrap(),
            ),
            source_tree: Some(root.join("src/crates/fovea-cli/../..")),
        }
    }

    #[test]
    fn lookup_takes_the_first_place_that_holds_the_model() {
        let root = scratch("order");
        let env = env_under(&root);
        let places = [
            root.join("cwd/models/fovea-tiny"),
            root.join("prefix/share/fovea/models/fovea-tiny"),
            root.join("prefix/bin/models/fovea-tiny"),
            root.join("data_home/fovea/models/fovea-tiny"),
            root.join("sys1/fovea/models/fovea-tiny"),
            root.join("sys2/fovea/models/fovea-tiny"),
            root.join("src/models/fovea-tiny"),
        ];
        let listed: Vec<PathBuf> = env.candidates().into_iter().map(|(p, _)| p).collect();
        assert_eq!(listed, places);
        // Fill them from the last to the first: each new one takes precedence.
        for place in places.iter().rev() {
            make_model(place);
            assert_eq!(env.find().as_ref(), Ok(place));
        }
        // FOVEA_MODEL beats them all.
        let mine = root.join("mine");
        make_model(&mine);
        let with_var = LookupEnv {
            fovea_model: Some(mine.clone().into()),
            ..env.clone()
        };
        assert_eq!(with_var.find(), Ok(mine));
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn data_home_defaults_to_dot_local_share() {
        let root = scratch("home");
        let env = LookupEnv {
            xdg_data_home: None,
            ..env_under(&root)
        };
        let want = root.join("home/.local/share/fovea/models/fovea-tiny");
        assert!(env.candidates().iter().any(|(p, _)| *p == want));
        make_model(&want);
        assert_eq!(env.find(), Ok(want));
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn a_missing_model_names_every_place_and_the_fixes() {
        let root = scratch("missing");
        let env = env_under(&root);
        let msg = env.find().unwrap_err();
        for (place, _) in env.candidates() {
            assert!(
                msg.contains(&place.display().to_string()),
                "{place:?}:\n{msg}"
            );
        }
        for needle in [
            "$FOVEA_MODEL (not set)",
            "--model DIR",
            "FOVEA_MODEL=DIR",
            "copy",
        ] {
            assert!(msg.contains(needle), "missing `{needle}`:\n{msg}");
        }
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn a_wrong_fovea_model_is_an_error_not_a_fallback() {
        let root = scratch("wrong");
        let env = env_under(&root);
        make_model(&root.join("cwd/models/fovea-tiny"));
        let env = LookupEnv {
            fovea_model: Some(root.join("typo").into()),
            ..env
        };
        let msg = env.find().unwrap_err();
        assert!(
            msg.contains("FOVEA_MODEL=") && msg.contains("typo"),
            "{msg}"
        );
        std::fs::remove_dir_all(&root).ok();
    }
}
