"""Unit tests of pruning.presets and the built-in YAML presets."""
import dataclasses
from importlib.resources import files

import pytest

from pruning.presets import Preset, PresetError, StageBudgets, builtin_presets, load_preset

REFERENCE = {
    "1_3": (1 / 3, 0.5, 0.18, (288, 253, 51)),
    "2_9": (2 / 9, 0.4, 0.15, (230, 165, 33)),
    "1_9": (1 / 9, 0.3, 0.12, (172, 77, 15)),
}


def test_builtin_names():
    assert builtin_presets() == ["1_3", "1_9", "2_9", "none"]
    on_disk = sorted(p.name for p in files("presets").iterdir() if p.name.endswith(".yaml"))
    assert on_disk == [f"{n}.yaml" for n in builtin_presets()]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_presets(name):
    ratio, keep, frac, triple = REFERENCE[name]
    p = load_preset(name)
    assert p.name == name
    assert p.ratio == pytest.approx(ratio, abs=1e-15)
    assert (p.vision_keep, p.cluster_fraction) == (keep, frac)
    assert (p.shallow_layer, p.deep_layer, p.deep_divisor) == (2, None, 5.0)
    assert (p.dc, p.radius, p.merge) == ("auto", 0.6, "reference")
    assert p.description and not p.is_identity
    b = p.budgets(576, 32)
    assert isinstance(b, StageBudgets)
    assert (b.V, b.Rs, b.Rd) == triple
    assert (b.N, b.shallow_layer, b.deep_layer, b.n_layers) == (576, 2, 22, 32)
    assert b.layer_averaged == pytest.approx((2 * b.V + 20 * b.Rs + 10 * b.Rd) / 32)
    assert b.ratio_to_N == pytest.approx(b.layer_averaged / 576)
    assert abs(b.ratio_to_N - ratio) < 0.01
    assert p.budgets(576, 28).deep_layer == 19
    assert p.budgets(576, 32, n_after_stage1=250).V == 250


@pytest.mark.parametrize("N", [1, 5, 576, 4321])
@pytest.mark.parametrize("L", [4, 24, 28, 32, 36])
def test_none_is_identity(N, L):
    p = load_preset("none")
    assert p.is_identity
    b = p.budgets(N, L)
    assert (b.N, b.V, b.Rs, b.Rd) == (N, N, N, N) and b.is_identity
    assert b.layer_averaged == N and b.ratio_to_N == 1.0
    assert b.per_layer() == [N] * L


def test_is_identity_needs_divisor_one():
    p = Preset(name="x", ratio=1, vision_keep=1, cluster_fraction=0.1, deep_divisor=5)
    assert not p.is_identity
    assert not p.budgets(100, 32).is_identity


def test_too_shallow_model():
    with pytest.raises(PresetError, match="1_3.*2 decoder layer"):
        load_preset("1_3").budgets(576, 2)
    p = Preset(name="deep", ratio=0.5, vision_keep=0.5, cluster_fraction=0.1, deep_layer=30)
    with pytest.raises(PresetError, match="deep"):
        p.budgets(576, 28)
    assert p.budgets(576, 32).deep_layer == 30


def write(tmp_path, text, name="my.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = "ratio: 1/3\nvision_keep: 0.5\ncluster_fraction: 0.18\n"


def test_user_file_and_fraction_strings(tmp_path):
    path = write(tmp_path, 'ratio: "2/9"\nvision_keep: 2/5\ncluster_fraction: 0.15\n'
                           'deep_divisor: "5"\ndc: 8.0\ndeep_layer: 20\nmerge: mean\n')
    for arg in (path, str(path)):
        p = load_preset(arg)
        assert p.name == "my"                               # file stem when no name key
        assert p.ratio == pytest.approx(2 / 9) and p.vision_keep == pytest.approx(0.4)
        assert (p.deep_divisor, p.dc, p.deep_layer, p.merge) == (5.0, 8.0, 20, "mean")
        assert p.description == ""


@pytest.mark.parametrize("extra, key", [
    ("colour: red\n", "colour"),
    ("ratio: 1.5\n", "ratio"),
    ("ratio: 0\n", "ratio"),
    ("ratio: abc\n", "ratio"),
    ("ratio: true\n", "ratio"),
    ("vision_keep: 0\n", "vision_keep"),
    ("cluster_fraction: 2\n", "cluster_fraction"),
    ("merge: max\n", "merge"),
    ("dc: -1\n", "dc"),
    ("dc: automatic\n", "dc"),
    ("radius: 0\n", "radius"),
    ("deep_divisor: 0.5\n", "deep_divisor"),
    ("shallow_layer: 0\n", "shallow_layer"),
    ("shallow_layer: 2.5\n", "shallow_layer"),
    ("deep_layer: 2\n", "deep_layer"),
    ("description: [1, 2]\n", "description"),
    ("name: ''\n", "name"),
])
def test_validation_names_key_and_file(tmp_path, extra, key):
    base = {k: v for k, v in (line.split(": ") for line in GOOD.strip().splitlines())}
    ek = extra.split(":")[0]
    text = "".join(f"{k}: {v}\n" for k, v in base.items() if k != ek) + extra
    path = write(tmp_path, text)
    with pytest.raises(PresetError) as info:
        load_preset(path)
    msg = str(info.value)
    assert key in msg and str(path) in msg
    assert isinstance(info.value, ValueError)


def test_missing_required_key(tmp_path):
    path = write(tmp_path, "ratio: 1/3\nvision_keep: 0.5\n")
    with pytest.raises(PresetError, match="cluster_fraction"):
        load_preset(path)


def test_not_a_mapping_or_bad_yaml(tmp_path):
    with pytest.raises(PresetError, match="mapping"):
        load_preset(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(PresetError, match="YAML"):
        load_preset(write(tmp_path, "ratio: [1\n", "bad.yaml"))


def test_unknown_name_lists_builtins(tmp_path):
    with pytest.raises(PresetError) as info:
        load_preset("1_4")
    for name in builtin_presets():
        assert name in str(info.value)
    with pytest.raises(PresetError, match="not found"):
        load_preset(str(tmp_path / "nope.yaml"))


def test_preset_is_frozen_and_validated_on_construction():
    p = load_preset("1_9")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.ratio = 0.5
    with pytest.raises(PresetError, match="merge"):
        Preset(name="x", ratio=0.5, vision_keep=0.5, cluster_fraction=0.1, merge="max")
    assert Preset(name="x", ratio="1/3", vision_keep=0.5, cluster_fraction=0.1).ratio == \
        pytest.approx(1 / 3)
