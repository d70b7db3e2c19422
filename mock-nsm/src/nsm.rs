//! The mock NSM device: PCR bank, locking, random bytes and signed documents.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aws_nitro_enclaves_nsm_api::api::{Digest, ErrorCode, Request, Response};
use rand::RngCore;
use serde_bytes::ByteBuf;
use sha2::{Digest as _, Sha384};

use crate::clock::{Clock, SystemClock};
use crate::document::{sign_document, DocumentFields};
use crate::pki::{mock_cabundle, mock_pki, MockLeaf, MOCK_INSTANCE_ID};

/// Number of PCRs the NSM exposes (AWS: `max_pcrs` = 32; indexes 0..31).
pub const MAX_PCRS: u16 = 32;
/// PCRs 0..15 are set by the Nitro hypervisor and locked before the enclave runs.
pub const BOOT_LOCKED_PCRS: u16 = 16;
/// PCR width for SHA-384 banks.
pub const PCR_LEN: usize = 48;
/// PCRs zeroed in debug mode (AWS: "in debug mode PCR0, PCR1, PCR2 and PCR8 are zeros").
pub const DEBUG_ZEROED_PCRS: [u16; 4] = [0, 1, 2, 8];
/// Largest serialized request the NSM driver accepts (`NSM_REQUEST_MAX_SIZE` = 0x1000 in
/// aws-nitro-enclaves-nsm-api's driver; larger requests fail with `InputTooLarge`).
pub const MAX_REQUEST_BYTES: usize = 0x1000;
/// `user_data` and `nonce` upper bound (AWS attestation process §3.2.2.2: 0..512 bytes).
pub const MAX_USER_DATA_BYTES: usize = 512;
/// `public_key` upper bound (AWS attestation process §3.2.2.2: 1..1024 bytes).
pub const MAX_PUBLIC_KEY_BYTES: usize = 1024;
/// Bytes returned by one `GetRandom` (the Nitro NSM hands out 256 bytes per call).
pub const GET_RANDOM_BYTES: usize = 256;
/// NSM API version reported by `DescribeNSM` (the Nitro NSM reports 1.0.0).
pub const NSM_VERSION: (u16, u16, u16) = (1, 0, 0);
/// A leaf certificate is replaced when less than this remains of its 3 hours, so that
/// every document can still be verified "now" for a while after it was produced.
pub const LEAF_RENEW_MARGIN: Duration = Duration::from_secs(10 * 60);
/// Default module id, in the shape of a real one (`i-<instance>-enc<16 hex>`).
pub const DEFAULT_MODULE_ID: &str = "i-0123456789abcdef0-enc0123456789abcdef";

/// `PCR_new = SHA-384(PCR_old ‖ data)`: the Nitro extend rule.
pub fn extend_pcr(old: &[u8; PCR_LEN], data: &[u8]) -> [u8; PCR_LEN] {
    let mut h = Sha384::new();
    h.update(old);
    h.update(data);
    h.finalize().into()
}

/// What a PCR holds after measuring `content` from zero: `SHA-384(0⁴⁸ ‖ SHA-384(content))`
/// (the way PCR0/1/2 measure image sections).
pub fn measure(content: &[u8]) -> [u8; PCR_LEN] {
    let digest: [u8; PCR_LEN] = Sha384::digest(content).into();
    extend_pcr(&[0; PCR_LEN], &digest)
}

/// The PCR values a non-debug mock enclave boots with: PCR0/1/2 measure fixed labels,
/// PCR3 an IAM role ARN, PCR4 the instance id (`eif/README.md`, "What the PCRs cover"),
/// PCR8 is zero (unsigned image), every other PCR is zero.
pub fn default_boot_pcrs() -> BTreeMap<u16, [u8; PCR_LEN]> {
    let zero = [0u8; PCR_LEN];
    let mut pcrs: BTreeMap<u16, [u8; PCR_LEN]> = (0..MAX_PCRS).map(|i| (i, zero)).collect();
    pcrs.insert(
        0,
        measure(b"agentkeys mock enclave image: kernel, cmdline, ramdisks"),
    );
    pcrs.insert(
        1,
        measure(b"agentkeys mock enclave image: kernel, boot ramfs"),
    );
    pcrs.insert(2, measure(b"agentkeys mock enclave image: application"));
    pcrs.insert(
        3,
        extend_pcr(
            &zero,
            b"arn:aws:iam::000000000000:role/agentkeys-mock-parent",
        ),
    );
    pcrs.insert(4, extend_pcr(&zero, MOCK_INSTANCE_ID.as_bytes()));
    pcrs
}

/// Errors in a mock NSM configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The PCR index is outside 0..31.
    #[error("PCR index {index} is out of range (the NSM has {max} PCRs)")]
    PcrIndex {
        /// The index given.
        index: u16,
        /// Number of PCRs.
        max: u16,
    },
    /// The module id is empty.
    #[error("module id must not be empty")]
    EmptyModuleId,
}

/// Configuration of a [`MockNsm`].
#[derive(Clone)]
pub struct MockNsmConfig {
    /// Debug-mode enclave: PCR0/1/2/8 read as zero.
    pub debug_mode: bool,
    /// The module id written into documents and reported by `DescribeNSM`.
    pub module_id: String,
    /// Time source (UNIX ms) for document timestamps and leaf validity.
    pub clock: Arc<dyn Clock>,
    boot_pcrs: BTreeMap<u16, [u8; PCR_LEN]>,
}

impl fmt::Debug for MockNsmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockNsmConfig")
            .field("debug_mode", &self.debug_mode)
            .field("module_id", &self.module_id)
            .field("boot_pcrs", &self.boot_pcrs.len())
            .finish()
    }
}

impl Default for MockNsmConfig {
    fn default() -> Self {
        MockNsmConfig {
            debug_mode: false,
            module_id: DEFAULT_MODULE_ID.to_string(),
            clock: Arc::new(SystemClock),
            boot_pcrs: default_boot_pcrs(),
        }
    }
}

impl MockNsmConfig {
    /// Sets the debug-mode switch.
    pub fn debug_mode(mut self, debug: bool) -> Self {
        self.debug_mode = debug;
        self
    }

    /// Sets the clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the module id.
    pub fn module_id(mut self, module_id: impl Into<String>) -> Result<Self, ConfigError> {
        let module_id = module_id.into();
        if module_id.is_empty() {
            return Err(ConfigError::EmptyModuleId);
        }
        self.module_id = module_id;
        Ok(self)
    }

    /// Sets the value PCR `index` holds at boot (0..15 are then locked, 16..31 stay
    /// extendable). In debug mode PCR0/1/2/8 read as zero whatever is set here.
    pub fn pcr(mut self, index: u16, value: [u8; PCR_LEN]) -> Result<Self, ConfigError> {
        if index >= MAX_PCRS {
            return Err(ConfigError::PcrIndex {
                index,
                max: MAX_PCRS,
            });
        }
        self.boot_pcrs.insert(index, value);
        Ok(self)
    }

    /// The boot value of PCR `index` as it will read (debug zeroing applied).
    pub fn boot_pcr(&self, index: u16) -> Option<[u8; PCR_LEN]> {
        if index >= MAX_PCRS {
            return None;
        }
        if self.debug_mode && DEBUG_ZEROED_PCRS.contains(&index) {
            return Some([0; PCR_LEN]);
        }
        Some(self.boot_pcrs.get(&index).copied().unwrap_or([0; PCR_LEN]))
    }
}

struct State {
    pcrs: [[u8; PCR_LEN]; MAX_PCRS as usize],
    locked: [bool; MAX_PCRS as usize],
    leaf: Option<Arc<MockLeaf>>,
}

/// A stand-in for `/dev/nsm` with the request/response semantics of
/// `aws-nitro-enclaves-nsm-api`. Thread-safe: [`MockNsm::process`] takes `&self`.
pub struct MockNsm {
    module_id: String,
    debug_mode: bool,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl fmt::Debug for MockNsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockNsm")
            .field("module_id", &self.module_id)
            .field("debug_mode", &self.debug_mode)
            .finish_non_exhaustive()
    }
}

impl Default for MockNsm {
    fn default() -> Self {
        MockNsm::new(MockNsmConfig::default())
    }
}

fn error(code: ErrorCode) -> Response {
    Response::Error(code)
}

impl MockNsm {
    /// A freshly booted mock NSM: PCR0..15 hold their boot values and are locked.
    pub fn new(config: MockNsmConfig) -> MockNsm {
        let mut pcrs = [[0u8; PCR_LEN]; MAX_PCRS as usize];
        for (i, slot) in (0..MAX_PCRS).zip(pcrs.iter_mut()) {
            *slot = config.boot_pcr(i).unwrap_or([0; PCR_LEN]);
        }
        let mut locked = [false; MAX_PCRS as usize];
        for slot in locked.iter_mut().take(usize::from(BOOT_LOCKED_PCRS)) {
            *slot = true;
        }
        MockNsm {
            module_id: config.module_id,
            debug_mode: config.debug_mode,
            clock: config.clock,
            state: Mutex::new(State {
                pcrs,
                locked,
                leaf: None,
            }),
        }
    }

    /// The module id.
    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    /// Whether this is a debug-mode enclave.
    pub fn debug_mode(&self) -> bool {
        self.debug_mode
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the PCR bank half-written (every
        // update is a single assignment), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Processes one request exactly as the NSM device would.
    pub fn process(&self, request: Request) -> Response {
        // The driver refuses requests whose CBOR encoding exceeds NSM_REQUEST_MAX_SIZE.
        let mut encoded = Vec::new();
        if ciborium::into_writer(&request, &mut encoded).is_err() {
            return error(ErrorCode::InvalidArgument);
        }
        if encoded.len() > MAX_REQUEST_BYTES {
            return error(ErrorCode::InputTooLarge);
        }
        match request {
            Request::DescribePCR { index } => self.describe_pcr(index),
            Request::ExtendPCR { index, data } => self.extend(index, &data),
            Request::LockPCR { index } => self.lock_pcr(index),
            Request::LockPCRs { range } => self.lock_pcrs(range),
            Request::DescribeNSM => self.describe_nsm(),
            Request::Attestation {
                user_data,
                nonce,
                public_key,
            } => self.attestation(
                user_data.map(ByteBuf::into_vec),
                nonce.map(ByteBuf::into_vec),
                public_key.map(ByteBuf::into_vec),
            ),
            Request::GetRandom => {
                let mut random = vec![0u8; GET_RANDOM_BYTES];
                rand::rngs::OsRng.fill_bytes(&mut random);
                Response::GetRandom { random }
            }
            // `Request` is non-exhaustive: a future request kind is not supported here.
            _ => error(ErrorCode::InvalidOperation),
        }
    }

    fn describe_pcr(&self, index: u16) -> Response {
        if index >= MAX_PCRS {
            return error(ErrorCode::InvalidIndex);
        }
        let state = self.lock();
        let i = usize::from(index);
        Response::DescribePCR {
            lock: state.locked[i],
            data: state.pcrs[i].to_vec(),
        }
    }

    fn extend(&self, index: u16, data: &[u8]) -> Response {
        if index >= MAX_PCRS {
            return error(ErrorCode::InvalidIndex);
        }
        let mut state = self.lock();
        let i = usize::from(index);
        if state.locked[i] {
            return error(ErrorCode::ReadOnlyIndex);
        }
        let new = extend_pcr(&state.pcrs[i], data);
        state.pcrs[i] = new;
        Response::ExtendPCR { data: new.to_vec() }
    }

    fn lock_pcr(&self, index: u16) -> Response {
        if index >= MAX_PCRS {
            return error(ErrorCode::InvalidIndex);
        }
        self.lock().locked[usize::from(index)] = true;
        Response::LockPCR
    }

    fn lock_pcrs(&self, range: u16) -> Response {
        if range > MAX_PCRS {
            return error(ErrorCode::InvalidIndex);
        }
        let mut state = self.lock();
        for slot in state.locked.iter_mut().take(usize::from(range)) {
            *slot = true;
        }
        Response::LockPCRs
    }

    fn describe_nsm(&self) -> Response {
        let state = self.lock();
        let locked_pcrs: BTreeSet<u16> = (0..MAX_PCRS)
            .filter(|i| state.locked[usize::from(*i)])
            .collect();
        Response::DescribeNSM {
            version_major: NSM_VERSION.0,
            version_minor: NSM_VERSION.1,
            version_patch: NSM_VERSION.2,
            module_id: self.module_id.clone(),
            max_pcrs: MAX_PCRS,
            locked_pcrs,
            digest: Digest::SHA384,
        }
    }

    fn attestation(
        &self,
        user_data: Option<Vec<u8>>,
        nonce: Option<Vec<u8>>,
        public_key: Option<Vec<u8>>,
    ) -> Response {
        if user_data
            .as_ref()
            .is_some_and(|v| v.len() > MAX_USER_DATA_BYTES)
            || nonce
                .as_ref()
                .is_some_and(|v| v.len() > MAX_USER_DATA_BYTES)
            || public_key
                .as_ref()
                .is_some_and(|v| v.len() > MAX_PUBLIC_KEY_BYTES)
        {
            return error(ErrorCode::InputTooLarge);
        }
        if public_key.as_ref().is_some_and(Vec::is_empty) {
            return error(ErrorCode::InvalidArgument);
        }
        let now_ms = self.clock.now_unix_ms();
        let (pcrs, leaf) = {
            let mut state = self.lock();
            let leaf = match self.current_leaf(&mut state, now_ms) {
                Some(leaf) => leaf,
                None => return error(ErrorCode::InternalError),
            };
            // PCR0..15 always (like the device), plus any user PCR locked since boot.
            let pcrs: BTreeMap<u16, Vec<u8>> = (0..MAX_PCRS)
                .filter(|i| *i < BOOT_LOCKED_PCRS || state.locked[usize::from(*i)])
                .map(|i| (i, state.pcrs[usize::from(i)].to_vec()))
                .collect();
            (pcrs, leaf)
        };
        let fields = DocumentFields {
            module_id: self.module_id.clone(),
            timestamp_ms: now_ms,
            pcrs,
            certificate: leaf.certificate_der.clone(),
            cabundle: mock_cabundle(),
            public_key,
            user_data,
            nonce,
        };
        match sign_document(&fields, &leaf.key) {
            Ok(document) => Response::Attestation { document },
            Err(e) => {
                tracing::error!(error = %e, "mock NSM could not encode a document");
                error(ErrorCode::InternalError)
            }
        }
    }

    /// The leaf valid at `now_ms` with at least [`LEAF_RENEW_MARGIN`] left, issuing a new
    /// one when needed.
    fn current_leaf(&self, state: &mut State, now_ms: u64) -> Option<Arc<MockLeaf>> {
        let now_s = now_ms / 1000;
        if let Some(leaf) = &state.leaf {
            if leaf.not_before_unix <= now_s
                && now_s.saturating_add(LEAF_RENEW_MARGIN.as_secs()) < leaf.not_after_unix
            {
                return Some(leaf.clone());
            }
        }
        match mock_pki().issue_leaf(&self.module_id, now_s) {
            Ok(leaf) => {
                let leaf = Arc::new(leaf);
                state.leaf = Some(leaf.clone());
                Some(leaf)
            }
            Err(e) => {
                tracing::error!(error = %e, now_ms, "mock NSM could not issue a leaf");
                None
            }
        }
    }

    /// Convenience: an attestation document, or the NSM error code.
    pub fn attest(
        &self,
        user_data: Option<Vec<u8>>,
        nonce: Option<Vec<u8>>,
        public_key: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, NsmError> {
        match self.process(Request::Attestation {
            user_data: user_data.map(ByteBuf::from),
            nonce: nonce.map(ByteBuf::from),
            public_key: public_key.map(ByteBuf::from),
        }) {
            Response::Attestation { document } => Ok(document),
            Response::Error(code) => Err(NsmError::Device(format!("{code:?}"))),
            other => Err(NsmError::UnexpectedResponse(format!("{other:?}"))),
        }
    }
}

/// Errors of the convenience wrappers.
#[derive(Debug, thiserror::Error)]
pub enum NsmError {
    /// The device answered with an error code.
    #[error("NSM error {0}")]
    Device(String),
    /// The device answered with a response of another kind.
    #[error("unexpected NSM response {0}")]
    UnexpectedResponse(String),
}
