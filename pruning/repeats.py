"""Exact repeats among groups of rows (temporal patches, frames), and spreading results back. Pure torch.

Used to encode each distinct temporal patch once (:mod:`pruning.encoder_reuse`): every supported vision
encoder attends within one temporal patch (Qwen-family ``cu_seqlens`` segments) or one frame / crop
(SigLIP in LLaVA-OneVision), so two groups with the same pixels and the same geometry give the same
encoder output, and only the first of them needs encoding.

Contract:
- :func:`find_repeats` ``(rows, sizes, keys=None) -> RepeatPlan``: ``rows`` (R, ...) holds consecutive
  groups of ``sizes[g]`` rows (``sum(sizes) == R``). Group g repeats an earlier group e exactly when their
  rows are *bitwise* equal (same shape, same bits: so ``-0.0`` and ``0.0`` differ, and a NaN equals
  only the same NaN) and ``keys[g] == keys[e]`` (the caller's geometry, e.g. a patch grid's (h, w):
  equal pixels at another shape are not a repeat). No threshold, no tolerance: a per-group integer
  checksum only narrows the candidates, ``torch.equal`` on the bits decides.
- :class:`RepeatPlan`: ``encoded`` (G',) the groups to encode (the first occurrence of each content,
  increasing), ``source`` (G,) for each group the position among the encoded groups of the one holding
  its content. :meth:`RepeatPlan.encoded_rows` gives the input rows to encode;
  :meth:`RepeatPlan.expand` turns a result computed on the encoded groups only — leading dimension
  ``L = r * (rows of the encoded groups)`` for one of the caller's ratios r (1 for per-patch rows, 1/4
  for 2x2-merged tokens), each group's share a whole number — into the result for every group, in the
  original group order; any other length is refused.
  Without repeats ``expand`` returns its argument itself (no copy).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import torch

__all__ = ["RepeatPlan", "find_repeats"]

#: elements summed per step of the checksum (bounds its int64 temporary to 128 MiB)
_CHECKSUM_CHUNK = 1 << 24


@dataclass(frozen=True)
class RepeatPlan:
    """Which groups to encode and where every group's result comes from (see the module docstring).

    sizes: rows of each group (G,); source: for each group, index into ``encoded`` of its content (G,);
    encoded: the groups to encode, increasing (G',). ``source[encoded[j]] == j``."""

    sizes: tuple[int, ...]
    source: tuple[int, ...]
    encoded: tuple[int, ...]
    _indices: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def total(self) -> int:
        """Groups in the input (G)."""
        return len(self.sizes)

    @property
    def n_encoded(self) -> int:
        """Distinct groups, the ones encoded (G')."""
        return len(self.encoded)

    @property
    def has_repeats(self) -> bool:
        return self.n_encoded < self.total

    def encoded_rows(self, device=None) -> torch.Tensor:
        """(R',) long: the input rows of the encoded groups, in order."""
        starts = _starts(self.sizes)
        return torch.cat(
            [torch.arange(starts[g], starts[g] + self.sizes[g], device=device) for g in self.encoded]
        ) if self.encoded else torch.zeros(0, dtype=torch.long, device=device)

    def expand(self, x: torch.Tensor, what: str = "an encoder output", scales: Sequence[Fraction] = (1,)) -> torch.Tensor:
        """``x`` (L, ...) computed on the encoded groups -> (L * R / R', ...) for every group, in order.

        ``scales``: the rows a result may have per input row (1: one per patch / frame; 1/4: one per 2x2-merged
        token). L must be R' times one of them, and every group's share ``sizes[g] * L / R'`` a whole number of
        rows; otherwise a ValueError naming ``what``."""
        if not self.has_repeats:
            return x
        if not isinstance(x, torch.Tensor) or x.dim() == 0:
            raise ValueError(f"{what} is not a tensor with a leading row dimension; it cannot be spread back")
        return x.index_select(0, self._index(x.shape[0], x.device, what, tuple(Fraction(r) for r in scales)))

    def _index(self, length: int, device, what: str, scales: tuple[Fraction, ...]) -> torch.Tensor:
        """(length * R / R',) rows of a result of ``length`` rows that make up the full one (cached)."""
        key = (length, str(device), scales)
        if key not in self._indices:
            encoded_rows = sum(self.sizes[g] for g in self.encoded)
            if Fraction(length, encoded_rows) not in scales or any(size * length % encoded_rows for size in self.sizes):
                raise ValueError(
                    f"{what} has {length} rows for {encoded_rows} encoded input rows in groups of "
                    f"{sorted(set(self.sizes))}: its rows do not follow the groups (rows per input row "
                    f"{', '.join(map(str, scales))}), so it cannot be spread back"
                )
            pieces = [size * length // encoded_rows for size in self.sizes]
            from_starts = _starts([pieces[g] for g in self.encoded])
            to_starts = _starts(pieces)
            shift = torch.tensor([from_starts[s] - to_starts[g] for g, s in enumerate(self.source)], device=device)
            lengths = torch.tensor(pieces, device=device)
            self._indices[key] = torch.arange(sum(pieces), device=device) + shift.repeat_interleave(lengths)
        return self._indices[key]


def find_repeats(rows: torch.Tensor, sizes: Sequence[int], keys: Sequence[Hashable] | None = None) -> RepeatPlan:
    """The plan that encodes each distinct group of ``rows`` once (see the module docstring)."""
    sizes = tuple(int(s) for s in sizes)
    if sum(sizes) != rows.shape[0] or any(s <= 0 for s in sizes):
        raise ValueError(f"groups of {list(sizes)} rows do not tile {rows.shape[0]} rows")
    if keys is not None and len(keys) != len(sizes):
        raise ValueError(f"{len(keys)} keys for {len(sizes)} groups")
    words = _words(rows)
    group_of_row = torch.arange(len(sizes), device=rows.device).repeat_interleave(torch.tensor(sizes, device=rows.device))
    checksums = torch.zeros(len(sizes), dtype=torch.int64, device=rows.device).index_add_(
        0, group_of_row, _row_checksums(words)
    )
    starts = _starts(sizes)
    group = lambda g: words[starts[g]:starts[g] + sizes[g]]  # noqa: E731
    candidates: dict[tuple, list[int]] = {}  # (size, key, checksum) -> encoded groups with that signature
    source, encoded = [], []
    for g, checksum in enumerate(checksums.tolist()):
        signature = (sizes[g], None if keys is None else keys[g], checksum)
        match = next((j for j in candidates.get(signature, []) if torch.equal(group(encoded[j]), group(g))), None)
        if match is None:
            match = len(encoded)
            encoded.append(g)
            candidates.setdefault(signature, []).append(match)
        source.append(match)
    return RepeatPlan(sizes=sizes, source=tuple(source), encoded=tuple(encoded))


def _words(rows: torch.Tensor) -> torch.Tensor:
    """(R, W) the bytes of each row as the widest integers that tile them: equal words <=> equal bits (floats
    compare bitwise, not by value: ``-0.0 != 0.0``, a NaN equals the same NaN)."""
    flat = rows.contiguous().reshape(rows.shape[0], -1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    width = flat.shape[1] * flat.element_size()
    for dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        size = torch.empty(0, dtype=dtype).element_size()
        if width % size == 0:
            return flat.view(torch.uint8).view(dtype)
    raise AssertionError("unreachable: a row is a whole number of bytes")


def _row_checksums(words: torch.Tensor) -> torch.Tensor:
    """(R,) int64: each row's words summed with wrap-around — exact integer arithmetic, so the same bits give
    the same checksum whatever the reduction order (device, kernel, row count)."""
    if words.dtype == torch.int64:
        return words.sum(1)
    chunk = max(1, _CHECKSUM_CHUNK // max(1, words.shape[1]))  # bounds the int64 temporary of the sum
    return torch.cat([part.sum(1, dtype=torch.int64) for part in words.split(chunk)])


def _starts(sizes: Sequence[int]) -> list[int]:
    out, total = [], 0
    for size in sizes:
        out.append(total)
        total += size
    return out
