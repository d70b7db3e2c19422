//! Local stand-ins for the services the broker talks to, for the dev stack and tests:
//! AWS STS ([`sts`]) and the session backend ([`backend`]). Loopback only.

pub mod backend;
pub mod sts;
