"""Ed25519 keys and DSSE envelopes: how provenance is signed and checked.

An envelope is the DSSE v1 JSON envelope (`payload`, `payloadType`,
`signatures: [{keyid, sig}]`); each signature is Ed25519 over
PAE(payloadType, payload) as the DSSE protocol defines it. The `keyid` is the
hex SHA-256 of the public key's DER SubjectPublicKeyInfo: a hint for choosing
a key, never trusted for a decision.

Keys are PEM files: the private key PKCS#8, the public key SubjectPublicKeyInfo
(what `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` write).
The private key is read by the host process only, is never mounted into a
container and never written anywhere but by `generate_keypair`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import hashlib
import json
import os
from pathlib import Path

from .errors import UserError

PAYLOAD_TYPE = "application/vnd.in-toto+json"
# Either a path to a PEM file or the PEM text itself (a CI secret).
KEY_ENV = "WASMFORGE_SIGNING_KEY"
PASSPHRASE_ENV = "WASMFORGE_SIGNING_KEY_PASSPHRASE"


# `write_attestations(signing_key=ACTIVE)`: the key of the enclosing `using` block.
ACTIVE = object()
_active: contextvars.ContextVar = contextvars.ContextVar("wasmforge_signing_key", default=None)


class EnvelopeError(Exception):
    """The envelope is malformed, or no signature verifies with the given key."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what is actually signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


# --- keys ------------------------------------------------------------------------

def keyid(public_key) -> str:
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _read_pem(source: str, what: str) -> tuple[bytes, str]:
    """(PEM bytes, how to name the source in messages) of a path or inline PEM text."""
    if "-----BEGIN" in source:
        return source.encode(), f"${KEY_ENV}"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise UserError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def exposed_place(path: Path, root: Path | None = None) -> str | None:
    """Where a private key at `path` would not stay private: a directory that build,
    tune or smoke containers see (wasmforge/, rust_app/) or that is published (dist/)."""
    if root is None:
        from .paths import ROOT as root
    resolved = path.expanduser().resolve()
    for top in ("wasmforge", "rust_app", "dist"):
        place = (root / top).resolve()
        if resolved == place or place in resolved.parents:
            return f"{top}/"
    return None


def load_private_key(source: str, root: Path | None = None):
    """An Ed25519 private key from a PEM/PKCS#8 file path or PEM text; UserError otherwise."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if "-----BEGIN" not in source and (place := exposed_place(Path(source), root)):
        raise UserError(f"the signing key {source} is inside {place}, which containers see or "
                        "releases publish; keep it outside the checkout")
    data, name = _read_pem(source, "signing key")
    passphrase = os.environ.get(PASSPHRASE_ENV)
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode() if passphrase else None)
    except TypeError:
        raise UserError(f"the signing key {name} is encrypted: set {PASSPHRASE_ENV}") from None
    except ValueError:
        raise UserError(f"the signing key {name} is not a readable PEM private key "
                        f"(or {PASSPHRASE_ENV} is wrong)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"the signing key {name} is not an Ed25519 key (make one with `invoke keygen`)")
    return key


def load_public_key(path: str | Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data, name = _read_pem(str(path), "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise UserError(f"the public key {name} is not a readable PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UserError(f"the public key {name} is not an Ed25519 key")
    return key


def signing_key_source(option: str | None, environ=os.environ) -> str | None:
    """`--signing-key PATH` if given, else $WASMFORGE_SIGNING_KEY, else None (unsigned)."""
    return option or environ.get(KEY_ENV) or None


def active_key():
    """The private key of the enclosing `using` block, or None."""
    return _active.get()


@contextlib.contextmanager
def using(private_key):
    """Make `private_key` the one attestations written in this block are signed with.

    `invoke build` loads the key (and fails on a bad one) before anything is
    built, then builds inside this block: the build code need not carry it."""
    token = _active.set(private_key)
    try:
        yield private_key
    finally:
        _active.reset(token)


def generate_keypair(private_path: Path, root: Path | None = None) -> tuple[Path, str]:
    """Write a new Ed25519 key pair: `private_path` (PKCS#8 PEM, mode 0600) and
    `<private_path>.pub` (SubjectPublicKeyInfo PEM). Refuses to overwrite either.
    Returns (public key path, keyid)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public_path = private_path.with_name(private_path.name + ".pub")
    if place := exposed_place(private_path, root):
        raise UserError(f"not writing a private key inside {place}, which containers see or releases "
                        "publish; choose a path outside the checkout")
    for path in (private_path, public_path):
        if path.exists():
            raise UserError(f"{path} exists; not overwriting a key")
    if not private_path.parent.is_dir():
        raise UserError(f"no such directory: {private_path.parent}")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        # O_EXCL: a file that appeared meanwhile is not overwritten; 0600 from the start.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private_pem)
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(public_pem)
    except OSError as exc:
        private_path.unlink(missing_ok=True)
        raise UserError(f"cannot write {exc.filename or private_path}: {exc.strerror or exc}") from None
    return public_path, keyid(key.public_key())


# --- envelopes -------------------------------------------------------------------

def make_envelope(payload: bytes, private_key=None, payload_type: str = PAYLOAD_TYPE) -> dict:
    """The JSON envelope of `payload`, signed with `private_key` (no signature without one)."""
    signatures = []
    if private_key is not None:
        signatures.append(signature_entry(payload, private_key, payload_type))
    return {"payload": base64.b64encode(payload).decode(), "payloadType": payload_type,
            "signatures": signatures}


def signature_entry(payload: bytes, private_key, payload_type: str = PAYLOAD_TYPE) -> dict:
    sig = private_key.sign(pae(payload_type, payload))
    return {"keyid": keyid(private_key.public_key()), "sig": base64.b64encode(sig).decode()}


def add_signature(envelope: dict, private_key) -> dict:
    """The envelope with a signature by `private_key` (replacing an older one by the same key)."""
    payload = decode_payload(envelope)
    entry = signature_entry(payload, private_key, envelope["payloadType"])
    others = [s for s in envelope.get("signatures", []) if s.get("keyid") != entry["keyid"]]
    return {**envelope, "signatures": [*others, entry]}


def parse_envelope(text: str | bytes) -> dict:
    """The envelope as a dict, its required fields checked; EnvelopeError otherwise."""
    try:
        envelope = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"the envelope is not valid JSON ({exc})") from None
    if not isinstance(envelope, dict):
        raise EnvelopeError("the envelope is not a JSON object")
    for key, kind in (("payload", str), ("payloadType", str), ("signatures", list)):
        if not isinstance(envelope.get(key), kind):
            raise EnvelopeError(f"the envelope has no valid {key!r}")
    for entry in envelope["signatures"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("sig"), str) \
                or not isinstance(entry.get("keyid", ""), str):
            raise EnvelopeError("the envelope has a malformed signature entry")
    decode_payload(envelope)
    return envelope


def _b64decode(text: str, what: str) -> bytes:
    # DSSE: verifiers accept standard and URL-safe base64 alike.
    try:
        return base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"the envelope's {what} is not valid base64") from None


def decode_payload(envelope: dict) -> bytes:
    return _b64decode(envelope["payload"], "payload")


def verify_envelope(envelope: dict, public_key) -> str:
    """Check that some signature of `envelope` verifies with `public_key` over its
    PAE; returns the key's keyid. EnvelopeError naming the problem otherwise."""
    from cryptography.exceptions import InvalidSignature

    wanted = keyid(public_key)
    if not envelope["signatures"]:
        raise EnvelopeError("the envelope is not signed")
    signed_pae = pae(envelope["payloadType"], decode_payload(envelope))
    for entry in envelope["signatures"]:
        try:
            public_key.verify(_b64decode(entry["sig"], "signature"), signed_pae)
            return wanted
        except InvalidSignature:
            continue
    ids = ", ".join(sorted({e.get("keyid") or "(none)" for e in envelope["signatures"]}))
    raise EnvelopeError(f"no signature verifies with the public key {wanted[:16]}... "
                        f"(the envelope names keyid {ids}): wrong key, or the envelope was changed")
