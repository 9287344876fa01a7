"""The worker's side of prefix reuse: which requests may share a pruned prefix, under which key, and the
lookup / keep steps around the model.

Contract:

- :func:`shared_system` ``(messages) -> (shareable, system)``: a conversation's system + visual part can be
  kept and shared when it is ``[system turn with one text part]?`` followed by a user turn whose *first* part
  is the visual (later turns, assistant answers included, come after the visual: a resent multi-turn chat
  shares its first turn's prefix). ``system`` is that text (None without a system turn). Anything else (text
  or another turn before the visual, a system turn of several parts, a second system turn first) is not
  shareable. This is a cheap pre-check, not the proof: a cached prefix is used only when the request's tokens
  up to the end of the visual are exactly its own (``PrunedPrefix.covers``).
- :func:`request_key` ``(model, path, request, config, preset_label, system) -> str``: the cache key,
  :func:`vitcop_cli.session.prefix_key.clip_key` of the model's identity, the media (its kind, which the
  file's extension decides, and the SHA-256 of the bytes the server itself read: a client never names a
  hash or a key), and every option the prefix depends on (preset label, method, system prompt, frame
  sampling, pixel bounds, decoder, resize path, decode device).
- :class:`PrefixReuse` ``(session, config, metrics)`` owns the :class:`~vitcop_cli.serve.prefix_cache.PrefixCache`
  (capacity ``config.prefix_cache_bytes``, None: the device's default; 0: off) and fills a job's
  :class:`PrefixPlan`: :meth:`~PrefixReuse.lookup` (prepare thread, after the media is fetched) counts a hit or a
  miss (``absent`` / ``not_covered`` / ``not_kept``) and, on a hit, returns the request's tokens-only
  ``Prepared`` (nothing decoded); :meth:`~PrefixReuse.decoded` (after a miss's decode) notes what the clip would
  keep, unless the local file changed between hashing and decoding (:func:`file_signature`: then it is
  answered but not cached); :meth:`~PrefixReuse.keep` (generation thread, after the model built the prefix)
  caches it under the key looked up.
- The disk tier (``config.prefix_cache_dir``: ``--prefix-cache DIR``, a
  :class:`~vitcop_cli.session.prefix_store.PrefixStore` capped at ``config.prefix_cache_disk_bytes``; the
  store key is the :func:`request_key` itself): a memory miss whose key is ``absent`` reads the key's file; a
  usable file that covers the request's tokens is a **disk hit** (``plan.lookup == "hit_disk"``: nothing
  decoded or prefilled, answered with ``prefix.source == "disk"``) and goes into the memory LRU, so the next
  request is a memory hit. Otherwise it is the ``absent`` miss it was, and :meth:`~PrefixReuse.persist`
  (generation thread, once the answer is handed back) writes the prefix that answer built (the visual without
  pixels for a video, with its decoded image for an image; no client-given name). A file that cannot be used
  or written is a miss / not saved: one ``logging.warning`` line on ``vitcop.serve``, counted in
  ``vitcop_prefix_cache_disk_errors_total``, never a failed request. The disk tier works with the memory one
  off (``--prefix-cache-mb 0``): every lookup then reads the folder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import exc_line
from ..media.video import IMAGE_EXTENSIONS
from ..session.prefix_key import ClipOptions, clip_key, media_digest
from .config import ServeConfig
from .prefix_cache import PrefixCache, resolve_capacity
from .request import ChatRequest, with_visual_kind

log = logging.getLogger("vitcop.serve")

__all__ = ["PrefixPlan", "PrefixReuse", "file_signature", "media_kind", "request_key", "shared_system"]


@dataclass
class PrefixPlan:
    """One request's use of the cache. ``lookup``: "hit" (memory), "hit_disk", a miss reason, or "off" (not
    looked up). On a hit ``clip`` is the cached clip; after an ``absent`` miss ``key`` is set until the decode
    proves the bytes hashed are the bytes decoded, and ``preset`` / ``system`` / ``keep`` (the visual the clip
    keeps) with it; ``kept``: the prefix its answer built, until :meth:`PrefixReuse.persist` writes it to disk."""

    lookup: str = "off"
    clip: object = None
    key: str | None = None
    store_key: str | None = None  # the disk tier's key (ask's / batch's spelling), when there is a disk tier
    preset: object = None
    system: str | None = None
    keep: object = None
    signature: tuple | None = None
    kept: object = None

    @property
    def source(self) -> str:
        """Where a hit's prefix came from, for ``prefix.source``: "disk" or "memory"."""
        return "disk" if self.lookup == "hit_disk" else "memory"

    def release(self) -> None:
        self.clip = self.keep = self.kept = None


class PrefixReuse:
    def __init__(self, session, config: ServeConfig, metrics):
        self.session, self.config, self.metrics = session, config, metrics
        self.cache = PrefixCache(resolve_capacity(config.prefix_cache_bytes, getattr(session, "device", None)),
                                 metrics)
        self.store = None
        if config.prefix_cache_dir is not None:
            from ..session.prefix_store import PrefixStore

            self.store = PrefixStore(config.prefix_cache_dir, max_bytes=config.prefix_cache_disk_bytes)
        self.identity = self.store_identity = None
        if self.enabled:
            from ..session.loading import model_identity

            self.identity = model_identity(config.model)
        if self.store is not None:  # the disk tier's files are keyed as ask's and batch's: one folder serves all
            from ..session.prefix_store import store_identity

            self.store_identity = store_identity(session)

    @property
    def enabled(self) -> bool:
        return self.cache.enabled or self.store is not None

    def lookup(self, plan: PrefixPlan, request: ChatRequest, path: Path, source: str, local: bool):
        """Fill ``plan`` for ``request`` about the fetched file ``path`` (``source``: how the request names it;
        ``local``: a file of the operator's, which may change, not a private download). A hit: the request's
        tokens-only ``Prepared``; else None."""
        from pruning.methods import method_class

        from ..media.video import check_path

        if not method_class(request.method).question_independent:
            plan.lookup = "not_kept"
        else:
            shareable, system = shared_system(request.messages)
            plan.lookup = "absent" if shareable else "not_covered"
        if plan.lookup != "absent":
            self.metrics.prefix_misses.labels(plan.lookup).inc()
            return None
        check_path(str(path))  # a missing / unreadable / non-regular file: the decoder's own 400, never read here
        plan.preset = self.session.check_preset(request.preset)
        try:
            plan.signature = file_signature(path) if local else None
            key, plan.store_key = request_key(self.identity, path, request, self.config, plan.preset.label, system,
                                              store_model=self.store_identity)
        except OSError:  # vanished or unreadable since the check: decoding says why
            plan.lookup = "off"
            return None
        clip, disk = self.cache.get(key), False
        if clip is None and self.store is not None:
            clip = self._from_disk(plan.store_key, plan, request, system)
            disk = clip is not None
        if clip is not None:
            visual = dataclasses.replace(clip.visual, path=source)  # named as this request names it
            prepared = self.session.prepare_prompt(visual, with_visual_kind(request.messages, visual.kind),
                                                   max_pixels=clip.max_pixels, min_pixels=clip.min_pixels)
            if clip.prefix.prefix.covers(prepared.inputs["input_ids"]):
                plan.lookup, plan.clip = ("hit_disk" if disk else "hit"), clip
                if disk:
                    self.metrics.prefix_disk_hits.inc()
                    self.cache.put(key, clip)  # the next request about it is a memory hit
                else:
                    self.metrics.prefix_hits.inc()
                return prepared
            plan.lookup = "not_covered"  # same key, other tokens before the question: answered afresh, not cached
        else:
            plan.key, plan.system = key, system
        self.metrics.prefix_misses.labels(plan.lookup).inc()
        return None

    def decoded(self, plan: PrefixPlan, path: Path, visual) -> None:
        """After a miss's decode: what its clip keeps (a video's frame shape, an image's decoded image), or no
        caching at all when the local file changed since it was hashed."""
        if plan.key is None:
            return
        if plan.signature is not None and file_signature(path) != plan.signature:
            plan.key = None  # the bytes hashed may not be the bytes decoded
            return
        from ..session.prompting import without_pixels

        plan.keep = without_pixels(visual) if visual.kind == "video" else dataclasses.replace(visual, processed=None)

    def keep(self, plan: PrefixPlan, kept, request: ChatRequest) -> bool:
        """Cache the prefix ``kept`` (a ``KeptPrefix``) that answering a miss built; False when it was not kept."""
        if plan.key is None or kept is None:
            return False
        from ..session.pruned_clip import PrunedClip

        clip = PrunedClip(self.session, plan.keep, kept, preset=plan.preset, method=request.method,
                          system=plan.system, max_pixels=request.max_pixels, min_pixels=self.config.min_pixels)
        if self.store is not None:
            plan.kept = kept  # written by persist(), after the answer is handed back
        return self.cache.put(plan.key, clip)

    def persist(self, plan: PrefixPlan) -> bool:
        """Write the prefix :meth:`keep` noted to the disk tier; False when there is none or it was not written
        (a warning in the log). Never raises: the request it was built for is already answered."""
        if self.store is None or plan.kept is None or plan.key is None or plan.keep is None or plan.store_key is None:
            return False
        kept, plan.kept = plan.kept, None
        lines: list[str] = []
        try:  # no client-given name (a path, a URL) in a shared file: a hit is named as its own request names it
            self.store.save(plan.store_key, self.session, kept, dataclasses.replace(plan.keep, path=""),
                            warnings=lines)
        except Exception as exc:  # noqa: BLE001 - a bug or an odd failure in writing: the answer stands
            lines.append(f"prefix cache: could not save the prefix in {self.store.root} ({exc_line(exc)})")
        self._log(lines)
        if lines:
            return False
        self.metrics.prefix_disk_saves.inc()
        return True

    def _from_disk(self, key: str, plan: PrefixPlan, request: ChatRequest, system: str | None):
        """The clip stored under ``key`` in the disk tier, or None (a miss; an unusable file: a warning)."""
        from ..session.pruned_clip import PrunedClip

        lines: list[str] = []
        try:
            hit = self.store.load(key, self.session, warnings=lines)
        except Exception as exc:  # noqa: BLE001 - e.g. no memory to read it: prefilled afresh, the file kept
            hit = None
            lines.append(f"prefix cache: could not read {key[:12]}... in {self.store.root} ({exc_line(exc)}); "
                         "the clip is prefilled afresh")
        self._log(lines)
        if hit is None:
            return None
        kept, visual = hit
        return PrunedClip(self.session, visual, kept, preset=plan.preset, method=request.method, system=system,
                          max_pixels=request.max_pixels, min_pixels=self.config.min_pixels, source="disk")

    def _log(self, lines: list[str]) -> None:
        for line in lines:
            log.warning("%s", line)
            self.metrics.prefix_disk_errors.inc()


def shared_system(messages: list[dict]) -> tuple[bool, str | None]:
    """(shareable, system text or None) of a request's messages (the visual part is ``{"type": "visual"}``)."""
    at, system = 0, None
    if messages and messages[0].get("role") == "system":
        parts = messages[0].get("content", [])
        if len(parts) != 1 or parts[0].get("type") != "text":
            return False, None
        system, at = parts[0]["text"], 1
    if at >= len(messages) or messages[at].get("role") != "user":
        return False, None
    parts = messages[at].get("content", [])
    if not parts or parts[0].get("type") != "visual":
        return False, None
    return True, system


def media_kind(path: str | Path) -> str:
    """"image" or "video", as the decoder decides it: by the file's extension."""
    return "image" if Path(path).suffix.lower().lstrip(".") in IMAGE_EXTENSIONS else "video"


def request_key(model: str, path: str | Path, request: ChatRequest, config: ServeConfig, preset_label: str,
                system: str | None, store_model: str | None = None) -> tuple[str, str | None]:
    """The prefix keys of ``request`` about the file ``path`` (read and hashed here, once): the memory LRU's,
    and with ``store_model`` (:func:`vitcop_cli.session.prefix_store.store_identity`) the disk tier's, which is
    :func:`vitcop_cli.session.prefix_store.prefix_key` of the same file and options (so ``ask`` / ``batch``
    ``--prefix-cache`` files are found here and the other way round)."""
    options = ClipOptions(
        preset=preset_label, method=request.method, system=system, fps=request.fps, frames=request.frames,
        max_frames=config.max_frames, max_pixels=request.max_pixels, min_pixels=config.min_pixels,
        resize=config.resize, decoder=config.decoder, decode_device=config.decode_device,
    )
    digest = media_digest(path)
    store = clip_key(store_model, digest, options) if store_model is not None else None
    return clip_key(model, f"{media_kind(path)}:{digest}", options), store


def file_signature(path: str | Path) -> tuple[int, ...]:
    """What changes whenever a file's bytes may have changed: device, inode, size, modification and
    status-change times."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
