"""Sampling follows the family (issue 25, item 7): how many frames a model gets, and that every family answers
about a 1-frame clip, one frame of a longer clip (``max_frames=1``) and a still image.

Qwen families encode frames in temporal patches of 2 (counts rounded to even, the warning says so); LLaVA-OneVision
encodes each frame alone (no rounding, no warning). Qwen3-VL / Qwen3.5's video processors refuse a single frame
(``t:1 must be larger than temporal_factor:2``): the session repeats it, as Qwen2-VL's processor does itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from clips import h264

from vitcop_cli.media.sampling import FrameRule, frame_count_warnings, sample_indices
from vitcop_cli.media.video import load_visual

#: frames used for ``--frames`` 1, 2, 3, by frames per temporal patch
EXPECTED = {2: [2, 2, 4], 1: [1, 2, 3]}


@pytest.fixture(scope="module")
def one_frame(tmp_path_factory):
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, :24] = 200
    return h264(tmp_path_factory.mktemp("clips") / "one.mp4", [frame], rate=4)


def test_the_rule_comes_from_the_family(sessions, family):
    rule = sessions[family].frame_rule
    assert rule.per_patch == (1 if family == "llava_onevision" else 2)
    assert bool(rule.reason) == (rule.per_patch > 1)


@pytest.mark.parametrize("asked", [1, 2, 3])
def test_frames_1_2_3_per_family(sessions, family, clip, asked):
    session = sessions[family]
    result = session.ask(clip, "What happens?", frames=asked, max_new_tokens=2, preset="1_9")
    used = EXPECTED[session.frame_rule.per_patch][asked - 1]
    assert result.visual.frames == used
    rounded = [w for w in result.warnings if w.startswith(f"--frames {asked}:")]
    if used == asked:
        assert rounded == []
    else:
        assert rounded and "temporal patches" in rounded[0]


def test_a_one_frame_clip_and_one_frame_of_a_clip_are_answered(sessions, family, clip, one_frame):
    session = sessions[family]
    for video, kwargs in ((one_frame, {}), (clip, {"max_frames": 1})):
        result = session.ask(video, "What happens?", max_new_tokens=2, preset="1_9", **kwargs)
        assert result.visual.frames == 1  # the report counts the frames decoded, not the repeat
        assert result.tokens.generated >= 1 and result.pruning.n_visual > 0


def test_a_still_image_is_answered(sessions, family, image):
    result = sessions[family].ask(image, "What is this?", max_new_tokens=2, preset="1_9")
    assert result.visual.kind == "image" and result.tokens.generated >= 1


class _CountingProcessor:
    """The session's processor, recording how many frames each call's video has."""

    def __init__(self, processor):
        self.processor, self.frames = processor, []

    def __getattr__(self, name):
        return getattr(self.processor, name)

    def __call__(self, *args, **kwargs):
        self.frames.append(kwargs["videos"][0].shape[0])
        return self.processor(*args, **kwargs)


def test_the_repeat_is_what_the_processor_gets_and_only_where_needed(sessions, family, one_frame, monkeypatch):
    session = sessions[family]
    counting = _CountingProcessor(session.processor)
    monkeypatch.setattr(session, "processor", counting)
    prepared = session.prepare(load_visual(one_frame, rule=session.frame_rule), "What?")
    repeated = family in ("qwen3_vl", "qwen3_5")  # their video processors refuse one frame
    assert counting.frames == [2 if repeated else 1]
    assert prepared.visual.num_frames == 1 and prepared.visual.indices == [0]


def test_sampling_rounds_to_the_rule():
    assert [len(sample_indices(100, 10.0, frames=n)) for n in (1, 2, 3, 5, 7)] == [2, 2, 4, 4, 8]
    assert [len(sample_indices(100, 10.0, frames=n, per_patch=1)) for n in (1, 2, 3, 5, 7)] == [1, 2, 3, 5, 7]
    assert len(sample_indices(100, 10.0, fps=0.5, per_patch=1)) == 5  # 10 s at 0.5 fps: 5, not rounded to 4
    assert len(sample_indices(100, 10.0, fps=0.5)) == 4
    assert frame_count_warnings(100, 3, fps=2.0, frames=3, max_frames=768, rule=FrameRule(1, "")) == []
    (warning,) = frame_count_warnings(100, 4, fps=2.0, frames=3, max_frames=768)
    assert "rounded to an even number (frames are paired into temporal patches)" in warning
