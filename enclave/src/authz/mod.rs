//! Who may have a token signed: the enclave's authorization modes and the proofs they
//! take (`docs/architecture.md`, "Authorization").
//!
//! The modes are part of the enclave's measured command line (`--auth-mode`, with the
//! session backend's key thumbprints in `--session-key-thumbprint`) and are stated in the
//! JWKS attestation, so an auditor sees which rule an issuer applies:
//!
//! * `signed-session`: the caller's session token, signed by the session backend, is
//!   verified here ([`session`]); the wallet is the token's `sub`.
//! * `wallet-signature`: a Sign-In with Ethereum message signed by the wallet itself
//!   ([`siwe`]), carrying a nonce this issuer made ([`nonce`]); the wallet is the signer.
//! * `parent-vouched`: the wallet the parent names, as before these modes existed.
//!
//! With a proof, the wallet the parent names (if any) must be the proven one: the parent
//! may refuse a caller, never widen what a proof allows. Every refusal happens before the
//! audit chain is touched, so a refused mint takes no seq.

pub mod nonce;
pub mod session;
pub mod siwe;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use agentkeys_wire::{MintJwtRequest, Wallet, WalletError, WalletProof};
use sha2::{Digest, Sha256};

use self::nonce::{NonceBook, NonceError};
use self::session::{SessionError, CLOCK_SKEW_SECONDS};
use self::siwe::{SiweError, SiweExpectations};

/// The longest a Sign-In with Ethereum message may live (`Expiration Time` − `Issued At`):
/// 5 minutes, "a few minutes" being what a sign-in needs.
pub const MAX_SIWE_LIFETIME_SECONDS: u64 = 300;
/// Most session keys an enclave trusts at once: the current key and the next during a
/// rotation, with room to spare; each thumbprint is 43 characters of the attested
/// statement, which must stay under the NSM's 1024-byte `user_data` limit.
pub const MAX_SESSION_KEYS: usize = agentkeys_wire::statement::MAX_SESSION_KEYS;
/// Verified sessions remembered (SHA-256 of the token → wallet and expiry): 10 000 × ~80
/// bytes ≈ 1 MiB, so a mint on a session seen before costs a lookup, not a signature
/// verification.
pub const SESSION_CACHE_ENTRIES: usize = 10_000;

/// How the enclave decides whose token it signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuthMode {
    /// A session token the session backend signed.
    SignedSession,
    /// A Sign-In with Ethereum message the wallet signed.
    WalletSignature,
    /// The wallet the parent names.
    ParentVouched,
}

impl AuthMode {
    /// Every mode.
    pub const ALL: [AuthMode; 3] = [
        AuthMode::SignedSession,
        AuthMode::WalletSignature,
        AuthMode::ParentVouched,
    ];

    /// Its name on the command line, in the statement and in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::SignedSession => "signed-session",
            AuthMode::WalletSignature => "wallet-signature",
            AuthMode::ParentVouched => "parent-vouched",
        }
    }

    /// Parses a mode name.
    pub fn parse(name: &str) -> Option<AuthMode> {
        AuthMode::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// An authorization configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    /// An unknown mode name.
    #[error("unknown --auth-mode {0:?} (signed-session, wallet-signature or parent-vouched)")]
    UnknownMode(String),
    /// No mode.
    #[error("at least one --auth-mode is needed")]
    NoMode,
    /// `parent-vouched` beside a mode that needs a proof: the parent could always take
    /// the proof-less way, so the other mode would protect nothing.
    #[error("--auth-mode parent-vouched cannot be combined with {other}: the parent could skip the proof")]
    VouchedWithProof {
        /// The other mode.
        other: &'static str,
    },
    /// `signed-session` without a key.
    #[error("--auth-mode signed-session needs --session-key-thumbprint (the session backend's ES256 key, RFC 7638 thumbprint)")]
    NoSessionKey,
    /// A thumbprint that is not 43 base64url characters (SHA-256).
    #[error("invalid --session-key-thumbprint {0:?}: expected the 43-character base64url RFC 7638 SHA-256 thumbprint")]
    Thumbprint(String),
    /// Too many keys.
    #[error("{found} session keys given, at most {max}")]
    TooManySessionKeys {
        /// How many.
        found: usize,
        /// [`MAX_SESSION_KEYS`].
        max: usize,
    },
    /// Session keys without `signed-session`.
    #[error("--session-key-thumbprint is only used with --auth-mode signed-session")]
    SessionKeyUnused,
    /// The issuer has no host for SIWE's `domain`.
    #[error("the issuer {0:?} has no host to use as the Sign-In with Ethereum domain")]
    NoDomain(String),
}

/// The enclave's authorization rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    modes: Vec<AuthMode>,
    session_keys: Vec<String>,
    issuer: String,
    domain: String,
}

impl AuthPolicy {
    /// Checks and builds the rule for `issuer` (an `http(s)://host[:port]` URL).
    pub fn new(
        modes: &[String],
        session_keys: &[String],
        issuer: &str,
    ) -> Result<AuthPolicy, AuthConfigError> {
        let mut parsed = Vec::new();
        for name in modes {
            let mode =
                AuthMode::parse(name).ok_or_else(|| AuthConfigError::UnknownMode(name.clone()))?;
            if !parsed.contains(&mode) {
                parsed.push(mode);
            }
        }
        parsed.sort();
        if parsed.is_empty() {
            return Err(AuthConfigError::NoMode);
        }
        if parsed.contains(&AuthMode::ParentVouched) {
            if let Some(other) = parsed.iter().find(|m| **m != AuthMode::ParentVouched) {
                return Err(AuthConfigError::VouchedWithProof {
                    other: other.as_str(),
                });
            }
        }
        for key in session_keys {
            let valid = key.len() == 43
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(AuthConfigError::Thumbprint(key.chars().take(64).collect()));
            }
        }
        if session_keys.len() > MAX_SESSION_KEYS {
            return Err(AuthConfigError::TooManySessionKeys {
                found: session_keys.len(),
                max: MAX_SESSION_KEYS,
            });
        }
        let signed_session = parsed.contains(&AuthMode::SignedSession);
        if signed_session && session_keys.is_empty() {
            return Err(AuthConfigError::NoSessionKey);
        }
        if !signed_session && !session_keys.is_empty() {
            return Err(AuthConfigError::SessionKeyUnused);
        }
        let domain = issuer
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
            .filter(|d| !d.is_empty())
            .ok_or_else(|| AuthConfigError::NoDomain(issuer.to_string()))?
            .to_string();
        Ok(AuthPolicy {
            modes: parsed,
            session_keys: session_keys.to_vec(),
            issuer: issuer.to_string(),
            domain,
        })
    }

    /// The modes, in a stable order.
    pub fn modes(&self) -> &[AuthMode] {
        &self.modes
    }

    /// The modes' names, in a stable order.
    pub fn mode_names(&self) -> Vec<String> {
        self.modes.iter().map(|m| m.as_str().to_string()).collect()
    }

    /// The trusted session keys' thumbprints.
    pub fn session_keys(&self) -> &[String] {
        &self.session_keys
    }

    /// The Sign-In with Ethereum `domain` this issuer requires (the issuer URL's
    /// authority).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn allows(&self, mode: AuthMode) -> bool {
        self.modes.contains(&mode)
    }
}

/// Why a mint was not authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No proof, and the enclave does not take the parent's word.
    #[error("no proof of the wallet: this enclave signs only with {modes} (send the caller's session token or a signed sign-in message)")]
    NoProof {
        /// The enabled modes.
        modes: String,
    },
    /// A proof of a kind this enclave does not take.
    #[error("this enclave does not take {mode} proofs (it runs {modes})")]
    ModeNotEnabled {
        /// The proof's mode.
        mode: &'static str,
        /// The enabled modes.
        modes: String,
    },
    /// The session token was refused.
    #[error("{0}")]
    Session(#[from] SessionError),
    /// The sign-in message was refused.
    #[error("{0}")]
    Siwe(#[from] SiweError),
    /// The sign-in message's nonce was refused.
    #[error("sign-in nonce refused: {0}")]
    Nonce(#[from] NonceError),
    /// The parent named another wallet than the proof shows.
    #[error("the parent names wallet {vouched}, but the proof is for {proven}")]
    WalletMismatch {
        /// What the parent named (at most 64 characters).
        vouched: String,
        /// What the proof shows.
        proven: String,
    },
    /// In `parent-vouched` mode, the parent's wallet breaks the wallet rule.
    #[error("invalid wallet: {0}")]
    Wallet(#[from] WalletError),
}

/// A mint the enclave agreed to: for whom, by which rule, on which proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// The wallet the token is for.
    pub wallet: Wallet,
    /// The rule that allowed it.
    pub mode: AuthMode,
    /// SHA-256 of the proof (the session token; or the message then the signature).
    pub proof_sha256: Option<[u8; 32]>,
    /// When the proof stops being valid.
    pub proof_expires_at: Option<u64>,
}

/// Verified sessions, oldest first out.
#[derive(Default)]
struct SessionCache {
    by_hash: HashMap<[u8; 32], (Wallet, u64)>,
    order: VecDeque<[u8; 32]>,
}

impl SessionCache {
    fn get(&self, hash: &[u8; 32], now: u64) -> Option<(Wallet, u64)> {
        self.by_hash
            .get(hash)
            .filter(|(_, exp)| exp.saturating_add(CLOCK_SKEW_SECONDS) > now)
            .cloned()
    }

    fn insert(&mut self, hash: [u8; 32], wallet: Wallet, exp: u64) {
        if self.by_hash.contains_key(&hash) {
            return;
        }
        while self.order.len() >= SESSION_CACHE_ENTRIES {
            if let Some(old) = self.order.pop_front() {
                self.by_hash.remove(&old);
            }
        }
        self.by_hash.insert(hash, (wallet, exp));
        self.order.push_back(hash);
    }
}

/// Applies an [`AuthPolicy`] to mint requests.
pub struct Authorizer {
    policy: AuthPolicy,
    sessions: Mutex<SessionCache>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// An authorizer for `policy`, with an empty session cache.
    pub fn new(policy: AuthPolicy) -> Authorizer {
        Authorizer {
            policy,
            sessions: Mutex::new(SessionCache::default()),
        }
    }

    /// The rule applied.
    pub fn policy(&self) -> &AuthPolicy {
        &self.policy
    }

    fn modes_text(&self) -> String {
        self.policy.mode_names().join(", ")
    }

    /// Decides whether `req` may have a token signed at `now`, and for whom. `nonces` is
    /// the unsealed enclave's nonce book (used by `wallet-signature`).
    pub fn authorize(
        &self,
        req: &MintJwtRequest,
        now: u64,
        nonces: &NonceBook,
    ) -> Result<Authorized, AuthError> {
        let authorized = match &req.proof {
            None => {
                if !self.policy.allows(AuthMode::ParentVouched) {
                    return Err(AuthError::NoProof {
                        modes: self.modes_text(),
                    });
                }
                return Ok(Authorized {
                    wallet: Wallet::parse(&req.wallet)?,
                    mode: AuthMode::ParentVouched,
                    proof_sha256: None,
                    proof_expires_at: None,
                });
            }
            Some(WalletProof::Session(token)) => self.session(token, now)?,
            Some(WalletProof::WalletSignature { message, signature }) => {
                self.wallet_signature(message, signature, now, nonces)?
            }
        };
        if !req.wallet.is_empty() && req.wallet.to_ascii_lowercase() != authorized.wallet.as_str() {
            return Err(AuthError::WalletMismatch {
                vouched: req.wallet.chars().take(64).collect(),
                proven: authorized.wallet.to_string(),
            });
        }
        Ok(authorized)
    }

    fn require(&self, mode: AuthMode) -> Result<(), AuthError> {
        if self.policy.allows(mode) {
            Ok(())
        } else {
            Err(AuthError::ModeNotEnabled {
                mode: mode.as_str(),
                modes: self.modes_text(),
            })
        }
    }

    fn session(&self, token: &str, now: u64) -> Result<Authorized, AuthError> {
        self.require(AuthMode::SignedSession)?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // A poisoned cache is only a cache: verify without it.
        let cached = self
            .sessions
            .lock()
            .ok()
            .and_then(|cache| cache.get(&hash, now));
        let (wallet, exp) = match cached {
            Some(hit) => hit,
            None => {
                let verified =
                    session::verify(token, &self.policy.session_keys, &self.policy.issuer, now)?;
                if let Ok(mut cache) = self.sessions.lock() {
                    cache.insert(hash, verified.wallet.clone(), verified.expires_at);
                }
                (verified.wallet, verified.expires_at)
            }
        };
        Ok(Authorized {
            wallet,
            mode: AuthMode::SignedSession,
            proof_sha256: Some(hash),
            proof_expires_at: Some(exp),
        })
    }

    fn wallet_signature(
        &self,
        message: &str,
        signature: &[u8],
        now: u64,
        nonces: &NonceBook,
    ) -> Result<Authorized, AuthError> {
        self.require(AuthMode::WalletSignature)?;
        let verified = siwe::verify(
            message,
            signature,
            &SiweExpectations {
                domain: &self.policy.domain,
                now,
                max_lifetime_seconds: MAX_SIWE_LIFETIME_SECONDS,
                clock_skew_seconds: CLOCK_SKEW_SECONDS,
            },
        )?;
        nonces.redeem(&verified.nonce, now)?;
        let mut hasher = Sha256::new();
        hasher.update(message.as_bytes());
        hasher.update(signature);
        Ok(Authorized {
            wallet: verified.wallet,
            mode: AuthMode::WalletSignature,
            proof_sha256: Some(hasher.finalize().into()),
            proof_expires_at: Some(verified.expires_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::session::tests::{claims, Backend, ISSUER, NOW, WALLET};
    use super::*;

    const OTHER: &str = "0x00000000000000000000000000000000000000bb";

    fn authorizer(modes: &[&str], backend: &Backend) -> Authorizer {
        let modes: Vec<String> = modes.iter().map(|m| m.to_string()).collect();
        let keys = if modes.iter().any(|m| m == "signed-session") {
            vec![backend.thumbprint()]
        } else {
            vec![]
        };
        Authorizer::new(AuthPolicy::new(&modes, &keys, ISSUER).unwrap())
    }

    fn request(wallet: &str, proof: Option<WalletProof>) -> MintJwtRequest {
        MintJwtRequest {
            wallet: wallet.into(),
            ttl_seconds: None,
            audience: None,
            proof,
        }
    }

    fn book() -> NonceBook {
        NonceBook::new(&[1; 32])
    }

    #[test]
    fn a_session_names_the_wallet_and_the_parent_cannot_change_it() {
        let b = Backend::new(1);
        let a = authorizer(&["signed-session"], &b);
        let token = b.token(claims(WALLET));
        let session = || Some(WalletProof::Session(token.clone()));
        let ok = a.authorize(&request("", session()), NOW, &book()).unwrap();
        assert_eq!(ok.wallet.as_str(), WALLET);
        assert_eq!(ok.mode, AuthMode::SignedSession);
        assert_eq!(
            ok.proof_sha256,
            Some(<[u8; 32]>::from(Sha256::digest(token.as_bytes())))
        );
        assert_eq!(ok.proof_expires_at, Some(NOW + 600));
        // The parent names the same wallet, in any case: fine.
        assert!(a
            .authorize(
                &request(&WALLET.to_uppercase().replacen("0X", "0x", 1), session()),
                NOW,
                &book()
            )
            .is_ok());
        // The parent names another wallet with A's session: refused.
        assert_eq!(
            a.authorize(&request(OTHER, session()), NOW, &book()),
            Err(AuthError::WalletMismatch {
                vouched: OTHER.into(),
                proven: WALLET.into()
            })
        );
        // No proof at all: refused, whatever wallet the parent names.
        assert!(matches!(
            a.authorize(&request(WALLET, None), NOW, &book()),
            Err(AuthError::NoProof { .. })
        ));
        // A sign-in to an enclave that does not take them.
        let sign_in = WalletProof::WalletSignature {
            message: "m".into(),
            signature: vec![0; 65],
        };
        assert!(matches!(
            a.authorize(&request("", Some(sign_in)), NOW, &book()),
            Err(AuthError::ModeNotEnabled {
                mode: "wallet-signature",
                ..
            })
        ));
    }

    #[test]
    fn a_cached_session_still_expires() {
        let b = Backend::new(1);
        let a = authorizer(&["signed-session"], &b);
        let token = b.token(claims(WALLET));
        let req = request("", Some(WalletProof::Session(token)));
        a.authorize(&req, NOW, &book()).unwrap();
        assert_eq!(a.sessions.lock().unwrap().by_hash.len(), 1);
        // Served from the cache while valid, refused once expired (past the skew).
        a.authorize(&req, NOW + 600, &book()).unwrap();
        let late = NOW + 600 + CLOCK_SKEW_SECONDS;
        assert!(matches!(
            a.authorize(&req, late, &book()),
            Err(AuthError::Session(SessionError::Expired { .. }))
        ));
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut cache = SessionCache::default();
        let wallet = Wallet::parse(WALLET).unwrap();
        for i in 0..(SESSION_CACHE_ENTRIES + 5) as u32 {
            let mut h = [0u8; 32];
            h[..4].copy_from_slice(&i.to_be_bytes());
            cache.insert(h, wallet.clone(), NOW + 10);
        }
        assert_eq!(cache.by_hash.len(), SESSION_CACHE_ENTRIES);
        assert_eq!(cache.order.len(), SESSION_CACHE_ENTRIES);
        assert!(cache.get(&[0; 32], NOW).is_none(), "the oldest went first");
    }

    #[test]
    fn parent_vouched_takes_the_parents_wallet_only_in_that_mode() {
        let b = Backend::new(1);
        let a = authorizer(&["parent-vouched"], &b);
        let ok = a.authorize(&request(WALLET, None), NOW, &book()).unwrap();
        assert_eq!(ok.mode, AuthMode::ParentVouched);
        assert_eq!(ok.proof_sha256, None);
        assert!(matches!(
            a.authorize(&request("0x12", None), NOW, &book()),
            Err(AuthError::Wallet(_))
        ));
        let session = WalletProof::Session(b.token(claims(WALLET)));
        assert!(matches!(
            a.authorize(&request(WALLET, Some(session)), NOW, &book()),
            Err(AuthError::ModeNotEnabled { .. })
        ));
    }
}
