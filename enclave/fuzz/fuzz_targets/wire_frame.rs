//! Decodes a frame (length prefix ‖ CBOR body) from arbitrary bytes, as the enclave
//! and the parent do with what they read. Must never panic; whatever decodes must
//! re-encode to a frame that decodes to the same message.
#![no_main]

use agentkeys_wire::frame::{
    decode_body, decode_request, decode_response, encode_frame, salvage_request_id,
};
use agentkeys_wire::{RequestEnvelope, ResponseEnvelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_request(data) {
        if let Ok(frame) = encode_frame(&request) {
            let again = decode_request(&frame).expect("re-encoded request decodes");
            assert_eq!(again, request);
        }
    }
    if let Ok(response) = decode_response(data) {
        if let Ok(frame) = encode_frame(&response) {
            let again = decode_response(&frame).expect("re-encoded response decodes");
            assert_eq!(again, response);
        }
    }
    // The body alone, as the server sees it after reading a frame.
    let _ = decode_body::<RequestEnvelope>(data);
    let _ = decode_body::<ResponseEnvelope>(data);
    let _ = salvage_request_id(data);
});
