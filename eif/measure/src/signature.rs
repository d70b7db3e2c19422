//! The signature section of a signed EIF, read only for the certificate PCR8 measures.

use crate::error::EifError;

/// Extracts the DER signing certificate from the signature section: a CBOR array of
/// `{ signing_certificate: PEM bytes, signature: COSE_Sign1 bytes }` (serde_cbor of
/// `Vec<PcrSignature>`; the byte fields are arrays of integers, a byte string is accepted
/// too). PCR8 measures the first entry's certificate.
pub fn signing_certificate_from_signature_section(bytes: &[u8]) -> Result<Vec<u8>, EifError> {
    use ciborium::value::Value as Cbor;
    let malformed = |reason: String| EifError::SignatureMalformed { reason };
    let value: Cbor =
        ciborium::de::from_reader(bytes).map_err(|e| malformed(format!("not CBOR: {e}")))?;
    let entries = match value {
        Cbor::Array(entries) => entries,
        other => {
            return Err(malformed(format!(
                "expected an array, found {}",
                cbor_kind(&other)
            )))
        }
    };
    let first = entries
        .into_iter()
        .next()
        .ok_or_else(|| malformed("the signature array is empty".into()))?;
    let fields = match first {
        Cbor::Map(fields) => fields,
        other => {
            return Err(malformed(format!(
                "expected a map in the signature array, found {}",
                cbor_kind(&other)
            )))
        }
    };
    let cert_value = fields
        .into_iter()
        .find(|(k, _)| matches!(k, Cbor::Text(t) if t == "signing_certificate"))
        .map(|(_, v)| v)
        .ok_or_else(|| malformed("no signing_certificate field".into()))?;
    let pem = cbor_bytes(cert_value).map_err(|r| malformed(format!("signing_certificate: {r}")))?;
    let (label, der) = der::pem::decode_vec(&pem).map_err(|e| EifError::SigningCertificate {
        reason: e.to_string(),
    })?;
    if label != "CERTIFICATE" {
        return Err(EifError::SigningCertificate {
            reason: format!("PEM label is {label:?}, expected \"CERTIFICATE\""),
        });
    }
    {
        use der::Decode;
        x509_cert::Certificate::from_der(&der).map_err(|e| EifError::SigningCertificate {
            reason: format!("not an X.509 certificate: {e}"),
        })?;
    }
    Ok(der)
}

fn cbor_kind(v: &ciborium::value::Value) -> &'static str {
    use ciborium::value::Value as Cbor;
    match v {
        Cbor::Integer(_) => "an integer",
        Cbor::Bytes(_) => "a byte string",
        Cbor::Float(_) => "a float",
        Cbor::Text(_) => "a text string",
        Cbor::Bool(_) => "a boolean",
        Cbor::Null => "null",
        Cbor::Tag(..) => "a tagged value",
        Cbor::Array(_) => "an array",
        Cbor::Map(_) => "a map",
        _ => "an unknown CBOR value",
    }
}

fn cbor_bytes(v: ciborium::value::Value) -> Result<Vec<u8>, String> {
    use ciborium::value::Value as Cbor;
    match v {
        Cbor::Bytes(b) => Ok(b),
        Cbor::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Cbor::Integer(i) => u8::try_from(i128::from(i))
                    .map_err(|_| format!("array element {} is not a byte", i128::from(i))),
                other => Err(format!("array element is {}", cbor_kind(&other))),
            })
            .collect(),
        other => Err(format!("expected bytes, found {}", cbor_kind(&other))),
    }
}
