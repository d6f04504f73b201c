//! Embeds what `kbha policy new` vendors into a new policy crate, so an installed `kbha`
//! needs no checkout: the WIT files (`wit/*.wit`) and the guest SDK (`policies/sdk`) with
//! kbha-core (`crates/core`, the SDK's `testing` feature and the golden tests use it),
//! their manifests resolved against the workspace's (no `workspace = true` left, path
//! dependencies pointing into the vendored copy), and the workspace's Cargo.lock.
//!
//! Writes `$OUT_DIR/vendor.rs`: `VENDOR: &[(&str, &str)]` (path under `vendor/`, text) and
//! `CARGO_LOCK: &str`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The vendored crates: (path in the workspace and under `vendor/`).
const CRATES: &[&str] = &["policies/sdk", "crates/core"];

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.join("../..").canonicalize()?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let workspace: toml::Table = toml::from_str(&read(&root.join("Cargo.toml"))?)?;
    let ws = workspace.get("workspace").and_then(toml::Value::as_table).ok_or("the root Cargo.toml has no [workspace]")?;
    let empty = toml::Table::new();
    let ws_package = ws.get("package").and_then(toml::Value::as_table).unwrap_or(&empty);
    let ws_deps = ws.get("dependencies").and_then(toml::Value::as_table).unwrap_or(&empty);

    let mut files: Vec<(String, FileText)> = Vec::new();
    // wit-bindgen reads the top-level `*.wit` of the directory (older versions are in
    // subdirectories, which it does not read).
    let wit = root.join("wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    for entry in sorted(&wit)? {
        if entry.extension().is_some_and(|e| e == "wit") && entry.is_file() {
            files.push((format!("wit/{}", name(&entry)?), FileText::Include(entry)));
        }
    }
    for krate in CRATES {
        let dir = root.join(krate);
        let manifest = dir.join("Cargo.toml");
        println!("cargo:rerun-if-changed={}", manifest.display());
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
        files.push((format!("{krate}/Cargo.toml"), FileText::Text(resolved_manifest(krate, &read(&manifest)?, ws_package, ws_deps)?)));
        let mut stack = vec![dir.join("src")];
        while let Some(d) = stack.pop() {
            for p in sorted(&d)? {
                if p.is_dir() {
                    println!("cargo:rerun-if-changed={}", p.display());
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(&root)?.to_str().ok_or("non-UTF-8 path")?.replace('\\', "/");
                    files.push((rel, FileText::Include(p)));
                }
            }
        }
    }
    let lock = root.join("Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    println!("cargo:rerun-if-changed={}", root.join("Cargo.toml").display());

    let mut rs =
        String::from("/// The files `kbha policy new` writes under `vendor/`: (path, text).\npub const VENDOR: &[(&str, &str)] = &[\n");
    for (path, text) in &files {
        match text {
            FileText::Include(p) => writeln!(rs, "    ({path:?}, include_str!({:?})),", p.to_str().ok_or("non-UTF-8 path")?)?,
            FileText::Text(t) => writeln!(rs, "    ({path:?}, {t:?}),")?,
        }
    }
    rs.push_str("];\n");
    writeln!(
        rs,
        "/// The workspace's Cargo.lock when kbha was built.\npub const CARGO_LOCK: &str = include_str!({:?});",
        lock.to_str().ok_or("non-UTF-8 path")?
    )?;
    std::fs::write(out.join("vendor.rs"), rs)?;
    Ok(())
}

enum FileText {
    Include(PathBuf),
    Text(String),
}

fn read(p: &Path) -> Res<String> {
    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()).into())
}

fn name(p: &Path) -> Res<&str> {
    Ok(p.file_name().and_then(|n| n.to_str()).ok_or("non-UTF-8 file name")?)
}

fn sorted(dir: &Path) -> Res<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

/// A member's manifest for life outside the workspace: `[package]` with the inherited
/// fields filled in, `[features]` as is, `[dependencies]` resolved; no dev-dependencies,
/// lints or other targets (only the library is built).
fn resolved_manifest(krate: &str, text: &str, ws_package: &toml::Table, ws_deps: &toml::Table) -> Res<String> {
    let m: toml::Table = toml::from_str(text)?;
    let mut out = String::from("# Vendored by `kbha policy new` from the kbha repository; do not edit.\n[package]\n");
    let package = m.get("package").and_then(toml::Value::as_table).ok_or("no [package]")?;
    for (k, v) in package {
        let v = match v.as_table().and_then(|t| t.get("workspace")) {
            Some(toml::Value::Boolean(true)) => ws_package.get(k).ok_or_else(|| format!("{krate}: workspace.package.{k} missing"))?,
            _ => v,
        };
        writeln!(out, "{k} = {}", inline(v))?;
    }
    out.push_str("publish = false\n");
    if let Some(features) = m.get("features").and_then(toml::Value::as_table) {
        out.push_str("\n[features]\n");
        for (k, v) in features {
            writeln!(out, "{} = {}", key(k), inline(v))?;
        }
    }
    if let Some(deps) = m.get("dependencies").and_then(toml::Value::as_table) {
        out.push_str("\n[dependencies]\n");
        resolved_dependencies(&mut out, krate, deps, ws_deps)?;
    }
    // Target-specific dependencies (the SDK's allocator is wasm32-only), resolved alike.
    for (cfg, target) in m.get("target").and_then(toml::Value::as_table).into_iter().flatten() {
        if let Some(deps) = target.get("dependencies").and_then(toml::Value::as_table) {
            writeln!(out, "\n[target.{}.dependencies]", inline(&toml::Value::String(cfg.clone())))?;
            resolved_dependencies(&mut out, krate, deps, ws_deps)?;
        }
    }
    Ok(out)
}

/// One `[dependencies]` table's entries with `workspace = true` resolved and path
/// dependencies pointing into the vendored copy.
fn resolved_dependencies(out: &mut String, krate: &str, deps: &toml::Table, ws_deps: &toml::Table) -> Res<()> {
    for (k, v) in deps {
        let mut dep = match v {
            toml::Value::String(version) => {
                let mut t = toml::Table::new();
                t.insert("version".into(), toml::Value::String(version.clone()));
                t
            }
            toml::Value::Table(t) => t.clone(),
            _ => return Err(format!("{krate}: dependency {k} is neither a version nor a table").into()),
        };
        if dep.remove("workspace").is_some_and(|w| w.as_bool() == Some(true)) {
            let base = match ws_deps.get(k) {
                Some(toml::Value::String(version)) => {
                    let mut t = toml::Table::new();
                    t.insert("version".into(), toml::Value::String(version.clone()));
                    t
                }
                Some(toml::Value::Table(t)) => t.clone(),
                _ => return Err(format!("{krate}: workspace.dependencies.{k} missing").into()),
            };
            let extra = dep.remove("features");
            let mut merged = base;
            if let Some(toml::Value::Array(extra)) = extra {
                let mut features = merged.get("features").and_then(toml::Value::as_array).cloned().unwrap_or_default();
                features.extend(extra);
                merged.insert("features".into(), toml::Value::Array(features));
            }
            merged.extend(dep);
            dep = merged;
        }
        if let Some(toml::Value::String(path)) = dep.get("path") {
            // Workspace paths are relative to the root; the vendored copy keeps the
            // layout, so climb from this crate to the vendor root.
            if !CRATES.contains(&path.as_str()) {
                return Err(format!("{krate}: path dependency {k} ({path}) is not vendored").into());
            }
            let up = "../".repeat(krate.split('/').count());
            dep.insert("path".into(), toml::Value::String(format!("{up}{path}")));
        }
        writeln!(out, "{} = {}", key(k), inline(&toml::Value::Table(dep)))?;
    }
    Ok(())
}

fn key(k: &str) -> String {
    if k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') { k.to_owned() } else { format!("{k:?}") }
}

/// A TOML value on one line (strings, booleans, numbers, arrays and inline tables).
fn inline(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(a) => format!("[{}]", a.iter().map(inline).collect::<Vec<_>>().join(", ")),
        toml::Value::Table(t) => {
            format!("{{ {} }}", t.iter().map(|(k, v)| format!("{} = {}", key(k), inline(v))).collect::<Vec<_>>().join(", "))
        }
        toml::Value::Datetime(d) => d.to_string(),
    }
}
