"""Read a clip's sampled frames in bounded chunks, decoding on a background thread while the caller's thread
finishes the chunk before (the overlap that makes the wait the larger of the two, not their sum).

Contract: :func:`read_frames` ``(decoder, indices, size, resize=None, chunk_bytes=...) -> frames``

- ``frames``: ``(len(indices), h, w, 3)`` uint8, ``(h, w) = size``, in the order of ``indices`` (sorted,
  distinct). One output tensor is allocated up front; every chunk is copied into it and dropped.
- ``resize=None`` (``--resize fast``): the decoder scales each frame to ``size`` itself
  (``decoder.read(chunk, size)``). ``resize=fn`` (``--resize exact``): the decoder returns source-size frames
  and the calling thread runs ``fn(chunk, size) -> (t, h, w, 3)`` uint8 (the processor's own resize) on each.
- Memory: at most three chunks are alive at once (one being decoded, one queued, one being finished); a chunk
  holds as many frames as fit in ``chunk_bytes`` at the size the decoder returns (at least one frame; by
  default 64 MiB of source-size frames, or 16 MiB of frames decoded at ``size``, which also bounds the sink's
  float copies), so a 4K clip is never held whole, whatever its length.
- Errors: an exception in the decoding thread (a corrupt frame midway: the decoder's own InputError) is
  re-raised in the caller unchanged; an exception in the caller's thread stops the decoding thread after its
  chunk in flight. Either way :func:`read_frames` returns only after the decoding thread has ended: no thread
  is left behind, and nothing partial is returned.
- ``sink`` (optional): ``sink.add(frames)`` runs on the caller's thread for every chunk, in order, once it is at
  ``size`` (the model's preprocessing, chunk by chunk, overlapping the next chunk's decode); ``align``: every
  chunk but the last holds a multiple of that many frames (the processor groups frames into temporal patches).
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

import torch

__all__ = ["CHUNK_BYTES", "chunk_frames", "read_frames"]

#: decoded bytes per chunk (source-size frames for exact, target-size for fast): 64 MiB
CHUNK_BYTES = 64 << 20


def chunk_frames(height: int, width: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Frames of ``height`` x ``width`` RGB uint8 that fit in ``chunk_bytes`` (at least 1)."""
    return max(1, chunk_bytes // max(1, height * width * 3))


def read_frames(
    decoder,
    indices: list[int],
    size: tuple[int, int],
    resize: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] | None = None,
    *,
    source_size: tuple[int, int],
    chunk_bytes: int | None = None,
    sink=None,
    align: int = 1,
) -> torch.Tensor:
    """The frames at ``indices``, at ``size``; ``source_size`` = (H, W) the decoder returns without scaling."""
    decoded = source_size if resize is not None else size
    if chunk_bytes is None:  # frames at the model's size feed the preprocessing: smaller chunks bound its copies
        chunk_bytes = CHUNK_BYTES if resize is not None else CHUNK_BYTES // 4
    step = chunk_frames(*decoded, chunk_bytes)
    step = max(align, step // align * align)
    chunks = [indices[i:i + step] for i in range(0, len(indices), step)]
    scale = None if resize is not None or size == source_size else size
    out = torch.empty((len(indices), size[0], size[1], 3), dtype=torch.uint8)
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def decode() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                _put_until(handoff, ("frames", decoder.read(chunk, scale)), stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            _put_until(handoff, ("error", exc), stop)

    worker = threading.Thread(target=decode, name="vitcop-decode", daemon=True)
    worker.start()
    try:
        at = 0
        for _ in chunks:
            kind, value = handoff.get()
            if kind == "error":
                raise value
            done = out[at:at + value.shape[0]]
            done.copy_(value if resize is None else resize(value, size))
            del value
            if sink is not None:
                sink.add(done)
            at += done.shape[0]
        return out
    finally:
        stop.set()
        _drain(handoff)
        worker.join()


def _put_until(q: queue.Queue, item, stop: threading.Event) -> None:
    """Hand ``item`` over, unless the caller gave up (``stop``)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
