"""Built-in demo models: ``--model tiny:<family>`` or ``bench:<family>``, built offline on first use.

A demo model is the random-weight checkpoint ``vitcop dev make-model <family> DIR --size <size>``
writes (:func:`vitcop_cli.models.devmodels.make_model`, seed 0): a real config, processor and tokenizer of
the family, so it runs every code path of a real checkpoint, but **its answers are meaningless text**
(the token counts, pruning and timings are real). Results name it by its demo name (``tiny:qwen2_vl``)
and flag it (``AskResult.demo_model``, plus a warning).

Contract (importing this module is cheap: no torch, no transformers):

- :func:`parse` ``(model) -> DemoModel | None``: ``None`` unless ``model`` starts with a size of
  :data:`vitcop_cli.models.devmodels.SIZES` and a colon (``tiny:``, ``bench:``); then the rest must be a
  family :func:`families` lists, else :class:`InputError` (exit 2) listing the demo names. A folder
  literally named ``tiny:x`` is reached as ``./tiny:x``.
- :func:`families`: every family ``make_model`` builds, in its order, read from devmodels (so a
  family added there is a demo model at once). :func:`demo_models`: every (size, family).
- :func:`cache_root`: ``models/`` next to the media cache of :mod:`vitcop_cli.media.download`:
  ``$VITCOP_CACHE/models``, else ``$HF_HOME/vitcop/models``, else ``~/.cache/vitcop/models``.
- :meth:`DemoModel.folder`: ``<cache_root>/<size>-<family>/<build key>``; the build key names the
  vitcop version, the installed transformers version (read from metadata, not imported) and a hash
  of the builder's source, so a model built by another builder or for another transformers release
  is never reused (a newer transformers may not load an older build's files, and vice versa).
  Builds under other keys stay until removed; ``vitcop models`` lists them.
- :func:`ensure` ``(demo) -> Path``: the folder, built on first use. Under an exclusive ``flock`` on
  ``<size>-<family>/.<key>.lock``: if the folder exists it is returned; otherwise what a killed build
  left (``.<key>.building-*``) is removed, the model is built into a fresh ``.<key>.building-*``
  folder in the same parent and renamed into place, so a folder at the final path is always complete.
  A second process waits on the lock, then finds the folder and reuses it. Where ``flock`` does not
  exist (Windows) or the file system refuses it, two processes may both build; the rename keeps the
  first folder and the other build is discarded. An unwritable cache is a :class:`RuntimeFailure`
  naming ``VITCOP_CACHE``; a builder that fails inside transformers is an environment problem
  (:mod:`vitcop_cli.environment`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, RuntimeFailure
from . import devmodels

__all__ = ["DemoModel", "cache_root", "demo_models", "ensure", "families", "parse"]

SEED = 0  # every demo model is built with this seed: one name, one set of weights

#: what each size is, for listings
SIZE_NOTES = {
    "tiny": "LLM hidden 64, 8 layers; builds and answers in seconds on a CPU",
    "bench": "LLM hidden 1024, 12 layers; about 0.5 GB, for benchmarks",
}


def families() -> tuple[str, ...]:
    """Every family ``devmodels.make_model`` builds (``FAMILIES`` first, then the extra ones)."""
    return devmodels.BUILDABLE


@dataclass(frozen=True)
class DemoModel:
    """One built-in demo model: a devmodels ``size`` and ``family``."""

    size: str
    family: str

    @property
    def name(self) -> str:
        """The name results carry: ``<size>:<family>``."""
        return f"{self.size}:{self.family}"

    @property
    def n_layers(self) -> int:
        """Decoder layers of its LLM (known without building it)."""
        return self.layout[0]

    @property
    def layout(self) -> tuple[int, list[str] | None]:
        """(decoder layers, layer types of a hybrid LLM or None), known without building it."""
        return devmodels.lm_layout(self.family, self.size)

    @property
    def folder(self) -> Path:
        """Where it is (or will be) cached for this vitcop / transformers / builder."""
        return cache_root() / f"{self.size}-{self.family}" / build_key()

    def is_cached(self) -> bool:
        return (self.folder / "config.json").is_file()


def demo_models() -> list[DemoModel]:
    """Every demo model, size by size."""
    return [DemoModel(size, family) for size in devmodels.SIZES for family in families()]


def names() -> list[str]:
    return [d.name for d in demo_models()]


def parse(model: str) -> DemoModel | None:
    """The demo model ``model`` names, ``None`` when it names none (see the module docstring)."""
    if not isinstance(model, str):
        return None
    size, sep, family = model.partition(":")
    if not sep or size not in devmodels.SIZES:
        return None
    if family not in families():
        shown = f"{family!r}" if family else "no family"
        raise InputError(
            f"--model {model}: {shown} is not a built-in demo model family; choose one of "
            f"{', '.join(f'{size}:{f}' for f in families())} (see `vitcop models`)"
        )
    return DemoModel(size, family)


def cache_root() -> Path:
    """``models/`` beside the media cache (see the module docstring)."""
    from ..defaults import cache_home

    return cache_home() / "models"


def build_key() -> str:
    """``vitcop<version>-transformers<version>-<builder hash>``: what a cached build depends on."""
    from .. import __version__
    from ..environment import installed_version

    digest = hashlib.sha256()
    for builder in devmodels.builder_sources():  # the registry and every family builder
        digest.update(builder.read_bytes())
    transformers = installed_version("transformers") or "none"
    return f"vitcop{__version__}-transformers{transformers}-{digest.hexdigest()[:10]}"


def ensure(demo: DemoModel) -> Path:
    """The demo model's folder, built on first use (see the module docstring)."""
    final = demo.folder
    if (final / "config.json").is_file():
        return final
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with _Lock(parent / f".{final.name}.lock"):
            if (final / "config.json").is_file():  # built by another process while we waited
                return final
            for stale in parent.glob(f".{final.name}.building-*"):  # left by a killed build
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists():  # not ours (no config.json): a folder emptied or damaged by hand
                shutil.rmtree(final)
            _build(demo, final)
    except OSError as exc:
        raise RuntimeFailure(
            f"cannot write the demo model {demo.name} into {parent} ({exc.strerror or exc}); set VITCOP_CACHE "
            "to a writable folder with about 1 GB free"
        ) from None
    return final


def _build(demo: DemoModel, final: Path) -> None:
    from ..environment import problem

    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))
    try:
        try:
            devmodels.make_model(demo.family, tmp, size=demo.size, seed=SEED)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - the builder is fixed: a failure inside it is the environment's
            raise problem("transformers", exc, doing=f"building the demo model {demo.name}") from exc
        os.chmod(tmp, final.parent.stat().st_mode & 0o777)  # mkdtemp's 0700 -> the cache's own mode
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():  # not "another process renamed its build in first"
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class _Lock:
    """Exclusive, blocking ``flock`` on a sidecar file (none where flock does not exist)."""

    def __init__(self, path: Path):
        self.path, self.fd = path, None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass  # Windows / a file system without locks: the rename still keeps one complete build
        return self

    def __exit__(self, *exc):
        os.close(self.fd)  # releases the lock; the file stays (removing it would race a waiter)
        return False


def listing() -> list[dict]:
    """One entry per demo model: ``name``, ``size``, ``family``, ``layers``, ``note`` (what the size is),
    ``cached`` (built for this vitcop / transformers / builder), ``folder`` (where it is or will be) and
    ``other_builds`` (folders of it built under other keys, reusable by nothing: safe to delete)."""
    out = []
    for demo in demo_models():
        folder = demo.folder
        others = sorted(str(p) for p in folder.parent.glob("*") if p.is_dir() and p != folder
                        and not p.name.startswith(".")) if folder.parent.is_dir() else []
        out.append({
            "name": demo.name, "size": demo.size, "family": demo.family, "layers": demo.n_layers,
            "note": SIZE_NOTES.get(demo.size, ""), "cached": demo.is_cached(), "folder": str(folder),
            "other_builds": others,
        })
    return out
