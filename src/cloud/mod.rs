//! Everything that talks to ECS: signing, credentials, endpoints, transport with rate limits
//! and retries, typed calls, the wire format (shared with the emulator) and the error model.

pub mod action;
pub mod client;
pub mod credentials;
pub mod ecs;
pub mod endpoint;
pub mod error;
pub mod periods;
pub mod rate_limit;
pub mod retry;
pub mod signer;
pub mod time;
pub mod types;

pub use action::Action;
pub use client::{ClientSettings, EcsClient};
pub use error::{CloudError, ErrorClass};
