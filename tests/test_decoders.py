"""The decoder backends (vitcop_cli.media.decoders): one contract, checked on every backend that is usable here.

Clips are written here with PyAV (128x96, 24 frames at 24 fps, a key frame every 4 frames, B-frames; frame
``i`` has blue level ``10 * i``, a moving white box and a red marker at the bottom left): a plain one, one
with a 90-degree display matrix, one with a variable frame rate, and bad files (random bytes, a clip cut in
half, audio only, a video stream without frames, 0 bytes). A backend that cannot be used here skips with its
reason (torchcodec without FFmpeg's libraries; decord until its backend module exists).

Tolerances: at source size every backend matches decord's ``VideoReader`` (today's decoder) within 2 levels
per channel (FFmpeg builds may round the YUV -> RGB conversion differently; 0 was measured with FFmpeg 5.1,
7 and decord's). Scaled frames are compared with the backend's own source-size frames scaled by
``torch.nn.functional.interpolate(bilinear, antialias=True)``: mean absolute difference under 4 levels
(torchcodec scales in RGB after converting, PyAV in YUV in the same pass as the conversion).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from fractions import Fraction

import pytest

from vitcop_cli.errors import InputError
from vitcop_cli.media.decoders import DECODERS, get
from vitcop_cli.media.decoders.base import corrupt, empty_file, no_video_stream, truncated

av = pytest.importorskip("av")
np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

W, H, N, FPS = 128, 96, 24, 24
VFR_TICKS = [4 * k + 8 * (k // 3) for k in range(N)]  # in 1/96 s: every third frame lasts 3 ticks of 1/24 s


def _picture(i: int) -> "np.ndarray":
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = (np.arange(W) * 160 // W)[None]
    img[..., 1] = (np.arange(H) * 160 // H)[:, None]
    img[..., 2] = (10 * i) % 250
    x = (4 * i) % (W - 16)
    img[8:24, x:x + 16] = 255
    img[H - 16:H - 4, 4:16] = (255, 0, 0)
    return img


def _write(path, *, rotation: int = 0, vfr: bool = False, frames: int = N, faststart: bool = False):
    with av.open(str(path), "w", options={"movflags": "+faststart"} if faststart else {}) as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "16", "g": "4", "bf": "2"}
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_picture(i), format="rgb24")
            if vfr:
                frame.pts, frame.time_base = VFR_TICKS[i], Fraction(1, 4 * FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return str(path)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("decoder-clips")
    out = {"plain": _write(folder / "plain.mp4"), "vfr": _write(folder / "vfr.mp4", vfr=True)}
    if hasattr(av.video.stream.VideoStream, "set_display_rotation"):  # PyAV 17+
        out["rotated"] = _write(folder / "rotated.mp4", rotation=90)
    whole = _write(folder / "whole.mp4", frames=48, faststart=True)  # the index first: the cut keeps it
    data = open(whole, "rb").read()
    (folder / "cut.mp4").write_bytes(data[: len(data) // 2])
    (folder / "junk.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    (folder / "empty.mp4").write_bytes(b"")
    with av.open(str(folder / "audio.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for _ in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(folder / "noframes.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        container.start_encoding()
    out.update({name: str(folder / f"{name}.mp4") for name in ("cut", "junk", "empty", "audio", "noframes")})
    return out


def _backend(name: str):
    try:
        module = importlib.import_module(f"vitcop_cli.media.decoders.{name}_backend")
    except ModuleNotFoundError as exc:
        if exc.name == f"vitcop_cli.media.decoders.{name}_backend":
            pytest.skip(f"{name}: its backend module ({name}_backend.py) does not exist yet")
        raise
    reason = module.DECODER.unavailable()
    if reason:
        pytest.skip(f"{name}: {reason}")
    return module.DECODER


@pytest.fixture(params=DECODERS)
def backend(request):
    return _backend(request.param)


def _decord_frames(path, indices):
    decord = pytest.importorskip("decord")
    return torch.from_numpy(decord.VideoReader(path, num_threads=1).get_batch(indices).asnumpy())


def _near(a, b, limit=2):
    assert a.shape == b.shape
    assert (a.int() - b.int()).abs().max().item() <= limit


def test_info(backend, clips):
    with backend(clips["plain"], threads=1) as d:
        info = d.info()
    assert (info.total_frames, info.width, info.height) == (N, W, H)
    assert info.avg_fps == pytest.approx(FPS)
    assert info.duration_s == pytest.approx(N / FPS)


def test_source_size_frames_match_decord(backend, clips):
    indices = [0, 5, 11, 23]
    with backend(clips["plain"], threads=1) as d:
        frames = d.read(indices)
    assert frames.dtype == torch.uint8 and frames.shape == (4, H, W, 3)
    _near(frames, _decord_frames(clips["plain"], indices))


def test_only_the_asked_frames_in_order(backend, clips):
    with backend(clips["plain"], threads=1) as d:
        every = d.read(list(range(N)))
    blue = every[:, 40:60, 40:80, 2].float().mean(dim=(1, 2))  # frame i: 10 * i
    assert (blue - 10 * torch.arange(N)).abs().max() < 4
    sparse = [1, 2, 9, 17, 22]  # gaps that skip key frames: the decoder may seek
    with backend(clips["plain"], threads=1) as d:
        _near(d.read(sparse), every[sparse], 0)
    with backend(clips["plain"], threads=1) as d:  # ascending chunks continue where the last stopped
        _near(torch.cat([d.read([0, 3]), d.read([4, 13]), d.read([20, 23])]), every[[0, 3, 4, 13, 20, 23]], 0)
        assert d.read([]).shape == (0, H, W, 3)
        with pytest.raises(ValueError):
            d.read([5, 3])
        with pytest.raises(ValueError):
            d.read([N])


def test_scaled_to_the_target_size(backend, clips):
    indices = [0, 7, 23]
    with backend(clips["plain"], threads=1) as d:
        source = d.read(indices)
        scaled = d.read(indices, size=(42, 56))
    assert scaled.dtype == torch.uint8 and scaled.shape == (3, 42, 56, 3)
    expected = torch.nn.functional.interpolate(source.permute(0, 3, 1, 2).float(), size=(42, 56), mode="bilinear",
                                               antialias=True).round().clamp(0, 255).permute(0, 2, 3, 1)
    assert (scaled.float() - expected).abs().mean() < 4


def test_backends_agree(clips):
    usable = [cls for cls in (_try(name) for name in DECODERS) if cls is not None]
    if len(usable) < 2:
        pytest.skip("fewer than two usable backends here")
    reads = []
    for cls in usable:
        with cls(clips["plain"], threads=1) as d:
            reads.append((d.read([2, 13]), d.read([2, 13], size=(48, 64)), d.timestamps([2, 13])))
    for frames, scaled, times in reads[1:]:
        _near(frames, reads[0][0])
        assert (scaled.float() - reads[0][1].float()).abs().mean() < 4
        assert times == pytest.approx(reads[0][2])


def _try(name):
    try:
        return _backend(name)
    except pytest.skip.Exception:
        return None


def test_rotated_clip_reads_portrait(backend, clips):
    if "rotated" not in clips:
        pytest.skip("this PyAV cannot write a display matrix (VideoStream.set_display_rotation needs PyAV 17+)")
    with backend(clips["rotated"], threads=1) as d:
        info = d.info()
        frames = d.read([0, 10])
        scaled = d.read([0, 10], size=(112, 84))  # at least 80 wide: decord's converter refuses narrower
    assert (info.width, info.height) == (H, W)
    assert frames.shape == (2, W, H, 3) and scaled.shape == (2, 112, 84, 3)
    # the marker at the source's bottom left is at the bottom right once turned 90 degrees counter-clockwise
    corner = frames[0, W - 16:W - 4, H - 16:H - 4].float().mean(dim=(0, 1))
    assert corner[0] > 200 and corner[1] < 80 and corner[2] < 80
    _near(frames, _decord_frames(clips["rotated"], [0, 10]))


def test_variable_frame_rate(backend, clips):
    with backend(clips["vfr"], threads=1) as d:
        info = d.info()
        frames = d.read([0, 3, 23])
        times = d.timestamps([0, 1, 2, 3, 23])
    assert info.total_frames == N
    duration = (VFR_TICKS[-1] + 4) / (4 * FPS)
    assert info.duration_s == pytest.approx(duration)
    assert info.avg_fps == pytest.approx(N / duration, rel=1e-3)
    assert times == pytest.approx([VFR_TICKS[i] / (4 * FPS) for i in (0, 1, 2, 3, 23)], abs=1e-6)
    blue = frames[:, 40:60, 40:80, 2].float().mean(dim=(1, 2))
    assert (blue - torch.tensor([0.0, 30, 230])).abs().max() < 4


def test_timestamps_before_reading(backend, clips):
    with backend(clips["plain"], threads=1) as d:
        assert d.timestamps([0, 6, 23]) == pytest.approx([0, 6 / FPS, 23 / FPS], abs=1e-6)


EXPECTED = {
    "junk": lambda path: corrupt(path, "REASON"),
    "cut": lambda path: truncated(path, "REASON"),
    "audio": no_video_stream,
    "noframes": no_video_stream,
    "empty": empty_file,
}


@pytest.mark.parametrize("bad", sorted(EXPECTED))
def test_bad_files_fail_the_same_way(backend, clips, capfd, bad):
    """Same InputError wording on every backend (the reason in parentheses is the library's), at open or,
    for a clip cut short, at open or at the first read that reaches the cut; nothing printed to stderr."""
    path = clips[bad]
    capfd.readouterr()
    with pytest.raises(InputError) as caught:
        with backend(path, threads=1) as d:
            d.read(list(range(d.info().total_frames)))
    head, _, tail = str(EXPECTED[bad](path)).partition("REASON")
    message = str(caught.value)
    assert message.startswith(head) and message.endswith(tail) and "\n" not in message
    assert capfd.readouterr().err == ""


def test_registry(monkeypatch):
    with pytest.raises(InputError, match="unknown decoder 'ffmpeg'; choose one of: decord, torchcodec, pyav"):
        get("ffmpeg")
    pyav = _backend("pyav")
    assert get("pyav") is pyav
    monkeypatch.setattr(pyav, "unavailable", classmethod(lambda cls: "PyAV is not installed; pip install av"))
    with pytest.raises(InputError, match="the pyav decoder cannot be used: PyAV is not installed; pip install av"):
        get("pyav")


def test_cpu_only_backends_refuse_cuda(clips):
    with pytest.raises(InputError, match="the pyav decoder cannot decode on 'cuda'; it supports: cpu"):
        _backend("pyav")(clips["plain"], device="cuda")


def test_other_backends_do_not_need_decord(clips):
    """With decord unimportable, the package and the other backends import and decode."""
    code = (
        "import sys; sys.modules['decord'] = None\n"
        "from vitcop_cli.media.decoders import DECODERS, get\n"
        "from vitcop_cli.errors import InputError\n"
        "for name in DECODERS[1:]:\n"
        "    try:\n"
        "        cls = get(name)\n"
        "    except InputError as exc:\n"
        "        print(name, 'unavailable:', exc); continue\n"
        "    with cls(sys.argv[1], threads=1) as d:\n"
        "        print(name, tuple(d.read([0, 23], size=(24, 32)).shape))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, clips["plain"]], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert run.returncode == 0, run.stderr
    assert "pyav (2, 24, 32, 3)" in run.stdout


def test_importing_the_interface_is_cheap():
    code = ("import sys; import vitcop_cli.media.decoders, vitcop_cli.media.decoders.base\n"
            "heavy = [m for m in ('torch', 'av', 'decord', 'torchcodec') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert run.returncode == 0, run.stderr


def test_torchcodec_cuda_decodes_on_the_gpu(clips):
    """GPU only: NVDEC frames match the CPU's (NVDEC converts colours itself: mean difference under 3)."""
    cls = _backend("torchcodec")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    with cls(clips["plain"], threads=1) as d:
        cpu = d.read([0, 9, 23])
    with cls(clips["plain"], device="cuda") as d:
        gpu = d.read([0, 9, 23])
        scaled = d.read([0, 9, 23], size=(48, 64))
        assert d.info().total_frames == N
    assert gpu.is_cuda and gpu.shape == cpu.shape and scaled.shape == (3, 48, 64, 3)
    assert (gpu.cpu().float() - cpu.float()).abs().mean() < 3
