"""C2PA manifests signed with a test certificate: a CA and a signing certificate made here (EC
P-256, the key usages C2PA requires), and c2pa-python's Builder to embed a manifest."""

from __future__ import annotations

import datetime
import io
import json
from functools import cache

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
ISSUER = "batchvision tests"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ISSUER),
        ]
    )


def _usage(*, sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign,
        crl_sign=sign,
        encipher_only=False,
        decipher_only=False,
    )


def _certificate(
    subject: str,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_usage(sign=ca), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


@cache
def _signer_material() -> tuple[bytes, bytes]:
    """The certificate chain (signer, then CA) and the signer's private key, PEM."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test CA", _name("test CA"), ca_key, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("test signer", ca.subject, key, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
    private = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return chain, private


def sign(image: bytes, mime: str, *, generator: str, source_type: str) -> bytes:
    """`image` with a C2PA manifest embedded: created by `generator`, of IPTC `source_type`."""
    chain, private = _signer_material()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, private, None))
    name, _, version = generator.partition(" ")
    manifest = {
        "claim_generator_info": [{"name": name, "version": version or "1"}],
        "title": "test image",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [{"action": "c2pa.created", "digitalSourceType": IPTC + source_type}]
                },
            }
        ],
    }
    out = io.BytesIO()
    c2pa.Builder(json.dumps(manifest)).sign(signer, mime, io.BytesIO(image), out)
    return out.getvalue()
