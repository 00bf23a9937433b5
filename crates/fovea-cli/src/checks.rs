//! Checks of `fovea generate`'s parameters that need no model or GPU, run before either
//! is touched, so a typo fails in a second rather than after a long generation.

use std::path::Path;

/// Most images one `generate` makes (`--batch-count` times the prompt lines).
pub const MAX_IMAGES: usize = 10_000;

/// Checks the number of images asked for.
pub fn check_batch_count(batch_count: usize, prompts: usize) -> Result<(), String> {
    if batch_count == 0 {
        return Err("`--batch-count` = 0 is invalid: at least 1".into());
    }
    if batch_count.saturating_mul(prompts) > MAX_IMAGES {
        let what = if prompts > 1 {
            format!("{batch_count} x {prompts} prompts")
        } else {
            batch_count.to_string()
        };
        return Err(format!(
            "`--batch-count` = {what} images is above the limit of {MAX_IMAGES} per run"
        ));
    }
    Ok(())
}

/// Checks that an image can be written to `path` (its format is known, its folder
/// exists, it is not a folder and the file can be created there), without changing
/// anything: an existing file is opened without truncation, a new one is created and
/// removed again.
pub fn check_writable(flag: &str, path: &Path) -> Result<(), String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if !matches!(ext.as_deref(), Some("png")) {
        return Err(format!(
            "{flag} {}: fovea writes PNG images; give the file a .png extension",
            path.display()
        ));
    }
    if path.is_dir() {
        return Err(format!(
            "{flag} {}: is a folder; give a file name such as {}",
            path.display(),
            path.join("fovea.png").display()
        ));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(format!(
            "{flag} {}: the folder {} does not exist (create it first)",
            path.display(),
            parent.display()
        ));
    }
    let denied = |e: std::io::Error| {
        format!(
            "{flag} {}: cannot write there ({e}); pick a folder you can write to",
            path.display()
        )
    };
    if path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(denied)?;
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(denied)?;
        std::fs::remove_file(path).map_err(denied)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fovea-checks-{}-{name}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn output_checks_name_the_folder_the_file_and_the_format() {
        let dir = scratch("out");
        let e = check_writable("-o", &dir.join("missing/x.png")).unwrap_err();
        assert!(e.contains("does not exist") && e.contains("missing"), "{e}");
        let sub = dir.join("sub.png");
        std::fs::create_dir_all(&sub).unwrap();
        let e = check_writable("-o", &sub).unwrap_err();
        assert!(e.contains("is a folder"), "{e}");
        let e = check_writable("-o", &dir.join("x.jpg")).unwrap_err();
        assert!(e.contains(".png"), "{e}");
        let e = check_writable("-o", &dir.join("noext")).unwrap_err();
        assert!(e.contains(".png"), "{e}");
        // Writable places pass and are left as they were.
        let fresh = dir.join("fresh.png");
        check_writable("-o", &fresh).unwrap();
        assert!(!fresh.exists(), "the probe file was left behind");
        let old = dir.join("old.PNG");
        std::fs::write(&old, b"keep").unwrap();
        check_writable("-o", &old).unwrap();
        assert_eq!(std::fs::read(&old).unwrap(), b"keep");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_unwritable_place_is_refused() {
        // /sys refuses new files even to root, unlike a chmod-ed folder.
        if !Path::new("/sys/kernel").is_dir() {
            return;
        }
        let e = check_writable("-o", Path::new("/sys/fovea-test.png")).unwrap_err();
        assert!(e.contains("cannot write there"), "{e}");
    }

    #[test]
    fn batch_counts_have_bounds() {
        assert!(check_batch_count(1, 1).is_ok());
        assert!(check_batch_count(MAX_IMAGES, 1).is_ok());
        assert!(
            check_batch_count(0, 1)
                .unwrap_err()
                .contains("`--batch-count` = 0")
        );
        let e = check_batch_count(MAX_IMAGES + 1, 1).unwrap_err();
        assert!(e.contains("above the limit"), "{e}");
        let e = check_batch_count(5_000, 3).unwrap_err();
        assert!(e.contains("5000 x 3 prompts"), "{e}");
        assert!(check_batch_count(usize::MAX, 2).is_err());
    }
}
