"""``timings.phases``: the time to the first token, phase by phase (issue 18).

The phases are disjoint and add up to their total; pruning work is taken out of the phase it ran in and
counted once; time spent in a phase shows up in that phase (a known sleep injected into the encoder, the
decoder layers or the language model's entry lands where it was spent). On CUDA the marks are events,
resolved by one synchronisation. No wall-clock thresholds: only lower bounds set by the injected sleeps.
"""

from __future__ import annotations

import time

import pytest
import torch

from pruning.timing import Timeline
from tests.test_api import check_phases
from vitcop_cli.media.video import load_visual

SLEEP = 1.0


@pytest.fixture(scope="module")
def prepared(sessions, clip):
    return sessions["qwen2_vl"].prepare(load_visual(clip, frames=4), "What happens?")


def _phases(session, prepared, preset="1_9"):
    result = session.generate(prepared, preset=preset, max_new_tokens=2)
    t = vars(result.timings).copy()
    t["phases"] = vars(result.timings.phases)
    check_phases(t)
    return result.timings.phases


@pytest.mark.parametrize("preset", ["none", "1_9"])
def test_phases_add_up_and_pruning_is_counted_once(sessions, prepared, preset):
    ph = _phases(sessions["qwen2_vl"], prepared, preset)
    assert (ph.pruning_s == 0) == (preset == "none")


@pytest.mark.parametrize("where, phase", [
    ("encoder", "vision_encoder_s"), ("layer", "llm_layers_s"), ("lm_entry", "pre_llm_s"),
])
def test_time_spent_in_a_phase_lands_in_that_phase(sessions, prepared, where, phase):
    session = sessions["qwen2_vl"]
    before = _phases(session, prepared)
    module = {
        "encoder": session.adapter.vision_encoder.blocks[0],
        "layer": session.adapter.decoder_layers[3],
        "lm_entry": session.adapter.language_model,
    }[where]
    slept = []

    def sleep(*_):
        if not slept:  # the prefill only
            slept.append(True)
            time.sleep(SLEEP)

    hook = module.register_forward_pre_hook(sleep)
    try:
        after = _phases(session, prepared)
    finally:
        hook.remove()
    assert getattr(after, phase) >= SLEEP
    grew = {p: getattr(after, p) - getattr(before, p)
            for p in ("generate_setup_s", "vision_encoder_s", "pre_llm_s", "llm_layers_s", "first_token_s")}
    assert max(grew, key=grew.get) == phase, grew  # the sleep was charged to its own phase, not another


class _FakeEvent:
    log: list = []
    clock = 0.0

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        _FakeEvent.clock += 1.0
        self.t = _FakeEvent.clock
        _FakeEvent.log.append("record")

    def elapsed_time(self, other):
        return 1000.0 * (other.t - self.t)


def test_cuda_timeline_marks_events_and_synchronises_once(monkeypatch):
    syncs = []
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: syncs.append(1))
    _FakeEvent.log, _FakeEvent.clock = [], 0.0
    line = Timeline(torch.device("cuda"))
    for name in ("start", "a", "b", "a"):  # a name marked twice keeps its first instant
        line.mark(name)
    assert not syncs  # marking never waits for the GPU
    line.settle()
    assert len(syncs) == 1
    assert line.between("start", "a") == pytest.approx(1.0) and line.between("a", "b") == pytest.approx(1.0)
