//! CloudTrail records as `audit verify --cloudtrail` reads them (an auditor's download,
//! which anyone could have edited): must never panic, and every unseal found names the
//! key and carries a module id.
#![no_main]

use agentkeys_broker::audit::verify::cloudtrail::attested_unseals_in;
use libfuzzer_sys::fuzz_target;

const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(unseals) = attested_unseals_in(text, KEY) {
        for u in unseals {
            assert!(u.operation == "Decrypt" || u.operation == "GenerateDataKey");
            let _ = u.module_id.len();
        }
    }
});
