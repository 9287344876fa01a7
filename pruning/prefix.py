"""A pruned prefix: system prompt + visual, prefilled once under a preset, kept to answer many questions.

Why reuse is exact (``shared/spec/VITCOP.md``, "Question independence"): every score ViTCoP reads
(Stage-I saliency, VIC features, key norms at Ls-1 and Ld-1) comes from visual tokens, and with the visual
placed before the question under causal attention, those tokens — and every survivor's KV entry — depend
only on what precedes them. So the prefill of tokens ``[0, P)`` (P = one past the last visual placeholder)
is the same for every question, and a question only has to prefill its own tokens ``[P, S)`` against it.

Contract:
- :func:`prefix_end` ``(adapter, input_ids (1, S)) -> P``: one past the last visual placeholder (0: none).
- :func:`pixels_digest` ``(inputs) -> str``: a digest of a prompt's pixel inputs and grids ("" when it has
  none). Placeholder tokens are the same for any clip of one size, so token equality alone cannot tell two
  clips apart: a prefix records the digest of the pixels it was built from, and a prompt that carries pixels
  is continued only from a prefix of the same pixels.
- :class:`PrunedPrefix`: what :meth:`pruning.engine.PruningHandle.build_prefix` keeps after prefilling
  ``[0, P)``: the prefix's ``input_ids`` (1, P), the KV cache of exactly the survivors per layer (a hybrid
  model's linear layers: their conv / recurrent state at the prefix end), the engine's bookkeeping of
  that prefill (:class:`~pruning.survivors.PrefillState`; None when nothing was pruned), the position state
  continuing the cache needs (M-RoPE deltas; :func:`pruning.compat.position_state`), the preset / method it
  was built under, N and the encoder patches (for reports). It is immutable: a question runs on
  :meth:`PrunedPrefix.fork`, a copy, so answering never changes it.
- :meth:`PrunedPrefix.covers` ``(input_ids (1, S))``: the prompt's first P tokens are exactly the prefix's;
  :meth:`PrunedPrefix.miss` ``(inputs, preset, method)``: why the prefix may not continue a prompt (None: it
  may): another preset or method, other tokens before the end of the visual, other pixels. A prompt given
  without pixels (tokens only) is the caller's promise that it is about the prefix's clip (a
  ``PrunedClip``, or a key that includes the media's content hash).
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field

import torch

from . import compat
from .survivors import PrefillState

__all__ = ["PrunedPrefix", "pixels_digest", "prefix_end"]


def prefix_end(adapter, input_ids: torch.Tensor) -> int:
    """P: one past the last image / video placeholder of ``input_ids`` (1, S); 0 when there is none."""
    where = adapter.visual_mask(input_ids)[0].nonzero().flatten()
    return int(where[-1]) + 1 if where.numel() else 0


#: most values of one pixel tensor :func:`pixels_digest` reads (evenly spaced): its cost stays bounded (a few
#: milliseconds, no full copy off the GPU) however long the clip, since it runs on every answer's prefill
DIGEST_SAMPLES = 1 << 20


def pixels_digest(inputs: dict) -> str:
    """BLAKE2b of every ``pixel_values*`` and ``*_grid_thw`` / ``image_sizes`` tensor of ``inputs`` (processor
    outputs), by name, shape and dtype; of a pixel tensor larger than :data:`DIGEST_SAMPLES` values, of that many
    evenly spaced values. "" when there are no pixels. A second line of defence behind the keys (which hash the
    media's bytes): it tells another clip or another sampling of the same size apart, for a caller that hands
    ``Session.answer`` a prefix of another prompt."""
    names = sorted(k for k, v in inputs.items() if isinstance(v, torch.Tensor)
                   and (k.startswith("pixel_values") or k.endswith("_grid_thw") or k == "image_sizes"))
    if not any(k.startswith("pixel_values") for k in names):
        return ""
    h = hashlib.blake2b(digest_size=16)
    for k in names:
        t = inputs[k].detach()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        flat = t.reshape(-1)
        if flat.numel() > DIGEST_SAMPLES:
            # integer positions: float32 steps round past the end once numel passes 2**24
            step = torch.arange(DIGEST_SAMPLES, dtype=torch.int64, device=flat.device)
            flat = flat[step * (flat.numel() - 1) // (DIGEST_SAMPLES - 1)]
        h.update(flat.contiguous().cpu().view(torch.uint8).numpy())
    return h.hexdigest()


@dataclass(frozen=True)
class PrunedPrefix:
    """The prefill of a prompt's system + visual tokens under one preset / method (see the module docstring).

    input_ids (1, P); cache: the survivors' KV cache (never extended; use :meth:`fork`); state: the
    engine's record of the prefix prefill (None when nothing was pruned: identity presets); position: the
    position state to restore before continuing (``{"rope_deltas": (1, 1)}`` or {}); n_visual: N;
    encoder_patches: (total, encoded) of the prefix's encoder calls, or None; pixels: :func:`pixels_digest` of the
    inputs it was built from."""

    input_ids: torch.Tensor
    cache: object
    state: PrefillState | None
    position: dict = field(default_factory=dict)
    preset: str = ""
    method: str = ""
    n_visual: int = 0
    encoder_patches: tuple[int, int] | None = None
    pixels: str = ""  # pixels_digest of the inputs it was built from

    @property
    def length(self) -> int:
        """P: prompt tokens the prefix covers."""
        return int(self.input_ids.shape[1])

    def cache_lengths(self, layers: int) -> list[int]:
        """Tokens each of ``layers`` decoder layers holds for the prefix (all P when nothing was pruned)."""
        return [self.length] * layers if self.state is None else list(self.state.cache_lengths)

    @property
    def nbytes(self) -> int:
        """Bytes of the cache's tensors (what keeping the prefix costs)."""
        return sum(t.numel() * t.element_size() for t in compat.cache_tensors(self.cache).values() if t is not None)

    @property
    def nbytes_unpruned(self) -> int:
        """Bytes the same prefix would take unpruned: every softmax layer holding all P tokens (a linear
        layer's state has the same size either way)."""
        total = 0
        for name, t in compat.cache_tensors(self.cache).items():
            if t is None:
                continue
            size = t.numel() * t.element_size()
            if name.endswith((".keys", ".values")) and t.shape[-2]:
                size = size // t.shape[-2] * self.length
            total += size
        return total

    def covers(self, input_ids: torch.Tensor) -> bool:
        """True when ``input_ids`` (1, S) starts with exactly this prefix and has tokens after it."""
        p = self.length
        return (
            input_ids.shape[0] == 1 and input_ids.shape[1] > p
            and torch.equal(input_ids[:, :p].to(self.input_ids.device), self.input_ids)
        )

    def miss(self, inputs: dict, preset: str, method: str) -> str | None:
        """Why this prefix may not continue the prompt ``inputs`` under ``preset`` / ``method`` (None: it may)."""
        if (self.preset, self.method) != (preset, method):
            return f"the kept prefix was built under {self.method} / {self.preset}"
        if not self.covers(inputs["input_ids"]):
            return "the prompt's tokens up to the end of the visual differ from the kept prefix's"
        digest = pixels_digest(inputs)
        if digest and digest != self.pixels:
            return "the prompt's pixels differ from the kept prefix's (another clip, or other sampling)"
        return None

    def fork(self) -> tuple[object, PrefillState | None]:
        """A copy of the cache and of the bookkeeping that a question may extend (the prefix stays as it is)."""
        state = None
        if self.state is not None:
            state = copy.copy(self.state)
            state.decoded, state.question_len, state.gathered = 0, 0, None
        return compat.copy_cache(self.cache), state
