"""``vitcop doctor``: the whole self-test passes on this installation; failures and an out-of-range
transformers make it exit 1 (issue 7)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pruning import compat
from vitcop_cli.doctor import checks as doctor  # the module the command calls (monkeypatched below)
from vitcop_cli.app import app
from vitcop_cli.models.devmodels import FAMILIES


def test_doctor_passes_every_check_for_every_family():
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == "vitcop.doctor/1" and report["passed"] is True
    assert report["versions"]["transformers"] == compat.transformers_version()
    checks = {(c["family"], c["name"]) for c in report["checks"] if c["passed"]}
    assert checks == {(f, n) for f in FAMILIES for n in ("identity", "drop==mask", "kv-cache", "runtime-check")}


def test_doctor_exits_1_when_a_check_fails(monkeypatch):
    def failing(session, inputs):
        return False, "broken on purpose"

    monkeypatch.setattr(doctor, "_kv_cache", failing)
    result = CliRunner().invoke(app, ["doctor", "--family", "llava_onevision"])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "broken on purpose" in result.output and "not OK" in result.output


def test_doctor_exits_1_outside_the_tested_range(monkeypatch):
    monkeypatch.setattr(compat, "transformers_version", lambda: "5.99.0")
    monkeypatch.setattr(doctor, "run", lambda device, families=(), on_check=None, report=None: report)
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "OUTSIDE the tested range" in result.output


def test_a_self_test_that_raises_is_a_fail_line_not_a_crash(monkeypatch):
    def boom(session, inputs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(doctor, "_identity", boom)
    report = doctor.run("cpu", families=("llava_onevision",))
    failed = [c for c in report.checks if not c.passed]
    assert [c.name for c in failed] == ["identity"] and "kaboom" in failed[0].detail
    assert not report.passed


def test_doctor_refuses_an_unknown_family():
    result = CliRunner().invoke(app, ["doctor", "--family", "gpt2"])
    assert result.exit_code == 2 and "unknown model family 'gpt2'" in result.output


def test_the_self_tests_decode_no_file(monkeypatch):
    """doctor must work from a wheel install, which has no samples/: its input is synthetic, so every
    check passes with file decoding made impossible."""
    from vitcop_cli.media import video

    def no_files(*_a, **_k):
        raise AssertionError("doctor decoded a file")

    monkeypatch.setattr(video, "load_visual", no_files)
    monkeypatch.setattr(video, "check_path", no_files)
    report = doctor.run("cpu", families=("qwen2_vl",))
    assert report.checks and all(c.passed for c in report.checks), [(c.name, c.detail) for c in report.checks]
