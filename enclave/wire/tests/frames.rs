//! Round trips of every message and hostile frames.

use agentkeys_wire::frame::{
    body_length, decode_body, decode_frame, decode_request, decode_response, encode_frame,
    read_frame, salvage_request_id, CBOR_RECURSION_LIMIT,
};
use agentkeys_wire::*;

fn credentials() -> AwsCredentials {
    AwsCredentials {
        access_key_id: "AKIAEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        session_token: Some("IQoJb3JpZ2luX2VjEXAMPLETOKEN".into()),
    }
}

fn all_requests() -> Vec<Request> {
    vec![
        Request::Status,
        Request::Unseal(UnsealRequest {
            region: "eu-west-1".into(),
            kms_key_id: "alias/agentkeys".into(),
            kms_endpoint: Some("http://127.0.0.1:4566".into()),
            credentials: credentials(),
            sealed_seed: Some(vec![1, 2, 3, 4]),
        }),
        Request::Unseal(UnsealRequest {
            region: "us-east-1".into(),
            kms_key_id: "k".into(),
            kms_endpoint: None,
            credentials: AwsCredentials {
                access_key_id: "A".into(),
                secret_access_key: "S".into(),
                session_token: None,
            },
            sealed_seed: None,
        }),
        Request::MintJwt(MintJwtRequest {
            wallet: "0xabc".into(),
            ttl_seconds: Some(900),
            audience: Some("sts.amazonaws.com".into()),
            proof: Some(WalletProof::Session("header.claims.signature".into())),
        }),
        Request::MintJwt(MintJwtRequest {
            wallet: "0xabc".into(),
            ttl_seconds: None,
            audience: None,
            proof: Some(WalletProof::WalletSignature {
                message: "example.com wants you to sign in".into(),
                signature: vec![1; 65],
            }),
        }),
        Request::MintJwt(MintJwtRequest {
            wallet: "0xabc".into(),
            ttl_seconds: None,
            audience: None,
            proof: None,
        }),
        Request::SiweNonce,
        Request::IssuerTls(IssuerTlsRequest {
            cached_chain_pem: None,
        }),
        Request::IssuerTls(IssuerTlsRequest {
            cached_chain_pem: Some("-----BEGIN CERTIFICATE-----\n".into()),
        }),
        Request::Attest { nonce: None },
        Request::Attest {
            nonce: Some(vec![0xde, 0xad]),
        },
        Request::AuditCheckpoint { nonce: None },
        Request::AuditCheckpoint {
            nonce: Some(vec![7; 32]),
        },
    ]
}

fn all_responses() -> Vec<Result<Response, WireError>> {
    vec![
        Ok(Response::Status(EnclaveStatus {
            unsealed: true,
            mock: true,
            issuer: "https://issuer.example".into(),
            kids: vec!["k1".into(), "k2".into()],
            active_kid: Some("k1".into()),
            epoch: 42,
            seq: 7,
            module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
            auth_modes: vec!["signed-session".into(), "wallet-signature".into()],
        })),
        Ok(Response::SiweNonce {
            nonce: "ab".repeat(28),
            expires_at: 1_700_000_599,
        }),
        Ok(Response::IssuerTls(IssuerTlsStatus {
            enabled: true,
            hostname: "issuer.example".into(),
            tls_spki_sha256: "7e".repeat(32),
            state: agentkeys_wire::ISSUER_TLS_ISSUED.into(),
            chain_pem: Some("-----BEGIN CERTIFICATE-----\n".into()),
            not_after: Some(1_700_000_000),
            acme_account_uri: Some("https://ca.example/acct/1".into()),
            last_error: None,
            cached_chain_refused: Some("expired".into()),
        })),
        Ok(Response::Unsealed(UnsealResult {
            sealed_seed: vec![9; 200],
            genesis: true,
            active_kid: "k1".into(),
            kids: vec!["k1".into()],
        })),
        Ok(Response::Jwt(MintedJwt {
            jwt: "a.b.c".into(),
            kid: "k1".into(),
            jti: "j".into(),
            wallet: "0xabc".into(),
            iat: 1,
            exp: 2,
            epoch: 3,
            seq: 4,
            jwt_sha256: [5; 32],
            signing_input_sha256: [5; 32],
            head: [6; 32],
        })),
        Ok(Response::Attestation(Attestation {
            document: vec![0xd2; 4500],
            jwks: br#"{"keys":[]}"#.to_vec(),
            jwks_sha256: [1; 32],
            kids: vec![],
            statement: b"agentkeys/jwks/v2\n".to_vec(),
        })),
        Ok(Response::Checkpoint(AuditCheckpoint {
            epoch: 1,
            seq: 2,
            head: [3; 32],
            module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
            document: vec![4; 10],
        })),
    ]
    .into_iter()
    .chain(
        [
            WireErrorKind::NotUnsealed,
            WireErrorKind::AlreadyUnsealed,
            WireErrorKind::InvalidWallet,
            WireErrorKind::InvalidRequest,
            WireErrorKind::Kms,
            WireErrorKind::AccessDenied,
            WireErrorKind::Nsm,
            WireErrorKind::FrameTooLarge,
            WireErrorKind::Malformed,
            WireErrorKind::Internal,
        ]
        .into_iter()
        .map(|kind| Err(WireError::new(kind, "detail"))),
    )
    .collect()
}

#[test]
fn every_request_round_trips() {
    for (i, request) in all_requests().into_iter().enumerate() {
        let envelope = RequestEnvelope {
            id: i as u64 + 1,
            request,
        };
        let frame = encode_frame(&envelope).unwrap();
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        assert_eq!(decode_request(&frame).unwrap(), envelope);
    }
}

#[test]
fn every_response_round_trips() {
    for (i, result) in all_responses().into_iter().enumerate() {
        let envelope = ResponseEnvelope {
            id: u64::MAX - i as u64,
            result,
        };
        let frame = encode_frame(&envelope).unwrap();
        assert_eq!(decode_response(&frame).unwrap(), envelope);
    }
}

#[test]
fn byte_fields_are_cbor_byte_strings() {
    // A 32-byte hash must be one CBOR byte string (0x58 0x20 ...), not an array of ints.
    let jwt = all_responses()
        .into_iter()
        .find_map(|r| r.ok().filter(|r| matches!(r, Response::Jwt(_))))
        .unwrap();
    let frame = encode_frame(&jwt).unwrap();
    let needle = [0x58, 0x20, 5, 5, 5];
    assert!(frame.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn secrets_are_redacted_in_debug() {
    let request = Request::Unseal(UnsealRequest {
        region: "eu-west-1".into(),
        kms_key_id: "alias/k".into(),
        kms_endpoint: None,
        credentials: credentials(),
        sealed_seed: Some(vec![0x41; 16]),
    });
    let envelope = RequestEnvelope { id: 1, request };
    for text in [format!("{envelope:?}"), format!("{envelope:#?}")] {
        assert!(!text.contains("wJalrXUtnFEMI"), "{text}");
        assert!(!text.contains("IQoJb3JpZ2lu"), "{text}");
        assert!(text.contains("AKIAEXAMPLE"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}

/// A caller's session token is a credential: `Debug` never prints it.
#[test]
fn a_session_proof_is_redacted_in_debug() {
    let request = Request::MintJwt(MintJwtRequest {
        wallet: String::new(),
        ttl_seconds: None,
        audience: None,
        proof: Some(WalletProof::Session(
            "eyJhbGciOiJFUzI1NiJ9.c2VjcmV0.c2ln".into(),
        )),
    });
    for text in [format!("{request:?}"), format!("{request:#?}")] {
        assert!(!text.contains("eyJhbGciOiJFUzI1NiJ9"), "{text}");
        assert!(text.contains("Session(<34 bytes>)"), "{text}");
    }
}

#[test]
fn no_message_has_a_field_for_key_material() {
    // Every field name of every message, as it appears on the wire.
    let mut names = Vec::new();
    let mut collect = |value: &ciborium::Value| collect_keys(value, &mut names);
    for request in all_requests() {
        let frame = encode_frame(&RequestEnvelope { id: 1, request }).unwrap();
        collect(&ciborium::de::from_reader(&frame[4..]).unwrap());
    }
    for result in all_responses() {
        let frame = encode_frame(&ResponseEnvelope { id: 1, result }).unwrap();
        collect(&ciborium::de::from_reader(&frame[4..]).unwrap());
    }
    for name in &names {
        let lower = name.to_ascii_lowercase();
        let allowed = lower == "sealed_seed";
        assert!(
            allowed
                || !(lower.contains("seed")
                    || lower.contains("scalar")
                    || lower.contains("private")
                    || lower.contains("secret_key")
                    || lower == "d"),
            "field {name} looks like key material"
        );
    }
    assert!(names.iter().any(|n| n == "sealed_seed"));
}

fn collect_keys(value: &ciborium::Value, out: &mut Vec<String>) {
    match value {
        ciborium::Value::Map(entries) => {
            for (k, v) in entries {
                if let ciborium::Value::Text(t) = k {
                    out.push(t.clone());
                }
                collect_keys(v, out);
            }
        }
        ciborium::Value::Array(items) => items.iter().for_each(|v| collect_keys(v, out)),
        _ => {}
    }
}

fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

#[test]
fn zero_length_is_rejected() {
    assert!(matches!(
        decode_request(&[0, 0, 0, 0]),
        Err(FrameError::Empty)
    ));
    assert!(matches!(body_length([0; 4]), Err(FrameError::Empty)));
}

#[test]
fn oversized_length_is_rejected_before_reading_the_body() {
    let over = (MAX_FRAME_BYTES as u32 + 1).to_be_bytes();
    assert!(matches!(
        body_length(over),
        Err(FrameError::TooLarge { length, max }) if length == MAX_FRAME_BYTES as u64 + 1 && max == MAX_FRAME_BYTES
    ));
    assert!(matches!(
        decode_request(&[0xff, 0xff, 0xff, 0xff]),
        Err(FrameError::TooLarge { .. })
    ));
    assert_eq!(
        body_length((MAX_FRAME_BYTES as u32).to_be_bytes()).unwrap(),
        MAX_FRAME_BYTES
    );
}

#[test]
fn frames_of_every_size_around_the_starting_capacity_round_trip() {
    // Attestation documents from a few bytes to several times the encoder's starting
    // buffer, so that the buffer grows zero, one and several times.
    for size in [0usize, 1, 1000, 1500, 1536, 1600, 3072, 5000, 40_000] {
        let envelope = ResponseEnvelope {
            id: size as u64,
            result: Ok(Response::Attestation(Attestation {
                document: (0..size).map(|i| i as u8).collect(),
                jwks: vec![b'j'; size / 2],
                jwks_sha256: [9; 32],
                kids: vec!["k1".into()],
                statement: vec![b's'; size.min(400)],
            })),
        };
        let frame = encode_frame(&envelope).unwrap();
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4,
            "size {size}"
        );
        assert_eq!(decode_response(&frame).unwrap(), envelope, "size {size}");
    }
}

#[test]
fn oversized_message_is_not_encoded() {
    let response = ResponseEnvelope {
        id: 1,
        result: Ok(Response::Attestation(Attestation {
            document: vec![0; MAX_FRAME_BYTES],
            jwks: vec![],
            jwks_sha256: [0; 32],
            kids: vec![],
            statement: vec![],
        })),
    };
    assert!(matches!(
        encode_frame(&response),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn truncated_frames_are_rejected_at_every_length() {
    let frame = encode_frame(&RequestEnvelope {
        id: 5,
        request: all_requests()[1].clone(),
    })
    .unwrap();
    for len in 0..frame.len() {
        match decode_request(&frame[..len]) {
            Err(FrameError::Truncated { expected, actual }) => {
                assert_eq!(actual, len);
                assert!(expected > len);
            }
            other => panic!("length {len}: {other:?}"),
        }
    }
    // A body truncated inside a CBOR item, with a consistent (smaller) prefix.
    for cut in 1..frame.len() - 4 {
        let body = &frame[4..4 + cut];
        assert!(decode_request(&frame_of(body)).is_err(), "cut {cut}");
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut frame = encode_frame(&RequestEnvelope {
        id: 1,
        request: Request::Status,
    })
    .unwrap()
    .to_vec();
    frame.push(0);
    assert!(matches!(
        decode_request(&frame),
        Err(FrameError::TrailingBytes {
            extra: 1,
            after: "frame"
        })
    ));
    // Two CBOR items in one body.
    let body = &frame[4..frame.len() - 1];
    let mut doubled = body.to_vec();
    doubled.extend_from_slice(body);
    assert!(matches!(
        decode_request(&frame_of(&doubled)),
        Err(FrameError::TrailingBytes {
            after: "CBOR item",
            ..
        })
    ));
}

#[test]
fn invalid_cbor_is_rejected() {
    // 0xff "break" outside an indefinite item; reserved additional info 28..30.
    for body in [&[0xff][..], &[0x1c], &[0x5f, 0x01], &[0xbf, 0x61]] {
        let err = decode_request(&frame_of(body)).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::InvalidCbor { .. }
                    | FrameError::TruncatedCbor
                    | FrameError::WrongShape { .. }
            ),
            "{body:02x?}: {err:?}"
        );
    }
}

#[test]
fn wrong_types_are_rejected() {
    let cases: Vec<ciborium::Value> = vec![
        ciborium::Value::Integer(5.into()),
        ciborium::Value::Text("Status".into()),
        // id is a string
        cbor_map(&[("id", "x".into()), ("request", "Status".into())]),
        // negative id
        cbor_map(&[("id", (-1).into()), ("request", "Status".into())]),
        // unknown request variant
        cbor_map(&[("id", 1.into()), ("request", "Sign".into())]),
        // missing request
        cbor_map(&[("id", 1.into())]),
        // MintJwt with wallet as integer
        cbor_map(&[
            ("id", 1.into()),
            (
                "request",
                cbor_map(&[("MintJwt", cbor_map(&[("wallet", 7.into())]))]),
            ),
        ]),
        // Attest with nonce as text
        cbor_map(&[
            ("id", 1.into()),
            (
                "request",
                cbor_map(&[("Attest", cbor_map(&[("nonce", "abc".into())]))]),
            ),
        ]),
    ];
    for value in cases {
        let mut body = Vec::new();
        ciborium::ser::into_writer(&value, &mut body).unwrap();
        let err = decode_request(&frame_of(&body)).unwrap_err();
        assert!(
            matches!(err, FrameError::WrongShape { .. }),
            "{value:?}: {err:?}"
        );
    }
}

#[test]
fn id_is_salvaged_from_a_bad_request() {
    let value = cbor_map(&[("id", 77.into()), ("request", "Sign".into())]);
    let mut body = Vec::new();
    ciborium::ser::into_writer(&value, &mut body).unwrap();
    assert!(decode_body::<RequestEnvelope>(&body).is_err());
    assert_eq!(salvage_request_id(&body), Some(77));
    assert_eq!(salvage_request_id(&[0xff]), None);
}

#[test]
fn deep_nesting_is_bounded() {
    // {"id":1,"request": [[[[...]]]]} nested far past the limit.
    let depth = 100_000;
    let mut body = vec![0xa2, 0x62, b'i', b'd', 0x01, 0x67];
    body.extend_from_slice(b"request");
    body.extend(std::iter::repeat_n(0x81, depth));
    body.push(0x00);
    let err = decode_request(&frame_of(&body)).unwrap_err();
    assert!(
        matches!(err, FrameError::TooDeep { limit } if limit == CBOR_RECURSION_LIMIT)
            || matches!(err, FrameError::TooLarge { .. }),
        "{err:?}"
    );
    // Within the frame cap.
    let mut body = vec![0xa2, 0x62, b'i', b'd', 0x01, 0x67];
    body.extend_from_slice(b"request");
    body.extend(std::iter::repeat_n(0x81, 1000));
    body.push(0x00);
    assert!(matches!(
        decode_request(&frame_of(&body)).unwrap_err(),
        FrameError::TooDeep { .. } | FrameError::WrongShape { .. }
    ));
}

#[test]
fn huge_declared_lengths_inside_cbor_do_not_allocate() {
    // Byte string claiming 2^63 bytes; array claiming 2^32 items.
    for body in [
        vec![
            0xa2, 0x62, b'i', b'd', 0x01, 0x5b, 0x80, 0, 0, 0, 0, 0, 0, 0,
        ],
        vec![0x9b, 0, 0, 0, 1, 0, 0, 0, 0],
    ] {
        assert!(decode_request(&frame_of(&body)).is_err());
    }
}

#[test]
fn garbage_never_panics() {
    // Deterministic pseudo-random garbage and single-byte corruptions of valid frames.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = decode_request(&frame_of(&body));
        let _ = decode_response(&frame_of(&body));
        let _ = decode_request(&body);
    }
    for request in all_requests() {
        let frame = encode_frame(&RequestEnvelope { id: 9, request }).unwrap();
        for i in 0..frame.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = frame.to_vec();
                bad[i] ^= flip;
                let _ = decode_request(&bad);
            }
        }
    }
}

#[tokio::test]
async fn read_frame_handles_eof_and_truncation() {
    let frame = encode_frame(&RequestEnvelope {
        id: 1,
        request: Request::Status,
    })
    .unwrap();
    // Clean EOF.
    let mut empty: &[u8] = &[];
    assert!(read_frame(&mut empty).await.unwrap().is_none());
    // Whole frame, then EOF.
    let mut whole: &[u8] = &frame;
    let body = read_frame(&mut whole).await.unwrap().unwrap();
    assert_eq!(
        decode_body::<RequestEnvelope>(&body).unwrap().request,
        Request::Status
    );
    assert!(read_frame(&mut whole).await.unwrap().is_none());
    // Truncated in the prefix and in the body.
    for cut in 1..frame.len() {
        let mut partial: &[u8] = &frame[..cut];
        assert!(
            matches!(
                read_frame(&mut partial).await,
                Err(FrameError::Truncated { .. })
            ),
            "cut {cut}"
        );
    }
    // Oversized prefix.
    let mut big: &[u8] = &[0x7f, 0xff, 0xff, 0xff, 0];
    assert!(matches!(
        read_frame(&mut big).await,
        Err(FrameError::TooLarge { .. })
    ));
    let _ = decode_frame::<RequestEnvelope>(&frame).unwrap();
}

fn cbor_map(entries: &[(&str, ciborium::Value)]) -> ciborium::Value {
    ciborium::Value::Map(
        entries
            .iter()
            .map(|(k, v)| (ciborium::Value::Text((*k).into()), v.clone()))
            .collect(),
    )
}
