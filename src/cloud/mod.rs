//! Everything that talks to ECS: signing, credentials, endpoints, transport with rate limits
//! and retries, typed calls, the wire format (shared with the emulator) and the error model.

pub(crate) mod bss;
pub(crate) mod client;
pub mod credentials;
pub(crate) mod directory;
pub(crate) mod ecs;
pub(crate) mod endpoint;
pub(crate) mod error;
pub(crate) mod rate_limit;
pub(crate) mod retry;

pub use bss::{BalanceError, bss_urls};
pub use client::{
    ClientSettings, EcsClient, NoObserver, form_body, shared_http_client, signed_parameters,
};
pub use ecs::{AutoRenewTarget, ClientToken, InstanceQuery};
pub use ecs_wire::{Action, action, periods, signer, time, types};
pub use endpoint::Endpoint;
pub use error::{CloudError, ErrorClass, TransportKind, classified_codes};
pub use rate_limit::RateLimitConfig;
pub use retry::RetryPolicy;
