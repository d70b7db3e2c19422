//! The issuer's TLS, terminated inside the enclave.
//!
//! The parent relays the issuer hostname's TCP connections, unread, to the enclave's TLS
//! endpoint ([`server`]); the enclave holds the only copy of the TLS key ([`keys`],
//! derived from the seed) and obtains its certificate itself with ACME ([`acme`]), over
//! HTTPS to the CA that also ends inside the enclave ([`transport`]). The parent keeps a
//! copy of the public chain and offers it back after a restart; [`chain`] checks it
//! against the enclave's own key, name and the clock before it is served.
//!
//! * [`keys`]: the TLS key and the ACME account key.
//! * [`certs`]: the certificates the enclave makes for its TLS key: self-signed (served
//!   until a CA certifies the key), the RFC 8737 challenge certificate, the CSR.
//! * [`chain`]: checking a PEM chain against the key, the issuer host and the clock.
//! * [`server`]: the accept loop: SNI check, `acme-tls/1`, HTTP/1.1 issuer routes.
//! * [`acme`]: the RFC 8555 client and its renewal loop.
//! * [`transport`]: HTTPS to the CA (vsock-proxy in production, loopback in mock mode).

pub mod acme;
pub mod certs;
pub mod chain;
pub mod keys;
pub mod server;
pub mod state;
pub mod transport;

use std::time::Duration;

pub use state::IssuerTls;

/// Timing of the ACME client. Production values are the defaults; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcmeTiming {
    /// Longest wait for one HTTP exchange with the CA.
    pub request_timeout: Duration,
    /// Longest time one order (account, authorization, challenge, finalize, download) may
    /// take before it is abandoned and retried.
    pub order_deadline: Duration,
    /// First wait after a failure; doubled after each further failure.
    pub retry_min: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
    /// First wait while polling an order's state (grows by half each time).
    pub poll_initial: Duration,
    /// Longest wait after unseal for the parent to offer the chain it cached, before the
    /// client orders a certificate of its own (a restarted enclave then serves the cached
    /// chain instead of ordering again).
    pub parent_offer_window: Duration,
}

impl Default for AcmeTiming {
    fn default() -> Self {
        AcmeTiming {
            // A CA answers in well under a second; 30 s leaves room for a slow path
            // through the vsock-proxy without letting a stalled CA hold the loop.
            request_timeout: Duration::from_secs(30),
            // Let's Encrypt validates within seconds to a minute; 10 minutes bounds an
            // order that the CA never completes.
            order_deadline: Duration::from_secs(600),
            // Let's Encrypt's rate limits ("Failed validations": 5 per hour per account and
            // hostname) make fast retries useless: start at 30 s, cap at one hour.
            retry_min: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            poll_initial: Duration::from_secs(1),
            // The broker offers its cache in its first request after the unseal returns
            // (`parent/src/enclave/issuer_tls.rs`), well within a second; 10 s keeps an
            // enclave without such a broker from waiting long.
            parent_offer_window: Duration::from_secs(10),
        }
    }
}
