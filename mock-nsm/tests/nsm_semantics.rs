//! NSM request/response semantics of the mock device.

use std::sync::Arc;

use agentkeys_mock_nsm::{
    extend_pcr, Digest, ManualClock, MockNsm, MockNsmConfig, Request, Response, DEFAULT_MODULE_ID,
};
use serde_bytes::ByteBuf;
use sha2::{Digest as _, Sha384};

fn describe(nsm: &MockNsm, index: u16) -> (bool, Vec<u8>) {
    match nsm.process(Request::DescribePCR { index }) {
        Response::DescribePCR { lock, data } => (lock, data),
        other => panic!("unexpected {other:?}"),
    }
}

fn error_code(response: Response) -> String {
    match response {
        Response::Error(code) => format!("{code:?}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn extend_follows_sha384_of_old_concat_data() {
    let nsm = MockNsm::default();
    let (locked, before) = describe(&nsm, 16);
    assert!(!locked);
    assert_eq!(before, vec![0u8; 48]);
    let data = b"measurement one".to_vec();
    let response = nsm.process(Request::ExtendPCR {
        index: 16,
        data: data.clone(),
    });
    // Independent computation with sha2 directly.
    let mut h = Sha384::new();
    h.update([0u8; 48]);
    h.update(&data);
    let expected = h.finalize().to_vec();
    match response {
        Response::ExtendPCR { data } => assert_eq!(data, expected),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(describe(&nsm, 16).1, expected);
    // Second extend chains from the new value.
    let second = nsm.process(Request::ExtendPCR {
        index: 16,
        data: b"two".to_vec(),
    });
    let mut h = Sha384::new();
    h.update(&expected);
    h.update(b"two");
    match second {
        Response::ExtendPCR { data } => assert_eq!(data, h.finalize().to_vec()),
        other => panic!("unexpected {other:?}"),
    }
    // The exported helper agrees.
    assert_eq!(
        extend_pcr(&[0u8; 48], b"measurement one").to_vec(),
        expected
    );
}

#[test]
fn boot_pcrs_are_locked_and_refuse_extend() {
    let nsm = MockNsm::default();
    for index in 0..16 {
        let (locked, value) = describe(&nsm, index);
        assert!(locked, "PCR{index} must be locked at boot");
        assert_eq!(value.len(), 48);
        assert_eq!(
            error_code(nsm.process(Request::ExtendPCR {
                index,
                data: vec![1]
            })),
            "ReadOnlyIndex"
        );
    }
    for index in 16..32 {
        assert!(
            !describe(&nsm, index).0,
            "PCR{index} must be unlocked at boot"
        );
    }
}

#[test]
fn lock_pcr_then_extend_is_refused() {
    let nsm = MockNsm::default();
    assert!(matches!(
        nsm.process(Request::ExtendPCR {
            index: 20,
            data: vec![7]
        }),
        Response::ExtendPCR { .. }
    ));
    assert!(matches!(
        nsm.process(Request::LockPCR { index: 20 }),
        Response::LockPCR
    ));
    let (locked, value) = describe(&nsm, 20);
    assert!(locked);
    assert_eq!(value, extend_pcr(&[0; 48], &[7]).to_vec());
    assert_eq!(
        error_code(nsm.process(Request::ExtendPCR {
            index: 20,
            data: vec![8]
        })),
        "ReadOnlyIndex"
    );
    // Locking again is harmless.
    assert!(matches!(
        nsm.process(Request::LockPCR { index: 20 }),
        Response::LockPCR
    ));
    // Other user PCRs are unaffected.
    assert!(!describe(&nsm, 21).0);
}

#[test]
fn lock_pcrs_locks_the_range_from_zero() {
    let nsm = MockNsm::default();
    assert!(matches!(
        nsm.process(Request::LockPCRs { range: 20 }),
        Response::LockPCRs
    ));
    for index in 0..20 {
        assert!(describe(&nsm, index).0, "PCR{index}");
    }
    for index in 20..32 {
        assert!(!describe(&nsm, index).0, "PCR{index}");
    }
    assert_eq!(
        error_code(nsm.process(Request::LockPCRs { range: 33 })),
        "InvalidIndex"
    );
    assert!(matches!(
        nsm.process(Request::LockPCRs { range: 32 }),
        Response::LockPCRs
    ));
    assert!(describe(&nsm, 31).0);
}

#[test]
fn out_of_range_indexes_are_invalid() {
    let nsm = MockNsm::default();
    assert_eq!(
        error_code(nsm.process(Request::DescribePCR { index: 32 })),
        "InvalidIndex"
    );
    assert_eq!(
        error_code(nsm.process(Request::DescribePCR { index: u16::MAX })),
        "InvalidIndex"
    );
    assert_eq!(
        error_code(nsm.process(Request::ExtendPCR {
            index: 32,
            data: vec![]
        })),
        "InvalidIndex"
    );
    assert_eq!(
        error_code(nsm.process(Request::LockPCR { index: 99 })),
        "InvalidIndex"
    );
}

#[test]
fn oversized_requests_are_input_too_large() {
    let nsm = MockNsm::default();
    assert_eq!(
        error_code(nsm.process(Request::ExtendPCR {
            index: 16,
            data: vec![0; 5000]
        })),
        "InputTooLarge"
    );
    let big = Some(ByteBuf::from(vec![1u8; 513]));
    assert_eq!(
        error_code(nsm.process(Request::Attestation {
            user_data: big.clone(),
            nonce: None,
            public_key: None
        })),
        "InputTooLarge"
    );
    assert_eq!(
        error_code(nsm.process(Request::Attestation {
            user_data: None,
            nonce: big,
            public_key: None
        })),
        "InputTooLarge"
    );
    assert_eq!(
        error_code(nsm.process(Request::Attestation {
            user_data: None,
            nonce: None,
            public_key: Some(ByteBuf::from(vec![1u8; 1025]))
        })),
        "InputTooLarge"
    );
    assert_eq!(
        error_code(nsm.process(Request::Attestation {
            user_data: None,
            nonce: None,
            public_key: Some(ByteBuf::from(vec![]))
        })),
        "InvalidArgument"
    );
    // The limits themselves are accepted.
    assert!(matches!(
        nsm.process(Request::Attestation {
            user_data: Some(ByteBuf::from(vec![1u8; 512])),
            nonce: Some(ByteBuf::from(vec![2u8; 512])),
            public_key: Some(ByteBuf::from(vec![3u8; 1024])),
        }),
        Response::Attestation { .. }
    ));
}

#[test]
fn get_random_returns_256_fresh_bytes() {
    let nsm = MockNsm::default();
    let a = match nsm.process(Request::GetRandom) {
        Response::GetRandom { random } => random,
        other => panic!("unexpected {other:?}"),
    };
    let b = match nsm.process(Request::GetRandom) {
        Response::GetRandom { random } => random,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(a.len(), 256);
    assert_eq!(b.len(), 256);
    assert_ne!(a, b);
}

#[test]
fn describe_nsm_reports_the_device() {
    let nsm = MockNsm::default();
    nsm.process(Request::LockPCR { index: 17 });
    match nsm.process(Request::DescribeNSM) {
        Response::DescribeNSM {
            version_major,
            module_id,
            max_pcrs,
            locked_pcrs,
            digest,
            ..
        } => {
            assert_eq!(version_major, 1);
            assert_eq!(module_id, DEFAULT_MODULE_ID);
            assert_eq!(max_pcrs, 32);
            assert_eq!(locked_pcrs, (0..16).chain([17]).collect());
            assert_eq!(digest, Digest::SHA384);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn debug_mode_zeroes_pcr_0_1_2_8() {
    let config = MockNsmConfig::default()
        .pcr(0, [0xaa; 48])
        .unwrap()
        .pcr(8, [0xbb; 48])
        .unwrap()
        .debug_mode(true);
    let nsm = MockNsm::new(config);
    for index in [0, 1, 2, 8] {
        assert_eq!(describe(&nsm, index).1, vec![0u8; 48], "PCR{index}");
    }
    // PCR3 and PCR4 still carry their measurements.
    assert_ne!(describe(&nsm, 3).1, vec![0u8; 48]);
    assert_ne!(describe(&nsm, 4).1, vec![0u8; 48]);
    let normal = MockNsm::new(MockNsmConfig::default().pcr(0, [0xaa; 48]).unwrap());
    assert_eq!(describe(&normal, 0).1, vec![0xaa; 48]);
    assert_ne!(describe(&normal, 1).1, vec![0u8; 48]);
}

#[test]
fn config_rejects_bad_values() {
    assert!(MockNsmConfig::default().pcr(32, [0; 48]).is_err());
    assert!(MockNsmConfig::default().module_id("").is_err());
}

#[test]
fn concurrent_extends_are_serialized() {
    let nsm = Arc::new(MockNsm::new(
        MockNsmConfig::default().clock(Arc::new(ManualClock::new(1_700_000_000_000))),
    ));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let nsm = nsm.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    assert!(matches!(
                        nsm.process(Request::ExtendPCR {
                            index: 31,
                            data: vec![1]
                        }),
                        Response::ExtendPCR { .. }
                    ));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut expected = [0u8; 48];
    for _ in 0..400 {
        expected = extend_pcr(&expected, &[1]);
    }
    assert_eq!(describe(&nsm, 31).1, expected.to_vec());
}
