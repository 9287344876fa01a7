"""File names in one-line messages: what a user can read and copy, whatever bytes the name holds.

Contract: :func:`shown_path` ``(path) -> str``: the bytes of a name that is not UTF-8 as ``\\xff`` escapes (not
the surrogates Python decodes them to), control and other non-printable characters escaped (``\\n``,
``\\x1b``), everything else as it is. Pure; imports nothing of vitcop's (the decoders and the loader both use it).
"""

from __future__ import annotations

import os

__all__ = ["shown_path"]


def shown_path(path: str | bytes | os.PathLike) -> str:
    """``path`` for a one-line message: the bytes of a name that is not UTF-8 as ``\\xff`` escapes (not the
    surrogates Python decodes them to), control and other non-printable characters escaped."""
    text = os.fsdecode(path)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escaped(ch) for ch in text)


def _escaped(ch: str) -> str:
    if "\udc80" <= ch <= "\udcff":  # an undecodable byte, as os.fsdecode carries it
        return f"\\x{ord(ch) - 0xDC00:02x}"
    return ch.encode("unicode_escape").decode("ascii")
