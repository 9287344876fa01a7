"""The library's model session, one short module per job; :mod:`vitcop_cli.api` is its public face.

- :mod:`.loading`: :func:`~.loading.load` (a checkpoint, hub id or built-in demo model -> ``Session``),
  how results name a model (:func:`~.loading.model_identity`), load errors.
- :mod:`.choices`: presets and pruning methods by name (torch-free checks).
- :mod:`.prompting`: ``Session.prepare`` / ``prepare_chat`` (chat template + processor) and the
  prompt-length check.
- :mod:`.generation`: ``Session.generate`` (``model.generate`` under a preset, with the cost report).
- :mod:`.session`: the ``Session`` class those compose, and ``Session.ask``.

Importing this package first checks that torch and transformers import
(:func:`vitcop_cli.environment.require_runtime`): a broken environment is an
:class:`~vitcop_cli.errors.EnvironmentProblem` (exit 1) naming the package, never a traceback or a
"bad checkpoint".
"""

from ..environment import require_runtime

require_runtime()
