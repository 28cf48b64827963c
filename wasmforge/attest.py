"""Release metadata beside an artifact: `dist/<name>.attestations/`.

`dist/<name>/` is bit-for-bit reproducible, so whatever names one particular
build (image ids, times, the host) goes into this sibling directory instead:

- `sbom.cdx.json`: a CycloneDX 1.6 SBOM whose metadata component is the
  `.wasm`. Components with scope `required` went into it (the ONNX model whose
  weights it embeds, the crates of rust_app/Cargo.lock); those with scope
  `excluded` are the build environment (the builder image's Debian packages and
  its hash-locked Python packages).
- `provenance.intoto.jsonl`: one DSSE envelope (payloadType
  application/vnd.in-toto+json) around an in-toto Statement v1 with a SLSA
  provenance v1 predicate, signed with Ed25519 when a key is given
  (`--signing-key PATH` or $WASMFORGE_SIGNING_KEY; see `signing`), else with
  an empty `signatures` list. Its subjects are the files of SHA256SUMS; it
  names the source (canonical remote URL, commit and tree; never a local path),
  the model's sha256, the builder and base images and the command (paths made
  relative to the checkout or replaced by the file's sha256), and lists the
  SBOM as a byproduct. No hostname: the builder id is the CI workflow when
  there is one, else a constant.

Both are built with their formats' own libraries (cyclonedx-python-lib, the
in-toto attestation bindings) and validated before anything is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tomllib
import uuid
from datetime import UTC, datetime
from pathlib import Path

from cyclonedx.model import (
    ExternalReference,
    ExternalReferenceType,
    HashAlgorithm,
    HashType,
    Property,
    XsUri,
)
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentScope, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.v1.statement import Statement
from packageurl import PackageURL

from . import __version__, artifact, checkout, images, signing
from .hashing import sha256_file
from .paths import CACHE, ROOT
from .provenance import PROVENANCE_NAME, attestations_dir, read_subjects  # noqa: F401 (re-exported)

SBOM_NAME = "sbom.cdx.json"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
# A URN, not a URL: wasmforge has no web home to own a URL under, and SLSA
# only asks for a collision-resistant URI. The fields are documented above.
BUILD_TYPE = "urn:wasmforge:buildtype:docker-builder:v1"
# The builder outside CI: no hostname (issue 12), the same on every machine.
LOCAL_BUILDER_ID = "urn:wasmforge:builder:local-docker"
DPKG_FORMAT = r"${Package}\t${Version}\t${Architecture}\n"


def write_attestations(final_dir: Path, *, client, builder_image, command: list[str],
                       started: datetime, finished: datetime, root: Path = ROOT,
                       signing_key=signing.ACTIVE) -> Path:
    """Write `<final_dir>.attestations/` for a published artifact and return it.

    `command` is the invocation as typed (see `command_line`); `started` and
    `finished` are timezone-aware. The provenance is signed with `signing_key`,
    by default the key `signing.using` made active (or None: unsigned). Written
    to a staging directory and renamed into place, like the artifact itself.
    """
    if signing_key is signing.ACTIVE:
        signing_key = signing.active_key()
    artifact.verify_sums(final_dir)  # never attest bytes that don't match their sums
    manifest = artifact.load_manifest(final_dir)
    invocation = uuid.uuid4()  # shared by the SBOM serial number and the provenance
    target = attestations_dir(final_dir)
    staging = artifact.staging_dir(final_dir.parent, target.name)
    try:
        bom = build_sbom(final_dir, manifest, debian_packages(client, builder_image),
                         timestamp=finished, serial=invocation, root=root)
        (staging / SBOM_NAME).write_text(bom)
        statement = build_provenance(
            final_dir, manifest, client=client, builder_image=builder_image, command=command,
            started=started, finished=finished, invocation=str(invocation),
            sbom_sha256=sha256_file(staging / SBOM_NAME), root=root)
        payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
        envelope = signing.make_envelope(payload, signing_key)
        (staging / PROVENANCE_NAME).write_text(json.dumps(envelope, sort_keys=True) + "\n")
        artifact.publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        # Statements about the previous build's bytes must not stay beside the new ones.
        if target.exists() and read_subjects(target) != artifact.read_sums(final_dir):
            shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def command_line(argv: list[str] | None = None, root: Path = ROOT, cwd: Path | None = None) -> list[str]:
    """The command as typed, e.g. ["invoke", "build", "--model", "x"], without host
    paths: the program's name only; a path inside the checkout relative to it, a
    file outside it as `sha256:<hex>` of its bytes (`checkout.relative_argument`)."""
    argv = sys.argv if argv is None else argv
    return [Path(argv[0]).name, *(checkout.relative_argument(a, root, cwd) for a in argv[1:])]


def builder_id(environ=os.environ) -> str:
    """The workflow that ran the build under GitHub Actions, else a constant (never the hostname)."""
    server, workflow = environ.get("GITHUB_SERVER_URL"), environ.get("GITHUB_WORKFLOW_REF")
    if environ.get("GITHUB_ACTIONS") == "true" and server and workflow:
        return f"{server}/{workflow}"
    return LOCAL_BUILDER_ID


# --- SBOM ----------------------------------------------------------------------

def build_sbom(final_dir: Path, manifest: artifact.Manifest, debs: list[tuple[str, str, str]], *,
               timestamp: datetime, serial: uuid.UUID, root: Path = ROOT) -> str:
    """The CycloneDX JSON text; raises ValueError if the library's schema validator rejects it."""
    pins = images.load_pins()
    wasm = Component(
        type=ComponentType.APPLICATION, name=manifest.wasm, bom_ref="wasm",
        hashes=[_sha256(sha256_file(final_dir / manifest.wasm))],
        description=f"WASI command built by wasmforge from {_model_name(manifest)}")
    model = Component(
        type=ComponentType.MACHINE_LEARNING_MODEL, name=_model_name(manifest), bom_ref="model",
        scope=ComponentScope.REQUIRED, hashes=[_sha256(manifest.source.sha256)],
        description=_weights_description(manifest))
    crates, edges = cargo_components(root / "rust_app" / "Cargo.lock")
    build_env = [*python_components(root / pins["builder"]["requirements"]),
                 *debian_components(debs, pins["base"]["suite"])]
    bom = Bom(components=[model, *crates.values(), *build_env], serial_number=serial,
              metadata=BomMetaData(
                  component=wasm, timestamp=timestamp,
                  properties=[Property(name="wasmforge:builder-recipe",
                                       value=images.recipe_digest("builder", pins, root))]))
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="wasmforge", version=__version__))
    # The .wasm is the model command crate (linked with its dependencies) plus the model.
    bom.register_dependency(wasm, [model, *(c for c in crates.values() if c.name == "wasmforge-model")])
    for key, deps in edges.items():
        bom.register_dependency(crates[key], [crates[d] for d in deps])
    text = JsonV1Dot6(bom).output_as_string(indent=2)
    if error := JsonStrictValidator(SchemaVersion.V1_6).validate_str(text):
        raise ValueError(f"SBOM fails the CycloneDX 1.6 schema: {error}")
    return text + "\n"


def _weights_description(manifest: artifact.Manifest) -> str:
    params = manifest.params
    if params is not None:
        return (f"the ONNX model; its weights are in {params.file} beside the .wasm "
                f"(sha256 {params.sha256}), which checks them before use")
    return "the ONNX model; its weights are embedded in the .wasm"


def python_components(lock: Path) -> list[Component]:
    """The builder venv's packages: exact versions from the hash-locked requirements file.

    The lock allows several wheels per package (one per platform) and does not
    say which one pip took, so the hashes go on a distribution reference, as
    cyclonedx-bom does for requirements files, not on the component itself.
    """
    components = []
    text = lock.read_text().replace("\\\n", " ")  # join the `\` continuations
    for line in text.splitlines():
        if not (m := re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)", line)):
            continue
        name = re.sub(r"[-_.]+", "-", m[1]).lower()
        purl = PackageURL(type="pypi", name=name, version=m[2])
        wheels = ExternalReference(
            type=ExternalReferenceType.DISTRIBUTION, url=XsUri(purl.to_string()),
            comment=f"the wheels {lock.name} allows (pip --require-hashes)",
            hashes=[_sha256(h) for h in re.findall(r"--hash=sha256:([0-9a-f]{64})", line)])
        components.append(_env_component(name, m[2], purl, "python", external_references=[wheels]))
    return components


def debian_components(debs: list[tuple[str, str, str]], suite: str) -> list[Component]:
    return [_env_component(name, version, PackageURL(type="deb", namespace="debian", name=name, version=version,
                                                     qualifiers={"arch": arch, "distro": suite}), "debian")
            for name, version, arch in debs]


def cargo_components(lock: Path) -> tuple[dict[str, Component], dict[str, list[str]]]:
    """The crates of a Cargo.lock and their dependency edges, keyed "name version".

    Registry crates carry their .crate checksum; a crate without `source` is a
    path crate of this workspace.
    """
    packages = tomllib.loads(lock.read_text())["package"]
    crates, by_name = {}, {}
    for pkg in packages:
        purl = PackageURL(type="cargo", name=pkg["name"], version=pkg["version"])
        crates[f"{pkg['name']} {pkg['version']}"] = by_name[pkg["name"]] = Component(
            type=ComponentType.LIBRARY, name=pkg["name"], version=pkg["version"], purl=purl,
            bom_ref=purl.to_string(), scope=ComponentScope.REQUIRED,
            hashes=[_sha256(pkg["checksum"])] if "checksum" in pkg else [],
            properties=[Property(name="wasmforge:cargo-source",
                                 value=pkg.get("source", f"workspace: {lock.parent.name}/"))])
    # A dependency is "name" when only one version is locked, else "name version [(source)]".
    key = {name: f"{c.name} {c.version}" for name, c in by_name.items()}
    edges = {f"{p['name']} {p['version']}": [" ".join(d.split(" ")[:2]) if " " in d else key[d]
                                            for d in p.get("dependencies", [])] for p in packages}
    return crates, edges


def _env_component(name, version, purl: PackageURL, origin: str, **kwargs) -> Component:
    # `excluded`: used to build the .wasm, not part of it.
    return Component(type=ComponentType.LIBRARY, name=name, version=version, purl=purl,
                     bom_ref=purl.to_string(), scope=ComponentScope.EXCLUDED,
                     properties=[Property(name="wasmforge:role", value=f"builder-image {origin} package")],
                     **kwargs)


def _sha256(hexdigest: str) -> HashType:
    return HashType(alg=HashAlgorithm.SHA_256, content=hexdigest)


def _model_name(manifest: artifact.Manifest) -> str:
    return manifest.source.label or manifest.name


# --- Debian packages in the builder image ------------------------------------------

def debian_packages(client, image) -> list[tuple[str, str, str]]:
    """(package, version, architecture) installed in `image`, cached per image id:
    an image's content never changes under its id, and a container start takes seconds."""
    cache = CACHE / "attest"
    path = cache / f"dpkg-{image.id.split(':')[-1]}.tsv"
    if not path.is_file():
        from .container import Container, listing_profile

        with Container(client, image.id, ["dpkg-query", "-W", "-f", DPKG_FORMAT],
                       profile=listing_profile(), title="dpkg-query") as container:
            out = container.output()
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(out)
        os.replace(tmp, path)  # a concurrent build sees the whole list or none
    return sorted(tuple(line.split("\t")) for line in path.read_text().splitlines() if line.count("\t") == 2)


# --- provenance ------------------------------------------------------------------

def build_provenance(final_dir: Path, manifest: artifact.Manifest, *, client, builder_image, command: list[str],
                     started: datetime, finished: datetime, invocation: str, sbom_sha256: str,
                     root: Path = ROOT) -> dict:
    """The in-toto Statement as a JSON-ready dict; raises ValueError if the bindings reject it."""
    pins = images.load_pins()
    source = checkout.state(root)
    base_name = (builder_image.labels or {}).get("org.opencontainers.image.base.name", images.base_tag(pins))
    base = client.images.get(base_name)
    predicate = provenance_pb2.Provenance()
    definition = predicate.build_definition
    definition.build_type = BUILD_TYPE
    definition.external_parameters.update(
        {"name": manifest.name, "source": manifest.source.to_dict(), "command": command})
    definition.internal_parameters.update(
        {"wasmforge": __version__, "builderRecipe": images.recipe_digest("builder", pins, root)})
    definition.resolved_dependencies.extend(rd.pb for rd in [
        source_descriptor(source, root),
        ResourceDescriptor(name=_model_name(manifest), digest={"sha256": manifest.source.sha256}),
        _image_descriptor("builder image", builder_image),
        _image_descriptor("base image", base, name=base_name),
    ])
    run = predicate.run_details
    run.builder.id = builder_id()
    run.builder.version.update({"wasmforge": __version__, "docker": client.version().get("Version", "")})
    run.metadata.invocation_id = invocation
    run.metadata.started_on.FromDatetime(started.astimezone(UTC))
    run.metadata.finished_on.FromDatetime(finished.astimezone(UTC))
    run.byproducts.append(ResourceDescriptor(name=SBOM_NAME, digest={"sha256": sbom_sha256},
                                             media_type="application/vnd.cyclonedx+json").pb)
    subjects = [ResourceDescriptor(name=name, digest={"sha256": digest}).pb
                for name, digest in artifact.read_sums(final_dir).items()]
    statement = Statement(subjects, SLSA_PROVENANCE, json_format.MessageToDict(predicate))
    statement.validate()
    return json_format.MessageToDict(statement.pb)


def _image_descriptor(role: str, image, name: str | None = None) -> ResourceDescriptor:
    # An image id is the sha256 of its config, so it is a digest in the in-toto sense.
    tags = sorted(image.tags or [])
    return ResourceDescriptor(
        name=name or (tags[0] if tags else role), digest={"sha256": image.id.split(":")[-1]},
        annotations={"role": role, "imageId": image.id, "repoDigests": image.attrs.get("RepoDigests") or [],
                     "layers": image.attrs.get("RootFS", {}).get("Layers", [])})


def source_descriptor(source: checkout.SourceState, root: Path = ROOT) -> ResourceDescriptor:
    """The checkout: `git+<canonical remote>` when there is one (never a local path),
    and always its content: commit and tree, or, outside git, a digest of the files."""
    if source.commit:
        digest = {"gitCommit": source.commit, "gitTree": source.tree}
    else:
        digest = {"sha256": files_digest(root)}
    return ResourceDescriptor(name="source", uri=f"git+{source.remote}" if source.remote else "",
                              digest=digest, annotations={"dirty": source.dirty})


SOURCE_FILES = ("wasmforge", "rust_app", "docker", "requirements", "models", "pyproject.toml", "tasks.py", "Makefile")


def files_digest(root: Path = ROOT) -> str:
    """sha256 over the sorted (relative path, sha256) of the source files (no git checkout)."""
    import hashlib

    lines = []
    for top in SOURCE_FILES:
        base = root / top
        paths = [base] if base.is_file() else sorted(base.rglob("*")) if base.is_dir() else []
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts and "target" not in path.relative_to(root).parts:
                lines.append(f"{sha256_file(path)}  {path.relative_to(root).as_posix()}\n")
    return hashlib.sha256("".join(sorted(lines, key=lambda ln: ln[66:])).encode()).hexdigest()
