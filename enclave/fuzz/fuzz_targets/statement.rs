//! The attestation statements (`agentkeys/jwks/v2`, `agentkeys/audit-checkpoint/v1`,
//! `agentkeys/acme-account/v1`) and
//! the KMS key ARN rule, on arbitrary bytes: the verifiers read these from documents an
//! attacker may have made. Must never panic; whatever decodes encodes back to the same
//! bytes, so one statement has one encoding.
#![no_main]

use agentkeys_wire::{AcmeAccountStatement, CheckpointStatement, JwksStatement, KmsKeyArn};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = JwksStatement::decode(data) {
        assert_eq!(s.encode(), data);
    }
    if let Ok(s) = CheckpointStatement::decode(data) {
        assert_eq!(s.encode(), data);
    }
    if let Ok(s) = AcmeAccountStatement::decode(data) {
        assert_eq!(s.encode(), data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(arn) = KmsKeyArn::parse(text) {
            assert_eq!(arn.as_str(), text);
        }
    }
});
