"""DSSE envelopes and Ed25519 keys (wasmforge/signing.py)."""

from __future__ import annotations

import base64
import json
import stat

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from wasmforge import signing
from wasmforge.errors import UserError


def test_pae_matches_the_dsse_spec_test_vector():
    # The DSSE protocol's example: its P-256 signature must verify over our PAE.
    encoded = signing.pae("http://example.com/HelloWorld", b"hello world")
    assert encoded == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    x = 46950820868899156662930047687818585632848591499744589407958293238635476079160
    y = 5640078356564379163099075877009565129882514886557779369047442380624545832820
    raw = base64.b64decode("A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA==")
    public = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, encoded, ec.ECDSA(hashes.SHA256()))  # raises if the PAE differs


def test_pae_counts_bytes_not_characters():
    assert signing.pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


@pytest.fixture
def key():
    return ed25519.Ed25519PrivateKey.generate()


def test_signed_envelope_round_trip(key):
    envelope = signing.parse_envelope(json.dumps(signing.make_envelope(b'{"a":1}', key)))
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert signing.decode_payload(envelope) == b'{"a":1}'
    assert signing.verify_envelope(envelope, key.public_key()) == signing.keyid(key.public_key())
    assert envelope["signatures"][0]["keyid"] == signing.keyid(key.public_key())


def test_url_safe_base64_is_accepted(key):
    envelope = signing.make_envelope(b"\xfb\xff" * 20, key)
    envelope["payload"] = base64.urlsafe_b64encode(b"\xfb\xff" * 20).decode()
    assert "-" in envelope["payload"] or "_" in envelope["payload"]
    assert signing.verify_envelope(signing.parse_envelope(json.dumps(envelope)), key.public_key())


def test_wrong_key_changed_payload_and_changed_type_fail(key):
    other = ed25519.Ed25519PrivateKey.generate()
    envelope = signing.make_envelope(b"payload", key)
    with pytest.raises(signing.EnvelopeError, match="no signature verifies with the public key"):
        signing.verify_envelope(envelope, other.public_key())
    changed = {**envelope, "payload": base64.b64encode(b"Payload").decode()}
    with pytest.raises(signing.EnvelopeError, match="no signature verifies"):
        signing.verify_envelope(changed, key.public_key())
    retyped = {**envelope, "payloadType": "application/json"}  # the type is signed too (PAE)
    with pytest.raises(signing.EnvelopeError, match="no signature verifies"):
        signing.verify_envelope(retyped, key.public_key())


def test_unsigned_envelope_is_refused_by_verification(key):
    with pytest.raises(signing.EnvelopeError, match="not signed"):
        signing.verify_envelope(signing.make_envelope(b"x"), key.public_key())


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"), ("[]", "not a JSON object"), ('{"payload": "eA=="}', "no valid 'payloadType'"),
    ('{"payload": "@@", "payloadType": "t", "signatures": []}', "payload is not valid base64"),
    ('{"payload": "eA==", "payloadType": "t", "signatures": [{"keyid": "k"}]}', "malformed signature"),
])
def test_malformed_envelopes_name_the_problem(text, message):
    with pytest.raises(signing.EnvelopeError, match=message):
        signing.parse_envelope(text)


def test_add_signature_keeps_other_signers_and_replaces_its_own(key):
    other = ed25519.Ed25519PrivateKey.generate()
    envelope = signing.make_envelope(b"p", other)
    signed = signing.add_signature(signing.add_signature(envelope, key), key)
    assert [s["keyid"] for s in signed["signatures"]] == [signing.keyid(other.public_key()),
                                                          signing.keyid(key.public_key())]
    for k in (key, other):
        signing.verify_envelope(signed, k.public_key())


def test_keygen_writes_a_private_0600_and_a_public_key(tmp_path):
    path = tmp_path / "k.pem"
    public, keyid = signing.generate_keypair(path, root=tmp_path / "checkout")
    assert public == tmp_path / "k.pem.pub"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    private = signing.load_private_key(str(path), root=tmp_path / "checkout")
    assert signing.keyid(signing.load_public_key(public)) == keyid == signing.keyid(private.public_key())
    assert b"PRIVATE" not in public.read_bytes()
    with pytest.raises(UserError, match="exists; not overwriting"):
        signing.generate_keypair(path, root=tmp_path / "checkout")
    assert signing.load_public_key(public)  # the pair is untouched


def test_keys_are_refused_where_containers_or_releases_would_see_them(tmp_path):
    root = tmp_path / "checkout"
    for top in ("wasmforge", "rust_app", "dist"):
        (root / top).mkdir(parents=True)
        with pytest.raises(UserError, match=f"inside {top}/"):
            signing.generate_keypair(root / top / "k.pem", root=root)
        assert not (root / top / "k.pem").exists()
    signing.generate_keypair(tmp_path / "k.pem", root=root)
    (root / "dist" / "k.pem").write_bytes((tmp_path / "k.pem").read_bytes())
    with pytest.raises(UserError, match="inside dist/"):
        signing.load_private_key(str(root / "dist" / "k.pem"), root=root)


def _pem(private):
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def test_bad_keys_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(signing.PASSPHRASE_ENV, raising=False)
    (tmp_path / "junk.pem").write_text("not a key\n")
    (tmp_path / "ec.pem").write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    encrypted = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"))
    (tmp_path / "enc.pem").write_bytes(encrypted)
    cases = {"missing.pem": "cannot read the signing key", "junk.pem": "not a readable PEM private key",
             "ec.pem": "not an Ed25519 key", "enc.pem": "is encrypted: set WASMFORGE_SIGNING_KEY_PASSPHRASE"}
    for name, message in cases.items():
        with pytest.raises(UserError, match=message):
            signing.load_private_key(str(tmp_path / name), root=tmp_path / "checkout")
    monkeypatch.setenv(signing.PASSPHRASE_ENV, "secret")
    assert signing.load_private_key(str(tmp_path / "enc.pem"), root=tmp_path / "checkout")
    with pytest.raises(UserError, match="not a readable PEM public key"):
        signing.load_public_key(tmp_path / "junk.pem")


def test_the_key_may_be_the_pem_text_of_the_environment_variable(key):
    pem = _pem(key).decode()
    assert signing.signing_key_source(None, {signing.KEY_ENV: pem}) == pem
    assert signing.signing_key_source("/a/path", {signing.KEY_ENV: pem}) == "/a/path"  # the option wins
    assert signing.signing_key_source(None, {}) is None
    loaded = signing.load_private_key(pem)
    assert signing.keyid(loaded.public_key()) == signing.keyid(key.public_key())


def test_the_active_key_is_scoped(key):
    assert signing.active_key() is None
    with signing.using(key):
        assert signing.active_key() is key
    assert signing.active_key() is None


def test_the_key_variable_never_reaches_a_container(monkeypatch, tmp_path, key):
    """Containers get an explicit environment, never the host's: $WASMFORGE_SIGNING_KEY
    (which may hold the PEM text) stays in the host process."""
    from wasmforge import smoke_host

    monkeypatch.setenv(signing.KEY_ENV, _pem(key).decode())
    settings = smoke_host.container_settings(tmp_path)
    assert signing.KEY_ENV not in settings["environment"]
    assert "PRIVATE KEY" not in json.dumps(settings, default=str)
