//! Access to the Nitro Secure Module (NSM): the real `/dev/nsm` device or, with the cargo
//! feature `mock`, the mock NSM from `agentkeys-mock-nsm`.
//!
//! Both speak the request/response types of `aws-nitro-enclaves-nsm-api`, so everything
//! above this module is identical in production and in mock mode.

use aws_nitro_enclaves_nsm_api::api::{ErrorCode, Request, Response};
use serde_bytes::ByteBuf;

/// Maximum size of `user_data`, `nonce` and `public_key` in an attestation request.
/// Source: AWS Nitro Enclaves NSM API, "Attestation" request (each field ≤ 1024 bytes).
pub const MAX_ATTESTATION_FIELD_BYTES: usize = 1024;

/// Upper bound on the number of `GetRandom` calls one `random(n)` may take, so a device
/// that keeps answering with empty buffers cannot hang the caller.
const MAX_RANDOM_CALLS: usize = 64;

/// Failures talking to the NSM.
#[derive(Debug, thiserror::Error)]
pub enum NsmError {
    /// `/dev/nsm` could not be opened.
    #[error("cannot open /dev/nsm (is this running inside a Nitro Enclave?)")]
    DeviceUnavailable,
    /// The NSM answered with an error code.
    #[error("NSM {request} failed: {code}")]
    Device {
        /// The request that failed.
        request: &'static str,
        /// The NSM error code, rendered.
        code: String,
    },
    /// The NSM answered with a response of the wrong kind.
    #[error("NSM {request}: unexpected response {actual}")]
    UnexpectedResponse {
        /// The request that was sent.
        request: &'static str,
        /// The kind of response received.
        actual: &'static str,
    },
    /// An attestation field is larger than the NSM accepts.
    #[error("attestation field {field} is {actual} bytes, the NSM accepts at most {max}")]
    FieldTooLarge {
        /// Which field.
        field: &'static str,
        /// Its size.
        actual: usize,
        /// The limit.
        max: usize,
    },
    /// `GetRandom` kept returning nothing.
    #[error("NSM GetRandom returned {got} of {wanted} bytes after {calls} calls")]
    RandomExhausted {
        /// Bytes obtained.
        got: usize,
        /// Bytes asked for.
        wanted: usize,
        /// Calls made.
        calls: usize,
    },
}

/// A Nitro Secure Module: the real device or a stand-in.
pub trait NsmDevice: Send + Sync {
    /// Processes one request, exactly like `nsm_process_request` on the device.
    fn process(&self, request: Request) -> Response;

    /// Whether this is the mock device (reported in `Status`).
    fn is_mock(&self) -> bool {
        false
    }
}

/// Name of a response variant, for error messages.
fn response_kind(response: &Response) -> &'static str {
    match response {
        Response::DescribePCR { .. } => "DescribePCR",
        Response::ExtendPCR { .. } => "ExtendPCR",
        Response::LockPCR => "LockPCR",
        Response::LockPCRs => "LockPCRs",
        Response::DescribeNSM { .. } => "DescribeNSM",
        Response::Attestation { .. } => "Attestation",
        Response::GetRandom { .. } => "GetRandom",
        Response::Error(_) => "Error",
        _ => "unknown",
    }
}

fn code_name(code: &ErrorCode) -> String {
    format!("{code:?}")
}

/// The error for an answer to `request` that is not its success: the NSM's error code,
/// or an answer of another kind.
fn failure(request: &'static str, response: &Response) -> NsmError {
    match response {
        Response::Error(code) => NsmError::Device {
            request,
            code: code_name(code),
        },
        other => NsmError::UnexpectedResponse {
            request,
            actual: response_kind(other),
        },
    }
}

/// The NSM's module id (`DescribeNSM`): the enclave's identity in its attestation
/// documents and in AWS CloudTrail's records of attested KMS calls.
pub fn module_id(nsm: &dyn NsmDevice) -> Result<String, NsmError> {
    match nsm.process(Request::DescribeNSM) {
        Response::DescribeNSM { module_id, .. } => Ok(module_id),
        other => Err(failure("DescribeNSM", &other)),
    }
}

/// Asks the NSM for an attestation document carrying the given fields.
pub fn attest(
    nsm: &dyn NsmDevice,
    user_data: Option<&[u8]>,
    nonce: Option<&[u8]>,
    public_key: Option<&[u8]>,
) -> Result<Vec<u8>, NsmError> {
    for (field, value) in [
        ("user_data", user_data),
        ("nonce", nonce),
        ("public_key", public_key),
    ] {
        if let Some(v) = value {
            if v.len() > MAX_ATTESTATION_FIELD_BYTES {
                return Err(NsmError::FieldTooLarge {
                    field,
                    actual: v.len(),
                    max: MAX_ATTESTATION_FIELD_BYTES,
                });
            }
        }
    }
    let request = Request::Attestation {
        user_data: user_data.map(|v| ByteBuf::from(v.to_vec())),
        nonce: nonce.map(|v| ByteBuf::from(v.to_vec())),
        public_key: public_key.map(|v| ByteBuf::from(v.to_vec())),
    };
    match nsm.process(request) {
        Response::Attestation { document } => Ok(document),
        other => Err(failure("Attestation", &other)),
    }
}

/// Returns `n` random bytes from the NSM's hardware RNG (several `GetRandom` calls if needed).
pub fn random(nsm: &dyn NsmDevice, n: usize) -> Result<Vec<u8>, NsmError> {
    let mut out = Vec::with_capacity(n);
    let mut calls = 0;
    while out.len() < n {
        if calls == MAX_RANDOM_CALLS {
            return Err(NsmError::RandomExhausted {
                got: out.len(),
                wanted: n,
                calls,
            });
        }
        calls += 1;
        match nsm.process(Request::GetRandom) {
            Response::GetRandom { random } => {
                let take = random.len().min(n - out.len());
                out.extend_from_slice(&random[..take]);
            }
            other => return Err(failure("GetRandom", &other)),
        }
    }
    Ok(out)
}

/// A random `u64` from the NSM (big-endian over 8 random bytes).
pub fn random_u64(nsm: &dyn NsmDevice) -> Result<u64, NsmError> {
    let bytes = random(nsm, 8)?;
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes);
    Ok(u64::from_be_bytes(buf))
}

/// The real NSM device, `/dev/nsm`, through the driver of `aws-nitro-enclaves-nsm-api`.
#[derive(Debug)]
pub struct DevNsm {
    fd: i32,
}

impl DevNsm {
    /// Opens `/dev/nsm`.
    pub fn open() -> Result<DevNsm, NsmError> {
        let fd = aws_nitro_enclaves_nsm_api::driver::nsm_init();
        if fd < 0 {
            return Err(NsmError::DeviceUnavailable);
        }
        Ok(DevNsm { fd })
    }
}

impl NsmDevice for DevNsm {
    fn process(&self, request: Request) -> Response {
        // The driver issues one ioctl per request on a shared fd; the kernel serialises them.
        aws_nitro_enclaves_nsm_api::driver::nsm_process_request(self.fd, request)
    }
}

impl Drop for DevNsm {
    fn drop(&mut self) {
        aws_nitro_enclaves_nsm_api::driver::nsm_exit(self.fd);
    }
}

#[cfg(feature = "mock")]
impl NsmDevice for agentkeys_mock_nsm::MockNsm {
    fn process(&self, request: Request) -> Response {
        agentkeys_mock_nsm::MockNsm::process(self, request)
    }

    fn is_mock(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A scripted device for unit tests.
    struct Scripted(Mutex<Vec<Response>>);

    impl NsmDevice for Scripted {
        fn process(&self, _request: Request) -> Response {
            let mut v = self.0.lock().unwrap();
            if v.is_empty() {
                Response::Error(ErrorCode::InternalError)
            } else {
                v.remove(0)
            }
        }
    }

    #[test]
    fn random_concatenates_calls() {
        let dev = Scripted(Mutex::new(vec![
            Response::GetRandom {
                random: vec![1, 2, 3],
            },
            Response::GetRandom {
                random: vec![4, 5, 6, 7],
            },
        ]));
        assert_eq!(random(&dev, 5).unwrap(), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn random_surfaces_device_error() {
        let dev = Scripted(Mutex::new(vec![]));
        let err = random(&dev, 4).unwrap_err();
        assert!(
            matches!(
                err,
                NsmError::Device {
                    request: "GetRandom",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn random_gives_up_on_empty_answers() {
        let dev = Scripted(Mutex::new(
            (0..100)
                .map(|_| Response::GetRandom { random: vec![] })
                .collect(),
        ));
        let err = random(&dev, 4).unwrap_err();
        assert!(matches!(
            err,
            NsmError::RandomExhausted {
                got: 0,
                wanted: 4,
                ..
            }
        ));
    }

    #[test]
    fn attest_rejects_wrong_response() {
        let dev = Scripted(Mutex::new(vec![Response::LockPCR]));
        let err = attest(&dev, None, None, None).unwrap_err();
        assert!(matches!(
            err,
            NsmError::UnexpectedResponse {
                request: "Attestation",
                actual: "LockPCR"
            }
        ));
    }

    #[test]
    fn attest_rejects_oversized_fields() {
        let dev = Scripted(Mutex::new(vec![]));
        let big = vec![0u8; MAX_ATTESTATION_FIELD_BYTES + 1];
        let err = attest(&dev, None, Some(&big), None).unwrap_err();
        assert!(matches!(
            err,
            NsmError::FieldTooLarge { field: "nonce", .. }
        ));
    }

    #[test]
    fn attest_returns_document() {
        let dev = Scripted(Mutex::new(vec![Response::Attestation {
            document: vec![9; 4],
        }]));
        assert_eq!(attest(&dev, Some(b"u"), None, None).unwrap(), vec![9; 4]);
    }

    #[test]
    fn dev_nsm_absent_here() {
        // Build machines have no /dev/nsm; opening must fail cleanly, not panic.
        if !std::path::Path::new("/dev/nsm").exists() {
            assert!(matches!(DevNsm::open(), Err(NsmError::DeviceUnavailable)));
        }
    }
}
