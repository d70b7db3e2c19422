//! The client and operator commands of `agentkeys-broker`: `creds` (an AWS
//! `credential_process`), `audit verify|tail`, and the generators of the AWS policies an
//! operator installs (`kms-policy`, `iam-oidc`), the issuer's DNS CAA record
//! (`caa-record`), and what every such program does around
//! its command ([`process`]).

pub mod audit;
pub mod aws_policies;
pub mod caa;
pub mod creds;
pub mod process;
pub mod trust;
