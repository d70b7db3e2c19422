#!/usr/bin/env python3
"""Verify a Nitro attestation document with an implementation independent of this project.

Usage: verify_with_cryptography.py DOCUMENT ROOT_PEM

Decodes the untagged COSE_Sign1 with a minimal CBOR reader written here, checks the
certificate chain (leaf <- cabundle reversed <- pinned root) with the `cryptography`
package at the document's own timestamp, and checks the ES384 signature over the
COSE Sig_structure. Exit 0 if valid; 1 with a message otherwise; 3 if `cryptography`
is not installed.
"""
import datetime
import sys

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    from cryptography.hazmat.primitives.serialization import Encoding
except ImportError:
    print("python cryptography package not installed", file=sys.stderr)
    sys.exit(3)


def head(b, i):
    ib = b[i]
    major, info = ib >> 5, ib & 31
    i += 1
    if info < 24:
        return major, info, i
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if width is None:
        raise ValueError(f"unsupported CBOR additional info {info} at {i - 1}")
    return major, int.from_bytes(b[i:i + width], "big"), i + width


def item(b, i):
    major, arg, i = head(b, i)
    if major == 0:
        return arg, i
    if major == 1:
        return -1 - arg, i
    if major == 2:
        return bytes(b[i:i + arg]), i + arg
    if major == 3:
        return b[i:i + arg].decode("utf-8"), i + arg
    if major == 4:
        out = []
        for _ in range(arg):
            v, i = item(b, i)
            out.append(v)
        return out, i
    if major == 5:
        out = {}
        for _ in range(arg):
            k, i = item(b, i)
            v, i = item(b, i)
            out[k] = v
        return out, i
    if major == 7 and arg == 22:
        return None, i
    raise ValueError(f"unsupported CBOR major type {major}")


def enc_head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([major << 5 | info]) + n.to_bytes(width, "big")
    raise ValueError("too long")


def fail(msg):
    print(f"INVALID: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    doc = open(sys.argv[1], "rb").read()
    root_pem = open(sys.argv[2], "rb").read()
    cose, end = item(doc, 0)
    if end != len(doc):
        fail("trailing bytes")
    if not isinstance(cose, list) or len(cose) != 4:
        fail("not a COSE_Sign1 array")
    protected, unprotected, payload, signature = cose
    prot, _ = item(protected, 0)
    if prot != {1: -35}:
        fail(f"protected header {prot!r} is not ES384")
    if len(signature) != 96:
        fail(f"signature is {len(signature)} bytes")
    fields, _ = item(payload, 0)
    ts = datetime.datetime.fromtimestamp(fields["timestamp"] / 1000, datetime.timezone.utc)

    root = x509.load_pem_x509_certificate(root_pem)
    bundle = [x509.load_der_x509_certificate(c) for c in fields["cabundle"]]
    leaf = x509.load_der_x509_certificate(fields["certificate"])
    if bundle[0].public_bytes(Encoding.DER) != root.public_bytes(Encoding.DER):
        fail("cabundle[0] is not the pinned root")
    path = [root] + bundle[1:] + [leaf]
    for issuer, subject in zip(path, path[1:]):
        try:
            subject.verify_directly_issued_by(issuer)
        except Exception as e:  # noqa: BLE001
            fail(f"{subject.subject.rfc4514_string()} not issued by {issuer.subject.rfc4514_string()}: {e}")
    for cert in path:
        if not (cert.not_valid_before_utc <= ts <= cert.not_valid_after_utc):
            fail(f"{cert.subject.rfc4514_string()} not valid at {ts}")
        if not isinstance(cert.public_key(), ec.EllipticCurvePublicKey) or cert.public_key().curve.name != "secp384r1":
            fail("not a P-384 key")
    for cert in path[:-1]:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        if not bc.critical or not bc.value.ca:
            fail("CA without critical basicConstraints CA:TRUE")
    leaf_bc = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    if leaf_bc.ca:
        fail("leaf is a CA")

    sig_structure = (
        enc_head(4, 4)
        + enc_head(3, 10) + b"Signature1"
        + enc_head(2, len(protected)) + protected
        + enc_head(2, 0)
        + enc_head(2, len(payload)) + payload
    )
    r = int.from_bytes(signature[:48], "big")
    s = int.from_bytes(signature[48:], "big")
    try:
        leaf.public_key().verify(encode_dss_signature(r, s), sig_structure, ec.ECDSA(hashes.SHA384()))
    except Exception:  # noqa: BLE001
        fail("COSE ES384 signature does not verify")
    print(f"OK module_id={fields['module_id']} pcrs={len(fields['pcrs'])} chain={len(path)}")


if __name__ == "__main__":
    main()
