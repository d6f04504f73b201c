//! What a policy may import: the contract's own interfaces and, on an engine with
//! [`Limits::wasi`](crate::Limits::wasi) on, the WASI 0.2 interfaces the sandbox backs.

use crate::PolicyError;

/// The version of the `kbha:policy` package (wit/kbha.wit) this host serves.
pub const CONTRACT_VERSION: &str = "0.3.0";

/// Import names a policy component may have; everything else is refused.
pub const ALLOWED_IMPORTS: &[&str] = &["kbha:policy/host@0.3.0", "kbha:policy/types@0.3.0"];

/// WASI 0.2 interfaces an engine with [`Limits::wasi`](crate::Limits::wasi) on also accepts, as
/// `wasi:<package>/<interface>` (any `@0.2.x` version): the ones
/// `wasmtime_wasi::p2::add_to_linker_sync` provides, each backed by the empty
/// sandbox described in the crate docs. Any other interface (`wasi:http`,
/// `wasi:keyvalue`, WASI 0.3, anything foreign) stays refused.
pub const WASI_IMPORTS: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// Whether `name` is one of [`WASI_IMPORTS`] at a 0.2 version.
fn is_offered_wasi(name: &str) -> bool {
    name.split_once("@0.2.").is_some_and(|(interface, _)| WASI_IMPORTS.contains(&interface))
}

/// The refusal for each import in `imports` that is not offered (WASI counting as
/// offered when `wasi` is on).
pub(crate) fn forbidden_imports(imports: &[String], wasi: bool) -> impl Iterator<Item = PolicyError> + '_ {
    imports
        .iter()
        .filter(move |n| {
            let offered = ALLOWED_IMPORTS.contains(&n.as_str()) || (wasi && is_offered_wasi(n));
            !offered
        })
        .map(|n| match n.strip_prefix("kbha:policy/").and_then(|rest| rest.split_once('@')) {
            // Our own interface at another version: say which versions, not "forbidden".
            Some((_, found)) => PolicyError::ContractVersion { found: found.to_owned(), served: CONTRACT_VERSION },
            None => PolicyError::ForbiddenImport { name: n.clone() },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_wasi_is_the_0_2_set() {
        assert!(is_offered_wasi("wasi:cli/environment@0.2.9"));
        assert!(is_offered_wasi("wasi:sockets/tcp@0.2.0"));
        assert!(!is_offered_wasi("wasi:cli/environment@0.3.0"));
        assert!(!is_offered_wasi("wasi:http/outgoing-handler@0.2.0"));
        assert!(!is_offered_wasi("wasi:cli/environment"));
    }
}
