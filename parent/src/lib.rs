//! The AgentKeys parent broker: the HTTP front that AWS IAM and agents talk to, the
//! session check, the STS exchange, the durable audit log, the enclave client and
//! supervisor, the `dev` stack and the client commands.
//!
//! Nothing in this crate can read key material: the only way into the enclave is the
//! wire protocol of `agentkeys-wire`.

pub mod app;
pub mod audit;
pub mod client;
pub mod completion;
pub mod config;
#[cfg(feature = "dev")]
pub mod dev;
#[cfg(feature = "dev")]
pub mod dev_demo;
pub mod enclave;
pub mod error;
pub mod front;
pub mod metrics;
pub mod policy;
pub mod seed;
pub mod server;
pub mod session;
#[cfg(feature = "dev")]
pub mod standins;
pub mod sts;
