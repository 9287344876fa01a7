"""``Session``: a loaded model + processor; ask it as many questions as you like.

Contract: built by :func:`vitcop_cli.session.loading.load` (or directly, around any supported
model, as ``benchmarks/gpu_suite.py`` does). Its prompt side is :mod:`.prompting`, its generation
side :mod:`.generation`; this module holds what the model is (type, dtype, depth, positions), the
preset check against its depth, :meth:`Session.open` (decode, prepare and prune a clip once, keep its
pruned prefix: a :class:`~vitcop_cli.session.pruned_clip.PrunedClip` to ask many questions) and
:meth:`Session.ask` = open + one question, with every option checked before anything is decoded.
With a :class:`~vitcop_cli.session.prefix_store.PrefixStore` (``--prefix-cache DIR``), ``open`` looks the clip up on
disk first (its key: the media file's SHA-256, the open call's options, the model's identity): a hit is a clip
with no decode and no prefill (``source = "disk"``); a miss is opened as without a store and then saved.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from pruning.methods import method_class
from pruning.presets import Preset, PresetError

from ..defaults import DEFAULT_METHOD, DEFAULT_PRESET
from ..errors import InputError
from ..media.video import Visual
from ..options import check_frame_options, check_generation_options, check_text
from ..result import AskResult
from .choices import as_preset, check_method
from .generation import GenerationMixin
from .ingest import IngestMixin
from .prefix_key import ClipOptions
from .prompting import PromptingMixin, question_messages
from .pruned_clip import PrunedClip
from .runtime import Clock, MemoryMeter

if TYPE_CHECKING:
    from .prefix_store import PrefixStore

__all__ = ["Session"]


class Session(IngestMixin, PromptingMixin, GenerationMixin):
    """A loaded model + processor; ask it as many questions as you like.

    ``demo_model``: the model is a built-in random-weight demo model (:mod:`vitcop_cli.models.demo_models`);
    its results say so."""

    def __init__(self, *, name, model, processor, adapter, device, attn_implementation, load_s=None,
                 demo_model=False):
        self.name = name
        self.model = model
        self.processor = processor
        self.adapter = adapter
        self.device = device
        self.attn_implementation = attn_implementation
        self.load_s = load_s
        self.demo_model = demo_model
        self._clock = Clock(device)
        self._memory = MemoryMeter(device)

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def n_layers(self) -> int:
        """Decoder layers of the LLM."""
        return int(self.model.config.get_text_config().num_hidden_layers)

    @property
    def max_positions(self) -> int | None:
        """The LLM's maximum positions (``max_position_embeddings``): prompt + answer must fit."""
        n = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else None

    def check_preset(self, preset: str | Preset) -> Preset:
        """The preset, loaded and checked against this model's depth: InputError (one line) when its
        layers do not fit, before any clip is decoded."""
        preset = as_preset(preset)
        if not preset.is_identity:
            try:
                preset.resolve_layers(self.n_layers, self.adapter.lm_shape().layer_types or None)
            except PresetError as exc:
                raise InputError(f"{exc}; model {self.name}") from None
        return preset

    def open(
        self,
        video: str | Path,
        *,
        preset: str | Preset = DEFAULT_PRESET,
        method: str = DEFAULT_METHOD,
        fps: float | None = None,
        frames: int | None = None,
        max_frames: int = 768,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
        system: str | None = None,
        resize: str = "fast",
        decoder: str | None = None,
        decode_device: str = "cpu",
        prefix_store: PrefixStore | None = None,
    ) -> PrunedClip:
        """Decode ``video`` (a clip or an image file), encode and prune it once under ``preset`` / ``method``
        with the system prompt ``system``; ask the returned :class:`PrunedClip` as many questions as you like,
        each answered on the kept pruned prefix. Every option is checked before anything is decoded.

        ``prefix_store``: the on-disk prefix cache. ``video`` (a local file: fetch a URL first) is hashed and
        looked up under the options of this call; a hit decodes and prefills nothing (``clip.source == "disk"``),
        a miss (a file that cannot be used: with one warning on the first answer) is opened as usual and saved.
        Not used for a method that reads the question (FastV keeps no prefix)."""
        preset = self.check_preset(preset)
        check_method(method)
        check_frame_options(fps=fps, frames=frames, max_frames=max_frames)
        check_text(system, "the system prompt")
        started = time.perf_counter()
        key = None
        if prefix_store is not None and method_class(method).question_independent:
            options = ClipOptions(preset=preset.label, method=method, system=system, fps=fps, frames=frames,
                                  max_frames=max_frames, max_pixels=max_pixels, min_pixels=min_pixels, resize=resize,
                                  decoder=decoder, decode_device=decode_device)
            key = _prefix_key(self, video, options)
        notes: list[str] = []
        if key is not None:
            clip = self._disk_clip(prefix_store, key, path=video, preset=preset, method=method, system=system,
                                   max_pixels=max_pixels, min_pixels=min_pixels, started=started, notes=notes)
            if clip is not None:
                return clip
        visual = self.load_visual(video, fps=fps, frames=frames, max_frames=max_frames, max_pixels=max_pixels,
                                  min_pixels=min_pixels, resize=resize, decoder=decoder, decode_device=decode_device)
        return self._open_visual(visual, preset=preset, method=method, system=system, max_pixels=max_pixels,
                                 min_pixels=min_pixels, video_decode_s=time.perf_counter() - started,
                                 store=prefix_store if key is not None else None, key=key, notes=notes)

    def open_visual(
        self,
        visual: Visual,
        *,
        preset: str | Preset = DEFAULT_PRESET,
        method: str = DEFAULT_METHOD,
        system: str | None = None,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
        video_decode_s: float = 0.0,
        prefix_store: PrefixStore | None = None,
        prefix_key: str | None = None,
    ) -> PrunedClip:
        """:meth:`open` for an already decoded ``visual``; ``video_decode_s``: what decoding it took (charged to
        the first answer). ``prefix_store`` with ``prefix_key`` (:func:`~.prefix_store.prefix_key` of the file
        ``visual`` was decoded from and the options it was decoded with): a hit skips the prefill, a miss is
        saved (looking up before decoding, as :meth:`open` does, also saves the decode)."""
        preset = self.check_preset(preset)
        check_method(method)
        check_text(system, "the system prompt")
        started = time.perf_counter()
        notes: list[str] = []
        if prefix_store is not None and prefix_key is not None and method_class(method).question_independent:
            clip = self._disk_clip(prefix_store, prefix_key, path=visual.path, preset=preset, method=method,
                                   system=system, max_pixels=max_pixels, min_pixels=min_pixels,
                                   started=started - video_decode_s, notes=notes)
            if clip is not None:
                return clip
        else:
            prefix_store = None
        return self._open_visual(visual, preset=preset, method=method, system=system, max_pixels=max_pixels,
                                 min_pixels=min_pixels, video_decode_s=video_decode_s, store=prefix_store,
                                 key=prefix_key, notes=notes)

    def _disk_clip(self, store: PrefixStore, key: str, *, path, preset: Preset, method: str, system, max_pixels,
                   min_pixels, started: float, notes: list[str]) -> PrunedClip | None:
        """The clip stored under ``key``, or None (a miss; a file that could not be used adds its line to
        ``notes``). Its visual takes the path it is opened from now (the key is the content's, not the name's)."""
        hit = store.load(key, self, warnings=notes)
        if hit is None:
            return None
        kept, visual = hit
        visual = dataclasses.replace(visual, path=str(path))
        return PrunedClip(self, visual, kept, preset=preset, method=method, system=system, max_pixels=max_pixels,
                          min_pixels=min_pixels, video_decode_s=time.perf_counter() - started, source="disk",
                          warnings=notes)

    def _open_visual(self, visual: Visual, *, preset: Preset, method: str, system, max_pixels, min_pixels,
                     video_decode_s: float, store: PrefixStore | None, key: str | None,
                     notes: list[str]) -> PrunedClip:
        """Prepare and prefill ``visual``'s prefix into a clip; with ``store``, save it under ``key``."""
        if not method_class(method).question_independent:  # no prefix to keep: the clip keeps its pixels
            return PrunedClip(self, visual, None, preset=preset, method=method, system=system, max_pixels=max_pixels,
                              min_pixels=min_pixels, video_decode_s=video_decode_s, warnings=notes)
        # the prompt's system + visual part (its text after the visual is not prefilled)
        messages = question_messages(visual.kind, None, system)
        prepared = self.prepare_chat(visual, messages, max_pixels=max_pixels, min_pixels=min_pixels)
        kept = self.build_prefix(prepared, preset=preset, method=method, video_decode_s=video_decode_s)
        if store is not None and key is not None and kept is not None:
            store.save(key, self, kept, visual, warnings=notes)
        return PrunedClip(self, visual, kept, preset=preset, method=method, system=system, max_pixels=max_pixels,
                          min_pixels=min_pixels, video_decode_s=video_decode_s, warnings=notes)

    def ask(
        self,
        video: str | Path,
        question: str,
        *,
        preset: str | Preset = DEFAULT_PRESET,
        method: str = DEFAULT_METHOD,
        fps: float | None = None,
        frames: int | None = None,
        max_frames: int = 768,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
        system: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float | None = None,
        on_text: Callable[[str], None] | None = None,
        seed: int | None = None,
        resize: str = "fast",
        decoder: str | None = None,
        decode_device: str = "cpu",
    ) -> AskResult:
        """Answer ``question`` about ``video`` (a clip or an image file): :meth:`open` then
        :meth:`PrunedClip.ask` (``result.prefix.reused`` is false: the prefix is built for this question).
        ``resize`` / ``decoder`` / ``decode_device``: how the clip is decoded (:meth:`load_visual`)."""
        self.check_preset(preset)  # fail on a bad preset / method / length before decoding anything
        check_method(method)
        check_generation_options(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        check_text(question)
        self.check_lengths(max_new_tokens)
        if not question.strip():
            raise InputError("the question is empty")
        clip = self.open(video, preset=preset, method=method, fps=fps, frames=frames, max_frames=max_frames,
                         max_pixels=max_pixels, min_pixels=min_pixels, system=system, resize=resize, decoder=decoder,
                         decode_device=decode_device)
        return clip.ask(question, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                        on_text=on_text, seed=seed)


def _prefix_key(session: Session, video, options: ClipOptions) -> str | None:
    """The store key of the file ``video``: checked first as decoding checks it (an InputError names what is wrong,
    and a FIFO or device is never read); None when it cannot be read (decoding then says why)."""
    import os

    from ..media.video import check_path
    from .prefix_store import prefix_key

    check_path(os.fsdecode(video))
    try:
        return prefix_key(session, video, options)
    except OSError:
        return None
