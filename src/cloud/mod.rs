//! Everything that talks to ECS: signing, credentials, endpoints, transport with rate limits
//! and retries, typed calls, the wire format (shared with the emulator) and the error model.

pub mod client;
pub mod credentials;
pub mod ecs;
pub mod endpoint;
pub mod error;
pub mod rate_limit;
pub mod retry;

pub use client::{ClientSettings, EcsClient};
pub use ecs_wire::{Action, action, periods, signer, time, types};
pub use error::{CloudError, ErrorClass};
