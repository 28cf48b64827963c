"""The model registry: the committed models.toml, name checks and validation errors."""

import textwrap

import pytest

from wasmforge.errors import UserError
from wasmforge.registry import (
    FileSource,
    GeneratorSource,
    ModelSpec,
    TensorSpec,
    UrlSource,
    check_model_name,
    get_model,
    load_registry,
)

ZOO_RESNET50_URL = (
    "https://github.com/onnx/models/raw/main/validated/vision/classification/resnet/model/resnet50-v1-7.onnx"
)
# git-LFS oid of the zoo file (= model_sha in onnx/models' ONNX_HUB_MANIFEST.json).
ZOO_RESNET50_SHA256 = "af16a04a6ec48ac494065d4439fe9dea590d337b9ca6dc328160ccf04a217b9c"


def test_committed_registry_has_its_models():
    registry = load_registry()
    assert list(registry) == ["resnet50", "resnet50-synth", "lenet-digits", "mobilenetv2-7", "mobilenetv2-synth",
                              "squeezenet1.1-7", "squeezenet-synth", "bertsquad-12", "bert-synth", "minilm-synth"]
    for spec in registry.values():
        assert isinstance(spec, ModelSpec)
        assert spec.description and spec.preprocessing and spec.license and spec.provenance
        assert all("\n" not in text for text in (spec.description, spec.preprocessing, spec.provenance))


def test_resnet50_is_the_pinned_zoo_file():
    spec = get_model("resnet50")
    assert spec.source == UrlSource(ZOO_RESNET50_URL)
    assert spec.sha256 == ZOO_RESNET50_SHA256
    assert spec.size == 102583340
    assert spec.inputs == (TensorSpec("data", "float32", (1, 3, 224, 224)),)
    assert spec.outputs == (TensorSpec("resnetv17_dense0_fwd", "float32", (1, 1000)),)
    assert "0.485" in spec.preprocessing and "224" in spec.preprocessing


def test_resnet50_synth_matches_the_real_models_interface():
    real, synth = get_model("resnet50"), get_model("resnet50-synth")
    assert synth.source == GeneratorSource("wasmforge.generators.resnet50:build_model", (("seed", 0),))
    assert synth.source.kwargs() == {"seed": 0}
    assert (synth.inputs, synth.outputs) == (real.inputs, real.outputs)


# git-LFS oids of the zoo files in onnx/models b1eeaa1a (= model_sha/model_bytes in its
# ONNX_HUB_MANIFEST.json).
ZOO_PINS = {
    "mobilenetv2-7": ("vision/classification/mobilenet/model/mobilenetv2-7.onnx",
                      "c1c513582d56afceff8516c73804e484c81c6a830712ab6d682253f4a3cd042f", 14246826),
    "squeezenet1.1-7": ("vision/classification/squeezenet/model/squeezenet1.1-7.onnx",
                        "1eeff551a67ae8d565ca33b572fc4b66e3ef357b0eb2863bb9ff47a918cc4088", 4956208),
    "bertsquad-12": ("text/machine_comprehension/bert-squad/model/bertsquad-12.onnx",
                     "5f0d96a9e6b8a4a2e59f9636f8bbad09ee8a0c58c8212027cc17c5fcc9659e55", 435852736),
}


@pytest.mark.parametrize("name", sorted(ZOO_PINS))
def test_zoo_models_are_pinned_files(name):
    path, sha256, size = ZOO_PINS[name]
    spec = get_model(name)
    assert spec.source == UrlSource(f"https://github.com/onnx/models/raw/main/validated/{path}")
    assert (spec.sha256, spec.size) == (sha256, size)


@pytest.mark.parametrize("synth, entry", [
    ("mobilenetv2-synth", "wasmforge.generators.mobilenetv2:build_model"),
    ("squeezenet-synth", "wasmforge.generators.squeezenet:build_model"),
    ("bert-synth", "wasmforge.generators.bert:build_model"),
    ("minilm-synth", "wasmforge.generators.bert:build_minilm"),
])
def test_new_synthetic_models_are_seeded_generators(synth, entry):
    assert get_model(synth).source == GeneratorSource(entry, (("seed", 0),))


def test_lenet_digits_is_a_committed_file():
    spec = get_model("lenet-digits")
    assert spec.source == FileSource("models/lenet-digits/lenet-digits.onnx")
    assert spec.source.absolute().is_file()
    assert spec.inputs == (TensorSpec("input", "float32", (1, 1, 8, 8)),)
    assert spec.outputs == (TensorSpec("logits", "float32", (1, 10)),)
    assert "/ 16" in spec.preprocessing
    assert spec.accuracy is not None and spec.accuracy.value >= 0.95


def test_unknown_model_lists_known_names():
    with pytest.raises(UserError) as caught:
        get_model("resnet51")
    message = str(caught.value)
    assert message == ("unknown model 'resnet51' (did you mean resnet50?); known models: bert-synth, bertsquad-12, lenet-digits, "
                       "minilm-synth, mobilenetv2-7, mobilenetv2-synth, resnet50, resnet50-synth, squeezenet-synth, "
                       "squeezenet1.1-7")
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("name", ["resnet50", "lenet-digits", "a.b_c-1", "0", "x" * 64])
def test_valid_names_pass(name):
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "/", "a/b", "..", "a..b", "../etc", "Resnet", "-x", ".x", "_x", "a b", "a\n", "a\x00b",
     "a\\b", "x" * 65, "ré"],
)
def test_unsafe_names_are_refused_in_one_line(name):
    with pytest.raises(UserError) as caught:
        check_model_name(name)
    message = str(caught.value)
    assert message.startswith("invalid model name ")
    assert "\n" not in message and "\x00" not in message
    assert caught.value.exit_code == 2


def test_get_model_checks_the_name_before_lookup():
    with pytest.raises(UserError, match="invalid model name"):
        get_model("../../etc/passwd", registry={})


# --- validation of a registry file ----------------------------------------------------

GOOD_ENTRY = """
[[models]]
name = "tiny"
description = "A test model."
sha256 = "{sha}"
inputs = [{{ name = "x", dtype = "float32", shape = [1, 4] }}]
outputs = [{{ name = "y", dtype = "float32", shape = [1, 2] }}]
preprocessing = "none"
license = "test"
provenance = "test"
{extra}
[models.source]
{source}
"""


def write_registry(tmp_path, *, sha="0" * 64, extra="", source='kind = "file"\npath = "models/x.onnx"', more=""):
    path = tmp_path / "models.toml"
    path.write_text(GOOD_ENTRY.format(sha=sha, extra=extra, source=source) + more)
    return path


def load_error(path) -> str:
    with pytest.raises(UserError) as caught:
        load_registry(path)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_a_valid_file_loads(tmp_path):
    spec = load_registry(write_registry(tmp_path, extra="size = 10"))["tiny"]
    assert spec.size == 10 and spec.accuracy is None
    assert spec.source == FileSource("models/x.onnx")


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(sha="ABC"), "'sha256' must be 64 lowercase hex digits"),
        (dict(extra="colour = 'red'"), "unknown key(s): colour"),
        (dict(extra="size = -1"), "'size' must be a positive number of bytes"),
        (dict(extra="size = true"), "'size' must be an integer"),
        (dict(source='kind = "ftp"'), "'kind' must be url, file or generator"),
        (dict(source='kind = "url"\nurl = "file:///etc/passwd"'), "must be an http(s) URL"),
        (dict(source='kind = "file"\npath = "../outside.onnx"'), "without '..'"),
        (dict(source='kind = "file"\npath = "/abs.onnx"'), "without '..'"),
        (dict(source='kind = "generator"\nentry = "os:system"'), "'entry' must be 'wasmforge.generators."),
        (dict(source='kind = "url"'), "source: missing 'url'"),
        (dict(extra="accuracy = { value = 97.5, dataset = 'x' }"), "'value' must be a fraction"),
    ],
)
def test_invalid_entries_fail_with_one_line(tmp_path, kwargs, expected):
    message = load_error(write_registry(tmp_path, **kwargs))
    assert expected in message
    assert message.startswith("models.toml: model 'tiny'")


def test_bad_tensor_specs(tmp_path):
    path = write_registry(tmp_path)
    path.write_text(path.read_text().replace('dtype = "float32", shape = [1, 4]', 'dtype = "float33", shape = [1, 4]'))
    assert "'dtype' must be one of" in load_error(path)
    path.write_text(path.read_text().replace('dtype = "float33", shape = [1, 4]', 'dtype = "float32", shape = [1, -4]'))
    assert "'shape' must be a list of non-negative integers" in load_error(path)


def test_duplicate_and_bad_names(tmp_path):
    path = write_registry(tmp_path)
    path.write_text(path.read_text() * 2)
    assert "'tiny' is defined twice" in load_error(path)
    path = write_registry(tmp_path)
    path.write_text(path.read_text().replace('name = "tiny"', 'name = "../tiny"'))
    assert "invalid model name '../tiny'" in load_error(path)


def test_unreadable_registry_files(tmp_path):
    assert "not found" in load_error(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text(textwrap.dedent("""
        [[models]
        name = "x"
    """))
    assert load_error(broken).startswith("broken.toml: invalid TOML:")
