//! A private `XDG_RUNTIME_DIR` for processes started without one.
//!
//! When wgpu creates an instance, Mesa's Vulkan and EGL drivers probe for a Wayland
//! display, and libwayland-client prints `error: XDG_RUNTIME_DIR is invalid or not set
//! in the environment.` when that variable is missing or relative (containers, ssh
//! sessions, cron, CI). The probe's failure is harmless, since fovea draws to no window,
//! but the line reads as a failure of the run. So before any GPU work, and while the
//! process has one thread (setting an environment variable is only sound then), a
//! missing or relative `XDG_RUNTIME_DIR` is pointed at a directory of our own, owned by
//! this user with mode 0700 as the XDG base-directory spec asks of it. The Wayland probe
//! then finds no socket there and stays quiet; nothing is written into the directory.

use std::path::{Path, PathBuf};

/// Sets `XDG_RUNTIME_DIR` to a private directory when it is unset or not absolute, and
/// returns that directory (`None`: the variable was fine, or no directory could be
/// made, in which case the driver's warning stays and nothing else changes).
///
/// Must be called before any other thread starts.
pub fn ensure() -> Option<PathBuf> {
    let current = std::env::var_os("XDG_RUNTIME_DIR");
    if current
        .as_deref()
        .is_some_and(|d| Path::new(d).is_absolute())
    {
        return None;
    }
    let dir = private_dir()?;
    // SAFETY: called at the top of `main`, before any thread exists, so no other code
    // can be reading the environment concurrently.
    unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    Some(dir)
}

/// `$TMPDIR/fovea-runtime-<uid>`, created with mode 0700, or reused when it is a real
/// directory (not a link) owned by this user with no access for others.
#[cfg(unix)]
fn private_dir() -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // The owner of /proc/self is this process's user; without /proc (non-Linux Unix),
    // fall back to a directory per process.
    let uid = std::fs::metadata("/proc/self").ok().map(|m| m.uid());
    let name = match uid {
        Some(uid) => format!("fovea-runtime-{uid}"),
        None => format!("fovea-runtime-pid{}", std::process::id()),
    };
    let dir = std::env::temp_dir().join(name);
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => return Some(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let private =
        meta.is_dir() && Some(meta.uid()) == uid && meta.permissions().mode() & 0o077 == 0;
    private.then_some(dir)
}

#[cfg(not(unix))]
fn private_dir() -> Option<PathBuf> {
    // Windows and the web have no Wayland: nothing to silence.
    None
}
