//! A stand-in for the enclave's mint in the broker's own tests: real ES256 tokens whose
//! claims name their place in a version 2 audit chain, as `agentkeys-enclave` builds them
//! (`enclave/src/jwt.rs`), so rows are built through the broker's own
//! `NewAuditRow::signed`.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use agentkeys_wire::{
    chain_genesis, chain_next, signing_input_sha256, CheckpointStatement, MintedJwt,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use sha2::{Digest, Sha256};

/// The module id of the enclave these checkpoints stand for.
pub const MODULE_ID: &str = "i-0123456789abcdef0-enc0123456789abcdef";

/// The key id the fake enclave signs with.
pub const KID: &str = "kid-1";

/// The wallet the fake enclave mints for unless told otherwise.
pub const WALLET: &str = "0x00000000000000000000000000000000000000aa";

/// Mints tokens along one epoch's chain.
pub struct FakeEnclave {
    pub epoch: u64,
    pub seq: u64,
    pub head: [u8; 32],
    key: p256::ecdsa::SigningKey,
}

impl FakeEnclave {
    pub fn new(epoch: u64) -> FakeEnclave {
        FakeEnclave {
            epoch,
            seq: 0,
            head: chain_genesis(epoch),
            key: p256::ecdsa::SigningKey::from_slice(&[0x11; 32]).unwrap(),
        }
    }

    /// The signing input of a token for `wallet` at `seq` of this epoch, issued at `iat`.
    pub fn signing_input(&self, wallet: &str, seq: u64, iat: u64) -> String {
        let header = format!(r#"{{"alg":"ES256","kid":"{KID}","typ":"JWT"}}"#);
        let claims = serde_json::json!({
            "iss": "https://issuer.example.com",
            "sub": format!("agentkeys:agent:{wallet}"),
            "aud": "sts.amazonaws.com",
            "iat": iat,
            "nbf": iat,
            "exp": iat + 300,
            "jti": format!("jti-{}-{seq}", self.epoch),
            "agentkeys_user_wallet": wallet,
            "agentkeys_epoch": self.epoch.to_string(),
            "agentkeys_seq": seq,
        });
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    /// Signs `signing_input` into a compact JWS.
    pub fn sign(&self, signing_input: &str) -> String {
        let signature: p256::ecdsa::Signature = self.key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }

    /// The next token, for `wallet`.
    pub fn mint_for(&mut self, wallet: &str) -> MintedJwt {
        self.seq += 1;
        let signing_input = self.signing_input(wallet, self.seq, 1_700_000_000 + self.seq);
        let entry = signing_input_sha256(&signing_input);
        self.head = chain_next(&self.head, self.seq, &entry);
        let jwt = self.sign(&signing_input);
        MintedJwt {
            jwt_sha256: Sha256::digest(jwt.as_bytes()).into(),
            jwt,
            kid: KID.into(),
            jti: format!("jti-{}-{}", self.epoch, self.seq),
            wallet: wallet.into(),
            iat: 1_700_000_000 + self.seq,
            exp: 1_700_000_300 + self.seq,
            epoch: self.epoch,
            seq: self.seq,
            signing_input_sha256: entry,
            head: self.head,
        }
    }

    /// The next token, for [`WALLET`].
    pub fn mint(&mut self) -> MintedJwt {
        self.mint_for(WALLET)
    }

    /// What the enclave would attest now.
    pub fn checkpoint(&self) -> CheckpointStatement {
        CheckpointStatement {
            epoch: self.epoch,
            seq: self.seq,
            head: self.head,
            module_id: MODULE_ID.into(),
        }
    }

    /// The JWKS with the signing key.
    pub fn jwks(&self) -> String {
        let point = self.key.verifying_key().to_encoded_point(false);
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": KID, "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        }]})
        .to_string()
    }
}
