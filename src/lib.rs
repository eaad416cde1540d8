//! ecs-renewd keeps Alibaba Cloud ECS subscription (PrePaid) instances from expiring.
//!
//! # Layout
//! From the bottom up (`tests/it/layers.rs` checks that no layer reaches up):
//! - [`cloud`]: the ECS OpenAPI client (credentials, transport with rate limits and retries,
//!   typed calls, errors); the wire types, the signer and the small leaves (clock, secret,
//!   duration) are the `ecs-wire` crate's, shared with the emulator.
//! - `policy`: pure decisions — matching, `decide` per instance, the safety belts, backoff.
//! - [`config`]: the TOML file, read and checked with file:line:col, compiled to a [`Config`].
//! - [`ledger`]: the durable SQLite record of every intent and outcome.
//! - [`accounts`]: config accounts → resolved credentials → API clients.
//! - [`reconcile`]: one pass, in phases, over every source; [`reconcile::Engine`] runs it.
//! - `metrics`, `telemetry`, `memory`: what the daemon exports and logs, and how it gives
//!   memory back.
//! - [`daemon`]: the loop — ticks, retries, reloads, shutdown, systemd, the admin server.
//! - [`commands`]: the subcommands' bodies the binary calls.
//!
//! Only what the binary and the integration tests use is public (the modules above in links,
//! and the items re-exported here); the rest is crate-private, so the compiler reports what
//! nothing uses.

pub(crate) use ecs_wire::{clock, closed_enum, duration, secret};

pub mod accounts;
pub mod cloud;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod ledger;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod money;
pub(crate) mod policy;
pub mod reconcile;
pub(crate) mod telemetry;

pub use config::Config;
pub use memory::tune_allocator;
pub use metrics::Metrics;
pub use money::Money;
pub use policy::{InstanceState, NextAction, first_deduction};
pub use telemetry::{LogFormat, init as init_logging};
