"""Where the time to the first token goes: one answer's prefill(s), phase by phase.

Contract: :class:`PhaseTimer` hooks one model instance for one answer (a context manager, removable) and
marks instants on a :class:`pruning.timing.Timeline` (``perf_counter`` on CPU; one CUDA event per mark on
CUDA, resolved by a single synchronisation at the end — no host sync inside the model). An answer runs
``first`` forwards before the one whose logits give its first token: 0 for a single-pass prefill or a
question on a kept prefix, 1 when the prefix (system + visual) is prefilled first in the same run.
Forward ``i`` is marked ``forward_start{i}`` / ``layers_start{i}`` / ``lm_end{i}`` / ``forward_end{i}``:

    start ─ (set-up) ─ encoder start ... encoder end [per encoder call] ─ layers_start0 ─ lm_end0 ─
    [two-phase: ─ (prefix copy, question set-up) ─ layers_start1 ─ lm_end1 ─] ─ (lm_head, logits
    processing, sampling) ─ the next forward starts (or the run ends): first token ready

:meth:`PhaseTimer.phases` turns the marks and the pruning engine's own timed work
(:attr:`pruning.engine.PruningHandle.seconds_by_tag`) into a :class:`~vitcop_cli.phase_times.PhaseTimes`
whose phases are disjoint and add up to ``total_s`` (video decode + preprocess + start to first token):
pruning work is taken out of the phase it happened in (Stage-I capture out of the encoder, the entry cut
out of ``pre_llm_s``, cuts and gathers out of ``llm_layers_s``) and reported once, as ``pruning_s``.
"""

from __future__ import annotations

import torch

from pruning.timing import Timeline

from ..phase_times import PhaseTimes

__all__ = ["PhaseTimer"]


class PhaseTimer:
    """Marks of one answer (see the module docstring). ``first``: forwards before the first token's.
    ``vision_s``, ``ttft_s``, ``decode_s`` after :meth:`settle`."""

    def __init__(self, model, adapter, device: torch.device, *, first: int = 0):
        self.model, self.adapter = model, adapter
        self.first = first
        self.timeline = Timeline(device)
        self._handles: list = []
        self._encoder_calls = 0
        self._forwards = 0

    def mark(self, name: str) -> None:
        self.timeline.mark(name)

    def __enter__(self) -> "PhaseTimer":
        mark, last = self.timeline.mark, self.first + 1

        def indexed(name):
            def hook(*_):
                if self._forwards <= last:
                    mark(f"{name}{self._forwards}")
            return hook

        def forward_start(*_):
            if self._forwards == last:
                mark("first_token")
            elif self._forwards < last:
                mark(f"forward_start{self._forwards}")

        def forward_end(*_):
            if self._forwards < last:
                mark(f"forward_end{self._forwards}")
            self._forwards += 1

        def encoder_start(*_):
            mark(f"encoder_start{self._encoder_calls}")

        def encoder_end(*_):
            mark(f"encoder_end{self._encoder_calls}")
            self._encoder_calls += 1

        encoder = self.adapter.vision_encoder
        self._handles = [
            self.model.register_forward_pre_hook(forward_start, prepend=True),
            self.model.register_forward_hook(forward_end),
            encoder.register_forward_pre_hook(encoder_start, prepend=True),
            encoder.register_forward_hook(encoder_end),
            self.adapter.decoder_layers[0].register_forward_pre_hook(indexed("layers_start")),
            self.adapter.language_model.register_forward_hook(indexed("lm_end")),
        ]
        return self

    def __exit__(self, *exc) -> bool:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def settle(self) -> None:
        """Resolve the marks (``start`` and ``end`` must have been marked around the run)."""
        # with one generated token there is no next forward: the end of the run is when it was ready
        self._first_mark = "first_token" if self.timeline.has("first_token") else "end"
        self.timeline.settle()
        t = self.timeline
        self.vision_s = sum(t.between(f"encoder_start{i}", f"encoder_end{i}") for i in range(self._encoder_calls))
        self.ttft_s = t.between("start", f"forward_end{self.first}")
        self.decode_s = t.between(f"forward_end{self.first}", "end")

    def phases(self, *, video_decode_s: float, preprocess_s: float, pruning: dict[str, float]) -> PhaseTimes:
        """The breakdown (see the module docstring); ``pruning``: the engine's seconds per tag."""
        t, k = self.timeline, self.first
        to_first = t.between("start", self._first_mark)
        setup = t.between("start", "encoder_start0" if self._encoder_calls else "layers_start0")
        before_layers = t.between("start", "layers_start0")
        layers = sum(t.between(f"layers_start{i}", f"lm_end{i}") for i in range(k + 1))
        return PhaseTimes(
            video_decode_s=video_decode_s,
            preprocess_s=preprocess_s,
            generate_setup_s=setup,
            # every tag but the entry cut and the decoder's runs inside the encoder's calls (Stage-I capture,
            # encoder reuse), so it comes out of the encoder's time
            vision_encoder_s=self.vision_s - sum(v for k_, v in pruning.items() if k_ not in ("entry", "layers")),
            pre_llm_s=before_layers - setup - self.vision_s - pruning.get("entry", 0.0),
            llm_layers_s=layers - pruning.get("layers", 0.0),
            pruning_s=sum(pruning.values()),
            first_token_s=t.between(f"lm_end{k}", self._first_mark),
            total_s=video_decode_s + preprocess_s + to_first,
            question_setup_s=sum(t.between(f"lm_end{i}", f"layers_start{i + 1}") for i in range(k)),
        )
