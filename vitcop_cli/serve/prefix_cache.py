"""The server's bounded LRU of pruned prefixes: key -> :class:`~vitcop_cli.session.PrunedClip`, capped in bytes.

Contract:

- :class:`PrefixCache` ``(capacity, metrics=None)``: :meth:`~PrefixCache.get` returns the clip kept under a key
  (and makes it the most recently used) or None; :meth:`~PrefixCache.put` keeps a clip, first evicting the least
  recently used ones until it fits, and refuses (returns False) a clip larger than the whole capacity, or any
  clip when the capacity is 0 (off). Replacing a key frees the old entry first. ``bytes`` never exceeds
  ``capacity``: it is checked before anything is added, under one lock, so the worker's two threads (lookups
  while a request is prepared, insertions after the model ran) and any other caller are safe.
- What an entry costs is :func:`held_bytes` of its clip, measured once when it is put (a kept clip never
  changes): its KV cache (``PrunedClip.nbytes``), the tensors of the prefill's bookkeeping and the prefix's
  token ids, and an image clip's decoded image (the library keeps it to render later prompts). A request being
  answered holds its own clip too (the one generating and the one prepared ahead: at most two, outside the cap,
  as without a cache).
- :func:`default_capacity` ``(device)``: the ``--prefix-cache-mb`` default: 10% of the GPU's total memory on
  CUDA, else min(10% of the machine's RAM, 2 GiB).
- With ``metrics`` (:class:`~vitcop_cli.serve.metrics.Metrics`): evictions, oversize refusals, and the gauges
  bytes / entries / capacity are kept current (hits and misses are counted by the caller, who knows why).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

MiB = 1 << 20
CPU_DEFAULT_CAP = 2048 * MiB
DEFAULT_FRACTION = 0.10

__all__ = ["PrefixCache", "default_capacity", "held_bytes", "resolve_capacity"]


class PrefixCache:
    def __init__(self, capacity: int, metrics=None):
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0 bytes (got {capacity})")
        self.capacity = int(capacity)
        self._metrics = metrics
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        if metrics is not None:
            metrics.prefix_capacity.set(self.capacity)
            self._gauges()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keys(self) -> list[str]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._entries)

    def get(self, key: str):
        """The clip kept under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: str, clip, size: int | None = None) -> bool:
        """Keep ``clip`` under ``key``; ``size``: its bytes (default :func:`held_bytes`). False when it was not
        kept (caching off, or larger than the capacity)."""
        if not self.enabled:
            return False
        size = held_bytes(clip) if size is None else int(size)
        if size > self.capacity:
            if self._metrics is not None:
                self._metrics.prefix_oversize.inc()
            return False
        evicted = 0
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            while self._entries and self._bytes + size > self.capacity:
                _, (_, freed) = self._entries.popitem(last=False)
                self._bytes -= freed
                evicted += 1
            self._entries[key] = (clip, size)
            self._bytes += size
            assert self._bytes <= self.capacity
            self._gauges()
        if evicted and self._metrics is not None:
            self._metrics.prefix_evictions.inc(evicted)
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._gauges()

    def _gauges(self) -> None:  # with the lock held (or before the cache is shared)
        if self._metrics is not None:
            self._metrics.prefix_bytes.set(self._bytes)
            self._metrics.prefix_entries.set(len(self._entries))


def held_bytes(clip) -> int:
    """Bytes ``clip`` (a :class:`~vitcop_cli.session.PrunedClip`) keeps alive: its KV cache, its prefix's other
    tensors (token ids, the prefill's bookkeeping, position state; each storage counted once, whole) and, for
    an image, the decoded image."""
    total = int(clip.nbytes)
    kept = getattr(clip, "prefix", None)
    prefix = getattr(kept, "prefix", None)
    if prefix is not None:
        total += _tensor_bytes((prefix.input_ids, prefix.state, prefix.position), set())
    visual = getattr(clip, "visual", None)
    if visual is not None:
        total += _pixel_bytes(visual.frames) + _tensor_bytes(visual.processed, set())
    return total


def _pixel_bytes(frames) -> int:
    if frames is None:
        return 0
    if hasattr(frames, "getbands"):  # a PIL image: one byte per band and pixel
        return len(frames.getbands()) * frames.width * frames.height
    return _tensor_bytes(frames, set())


def _tensor_bytes(obj, seen: set, depth: int = 0) -> int:
    """Bytes of the storages of every tensor reachable from ``obj`` through dataclass fields, dicts, lists,
    tuples and sets (each storage once; ``meta`` tensors hold none)."""
    import torch

    if obj is None or depth > 8:
        return 0
    if isinstance(obj, torch.Tensor):
        if obj.is_meta:
            return 0
        storage = obj.untyped_storage()
        ident = (obj.device, storage.data_ptr())
        if ident in seen:
            return 0
        seen.add(ident)
        return storage.nbytes()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = list(obj)
    else:
        return 0
    return sum(_tensor_bytes(item, seen, depth + 1) for item in items)


def default_capacity(device) -> int:
    """The default capacity on ``device`` (a ``torch.device`` / string / None for the CPU): 10% of a CUDA
    device's total memory; elsewhere (CPU, MPS) min(10% of RAM, 2 GiB)."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(dev).total_memory * DEFAULT_FRACTION)
    import psutil

    return int(min(psutil.virtual_memory().total * DEFAULT_FRACTION, CPU_DEFAULT_CAP))


def resolve_capacity(configured: int | None, device) -> int:
    """``configured`` bytes, or :func:`default_capacity` of ``device`` when it is None."""
    return default_capacity(device) if configured is None else int(configured)
