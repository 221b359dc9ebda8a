"""Which signer a driver package's catalog names, and the SignerScore Windows gives it.

The catalogs here are real PKCS#7 SignedData files made with `cryptography`, signed by certificates whose
common names are those of real driver signers; the reader is the same one the bake uses.
"""

from __future__ import annotations

import datetime as dt

import pytest

pytest.importorskip("cryptography")
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.serialization import pkcs7  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from pipeline.windows import inf  # noqa: E402


def _certificate(name: str, issuer_name: str, key, issuer_key):
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=365))
            .sign(issuer_key, hashes.SHA256()))


def _catalog(tmp_path, signer: str):
    """A signed catalog with a chain (root, then the signer), as the real ones carry."""
    root_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _certificate("Microsoft Root Certificate Authority 2010", "Microsoft Root Certificate Authority 2010",
                        root_key, root_key)
    leaf = _certificate(signer, root.subject.rfc4514_string().removeprefix("CN="), leaf_key, root_key)
    der = (pkcs7.PKCS7SignatureBuilder().set_data(b"catalog members")
           .add_signer(leaf, leaf_key, hashes.SHA256()).add_certificate(root)
           .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary]))
    path = tmp_path / "viostor.cat"
    path.write_bytes(der)
    return path


@pytest.mark.parametrize("signer, score", [
    ("Microsoft Windows Hardware Compatibility Publisher", 0x0D000005),  # WHQL and attestation signing
    ("Red Hat, Inc.", 0x0F000000),  # vendor-signed only: Authenticode rank
])
def test_signer_score_follows_the_catalogs_signer(tmp_path, signer, score):
    name = inf.signer_name(_catalog(tmp_path, signer))
    assert name == signer
    assert inf.signer_score(name) == score


def test_an_unreadable_catalog_has_no_signer_and_ranks_as_a_real_virtio_win_package(tmp_path):
    catalog = tmp_path / "viostor.cat"
    catalog.write_bytes(b"synthetic catalog\n")
    assert inf.signer_name(catalog) is None
    assert inf.signer_score(None) == inf.SIGNERSCORE_WHQL
