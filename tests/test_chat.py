"""``vitcop chat CLIP`` (issue 26): one clip opened once, questions line by line as a conversation on its kept
pruned prefix; ``/reset``, ``/preset``, ``/help``, ``/quit``; Ctrl-D / Ctrl-C; ``--json`` lines.

One real process under a pseudo-terminal (stdlib ``pty``: the prompt, Ctrl-D, the exit status); the rest
in-process (typer's CliRunner, piped input) on the demo model ``tiny:qwen2_vl`` (cache seeded by
``test_ask_many.demo_cache``), compared with the library's own answers.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest
from test_api import CLIP
from test_ask_many import DEMO, demo_cache  # noqa: F401 - a fixture
from test_cli import ANSI, assert_one_line_failure, subprocess_env
from typer.testing import CliRunner

from vitcop_cli import api
from vitcop_cli.app import app
from vitcop_cli.chat import loop as chat_loop
from vitcop_cli.chat.cancel import AnswerCancel
from vitcop_cli.chat.conversation import Conversation
from vitcop_cli.errors import InputError, PrefixMiss
from vitcop_cli.options import MAX_TEXT_CHARS
from vitcop_cli.session.pruned_clip import PrunedClip

MAX_NEW = 3
BASE = ["--model", DEMO, "--offline", "--frames", "4", "--max-new-tokens", str(MAX_NEW)]


def chat(demo_cache, text, *extra, env=None):  # noqa: F811
    env = {"NO_COLOR": "1", "COLUMNS": "200", "VITCOP_CACHE": str(demo_cache), **(env or {})}
    return CliRunner().invoke(app, ["chat", str(CLIP), *BASE, *map(str, extra)], input=text, env=env)


def json_lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def opened(sessions):
    """The same clip opened by the library with the chat's options (what every answer is compared with)."""
    return sessions["qwen2_vl"].open(CLIP, preset="1_3", frames=4)


def turn(role, text):
    return {"role": role, "content": [{"type": "text", "text": text}]}


# ---- a real terminal ------------------------------------------------------------------------
class Terminal:
    """The chat in a child process: stdin and stderr on a pseudo-terminal, stdout a pipe (the JSON lines)."""

    def __init__(self, args, env, cwd):
        master, slave = pty.openpty()
        self.master, self.seen = master, ""
        self.proc = subprocess.Popen(args, stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=env, cwd=cwd,
                                     start_new_session=True)
        os.close(slave)

    def read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.seen += os.read(self.master, 65536).decode("utf-8", "replace")
            except OSError:  # the child closed the terminal
                pass

    def wait_for_prompt(self, n: int, timeout: float = 240) -> None:
        """Until the n-th prompt ``> `` has been written."""
        deadline = time.monotonic() + timeout
        while self.seen.count("> ") < n:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.seen}"
            assert time.monotonic() < deadline, f"no prompt #{n}: {self.seen}"
            self.read(0.2)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, self.seen
            self.read(0.2)
        self.read(0)
        out = self.proc.stdout.read().decode()
        os.close(self.master)
        return self.proc.returncode, out


def test_chat_under_a_terminal_two_questions_reset_one_more_then_ctrl_d(demo_cache, opened, tmp_path):  # noqa: F811
    env = subprocess_env(tmp_path, VITCOP_CACHE=demo_cache)
    term = Terminal([sys.executable, "-m", "vitcop_cli", "chat", str(CLIP), *BASE, "--json"], env, tmp_path)
    try:
        for n, line in enumerate(["What happens?", "And then?", "/reset", "What moves?"], 1):
            term.wait_for_prompt(n)
            term.type(line + "\n")
        term.wait_for_prompt(5)
        term.type("\x04")  # Ctrl-D at the prompt: end of input
        status, out = term.finish()
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
    assert status == 0, term.seen
    answers = [json.loads(line) for line in out.splitlines()]
    assert len(answers) == 3, out
    assert [d["prefix"]["reused"] for d in answers] == [False, True, True]
    assert [d["question"] for d in answers] == ["What happens?", "And then?", "What moves?"]
    first, follow_up, after_reset = answers
    # the follow-up was asked with the history; after /reset the question stands alone, as `ask` would ask it
    history = opened.messages("What happens?") + [turn("assistant", first["answer"]), turn("user", "And then?")]
    expected = opened.ask_chat(history, max_new_tokens=MAX_NEW)
    assert follow_up["tokens"] == expected.to_dict()["tokens"] and follow_up["generated_ids"] == expected.generated_ids
    alone = opened.ask("What moves?", max_new_tokens=MAX_NEW)
    assert after_reset["tokens"] == alone.to_dict()["tokens"] and after_reset["generated_ids"] == alone.generated_ids
    screen = ANSI.sub("", term.seen)
    assert "chat about video shapes.mp4" in screen and "conversation cleared (2 turns forgotten)" in screen
    assert "Traceback" not in screen


# ---- piped input, in-process ----------------------------------------------------------------
def test_follow_ups_are_a_conversation_on_the_same_prefix(demo_cache, opened):  # noqa: F811
    result = chat(demo_cache, "What happens?\nAnd then?\n", "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    first, second = json_lines(result)
    assert [first["prefix"]["reused"], second["prefix"]["reused"]] == [False, True]
    assert second["prefix"]["saved_s"] > 0
    assert first["generated_ids"] == opened.ask("What happens?", max_new_tokens=MAX_NEW).generated_ids
    history = opened.messages("What happens?") + [turn("assistant", first["answer"]), turn("user", "And then?")]
    expected = opened.ask_chat(history, max_new_tokens=MAX_NEW)
    assert second["generated_ids"] == expected.generated_ids
    assert second["tokens"] == expected.to_dict()["tokens"]
    assert result.stderr.count("warning: tiny:qwen2_vl is a built-in demo model") == 1  # once, not per answer


def test_preset_unknown_command_empty_line_and_end_of_input(demo_cache, opened):  # noqa: F811
    text = "What happens?\n\n   \n/bogus\n/preset 1_9\n/preset nope\n/preset\n/help\nWhat happens?\n"
    result = chat(demo_cache, text, "--json")
    answers = json_lines(result)
    assert len(answers) == 2, result.stdout  # the blank lines were ignored, the commands answered nothing
    before, after = answers
    assert (before["preset"], after["preset"]) == ("1_3", "1_9")
    assert after["prefix"]["reused"] is False  # re-opened under 1_9: a new prefix, built for this answer
    assert after["tokens"]["prompt"] == before["tokens"]["prompt"]  # /preset cleared the conversation
    assert after["pruning"]["after_stage3"] < before["pruning"]["after_stage3"]
    err = ANSI.sub("", result.stderr)
    assert "unknown command /bogus; /help lists the commands" in err
    assert "clip re-opened under preset 1_9; conversation cleared (1 turn forgotten)" in err
    assert "error: unknown preset 'nope'" in err and "(still on preset 1_9)" in err
    assert "preset 1_9; /preset P re-opens the clip under P" in err
    assert "/reset" in err and "/quit" in err  # /help
    # piped input: the session went on to the end, and the status says a line went wrong (the first: 2)
    assert result.exit_code == 2, (result.output, result.exception)


def test_quit_and_a_clean_piped_run_exit_0(demo_cache):  # noqa: F811
    result = chat(demo_cache, "/quit\nWhat happens?\n", "--json")
    assert result.exit_code == 0 and result.stdout == "", (result.output, result.exception)


def test_streamed_answers_short_reports_and_ctrl_c_cancels_one_answer(demo_cache, opened, monkeypatch):  # noqa: F811
    """Without --json answers stream to stdout, a short report each to stderr. A Ctrl-C (SIGINT) while the first
    answer streams cancels that answer only: it is not kept, the chat goes on."""
    real = chat_loop.ChatLoop._write
    fired = []

    def interrupt_first_answer(self, text):
        if not fired and text.strip():
            fired.append(text)
            signal.raise_signal(signal.SIGINT)  # handled by AnswerCancel: no KeyboardInterrupt
        real(self, text)

    monkeypatch.setattr(chat_loop.ChatLoop, "_write", interrupt_first_answer)
    result = chat(demo_cache, "What happens?\nWhat happens?\nAnd then?\n")
    assert result.exit_code == 0, (result.output, result.exception)
    assert fired
    expected = opened.ask("What happens?", max_new_tokens=MAX_NEW).answer
    history = opened.messages("What happens?") + [turn("assistant", expected), turn("user", "And then?")]
    follow_up = opened.ask_chat(history, max_new_tokens=MAX_NEW).answer
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert lines[1:] == [expected, follow_up]  # the cancelled one is not in the history of the follow-up
    err = ANSI.sub("", result.stderr)
    assert err.count("answer cancelled") == 1
    reports = [line for line in err.splitlines() if " tokens · ttft " in line]
    assert len(reports) == 2 and all("prefix reused from memory, saved " in r for r in reports), err


def test_a_conversation_the_prefix_cannot_cover_is_answered_afresh(demo_cache, opened, monkeypatch):  # noqa: F811
    """PrefixMiss -> the clip's pixels decoded again and the conversation answered whole (same tokens). A line
    over the text limit is refused and skipped; the chat goes on."""
    expected = opened.ask("What happens?", max_new_tokens=MAX_NEW).generated_ids

    def miss(self, messages, **options):
        raise PrefixMiss("the conversation differs before the end of the visual (test)")

    monkeypatch.setattr(PrunedClip, "ask_chat", miss)
    result = chat(demo_cache, "x" * (MAX_TEXT_CHARS + 5) + "\nWhat happens?\n", "--json")
    (d,) = json_lines(result)
    assert d["generated_ids"] == expected
    assert d["prefix"]["reused"] is False
    err = ANSI.sub("", result.stderr)
    assert "does not cover this conversation" in err and "answering afresh" in err
    assert f"error: the line is longer than {MAX_TEXT_CHARS:,} characters; it was skipped" in err
    assert result.exit_code == 2


def test_a_failed_answer_is_one_line_not_kept_and_points_at_reset(demo_cache, monkeypatch):  # noqa: F811
    real, calls = PrunedClip.ask_chat, []

    def second_too_long(self, messages, **options):
        calls.append(len(messages))
        if len(calls) == 2:
            raise InputError("the prompt is 40,000 tokens (test)")
        return real(self, messages, **options)

    monkeypatch.setattr(PrunedClip, "ask_chat", second_too_long)
    result = chat(demo_cache, "What happens?\nAnd then?\nWhy?\n", "--json")
    assert len(json_lines(result)) == 2 and result.exit_code == 2, (result.output, result.exception)
    assert calls == [1, 3, 3], "the failed turn is not in the history of the next one"
    err = ANSI.sub("", result.stderr)
    assert "error: the prompt is 40,000 tokens (test) (/reset starts the conversation afresh)" in err


@pytest.fixture
def no_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("api.load must not be called")

    monkeypatch.setattr(api, "load", refuse)


@pytest.mark.parametrize("args, needle", [
    (["-p", "1_3,1_9"], "a chat runs one preset"),
    (["--temperature", "nan"], "--temperature"),
    (["--frames", "0"], "--frames"),
])
def test_options_are_checked_before_the_model_loads(no_load, args, needle):
    result = CliRunner().invoke(app, ["chat", str(CLIP), "--model", "m", *args], input="q\n", env={"NO_COLOR": "1"})
    assert_one_line_failure(result, 2, needle)


# ---- parts ----------------------------------------------------------------------------------
def test_read_line_skips_an_over_long_line_whole_and_refuses_bytes_that_are_not_utf8():
    import io

    stream = io.StringIO("abcdefghij" * 3 + "\nnext\n")
    with pytest.raises(InputError, match="longer than 8 characters"):
        chat_loop.read_line(stream, limit=8)
    assert chat_loop.read_line(stream, limit=8) == "next\n" and chat_loop.read_line(stream, limit=8) is None
    assert chat_loop.read_line(io.StringIO("12345678\n"), limit=8) == "12345678\n"  # at the limit, its newline
    with pytest.raises(InputError, match="stdin is not UTF-8 text"):
        chat_loop.read_line(io.TextIOWrapper(io.BytesIO(b"\xff\xfe what\n"), encoding="utf-8"))


def test_answer_cancel_first_sigint_cancels_second_interrupts_then_restores():
    before = signal.getsignal(signal.SIGINT)
    with AnswerCancel() as cancel:
        signal.raise_signal(signal.SIGINT)
        assert cancel.cancelled
        (flag,) = cancel.criteria()
        import torch

        assert flag(torch.zeros(2, 3, dtype=torch.long), None).tolist() == [True, True]
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_conversation_messages_hold_the_visual_first_and_the_history_in_order():
    class Clip:
        def messages(self, q):
            return [{"role": "system", "content": [{"type": "text", "text": "S"}]},
                    {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": q}]}]

    c = Conversation(Clip())
    assert c.messages("q1") == Clip().messages("q1")
    c.add("q1", "a1")
    c.add("q2", "a2")
    m = c.messages("q3")
    assert [x["role"] for x in m] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert m[:2] == Clip().messages("q1") and m[-1] == turn("user", "q3") and m[2] == turn("assistant", "a1")
    c.reset()
    assert c.messages("q4") == Clip().messages("q4") and len(c) == 0


def test_chat_help_explains_the_reuse_fits_80_columns_and_imports_no_torch(tmp_path):
    script = ("import sys, runpy\nsys.argv = ['vitcop', 'chat', '--help']\n"
              "try:\n    runpy.run_module('vitcop_cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
              "print('HEAVY=' + ','.join(m for m in ('torch', 'transformers') if m in sys.modules), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=subprocess_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert proc.stderr.strip().splitlines()[-1] == "HEAVY=", proc.stderr
    out = ANSI.sub("", proc.stdout)
    assert max(len(line) for line in out.splitlines()) <= 80 and "<bool>" not in out
    flat = " ".join(out.replace("│", " ").split())
    assert "decoded once and its pruned prefix (system prompt + visual tokens, prefilled once under the preset)" in flat
    for needle in ("/reset", "/preset P", "Ctrl-D", "--json", "--max-new-tokens", "--system"):
        assert needle in flat, needle
    ask_help = " ".join(ANSI.sub("", CliRunner().invoke(app, ["ask", "--help"], env={"COLUMNS": "80"}).stdout)
                        .replace("│", " ").split())
    assert "decoded once and its pruned prefix" in ask_help and "every question is answered on that one prefix" in ask_help
