//! KMS key policy and IAM OIDC generator tests: the JSON is parsed and checked field by
//! field, and every input validation has a negative test.

use std::collections::BTreeMap;

use agentkeys_attestation::measurements::PublishedMeasurements;
use agentkeys_broker::cli::aws_policies::{
    iam_oidc, kms_key_policy, kms_key_policy_from_json, pcr3_for_role_arn, pcr4_for_instance_id,
    run_iam_oidc, run_kms_policy, validate_issuer, IamOidcArgs, IamOidcRequest,
    KmsPolicyFromJsonError, KmsPolicyRequest, Partition, PolicyCliError, PolicyError, RoleArn,
};
use serde_json::Value;
use sha2::{Digest, Sha384};

const ACCOUNT: &str = "111122223333";
const ROLE: &str = "arn:aws:iam::111122223333:role/agentkeys-parent";

fn hex96(c: char) -> String {
    c.to_string().repeat(96)
}

fn measurements(pcr0: char, pcr8: Option<char>) -> String {
    let mut m = format!(
        r#"{{"Measurements":{{"HashAlgorithm":"Sha384 {{ ... }}","PCR0":"{}","PCR1":"{}","PCR2":"{}""#,
        hex96(pcr0),
        hex96('1'),
        hex96('2')
    );
    if let Some(c) = pcr8 {
        m.push_str(&format!(r#","PCR8":"{}""#, hex96(c)));
    }
    m.push_str("}}");
    m
}

fn request(images: &[String]) -> KmsPolicyRequest {
    KmsPolicyRequest {
        account_id: ACCOUNT.into(),
        parent_role_arn: ROLE.into(),
        images: images
            .iter()
            .map(|t| PublishedMeasurements::from_json(t).unwrap())
            .collect(),
        extra_pcrs: vec![],
        extra_pcr_values: BTreeMap::new(),
    }
}

fn statement<'a>(policy: &'a Value, sid: &str) -> &'a Value {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("no statement {sid}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

#[test]
fn kms_policy_statements_field_by_field() {
    let policy = kms_key_policy(&request(&[measurements('A', None)])).unwrap();
    // Round-trips as JSON text.
    let text = serde_json::to_string(&policy).unwrap();
    let policy: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(policy["Version"], "2012-10-17");
    let sids: Vec<&str> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Sid"].as_str().unwrap())
        .collect();
    assert_eq!(
        sids,
        vec![
            "KeyAdministrationWithoutUse",
            "AllowAttestedEnclaveImage1",
            "DenyUseWithoutAttestation",
            "DenyUseByUnapprovedImage",
            "DenyCiphertextWithoutEnclave"
        ]
    );

    let admin = statement(&policy, "KeyAdministrationWithoutUse");
    assert_eq!(admin["Effect"], "Allow");
    assert_eq!(admin["Principal"]["AWS"], "arn:aws:iam::111122223333:root");
    assert_eq!(admin["Resource"], "*");
    let admin_actions = strings(&admin["Action"]);
    for forbidden in [
        "kms:*",
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "kms:Encrypt",
        "kms:ReEncrypt*",
        "kms:ReEncryptFrom",
        "kms:GenerateDataKey*",
    ] {
        assert!(!admin_actions.contains(&forbidden), "admin has {forbidden}");
    }
    for a in &admin_actions {
        // No wildcard in the admin set can match a use action.
        assert!(
            !"kms:Decrypt".starts_with(a.trim_end_matches('*'))
                && !"kms:GenerateDataKey".starts_with(a.trim_end_matches('*'))
                && !"kms:Encrypt".starts_with(a.trim_end_matches('*'))
                && !"kms:ReEncryptFrom".starts_with(a.trim_end_matches('*')),
            "{a} matches a use action"
        );
    }
    assert!(admin_actions.contains(&"kms:ScheduleKeyDeletion"));
    assert!(admin_actions.contains(&"kms:Put*"));
    assert!(admin.get("Condition").is_none());

    let allow = statement(&policy, "AllowAttestedEnclaveImage1");
    assert_eq!(allow["Effect"], "Allow");
    assert_eq!(allow["Principal"]["AWS"], ROLE);
    assert_eq!(
        strings(&allow["Action"]),
        vec!["kms:Decrypt", "kms:GenerateDataKey"]
    );
    let cond = allow["Condition"].as_object().unwrap();
    assert_eq!(cond.len(), 1);
    let eq = cond["StringEqualsIgnoreCase"].as_object().unwrap();
    assert_eq!(eq.len(), 1);
    assert_eq!(eq["kms:RecipientAttestation:ImageSha384"], hex96('a'));

    let deny_null = statement(&policy, "DenyUseWithoutAttestation");
    assert_eq!(deny_null["Effect"], "Deny");
    assert_eq!(deny_null["Principal"]["AWS"], "*");
    assert_eq!(
        strings(&deny_null["Action"]),
        vec!["kms:Decrypt", "kms:GenerateDataKey"]
    );
    assert_eq!(
        deny_null["Condition"]["Null"]["kms:RecipientAttestation:ImageSha384"],
        "true"
    );

    let deny_other = statement(&policy, "DenyUseByUnapprovedImage");
    assert_eq!(deny_other["Effect"], "Deny");
    assert_eq!(deny_other["Principal"]["AWS"], "*");
    assert_eq!(
        deny_other["Condition"]["StringNotEqualsIgnoreCase"]
            ["kms:RecipientAttestation:ImageSha384"],
        serde_json::json!([hex96('a')])
    );

    let deny_forge = statement(&policy, "DenyCiphertextWithoutEnclave");
    assert_eq!(deny_forge["Effect"], "Deny");
    assert_eq!(deny_forge["Principal"]["AWS"], "*");
    let forge = strings(&deny_forge["Action"]);
    for a in [
        "kms:Encrypt",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
        "kms:CreateGrant",
    ] {
        assert!(forge.contains(&a), "{a}");
    }
    assert!(deny_forge.get("Condition").is_none());
}

#[test]
fn every_allow_for_use_actions_carries_the_attestation_condition() {
    let mut req = request(&[measurements('a', Some('8')), measurements('b', Some('8'))]);
    req.extra_pcrs = vec![8];
    let policy = kms_key_policy(&req).unwrap();
    for s in policy["Statement"].as_array().unwrap() {
        if s["Effect"] != "Allow" {
            continue;
        }
        let actions = strings(&s["Action"]);
        if actions
            .iter()
            .any(|a| a.contains("Decrypt") || a.contains("GenerateDataKey"))
        {
            assert!(
                s["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:ImageSha384"]
                    .is_string(),
                "unconditioned allow: {s}"
            );
        }
    }
}

#[test]
fn upgrade_allows_both_images_each_in_its_own_statement() {
    let mut req = request(&[measurements('a', Some('c')), measurements('b', Some('d'))]);
    req.extra_pcrs = vec![8, 1];
    let policy = kms_key_policy(&req).unwrap();
    let one =
        &statement(&policy, "AllowAttestedEnclaveImage1")["Condition"]["StringEqualsIgnoreCase"];
    let two =
        &statement(&policy, "AllowAttestedEnclaveImage2")["Condition"]["StringEqualsIgnoreCase"];
    assert_eq!(one["kms:RecipientAttestation:ImageSha384"], hex96('a'));
    assert_eq!(one["kms:RecipientAttestation:PCR8"], hex96('c'));
    assert_eq!(one["kms:RecipientAttestation:PCR1"], hex96('1'));
    assert_eq!(two["kms:RecipientAttestation:ImageSha384"], hex96('b'));
    assert_eq!(two["kms:RecipientAttestation:PCR8"], hex96('d'));
    assert_eq!(one.as_object().unwrap().len(), 3);
    let deny = &statement(&policy, "DenyUseByUnapprovedImage")["Condition"]
        ["StringNotEqualsIgnoreCase"]["kms:RecipientAttestation:ImageSha384"];
    assert_eq!(deny, &serde_json::json!([hex96('a'), hex96('b')]));
}

#[test]
fn extra_pcr_values_and_computed_pcr3_pcr4() {
    let role_for_pcr3 = "arn:aws:iam::111122223333:role/agentkeys-parent";
    let pcr3 = pcr3_for_role_arn(role_for_pcr3).unwrap();
    let mut h = Sha384::new();
    h.update([0u8; 48]);
    h.update(role_for_pcr3.as_bytes());
    assert_eq!(pcr3, hex::encode(h.finalize()));

    let pcr4 = pcr4_for_instance_id("i-0123456789abcdef0").unwrap();
    let mut h = Sha384::new();
    h.update([0u8; 48]);
    h.update(b"i-0123456789abcdef0");
    assert_eq!(pcr4, hex::encode(h.finalize()));

    let mut req = request(&[measurements('a', None)]);
    req.extra_pcrs = vec![3, 4];
    req.extra_pcr_values.insert(3, pcr3.to_ascii_uppercase());
    req.extra_pcr_values.insert(4, pcr4.clone());
    let policy = kms_key_policy(&req).unwrap();
    let eq =
        &statement(&policy, "AllowAttestedEnclaveImage1")["Condition"]["StringEqualsIgnoreCase"];
    assert_eq!(eq["kms:RecipientAttestation:PCR3"], pcr3, "lower-cased");
    assert_eq!(eq["kms:RecipientAttestation:PCR4"], pcr4);
}

#[test]
fn partition_follows_the_role_arn() {
    let mut req = request(&[measurements('a', None)]);
    req.parent_role_arn = "arn:aws-cn:iam::111122223333:role/path/to/parent".into();
    let policy = kms_key_policy(&req).unwrap();
    assert_eq!(
        statement(&policy, "KeyAdministrationWithoutUse")["Principal"]["AWS"],
        "arn:aws-cn:iam::111122223333:root"
    );
    assert_eq!(
        statement(&policy, "AllowAttestedEnclaveImage1")["Principal"]["AWS"],
        "arn:aws-cn:iam::111122223333:role/path/to/parent"
    );
}

#[test]
fn from_json_convenience() {
    let p = kms_key_policy_from_json(
        &measurements('e', None),
        ACCOUNT,
        ROLE,
        &[],
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(
        statement(&p, "AllowAttestedEnclaveImage1")["Condition"]["StringEqualsIgnoreCase"]
            ["kms:RecipientAttestation:ImageSha384"],
        hex96('e')
    );
    let err = kms_key_policy_from_json("{}", ACCOUNT, ROLE, &[], &BTreeMap::new()).unwrap_err();
    assert!(
        matches!(err, KmsPolicyFromJsonError::Measurements(_)),
        "{err}"
    );
}

// ---- KMS negative tests ---------------------------------------------------------------

#[test]
fn bad_account_ids() {
    for bad in [
        "",
        "11112222333",
        "1111222233334",
        "11112222333a",
        " 11112222333",
    ] {
        let mut req = request(&[measurements('a', None)]);
        req.account_id = bad.into();
        let err = kms_key_policy(&req).unwrap_err();
        assert!(
            matches!(err, PolicyError::AccountId { .. }),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains("12 digits"));
    }
}

#[test]
fn bad_role_arns() {
    let cases = [
        ("", "expected arn"),
        ("arn:aws:iam::111122223333:user/bob", "role/"),
        ("arn:aws:sts::111122223333:role/x", "service must be iam"),
        ("arn:aws:iam:us-east-1:111122223333:role/x", "empty region"),
        ("arn:aws:iam::1111:role/x", "12 digits"),
        ("arn:aws-xx:iam::111122223333:role/x", "partition"),
        ("arn:aws:iam::111122223333:role/", "role name"),
        ("arn:aws:iam::111122223333:role/a b", "role name"),
        ("arn:aws:iam::111122223333:role//x", "path segments"),
        ("arn:aws:iam::111122223333:role/x/", "role name"),
    ];
    for (arn, needle) in cases {
        let mut req = request(&[measurements('a', None)]);
        req.parent_role_arn = arn.into();
        let err = kms_key_policy(&req).unwrap_err();
        assert!(matches!(err, PolicyError::RoleArn { .. }), "{arn:?}: {err}");
        assert!(err.to_string().contains(needle), "{arn:?}: {err}");
    }
    assert_eq!(
        RoleArn::parse("arn:aws-us-gov:iam::111122223333:role/p/q")
            .unwrap()
            .to_string(),
        "arn:aws-us-gov:iam::111122223333:role/p/q"
    );
}

#[test]
fn bad_pcr_choices_and_values() {
    let mut req = request(&[measurements('a', None)]);
    req.extra_pcrs = vec![0];
    assert!(matches!(
        kms_key_policy(&req).unwrap_err(),
        PolicyError::PcrIndex { index: 0 }
    ));
    req.extra_pcrs = vec![32];
    assert!(matches!(
        kms_key_policy(&req).unwrap_err(),
        PolicyError::PcrIndex { index: 32 }
    ));

    // PCR8 chosen but the image is unsigned and no value given.
    let mut req = request(&[measurements('a', None)]);
    req.extra_pcrs = vec![8];
    assert!(matches!(
        kms_key_policy(&req).unwrap_err(),
        PolicyError::MissingPcr { index: 8, image: 0 }
    ));
    // Second image lacks it.
    let mut req = request(&[measurements('a', Some('8')), measurements('b', None)]);
    req.extra_pcrs = vec![8];
    assert!(matches!(
        kms_key_policy(&req).unwrap_err(),
        PolicyError::MissingPcr { index: 8, image: 1 }
    ));

    for (value, check) in [
        ("ab".to_string(), "96 hex digits"),
        ("z".repeat(96), "not hexadecimal"),
        ("0".repeat(96), "all zeros"),
    ] {
        let mut req = request(&[measurements('a', None)]);
        req.extra_pcrs = vec![3];
        req.extra_pcr_values.insert(3, value.clone());
        let err = kms_key_policy(&req).unwrap_err();
        assert!(err.to_string().contains(check), "{value}: {err}");
    }
    let mut req = request(&[measurements('a', None)]);
    req.extra_pcr_values.insert(40, hex96('a'));
    assert!(matches!(
        kms_key_policy(&req).unwrap_err(),
        PolicyError::PcrIndex { index: 40 }
    ));
}

#[test]
fn debug_mode_pcr0_is_refused() {
    let err = kms_key_policy(&request(&[measurements('0', None)])).unwrap_err();
    assert!(matches!(err, PolicyError::ZeroPcr { index: 0 }), "{err}");
}

#[test]
fn no_images() {
    let req = request(&[]);
    assert!(matches!(
        kms_key_policy(&req).unwrap_err(),
        PolicyError::NoImages
    ));
}

#[test]
fn bad_instance_ids() {
    for bad in [
        "",
        "i-",
        "i-123",
        "i-0123456789ABCDEF0",
        "x-0123456789abcdef0",
    ] {
        assert!(
            matches!(
                pcr4_for_instance_id(bad),
                Err(PolicyError::InstanceId { .. })
            ),
            "{bad}"
        );
    }
    assert!(pcr4_for_instance_id("i-01234567").is_ok());
}

// ---- IAM OIDC ------------------------------------------------------------------------

fn oidc_request(issuer: &str) -> IamOidcRequest {
    IamOidcRequest {
        issuer: issuer.into(),
        audience: "sts.amazonaws.com".into(),
        role_name: "agentkeys-data-role".into(),
        account_id: ACCOUNT.into(),
        partition: Partition::Aws,
        thumbprint: None,
    }
}

#[test]
fn iam_oidc_trust_policy_field_by_field() {
    let setup = iam_oidc(&oidc_request("https://issuer.example.com/agentkeys")).unwrap();
    let host = "issuer.example.com/agentkeys";
    assert_eq!(
        setup.provider_arn,
        format!("arn:aws:iam::111122223333:oidc-provider/{host}")
    );
    assert_eq!(
        setup.role_arn,
        "arn:aws:iam::111122223333:role/agentkeys-data-role"
    );
    let text = serde_json::to_string(&setup.to_json()).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    let tp = &all["trust_policy"];
    assert_eq!(tp["Version"], "2012-10-17");
    let stmts = tp["Statement"].as_array().unwrap();
    assert_eq!(stmts.len(), 1);
    let s = &stmts[0];
    assert_eq!(s["Effect"], "Allow");
    assert_eq!(s["Principal"]["Federated"], setup.provider_arn.as_str());
    assert_eq!(s["Principal"].as_object().unwrap().len(), 1);
    assert_eq!(
        strings(&s["Action"]),
        vec!["sts:AssumeRoleWithWebIdentity", "sts:TagSession"]
    );
    let c = s["Condition"].as_object().unwrap();
    assert_eq!(c.len(), 3);
    assert_eq!(
        c["StringEquals"][format!("{host}:aud")],
        "sts.amazonaws.com"
    );
    assert_eq!(c["StringEquals"].as_object().unwrap().len(), 1);
    assert_eq!(
        c["StringLike"][format!("{host}:sub")],
        "agentkeys:agent:0x*"
    );
    assert_eq!(c["Null"]["aws:RequestTag/agentkeys_user_wallet"], "false");

    assert_eq!(
        all["create_provider_command"],
        "aws iam create-open-id-connect-provider --url https://issuer.example.com/agentkeys --client-id-list sts.amazonaws.com"
    );
    assert_eq!(
        all["create_role_command"],
        "aws iam create-role --role-name agentkeys-data-role --assume-role-policy-document file://trust-policy.json"
    );
}

#[test]
fn iam_oidc_thumbprint_and_partition() {
    let mut req = oidc_request("https://issuer.example.com");
    req.thumbprint = Some("9E99A48A9960B14926BB7F3B02E22DA2B0AB7280".into());
    req.partition = Partition::AwsUsGov;
    let setup = iam_oidc(&req).unwrap();
    assert!(setup
        .create_provider_command
        .ends_with("--thumbprint-list 9e99a48a9960b14926bb7f3b02e22da2b0ab7280"));
    assert_eq!(
        setup.provider_arn,
        "arn:aws-us-gov:iam::111122223333:oidc-provider/issuer.example.com"
    );
    assert_eq!(
        setup.trust_policy["Statement"][0]["Condition"]["StringEquals"]["issuer.example.com:aud"],
        "sts.amazonaws.com"
    );
}

#[test]
fn iam_oidc_issuer_validation() {
    let cases = [
        ("issuer.example.com", "https://"),
        ("http://issuer.example.com", "https://"),
        ("https://issuer.example.com/", "slash"),
        ("https://issuer.example.com/a/", "slash"),
        ("https://issuer.example.com?x=1", "query"),
        ("https://issuer.example.com#f", "fragment"),
        ("https://user@issuer.example.com", "user info"),
        ("https://issuer.example.com:8443", "port"),
        ("https://", "no host"),
        ("https://iss uer.example.com", "spaces"),
        ("https://issuer_example.com", "DNS name"),
        ("https://issuer.example.com//x", "empty segments"),
    ];
    for (issuer, needle) in cases {
        let err = iam_oidc(&oidc_request(issuer)).unwrap_err();
        assert!(matches!(err, PolicyError::Issuer { .. }), "{issuer}: {err}");
        assert!(err.to_string().contains(needle), "{issuer}: {err}");
    }
    assert_eq!(
        validate_issuer("https://a.example/b").unwrap(),
        "a.example/b"
    );
}

#[test]
fn iam_oidc_other_validation() {
    let mut r = oidc_request("https://issuer.example.com");
    r.audience = String::new();
    assert!(matches!(
        iam_oidc(&r).unwrap_err(),
        PolicyError::Audience { .. }
    ));
    r.audience = "a b".into();
    assert!(matches!(
        iam_oidc(&r).unwrap_err(),
        PolicyError::Audience { .. }
    ));

    let mut r = oidc_request("https://issuer.example.com");
    r.role_name = "x".repeat(65);
    assert!(matches!(
        iam_oidc(&r).unwrap_err(),
        PolicyError::RoleName { .. }
    ));
    r.role_name = "bad/name".into();
    assert!(matches!(
        iam_oidc(&r).unwrap_err(),
        PolicyError::RoleName { .. }
    ));

    let mut r = oidc_request("https://issuer.example.com");
    r.account_id = "123".into();
    assert!(matches!(
        iam_oidc(&r).unwrap_err(),
        PolicyError::AccountId { .. }
    ));

    let mut r = oidc_request("https://issuer.example.com");
    r.thumbprint = Some("abc".into());
    assert!(matches!(
        iam_oidc(&r).unwrap_err(),
        PolicyError::Thumbprint { .. }
    ));

    assert!(matches!(
        Partition::parse("aws-eu"),
        Err(PolicyError::Partition { .. })
    ));
}

// ---- command-line front ends ------------------------------------------------------------

#[test]
fn run_kms_policy_reads_files_and_parses_pcr_values() {
    use agentkeys_broker::cli::aws_policies::KmsPolicyArgs;
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.json");
    let new = dir.path().join("new.json");
    std::fs::write(&old, measurements('a', None)).unwrap();
    std::fs::write(&new, measurements('b', None)).unwrap();
    let args = KmsPolicyArgs {
        measurements: vec![old.clone(), new],
        account: ACCOUNT.into(),
        parent_role_arn: ROLE.into(),
        pcr: vec![3, 4],
        pcr_value: vec![],
        pcr3_role_arn: Some(ROLE.into()),
        pcr4_instance_id: Some("i-0123456789abcdef0".into()),
    };
    let out: Value = serde_json::from_str(&run_kms_policy(&args).unwrap()).unwrap();
    let eq = &statement(&out, "AllowAttestedEnclaveImage2")["Condition"]["StringEqualsIgnoreCase"];
    assert_eq!(eq["kms:RecipientAttestation:ImageSha384"], hex96('b'));
    assert_eq!(
        eq["kms:RecipientAttestation:PCR3"],
        pcr3_for_role_arn(ROLE).unwrap()
    );

    let mut bad = args.clone();
    bad.pcr_value = vec!["x=abc".into()];
    assert!(matches!(
        run_kms_policy(&bad).unwrap_err(),
        PolicyCliError::PcrValueSyntax { .. }
    ));
    let mut missing = args.clone();
    missing.measurements = vec![dir.path().join("nope.json")];
    let err = run_kms_policy(&missing).unwrap_err();
    assert!(err.to_string().contains("nope.json"), "{err}");
    let mut with_value = args;
    with_value.measurements = vec![old];
    with_value.pcr = vec![5];
    with_value.pcr_value = vec![format!("5={}", hex96('f'))];
    let out: Value = serde_json::from_str(&run_kms_policy(&with_value).unwrap()).unwrap();
    assert_eq!(
        statement(&out, "AllowAttestedEnclaveImage1")["Condition"]["StringEqualsIgnoreCase"]
            ["kms:RecipientAttestation:PCR5"],
        hex96('f')
    );
}

#[test]
fn run_iam_oidc_prints_json() {
    let args = IamOidcArgs {
        issuer: "https://issuer.example.com".into(),
        audience: "sts.amazonaws.com".into(),
        role_name: "agentkeys-data-role".into(),
        account: ACCOUNT.into(),
        partition: "aws".into(),
        thumbprint: None,
        trust_policy_only: false,
    };
    let all: Value = serde_json::from_str(&run_iam_oidc(&args).unwrap()).unwrap();
    assert!(all["create_provider_command"].is_string());
    let only = IamOidcArgs {
        trust_policy_only: true,
        ..args.clone()
    };
    let tp: Value = serde_json::from_str(&run_iam_oidc(&only).unwrap()).unwrap();
    assert_eq!(tp, all["trust_policy"]);
    let bad = IamOidcArgs {
        partition: "nope".into(),
        ..args
    };
    assert!(matches!(
        run_iam_oidc(&bad).unwrap_err(),
        PolicyCliError::Policy(PolicyError::Partition { .. })
    ));
}
