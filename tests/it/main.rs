//! The integration tests, one binary: each module below was a test binary of its own, and all of
//! them share `support` (the scripted loopback stub, the emulator harness, builders and the one
//! log capture). One binary links once instead of once per module, and `support` is checked for
//! dead code like any other code. `tests/wiped_memory.rs` stays apart: it replaces the global
//! allocator with one that scans freed memory, which would slow every other test and see their
//! secrets too.
//!
//! Run one module with `cargo test --test it soak::`, one test with its full name.

mod support;

mod admin;
mod assumed_roles;
mod bad_input;
mod client;
mod config;
mod credentials;
mod daemon;
mod demo;
mod deploy;
mod directories;
mod emulator;
mod failover;
mod forecast_oracle;
mod funds;
mod fuzz;
mod layers;
mod money_safety;
mod oracle;
mod plan;
mod postgres;
mod process;
mod renewals;
mod sdk_compat;
mod security;
mod soak;
