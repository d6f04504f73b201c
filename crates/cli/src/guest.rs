//! Building guests: a crate -> wasm32 core module -> component -> precompiled artifact for
//! this host. `kbha policy build` builds a policy crate with it, `cargo xtask policies` the
//! repository's built-in guests.
//!
//! Toolchain choice, first that exists:
//! 1. rustup with the `wasm32-unknown-unknown` target installed: plain
//!    `cargo build --target wasm32-unknown-unknown`.
//! 2. Debian's `rustc-web` + `cargo-web` + `rust-web-src` (`/usr/bin/rustc`
//!    with std sources): `-Zbuild-std` through `RUSTC_BOOTSTRAP=1`, linked with
//!    `rust-lld` (Debian's `lld-22` provides it).
//!
//! Otherwise it fails saying what to install.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use kbha_policy_host::{Limits, PolicyEngine, World};

const TARGET: &str = "wasm32-unknown-unknown";
/// A guest's initial linear memory, in bytes (a multiple of the 64 KiB wasm page): the 1 MiB
/// stack, static data and a heap no built-in decision outgrows (see [`cargo_build`]).
const GUEST_INITIAL_MEMORY: usize = 2 << 20;
const INSTALL_HINT: &str = "no toolchain can build wasm32-unknown-unknown: run \
     `rustup target add wasm32-unknown-unknown`, or on Debian/Ubuntu \
     `apt-get install rustc-web cargo-web rust-web-src lld-22`";

/// How the guests get compiled.
#[derive(Debug)]
pub enum Toolchain {
    /// rustup's stable toolchain with the wasm32 target installed.
    Rustup,
    /// Debian's rustc-web, rebuilding std from source.
    DebianBuildStd {
        /// Debian's `rustc`.
        rustc: PathBuf,
        /// Debian's `cargo`.
        cargo: PathBuf,
        /// The wasm linker, when rustc would not find one itself.
        linker: Option<PathBuf>,
    },
}

fn rustup_has_target() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == TARGET))
        .unwrap_or(false)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The toolchain that can build wasm32 guests here (see the module documentation).
pub fn detect() -> anyhow::Result<Toolchain> {
    if rustup_has_target() {
        return Ok(Toolchain::Rustup);
    }
    let rustc = PathBuf::from("/usr/bin/rustc");
    let cargo = PathBuf::from("/usr/bin/cargo");
    if rustc.is_file() && cargo.is_file() {
        let sysroot = Command::new(&rustc)
            .args(["--print", "sysroot"])
            .output()
            .ok()
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        let has_src = sysroot.as_deref().is_some_and(|s| s.join("lib/rustlib/src/rust/library/std/Cargo.toml").is_file());
        if has_src {
            // The wasm32 target links with `rust-lld` in wasm-ld flavour;
            // Debian ships it in lld-22 (as /usr/bin/rust-lld or
            // wasm-ld-22). Pass it explicitly only when rustc would not find it.
            let in_sysroot = sysroot.as_deref().is_some_and(|s| {
                s.join("lib/rustlib").read_dir().into_iter().flatten().flatten().any(|e| e.path().join("bin/rust-lld").is_file())
            });
            let linker = if in_sysroot || on_path("rust-lld").is_some() {
                None
            } else if let Some(p) = on_path("wasm-ld-22").or_else(|| on_path("wasm-ld")) {
                Some(p)
            } else {
                bail!("rustc-web is installed but no wasm linker is: run `apt-get install lld-22`");
            };
            return Ok(Toolchain::DebianBuildStd { rustc, cargo, linker });
        }
    }
    bail!("{INSTALL_HINT}")
}

/// What one cargo run builds: a member of the workspace cargo runs in (`-p`) or a crate
/// directory (`--manifest-path`, e.g. one made by `kbha policy new`).
#[derive(Debug)]
pub struct Package {
    /// Cargo package name.
    pub name: String,
    /// `Cargo.toml` of the crate; `None`: a member of the workspace of the directory cargo
    /// runs in.
    pub manifest: Option<PathBuf>,
}

impl Package {
    /// The core module cargo writes (`<package with _>.wasm`).
    fn core_module_file(&self) -> String {
        format!("{}.wasm", self.name.replace('-', "_"))
    }
}

/// The package in `<dir>/Cargo.toml`.
pub fn crate_package(dir: &Path) -> anyhow::Result<Package> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        package: Named,
    }
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).with_context(|| format!("cannot read `{}`", manifest.display()))?;
    let parsed: Manifest = toml::from_str(&text).with_context(|| format!("`{}` has no [package] name", manifest.display()))?;
    let manifest = std::fs::canonicalize(&manifest).with_context(|| format!("`{}`", manifest.display()))?;
    Ok(Package { name: parsed.package.name, manifest: Some(manifest) })
}

/// Builds one guest's core module, returning its path.
fn cargo_build(tc: &Toolchain, package: &Package, wasm_target_dir: &Path, cwd: &Path) -> anyhow::Result<PathBuf> {
    let mut cmd = match tc {
        Toolchain::Rustup => {
            let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            c.arg("build");
            c
        }
        Toolchain::DebianBuildStd { rustc, cargo, linker } => {
            let mut c = Command::new(cargo);
            c.args(["build", "-Zbuild-std=std,panic_abort"])
                .env("RUSTC", rustc)
                // build-std is unstable; rustc-web is a stable compiler.
                .env("RUSTC_BOOTSTRAP", "1")
                // A rustup proxy setting from an outer `cargo` run must not
                // leak into the Debian toolchain.
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("RUSTC_WRAPPER");
            if let Some(l) = linker {
                c.env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", l);
            }
            c
        }
    };
    // One cargo run per guest: features then resolve for that crate alone, so
    // a component carries only its own world.
    cmd.args(["--profile", "policy", "--target", TARGET]);
    // The guest starts with room for its heap. Rust's default initial memory is the 1 MiB
    // stack plus static data, so a decision's first allocation grows the memory; with the
    // pooling allocator's guard pages each growth costs an mprotect, and resetting the slot
    // for the next fresh instance another (two of the 13 µs of a fresh-instance decision).
    // The extra pages cost nothing until touched: wasmtime restores only dirtied pages.
    cmd.arg("--config").arg(format!("target.{TARGET}.rustflags=[\"-Clink-arg=--initial-memory={GUEST_INITIAL_MEMORY}\"]"));
    match &package.manifest {
        None => cmd.args(["-p", package.name.as_str()]),
        Some(m) => cmd.arg("--manifest-path").arg(m),
    };
    cmd.arg("--target-dir")
        .arg(wasm_target_dir)
        .current_dir(cwd)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    let status = cmd.status().with_context(|| format!("cannot run cargo for `{}`", package.name))?;
    if !status.success() {
        bail!("building `{}` for {TARGET} failed ({status})", package.name);
    }
    Ok(wasm_target_dir.join(TARGET).join("policy").join(package.core_module_file()))
}

/// Core module -> component, in-process, without any WASI adapter.
fn componentize(core: &[u8]) -> anyhow::Result<Vec<u8>> {
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(core)
        .context("the core module lacks kbha's component type section; does it use kbha-policy-sdk's export macro?")?
        .encode()
        .context("cannot encode the component")?;
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&component)
        .context("the encoded component does not validate")?;
    Ok(component)
}

/// One artifact to build: its name, what cargo builds, the world it must implement
/// (`None`: whichever it does, for a crate given with `--crate`).
#[derive(Debug)]
pub struct Job {
    /// Artifact name: `<out>/<name>.wasm` and `<out>/<name>.cwasm`.
    pub name: String,
    /// What cargo builds.
    pub package: Package,
    /// The world the component must implement; `None`: any.
    pub world: Option<World>,
}

/// Builds `jobs` in order, each with cargo run in `cwd`, sharing `wasm_target_dir` (std of
/// build-std and common dependencies build once), and writes `<out>/<name>.wasm` (the
/// component) and `<out>/<name>.cwasm` (precompiled for this host); prints both paths.
/// Returns the components' paths.
pub fn build(jobs: Vec<Job>, cwd: &Path, wasm_target_dir: &Path, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let tc = detect()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create `{}`", out.display()))?;
    eprintln!("toolchain: {tc:?}");
    let engine = PolicyEngine::new(Limits::default())?;
    let mut built = Vec::new();
    for job in jobs {
        let started = Instant::now();
        let core_path = cargo_build(&tc, &job.package, wasm_target_dir, cwd)?;
        let core = std::fs::read(&core_path).with_context(|| format!("cannot read `{}`", core_path.display()))?;
        let component = componentize(&core).with_context(|| format!("guest `{}`", job.name))?;
        let inspection = engine.inspect(&component)?;
        if let Some(p) = inspection.problems.first() {
            bail!("guest `{}`: {p}", job.name);
        }
        let Some(world) = inspection.world else {
            bail!("guest `{}` implements no kbha world", job.name);
        };
        if let Some(expected) = job.world
            && expected != world
        {
            bail!("guest `{}` should implement `{}` but implements `{}`", job.name, expected.wit_name(), world.wit_name());
        }
        let precompiled = engine.precompile(&component)?;
        let wasm_path = out.join(format!("{}.wasm", job.name));
        let cwasm_path = out.join(format!("{}.cwasm", job.name));
        std::fs::write(&wasm_path, &component).with_context(|| format!("cannot write `{}`", wasm_path.display()))?;
        std::fs::write(&cwasm_path, &precompiled).with_context(|| format!("cannot write `{}`", cwasm_path.display()))?;
        println!(
            "{}: world {} ({} ms)\n  {}  {} bytes  {}\n  {}  {} bytes  {}",
            job.name,
            world.wit_name(),
            started.elapsed().as_millis(),
            wasm_path.display(),
            component.len(),
            kbha_policy_host::digest(&component),
            cwasm_path.display(),
            precompiled.len(),
            kbha_policy_host::digest(&precompiled),
        );
        built.push(wasm_path);
    }
    Ok(built)
}
