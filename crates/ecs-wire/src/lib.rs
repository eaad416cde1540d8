//! What the ecs-renewd daemon and its ECS emulator share, so that neither reaches into the
//! other: the ECS wire format and the small value types both are built on.
//!
//! # Layout
//! - [`action`]: the ECS actions the daemon calls, by name.
//! - [`types`]: the request and response shapes of those actions (field names and casing as the
//!   service writes them, docs/ecs-api.md in the ecs-renewd repository).
//! - [`periods`]: which renewal periods each site accepts.
//! - [`signer`]: the RPC signature (HMAC-SHA1), used by the client to sign and the emulator to
//!   verify.
//! - [`signer_v3`]: the ACS3-HMAC-SHA256 ("V3") signature today's official SDKs send, which the
//!   emulator verifies too.
//! - [`time`]: the service's time formats and its UTC+8 calendar.
//! - [`clock`]: time as an input (the wall clock or a virtual one tests and the demo move).
//! - [`duration`]: human durations (`90s`, `7d`) in config and fleet files.
//! - [`secret`]: the redacting, zeroizing type that holds every secret, and secret files.
//! - [`closed_enum!`]: fieldless enums with one spelling per variant.

pub mod closed_enum;

pub mod action;
pub mod clock;
pub mod duration;
pub mod periods;
pub mod secret;
pub mod signer;
pub mod signer_v3;
pub mod time;
pub mod types;

pub use action::Action;
