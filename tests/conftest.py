"""Shared fixtures: tiny random-weight checkpoints of each family, built once per test session.

They are written with ``vitcop_cli.models.devmodels.make_model`` into a temporary folder and loaded through
the same code path as a real checkpoint. Set VITCOP_TEST_MODELS=/some/dir to reuse them across runs
(building is locked, so parallel pytest-xdist workers never write one folder at once).

The suite runs on two pytest-xdist workers (``addopts``); each uses one torch thread, since the tiny
models gain nothing from intra-op threads and two workers x two threads would oversubscribe 2 cores.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

from vitcop_cli.models.devmodels import FAMILIES, make_model

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """{family: folder} of tiny random checkpoints, one per family in ``FAMILIES``."""
    base = Path(os.environ["VITCOP_TEST_MODELS"]) if os.environ.get("VITCOP_TEST_MODELS") else None
    base = base or tmp_path_factory.mktemp("models")
    base.mkdir(parents=True, exist_ok=True)
    out = {}
    with open(base / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for family in FAMILIES:
            folder = base / f"{family}-tiny"
            if not (folder / "config.json").exists():
                make_model(family, folder, size="tiny")
            out[family] = folder
    return out


@pytest.fixture(scope="session")
def sessions(tiny_models):
    """Loaded tiny sessions (sdpa, CPU, float32), one per family, shared by the whole run."""
    from vitcop_cli import api

    api.quiet_library_logs()
    return {family: api.load(str(path), device="cpu", offline=True) for family, path in tiny_models.items()}


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def clip() -> Path:
    return SAMPLES / "shapes.mp4"


@pytest.fixture(scope="session")
def image() -> Path:
    return SAMPLES / "scene.png"


@pytest.fixture
def good_clips(tmp_path) -> Path:
    """A folder of three good media files: two clips (a.mp4, c.mp4) and an image (b.png)."""
    root = tmp_path / "good"
    root.mkdir()
    shutil.copy(SAMPLES / "shapes.mp4", root / "a.mp4")
    shutil.copy(SAMPLES / "scene.png", root / "b.png")
    shutil.copy(SAMPLES / "bounce.mp4", root / "c.mp4")
    return root


@pytest.fixture
def target():
    """A local HTTP media host on 127.0.0.1 that logs every connection it accepts (``http_targets.Target``)."""
    from http_targets import Target

    t = Target("127.0.0.1")
    yield t
    t.close()
