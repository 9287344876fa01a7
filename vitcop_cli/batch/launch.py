"""``vitcop batch --nproc N``: start the same batch as N ranks on this machine through torchrun.

Contract:

- :func:`worker_argv` rebuilds the ``batch`` command line from what click parsed, leaving out
  ``--nproc`` and options left at their defaults or taken from the environment (the ranks inherit
  the environment), so every rank runs exactly the command the user typed.
- :func:`launch` runs it as ``torchrun --standalone --nproc-per-node N --max-restarts 0 -m vitcop_cli
  batch ...`` through ``torch.distributed.run``'s own argument parser and ``elastic_launch`` (the
  elastic agent, in this process), with its log chatter silenced (kept with ``--debug``) and
  ``OMP_NUM_THREADS`` set to cores / N when unset. It returns the job's exit status: rank 0's when
  it failed (rank 0 reports the job), else the first failing rank's; a rank killed by signal S
  counts as 128 + S; 0 when every rank succeeded. An interruption of the agent itself (Ctrl-C,
  SIGTERM) returns 128 + the signal number after the ranks have been stopped.
"""

from __future__ import annotations

import logging
import os
import uuid

from .dist import threads_per_rank

__all__ = ["launch", "worker_argv"]


def _long(param, opts) -> str:
    longs = [o for o in opts if o.startswith("--")]
    return longs[0] if longs else opts[0]


def worker_argv(ctx, drop: tuple[str, ...] = ("nproc",)) -> list[str]:
    """The command's arguments as typed (defaults and environment values left to the ranks).

    ``ctx`` is the command's click context (``typer.Context``; typer vendors its own click, so only
    its duck-typed interface is used here).
    """
    positional: list[str] = []
    options: list[str] = []
    for param in ctx.command.params:
        if param.name in drop or param.name not in ctx.params:
            continue
        value = ctx.params[param.name]
        if param.param_type_name == "argument":
            positional.extend([os.fspath(v) for v in value] if param.multiple else [os.fspath(value)])
            continue
        source = ctx.get_parameter_source(param.name)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP", "ENVIRONMENT"):
            continue
        if getattr(param, "is_flag", False):
            if param.secondary_opts:
                options.append(_long(param, param.opts if value else param.secondary_opts))
            elif value:
                options.append(_long(param, param.opts))
            continue
        values = value if param.multiple else [value]
        for v in values:
            if v is not None:
                options += [_long(param, param.opts), os.fspath(v) if isinstance(v, os.PathLike) else str(v)]
    return [*options, "--", *positional] if positional else options


def _quiet_elastic_logs() -> None:
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def launch(nproc: int, argv: list[str], *, debug: bool = False) -> int:
    """Run ``vitcop batch ARGV`` as ``nproc`` ranks on this machine; the job's exit status."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nproc)))
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    if not debug:
        _quiet_elastic_logs()
    args = get_args_parser().parse_args(
        ["--nnodes", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", "--rdzv-id", uuid.uuid4().hex,
         "--nproc-per-node", str(nproc), "--max-restarts", "0", "-m", "vitcop_cli", "batch", *argv]  # = --standalone
    )
    config, cmd, cmd_args = config_from_args(args)
    if not debug:
        _quiet_elastic_logs()  # loggers created while configuring
    try:
        elastic_launch(config, cmd)(*cmd_args)
    except ChildFailedError as exc:
        failures = exc.failures
        failure = failures.get(0) or failures[min(failures)]
        code = failure.exitcode
        return 128 - code if code < 0 else code
    except SignalException as exc:
        return 128 + int(exc.sigval)
    return 0
