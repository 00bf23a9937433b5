//! Fuzzing fovea's loaders on the stable toolchain.
//!
//! cargo-fuzz needs a nightly compiler (libFuzzer's sanitizer flags), and this project
//! builds with stable Rust only, so the engine here is a small mutation fuzzer: it starts
//! from valid files ([`seeds`]), applies a few random byte- and token-level mutations per
//! run (bit flips, interesting bytes and numbers, insertions, deletions, duplications,
//! splices between corpus entries, truncation), and keeps an input in the corpus when it
//! reaches an outcome (the first words of the loader's error) not seen before, a cheap
//! stand-in for coverage feedback. A run that panics is a crash: its input is written to
//! `<out>/<target>/crash-<hash>.bin` and the run goes on; a run that takes longer than
//! the timeout is a hang: a watchdog writes the input and ends the process. Crashes
//! become regression inputs under `crates/fovea-fuzz/regressions/<target>/`, which
//! the tests replay.
//!
//! `cargo xtask fuzz --seconds N [--target NAME]` runs it.

pub mod seeds;
pub mod targets;

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use targets::{TARGETS, Target, target};

/// How one target is fuzzed.
#[derive(Clone, Debug)]
pub struct Options {
    /// Wall-clock budget.
    pub seconds: f64,
    /// Mutation generator seed (a run is reproducible given the same seed and budget in
    /// executions, not in seconds).
    pub seed: u64,
    /// Inputs grow at most to this many bytes.
    pub max_len: usize,
    /// A single run longer than this is a hang.
    pub timeout: Duration,
    /// Crash and hang inputs go to `<out>/<target>/`.
    pub out: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seconds: 10.0,
            seed: 1,
            max_len: 1 << 20,
            timeout: Duration::from_secs(10),
            out: PathBuf::from("target/fuzz"),
        }
    }
}

/// A panicking input.
#[derive(Clone, Debug)]
pub struct Crash {
    /// The panic message with its location.
    pub message: String,
    /// Where the input was written.
    pub input: PathBuf,
}

/// What a fuzzing run did.
#[derive(Clone, Debug)]
pub struct Report {
    /// Target name.
    pub target: &'static str,
    /// Inputs run.
    pub execs: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Distinct outcomes reached.
    pub outcomes: usize,
    /// Corpus size at the end.
    pub corpus: usize,
    /// Distinct crashes (by panic message).
    pub crashes: Vec<Crash>,
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Panics inside fuzz runs are recorded, not printed (other threads' panics still are).
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = LAST_PANIC.with(|p| {
                let mut p = p.borrow_mut();
                if p.as_deref() == Some("<armed>") {
                    let loc = info
                        .location()
                        .map(|l| format!(" at {}:{}", l.file(), l.line()))
                        .unwrap_or_default();
                    let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
                        s.to_string()
                    } else if let Some(s) = info.payload().downcast_ref::<String>() {
                        s.clone()
                    } else {
                        "panic".into()
                    };
                    *p = Some(format!("{msg}{loc}"));
                    true
                } else {
                    false
                }
            });
            if !captured {
                previous(info);
            }
        }));
    });
}

/// Runs `target` on `data` once: `Ok(outcome)` or `Err(panic message)`.
pub fn replay(target: &Target, data: &[u8]) -> Result<String, String> {
    install_panic_hook();
    LAST_PANIC.with(|p| *p.borrow_mut() = Some("<armed>".into()));
    let r = catch_unwind(AssertUnwindSafe(|| (target.run)(data)));
    let msg = LAST_PANIC.with(|p| p.borrow_mut().take());
    r.map_err(|_| msg.unwrap_or_else(|| "panic".into()))
}

fn hash(data: &[u8]) -> u64 {
    // FNV-1a: a stable file name for an input.
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn write_input(dir: &Path, kind: &str, data: &[u8]) -> PathBuf {
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("{kind}-{:016x}.bin", hash(data)));
    let _ = std::fs::write(&path, data);
    path
}

const INTERESTING_BYTES: &[u8] = b"\x00\x01\x7f\x80\xff\"{}[],:.-+eE0123456789 \n\\";
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "-0",
    "255",
    "65535",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9007199254740993",
    "1e308",
    "-1e308",
    "1e-320",
    "3.4e38",
    "NaN",
    "null",
    "true",
    "\"\"",
    "[]",
    "{}",
];

/// One random mutation of `data` in place; `other` is another corpus entry to splice from.
fn mutate(rng: &mut StdRng, data: &mut Vec<u8>, other: &[u8], max_len: usize) {
    let len = data.len();
    let pos = |rng: &mut StdRng, n: usize| if n == 0 { 0 } else { rng.random_range(0..n) };
    match rng.random_range(0..10) {
        0 if len > 0 => {
            let i = pos(rng, len);
            data[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = pos(rng, len);
            data[i] = INTERESTING_BYTES[pos(rng, INTERESTING_BYTES.len())];
        }
        2 if len > 0 => {
            // Replace a run of ASCII digits (a number in JSON or a header) by an
            // interesting number.
            let i = pos(rng, len);
            let is_num = |b: u8| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'e';
            let Some(start) = (i..len).find(|&k| data[k].is_ascii_digit()) else {
                return;
            };
            let end = (start..len).find(|&k| !is_num(data[k])).unwrap_or(len);
            let n = INTERESTING_NUMBERS[pos(rng, INTERESTING_NUMBERS.len())];
            data.splice(start..end, n.bytes());
        }
        3 => {
            let i = pos(rng, len + 1);
            let n = rng.random_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            data.splice(i..i, bytes);
        }
        4 if len > 0 => {
            let i = pos(rng, len);
            let n = rng.random_range(1..=(len - i).min(64));
            data.drain(i..i + n);
        }
        5 if len > 0 => {
            let i = pos(rng, len);
            let n = rng.random_range(1..=(len - i).min(256));
            let chunk = data[i..i + n].to_vec();
            let at = pos(rng, len + 1);
            data.splice(at..at, chunk);
        }
        6 if !other.is_empty() => {
            // Splice: our head, the other's tail.
            let i = pos(rng, len + 1);
            let j = pos(rng, other.len());
            data.truncate(i);
            data.extend_from_slice(&other[j..]);
        }
        7 if len > 0 => {
            data.truncate(pos(rng, len));
        }
        8 if len >= 8 => {
            // A little-endian u64 field (safetensors' header length) set to an edge value.
            let i = pos(rng, len - 7);
            let v: u64 = match rng.random_range(0..4) {
                0 => 0,
                1 => u64::MAX,
                2 => rng.random_range(0..len as u64 * 2),
                _ => 1 << rng.random_range(0..64),
            };
            data[i..i + 8].copy_from_slice(&v.to_le_bytes());
        }
        _ if len > 0 => {
            // Swap two bytes.
            let (i, j) = (pos(rng, len), pos(rng, len));
            data.swap(i, j);
        }
        _ => data.push(rng.random()),
    }
    data.truncate(max_len);
}

/// Fuzzes one target for `opts.seconds`.
pub fn run(target: &'static Target, opts: &Options) -> Report {
    install_panic_hook();
    let dir = opts.out.join(target.name);
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut corpus: Vec<Vec<u8>> = (target.seeds)();
    let mut outcomes = HashSet::new();
    let mut crashes: Vec<Crash> = Vec::new();
    let mut crash_messages = HashSet::new();

    // Watchdog: the start time (ms since `epoch`, 0 = idle) of the run in flight and its
    // input; a run past the timeout writes the input and ends the process.
    let epoch = Instant::now();
    let started = Arc::new(AtomicU64::new(0));
    let current = Arc::new(Mutex::new(Vec::<u8>::new()));
    let done = Arc::new(AtomicU64::new(0));
    let watchdog = {
        let (started, current, done, dir) =
            (started.clone(), current.clone(), done.clone(), dir.clone());
        let timeout = opts.timeout;
        let name = target.name;
        std::thread::spawn(move || {
            while done.load(Ordering::Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(100));
                let s = started.load(Ordering::Relaxed);
                let now = epoch.elapsed().as_millis() as u64;
                if s != 0 && now.saturating_sub(s) > timeout.as_millis() as u64 {
                    let data = current.lock().map(|d| d.clone()).unwrap_or_default();
                    let path = write_input(&dir, "hang", &data);
                    eprintln!(
                        "fuzz {name}: HANG, one run took over {:?}; input written to {}",
                        timeout,
                        path.display()
                    );
                    std::process::exit(3);
                }
            }
        })
    };

    let mut exec = |data: &[u8], corpus: &mut Vec<Vec<u8>>| {
        if let Ok(mut c) = current.lock() {
            c.clear();
            c.extend_from_slice(data);
        }
        started.store(epoch.elapsed().as_millis().max(1) as u64, Ordering::Relaxed);
        let r = replay(target, data);
        started.store(0, Ordering::Relaxed);
        match r {
            Ok(outcome) => {
                if outcomes.insert(outcome) && corpus.len() < 512 {
                    corpus.push(data.to_vec());
                }
            }
            Err(message) => {
                if crash_messages.insert(message.clone()) {
                    let input = write_input(&dir, "crash", data);
                    crashes.push(Crash { message, input });
                }
            }
        }
    };

    let start = Instant::now();
    let mut execs = 0u64;
    for seed in corpus.clone() {
        exec(&seed, &mut corpus);
        execs += 1;
    }
    while start.elapsed().as_secs_f64() < opts.seconds {
        let a = rng.random_range(0..corpus.len());
        let b = rng.random_range(0..corpus.len());
        let mut data = corpus[a].clone();
        let other = corpus[b].clone();
        for _ in 0..rng.random_range(1..=4) {
            mutate(&mut rng, &mut data, &other, opts.max_len);
        }
        exec(&data, &mut corpus);
        execs += 1;
    }
    done.store(1, Ordering::Relaxed);
    let _ = watchdog.join();
    Report {
        target: target.name,
        execs,
        seconds: start.elapsed().as_secs_f64(),
        outcomes: outcomes.len(),
        corpus: corpus.len(),
        crashes,
    }
}

/// The regression inputs committed for `target` (`regressions/<target>/*`).
pub fn regressions(target: &Target) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target.name);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok().map(|d| (e.path(), d)))
        .collect();
    out.sort();
    out
}
