//! The AgentKeys parent broker: the HTTP front that AWS IAM and agents talk to, the
//! session check, the STS exchange, the durable audit log, the enclave client and
//! supervisor, and the client and operator commands.
//!
//! Nothing in this crate can read key material: the only way into the enclave is the
//! wire protocol of `agentkeys-wire`. Nothing in it is mock or fault-injection code: the
//! dev stack lives in the `agentkeys-dev` crate, which builds on this one.
//!
//! | module | job |
//! |---|---|
//! | [`broker`] | assembling a broker from its configuration, and `serve` |
//! | [`http`] | the listener, the routes, the mint path, the API errors |
//! | [`enclave`] | the enclave client and supervisor, the sealed seed file |
//! | [`relay`] | the issuer listener: connections relayed, unread, to the enclave's TLS |
//! | [`session`], [`sts`] | the session backend check, the STS exchange |
//! | [`audit`] | the durable, hash-chained audit log and its verification |
//! | [`cli`] | the client and operator commands (`creds`, `audit`, policy generators) |

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod audit;
pub mod broker;
pub mod cli;
pub mod config;
pub mod enclave;
pub mod http;
pub mod metrics;
pub mod relay;
pub mod session;
pub mod sts;
