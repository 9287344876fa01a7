"""The ``vitcop doctor`` command (registered on the CLI app by :mod:`vitcop_cli.app`): the environment,
then every self-test of :mod:`.checks`, rendered as they finish (or one ``--json`` object).

Contract: exit 0 when every check passes and transformers is inside the tested range, 1 otherwise,
2 for an unknown ``--family``. Importing this module is cheap (no torch).
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from ..cli import option_types as o
from ..cli.common import fail, state
from ..errors import InputError


def doctor_cmd(
    device: str = typer.Option("cpu", "--device", help="Where to run the self-tests: cpu, cuda or cuda:N."),
    family: Optional[list[str]] = typer.Option(
        None, "--family", help="Self-test only this model family (repeatable; default: every supported one)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of the table."),
    debug: o.Debug = False,
) -> None:
    """Check this installation: versions, devices, and pruning self-tests on tiny models of every family.

    Run it after installing or upgrading (no network needed). Exit 0 when everything passes and
    transformers is inside the tested range, 1 otherwise.
    """
    state["debug"] = debug
    try:
        import json

        from . import checks as doctor
        from . import view as doctor_view

        out = Console()
        report = doctor.inspect()
        if not json_out:
            doctor_view.render_environment(report, out)
        on_check = None if json_out else (lambda check: doctor_view.render_check(check, out))
        families = tuple(family) if family else doctor.FAMILIES
        unknown = sorted(set(families) - set(doctor.FAMILIES))
        if unknown:
            raise InputError(f"unknown model family {unknown[0]!r}; choose from {', '.join(doctor.FAMILIES)}")
        report = doctor.run(device, families=families, on_check=on_check, report=report)
        if json_out:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            doctor_view.render_verdict(report, out)
        raise typer.Exit(0 if report.passed else 1)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the CLI boundary
        if isinstance(exc, typer.Exit):
            raise
        fail(exc)
