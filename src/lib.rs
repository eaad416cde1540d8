//! ecs-renewd keeps Alibaba Cloud ECS subscription (PrePaid) instances from expiring.
//!
//! # Layout
//! - [`cloud`]: the ECS OpenAPI client (signing, credentials, transport, typed calls, errors)
//!   and the wire types the emulator shares.
//! - [`clock`]: time as an input (wall clock or a virtual one).
//! - [`secret`]: the redacting type that holds every secret.
//! - [`money`], [`duration`]: small value types.

pub use ecs_wire::{clock, closed_enum, duration, secret};

pub mod accounts;
pub mod cloud;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod ledger;
pub mod memory;
pub mod metrics;
pub mod money;
pub mod policy;
pub mod reconcile;
pub mod telemetry;
