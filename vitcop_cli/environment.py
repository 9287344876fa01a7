"""A dependency that cannot be imported or initialised is an environment problem, never a bad model.

Contract (importing this module is cheap: no torch, no transformers):

- :func:`describe` ``(package, exc) -> str``: one clause naming the package, its installed version
  (from the package metadata, so it works when the import itself fails) and the first line of the
  error, e.g. ``transformers 5.24.0 cannot be imported (ImportError: ...)``.
- :func:`problem` ``(package, exc, *, doing=None) -> EnvironmentProblem``: that clause, stated as a
  problem of this Python environment (not of the model or the input), with ``run 'vitcop doctor'``;
  exit status 1 (:class:`~vitcop_cli.errors.EnvironmentProblem`).
- :func:`importing` ``(package)``: a context manager turning any exception raised inside it (an
  ``ImportError``, or whatever a broken package raises while importing itself) into :func:`problem`.
  A :class:`~vitcop_cli.errors.VitcopError` and ``KeyboardInterrupt`` pass through unchanged.
- :func:`require_runtime` imports torch and transformers under :func:`importing` (the library's
  :mod:`vitcop_cli.session` calls it first, so every front end that loads a model reports a broken
  torch / transformers this way).
- :func:`is_environment_error` ``(exc)``: whether an exception raised inside transformers while it
  loads a checkpoint points at the environment rather than the checkpoint: an ``ImportError``
  (transformers cannot import one of its own modules or dependencies) or a message asking to
  install something (:data:`ENVIRONMENT_MARKERS`, e.g. transformers' ``Kernels are not available.
  Please install a compatible version ...``).
- :func:`import_problems` ``() -> {package: line}``: :func:`describe` of every runtime package that
  does not import, including the transformers classes vitcop loads models with (lazily imported by
  transformers, so a missing dependency of theirs only shows there). ``vitcop doctor`` prints each
  as a FAIL line.
"""

from __future__ import annotations

import importlib
import re
from contextlib import contextmanager
from importlib import metadata

from .errors import EnvironmentProblem, VitcopError

__all__ = [
    "ENVIRONMENT_MARKERS", "RUNTIME_PACKAGES", "describe", "import_problems", "importing", "installed_version",
    "is_environment_error", "problem", "require_runtime",
]

#: the packages every model run imports, in import order
RUNTIME_PACKAGES = ("torch", "transformers", "decord")
#: the transformers names vitcop loads checkpoints with (each lazily imports model code)
TRANSFORMERS_NAMES = ("AutoConfig", "AutoProcessor", "AutoModelForImageTextToText")
#: phrases of an error that asks the user to install or fix a package (case-insensitive)
ENVIRONMENT_MARKERS = re.compile(
    r"pip install|please install|install a compatible version|failed to import|is not installed|"
    r"requires the \S+ library",
    re.IGNORECASE,
)


def installed_version(package: str) -> str | None:
    """The installed distribution's version (metadata only: nothing is imported), or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    if len(first) > 200:
        first = first[:199] + "…"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def describe(package: str, exc: BaseException, *, doing: str | None = None) -> str:
    """``<package> <version> cannot be imported (<error>)`` or, with ``doing``, ``... failed while <doing>``."""
    version = installed_version(package)
    who = f"{package} {version}" if version else f"{package} (not installed)"
    what = f"failed while {doing}" if doing else "cannot be imported"
    missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
    if missing and missing.split(".")[0] != package:
        what += f": its dependency {missing.split('.')[0]!r} is missing or broken"
    return f"{who} {what} ({_first_line(exc)})"


def problem(package: str, exc: BaseException, *, doing: str | None = None) -> EnvironmentProblem:
    """An :class:`EnvironmentProblem` for ``exc`` raised by ``package`` (see the module docstring)."""
    return EnvironmentProblem(
        f"{describe(package, exc, doing=doing)}: a problem with this Python environment, not with the model "
        "or the input; run 'vitcop doctor' to check the installation"
    )


@contextmanager
def importing(package: str):
    """Turn any failure inside the block into :func:`problem` for ``package``."""
    try:
        yield
    except (VitcopError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - a broken package may raise anything while importing
        raise problem(package, exc) from exc


def require_runtime() -> None:
    """torch and transformers import, else :class:`EnvironmentProblem` naming the one that does not."""
    for package in ("torch", "transformers"):  # decord is imported (and guarded) where a clip is decoded
        with importing(package):
            importlib.import_module(package)


def is_environment_error(exc: BaseException) -> bool:
    """Whether ``exc`` (raised while transformers loads a checkpoint) blames the environment."""
    if isinstance(exc, ImportError):
        return True
    return bool(ENVIRONMENT_MARKERS.search(str(exc)))


def import_problems() -> dict[str, str]:
    """{package: :func:`describe` line} for every runtime package (or transformers class) that does not import."""
    problems = {}
    for package in RUNTIME_PACKAGES:
        try:
            module = importlib.import_module(package)
            if package == "transformers":
                for name in TRANSFORMERS_NAMES:
                    getattr(module, name)
        except Exception as exc:  # noqa: BLE001 - reported, never raised
            problems[package] = describe(package, exc)
    return problems
