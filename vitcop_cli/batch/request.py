"""Everything a batch can refuse before a model loads: the run options and ``--out``, checked in one place.

Contract: :func:`check_request` is called by the ``vitcop batch`` command (before torch is imported, so a bad
option fails in a second) and by :func:`vitcop_cli.batch.run_batch` (the library entry): both get the same
:class:`InputError` for the same mistake. Cheap to import (no torch).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .. import options
from .store import check_out_path


def check_request(
    presets: Sequence[str],
    methods: Sequence[str],
    out: str | os.PathLike,
    input_path: str | os.PathLike | None = None,
    **run_options,
) -> tuple[list, list[str], Path]:
    """(loaded presets, methods, the ``--out`` path) after checking ``run_options`` (the keywords of
    :func:`vitcop_cli.options.check_run_options`) and ``out`` (a new or regular file in a writable folder, not
    the questions file ``input_path``)."""
    loaded, method_list = options.check_run_options(presets, methods, **run_options)
    return loaded, method_list, check_out_path(out, input_path)
