"""The provenance every consumer checks, `invoke verify --provenance` and `invoke sign`,
on fake artifacts attested with the real attest code (no Docker)."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.cli import invoke
from tests.manifests import seal
from tests.test_attest import BUILDER, COMMAND, FINISHED, STARTED, FakeClient, make_artifact
from wasmforge import artifact, attest, checkout, provenance, signing, smoke
from wasmforge.paths import ROOT
from wasmforge.verify import verify_provenance


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(attest, "CACHE", tmp_path / "cache")


@pytest.fixture
def keys(tmp_path):
    """(private key, its public key file, another public key file)."""
    private = ed25519.Ed25519PrivateKey.generate()
    paths = []
    for name, key in (("pub.pem", private), ("other.pem", ed25519.Ed25519PrivateKey.generate())):
        (tmp_path / name).write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        paths.append(str(tmp_path / name))
    return private, *paths


@pytest.fixture
def dist(tmp_path, keys):
    """dist/m/ and dist/m.attestations/, signed with keys[0]."""
    final = make_artifact(tmp_path / "dist" / "m")
    attest.write_attestations(final, client=FakeClient(), builder_image=BUILDER, command=COMMAND,
                              started=STARTED, finished=FINISHED, signing_key=keys[0])
    return tmp_path / "dist"


def rewrite_consistently(final):
    """An attacker's new .wasm with a matching manifest and SHA256SUMS."""
    (final / "m.wasm").write_bytes(b"\0asm\1\0\0\0 evil")
    seal(final)


def envelope_path(dist):
    return dist / "m.attestations" / provenance.PROVENANCE_NAME


def test_a_fresh_signed_build_passes(dist, keys):
    lines = verify_provenance("m", dist, public_key=keys[1])
    assert lines[0].startswith(f"ok: signature verified with {keys[1]} (keyid ")
    assert lines[1] == "ok: the 3 attested files are exactly the files of dist/m/ and SHA256SUMS"
    assert lines[2].startswith("ok: source commit ")


def test_a_consistent_rewrite_of_sums_manifest_and_wasm_is_caught_everywhere(dist, keys):
    final = dist / "m"
    rewrite_consistently(final)
    artifact.verify_sums(final)  # SHA256SUMS alone no longer notices
    with pytest.raises(provenance.ProvenanceError, match=r"m.wasm has sha256 [0-9a-f]{64}, the provenance says [0-9a-f]{64}"):
        verify_provenance("m", dist, public_key=keys[1])
    with pytest.raises(provenance.ProvenanceError, match="manifest.json has sha256"):
        verify_provenance("m", dist)  # without a key too
    # Every consumer: run, bench and verify go through verify_artifact; so does the smoke runner.
    with pytest.raises(provenance.ProvenanceError, match="m does not match its provenance in m.attestations/"):
        artifact.verify_artifact(final)


def test_the_smoke_runner_refuses_a_consistently_rewritten_artifact(dist, capsys, monkeypatch):
    monkeypatch.setattr(smoke, "Model", None)  # calling it would fail the test
    rewrite_consistently(dist / "m")
    assert smoke.main([str(dist / "m")]) == smoke.EXIT_REFUSED
    assert "does not match its provenance" in capsys.readouterr().err


def test_an_added_or_removed_file_is_caught(dist):
    final = dist / "m"
    (final / "extra.bin").write_bytes(b"x")
    seal(final)
    with pytest.raises(provenance.ProvenanceError, match="extra.bin is not attested"):
        artifact.verify_artifact(final)
    (final / "extra.bin").unlink()
    (final / "reference" / "case0" / "input0.npy").unlink()
    seal(final)
    with pytest.raises(provenance.ProvenanceError, match="reference/case0/input0.npy is attested but missing"):
        artifact.verify_artifact(final)


def test_every_flipped_byte_of_the_envelope_is_caught(dist, keys):
    path = envelope_path(dist)
    original = path.read_bytes()
    # JSON syntax, the payloadType, the base64 payload (start, middle, end), the signature.
    text = original.decode()
    positions = [0, text.index('"payloadType"') + 16, text.index('"payload"') + 12,
                 text.index('"payload"') + len(text) // 3, text.index('"payloadType"') - 8,
                 text.index('"sig"') + 10, text.index('"sig"') + 40]
    payload = positions[2:4]
    for position in positions:
        flipped = bytearray(original)
        flipped[position] ^= 0x01
        path.write_bytes(bytes(flipped))
        with pytest.raises(provenance.ProvenanceError, match=provenance.PROVENANCE_NAME) as caught:
            verify_provenance("m", dist, public_key=keys[1])
        if position in payload:  # the signature is checked before anything parses the payload
            assert "no signature verifies" in str(caught.value) or "not valid base64" in str(caught.value)
    path.write_bytes(original)
    verify_provenance("m", dist, public_key=keys[1])


def test_a_wrong_public_key_is_refused(dist, keys):
    with pytest.raises(provenance.ProvenanceError, match="no signature verifies with the public key"):
        verify_provenance("m", dist, public_key=keys[2])


def test_unsigned_provenance_passes_without_a_key_and_fails_with_one(tmp_path, keys):
    final = make_artifact(tmp_path / "dist" / "m")
    attest.write_attestations(final, client=FakeClient(), builder_image=BUILDER, command=COMMAND,
                              started=STARTED, finished=FINISHED, signing_key=None)
    assert verify_provenance("m", tmp_path / "dist")[0].startswith("note: the provenance is unsigned")
    with pytest.raises(provenance.ProvenanceError, match="the envelope is not signed"):
        verify_provenance("m", tmp_path / "dist", public_key=keys[1])


def test_missing_or_legacy_provenance(dist):
    final = dist / "m"
    envelope = json.loads(envelope_path(dist).read_text())
    statement = base64.b64decode(envelope["payload"])
    envelope_path(dist).unlink()
    with pytest.raises(provenance.ProvenanceError, match=r"m.attestations/provenance.intoto.jsonl is missing"):
        artifact.verify_artifact(final)  # the directory exists: the statement must too
    # A bare statement from before DSSE: consumers still compare it, verify wants a rebuild.
    (dist / "m.attestations" / provenance.LEGACY_NAME).write_bytes(statement)
    artifact.verify_artifact(final)
    with pytest.raises(provenance.ProvenanceError, match="older wasmforge, not a DSSE envelope"):
        verify_provenance("m", dist)
    (dist / "m.attestations").rename(dist / "gone")
    assert provenance.check_artifact(final) is False  # no attestations at all: nothing to compare
    with pytest.raises(provenance.ProvenanceError, match="m has no provenance: m.attestations/ is missing"):
        verify_provenance("m", dist)


def test_the_source_commit_is_checked_against_the_checkout(dist, keys, monkeypatch):
    statement = provenance.read_statement(dist / "m.attestations")[0]
    here = checkout.state(ROOT)
    for dep in statement["predicate"]["buildDefinition"]["resolvedDependencies"]:
        if dep["name"] == "source":
            assert dep["digest"] == {"gitCommit": here.commit, "gitTree": here.tree}
    # Signed provenance naming a commit this checkout does not have.
    private = keys[0]
    source = next(d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
                  if d["name"] == "source")
    source["digest"]["gitCommit"] = "1" * 40
    payload = json.dumps(statement).encode()
    envelope_path(dist).write_text(json.dumps(signing.make_envelope(payload, private)))
    with pytest.raises(provenance.ProvenanceError, match=f"source commit {'1' * 40} is not in this checkout"):
        verify_provenance("m", dist, public_key=keys[1])
    source["digest"].update(gitCommit=here.commit, gitTree="2" * 40)
    envelope_path(dist).write_text(json.dumps(signing.make_envelope(json.dumps(statement).encode(), private)))
    with pytest.raises(provenance.ProvenanceError, match="the provenance says 222222222222"):
        verify_provenance("m", dist, public_key=keys[1])


def test_sign_adds_a_signature_after_checking_the_files(tmp_path, keys):
    final = make_artifact(tmp_path / "dist" / "m")
    attest.write_attestations(final, client=FakeClient(), builder_image=BUILDER, command=COMMAND,
                              started=STARTED, finished=FINISHED, signing_key=None)
    path = envelope_path(tmp_path / "dist")
    payload = json.loads(path.read_text())["payload"]
    provenance.sign(final, keys[0])
    assert json.loads(path.read_text())["payload"] == payload  # the statement is unchanged
    verify_provenance("m", tmp_path / "dist", public_key=keys[1])
    rewrite_consistently(final)
    before = path.read_bytes()
    with pytest.raises(provenance.ProvenanceError, match="does not match its provenance"):
        provenance.sign(final, keys[0])
    assert path.read_bytes() == before


def test_no_private_key_hostname_or_host_path_in_the_attestations(tmp_path, keys, monkeypatch):
    private = keys[0]
    onnx = tmp_path / "outside" / "net.onnx"
    onnx.parent.mkdir()
    onnx.write_bytes(b"onnx bytes")
    real_git = checkout.git

    def local_origin(root, *args):  # a checkout cloned from a directory on this host
        return str(tmp_path / "upstream.git") if args[:2] == ("remote", "get-url") else real_git(root, *args)

    monkeypatch.setattr(checkout, "git", local_origin)
    command = attest.command_line(["/home/me/.venv/bin/invoke", "build", "--onnx", str(onnx), "--name", "n"])
    final = make_artifact(tmp_path / "dist" / "m")
    out = attest.write_attestations(final, client=FakeClient(), builder_image=BUILDER, command=command,
                                    started=STARTED, finished=FINISHED, signing_key=private)
    envelope = json.loads((out / provenance.PROVENANCE_NAME).read_text())
    statement_text = base64.b64decode(envelope["payload"]).decode()
    everything = statement_text + "".join(p.read_text() for p in out.iterdir())
    for secret in (private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode(),
                   base64.b64encode(private.private_bytes(serialization.Encoding.Raw,
                                                          serialization.PrivateFormat.Raw,
                                                          serialization.NoEncryption())).decode()):
        assert secret not in everything
    assert str(tmp_path) not in everything and "/home/me" not in everything
    assert socket.gethostname() not in statement_text
    statement = json.loads(statement_text)
    definition = statement["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["command"] == [
        "invoke", "build", "--onnx", "sha256:" + artifact.sha256_file(onnx), "--name", "n"]
    source = next(d for d in definition["resolvedDependencies"] if d["name"] == "source")
    assert "uri" not in source and set(source["digest"]) == {"gitCommit", "gitTree"}
    assert statement["predicate"]["runDetails"]["builder"]["id"] in (
        attest.LOCAL_BUILDER_ID, attest.builder_id())


def test_builder_id_names_the_workflow_under_github_actions():
    env = {"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com",
           "GITHUB_WORKFLOW_REF": "o/r/.github/workflows/release.yml@refs/tags/v1"}
    assert attest.builder_id(env) == "https://github.com/o/r/.github/workflows/release.yml@refs/tags/v1"
    assert attest.builder_id({}) == attest.LOCAL_BUILDER_ID


def test_a_remote_origin_is_recorded_without_credentials(tmp_path, monkeypatch):
    real_git = checkout.git
    monkeypatch.setattr(checkout, "git", lambda root, *args: "https://bot:s3cret@github.com/o/wasmforge.git"
                        if args[:2] == ("remote", "get-url") else real_git(root, *args))
    out = attest.write_attestations(make_artifact(tmp_path / "dist" / "m"), client=FakeClient(),
                                    builder_image=BUILDER, command=COMMAND, started=STARTED,
                                    finished=FINISHED, signing_key=None)
    statement = provenance.read_statement(out)[0]
    source = next(d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]
                  if d["name"] == "source")
    assert source["uri"] == "git+https://github.com/o/wasmforge.git"
    assert "s3cret" not in (out / provenance.PROVENANCE_NAME).read_text()


# --- the tasks --------------------------------------------------------------------

@pytest.fixture
def tasks_use(monkeypatch):
    """Point the tasks' dist/ at a test directory."""
    from wasmforge import run, verify

    def use(dist):
        monkeypatch.setattr(verify, "artifact_dir", lambda model, _=None: run.artifact_dir(model, dist))
        monkeypatch.setattr("wasmforge.paths.DIST", dist)

    return use


def test_verify_task_with_provenance(dist, keys, tasks_use):
    tasks_use(dist)
    code, out, err = invoke("verify", "--model", "m", "--public-key", keys[1])
    assert code == 0, err
    assert out.splitlines()[0] == "ok: 3 files match SHA256SUMS and the manifest"
    assert "ok: signature verified" in out
    code, out, err = invoke("verify", "--model", "m", "--public-key", keys[2])
    assert code == 1 and err.strip().splitlines()[-1].startswith(
        "error: m.attestations/provenance.intoto.jsonl: no signature verifies with the public key")
    code, _, err = invoke("verify", "--model", "m", "--public-key", str(dist / "nope.pem"))
    assert code == 2 and err.strip() == f"error: cannot read the public key {dist / 'nope.pem'}: No such file or directory"


def test_keygen_and_sign_tasks(tmp_path, dist, tasks_use):
    tasks_use(dist)
    key = tmp_path / "keys" / "k.pem"
    key.parent.mkdir()
    code, out, err = invoke("keygen", "--out", str(key))
    assert code == 0 and "public key:" in out, err
    code, out, err = invoke("sign", "--model", "m", "--signing-key", str(key))
    assert code == 0 and out.startswith("signed: m.attestations/"), err
    verify_provenance("m", dist, public_key=str(key) + ".pub")
    code, _, err = invoke("sign", "--model", "m", env={signing.KEY_ENV: ""})
    assert code == 2 and err.strip() == "error: no key: pass --signing-key PATH or set $WASMFORGE_SIGNING_KEY"
    code, _, err = invoke("keygen", "--out", str(key))
    assert code == 2 and err.strip() == f"error: {key} exists; not overwriting a key"


def test_build_loads_the_key_before_building_and_warns_without_one(tmp_path):
    """A bad key fails at once (before any heavy import); no key: one warning line."""
    script = ("import json, sys\nfrom wasmforge.cli import program\n"
              "try:\n    program.run(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
              "print(json.dumps([code, 'wasmforge.build' in sys.modules]))")
    (tmp_path / "junk.pem").write_text("junk")
    proc = subprocess.run([sys.executable, "-c", script, "wasmforge", "build", "--model", "lenet-digits",
                           "--signing-key", str(tmp_path / "junk.pem")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    code, built = json.loads(proc.stdout.splitlines()[-1])
    assert code == 2 and not built
    assert proc.stderr.strip() == f"error: the signing key {tmp_path / 'junk.pem'} is not a readable PEM private key " \
                                  "(or WASMFORGE_SIGNING_KEY_PASSPHRASE is wrong)"


def test_reference_data_of_a_real_npy_is_attested(tmp_path):
    """The subjects are every file, whatever its kind (a real .npy here)."""
    final = tmp_path / "dist" / "m"
    make_artifact(final)
    np.save(final / "reference" / "case0" / "output0.npy", np.zeros(3, np.float32))
    seal(final)
    out = attest.write_attestations(final, client=FakeClient(), builder_image=BUILDER, command=COMMAND,
                                    started=STARTED, finished=FINISHED, signing_key=None)
    assert provenance.read_subjects(out) == artifact.read_sums(final)


def test_write_attestations_signs_with_the_active_key_as_invoke_build_does(tmp_path, keys):
    """`invoke build` loads the key, then builds inside `signing.using(key)`; build.py
    calls write_attestations without a key argument."""
    final = make_artifact(tmp_path / "dist" / "m")
    with signing.using(keys[0]):
        attest.write_attestations(final, client=FakeClient(), builder_image=BUILDER, command=COMMAND,
                                  started=STARTED, finished=FINISHED)
    assert verify_provenance("m", tmp_path / "dist", public_key=keys[1])[0].startswith("ok: signature verified")


def test_invoke_smoke_refuses_on_the_host_before_any_container(dist, monkeypatch):
    """The smoke container sees only dist/<name>/: `invoke smoke` (and so `make
    docker-test`) compares the attestations on the host first."""
    from wasmforge import smoke_host

    def no_container(*args, **kwargs):
        raise AssertionError("a smoke container was started for a rewritten artifact")

    monkeypatch.setattr(smoke_host.images, "docker_client", lambda: object())
    monkeypatch.setattr(smoke_host.images, "ensure_smoke", no_container)
    monkeypatch.setattr(smoke_host, "run_container", no_container)
    rewrite_consistently(dist / "m")
    with pytest.raises(provenance.ProvenanceError, match="m does not match its provenance"):
        smoke_host.smoke("m", dist=dist)


@pytest.mark.parametrize("predicate", [None, [], {"buildDefinition": 3}, {}])
def test_a_statement_without_a_build_definition_is_one_error(dist, keys, predicate):
    statement = provenance.read_statement(dist / "m.attestations")[0]
    statement["predicate"] = predicate
    envelope_path(dist).write_text(json.dumps(signing.make_envelope(json.dumps(statement).encode(), keys[0])))
    with pytest.raises(provenance.ProvenanceError, match="not a SLSA provenance with a build definition"):
        verify_provenance("m", dist, public_key=keys[1])
