"""The on-disk tier of batch prefix reuse (``--prefix-cache DIR``): a clip's first jobs look their pruned prefix up
in a :class:`~vitcop_cli.session.prefix_store.PrefixStore`; a prefix a job builds is saved there.

Contract:

- Keys. :meth:`DiskPrefixes.lookup` keys every job of an entry that keeps a prefix (its method never reads the
  question) with :func:`~vitcop_cli.session.prefix_store.prefix_key`: the model's identity, the media file's
  SHA-256 (hashed once per run of consecutive items on one clip) and the run's
  :class:`~vitcop_cli.session.prefix_key.ClipOptions` under the job's (preset label, method). The key is the
  content's, not the path's, so a second run, another ``--out``, another rank, machine sharing DIR, or ``vitcop
  ask --prefix-cache`` with the same options finds it. A file that cannot be hashed (missing, unreadable) is
  looked up nowhere: decoding it then says what is wrong.
- Lookups run where :mod:`.clips` runs (the prefetch thread, one item ahead): only the jobs named (the ones no
  kept in-memory prefix is expected to serve) are read; a hit is a ``(KeptPrefix, Visual)`` on the session's
  device, so up to one entry's hits are held ahead of the current clip's prefixes. ``DiskLookup.visual``: a
  hit's visual (no pixels for a video; its ``path`` the item's), enough to render tokens-only prompts.
- :meth:`DiskPrefixes.save` stores a prefix a job built (``PrefixStore.save``: atomic, the size cap applied).
- Never an error: a file that cannot be used (or read: no room for it) is a miss with one warning line for that
  job's result; a save that fails is a warning, as is a model whose identity cannot be told (no disk tier); a hit is still checked against the prompt's tokens by ``Session.answer`` (a miss is
  answered afresh). A hit never gives another answer than a fresh prefill: the store's files are bound to the
  model, versions and a checksum (:mod:`vitcop_cli.session.prefix_file`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

from ..errors import exc_line
from ..session.prefix_key import ClipOptions

__all__ = ["DiskLookup", "DiskPrefixes"]

Job = tuple  # (recorded method, preset label)


@dataclasses.dataclass
class DiskLookup:
    """One entry's dealings with the store: ``keys`` {job: store key} (every job that keeps a prefix), ``hits``
    {job: KeptPrefix} (popped when used), ``visual`` (a hit's visual or None), ``warnings`` {job: [line, ...]}
    (for that job's result), ``seconds`` {job: hashing + reading time, charged to its result's video_decode_s}."""

    keys: dict = dataclasses.field(default_factory=dict)
    hits: dict = dataclasses.field(default_factory=dict)
    visual: object = None
    warnings: dict = dataclasses.field(default_factory=dict)
    seconds: dict = dataclasses.field(default_factory=dict)


class DiskPrefixes:
    """``DiskPrefixes(session, store, options, method_of, keeps)``: ``options``: the run's :class:`ClipOptions`
    fields but preset and method; ``method_of(recorded method)``: the method it runs (the preset none's);
    ``keeps(recorded method)``: whether its answers keep a prefix."""

    def __init__(self, session, store, options: dict, method_of: Callable[[str], str], keeps: Callable[[str], bool]):
        self.session, self.store, self.options = session, store, dict(options)
        self.method_of, self.keeps = method_of, keeps
        self._digest: tuple[str, str | None] | None = None  # (video, digest) of the last clip hashed
        self._identity: str | None = None

    def _model(self) -> str:
        """The model part of the key, as :func:`~vitcop_cli.session.prefix_store.prefix_key` makes it (once)."""
        if self._identity is None:
            from ..session.prefix_store import store_identity

            self._identity = store_identity(self.session)
        return self._identity

    def lookup(self, video: str, todo, look: set) -> DiskLookup:
        """Keys for ``todo``'s jobs (``[(recorded method, preset)]``) on ``video`` (the key
        :func:`~vitcop_cli.session.prefix_store.prefix_key` gives, its media digest and model part computed once);
        the jobs in ``look`` (``{(recorded method, preset label)}``) are read from the store."""
        out = DiskLookup()
        t0 = time.perf_counter()
        digest = self._media_digest(video)
        if digest is None:
            return out
        from ..session.prefix_key import clip_key

        try:
            model = self._model()
        except Exception as exc:  # noqa: BLE001 - a model whose identity cannot be told: no disk tier for it
            out.warnings.update({job: [f"prefix cache: not used ({exc_line(exc)})"] for job in look})
            return out
        for m, pr in todo:
            job = (m, pr.label)
            if not self.keeps(m):
                continue
            options = ClipOptions(preset=pr.label, method=self.method_of(m), **self.options)
            out.keys[job] = key = clip_key(model, digest, options)
            if job not in look:
                continue
            warnings: list[str] = []
            try:
                hit = self.store.load(key, self.session, warnings=warnings)
            except Exception as exc:  # noqa: BLE001 - no room to read it (the file stays): a miss, never an error
                hit = None
                warnings.append(f"prefix cache: could not read {key[:12]}... ({exc_line(exc)}); the clip is "
                                "prefilled afresh")
            out.seconds[job], t0 = time.perf_counter() - t0, time.perf_counter()
            if warnings:
                out.warnings[job] = warnings
            if hit is not None:
                kept, visual = hit
                out.hits[job] = kept
                if out.visual is None:
                    out.visual = dataclasses.replace(visual, path=video)
        return out

    def save(self, lookup: DiskLookup, job: Job, kept, visual) -> list[str]:
        """Store ``kept`` (built for ``visual``, without pixels but for an image's) under the job's key; the
        warning lines (none when it went well)."""
        warnings: list[str] = []
        key = lookup.keys.get(job)
        if key is not None and kept is not None and visual is not None:
            try:
                self.store.save(key, self.session, kept, visual, warnings=warnings)
            except Exception as exc:  # noqa: BLE001 - the answer is written whatever becomes of the file
                warnings.append(f"prefix cache: could not save the prefix ({exc_line(exc)}); not kept on disk")
        return warnings

    def _media_digest(self, video: str) -> str | None:
        if self._digest is not None and self._digest[0] == video:
            return self._digest[1]
        from ..errors import InputError
        from ..media.video import check_path
        from ..session.prefix_key import media_digest

        try:
            check_path(os.fsdecode(video))  # never read a FIFO or a device
            digest = media_digest(video)
        except (OSError, InputError):
            digest = None
        self._digest = (video, digest)
        return digest
