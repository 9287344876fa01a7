"""torchcodec backend (optional extra ``vitcop[torchcodec]``; needs FFmpeg's shared libraries, 4 to 8).

How it decodes (contract in :mod:`.base`):

- ``torchcodec.decoders.VideoDecoder`` in ``seek_mode="exact"``: opening scans the file's packets (no
  decoding), so frame ``i`` is the ``i``-th in presentation order, as with decord, also for variable frame
  rates and containers whose header has no frame count ("approximate" skips the scan but takes the count
  and the frame positions from the header and the average rate). A container that announces more frames
  than it holds raises :func:`.base.truncated`.
- ``read`` is one ``get_frames_at`` batch per call (torchcodec seeks to a key frame when that skips work and
  decodes forward otherwise) with ``num_ffmpeg_threads=threads``; only the asked frames are converted.
  ``size`` is done by the decoder: a second ``VideoDecoder`` per size with a ``torchcodec.transforms.Resize``
  transform (bilinear, antialiased), which scales each frame in the same swscale pass that converts it to
  RGB. Its scan repeats once per size.
- ``info().avg_fps`` is frames / scanned duration (torchcodec does not expose FFmpeg's ``avg_frame_rate``,
  which decord and PyAV report). The two agree for MP4/MOV; for a variable-frame-rate Matroska clip they
  may differ by a few percent (24 frames: 14.93 vs 15.16 fps), which can change a count sampled by rate.
- Rotation: torchcodec applies the display matrix itself (frames, sizes and metadata are as displayed).
- ``device="cuda"`` / ``"cuda:N"`` decodes with NVDEC; frames are returned on that device.
- ``timestamps`` are the presentation times torchcodec returned with the frames already read; frames not
  read yet are decoded (at the last size read) to learn theirs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .base import ClipInfo, Decoder, corrupt, no_video_stream, truncated

if TYPE_CHECKING:
    import torch

_CPP_LOCATION = re.compile(r"^.*?\.(?:cpp|h|cc|cu):\d+,\s*")


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class TorchCodecDecoder(Decoder):
    name = "torchcodec"
    devices = ("cpu", "cuda")

    @classmethod
    def unavailable(cls) -> str | None:
        from ...environment import installed_version

        if installed_version("torchcodec") is None:
            return "torchcodec is not installed; pip install 'vitcop[torchcodec]'"
        try:
            import torchcodec.decoders  # noqa: F401 - loads its FFmpeg libraries
        except Exception as exc:  # noqa: BLE001 - a missing FFmpeg raises RuntimeError / OSError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return (f"torchcodec cannot load FFmpeg ({first[:160]}); install FFmpeg's shared libraries, "
                    "versions 4 to 8 (e.g. Debian's ffmpeg package)")
        return None

    def _open(self) -> None:
        import torch

        if self.device != "cpu" and not torch.cuda.is_available():
            from ...errors import InputError

            raise InputError(f"the torchcodec decoder cannot decode on {self.device!r}: torch sees no CUDA GPU; "
                             "decode on the CPU instead")
        self._decoders, self._files = {}, []
        self._pts: dict[int, float] = {}
        self._last_size = None
        meta = self._decoder(None).metadata
        total = meta.num_frames or 0
        if not total:
            raise no_video_stream(self.path)
        announced, found = meta.num_frames_from_header, meta.num_frames_from_content
        if announced and found is not None and announced > found:
            raise truncated(self.path, f"the container lists {announced} frames, {found} are present")
        fps = meta.average_fps  # frames / scanned duration; its "from header" is r_frame_rate, not an average
        self._info = ClipInfo(total, float(fps) if fps and fps > 0 else None, meta.duration_seconds or None,
                              int(meta.width), int(meta.height))
        self._origin = meta.begin_stream_seconds or 0.0

    def _reason(self, exc: BaseException) -> str:
        from ..decord_quiet import one_line

        text = _CPP_LOCATION.sub("", " ".join(str(exc).split())).replace(self.path, "").replace("  ", " ")
        return one_line(text) or type(exc).__name__

    def _open_error(self, exc: ValueError):
        """torchcodec's ValueError at open: "The best video stream is unknown ..." (audio only, no frames)."""
        return no_video_stream(self.path) if "video stream" in str(exc) else corrupt(self.path, self._reason(exc))

    def _decoder(self, size: tuple[int, int] | None):
        """The ``VideoDecoder`` scaling to ``size`` (``None``: none), opened on first use."""
        if size not in self._decoders:
            from torchcodec.decoders import VideoDecoder
            from torchcodec.transforms import Resize

            def open_(seek_mode):
                source = self.path
                if not _utf8(self.path):  # a name that is not UTF-8: FFmpeg reads through a file object
                    source = open(self.path, "rb")
                    self._files.append(source)
                return VideoDecoder(source, dimension_order="NHWC", num_ffmpeg_threads=self.threads,
                                    device=self.device, seek_mode=seek_mode,
                                    transforms=[Resize(size)] if size else None)

            try:
                self._decoders[size] = open_("exact")
            except ValueError as exc:
                raise self._open_error(exc) from None
            except RuntimeError as exc:  # "Could not open input file: ...", or the scan failed
                try:  # a stream without frames fails the scan; opened without one, the header says why
                    open_("approximate")
                except ValueError as header_exc:
                    raise self._open_error(header_exc) from None
                except RuntimeError:
                    pass
                raise corrupt(self.path, self._reason(exc)) from None
        return self._decoders[size]

    def info(self) -> ClipInfo:
        return self._info

    def _read(self, indices: list[int], size: tuple[int, int] | None) -> "torch.Tensor":
        self._last_size = size
        try:
            batch = self._decoder(size).get_frames_at(indices)
        except RuntimeError as exc:  # "Could not push packet to decoder: Invalid data found ..."
            raise truncated(self.path, self._reason(exc)) from None
        self._pts.update(zip(indices, batch.pts_seconds.tolist()))
        return batch.data

    def timestamps(self, indices: list[int]) -> list[float]:
        missing = [i for i in indices if i not in self._pts]
        if missing:
            self._read(missing, self._last_size)
        return [self._pts[i] - self._origin for i in indices]

    def close(self) -> None:
        self._decoders = {}
        for file in getattr(self, "_files", ()):
            file.close()
        self._files = []


DECODER = TorchCodecDecoder
