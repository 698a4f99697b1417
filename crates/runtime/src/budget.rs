//! A container's descriptor budget: how many WASI handles (open files and directories,
//! sockets and their streams, pollables) its guest may hold at once.
//!
//! Every handle lives in the store's resource table, and every host descriptor a guest holds
//! (a file, a directory, a socket) is behind one, so capping the table caps the descriptors
//! one container takes from the process: a guest that opens without closing cannot starve
//! its siblings (or the agent's own connections) of the process's open-files limit. The cap
//! is wasmtime's own `ResourceTable::set_max_capacity`; opening past it ends the guest with a
//! trap whose message names the budget and how to raise it. wasmtime-wasi 48 gives no error
//! code for it to return instead: its `wasi:filesystem` error codes have no EMFILE (a host
//! EMFILE reaches a guest as `io`), and a full table is a trap in every interface.

use wasmtime::component::{ResourceTable, ResourceTableError};

use crate::spec::Limits;

/// Handles a container may hold at once when its [`Limits::descriptors`] is not set: four
/// times the soft open-files limit a Linux process starts with (1,024), as a TCP connection
/// takes three handles (the socket and its two streams) and a file one.
pub const DEFAULT_DESCRIPTORS: u32 = 4096;

/// The budget `limits` gives.
pub(crate) fn of(limits: &Limits) -> u32 {
    limits.descriptors.unwrap_or(DEFAULT_DESCRIPTORS)
}

/// Caps `table` at `budget` handles.
pub(crate) fn apply(table: &mut ResourceTable, budget: u32) {
    table.set_max_capacity(usize::try_from(budget).unwrap_or(usize::MAX));
}

/// The trap message for `err`: the budget and its fix when the guest used it up, else the
/// error's own text.
pub(crate) fn describe_trap(err: &wasmtime::Error, budget: u32) -> String {
    let full = err
        .chain()
        .any(|cause| matches!(cause.downcast_ref(), Some(ResourceTableError::Full)));
    if !full {
        return crate::runtime::describe(err);
    }
    format!(
        "the guest used up its descriptor budget: it holds {budget} WASI handles at once (open \
         files and directories, sockets and their streams); close what it no longer needs, or \
         raise the budget (`wasmlet run --max-descriptors`, or the pod annotation \
         `{ANNOTATION}`)"
    )
}

/// The pod annotation that sets the budget of each of its containers (a count of handles).
pub const ANNOTATION: &str = "wasmlet.dev/max-descriptors";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_names_the_budget_and_its_fix() {
        let mut table = ResourceTable::new();
        apply(&mut table, 2);
        table.push(1u8).unwrap();
        table.push(2u8).unwrap();
        let full = table.push(3u8).unwrap_err();
        let err = wasmtime::Error::new(full).context("open-at");
        let message = describe_trap(&err, 2);
        assert!(message.contains("holds 2 WASI handles"), "{message}");
        assert!(message.contains("--max-descriptors"), "{message}");
        assert!(message.contains(ANNOTATION), "{message}");
    }

    #[test]
    fn another_error_keeps_its_text() {
        let err = wasmtime::Error::msg("wasm trap: unreachable");
        assert_eq!(describe_trap(&err, 2), "wasm trap: unreachable");
    }

    #[test]
    fn unset_limits_get_the_default() {
        assert_eq!(of(&Limits::default()), DEFAULT_DESCRIPTORS);
        let limits = Limits {
            descriptors: Some(7),
            ..Limits::default()
        };
        assert_eq!(of(&limits), 7);
    }
}
