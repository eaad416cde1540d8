//! ecs-renewd keeps Alibaba Cloud ECS subscription (PrePaid) instances from expiring.
//!
//! # Layout
//! Floor by floor from the bottom; a module uses only the floors below it
//! (`tests/it/layers.rs` checks that none reaches up and that the graph has no cycle):
//! 1. `money`, `pg_url` (a PostgreSQL URL's parts), and the `ecs-wire` crate's leaves (clock, secret, duration, the closed enums,
//!    the wire types and the signers, shared with the emulator).
//! 2. [`cloud`]: the ECS and BSS OpenAPI client (credentials, transport with rate limits and
//!    retries, typed calls, errors).
//! 3. `policy`: pure decisions — matching, `decide` per instance, the safety belts, backoff,
//!    the funds forecast's arithmetic.
//! 4. [`config`]: the TOML file, read and checked with file:line:col, compiled to a
//!    [`Config`]; and [`ledger`]: the durable SQLite record of every intent and outcome.
//! 5. [`accounts`]: config accounts → resolved credentials → API clients; and `metrics`,
//!    `telemetry`, `memory`: what the daemon exports and logs, and how it gives memory back.
//! 6. [`reconcile`]: one pass, in phases over steps over policy; [`reconcile::Engine`] runs it.
//! 7. [`daemon`]: the loop — ticks, retries, reloads, shutdown, systemd, the admin server.
//! 8. [`commands`]: the subcommands' bodies the binary calls.
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
pub(crate) mod pg_url;
pub(crate) mod policy;
pub mod reconcile;
pub(crate) mod telemetry;

pub use config::Config;
pub use memory::tune_allocator;
pub use metrics::Metrics;
pub use money::Money;
pub use policy::{ChargeBy, Forecast, InstanceState, NextAction, first_deduction};
pub use telemetry::{LogFormat, init as init_logging};
