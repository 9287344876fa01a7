"""Frame sampling, decoding and bad-input handling of :mod:`vitcop_cli.media.video` (CPU, a few seconds)."""

from __future__ import annotations

import gc
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitcop_cli.errors import InputError, VitcopError
from vitcop_cli.media.sampling import sample_indices
from vitcop_cli.media.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, Visual, is_media_file, load_visual

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SHAPES = SAMPLES / "shapes.mp4"  # 8 s, 24 fps, 192 frames, 320x240
BOUNCE = SAMPLES / "bounce.mp4"  # 6 s, 30 fps, 180 frames, 448x336
SCENE = SAMPLES / "scene.png"  # 320x240


# ---------------------------------------------------------------------------------------------
# A reference: qwen-vl-utils' frame count and index rule (Qwen2-VL repo, fetch_video)
# ---------------------------------------------------------------------------------------------


def _qwen_reference(total: int, video_fps: float, fps: float = 2.0, min_frames: int = 4, max_frames: int = 768):
    round_by = lambda n: round(n / 2) * 2  # noqa: E731
    ceil_by = lambda n: math.ceil(n / 2) * 2  # noqa: E731
    floor_by = lambda n: math.floor(n / 2) * 2  # noqa: E731
    lo = ceil_by(min_frames)
    hi = floor_by(min(max_frames, total))
    n = round_by(min(max(total / video_fps * fps, lo), hi))
    assert 2 <= n <= total
    return torch.linspace(0, total - 1, n).round().long().tolist()


def _check_indices(idx: list[int], total: int) -> None:
    assert idx == sorted(set(idx)), "indices must be strictly increasing"
    assert idx[0] == 0
    assert idx[-1] == total - 1
    assert all(0 <= i < total for i in idx)


# ---------------------------------------------------------------------------------------------
# sample_indices
# ---------------------------------------------------------------------------------------------


def test_one_minute_clip_at_2fps_gives_120_uniform_frames():
    idx = sample_indices(1800, 30.0, fps=2.0)  # 60 s at 30 fps
    assert len(idx) == 120
    _check_indices(idx, 1800)
    steps = set(np.diff(idx).tolist())
    assert steps <= {15, 16}  # 1799 / 119 = 15.12 -> uniform up to rounding
    assert idx == torch.linspace(0, 1799, 120).round().long().tolist()


def test_long_clip_is_capped_by_max_frames():
    idx = sample_indices(18000, 30.0, fps=2.0)  # 10 min -> 1200 frames wanted, cap 768
    assert len(idx) == 768
    _check_indices(idx, 18000)
    assert set(np.diff(idx).tolist()) <= {23, 24}
    assert len(sample_indices(18000, 30.0, max_frames=10)) == 10
    assert len(sample_indices(18000, 30.0, max_frames=9)) == 8  # floored to even, like qwen-vl-utils


def test_counts_are_rounded_to_even_like_qwen_vl_utils():
    # 10 s at 25 fps: fps=0.5 -> 5 frames -> round(2.5) * 2 = 4; fps=0.7 -> 7 -> round(3.5) * 2 = 8
    assert len(sample_indices(250, 25.0, fps=0.5)) == 4
    assert len(sample_indices(250, 25.0, fps=0.7)) == 8
    assert len(sample_indices(250, 25.0, fps=0.9)) == 8  # 9 -> round(4.5) * 2: half-to-even gives 4 -> 8
    assert len(sample_indices(250, 25.0, fps=1.1)) == 12  # 11 -> round(5.5) * 2 = 12


def test_matches_qwen_reference_for_many_clips():
    for video_fps in (24.0, 25.0, 29.97, 30.0, 60.0):
        for fps in (0.5, 1.0, 2.0, 4.0):
            for total in list(range(4, 120)) + [191, 192, 500, 1799, 5000, 30000]:
                got = sample_indices(total, video_fps, fps=fps)
                assert got == _qwen_reference(total, video_fps, fps), (total, video_fps, fps)
                assert len(got) % 2 == 0


def test_short_clip_gets_min_frames():
    # 1 s at 24 fps: 2 frames wanted, raised to the minimum of 4
    assert sample_indices(24, 24.0) == [0, 8, 15, 23]
    assert sample_indices(5, 24.0) == [0, 1, 3, 4]
    assert sample_indices(4, 24.0) == [0, 1, 2, 3]


def test_fewer_frames_than_asked_uses_every_frame_once():
    assert sample_indices(3, 24.0) == [0, 1, 2]  # min_frames 4 > 3 frames: no error, no duplicates
    assert sample_indices(2, 24.0) == [0, 1]
    assert sample_indices(5, 24.0, min_frames=8) == [0, 1, 2, 3, 4]
    assert sample_indices(3, 24.0, frames=8) == [0, 1, 2]
    assert sample_indices(40, 24.0, frames=100) == list(range(40))


def test_one_frame_video():
    assert sample_indices(1, 24.0) == [0]
    assert sample_indices(1, 24.0, frames=8) == [0]
    assert sample_indices(1, None, frames=1) == [0]


def test_frames_override():
    assert sample_indices(192, 24.0, frames=8) == [0, 27, 55, 82, 109, 136, 164, 191]
    assert len(sample_indices(192, 24.0, frames=8, fps=0.1)) == 8  # fps ignored
    assert len(sample_indices(192, None, frames=6)) == 6  # source fps not needed
    assert len(sample_indices(192, 24.0, frames=5)) == 4  # round-to-even as qwen-vl-utils (ties to even)
    assert len(sample_indices(192, 24.0, frames=7)) == 8
    assert sample_indices(192, 24.0, frames=1) == [0, 191]  # 1 -> 0 -> bumped to 2
    assert len(sample_indices(192, 24.0, frames=32, max_frames=6)) == 6
    assert len(sample_indices(192, 24.0, frames=32, max_frames=7)) == 6


def test_max_frames_below_min_frames_wins():
    assert sample_indices(100, 25.0, max_frames=2) == [0, 99]
    assert sample_indices(100, 25.0, max_frames=1) == [0]
    assert sample_indices(3, 24.0, max_frames=2) == [0, 2]


def test_invariants_over_a_grid():
    for total in range(1, 130):
        for frames in (None, 1, 2, 3, 16, 200):
            idx = sample_indices(total, 24.0, frames=frames)
            assert idx == sorted(set(idx))
            assert idx[0] == 0 and idx[-1] <= total - 1
            if len(idx) >= 2:
                assert idx[-1] == total - 1
            assert len(idx) == total or len(idx) % 2 == 0


@pytest.mark.parametrize("total", [0, -3])
def test_zero_frames_is_an_input_error(total):
    with pytest.raises(InputError, match="no frames"):
        sample_indices(total, 24.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fps": 0.0},
        {"fps": -1.0},
        {"fps": float("nan")},
        {"frames": 0},
        {"max_frames": 0},
        {"min_frames": 0},
    ],
)
def test_bad_sampling_arguments(kwargs):
    with pytest.raises(InputError):
        sample_indices(100, 24.0, **kwargs)


def test_unknown_source_fps_needs_frames():
    with pytest.raises(InputError, match="--frames"):
        sample_indices(100, None)
    with pytest.raises(InputError):
        sample_indices(100, 0.0)


def test_errors_exit_codes():
    assert issubclass(InputError, VitcopError)
    assert InputError.exit_code == 2


# ---------------------------------------------------------------------------------------------
# Extensions
# ---------------------------------------------------------------------------------------------


def test_extensions():
    assert {"mp4", "mkv", "webm", "avi", "mov", "ts", "3gp"} <= VIDEO_EXTENSIONS
    assert {"jpg", "jpeg", "png", "webp", "gif", "tiff"} <= IMAGE_EXTENSIONS
    assert not VIDEO_EXTENSIONS & IMAGE_EXTENSIONS
    assert is_media_file("a/b/clip.MP4")
    assert is_media_file(Path("x.jpeg"))
    assert not is_media_file("notes.txt")
    assert not is_media_file("mp4")
    assert not is_media_file("archive.mp4.zip")


# ---------------------------------------------------------------------------------------------
# load_visual on the sample clips
# ---------------------------------------------------------------------------------------------


def _centroid(frame: torch.Tensor, color: str) -> tuple[float, float, int]:
    """(x, y, pixel count) of the pixels of one colour."""
    f = frame.int()
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    if color == "red":
        mask = (r > 150) & (g < 100) & (b < 100)
    elif color == "blue":
        mask = (b > 150) & (r < 100) & (g < 130)
    elif color == "yellow":
        mask = (r > 200) & (g > 160) & (b < 110)
    elif color == "green":
        mask = (g > 120) & (r < 100) & (b < 120)
    else:
        raise ValueError(color)
    ys, xs = torch.nonzero(mask, as_tuple=True)
    assert len(xs) > 50, f"no {color} object found"
    return xs.float().mean().item(), ys.float().mean().item(), int(mask.sum())


def test_shapes_clip_at_default_2fps():
    v = load_visual(SHAPES)
    assert isinstance(v, Visual)
    assert v.kind == "video"
    assert v.path == str(SHAPES)
    assert v.total_frames == 192
    assert v.source_fps == pytest.approx(24.0)
    assert v.duration_s == pytest.approx(8.0)
    assert (v.width, v.height) == (320, 240)
    assert v.indices == sample_indices(192, 24.0) and len(v.indices) == 16
    assert isinstance(v.frames, torch.Tensor)
    assert v.frames.dtype == torch.uint8
    assert tuple(v.frames.shape) == (16, 240, 320, 3)
    assert v.sampling_fps == pytest.approx(2.0)
    assert v.num_frames == 16
    # timestamps: one per frame, strictly increasing, inside the clip, = index / fps here
    assert len(v.timestamps) == 16
    assert v.timestamps[0] == 0.0
    assert all(b > a for a, b in zip(v.timestamps, v.timestamps[1:]))
    assert all(0.0 <= t < v.duration_s for t in v.timestamps)
    assert v.timestamps == pytest.approx([i / 24.0 for i in v.indices], abs=1e-3)


def test_shapes_clip_frames_show_the_motion():
    v = load_visual(SHAPES, frames=8)
    assert len(v.indices) == 8
    red = [_centroid(f, "red") for f in v.frames]
    blue = [_centroid(f, "blue") for f in v.frames]
    red_x = [c[0] for c in red]
    blue_y = [c[1] for c in blue]
    assert all(b > a + 10 for a, b in zip(red_x, red_x[1:])), red_x  # circle: left -> right
    assert red_x[0] < 60 and red_x[-1] > 260
    assert all(b > a + 5 for a, b in zip(blue_y, blue_y[1:])), blue_y  # square: top -> bottom
    assert max(c[1] for c in red) - min(c[1] for c in red) < 3  # circle stays on its row


def test_bounce_clip():
    v = load_visual(BOUNCE)
    assert v.total_frames == 180
    assert v.source_fps == pytest.approx(30.0)
    assert v.duration_s == pytest.approx(6.0)
    assert (v.width, v.height) == (448, 336)
    assert tuple(v.frames.shape) == (12, 336, 448, 3)
    assert v.timestamps[-1] == pytest.approx(179 / 30.0, abs=1e-3)
    first, last = _centroid(v.frames[0], "green"), _centroid(v.frames[-1], "green")
    assert last[2] > 4 * first[2]  # the green rectangle grows
    _centroid(v.frames[len(v.frames) // 2], "yellow")  # the ball is there


def test_sampling_arguments_pass_through():
    assert len(load_visual(BOUNCE, fps=1.0).indices) == 6
    assert len(load_visual(BOUNCE, fps=2.0, max_frames=6).indices) == 6
    assert load_visual(BOUNCE, frames=4).indices == [0, 60, 119, 179]
    v = load_visual(SHAPES, fps=0.25)  # 2 frames wanted -> minimum 4
    assert v.indices == [0, 64, 127, 191]
    assert v.sampling_fps == pytest.approx(0.5)


def test_only_sampled_frames_are_decoded(monkeypatch):
    import decord

    calls = []
    real = decord.VideoReader

    class Spy(real):
        def get_batch(self, indices):
            calls.append(list(indices))
            return super().get_batch(indices)

        def __getitem__(self, idx):  # pragma: no cover - must not be used
            raise AssertionError("frames must be decoded with get_batch(indices) only")

    monkeypatch.setattr(decord, "VideoReader", Spy)
    v = load_visual(SHAPES, frames=6)
    assert calls == [[0], v.indices] and len(v.indices) == 6  # frame 0 first: decord's only size query


def test_uppercase_extension_and_pathlike(tmp_path):
    p = tmp_path / "CLIP.MP4"
    shutil.copy(SHAPES, p)
    v = load_visual(p)
    assert v.kind == "video" and v.path == str(p) and len(v.indices) == 16


def test_no_stderr_output_on_success(capfd):
    load_visual(SHAPES, frames=4)
    load_visual(SCENE)
    assert capfd.readouterr().err == ""


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def test_image():
    v = load_visual(SCENE, fps=7.0, frames=9)  # sampling arguments are ignored for images
    assert v.kind == "image"
    assert isinstance(v.frames, Image.Image) and v.frames.mode == "RGB"
    assert v.frames.size == (320, 240)
    assert (v.width, v.height) == (320, 240)
    assert v.timestamps == [0.0] and v.indices == [0] and v.total_frames == 1
    assert v.source_fps is None and v.duration_s is None and v.sampling_fps is None
    assert v.frames.getpixel((140 + 30, 40 + 30)) == (30, 60, 220)  # blue square


@pytest.mark.parametrize("name,mode", [("gray.jpg", "L"), ("alpha.PNG", "RGBA"), ("pal.gif", "P"), ("x.webp", "RGB")])
def test_images_are_converted_to_rgb(tmp_path, name, mode):
    p = tmp_path / name
    Image.new(mode, (33, 17)).save(p)
    v = load_visual(p)
    assert v.frames.mode == "RGB" and (v.width, v.height) == (33, 17)


# ---------------------------------------------------------------------------------------------
# Bad input: an InputError with a one-line message, nothing on stderr
# ---------------------------------------------------------------------------------------------


def _bad(path, capfd, *patterns, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        load_visual(path, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and len(msg) < 400, msg
    for pattern in patterns:
        assert pattern.lower() in msg.lower(), msg
    assert capfd.readouterr().err == "", "decord/FFmpeg output leaked to stderr"
    assert info.value.exit_code == 2
    return msg


def test_missing_file(tmp_path, capfd):
    _bad(tmp_path / "nope.mp4", capfd, "not found", "nope.mp4")


def test_directory(tmp_path, capfd):
    _bad(tmp_path, capfd, "directory", "vitcop batch")


def test_text_file_named_mp4(tmp_path, capfd):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 20)
    _bad(p, capfd, "cannot read video", "notes.mp4", "re-encode")


def test_truncated_mp4_first_2kb(tmp_path, capfd):
    p = tmp_path / "cut.mp4"
    p.write_bytes(SHAPES.read_bytes()[:2048])
    _bad(p, capfd, "cannot read video", "corrupt or truncated")


def test_corrupt_middle_of_mp4(tmp_path, capfd):
    data = bytearray(SHAPES.read_bytes())
    start = len(data) // 3
    data[start : start + 4000] = b"\xff" * 4000
    p = tmp_path / "damaged.mp4"
    p.write_bytes(bytes(data))
    msg = _bad(p, capfd, "damaged.mp4")
    assert "corrupt" in msg


def test_zero_byte_mp4(tmp_path, capfd):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    _bad(p, capfd, "empty", "0 bytes")


def test_mp4_without_video_stream(tmp_path, capfd):
    av = pytest.importorskip("av")
    p = tmp_path / "novideo.mp4"
    with av.open(str(p), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    capfd.readouterr()
    _bad(p, capfd, "novideo.mp4")


def test_zero_frame_video(monkeypatch, capfd):
    import decord

    class Empty:
        def __init__(self, *args, **kwargs):
            pass

        def __len__(self):
            return 0

        def get_avg_fps(self):
            return 24.0

    monkeypatch.setattr(decord, "VideoReader", Empty)
    _bad(SHAPES, capfd, "contains no video stream", "empty container")  # every decoder words it so


@pytest.mark.parametrize("decodes", [True, False])
def test_the_decoder_closes_inside_the_capture(monkeypatch, capfd, decodes):
    """FFmpeg's decoding threads may still print while the reader closes. That happens inside the capture on
    every path, also when an error's traceback would keep the reader alive until a later garbage collection
    (seen as a stray "[h264 @ ...]" line in whichever test ran next)."""
    import decord

    class Reader:
        def __init__(self, *args, **kwargs):
            pass

        def __len__(self):
            return 4

        def get_avg_fps(self):
            return 24.0

        def get_frame_timestamp(self, indices):
            return np.array([[i / 24, (i + 1) / 24] for i in indices])

        def get_batch(self, indices):
            if not decodes:
                raise RuntimeError("Reference 4 >= 4")
            return decord.nd.array(np.zeros((len(indices), 8, 8, 3), dtype=np.uint8))

        def __del__(self):
            os.write(2, b"[h264 @ 0x1] Error splitting the input into NAL units.\n")

    monkeypatch.setattr(decord, "VideoReader", Reader)
    if decodes:
        load_visual(SHAPES, frames=2)
    else:
        _bad(SHAPES, capfd, "corrupt or truncated")
    gc.collect()
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("name", ["clip.txt", "clip.xyz", "clip"])
def test_unsupported_extension(tmp_path, capfd, name):
    p = tmp_path / name
    shutil.copy(SHAPES, p)  # a real video, but the name decides
    msg = _bad(p, capfd, "unsupported", "mp4", "png")
    assert "webm" in msg and "jpeg" in msg


def test_broken_png(tmp_path, capfd):
    p = tmp_path / "broken.png"
    p.write_bytes(SCENE.read_bytes()[:120])
    _bad(p, capfd, "cannot read image", "broken.png")


def test_text_file_named_png(tmp_path, capfd):
    p = tmp_path / "fake.png"
    p.write_text("hello")
    _bad(p, capfd, "cannot read image")


def test_zero_byte_image(tmp_path, capfd):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    _bad(p, capfd, "empty")


@pytest.mark.parametrize("kwargs", [{"fps": 0.0}, {"frames": 0}, {"max_frames": 0}])
def test_bad_sampling_arguments_fail_before_decoding(capfd, kwargs, monkeypatch):
    import decord

    def boom(*a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("decoded despite bad arguments")

    monkeypatch.setattr(decord, "VideoReader", boom)
    _bad(SHAPES, capfd, **kwargs)


def test_stderr_still_works_after_a_failure(tmp_path, capfd):
    import sys

    p = tmp_path / "bad.mp4"
    p.write_text("nope")
    with pytest.raises(InputError):
        load_visual(p)
    print("visible", file=sys.stderr)
    assert capfd.readouterr().err == "visible\n"
