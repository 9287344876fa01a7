"""One-line summaries of an answer, for commands that give several answers on one opened clip
(``ask`` with several questions, ``chat``).

Contract (plain text, no rich markup; importing this module is cheap: no torch):

- :func:`prefix_line` ``(result, label="") -> str``: where the answer's pruned prefix (system prompt +
  visual tokens, prefilled once under the preset) came from: built for this answer, or reused (from
  memory / disk) and the seconds that saved; the prompt tokens it covers and the KV bytes it holds
  against the unpruned prefix; or why no prefix is kept (a method that reads the question). ``label``
  (e.g. ``"answer 2/3"``) is put in front.
- :func:`short_report` ``(result) -> str``: tokens generated, time to the first token, total, decode rate
  and the prefix in a few words: ``chat``'s per-answer report.

Both read only :class:`~vitcop_cli.result.AskResult` fields (``prefix``, ``tokens``, ``timings``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..result import AskResult

__all__ = ["prefix_line", "short_report"]


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _reuse(p) -> str:
    """'reused from memory, saved 1.234 s' / 'built for this answer' / 'none kept (why)'."""
    if p is None or not p.kept:
        why = f" ({p.reason})" if p is not None and p.reason else ""
        return f"none kept{why}"
    if p.reused:
        return f"reused from {p.source}, saved {p.saved_s:.3f} s"
    missed = f" ({p.reason})" if p.reason else ""
    return f"built for this answer{missed}"


def prefix_line(result: "AskResult", label: str = "") -> str:
    """The answer's prefix in one line (see the module docstring)."""
    p = result.prefix
    head = f"{label} · " if label else ""
    line = f"{head}prefix: {_reuse(p)}"
    if p is not None and p.kept:
        line += (f" · system + visual {p.tokens:,} tokens, KV {_mib(p.bytes)} "
                 f"({_mib(p.bytes_unpruned)} unpruned)")
    return line


def short_report(result: "AskResult") -> str:
    """'3 tokens · ttft 0.120 s · total 0.300 s · 25.0 tokens/s · prefix reused from memory, saved 1.234 s'."""
    t = result.timings
    parts = [f"{result.tokens.generated} tokens", f"ttft {t.ttft_s:.3f} s", f"total {t.total_s:.3f} s"]
    if t.decode_tokens_per_s is not None:
        parts.append(f"{t.decode_tokens_per_s:.1f} tokens/s")
    parts.append(f"prefix {_reuse(result.prefix)}")
    return " · ".join(parts)
