"""Pruning presets: YAML file -> validated frozen :class:`Preset` (pure Python + PyYAML).

Contract. A preset is a YAML mapping with exactly these keys (docs VITCOP.md):

    name              str        defaults to the file's stem
    description       str        default ""
    ratio             (0, 1]     target layer-averaged visual tokens / N; "1/3" or 0.333
    vision_keep       (0, 1]     Stage I keep fraction v per frame
    cluster_fraction  (0, 1]     VIC centre fraction f
    shallow_layer     int >= 1   Ls (default 2; layer 0 is never pruned)
    deep_layer        int | null Ld; null = round(22/32 * L) for the model's depth L
    deep_divisor      >= 1       q, Rd = Rs / q (default 5)
    dc                "auto" | number > 0   VIC cutoff (default "auto")
    radius            > 0        VIC spatial radius k (default 0.6)
    merge             "reference" | "mean"  merged-token value rule (default "reference")

ratio, vision_keep and cluster_fraction are required. Numbers may be written as
fraction strings ("1/3"); booleans are never numbers. Unknown keys, missing required
keys, wrong types and out-of-range values raise :class:`PresetError` (a ValueError)
whose message names the key and the file. Built-in presets live in the ``presets``
package (``none``, ``1_3``, ``2_9``, ``1_9``) and are read with importlib.resources.

Hostile files are bounded: a preset file larger than :data:`MAX_PRESET_BYTES` or a document
using YAML aliases (``*ref``; a preset is a dozen scalars and never needs them, and nested
aliases expand exponentially) is refused before it is turned into Python objects; a file that
is not UTF-8 is a PresetError naming the file; values quoted in messages are shortened to about
80 characters.

``Preset.is_identity`` is ``ratio == 1 and vision_keep == 1 and deep_divisor == 1``:
only then are the budgets (N, N, N) for every N and depth (with ratio = v = 1 but
q > 1 the deep stage would still cut to round(N/q)).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from fractions import Fraction
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import yaml

from .budget import layer_averaged_visual, scaled_deep_layer, snap_cut_layer, stage_budgets, \
    visual_tokens_per_layer

__all__ = ["Preset", "PresetError", "StageBudgets", "load_preset", "builtin_presets"]

MERGE_RULES = ("reference", "mean")
MAX_PRESET_BYTES = 16 * 1024  # a preset is a dozen short keys; anything larger is not a preset
_SHOWN = 80  # characters of a value quoted in an error message
_REQUIRED = ("ratio", "vision_keep", "cluster_fraction")


class PresetError(ValueError):
    """A preset that cannot be loaded or does not fit the model."""


@dataclass(frozen=True)
class StageBudgets:
    """Budgets of one clip on one model.

    N raw visual tokens; V after Stage I; Rs after Stage II (layers Ls..Ld-1);
    Rd after Stage III (layers Ld..L-1); shallow_layer / deep_layer: Ls, Ld resolved
    for the depth; layer_averaged: mean visual tokens per layer; ratio_to_N:
    layer_averaged / N; n_layers: L.
    """

    N: int
    V: int
    Rs: int
    Rd: int
    shallow_layer: int
    deep_layer: int
    layer_averaged: float
    ratio_to_N: float
    n_layers: int

    @property
    def is_identity(self) -> bool:
        """True when nothing is pruned (N == V == Rs == Rd)."""
        return self.N == self.V == self.Rs == self.Rd

    def per_layer(self) -> list[int]:
        """Visual tokens processed by each decoder layer 0..L-1."""
        return visual_tokens_per_layer(self.n_layers, self.V, self.Rs, self.Rd,
                                       self.shallow_layer, self.deep_layer)


def _short(value, limit: int = _SHOWN) -> str:
    """``repr(value)`` cut to about ``limit`` characters (never building a huge repr first)."""
    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlevel, r.maxlist, r.maxdict = limit, limit, 3, 6, 6
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fail(source: str, key: str, msg: str, value=None, show=True):
    got = f", got {_short(value)}" if show else ""
    raise PresetError(f"{source}: key '{key}' {msg}{got}")


def _number(source: str, key: str, value) -> float:
    """A finite float from a number or a fraction string such as "1/3"."""
    if isinstance(value, bool):
        _fail(source, key, "must be a number, not a boolean", value)
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            _fail(source, key, "must be a number or a fraction like \"1/3\"", value)
    else:
        _fail(source, key, f"must be a number (got type {type(value).__name__})", value)
    if not math.isfinite(out):
        _fail(source, key, "must be finite", value)
    return out


def _unit_interval(source, key, value) -> float:
    out = _number(source, key, value)
    if not 0.0 < out <= 1.0:
        _fail(source, key, "must be in (0, 1]", value)
    return out


def _int(source, key, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(source, key, "must be an integer", value)
    if value < minimum:
        _fail(source, key, f"must be >= {minimum}", value)
    return value


def _normalise(data: dict, source: str) -> dict:
    """Validate a preset mapping and return it with every value normalised."""
    known = {f.name for f in fields(Preset)}
    unknown = sorted(str(k)[:_SHOWN] for k in data if k not in known)
    if unknown:
        shown = ", ".join(_short(k, 40) for k in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise PresetError(f"{source}: unknown key(s) {shown}; "
                          f"allowed keys: {', '.join(sorted(known))}")
    for key in _REQUIRED:
        if key not in data:
            raise PresetError(f"{source}: key '{key}' is required")
    out = dict(data)
    name = out.get("name")
    if not isinstance(name, str) or not name.strip():
        _fail(source, "name", "must be a non-empty string", name)
    desc = out.get("description", "")
    if desc is None:
        desc = ""
    if not isinstance(desc, str):
        _fail(source, "description", "must be a string", desc)
    out["description"] = desc
    for key in ("ratio", "vision_keep", "cluster_fraction"):
        out[key] = _unit_interval(source, key, out[key])
    out["shallow_layer"] = _int(source, "shallow_layer", out.get("shallow_layer", 2), 1)
    deep = out.get("deep_layer")
    if deep is not None:
        deep = _int(source, "deep_layer", deep, 2)
        if deep <= out["shallow_layer"]:
            _fail(source, "deep_layer", f"must be > shallow_layer={out['shallow_layer']}", deep)
    out["deep_layer"] = deep
    q = _number(source, "deep_divisor", out.get("deep_divisor", 5.0))
    if q < 1:
        _fail(source, "deep_divisor", "must be >= 1", out.get("deep_divisor"))
    out["deep_divisor"] = q
    dc = out.get("dc", "auto")
    if dc != "auto":
        if isinstance(dc, str) and not any(ch.isdigit() for ch in dc):
            _fail(source, "dc", "must be \"auto\" or a positive number", dc)
        dc_num = _number(source, "dc", dc)
        if dc_num <= 0:
            _fail(source, "dc", "must be \"auto\" or a positive number", dc)
        dc = dc_num
    out["dc"] = dc
    radius = _number(source, "radius", out.get("radius", 0.6))
    if radius <= 0:
        _fail(source, "radius", "must be > 0", out.get("radius"))
    out["radius"] = radius
    merge = out.get("merge", "reference")
    if merge not in MERGE_RULES:
        _fail(source, "merge", f"must be one of {', '.join(MERGE_RULES)}", merge)
    out["merge"] = merge
    return out


@dataclass(frozen=True)
class Preset:
    """A validated pruning preset (field meanings: module docstring).

    Constructing one directly validates and normalises the values the same way as
    loading YAML (fraction strings become floats); errors are :class:`PresetError`.
    """

    name: str
    ratio: float
    vision_keep: float
    cluster_fraction: float
    shallow_layer: int = 2
    deep_layer: int | None = None
    deep_divisor: float = 5.0
    dc: str | float = "auto"
    radius: float = 0.6
    merge: str = "reference"
    description: str = ""

    def __post_init__(self):
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        norm = _normalise(data, f"preset {self.name!r}")
        for key, value in norm.items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_mapping(cls, data, source: str = "<mapping>", default_name: str | None = None):
        """Build from a parsed YAML mapping; ``source`` names the file in errors."""
        if not isinstance(data, dict):
            raise PresetError(f"{source}: a preset must be a YAML mapping, "
                              f"got {type(data).__name__}")
        data = dict(data)
        if "name" not in data and default_name is not None:
            data["name"] = default_name
        return cls(**_normalise(data, source))

    def values(self) -> dict:
        """The validated values that decide what runs (everything but name and description)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "description")}

    @property
    def fingerprint(self) -> str:
        """8 hex digits of a hash of :meth:`values` (canonical JSON): equal values, equal fingerprint."""
        blob = json.dumps(self.values(), sort_keys=True, default=repr).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    @property
    def label(self) -> str:
        """What ran, as a short stable key for results, resume and tables.

        The plain name when the values equal the built-in preset of that name (``"1_9"``), otherwise
        ``name@fingerprint`` (``"my@3fa1c2d0"``), so a custom file that reuses a built-in's name, or
        two different custom files with one name, can never be taken for each other.
        """
        builtin = _builtin_values().get(self.name)
        return self.name if builtin == self.fingerprint else f"{self.name}@{self.fingerprint}"

    @property
    def is_identity(self) -> bool:
        """True when the preset never prunes (ratio == vision_keep == deep_divisor == 1)."""
        return self.ratio == 1.0 and self.vision_keep == 1.0 and self.deep_divisor == 1.0

    def resolve_layers(self, n_layers: int, layer_types: Sequence[str] | None = None) -> tuple[int, int]:
        """(Ls, Ld) for an ``n_layers``-deep LLM; PresetError if it does not fit.

        layer_types: one ``full_attention`` / ``linear_attention`` per layer for a hybrid model
        (Qwen3.5). The key-norm cuts read the keys of the layer *before* Ls and Ld, so there both are
        snapped (:func:`pruning.budget.snap_cut_layer`: nearest, ties to the shallower) until that layer
        is full attention: first Ls within ``[1, L-2]``, then Ld within ``[Ls+1, L-1]``. The budgets are
        then computed from the snapped layers with the same layer-average formula, so the layer-averaged
        ratio still meets the preset. Dense models (no linear layers) are unchanged."""
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be an int >= 1, got {n_layers!r}")
        Ls = self.shallow_layer
        try:
            Ld = scaled_deep_layer(n_layers, self.deep_layer, shallow_layer=Ls)
        except ValueError:
            Ld = None
        if Ld is None or not 0 < Ls < Ld < n_layers:
            need = Ls + 2 if self.deep_layer is None else self.deep_layer + 1
            raise PresetError(
                f"preset {self.name!r} needs 0 < shallow_layer ({Ls}) < deep_layer "
                f"({'auto' if self.deep_layer is None else self.deep_layer}) < n_layers, "
                f"but the model has only {n_layers} decoder layer(s) (needs >= {need})")
        if layer_types is None or "linear_attention" not in layer_types:
            return Ls, Ld
        has_keys = [t != "linear_attention" for t in layer_types]
        snapped_s = snap_cut_layer(Ls, has_keys, 1, n_layers - 2)
        snapped_d = None if snapped_s is None else snap_cut_layer(Ld, has_keys, snapped_s + 1, n_layers - 1)
        if snapped_d is None:
            full = [i for i, k in enumerate(has_keys) if k]
            raise PresetError(
                f"preset {self.name!r} needs two full-attention layers before its cuts (Ls-1, Ld-1 with "
                f"0 < Ls < Ld < {n_layers}); this hybrid model has full attention only at layer(s) {full}")
        return snapped_s, snapped_d

    def budgets(self, n_visual: int, n_layers: int, n_after_stage1: int | None = None,
                layer_types: Sequence[str] | None = None) -> StageBudgets:
        """Stage budgets for N = ``n_visual`` visual tokens on an L = ``n_layers`` LLM.

        n_after_stage1: the real V when Stage I already ran (see budget.stage_budgets);
        layer_types: a hybrid model's layer types (Ls / Ld snapped, see :meth:`resolve_layers`).
        """
        Ls, Ld = self.resolve_layers(n_layers, layer_types)
        V, Rs, Rd = stage_budgets(n_visual, n_layers, self.ratio, self.vision_keep, Ls, Ld,
                                  self.deep_divisor, n_after_stage1=n_after_stage1)
        avg = layer_averaged_visual(n_layers, V, Rs, Rd, Ls, Ld)
        return StageBudgets(N=n_visual, V=V, Rs=Rs, Rd=Rd, shallow_layer=Ls, deep_layer=Ld,
                            layer_averaged=avg, ratio_to_N=avg / n_visual, n_layers=n_layers)


@lru_cache(maxsize=1)
def _builtin_values() -> dict[str, str]:
    """{built-in name: fingerprint of its values}."""
    return {name: load_preset(name).fingerprint for name in builtin_presets()}


def builtin_presets() -> list[str]:
    """Names of the built-in presets (sorted)."""
    return sorted(p.name[:-5] for p in files("presets").iterdir() if p.name.endswith(".yaml"))


def _parse(text: str, source: str, default_name: str) -> Preset:
    if len(text) > MAX_PRESET_BYTES:
        raise PresetError(f"{source}: {len(text):,} characters is too large for a preset "
                          f"(at most {MAX_PRESET_BYTES:,}; a preset is a dozen keys)")
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):  # events only: nothing is expanded yet
            if isinstance(event, yaml.AliasEvent):
                raise PresetError(f"{source}: YAML aliases (*{_short(event.anchor, 20)[1:-1]}) are not "
                                  "allowed in a preset; write the values out")
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise PresetError(f"{source}: not valid YAML: {first if len(first) <= 160 else first[:159] + '…'}") from None
    return Preset.from_mapping(data, source, default_name=default_name)


def load_preset(name_or_path) -> Preset:
    """A built-in preset by name ("1_3"), or a YAML file by path. Raises PresetError."""
    if isinstance(name_or_path, Preset):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise PresetError(f"preset must be a name or a path, got {name_or_path!r}")
    text_name = os.fspath(name_or_path)
    names = builtin_presets()
    if isinstance(name_or_path, str) and text_name in names:
        res = files("presets").joinpath(f"{text_name}.yaml")
        return _parse(res.read_text(encoding="utf-8"), f"built-in preset '{text_name}'",
                      text_name)
    path = Path(text_name)
    if path.is_file():
        try:
            size = path.stat().st_size
            if size > MAX_PRESET_BYTES:
                raise PresetError(f"{path}: {size:,} bytes is too large for a preset "
                                  f"(at most {MAX_PRESET_BYTES:,}; a preset is a dozen keys)")
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PresetError(f"{path}: not UTF-8 text (byte {exc.start}); save the preset as UTF-8") from None
        except OSError as exc:
            raise PresetError(f"{path}: cannot read preset file: {exc.strerror or exc}") from None
        return _parse(text, str(path), path.stem)
    if path.suffix.lower() in (".yaml", ".yml") or os.sep in text_name or "/" in text_name:
        raise PresetError(f"{path}: preset file not found")
    raise PresetError(f"unknown preset {text_name!r}; built-in presets: {', '.join(names)} "
                      f"(or give the path to a YAML file)")
