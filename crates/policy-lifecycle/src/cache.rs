//! Compiled policies by digest, so one component is compiled once.
//!
//! In memory, the [`MEMORY_ENTRIES`] most recently used: a hot swap back to the previous
//! object, or a shadow or fallback that is the same component as the primary, costs
//! nothing, and a warm function swapping through many versions does not keep them all
//! (a loaded policy holds its own reference, so dropping an entry never unloads it). On
//! disk as precompiled artifacts in `KBHA_POLICY_CACHE_DIR` (default
//! `/tmp/kbha-policy-cache`; `off` disables it): Lambda keeps `/tmp` when it restarts
//! the runtime process in the same execution environment (after a crash or a timeout),
//! and compiling is most of a policy's load time.
//!
//! An artifact is native code, so it is trusted only this far: it is looked up by the
//! digest of component bytes the caller has already verified (pin or signature), it
//! was written by this function into its own `/tmp`, and its envelope (digest, sha256
//! of the code) is checked before wasmtime deserialises it (the one `unsafe` block, in
//! `kbha-policy-host`). A file that fails any of that is deleted and the component is
//! compiled again; the disk never decides whether a policy loads.

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use kbha_policy_host::{PolicyEngine, PolicyError};

use crate::Kind;

/// The default directory of precompiled artifacts.
pub const DEFAULT_DIR: &str = "/tmp/kbha-policy-cache";

/// Where a loaded component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Already loaded in this process.
    Memory,
    /// A precompiled artifact in the cache directory.
    Disk,
    /// The artifact embedded in the binary with a built-in policy.
    Embedded,
    /// Compiled from the component bytes (and written to the cache directory).
    Compiled,
}

type Entry = Arc<dyn Any + Send + Sync>;

/// Compiled components kept in memory: the policy, its fallback, its shadow, and the
/// one a hot swap is bringing in.
pub const MEMORY_ENTRIES: usize = 4;

/// Compiled components by world and digest, with when each was last used.
#[derive(Debug, Default)]
struct Memory {
    entries: HashMap<(&'static str, String), (Entry, u64)>,
    clock: u64,
}

impl Memory {
    fn get(&mut self, key: &(&'static str, String)) -> Option<Entry> {
        self.clock += 1;
        let now = self.clock;
        self.entries.get_mut(key).map(|(e, used)| {
            *used = now;
            Arc::clone(e)
        })
    }

    fn insert(&mut self, key: (&'static str, String), entry: Entry) {
        self.clock += 1;
        self.entries.insert(key, (entry, self.clock));
        while self.entries.len() > MEMORY_ENTRIES {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone()) else { break };
            self.entries.remove(&oldest);
        }
    }
}

/// Compiled components by world and digest.
#[derive(Debug)]
pub struct Cache {
    dir: Option<PathBuf>,
    memory: Mutex<Memory>,
}

impl Cache {
    /// A cache keeping artifacts in `dir` (`None`: in memory only).
    pub fn new(dir: Option<PathBuf>) -> Cache {
        Cache { dir, memory: Mutex::new(Memory::default()) }
    }

    /// The process's cache, configured by `KBHA_POLICY_CACHE_DIR`.
    pub fn process() -> &'static Cache {
        static CACHE: OnceLock<Cache> = OnceLock::new();
        CACHE.get_or_init(|| {
            let dir = match std::env::var_os("KBHA_POLICY_CACHE_DIR") {
                Some(v) if v == "off" => None,
                Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
                _ => Some(PathBuf::from(DEFAULT_DIR)),
            };
            Cache::new(dir)
        })
    }

    /// The component with `digest` (the sha256 of `bytes`, already verified by the
    /// caller): from memory, from a precompiled artifact, or compiled from `bytes`.
    pub fn load<K: Kind>(&self, engine: &PolicyEngine, bytes: &[u8], digest: &str) -> Result<(Arc<K::Component>, Origin), PolicyError> {
        self.load_with::<K>(engine, bytes, digest, None)
    }

    /// [`Cache::load`], trying `embedded` (an artifact built with the binary for its
    /// architecture) before the disk: one wasmtime refuses (another version or
    /// configuration, a CPU without the features it needs) or of another digest is logged
    /// and the component compiled instead.
    pub fn load_with<K: Kind>(
        &self,
        engine: &PolicyEngine,
        bytes: &[u8],
        digest: &str,
        embedded: Option<&[u8]>,
    ) -> Result<(Arc<K::Component>, Origin), PolicyError> {
        let key = (K::NAME, digest.to_owned());
        if let Some(hit) = self.memory().get(&key).and_then(|e| e.downcast::<K::Component>().ok()) {
            return Ok((hit, Origin::Memory));
        }
        if let Some(artifact) = embedded {
            match K::load_precompiled(engine, artifact, digest) {
                Ok(c) => {
                    let component = Arc::new(c);
                    self.memory().insert(key, Arc::clone(&component) as Entry);
                    return Ok((component, Origin::Embedded));
                }
                Err(e) => tracing::info!(world = K::NAME, error = %e, "embedded policy artifact not usable by this engine; compiling"),
            }
        }
        let file = self.dir.as_deref().map(|d| artifact_path(d, K::NAME, digest));
        let from_disk = file.as_deref().and_then(|f| from_disk::<K>(engine, f, digest));
        let (component, origin) = match from_disk {
            Some(c) => (c, Origin::Disk),
            None => {
                let c = K::load(engine, bytes)?;
                if let Some(f) = &file {
                    to_disk::<K>(&c, f);
                }
                (c, Origin::Compiled)
            }
        };
        let component = Arc::new(component);
        self.memory().insert(key, Arc::clone(&component) as Entry);
        Ok((component, origin))
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn artifact_path(dir: &Path, world: &str, digest: &str) -> PathBuf {
    dir.join(format!("{world}-{}.cwasm", digest.trim_start_matches("sha256:")))
}

fn from_disk<K: Kind>(engine: &PolicyEngine, file: &Path, digest: &str) -> Option<K::Component> {
    let artifact = std::fs::read(file).ok()?;
    match K::load_precompiled(engine, &artifact, digest) {
        Ok(c) => Some(c),
        Err(e) => {
            // Another wasmtime build, a torn write or tampering: compile instead.
            tracing::warn!(file = %file.display(), error = %e, "cached policy artifact refused; compiling the component");
            let _ = std::fs::remove_file(file);
            None
        }
    }
}

fn to_disk<K: Kind>(component: &K::Component, file: &Path) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let write = || -> std::io::Result<()> {
        let artifact = K::artifact(component).map_err(std::io::Error::other)?;
        let dir = file.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        // Written aside and renamed, so a reader never sees half a file.
        let tmp = dir.join(format!(".{}.{}.{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed), "tmp"));
        std::fs::write(&tmp, artifact)?;
        std::fs::rename(&tmp, file).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    };
    if let Err(e) = write() {
        // The cache only saves time; a read-only or full /tmp must not fail a load.
        tracing::warn!(file = %file.display(), error = %e, "cannot cache the compiled policy");
    }
}

/// The directory, readable and writable by this user only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Failover, Replication};
    use kbha_policy_host::Limits;

    fn engine() -> PolicyEngine {
        PolicyEngine::new(Limits::default()).expect("engine")
    }

    fn builtin_failover() -> &'static [u8] {
        <Failover as Kind>::builtin_bytes().expect("built with the policies (cargo xtask policies)")
    }

    fn tmp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kbha-cache-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_cold_start_loads_the_embedded_artifact_and_never_another_policys() {
        let (engine, bytes) = (engine(), builtin_failover());
        let digest = kbha_policy_host::digest(bytes);
        let embedded = <Failover as Kind>::builtin_precompiled().expect("built with the policies (cargo xtask policies)");
        // A fresh execution environment: nothing in memory, no disk cache.
        let (component, origin) = Cache::new(None).load_with::<Failover>(&engine, bytes, &digest, Some(embedded)).expect("embedded");
        assert_eq!(origin, Origin::Embedded);
        let (compiled, _) = Cache::new(None).load::<Failover>(&engine, bytes, &digest).expect("compiles");
        let input = <Failover as Kind>::smoke_input().expect("input");
        let decide = |c: &<Failover as Kind>::Component| Failover::evaluate(c, &input).map(|e| e.decision).expect("decides");
        assert_eq!(decide(&component), decide(&compiled));
        // Another policy's artifact is refused (its envelope names another digest).
        let other = Cache::new(None).load_with::<Failover>(&engine, bytes, &digest, <Replication as Kind>::builtin_precompiled());
        assert_eq!(other.map(|(_, o)| o).ok(), Some(Origin::Compiled));
    }

    #[test]
    fn compiled_once_then_from_memory_then_from_disk_in_a_new_process() {
        let (engine, bytes) = (engine(), builtin_failover());
        let digest = kbha_policy_host::digest(bytes);
        let dir = tmp_dir("origins");
        let cache = Cache::new(Some(dir.clone()));
        let (first, origin) = cache.load::<Failover>(&engine, bytes, &digest).expect("compiles");
        assert_eq!(origin, Origin::Compiled);
        let (again, origin) = cache.load::<Failover>(&engine, bytes, &digest).expect("cached");
        assert_eq!(origin, Origin::Memory);
        assert!(Arc::ptr_eq(&first, &again));
        assert!(artifact_path(&dir, "failover", &digest).is_file());
        // A restarted runtime: empty memory, same /tmp.
        let restarted = Cache::new(Some(dir.clone()));
        let (from_disk, origin) = restarted.load::<Failover>(&engine, bytes, &digest).expect("from disk");
        assert_eq!(origin, Origin::Disk);
        assert_eq!(from_disk.digest(), first.digest());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_tampered_artifact_is_deleted_and_the_component_compiled_again() {
        let (engine, bytes) = (engine(), builtin_failover());
        let digest = kbha_policy_host::digest(bytes);
        let dir = tmp_dir("tampered");
        Cache::new(Some(dir.clone())).load::<Failover>(&engine, bytes, &digest).expect("compiles");
        let file = artifact_path(&dir, "failover", &digest);
        let mut artifact = std::fs::read(&file).expect("written");
        let last = artifact.len() - 1;
        artifact[last] ^= 0xff;
        std::fs::write(&file, artifact).expect("tamper");
        let (_, origin) = Cache::new(Some(dir.clone())).load::<Failover>(&engine, bytes, &digest).expect("recompiles");
        assert_eq!(origin, Origin::Compiled);
        // ...and the good artifact is back.
        let (_, origin) = Cache::new(Some(dir.clone())).load::<Failover>(&engine, bytes, &digest).expect("from disk");
        assert_eq!(origin, Origin::Disk);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn worlds_do_not_share_entries_and_a_wrong_world_is_still_refused() {
        let (engine, bytes) = (engine(), builtin_failover());
        let digest = kbha_policy_host::digest(bytes);
        let cache = Cache::new(None);
        cache.load::<Failover>(&engine, bytes, &digest).expect("compiles");
        assert!(matches!(cache.load::<Replication>(&engine, bytes, &digest), Err(PolicyError::WrongWorld { .. })));
    }

    #[test]
    fn memory_keeps_the_most_recently_used_entries_only() {
        let mut m = Memory::default();
        let key = |i: usize| ("failover", format!("sha256:{i}"));
        for i in 0..MEMORY_ENTRIES {
            m.insert(key(i), Arc::new(i));
        }
        // Using the oldest makes the second-oldest the one to go.
        assert!(m.get(&key(0)).is_some());
        m.insert(key(99), Arc::new(99usize));
        assert_eq!(m.entries.len(), MEMORY_ENTRIES);
        assert!(m.get(&key(1)).is_none(), "least recently used dropped");
        for i in [0, 2, 3, 99] {
            assert!(m.get(&key(i)).is_some(), "{i} kept");
        }
    }

    #[test]
    fn an_unwritable_directory_only_costs_the_cache() {
        let (engine, bytes) = (engine(), builtin_failover());
        let digest = kbha_policy_host::digest(bytes);
        // A file where the directory should be.
        let blocker = tmp_dir("blocked");
        std::fs::write(&blocker, b"not a directory").expect("write");
        let cache = Cache::new(Some(blocker.join("cache")));
        let (_, origin) = cache.load::<Failover>(&engine, bytes, &digest).expect("loads anyway");
        assert_eq!(origin, Origin::Compiled);
        let _ = std::fs::remove_file(&blocker);
    }
}
