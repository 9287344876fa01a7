"""Frames in at the size the model sees (issue 25): the ``--resize exact`` oracle on every family, the ``fast``
path's grid, and the chunked reader's ordering, bounded chunks and error path.

- exact == today: a clip decoded at source size and resized by the processor gives ``pixel_values`` (and every
  other processor output) **bit-identical** to decoding it in small chunks resized by the processor's own resize.
- fast: the decoder scales the frames; the visual-token grid (and so the prompt) is the same as exact's.
- the reader: chunks arrive in order; a decoder failing midway raises its own error, leaves no thread behind and
  returns nothing partial.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from clips import h264

from vitcop_cli.errors import InputError
from vitcop_cli.media import chunked
from vitcop_cli.media.video import load_visual

FRAMES = 6


def _natural_frames(frames=24, width=332, height=240):
    """Moving gradients, noise and a square: not flat colour, a size no patch divides, so resizing does real
    work."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    for i in range(frames):
        img = np.stack([(x * 255 / width + 9 * i) % 256, (y * 255 / height + 5 * i) % 256, (x + y + 13 * i) % 256], -1)
        img = img + rng.normal(0, 12, img.shape)
        img[40:90, 20 + 6 * i:70 + 6 * i] = (250, 30, 30)
        yield np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def natural(tmp_path_factory):
    return h264(tmp_path_factory.mktemp("clips") / "natural.mp4", _natural_frames())


def _prepared(session, visual):
    return session.prepare(visual, "What happens?")


def test_exact_is_bit_identical_to_the_full_size_path(sessions, family, natural, monkeypatch):
    session = sessions[family]
    reference = load_visual(natural, frames=FRAMES, rule=session.frame_rule)  # source size, as before
    assert (reference.height, reference.width) == (240, 332)
    monkeypatch.setattr(chunked, "CHUNK_BYTES", 2 * 240 * 332 * 3)  # two source frames a chunk: three chunks
    exact = session.load_visual(natural, frames=FRAMES, resize="exact")
    assert exact.frames.shape[1:3] != reference.frames.shape[1:3]  # held at the model's size, not the source's
    ref_inputs, exact_inputs = _prepared(session, reference).inputs, _prepared(session, exact).inputs
    assert ref_inputs.keys() == exact_inputs.keys()
    for key in ref_inputs:
        assert torch.equal(ref_inputs[key], exact_inputs[key]), key
    assert (exact.width, exact.height, exact.indices) == (reference.width, reference.height, reference.indices)


def test_exact_oracle_fails_on_a_wrong_resize(sessions, natural, monkeypatch):
    """The oracle bites: the same chunks resized by another filter are not the processor's frames."""
    session = sessions["qwen2_vl"]
    reference = _prepared(session, load_visual(natural, frames=FRAMES, rule=session.frame_rule)).inputs
    sizing = session.frame_sizing("exact")

    def nearest(chunk, size):
        return torch.nn.functional.interpolate(chunk.permute(0, 3, 1, 2).float(), size=size).round().to(
            torch.uint8).permute(0, 2, 3, 1)

    monkeypatch.setattr(type(session), "frame_sizing",
                        lambda self, *a, **k: dataclasses.replace(sizing, resize=nearest))
    wrong = _prepared(session, session.load_visual(natural, frames=FRAMES, resize="exact")).inputs
    assert not torch.equal(reference["pixel_values_videos"], wrong["pixel_values_videos"])


def test_fast_gives_the_same_grid_and_close_pixels(sessions, family, natural):
    session = sessions[family]
    exact = _prepared(session, session.load_visual(natural, frames=FRAMES, resize="exact")).inputs
    fast = _prepared(session, session.load_visual(natural, frames=FRAMES, resize="fast")).inputs
    for key in ("input_ids", "video_grid_thw"):
        if key in exact:
            assert torch.equal(exact[key], fast[key]), key
    diff = (exact["pixel_values_videos"] - fast["pixel_values_videos"]).abs()
    assert diff.shape == exact["pixel_values_videos"].shape and 0 < diff.mean() < 0.2  # normalised units


# ---- the chunked reader ----------------------------------------------------------------------
class _Decoder:
    """Frame i is filled with i; ``fail_at``: the read that raises (a corrupt chunk midway)."""

    def __init__(self, fail_at=None):
        self.reads, self.fail_at = [], fail_at

    def read(self, indices, size=None):
        self.reads.append(list(indices))
        if self.fail_at is not None and len(self.reads) == self.fail_at:
            raise InputError("cannot decode video x.mp4: the file is corrupt or truncated (bad chunk)")
        h, w = size or (4, 6)
        return torch.tensor(indices, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, h, w, 3).clone()


def test_chunks_arrive_in_order_and_are_bounded():
    decoder = _Decoder()
    indices = list(range(0, 40, 2))
    frames = chunked.read_frames(decoder, indices, (4, 6), source_size=(4, 6), chunk_bytes=3 * 4 * 6 * 3)
    assert [len(r) for r in decoder.reads] == [3] * 6 + [2]
    assert [int(f[0, 0, 0]) for f in frames] == indices and len(decoder.reads) == 7


def test_exact_chunks_are_resized_by_the_callers_thread():
    decoder, threads = _Decoder(), set()

    def resize(chunk, size):
        threads.add(threading.current_thread().name)
        return chunk[:, : size[0], : size[1]]

    frames = chunked.read_frames(decoder, [0, 1, 2, 3], (2, 3), resize, source_size=(4, 6),
                                        chunk_bytes=4 * 6 * 3)
    assert frames.shape == (4, 2, 3, 3) and threads == {threading.current_thread().name} and len(decoder.reads) == 4


def test_a_corrupt_chunk_midway_is_the_decoders_error_with_no_thread_left():
    before = {t.ident for t in threading.enumerate()}
    decoder = _Decoder(fail_at=3)
    with pytest.raises(InputError, match="corrupt or truncated"):
        chunked.read_frames(decoder, list(range(20)), (4, 6), source_size=(4, 6), chunk_bytes=2 * 4 * 6 * 3)
    assert {t.ident for t in threading.enumerate()} <= before
    assert len(decoder.reads) == 3  # nothing decoded after the failure


def test_a_failure_in_the_callers_thread_stops_the_decoder():
    before = {t.ident for t in threading.enumerate()}
    decoder = _Decoder()

    def resize(chunk, size):
        raise RuntimeError("resize failed")

    with pytest.raises(RuntimeError, match="resize failed"):
        chunked.read_frames(decoder, list(range(20)), (4, 6), resize, source_size=(4, 6), chunk_bytes=4 * 6 * 3)
    assert {t.ident for t in threading.enumerate()} <= before
    assert len(decoder.reads) <= 3  # the one resized, one queued, one in flight at most


class _Spy:
    """The session's processor, recording the device of every video it is given."""

    def __init__(self, processor):
        self.processor, self.devices = processor, []

    def __getattr__(self, name):
        return getattr(self.processor, name)

    def __call__(self, *args, **kwargs):
        self.devices += [v.device.type for v in kwargs.get("videos", [])]
        return self.processor(*args, **kwargs)


def test_pixels_preprocessed_while_decoding_are_the_ones_used(sessions, family, natural, monkeypatch):
    """The chunks were preprocessed as they decoded; prepare runs the processor on a pixel-less clip only."""
    session = sessions[family]
    monkeypatch.setattr(chunked, "CHUNK_BYTES", 2 * 240 * 332 * 3)
    visual = session.load_visual(natural, frames=FRAMES, resize="exact")
    assert visual.processed is not None
    spy = _Spy(session.processor)
    monkeypatch.setattr(session, "processor", spy)
    prepared = session.prepare(visual, "What happens?")
    assert spy.devices == ["meta"]
    assert prepared.inputs["pixel_values_videos"].data_ptr() == visual.processed["pixel_values_videos"].data_ptr()


def test_preprocessed_pixels_of_another_size_are_not_used(sessions, natural):
    """A visual prepared with other pixel bounds than it was decoded for is processed whole, never mixed up."""
    session = sessions["qwen2_vl"]
    visual = session.load_visual(natural, frames=FRAMES, resize="exact")
    small = session.prepare(visual, "What happens?", max_pixels=56 * 56).inputs
    assert small["pixel_values_videos"].shape != visual.processed["pixel_values_videos"].shape


# ---- the preprocessing fast path (pruning.compat.video_patch_writer) ---------------------------
WRITES_ROWS = {"qwen2_vl": True, "qwen2_5_vl": True, "qwen3_vl": True, "qwen3_5": True, "llava_onevision": False}


def _chunked(session, clip: torch.Tensor, step: int):
    """``clip`` (t, h, w, 3) at the processor's size through the session's ChunkPreprocessor, ``step`` frames a
    chunk; the preprocessor and its rows."""
    t, h, w, _ = clip.shape
    sink = session.frame_sizing().preprocess(t, h, w)
    for at in range(0, t, step):
        sink.add(clip[at:at + step])
    return sink, sink.result()["pixel_values_videos"]


def _clip_at_model_size(session, frames: int) -> torch.Tensor:
    h, w = session.frame_sizing().target(frames, 240, 332)
    return torch.from_numpy(np.stack(list(_natural_frames(frames, w, h))))


@pytest.mark.parametrize("frames", [5, 6])
def test_rows_written_chunk_by_chunk_equal_the_processors(sessions, family, frames):
    """Every family, a whole number of temporal patches or not (5 frames: the last patch repeats its frame):
    the rows are bit-identical to the processor's on the whole clip; Qwen families take the writer (so the
    exact oracle above runs it too), LLaVA-OneVision the processor."""
    session = sessions[family]
    clip = _clip_at_model_size(session, frames)
    sink, rows = _chunked(session, clip, 2)
    assert sink.writer_used is WRITES_ROWS[family]
    kwargs = dict(sink.kwargs)
    whole = session.processor.video_processor(videos=[clip], return_tensors="pt", **kwargs)["pixel_values_videos"]
    assert rows.shape == whole.shape and torch.equal(rows, whole)


def test_a_processor_the_writer_no_longer_matches_fails_loudly(sessions, monkeypatch):
    """The run-time check: a release whose processor normalises otherwise (here: shifted by one) stops the run
    with a RuntimeFailure naming the fast path, instead of feeding the model the writer's other pixels."""
    from vitcop_cli.errors import RuntimeFailure

    session = sessions["qwen2_vl"]
    video_processor = session.processor.video_processor
    original = video_processor.rescale_and_normalize
    monkeypatch.setattr(video_processor, "rescale_and_normalize", lambda *a, **k: original(*a, **k) + 1)
    with pytest.raises(RuntimeFailure, match="video_patch_writer"):
        _chunked(session, _clip_at_model_size(session, 4), 2)


def test_processor_settings_the_writer_does_not_model_leave_it_to_the_processor(sessions):
    from pruning import compat

    video_processor = sessions["qwen2_vl"].processor.video_processor
    assert compat.video_patch_writer(video_processor, {}) is not None
    assert compat.video_patch_writer(video_processor, {"do_normalize": False}) is None
    assert compat.video_patch_writer(sessions["llava_onevision"].processor.video_processor, {}) is None
