"""The chat loop: read a line, run a ``/`` command or answer it as the next turn, render, repeat.

Contract: :class:`ChatLoop` ``(source, clip, preset, generation, *, json_out, stdin, stdout, console)``;
:meth:`ChatLoop.run` reads ``stdin`` line by line until end of input or ``/quit`` and returns the exit status.

- Reading: with a terminal on stdin, the prompt ``> `` goes to stderr before each line; piped input works the
  same, without the prompt. A line over :data:`~vitcop_cli.options.MAX_TEXT_CHARS` characters is refused
  (one error line) and skipped whole; stdin that is not UTF-8 ends the chat (exit 2). Blank lines are ignored.
- A line is a question unless it starts with ``/``: ``/reset`` (forget the history, keep the clip), ``/preset P``
  (re-open the clip under P; the history is cleared and the line says so; a bad P leaves clip and history as they
  were), ``/help``, ``/quit`` (or ``/exit``). Anything else starting with ``/`` gets a one-line hint; ``//text``
  asks ``/text``.
- Answering: the question is asked with the history (:class:`~.conversation.Conversation`) on the clip's kept
  pruned prefix (``PrunedClip.ask_chat``). Without ``--json`` the answer is streamed to stdout and a short report
  (tokens, time to first token, prefix reused / saved seconds) follows on stderr; with ``--json`` one compact JSON
  line per answer (``AskResult.to_dict()``) goes to stdout instead. New warnings go to stderr once each. A
  conversation the kept prefix cannot cover (``PrefixMiss``) is answered afresh from the clip's pixels
  (``ClipSource.answer_fresh``), saying so. Ctrl-C during an answer cancels it (:class:`~.cancel.AnswerCancel`):
  nothing of it is recorded and the chat goes on.
- Failures: a :class:`~vitcop_cli.errors.VitcopError` while answering or in a command prints one ``error:`` line
  (an input error with history, e.g. a conversation past the model's positions, points at ``/reset``) and the
  chat goes on; anything else propagates (the command's boundary turns it into one line and status 1).
  Ctrl-C at the prompt propagates ``KeyboardInterrupt`` (status 130).
- Exit status: 0 at end of input or ``/quit`` in an interactive chat (a terminal on stdin). With piped input it is
  that of the first line that went wrong (a failed answer or command: the error's status; an unknown command: 2),
  else 0, so a script can tell every line was handled.
"""

from __future__ import annotations

import json
from typing import TextIO

from rich.console import Console
from rich.markup import escape

from ..errors import InputError, PrefixMiss, VitcopError
from ..options import MAX_TEXT_CHARS
from .cancel import AnswerCancel
from .conversation import Conversation

__all__ = ["HELP", "ChatLoop", "read_line"]

HELP = """\
commands:
  /reset      forget the conversation (the clip stays open, its pruned prefix too)
  /preset P   re-open the clip under preset P (none, 1_3, 2_9, 1_9 or a YAML file); clears the conversation
  /help       this list
  /quit       end the chat (also /exit, or Ctrl-D)
  //text      ask a question that starts with /
Ctrl-C cancels the answer being generated; at the prompt it ends the chat."""

_QUIT = object()


def read_line(stream: TextIO, limit: int = MAX_TEXT_CHARS) -> str | None:
    """The next line of ``stream`` (None at its end). A line longer than ``limit`` characters is read to its end
    and refused (InputError), so the next call starts at the next line. Not UTF-8: InputError."""
    try:
        line = stream.readline(limit + 1)
        if line == "":
            return None
        if len(line) > limit and not line.endswith("\n"):
            while (rest := stream.readline(1 << 16)) and not rest.endswith("\n"):
                pass
            raise InputError(f"the line is longer than {limit:,} characters; it was skipped")
    except UnicodeDecodeError:
        raise _NotText("stdin is not UTF-8 text") from None
    return line


class _NotText(InputError):
    """Unreadable input: the chat cannot go on."""


class ChatLoop:
    """The interactive loop over one clip (see the module docstring).

    ``source``: the :class:`~.source.ClipSource` the clip came from (for ``/preset`` and answers afresh); ``clip``:
    the opened ``PrunedClip``; ``preset``: its preset's name; ``generation``: ``ask_chat``'s keywords
    (max_new_tokens, temperature, top_p, seed)."""

    def __init__(self, source, clip, preset: str, generation: dict, *, json_out: bool, stdin: TextIO,
                 stdout: TextIO, console: Console):
        self.source, self.preset, self.generation = source, preset, generation
        self.conversation = Conversation(clip)
        self.json_out, self.stdin, self.stdout, self.console = json_out, stdin, stdout, console
        self.interactive = _isatty(stdin)
        self.status = 0
        self.warned: set[str] = set()

    @property
    def clip(self):
        return self.conversation.clip

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        """Read and handle lines until end of input or ``/quit``; the exit status."""
        while True:
            if self.interactive:
                self.console.file.write("> ")
                self.console.file.flush()
            try:
                line = read_line(self.stdin)
            except _NotText:
                raise
            except InputError as exc:
                self._failed(exc)
                continue
            if line is None:
                if self.interactive:
                    self.console.file.write("\n")  # the shell's prompt on a line of its own
                break
            text = line.strip()
            if not text:
                continue
            if text.startswith("/") and not text.startswith("//"):
                if self._command(text) is _QUIT:
                    break
                continue
            self._answer(text[1:] if text.startswith("//") else text)
        return 0 if self.interactive else self.status

    # ---- commands --------------------------------------------------------------------------
    def _command(self, text: str):
        name, *rest = text.split(maxsplit=1)
        arg = rest[0].strip() if rest else ""
        if name in ("/quit", "/exit"):
            return _QUIT
        if name == "/help":
            self._say(HELP)
        elif name == "/reset":
            n = len(self.conversation)
            self.conversation.reset()
            self._say(f"conversation cleared ({n} turn{'s' * (n != 1)} forgotten); the clip stays open")
        elif name == "/preset":
            self._preset(arg)
        else:
            self._failed(InputError(f"unknown command {name}; /help lists the commands (//text asks '/text')"),
                         hint=True)
        return None

    def _preset(self, name: str) -> None:
        if not name:
            self._say(f"preset {self.preset}; /preset P re-opens the clip under P")
            return
        if "," in name:
            self._failed(InputError(f"/preset {name}: a chat runs one preset; give one name or YAML file"))
            return
        try:
            clip = self.source.open(name)  # a bad name fails before decoding: clip and history untouched
        except VitcopError as exc:
            self._failed(exc, f"still on preset {self.preset}")
            return
        n = len(self.conversation)
        self.conversation = Conversation(clip)  # the old clip (and its prefix) is let go here
        self.preset = name
        cleared = f"; conversation cleared ({n} turn{'s' * (n != 1)} forgotten)" if n else ""
        self._say(f"clip re-opened under preset {name}{cleared}")

    # ---- answers ---------------------------------------------------------------------------
    def _answer(self, question: str) -> None:
        messages = self.conversation.messages(question)
        stream = None if self.json_out else self._write
        with AnswerCancel() as cancel:
            options = dict(self.generation, on_text=stream, stopping_criteria=cancel.criteria())
            try:
                try:
                    result = self.clip.ask_chat(messages, **options)
                except PrefixMiss as miss:
                    self._say(f"the kept prefix does not cover this conversation ({miss}); answering afresh")
                    result = self.source.answer_fresh(messages, self.preset, **options)
            except VitcopError as exc:
                if stream is not None:
                    self._write("\n")
                longer = isinstance(exc, InputError) and len(self.conversation)  # e.g. past the model's positions
                self._failed(exc, "/reset starts the conversation afresh" if longer else "")
                return
        if stream is not None:
            self._write("\n")
        if cancel.cancelled:
            self.console.print("[yellow]answer cancelled[/] (not kept in the conversation)", highlight=False)
            return
        self.conversation.add(question, result.answer)
        if self.json_out:
            self._write(json.dumps(result.to_dict()) + "\n")
        else:
            from ..cli.answer_lines import short_report

            self.console.print(f"[dim]{escape(short_report(result))}[/]", highlight=False, soft_wrap=True)
        for w in result.warnings:
            if w not in self.warned:
                self.warned.add(w)
                self.console.print(f"[yellow]warning:[/] {escape(' '.join(w.split()))}", highlight=False,
                                   soft_wrap=True)

    # ---- output ----------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def _say(self, text: str) -> None:
        self.console.print(escape(text), highlight=False, soft_wrap=True)

    def _failed(self, exc: VitcopError, then: str = "", *, hint: bool = False) -> None:
        """One line on stderr (``error: ...``, or the bare hint); the chat goes on. Recorded for the exit status."""
        more = f" ({then})" if then else ""
        label = "" if hint else "[bold red]error:[/] "
        self.console.print(f"{label}{escape(str(exc))}{escape(more)}", highlight=False, soft_wrap=True)
        self.status = self.status or exc.exit_code


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
