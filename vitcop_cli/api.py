"""Library entry points: ``load(...) -> Session`` once, then ``Session.ask(...) -> AskResult`` many times.

The CLI, the server, the lmms-eval plugin and the benchmarks only parse arguments and render what
these return. This module is the public face; the code lives in :mod:`vitcop_cli.session`, one short
module per job:

- ``load(model, *, device, dtype, attn, offline)`` (:mod:`~vitcop_cli.session.loading`): a Hugging
  Face id, a local folder, or a built-in demo model (``tiny:qwen2_vl``, ``bench:<family>``: built
  offline on first use, see :mod:`vitcop_cli.models.demo_models`). The config is read first (an
  unsupported ``model_type`` fails before any weight is read), then the model's own
  ``AutoProcessor`` and weights (``local_files_only`` everywhere when ``offline``). A broken
  torch / transformers is an environment problem (exit 1), never a bad checkpoint.
- ``Session.prepare`` / ``prepare_chat`` (:mod:`~vitcop_cli.session.prompting`): a decoded clip /
  image and a question (or a conversation) -> the processor's inputs, through the checkpoint's own
  chat template and processor; ``Session.check_lengths``.
- ``Session.generate`` (:mod:`~vitcop_cli.session.generation`): ``model.generate`` on prepared
  inputs under a pruning preset -> :class:`AskResult` with timings (CUDA synchronized before every
  clock read), peak memory and the pruning report.
- ``Session.ask`` (:mod:`~vitcop_cli.session.session`) = decode + prepare + generate.
- ``PrefixStore(dir, max_bytes=)`` (:mod:`~vitcop_cli.session.prefix_store`): the on-disk prefix cache
  (``--prefix-cache DIR``); ``Session.open(video, ..., prefix_store=store)`` reads a clip's pruned prefix from it
  (no decode, no prefill) or builds and saves it.
- ``check_preset`` / ``check_method`` / ``list_methods`` (:mod:`~vitcop_cli.session.choices`),
  ``model_identity``, ``quiet_library_logs``, ``preset_table``.
"""

from __future__ import annotations

from .defaults import DEFAULT_METHOD, DEFAULT_MODEL, DEFAULT_PRESET
from .models.preset_table import PresetRow, preset_table  # ``vitcop presets`` (no torch)
from .result import AskResult
from .session.choices import check_method, check_preset, list_methods
from .session.loading import load, model_identity, quiet_library_logs
from .session.prefix_store import PrefixStore
from .session.prompting import Prepared
from .session.session import Session

__all__ = [
    "DEFAULT_METHOD", "DEFAULT_MODEL", "DEFAULT_PRESET", "AskResult", "PrefixStore", "Prepared", "PresetRow",
    "Session", "check_method", "check_preset", "list_methods", "load", "model_identity", "preset_table",
    "quiet_library_logs",
]
