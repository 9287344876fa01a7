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
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from ..media.video import IMAGE_EXTENSIONS
from ..session.prefix_key import ClipOptions, clip_key, media_digest
from .config import ServeConfig
from .prefix_cache import PrefixCache, resolve_capacity
from .request import ChatRequest, with_visual_kind

__all__ = ["PrefixPlan", "PrefixReuse", "file_signature", "media_kind", "request_key", "shared_system"]


@dataclass
class PrefixPlan:
    """One request's use of the cache. ``lookup``: "hit", a miss reason, or "off" (not looked up). On a hit
    ``clip`` is the cached clip; after an ``absent`` miss ``key`` is set until the decode proves the bytes
    hashed are the bytes decoded, and ``preset`` / ``system`` / ``keep`` (the visual the clip keeps) with it."""

    lookup: str = "off"
    clip: object = None
    key: str | None = None
    preset: object = None
    system: str | None = None
    keep: object = None
    signature: tuple | None = None

    def release(self) -> None:
        self.clip = self.keep = None


class PrefixReuse:
    def __init__(self, session, config: ServeConfig, metrics):
        self.session, self.config, self.metrics = session, config, metrics
        self.cache = PrefixCache(resolve_capacity(config.prefix_cache_bytes, getattr(session, "device", None)),
                                 metrics)
        self.identity = None
        if self.cache.enabled:
            from ..session.loading import model_identity

            self.identity = model_identity(config.model)

    @property
    def enabled(self) -> bool:
        return self.cache.enabled

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
            key = request_key(self.identity, path, request, self.config, plan.preset.label, system)
        except OSError:  # vanished or unreadable since the check: decoding says why
            plan.lookup = "off"
            return None
        clip = self.cache.get(key)
        if clip is not None:
            visual = dataclasses.replace(clip.visual, path=source)  # named as this request names it
            prepared = self.session.prepare_prompt(visual, with_visual_kind(request.messages, visual.kind),
                                                   max_pixels=clip.max_pixels, min_pixels=clip.min_pixels)
            if clip.prefix.prefix.covers(prepared.inputs["input_ids"]):
                plan.lookup, plan.clip = "hit", clip
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
        return self.cache.put(plan.key, clip)


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
                system: str | None) -> str:
    """The prefix key of ``request`` about the file ``path`` (read and hashed here)."""
    options = ClipOptions(
        preset=preset_label, method=request.method, system=system, fps=request.fps, frames=request.frames,
        max_frames=config.max_frames, max_pixels=request.max_pixels, min_pixels=config.min_pixels,
        resize=config.resize, decoder=config.decoder, decode_device=config.decode_device,
    )
    return clip_key(model, f"{media_kind(path)}:{media_digest(path)}", options)


def file_signature(path: str | Path) -> tuple[int, ...]:
    """What changes whenever a file's bytes may have changed: device, inode, size, modification and
    status-change times."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
