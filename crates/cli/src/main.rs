//! The `wasmlet` command line.

fn main() {}
