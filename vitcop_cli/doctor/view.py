"""Human rendering of :class:`vitcop_cli.doctor.checks.DoctorReport` (stdout, fits 80 columns)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from .checks import Check, DoctorReport


def render_environment(report: DoctorReport, out: Console) -> None:
    v, d = report.versions, report.devices
    out.print(" ".join(f"{k} {v[k] or '-'}" for k in ("vitcop", "python", "torch", "torchvision")))
    out.print(" ".join(f"{k} {v[k] or '-'}" for k in ("transformers", "decord")))
    where = "[green]inside[/]" if report.transformers_in_tested_range else "[bold red]OUTSIDE[/]"
    out.print(f"transformers {v['transformers']} is {where} the tested range {report.tested_range}")
    gpus = ", ".join(d["cuda_devices"]) or "none"
    out.print(f"CUDA: {gpus}; bf16 {_yn(d['bf16'])}; MPS {_yn(d['mps'])}; flash-attn {_yn(d['flash_attn'])}")
    for problem in report.problems:
        out.print(f"[bold red]FAIL[/] environment: {escape(problem)}", highlight=False, overflow="fold")
    render_demo_models(report, out)


def render_demo_models(report: DoctorReport, out: Console) -> None:
    """One line: the demo model names (``--model NAME``), the cached ones marked."""
    if not report.demo_models:
        return
    names = ", ".join(d["name"] + ("*" if d["cached"] else "") for d in report.demo_models)
    out.print(f"demo models (--model NAME, random weights; * cached; `vitcop models`): {names}",
              highlight=False, overflow="fold")


def render_check(check: Check, out: Console) -> None:
    mark = "[green]PASS[/]" if check.passed else "[bold red]FAIL[/]"
    out.print(f"{mark} {check.family:<15} {check.attn:<5} {check.name:<13} {escape(check.detail)}",
              highlight=False, overflow="fold")


def render_verdict(report: DoctorReport, out: Console) -> None:
    failed = sum(not c.passed for c in report.checks)
    if report.passed:
        out.print(f"[green]all {len(report.checks)} checks passed[/]")
    else:
        why = [f"{len(report.problems)} package(s) do not import; no self-test ran"] if report.problems else []
        why += [f"{failed} check(s) failed"] if failed else []
        if not report.transformers_in_tested_range:
            why.append(f"install transformers in {report.tested_range}")
        out.print(f"[bold red]not OK:[/] {'; '.join(why)}")


def _yn(flag) -> str:
    return "yes" if flag else "no"
