"""Where the time to the first token goes: one generation's prefill, phase by phase.

Contract: :class:`PhaseTimer` hooks one model instance for one ``generate`` (a context manager, removable)
and marks instants on a :class:`pruning.timing.Timeline` (``perf_counter`` on CPU; one CUDA event per mark on
CUDA, resolved by a single synchronisation after ``generate`` — no host sync inside the model):

    start ─ (generate's own set-up) ─ encoder start ... encoder end [once per encoder call] ─ ... ─
    decoder layer 0 starts ─ (the decoder layers) ─ language model ends ─ (lm_head, logits processing,
    sampling of the first token) ─ the next forward starts (or ``generate`` returns): first token ready

:meth:`PhaseTimer.phases` turns the marks and the pruning engine's own timed work
(:attr:`pruning.engine.PruningHandle.seconds_by_tag`) into a :class:`~vitcop_cli.result.PhaseTimes`
whose phases are disjoint and add up to ``total_s`` (video decode + preprocess + generate start to first
token): pruning work is taken out of the phase it happened in (Stage-I capture out of the encoder, the
entry cut out of ``pre_llm_s``, cuts and gathers out of ``llm_layers_s``) and reported once, as ``pruning_s``.
"""

from __future__ import annotations

import torch

from pruning.timing import Timeline

from ..phase_times import PhaseTimes

__all__ = ["PhaseTimer"]


class PhaseTimer:
    """Marks of one generation (see the module docstring). ``vision_s``, ``ttft_s``, ``decode_s`` after
    :meth:`settle`."""

    def __init__(self, model, adapter, device: torch.device):
        self.model, self.adapter = model, adapter
        self.timeline = Timeline(device)
        self._handles: list = []
        self._encoder_calls = 0
        self._forwards = 0

    def mark(self, name: str) -> None:
        self.timeline.mark(name)

    def __enter__(self) -> "PhaseTimer":
        mark = self.timeline.mark

        def forward_start(*_):
            self._forwards += 1
            mark("forward_start" if self._forwards == 1 else "first_token")

        def encoder_start(*_):
            mark(f"encoder_start{self._encoder_calls}")

        def encoder_end(*_):
            mark(f"encoder_end{self._encoder_calls}")
            self._encoder_calls += 1

        encoder = self.adapter.vision_encoder
        self._handles = [
            self.model.register_forward_pre_hook(forward_start, prepend=True),
            self.model.register_forward_hook(lambda *_: mark("forward_end")),
            encoder.register_forward_pre_hook(encoder_start, prepend=True),
            encoder.register_forward_hook(encoder_end),
            self.adapter.decoder_layers[0].register_forward_pre_hook(lambda *_: mark("layers_start")),
            self.adapter.language_model.register_forward_hook(lambda *_: mark("lm_end")),
        ]
        return self

    def __exit__(self, *exc) -> bool:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def settle(self) -> None:
        """Resolve the marks (``start`` and ``end`` must have been marked around ``generate``)."""
        # with one generated token there is no next forward: the end of ``generate`` is when it was ready
        self._first = "first_token" if self.timeline.has("first_token") else "end"
        self.timeline.settle()
        t = self.timeline
        self.vision_s = sum(t.between(f"encoder_start{i}", f"encoder_end{i}") for i in range(self._encoder_calls))
        self.ttft_s = t.between("start", "forward_end")
        self.decode_s = t.between("forward_end", "end")

    def phases(self, *, video_decode_s: float, preprocess_s: float, pruning: dict[str, float]) -> PhaseTimes:
        """The breakdown (see the module docstring); ``pruning``: the engine's seconds per tag."""
        t = self.timeline
        to_first = t.between("start", self._first)
        setup = t.between("start", "encoder_start0" if self._encoder_calls else "layers_start")
        before_layers = t.between("start", "layers_start")
        return PhaseTimes(
            video_decode_s=video_decode_s,
            preprocess_s=preprocess_s,
            generate_setup_s=setup,
            # every tag but the entry cut and the decoder's runs inside the encoder's calls (Stage-I capture,
            # encoder reuse), so it comes out of the encoder's time
            vision_encoder_s=self.vision_s - sum(v for k, v in pruning.items() if k not in ("entry", "layers")),
            pre_llm_s=before_layers - setup - self.vision_s - pruning.get("entry", 0.0),
            llm_layers_s=t.between("layers_start", "lm_end") - pruning.get("layers", 0.0),
            pruning_s=sum(pruning.values()),
            first_token_s=t.between("lm_end", self._first),
            total_s=video_decode_s + preprocess_s + to_first,
        )
