"""Expected failures, each with a one-line user-facing message (what is wrong + what to do).

The CLI maps them to exit statuses: :class:`InputError` -> 2 (usage / input), :class:`RuntimeFailure`,
:class:`EnvironmentProblem` and any other :class:`VitcopError` -> 1. Anything else is a bug and shows
a traceback only with --debug.

Inputs are validated where they enter (:mod:`vitcop_cli.options`, :mod:`vitcop_cli.media.video`); what a
library still refuses because of the input is recognised in one place, :func:`input_fault`.
"""


class VitcopError(Exception):
    """Base: an expected failure with a one-line, user-facing message."""

    exit_code = 1


class InputError(VitcopError):
    """Bad user input or usage: exit status 2."""

    exit_code = 2


class RuntimeFailure(VitcopError):
    """A runtime failure (model could not run, out of memory, ...): exit status 1."""

    exit_code = 1


class PrefixMiss(RuntimeFailure):
    """A question given only its prompt tokens (no pixels) whose kept pruned prefix does not cover it exactly
    (another system prompt, text before the visual, another preset): it cannot be answered from that prefix and
    must be prepared with its pixels. Front ends catch it and run the question afresh."""


class EnvironmentProblem(VitcopError):
    """The Python environment is broken (a dependency cannot be imported or initialised), not the model
    or the input: exit status 1. Built by :mod:`vitcop_cli.environment`, its message names the package
    and its installed version and points at ``vitcop doctor``."""

    exit_code = 1


def input_fault(exc: BaseException, doing: str) -> InputError | None:
    """The :class:`InputError` for a library exception that only a bad input causes, or ``None`` for anything
    else (a real bug must still surface as an unexpected error, so the match is narrow).

    Recognised: the Qwen processors' ``ValueError`` for an image or frame whose aspect ratio is over 200:1
    (checked up front by :func:`vitcop_cli.media.video.check_frame_size`; this catches what the processor's own
    rescaling may still refuse). ``doing`` names the step for the message. The one place such exceptions are
    recognised: ``Session.prepare_chat`` re-raises through it, so ``ask``, ``batch``, ``serve`` and the
    lmms-eval plugin all get exit 2 / 400."""
    text = " ".join(str(exc).split())
    if isinstance(exc, ValueError) and "aspect ratio" in text:
        return InputError(f"{doing}: the model's processor refuses its shape ({text[:160]}); "
                          "crop or pad it to an aspect ratio of at most 200:1")
    return None


def exc_line(exc: BaseException, limit: int = 160) -> str:
    """``exc``'s message on one line (whitespace collapsed), at most ``limit`` characters; its type's name when
    the message is empty. For warnings that name what went wrong without a traceback."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__
