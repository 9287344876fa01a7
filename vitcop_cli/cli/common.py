"""What every ``vitcop`` command shares: the stderr console, ``--debug``, the one-line failure, and the
checks that run before a model loads (question text, local media, the model's ``config.json``).

Contract: :func:`fail` turns any exception at a command's boundary into one line on stderr (the
traceback too with ``--debug``, recorded in :data:`state`) and a ``typer.Exit`` with the error's
status: a :class:`~vitcop_cli.errors.VitcopError` its ``exit_code`` (2 input, 1 runtime or
environment), SIGTERM / SIGHUP 128 + the signal number, Ctrl-C 130, anything else 1. The other
helpers raise :class:`~vitcop_cli.errors.InputError`. Importing this module is cheap (no torch).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import InputError, VitcopError

__all__ = ["check_local_media", "check_model", "check_prefix_cache", "err", "fail", "media_file", "prefix_store",
           "read_question", "state"]

err = Console(stderr=True)
state = {"debug": False}


def fail(exc: BaseException) -> None:
    """Print one line (or a traceback with --debug) and exit with the error's status."""
    from .signals import Terminated

    if state["debug"]:
        err.print_exception()
    if isinstance(exc, VitcopError):
        # Messages quote user input (paths, model ids) verbatim: escape it, or "[...]" in a file name is
        # taken for rich markup (swallowed, or a MarkupError traceback for "[/...]").
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code)
    if isinstance(exc, Terminated):  # SIGTERM / SIGHUP: like Ctrl-C, with the shell's status for that signal
        err.print(f"[bold red]terminated[/] by {exc.signal_name}", highlight=False)
        raise typer.Exit(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        err.print("[bold red]interrupted[/]")
        raise typer.Exit(130)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    err.print(
        f"[bold red]error:[/] {type(exc).__name__}: {escape(first)} (run with --debug for the traceback)",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(1)


def read_question(question: str) -> str:
    """The question, or for ``-`` stdin (at most MAX_TEXT_CHARS characters are read)."""
    from ..options import MAX_TEXT_CHARS, check_text

    if question == "-":
        try:
            question = sys.stdin.read(MAX_TEXT_CHARS + 1)
        except UnicodeDecodeError:
            raise InputError("the question on stdin is not UTF-8 text") from None
        check_text(question, "the question on stdin")
        question = question.strip()
    check_text(question)
    if not question.strip():
        raise InputError("the question is empty")
    return question


def check_local_media(arg: str) -> None:
    """A local VIDEO must exist and be a media file (URLs are fetched later, by :func:`media_file`)."""
    from ..media.download import is_url
    from ..media.video import check_path

    if not is_url(arg):
        check_path(arg)


def check_model(model: str, offline: bool) -> bool:
    """The model's config.json alone, before torch is imported: a missing folder, an unsupported type,
    offline without a cached copy or no network fail here in about a second. Returns the offline
    flag to load with (True when there is no network but the model is cached). A built-in demo
    model (``tiny:<family>``) is checked by name only (an unknown family fails here); it is built, if
    need be, when it loads."""
    from ..models import demo_models, model_ref

    if demo_models.parse(model) is not None:
        return True
    declared, offline = model_ref.declared_config(model, offline=offline)
    model_ref.check_model_type(model, declared)
    return offline


def media_file(arg: str, *, progress: bool) -> Path:
    """A local media file for VIDEO: an http(s):// URL is downloaded into the cache (with a progress bar)."""
    from ..media.download import DEFAULT_MAX_BYTES, fetch, is_url
    from ..media.video import check_path

    if is_url(arg):
        return fetch(arg, max_bytes=DEFAULT_MAX_BYTES, progress=progress and err.is_terminal)
    check_path(arg)
    return Path(arg)


def check_prefix_cache(folder: Path | None, gib: float) -> None:
    """InputError for a ``--prefix-cache-gb`` that is not a positive size or a ``--prefix-cache`` that is a file
    (before a model loads)."""
    if not gib > 0 or gib != gib or gib == float("inf"):
        raise InputError(f"--prefix-cache-gb must be a positive number of GiB, got {gib}")
    if folder is not None and folder.expanduser().exists() and not folder.expanduser().is_dir():
        raise InputError(f"--prefix-cache {escape(str(folder))}: not a folder")


def prefix_store(folder: Path | None, gib: float):
    """The ``PrefixStore`` of ``--prefix-cache DIR`` capped at ``gib`` GiB, or None without the option."""
    if folder is None:
        return None
    from ..api import PrefixStore

    return PrefixStore(folder, max_bytes=max(1, int(gib * 2**30)))
