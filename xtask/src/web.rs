//! `cargo xtask web` (build the browser bundle into web/pkg) and `cargo xtask serve`
//! (serve the page and the models on 127.0.0.1).
//!
//! The server is tiny_http with a few lines of routing: static files with the MIME types
//! browsers insist on (ES modules need `text/javascript`, streaming wasm compilation
//! needs `application/wasm`), and a generated `manifest.json` per model folder (paths,
//! sizes and SHA-256) that the page uses to fetch the folder and check its cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The bundle's size limit (issue: <= 3 MB without weights).
const MAX_WASM_BYTES: u64 = 3_000_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

/// The wasm-bindgen version Cargo.lock pins (wasm-bindgen-cli must match it exactly).
fn locked_wasm_bindgen() -> Result<String, String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock"))
        .map_err(|e| format!("Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\""
            && let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \""))
        {
            return Ok(v.trim_end_matches('"').to_string());
        }
    }
    Err("Cargo.lock has no wasm-bindgen package".into())
}

/// Builds crates/fovea-web for wasm32 (profile `web`) and runs wasm-bindgen into
/// web/pkg; prints and checks the bundle size. `rustflags` applies to the cargo build.
pub fn build(rustflags: Option<&str>) -> Result<(), String> {
    let version = locked_wasm_bindgen()?;
    let found = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if found != format!("wasm-bindgen {version}") {
        return Err(format!(
            "wasm-bindgen-cli {version} is needed (found: {}); install it with\n  cargo install wasm-bindgen-cli --version {version}",
            if found.is_empty() { "none" } else { &found }
        ));
    }
    let mut envs = Vec::new();
    if let Some(flags) = rustflags {
        envs.push(("RUSTFLAGS", flags));
    }
    crate::cargo(
        &[
            "build",
            "-p",
            "fovea-web",
            "--target",
            "wasm32-unknown-unknown",
            "--profile",
            "web",
        ],
        &envs,
    )?;
    let wasm = root().join("target/wasm32-unknown-unknown/web/fovea_web.wasm");
    let out = root().join("web/pkg");
    println!("\n==> wasm-bindgen --target web --out-dir web/pkg");
    let status = Command::new("wasm-bindgen")
        .args([
            "--target",
            "web",
            "--no-typescript",
            "--remove-name-section",
            "--remove-producers-section",
            "--out-dir",
        ])
        .arg(&out)
        .arg(&wasm)
        .status()
        .map_err(|e| format!("could not start wasm-bindgen: {e}"))?;
    if !status.success() {
        return Err(format!("wasm-bindgen failed ({status})"));
    }
    let size = std::fs::metadata(out.join("fovea_web_bg.wasm"))
        .map_err(|e| format!("web/pkg/fovea_web_bg.wasm: {e}"))?
        .len();
    println!(
        "web bundle: web/pkg/fovea_web_bg.wasm {:.2} MB (limit {:.1} MB), web/pkg/fovea_web.js",
        size as f64 / 1e6,
        MAX_WASM_BYTES as f64 / 1e6
    );
    if size > MAX_WASM_BYTES {
        return Err(format!(
            "the wasm bundle is {size} bytes, over the {MAX_WASM_BYTES}-byte limit"
        ));
    }
    Ok(())
}

/// Runs the page's end-to-end test (web/tests/e2e.mjs through `npm test`) after
/// installing its locked npm packages.
pub fn browser_test() -> Result<(), String> {
    let web = root().join("web");
    for args in [&["ci", "--no-audit", "--no-fund"][..], &["test"][..]] {
        println!("\n==> (web) npm {}", args.join(" "));
        let status = Command::new("npm")
            .args(args)
            .current_dir(&web)
            .status()
            .map_err(|e| format!("could not start npm (install nodejs and npm): {e}"))?;
        if !status.success() {
            return Err(format!(
                "`npm {}` in web/ failed ({status})",
                args.join(" ")
            ));
        }
    }
    Ok(())
}

/// Model folders the server offers, as (URL name, folder).
fn model_dirs() -> Vec<(&'static str, PathBuf)> {
    vec![
        ("fovea-tiny", root().join("models/fovea-tiny")),
        ("tiny-test", root().join("tests/fixtures/tiny_pipeline")),
        ("tiny-taesd", root().join("tests/fixtures/tiny_taesd")),
    ]
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Every file under `dir` (following links), as relative '/'-separated paths.
fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().to_string();
        let path = e.path();
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if path.is_dir() {
            walk(&path, &child, out)?;
        } else if !name.starts_with('.') {
            out.push(child);
        }
    }
    Ok(())
}

/// `{"files": [{"path", "size", "sha256"}...]}` for a model folder.
pub fn manifest(dir: &Path) -> Result<String, String> {
    let mut paths = Vec::new();
    walk(dir, "", &mut paths).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut items = Vec::new();
    for p in paths {
        let bytes = std::fs::read(dir.join(&p)).map_err(|e| format!("{p}: {e}"))?;
        let hash = Sha256::digest(&bytes);
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        items.push(format!(
            "{{\"path\": \"{}\", \"size\": {}, \"sha256\": \"{hex}\"}}",
            p.replace('"', "\\\""),
            bytes.len()
        ));
    }
    Ok(format!("{{\"files\": [\n  {}\n]}}\n", items.join(",\n  ")))
}

/// Maps a URL path to a file, refusing anything that climbs out of its folder.
fn resolve(url: &str) -> Option<PathBuf> {
    let path = url.split(['?', '#']).next().unwrap_or("/");
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if parts.iter().any(|p| *p == ".." || p.contains('\\')) {
        return None;
    }
    if parts.first() == Some(&"models") && parts.len() >= 2 {
        let (_, dir) = model_dirs().into_iter().find(|(n, _)| *n == parts[1])?;
        return Some(parts[2..].iter().fold(dir, |acc, p| acc.join(p)));
    }
    let mut file = parts.iter().fold(root().join("web"), |acc, p| acc.join(p));
    if file.is_dir() {
        file = file.join("index.html");
    }
    Some(file)
}

/// Serves web/ and the model folders on 127.0.0.1:`port` until interrupted.
pub fn serve(port: u16) -> Result<(), String> {
    if !root().join("web/pkg/fovea_web.js").exists() {
        return Err("web/pkg is missing: run `cargo xtask web` first".into());
    }
    let addr = format!("127.0.0.1:{port}");
    let server = tiny_http::Server::http(&addr).map_err(|e| format!("{addr}: {e}"))?;
    println!("serving http://{addr}/  (models: {})", {
        let names: Vec<String> = model_dirs()
            .iter()
            .filter(|(_, d)| d.is_dir())
            .map(|(n, _)| format!("/models/{n}/"))
            .collect();
        names.join(", ")
    });
    for request in server.incoming_requests() {
        let url = request.url().to_string();
        let response = match resolve(&url) {
            Some(file)
                if file.file_name().is_some_and(|n| n == "manifest.json") && !file.exists() =>
            {
                match file.parent().filter(|d| d.is_dir()).map(manifest) {
                    Some(Ok(body)) => Ok((body.into_bytes(), "application/json")),
                    Some(Err(e)) => Err((500, e)),
                    None => Err((404, format!("{url}: no such model folder"))),
                }
            }
            Some(file) => match std::fs::read(&file) {
                Ok(bytes) => Ok((bytes, mime(&file))),
                Err(_) => Err((404, format!("{url}: not found"))),
            },
            None => Err((403, "forbidden".to_string())),
        };
        let result = match response {
            Ok((bytes, mime)) => {
                let header =
                    tiny_http::Header::from_bytes("Content-Type", mime).expect("ASCII header");
                let no_store = tiny_http::Header::from_bytes("Cache-Control", "no-cache")
                    .expect("ASCII header");
                request.respond(
                    tiny_http::Response::from_data(bytes)
                        .with_header(header)
                        .with_header(no_store),
                )
            }
            Err((code, msg)) => {
                request.respond(tiny_http::Response::from_string(msg).with_status_code(code))
            }
        };
        if let Err(e) = result {
            eprintln!("{url}: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_stay_inside_their_folders() {
        assert!(resolve("/../Cargo.toml").is_none());
        assert!(resolve("/models/tiny-test/../../x").is_none());
        assert!(resolve("/models/nope/x").is_none());
        assert_eq!(resolve("/app.js?v=1").unwrap(), root().join("web/app.js"));
        assert_eq!(
            resolve("/models/tiny-test/unet/config.json").unwrap(),
            root().join("tests/fixtures/tiny_pipeline/unet/config.json")
        );
    }

    #[test]
    fn manifests_list_files_with_sizes_and_hashes() {
        let m = manifest(&root().join("tests/fixtures/tiny_taesd")).unwrap();
        assert!(m.contains("\"path\": \"config.json\""), "{m}");
        assert!(m.contains("\"sha256\": \""), "{m}");
        assert_eq!(m.matches("\"size\"").count(), 2, "{m}");
    }
}
