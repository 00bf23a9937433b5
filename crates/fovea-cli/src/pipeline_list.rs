//! The pipelines the last `generate` on this adapter used, kept in the user's cache
//! directory, so that the next process compiles them on background threads from its
//! start (see `Gpu::warm_pipelines`) instead of one at a time as the ops first need
//! them. On lavapipe that compilation is most of a process's fixed cost.
//!
//! The file is a hint: `$XDG_CACHE_HOME/fovea/pipelines/<hash>.txt` (or `~/.cache/...`),
//! one per adapter, driver, fovea version, kernel plan and run setup (model folder,
//! dtype: what decides the kernels), one line per pipeline: the milliseconds its creation took, then its
//! label. The next process starts the costliest first: lavapipe's creation times range
//! from 1 ms to 240 ms here, and a long one started last would be the wait.
//! A missing, unreadable or stale file (labels this build does not know) only means less
//! is compiled ahead; nothing here can fail a generation.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use fovea_gpu::Gpu;

/// The list's path for this adapter, driver, fovea version, kernel plan and `setup`, or
/// `None` without a cache directory.
fn path(gpu: &Gpu, setup: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let info = gpu.adapter_info();
    // DefaultHasher's output may change between Rust releases: then the list is simply
    // not found once.
    let mut h = std::hash::DefaultHasher::new();
    (
        &info.name,
        info.vendor,
        info.device,
        format!("{:?}", info.backend),
        &info.driver,
        &info.driver_info,
        env!("CARGO_PKG_VERSION"),
        gpu.kernel_plan().describe(),
        setup,
    )
        .hash(&mut h);
    Some(
        base.join("fovea")
            .join("pipelines")
            .join(format!("{:016x}.txt", h.finish())),
    )
}

/// Starts compiling the pipelines the last run with this `setup` on this adapter used;
/// returns how many were queued, or `None` when there is no list (no earlier run here,
/// or no cache directory).
pub fn warm(gpu: &Gpu, setup: &str) -> Option<usize> {
    let path = path(gpu, setup)?;
    let text = std::fs::read_to_string(&path).ok()?;
    let mut entries: Vec<(f64, &str)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (ms, label) = l.split_once(' ')?;
            Some((ms.parse::<f64>().ok()?, label.trim()))
        })
        .collect();
    entries.sort_by(|a, b| b.0.total_cmp(&a.0));
    let labels: Vec<&str> = entries.into_iter().map(|(_, l)| l).collect();
    let queued = gpu.warm_pipelines(&labels);
    log::info!("compiling {queued} pipelines ahead from {}", path.display());
    Some(queued)
}

/// Records the pipelines this run used for the next one (written whole, then renamed
/// into place, so a concurrent reader never sees half a list).
pub fn save(gpu: &Gpu, setup: &str) {
    let Some(path) = path(gpu, setup) else {
        return;
    };
    let used = gpu.used_pipelines();
    if used.is_empty() {
        return;
    }
    let info = gpu.adapter_info();
    let mut text = format!(
        "# pipelines a fovea generate used on {} ({:?}, {} {}); compiled ahead by the next\n# (creation ms, label)\n",
        info.name, info.backend, info.driver, info.driver_info
    );
    for (label, ms) in &used {
        text.push_str(&format!("{:.1} {label}\n", ms.unwrap_or(0.0)));
    }
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)
        });
    if let Err(e) = written {
        log::debug!("could not keep the pipeline list {}: {e}", path.display());
    }
}
