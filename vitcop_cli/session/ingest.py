"""Frames in for this model: sampled by the family's rule, decoded straight to the size its processor will use.

Contract: :class:`IngestMixin` gives ``Session`` (needs ``processor``, ``adapter``)

- ``frame_rule``: how the family groups frames (frames per temporal patch and why; LLaVA-OneVision: 1).
- ``frame_sizing(resize, max_pixels, min_pixels) -> FrameSizing``: the frame size the family's video processor
  resizes to, computed *before* decoding by the processor's own code (:func:`pruning.compat.video_frame_size`,
  a ``meta``-device clip: no pixels), under the same kwargs :meth:`prepare` will give it; for
  ``resize="exact"`` also the processor's own resize (:func:`pruning.compat.resize_video_frames`).
- ``load_visual(path, ...)``: :func:`vitcop_cli.media.video.load_visual` with both, and the model's
  preprocessing run chunk by chunk on the caller's thread while the decoding thread reads the next chunk
  (:class:`ChunkPreprocessor`: the video processor with its resize off on frames already at its size, rows
  written into one preallocated ``pixel_values``; :meth:`prepare` then uses them, after checking their shape
  against what the processor would make of the whole clip). ``resize="fast"`` (the
  default of ``ask``, ``batch``, ``profile`` and ``serve``): the decoder scales each sampled frame to that size,
  so the processor's own resize is the identity. ``resize="exact"``: frames decoded at source size in bounded
  chunks and resized by the processor's own resize chunk by chunk, so ``pixel_values`` are bit-identical to
  decoding the whole clip at source size and letting the processor resize it (tests/test_ingest.py proves it on
  every family). Either way memory holds a bounded chunk of source-size frames, never the clip.
"""

from __future__ import annotations

from types import SimpleNamespace

from pruning import compat

from ..errors import RuntimeFailure
from ..media.sampling import FrameRule
from ..media.video import FrameSizing, Visual, load_visual
from ..options import check_decoding

__all__ = ["IngestMixin"]


class IngestMixin:
    """``Session``'s frames-in side; needs ``processor`` and ``adapter``."""

    @property
    def frame_rule(self) -> FrameRule:
        """How this model's family groups video frames (frames per temporal patch, and why), for sampling."""
        return FrameRule(self.adapter.frames_per_patch(), self.adapter.frame_rounding_reason())

    def frame_sizing(self, resize: str = "fast", *, max_pixels: int | None = None,
                     min_pixels: int | None = None) -> FrameSizing:
        """The size this model's processor gives ``n`` frames of ``height`` x ``width``, and (exact) its resize."""
        check_decoding(resize)
        video_processor = self.processor.video_processor
        least = self.adapter.min_video_frames()

        def videos_kwargs(frames: int) -> dict:
            """What :meth:`prepare` will pass the video processor for ``frames`` frames (their size bounds)."""
            stand_in = SimpleNamespace(num_frames=frames, total_frames=frames, source_fps=None,
                                       indices=list(range(frames)))
            kwargs, _ = self.adapter.processor_kwargs(
                self.processor, "video", max_pixels=max_pixels, min_pixels=min_pixels, visual=stand_in
            )
            return kwargs.get("videos_kwargs", {})

        def target(frames: int, height: int, width: int) -> tuple[int, int]:
            seen = max(frames, least)  # what the processor will be given (a 1-frame clip repeated to a patch)
            return compat.video_frame_size(video_processor, seen, height, width, videos_kwargs(seen))

        def preprocess(frames: int, height: int, width: int) -> ChunkPreprocessor | None:
            if frames < least:
                return None  # repeated to a whole patch by prepare: preprocessed there, whole
            return ChunkPreprocessor(video_processor, videos_kwargs(frames), frames, height, width,
                                     self.adapter.frames_per_patch())

        exact = None if resize == "fast" else (lambda chunk, size: compat.resize_video_frames(video_processor,
                                                                                                chunk, size))
        return FrameSizing(target=target, resize=exact, preprocess=preprocess,
                           align=self.adapter.frames_per_patch())

    def load_visual(self, path, *, fps: float | None = None, frames: int | None = None, max_frames: int = 768,
                    max_pixels: int | None = None, min_pixels: int | None = None, resize: str = "fast",
                    decoder: str | None = None, decode_device: str = "cpu") -> Visual:
        """``path`` (a clip or an image) decoded for this model: see the module docstring."""
        check_decoding(resize, decoder, decode_device)
        return load_visual(
            path, fps=2.0 if fps is None else fps, frames=frames, max_frames=max_frames, rule=self.frame_rule,
            sizing=self.frame_sizing(resize, max_pixels=max_pixels, min_pixels=min_pixels), decoder=decoder,
            decode_device=decode_device,
        )


class ChunkPreprocessor:
    """The video processor run on a clip chunk by chunk, into one preallocated ``pixel_values_videos``.

    ``frames`` frames of ``height`` x ``width`` (already the processor's size, so its resize is turned off);
    chunks arrive in order, each a multiple of ``per_patch`` frames but the last. The processor's work on a
    video is per frame (rescale, normalise) and per temporal patch (patchify, padding the last partial patch),
    so the chunks' outputs laid end to end along the one dimension where their shapes differ from the whole
    clip's are exactly the whole clip's (the ``--resize exact`` oracle checks every tensor). The shapes come
    from the processor itself, on ``meta`` clips. ``result()``: ``{"pixel_values_videos": tensor}`` plus the
    whole clip's other outputs (Qwen's ``video_grid_thw``).

    Qwen-style processors take a cheaper route to the same rows (:func:`pruning.compat.video_patch_writer`:
    their own patchify and normalise, written straight into ``pixel_values``; two copies of each chunk instead
    of five, which matters on few cores, where preprocessing shares them with the decoder). The first chunk's
    first temporal patch is also run through the processor itself and must match bit for bit; otherwise
    :class:`~vitcop_cli.errors.RuntimeFailure` (a transformers release changed the processor: nothing is fed
    to the model). ``writer_used`` says which route ran.
    """

    def __init__(self, video_processor, videos_kwargs: dict, frames: int, height: int, width: int, per_patch: int):
        import torch

        self.processor = video_processor
        self.kwargs = {k: v for k, v in videos_kwargs.items() if k != "video_metadata"}
        self.kwargs["do_resize"] = False
        self.per_patch = per_patch
        whole = self._run(torch.empty((frames, height, width, 3), dtype=torch.uint8, device="meta"))
        part = self._run(torch.empty((per_patch, height, width, 3), dtype=torch.uint8, device="meta"))
        shape, one = whole["pixel_values_videos"].shape, part["pixel_values_videos"].shape
        self.dim = next(d for d in range(len(shape)) if shape[d] != one[d]) if shape != one else 0
        self.pixels = torch.empty(shape, dtype=whole["pixel_values_videos"].dtype)
        self.rest = {k: v for k, v in whole.items() if k != "pixel_values_videos" and v.device.type != "meta"}
        self.filled = 0
        rows_layout = self.pixels.dim() == 2 and self.dim == 0 and self.pixels.dtype == torch.float32
        self.write = compat.video_patch_writer(video_processor, self.kwargs) if rows_layout else None

    @property
    def writer_used(self) -> bool:
        return self.write is not None

    def _run(self, clip):
        return self.processor(videos=[clip], return_tensors="pt", **self.kwargs)

    def add(self, chunk) -> None:
        if self.write is not None:
            rows = self.write(chunk, self.pixels[self.filled:])
            if self.filled == 0:
                self._check_first_patch(chunk, rows)
        else:
            values = self._run(chunk)["pixel_values_videos"]
            rows = values.shape[self.dim]
            self.pixels.narrow(self.dim, self.filled, rows).copy_(values)
        self.filled += rows

    def _check_first_patch(self, chunk, rows: int) -> None:
        """The writer's rows for the first temporal patch == the processor's own (the run-time check)."""
        import torch

        expected = self._run(chunk[:self.per_patch])["pixel_values_videos"]
        written = self.pixels[:expected.shape[0]]
        if expected.shape[0] > rows or not torch.equal(written, expected.to(written.device)):
            raise RuntimeFailure(
                "the video preprocessing fast path (pruning.compat.video_patch_writer) no longer matches this "
                f"transformers release's video processor ({type(self.processor).__name__}); nothing was sent to "
                f"the model ({compat.version_note()}); please report it"
            )

    def result(self) -> dict:
        if self.filled != self.pixels.shape[self.dim]:
            raise RuntimeError(f"preprocessed {self.filled} of {self.pixels.shape[self.dim]} rows of the clip")
        return {"pixel_values_videos": self.pixels, **self.rest}
