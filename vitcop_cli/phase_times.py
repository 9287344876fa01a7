"""``PhaseTimes``: where the time to the first token went (``timings.phases`` of ask, ``rows.phases`` of profile).

A plain dataclass with no torch import, so ``vitcop --help`` and the profile package stay light.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["PhaseTimes"]


@dataclass
class PhaseTimes:
    """Where the time to the first token went, in disjoint phases that add up to ``total_s``
    (:mod:`vitcop_cli.session.phases`). Pruning work is taken out of the phase it ran in and counted once."""

    video_decode_s: float
    preprocess_s: float
    generate_setup_s: float  # generate() start to the vision encoder (its input preparation, logits processors)
    vision_encoder_s: float  # the encoder's forward(s), Stage-I capture taken out
    pre_llm_s: float  # encoder end to decoder layer 0: embedding merge, (M-)RoPE index, masks (entry cut taken out)
    llm_layers_s: float  # decoder layer 0 to the language model's end (pruning cuts / gathers taken out)
    pruning_s: float  # every pruning hook: Stage-I capture, entry cut, Stage II / III, gathers, run-time checks' reads
    first_token_s: float  # language model end to the first token ready: lm_head, logits processing, sampling
    total_s: float  # video decode + preprocess + generate() start to the first token ready
    # two-phase runs: the prefix prefill's end to the question's first decoder layer (the prefix's copy and
    # check, the question's generate() set-up); 0 for a single-pass prefill
    question_setup_s: float = 0.0

    def plus(self, other: "PhaseTimes") -> "PhaseTimes":
        """Field-wise sum: a prefix built earlier (its phases) charged to the question that first uses it."""
        return PhaseTimes(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})
