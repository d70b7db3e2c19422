//! The ACME (RFC 8555) client of the issuer's TLS and its renewal loop.
//!
//! `instant-acme` speaks the protocol: it takes our own HTTP transport
//! ([`super::transport::AcmeHttp`], HTTPS that ends inside the enclave) and our own
//! account key (derived from the seed, so every enclave of a fleet and every boot has the
//! same account URL, which the CAA record's `accounturi` pins). The only challenge
//! answered is TLS-ALPN-01 (RFC 8737), on the relayed issuer port, so the parent never
//! holds a challenge response.
//!
//! The loop: wait for the keys; while self-signed or within the renewal window, order a
//! certificate (one overall deadline per order, a timeout per HTTP exchange), check the
//! chain against our key, name and clock, and serve it; after a failure, record it for
//! the parent (`last_error`), keep serving what we have, and retry with exponential
//! backoff.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, Key, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::certs::{self, CertError};
use super::chain::{self, ChainError, CheckedChain};
use super::keys::IssuerTlsKeys;
use super::state::{server_config, ACME_TLS_ALPN};
use super::transport::{AcmeHttp, TransportError};
use super::IssuerTls;

/// Failures of one ACME attempt.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA's HTTPS could not be set up.
    #[error("ACME transport: {0}")]
    Transport(#[from] TransportError),
    /// `--acme-root` could not be read.
    #[error("cannot read --acme-root {path}: {reason}")]
    Root {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The protocol failed (a problem document, an HTTP failure, a timeout).
    #[error("ACME {step}: {source}")]
    Protocol {
        /// What was being done.
        step: &'static str,
        /// The client's error (the CA's problem document, or the transport's).
        source: instant_acme::Error,
    },
    /// The CA offers no TLS-ALPN-01 challenge.
    #[error("the CA offers no tls-alpn-01 challenge for {hostname}")]
    NoTlsAlpn {
        /// The issuer host.
        hostname: String,
    },
    /// An authorization is neither pending nor valid.
    #[error("authorization for {hostname} is {status}")]
    Authorization {
        /// The issuer host.
        hostname: String,
        /// Its status.
        status: String,
    },
    /// The order did not become ready.
    #[error("order is {status}, not ready{detail}")]
    NotReady {
        /// Its status.
        status: String,
        /// The CA's problem, if it gave one.
        detail: String,
    },
    /// Making a certificate or CSR failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The issued chain does not fit our key, name or clock.
    #[error("the CA's chain is refused: {0}")]
    Chain(#[from] ChainError),
    /// The whole order took too long.
    #[error("the order did not finish within {0:?}; abandoned")]
    Deadline(Duration),
    /// The clock is before 1970.
    #[error("system clock before the UNIX epoch")]
    Clock,
}

fn step(step: &'static str) -> impl FnOnce(instant_acme::Error) -> AcmeError {
    move |source| AcmeError::Protocol { step, source }
}

/// Builds the transport to the CA of `tls`'s configuration.
pub fn transport(tls: &IssuerTls) -> Result<AcmeHttp, AcmeError> {
    let c = tls.config();
    let timeout = c.timing.request_timeout;
    if c.mock {
        let root = match &c.acme_root {
            Some(path) => std::fs::read(path).map_err(|e| AcmeError::Root {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?,
            None => {
                return Err(AcmeError::Root {
                    path: String::new(),
                    reason: "mock mode needs --acme-root (the test CA's root)".into(),
                })
            }
        };
        Ok(AcmeHttp::loopback(
            tls.provider().clone(),
            &c.directory,
            &root,
            timeout,
        )?)
    } else {
        Ok(AcmeHttp::vsock(
            tls.provider().clone(),
            &c.directory,
            c.proxy_port,
            timeout,
        )?)
    }
}

fn now_unix() -> Result<u64, AcmeError> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| AcmeError::Clock)
}

/// Registers (or finds, RFC 8555 section 7.3.1: same key, same account) the account.
async fn account(
    tls: &IssuerTls,
    keys: &IssuerTlsKeys,
    http: &AcmeHttp,
) -> Result<Account, AcmeError> {
    let key = Key::from_pkcs8_der(PrivatePkcs8KeyDer::from(keys.account.pkcs8_der()))
        .map_err(step("account key"))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(keys.account.pkcs8_der().to_vec()));
    let (account, _credentials) = Account::builder_with_http(Box::new(http.clone()))
        .create_from_key((key, der), tls.config().directory.url.clone())
        .await
        .map_err(step("newAccount"))?;
    if let Some(contact) = &tls.config().contact {
        account
            .update_contacts(&[contact.as_str()])
            .await
            .map_err(step("account contact"))?;
    }
    tracing::info!(account_uri = %account.id(), "ACME account ready");
    tls.set_account_uri(account.id().to_string());
    Ok(account)
}

/// One order, from new order to checked chain.
async fn order(
    tls: &IssuerTls,
    keys: &IssuerTlsKeys,
    account: &Account,
) -> Result<CheckedChain, AcmeError> {
    let hostname = tls.hostname().to_string();
    let timing = tls.config().timing;
    let identifiers = [Identifier::Dns(hostname.clone())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(step("newOrder"))?;
    {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(step("authorization"))?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(AcmeError::Authorization {
                        hostname,
                        status: format!("{other:?}"),
                    })
                }
            }
            let mut challenge =
                authz
                    .challenge(ChallengeType::TlsAlpn01)
                    .ok_or_else(|| AcmeError::NoTlsAlpn {
                        hostname: hostname.clone(),
                    })?;
            let digest = challenge.key_authorization().digest();
            let cert = certs::challenge_certificate(&keys.tls, &hostname, digest.as_ref())?;
            let certified = certs::certified_key(&keys.tls, vec![cert])?;
            tls.set_challenge(Some(server_config(
                tls.provider(),
                certified,
                ACME_TLS_ALPN,
            )?));
            challenge.set_ready().await.map_err(step("challenge"))?;
        }
    }
    let retry = RetryPolicy::new()
        .initial_delay(timing.poll_initial)
        .backoff(1.5)
        .timeout(timing.order_deadline);
    let status = order.poll_ready(&retry).await.map_err(step("order"))?;
    if status != OrderStatus::Ready {
        let detail = order
            .state()
            .error
            .as_ref()
            .map(|p| format!(": {p}"))
            .unwrap_or_default();
        return Err(AcmeError::NotReady {
            status: format!("{status:?}"),
            detail,
        });
    }
    tls.set_challenge(None);
    let csr = certs::csr(&keys.tls, &hostname)?;
    order.finalize_csr(&csr).await.map_err(step("finalize"))?;
    let pem = order
        .poll_certificate(&retry)
        .await
        .map_err(step("certificate"))?;
    Ok(chain::check_chain(
        &pem,
        &keys.tls.spki_sha256(),
        &hostname,
        now_unix()?,
    )?)
}

/// Runs `attempt` within the order deadline, clearing any pending challenge after.
async fn within_deadline<T>(
    tls: &IssuerTls,
    attempt: impl std::future::Future<Output = Result<T, AcmeError>>,
) -> Result<T, AcmeError> {
    let deadline = tls.config().timing.order_deadline;
    let result = match tokio::time::timeout(deadline, attempt).await {
        Ok(r) => r,
        Err(_) => Err(AcmeError::Deadline(deadline)),
    };
    tls.set_challenge(None);
    result
}

/// The wait after `failures` consecutive failures: `retry_min` doubled per further
/// failure, at most `retry_max`.
pub fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    min.checked_mul(factor).unwrap_or(max).min(max)
}

/// Runs until the process ends: keeps the issuer's certificate current.
pub async fn run(tls: Arc<IssuerTls>) {
    let keys = tls.wait_keys().await;
    if !tls
        .wait_offer(tls.config().timing.parent_offer_window)
        .await
    {
        tracing::info!("no cached issuer chain offered by the parent; ordering one");
    }
    let http = match transport(&tls) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "issuer TLS cannot reach its CA; serving the self-signed certificate only");
            tls.set_last_error(Some(e.to_string()));
            return;
        }
    };
    let timing = tls.config().timing;
    let mut account: Option<Account> = None;
    let mut failures = 0u32;
    loop {
        // The account first, whatever the certificate: its URL is published (and pinned
        // by the CAA record) even while a cached chain is served.
        let outcome = match &account {
            None => within_deadline(&tls, self::account(&tls, &keys, &http))
                .await
                .map(|a| account = Some(a)),
            Some(a) => match now_unix() {
                Err(e) => Err(e),
                Ok(now) if tls.renew_at() > now => {
                    // Sleep until the renewal window, waking when a chain changes (a
                    // cached one accepted) to recompute; re-check at least hourly.
                    let wait =
                        Duration::from_secs(tls.renew_at() - now).min(Duration::from_secs(3600));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = tls.changed() => {}
                    }
                    continue;
                }
                Ok(_) => match within_deadline(&tls, order(&tls, &keys, a)).await {
                    Ok(chain) => tls.serve_chain(chain).map_err(AcmeError::from),
                    Err(e) => Err(e),
                },
            },
        };
        match outcome {
            Ok(()) => {
                failures = 0;
                tls.set_last_error(None);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff(timing.retry_min, timing.retry_max, failures);
                tracing::warn!(error = %e, failures, retry_in = ?wait, "issuer certificate: ACME failed; serving what we have");
                tls.set_last_error(Some(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = tls.changed() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_minimum_up_to_the_maximum() {
        let (min, max) = (Duration::from_secs(30), Duration::from_secs(3600));
        let waits: Vec<u64> = (1..=10).map(|f| backoff(min, max, f).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(backoff(min, max, 0), min);
        assert_eq!(backoff(min, max, u32::MAX), max);
    }
}
