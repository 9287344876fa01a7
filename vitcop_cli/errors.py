"""Expected failures, each with a one-line user-facing message (what is wrong + what to do).

The CLI maps them to exit statuses: :class:`InputError` -> 2 (usage / input), :class:`RuntimeFailure`,
:class:`EnvironmentProblem` and any other :class:`VitcopError` -> 1. Anything else is a bug and shows
a traceback only with --debug.
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


class EnvironmentProblem(VitcopError):
    """The Python environment is broken (a dependency cannot be imported or initialised), not the model
    or the input: exit status 1. Built by :mod:`vitcop_cli.environment`, its message names the package
    and its installed version and points at ``vitcop doctor``."""

    exit_code = 1
