"""Hostile input to the library and the CLI (the issue's findings 2, 4, 5, 6 and 7): every bad input is an
:class:`InputError` (exit 2, one line) and never an unexpected error (exit 1); a small file that declares a huge
image costs nothing; ``--out`` through a symbolic link writes the target and shares its lock; good files with
odd names or sizes get an accurate answer.

Clips of odd sizes are made with PyAV in the test; the memory bound runs the real command in a child process and
measures that child's own peak RSS (:mod:`child_memory`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from child_memory import run_measured
from test_api import CLIP, FRAMES, QUESTION
from test_batch import FakeSession
from test_cli import ANSI, assert_one_line_failure, invoke, run_cli, subprocess_env
from vitcop_cli import api
from vitcop_cli.batch import run_batch
from vitcop_cli.batch.lock import OutLock
from vitcop_cli.batch.store import read_results
from vitcop_cli.errors import InputError
from vitcop_cli.media.download import fetch
from vitcop_cli.media.netguard import MediaHostGuard, MediaHostRefused
from vitcop_cli.media.video import MAX_IMAGE_PIXELS, Visual, image_visual, load_visual
from vitcop_cli.questions.inputs import BatchItem, read_jsonl

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SCENE = SAMPLES / "scene.png"


@pytest.fixture
def no_model_loading(monkeypatch):
    monkeypatch.setattr(api, "load", lambda *a, **k: pytest.fail("api.load must not be called"))


def h264_clip(path: Path, width: int, height: int, frames: int = 8) -> Path:
    """A valid H.264 MP4 of ``width`` x ``height`` pixels (libx264 through PyAV)."""
    av = pytest.importorskip("av")
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 20 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def video_visual(width: int, height: int) -> Visual:
    """A decoded 4-frame clip of ``width`` x ``height`` pixels, in memory."""
    return Visual(kind="video", path="wide.mp4", frames=torch.zeros(4, height, width, 3, dtype=torch.uint8),
                  timestamps=[0.0, 0.5, 1.0, 1.5], indices=[0, 1, 2, 3], source_fps=2.0, total_frames=4,
                  duration_s=2.0, width=width, height=height, sampling_fps=2.0)


# --------------------------------------------------------------------------------------------
# finding 2: bad requests are InputError / exit 2, never "unexpected error"
# --------------------------------------------------------------------------------------------


def test_media_path_with_a_nul_byte_is_exit_2(no_model_loading):
    with pytest.raises(InputError, match=r"contains a NUL byte"):
        load_visual("clip\0.mp4")
    result = invoke("ask", "clip\0.mp4", QUESTION, "--model", "x")
    assert_one_line_failure(result, 2, "the media path clip\\x00.mp4 contains a NUL byte")


def test_media_path_with_an_overlong_name_is_exit_2(tmp_path, no_model_loading):
    path = tmp_path / ("a" * 300 + ".mp4")
    with pytest.raises(InputError, match=r"too long for the file system"):
        load_visual(path)
    line = assert_one_line_failure(invoke("ask", path, QUESTION, "--model", "x"), 2, "too long for the file system")
    assert len(line) < 300


@pytest.mark.parametrize("size", [(1000, 2), (2, 1000), (201 * 28, 28)])
def test_an_image_over_the_aspect_ratio_is_refused_before_the_processor(sessions, tmp_path, monkeypatch, size):
    session = sessions["qwen2_vl"]
    monkeypatch.setattr(session, "processor", None)  # the check comes first: a processor call would fail here
    for visual in (image_visual(Image.new("RGB", size), "wide.png"), video_visual(*size)):
        with pytest.raises(InputError, match=r"aspect ratio of \d+:1; the limit is 200:1"):
            session.prepare(visual, "what?")
    path = tmp_path / "wide.png"
    Image.new("RGB", size).save(path)
    with pytest.raises(InputError, match=r"aspect ratio of \d+:1"):
        load_visual(path)


def test_an_image_over_the_aspect_ratio_is_exit_2(tiny_models, tmp_path):
    path = tmp_path / "wide.png"
    Image.new("RGB", (1000, 2)).save(path)
    result = invoke("ask", path, QUESTION, "--model", tiny_models["qwen2_vl"], "--offline", "--max-new-tokens", "1")
    assert_one_line_failure(result, 2, f"image {path} is 1000x2 pixels, an aspect ratio of 500:1")


def test_what_the_processor_still_refuses_for_the_shape_is_an_input_error(sessions, monkeypatch):
    """The one mapping place (errors.input_fault): the processor's own aspect-ratio ValueError, here reached
    with the up-front check switched off, is an InputError; any other ValueError stays a bug."""
    import vitcop_cli.session.prompting as prompting

    session = sessions["qwen2_vl"]
    monkeypatch.setattr(prompting, "check_frame_size", lambda *a: None)
    with pytest.raises(InputError, match=r"preprocessing image wide.png: the model's processor refuses its shape "
                                         r"\(absolute aspect ratio must be smaller than 200"):
        session.prepare(image_visual(Image.new("RGB", (1000, 2)), "wide.png"), "what?")

    def broken(*args, **kwargs):
        raise ValueError("a bug in the processor")

    monkeypatch.setattr(session, "processor", _Wrapped(session.processor, broken))
    with pytest.raises(ValueError, match="a bug in the processor"):
        session.prepare(image_visual(Image.new("RGB", (64, 64)), "ok.png"), "what?")


class _Wrapped:
    """``processor`` whose call is ``call``; every attribute is the real one's."""

    def __init__(self, processor, call):
        self._processor, self._call = processor, call

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)


@pytest.mark.parametrize("text", ["a\ud800b", "undecodable \udcff byte"])
def test_a_lone_surrogate_in_text_is_an_input_error(sessions, text):
    session = sessions["qwen2_vl"]
    with pytest.raises(InputError, match="the question is not valid Unicode: a lone surrogate"):
        session.ask(CLIP, text, frames=FRAMES, max_new_tokens=1)
    with pytest.raises(InputError, match="the system prompt is not valid Unicode"):
        session.ask(CLIP, "ok?", system=text, frames=FRAMES, max_new_tokens=1)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]
    with pytest.raises(InputError, match="a message is not valid Unicode"):
        session.prepare_chat(load_visual(CLIP, frames=FRAMES), messages)


def test_a_lone_surrogate_in_the_question_argument_is_exit_2(no_model_loading):
    result = invoke("ask", CLIP, "what \udcff?", "--model", "x")
    assert_one_line_failure(result, 2, "the question is not valid Unicode", "'\\udcff' at character 6")


@pytest.mark.parametrize("role", [["user"], {"user": 1}, None])
def test_a_chat_whose_role_is_not_a_string_is_an_input_error(sessions, role):
    messages = [{"role": role, "content": [{"type": "video"}, {"type": "text", "text": "ok?"}]}]
    with pytest.raises(InputError, match="message 1: the role must be a string"):
        sessions["qwen2_vl"].prepare_chat(load_visual(CLIP, frames=FRAMES), messages)


@pytest.mark.parametrize("temperature", [1e-40, 5e-324, 1e-7])
def test_a_positive_temperature_too_small_to_sample_with_is_an_input_error(sessions, no_model_loading, temperature):
    with pytest.raises(InputError, match="too small to sample with"):
        sessions["qwen2_vl"].ask(CLIP, "ok?", frames=FRAMES, max_new_tokens=1, temperature=temperature)
    result = invoke("ask", CLIP, QUESTION, "--model", "x", "--temperature", repr(temperature))
    assert_one_line_failure(result, 2, "--temperature", "too small to sample with", "at least 1e-06")


def test_the_eval_plugin_samples_only_above_the_temperature_floor():
    from test_eval_plugin import ARGS
    from vitcop_eval.options import generation_settings

    assert generation_settings({"do_sample": False, "temperature": 1e-9}, ARGS).temperature == 0.0  # greedy
    with pytest.raises(InputError, match="too small to sample with"):
        generation_settings({"do_sample": True, "temperature": 1e-9}, ARGS)
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(InputError, match="temperature"):
            generation_settings({"do_sample": False, "temperature": bad}, ARGS)


def test_batch_item_over_the_aspect_ratio_is_its_error_line(tiny_models, tmp_path):
    """Before: ``ValueError: absolute aspect ratio ...`` (an unexpected error) in the item's line."""
    folder = tmp_path / "clips"
    folder.mkdir()
    Image.new("RGB", (1000, 2)).save(folder / "wide.png")
    shutil.copy(SCENE, folder / "scene.png")
    out = tmp_path / "out.jsonl"
    result = invoke("batch", folder, "-q", "what?", "-o", out, "-m", tiny_models["qwen2_vl"], "--offline",
                    "-p", "none", "--max-new-tokens", "1", "--json")
    assert result.exit_code == 1, (result.output, result.exception)
    errors = {Path(r["video"]).name: r["error"] for r in map(json.loads, out.read_text().splitlines())}
    assert errors["scene.png"] is None
    assert errors["wide.png"].startswith("image ") and "an aspect ratio of 500:1" in errors["wide.png"]


# --------------------------------------------------------------------------------------------
# finding 4: a small file declaring a huge image is refused from its header
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def declared_huge_png(tmp_path_factory) -> Path:
    """A ~140 KB PNG that declares 12000 x 12000 pixels (under Pillow's decompression-bomb error limit)."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("L", (12000, 12000)).save(path)
    assert path.stat().st_size < 300_000 and 12000 * 12000 > MAX_IMAGE_PIXELS
    return path


def test_a_png_declaring_12000x12000_is_refused_before_decoding(declared_huge_png, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixels decoded"))
    with pytest.raises(InputError, match=r"is 12000x12000 pixels \(144.0 megapixels\); the limit is 50 megapixels"):
        load_visual(declared_huge_png)


def _peak_of_ask(media: Path, model: Path, tmp_path: Path) -> tuple[int, int, str]:
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        code, peak = run_measured(
            [sys.executable, "-m", "vitcop_cli", "ask", str(media), "what?", "--model", str(model), "--offline",
             "--max-new-tokens", "1", "--json"], tmp_path / "peak",
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=tmp_path, env=subprocess_env(tmp_path),
        )
    return code, peak, ANSI.sub("", (tmp_path / "err").read_text())


def test_a_png_declaring_12000x12000_costs_under_300_mb(declared_huge_png, tiny_models, tmp_path):
    """The issue's run answered it at +1.85 GB; now it is exit 2 in one line, within 300 MB of a small image."""
    model = tiny_models["qwen2_vl"]
    (tmp_path / "small").mkdir()
    (tmp_path / "huge").mkdir()
    code, small, err = _peak_of_ask(SCENE, model, tmp_path / "small")
    assert code == 0, err
    code, huge, err = _peak_of_ask(declared_huge_png, model, tmp_path / "huge")
    assert code == 2, err
    assert err.strip().splitlines() == [
        f"error: image {declared_huge_png} is 12000x12000 pixels (144.0 megapixels); the limit is 50 megapixels "
        "(decoded, at least 412 MiB); scale it down first"
    ]
    print(f"peak RSS: small image {small / 2**20:.0f} MiB, 12000x12000 PNG {huge / 2**20:.0f} MiB")
    assert huge - small < 300 * 2**20, f"+{(huge - small) / 2**20:.0f} MiB"


# --------------------------------------------------------------------------------------------
# finding 5: --out through a symbolic link
# --------------------------------------------------------------------------------------------


@pytest.fixture
def linked_out(tmp_path) -> tuple[Path, Path]:
    """(a link, the file it points at in another folder); the file does not exist yet."""
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    link = tmp_path / "links" / "out.jsonl"
    link.symlink_to(Path("..") / "real" / "out.jsonl")
    return link, tmp_path / "real" / "out.jsonl"


def _items(*names: str) -> list[BatchItem]:
    return [BatchItem(video=str(SAMPLES / n), question="Q") for n in names]


def test_out_through_a_symlink_writes_the_target_and_keeps_the_link(linked_out):
    link, real = linked_out
    run_batch(FakeSession({}), _items("scene.png"), link, presets=["none"])
    run_batch(FakeSession({}), _items("scene.png", "shapes.mp4"), link, presets=["none"], frames=FRAMES)  # resume
    assert link.is_symlink() and link.resolve() == real
    assert [Path(r["video"]).name for r in read_results(real)[0]] == ["scene.png", "shapes.mp4"]
    assert sorted(p.name for p in link.parent.iterdir()) == ["out.jsonl"]  # nothing written next to the link
    assert sorted(p.name for p in real.parent.iterdir()) == ["out.jsonl", "out.jsonl.lock"]


def test_out_through_a_symlink_from_the_cli(linked_out, tiny_models):
    link, real = linked_out
    folder = link.parent.parent / "clips"
    folder.mkdir()
    shutil.copy(SCENE, folder / "scene.png")
    for _ in range(2):  # the second run resumes through the link: nothing to do
        result = invoke("batch", folder, "-q", "what?", "-o", link, "-m", tiny_models["qwen2_vl"], "--offline",
                        "-p", "none", "--max-new-tokens", "1", "--json")
        assert result.exit_code == 0, (result.output, result.exception)
    assert link.is_symlink() and len(real.read_text().splitlines()) == 1


def test_a_run_through_the_link_and_one_on_the_real_path_exclude_each_other(linked_out):
    link, real = linked_out
    with OutLock(link):
        with pytest.raises(InputError, match="being written by another vitcop batch"):
            OutLock(real)
        with pytest.raises(InputError, match="being written by another vitcop batch"):
            run_batch(FakeSession({}), _items("scene.png"), real, presets=["none"])
    with OutLock(real):
        with pytest.raises(InputError, match="being written by another vitcop batch"):
            OutLock(link)


# --------------------------------------------------------------------------------------------
# finding 6: batch lines JSON cannot hold are reported by line number
# --------------------------------------------------------------------------------------------


def _questions(tmp_path: Path) -> Path:
    good = json.dumps({"video": str(SCENE), "question": "Q"})
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join([
        good,
        '{"video": "%s", "question": "Q", "id": %s}' % (SCENE, "9" * 5000),  # over the 4,300-digit limit
        "[" * 100_000 + "]" * 100_000,  # deeper than the recursion limit
        json.dumps({"video": "clip\0.mp4", "question": "Q"}),  # a NUL in the path
        good,
    ]) + "\n")
    return path


BAD_LINES = ("line 2: not usable JSON (a number with more than 4,300 digits); "
             "line 3: not usable JSON (nested too deeply); "
             'line 4: "video" contains a NUL character, which no file name can')


def test_batch_lines_json_cannot_hold_are_reported_by_line(tmp_path):
    with pytest.raises(InputError) as info:
        read_jsonl(_questions(tmp_path))
    assert str(info.value) == f"{tmp_path / 'q.jsonl'}: 3 bad lines: {BAD_LINES}"


def test_batch_lines_json_cannot_hold_are_exit_2(tmp_path, no_model_loading):
    result = invoke("batch", _questions(tmp_path), "-o", tmp_path / "out.jsonl", "-m", "x")
    assert_one_line_failure(result, 2, f"3 bad lines: {BAD_LINES}")


def test_a_results_file_holding_such_lines_still_resumes(tmp_path):
    """Lines in --out that JSON cannot hold are not ours: skipped when reading, kept in place by the merge
    (before: a RecursionError ended the resume)."""
    out = tmp_path / "out.jsonl"
    run_batch(FakeSession({}), _items("scene.png"), out, presets=["none"])
    deep, huge = "[" * 100_000 + "]" * 100_000, '{"n": %s}' % ("9" * 5000)
    with open(out, "a") as fh:
        fh.write(f"{deep}\n{huge}\n")
    records, torn = read_results(out)
    assert [Path(r["video"]).name for r in records] == ["scene.png"] and torn == 0
    run_batch(FakeSession({}), _items("scene.png", "shapes.mp4"), out, presets=["none"], frames=FRAMES)
    lines = out.read_text().splitlines()
    assert lines[1:3] == [deep, huge] and len(lines) == 4
    assert Path(json.loads(lines[3])["video"]).name == "shapes.mp4"


# --------------------------------------------------------------------------------------------
# finding 7: good files with odd names or sizes, URLs with credentials
# --------------------------------------------------------------------------------------------


@pytest.fixture
def undecodable_names(tmp_path) -> Path:
    """A folder holding a clip and an image whose names are not UTF-8 (``\\xff``)."""
    folder = tmp_path / "odd"
    folder.mkdir()
    shutil.copy(CLIP, os.path.join(os.fsencode(folder), b"clip\xff.mp4"))
    shutil.copy(SCENE, os.path.join(os.fsencode(folder), b"pic\xff.png"))
    return folder


def test_a_file_name_that_is_not_utf8_is_read(undecodable_names):
    """Before: the clip was called corrupt ("'utf-8' codec can't encode character '\\udcff'")."""
    base = os.fsencode(undecodable_names)
    for name, kind in ((b"clip\xff.mp4", "video"), (b"pic\xff.png", "image")):
        for path in (os.path.join(base, name), os.fsdecode(os.path.join(base, name))):  # bytes, or str as Python has it
            visual = load_visual(path, frames=FRAMES)
            assert (visual.kind, visual.width, visual.height) == (kind, 320, 240)
    assert not [p for p in Path("/tmp").glob("vitcop-media-*")]  # the temporary link is gone
    with pytest.raises(InputError) as info:
        load_visual(os.path.join(base, b"gone\xff.mp4"))
    assert str(info.value) == f"file not found: {undecodable_names}/gone\\xff.mp4; check the path"


def test_ask_and_batch_take_a_file_name_that_is_not_utf8(undecodable_names, tiny_models, tmp_path):
    clip = os.fsdecode(os.path.join(os.fsencode(undecodable_names), b"clip\xff.mp4"))
    proc = run_cli(["ask", clip, QUESTION, "--model", tiny_models["qwen2_vl"], "--frames", FRAMES,
                    "--max-new-tokens", "1", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["visual"]["frames"] == FRAMES
    out = tmp_path / "out.jsonl"
    result = invoke("batch", undecodable_names, "-q", "what?", "-o", out, "-m", tiny_models["qwen2_vl"],
                    "--offline", "-p", "none", "--frames", FRAMES, "--max-new-tokens", "1", "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(os.fsencode(r["video"]) for r in records) == sorted(
        os.path.join(os.fsencode(undecodable_names), n) for n in (b"clip\xff.mp4", b"pic\xff.png"))
    assert all(r["error"] is None for r in records)


@pytest.mark.parametrize("width, height", [(2, 2), (2, 1000)])
def test_tiny_h264_clips_get_an_accurate_message(tmp_path, width, height):
    """decord cannot convert frames this narrow (the clip plays elsewhere): said so, not "corrupt or truncated"."""
    clip = h264_clip(tmp_path / f"c{width}x{height}.mp4", width, height)
    with pytest.raises(InputError) as info:
        load_visual(clip, frames=FRAMES)
    message = str(info.value)
    assert message.startswith(f"cannot decode video {clip}: its frames are too narrow for the video decoder")
    assert "corrupt" not in message and "re-encode it at least 80 pixels wide" in message


def test_a_wide_flat_h264_clip_is_refused_for_its_aspect_ratio(tmp_path):
    clip = h264_clip(tmp_path / "flat.mp4", 1000, 2)
    with pytest.raises(InputError, match=r"video .*flat.mp4 is 1000x2 pixels, an aspect ratio of 500:1"):
        load_visual(clip, frames=FRAMES)


def test_a_url_with_credentials_is_refused_before_connecting(target, tmp_path):
    """Before: "host not found" (urllib took ``user:pw@host`` for the host name)."""
    for url in (target.url(host=f"user:pw@{target.host}"), target.url(host=f"user@{target.host}")):
        with pytest.raises(InputError, match=r"URLs with credentials \(user:password@\) are not supported") as info:
            fetch(url, cache_dir=tmp_path, timeout_s=10)
        assert "user:pw@" not in str(info.value) and "user@" not in str(info.value)
        with pytest.raises(MediaHostRefused, match="URLs with credentials"):
            MediaHostGuard(allow_private=True).check_url(url)
    assert target.connections == []
    hop = target.hop(to=target.url(host=f"user:pw@{target.host}"))
    with pytest.raises(InputError, match="redirected to .*URLs with credentials"):
        fetch(hop, cache_dir=tmp_path, timeout_s=10)
    assert [path for path, _ in target.requests] == ["/hop"]
