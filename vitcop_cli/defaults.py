"""Defaults shared by the library and the CLI (a module without heavy imports, so ``--help`` is fast)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "Qwen/Qwen2-VL-2B-Instruct"
DEFAULT_PRESET = "1_3"
DEFAULT_METHOD = "vitcop"


def cache_home() -> Path:
    """vitcop's cache folder: ``$VITCOP_CACHE`` when set, else ``$HF_HOME/vitcop``, else ``~/.cache/vitcop``.
    Downloaded media go to its ``media/``, demo models to its ``models/``."""
    if os.environ.get("VITCOP_CACHE"):
        return Path(os.environ["VITCOP_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "vitcop"
    return Path("~/.cache/vitcop").expanduser()
