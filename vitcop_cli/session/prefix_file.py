"""One kept pruned prefix as a safetensors file's content: tensors + a string metadata dict, and back.

Contract (the on-disk prefix cache, :mod:`.prefix_store`, writes and reads files with these two functions):

- :func:`encode` ``(key, session, kept, visual) -> (tensors, metadata)``: CPU tensors by name and a
  ``dict[str, str]`` for :func:`safetensors.torch.save_file`. Tensors: ``cache.<compat name>`` (the prefix's KV
  cache, :func:`pruning.compat.cache_tensors`: softmax layers' keys / values (1, H_kv, S_l, d), linear layers'
  conv (1, C, K) / recurrent (1, H_v, d_k, d_v) states and token counts ()), ``prefix.input_ids`` (1, P),
  ``position.<name>`` (M-RoPE ``rope_deltas`` (1, 1)), the engine's record (``state.kept_orig`` (S',),
  ``state.cur`` / ``state.visual`` (S_cur,), ``state.visual_idx`` (n,), ``state.layer_cols.<l>`` (S_l,),
  ``state.written.<l>.index`` (R,) / ``.values`` (R, D)) and, for an image, ``visual.image`` (H, W, 3) uint8 (its
  prompt needs its pixels; a video's needs only its frames' shape). Metadata: ``format``, ``key``, ``identity``
  (JSON of :func:`model_identity`), ``versions`` (vitcop / transformers / torch), ``fields`` (JSON of every
  non-tensor field: the record's counts, the build costs, the visual's metadata) and ``checksum``
  (:func:`checksum`: SHA-256 over the other metadata and every tensor's name, dtype, shape and bytes).
- :func:`decode` ``(key, session, metadata, tensors) -> (KeptPrefix, Visual)``: checks, in order, the format,
  the key, the versions, the model identity (before any tensor is read: ``tensors`` is called only then), the
  checksum, the tensor names and every shape against the model (:func:`pruning.verify.check_cache`, the check a
  prefix gets before each question) and rebuilds the prefix on the session's device. Any mismatch raises
  :class:`Rejected` with a one-line reason; nothing here ever runs code from a file (no pickle).

Not stored: the record's DeepStack ``additions`` and gathered rope / masks (read only during the prefill, never
after it), the build's ``phases`` (a disk hit is never charged a build), the visual's ``processed`` pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable

import torch

from pruning import compat
from pruning.prefix import PrunedPrefix
from pruning.survivors import PrefillState
from pruning.verify import PruningNotApplied, check_cache

from ..errors import exc_line
from ..media.video import Visual
from .generation import KeptPrefix

__all__ = ["FORMAT", "Rejected", "checksum", "decode", "encode", "model_identity", "versions"]

FORMAT = "vitcop-prefix/1"
_COSTS = ("video_decode_s", "preprocess_s", "vision_encoder_s", "model_s", "pruning_s")
_VISUAL = ("kind", "timestamps", "indices", "source_fps", "total_frames", "duration_s", "width", "height",
           "sampling_fps", "warnings")
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".json")


class Rejected(ValueError):
    """A prefix file that must not be used; the message is one line saying why."""


def versions() -> dict[str, str]:
    """vitcop / transformers / torch versions, and ``layout``: a hash of the field names of every dataclass a
    file holds (a build of vitcop whose prefix, record or visual has other fields does not read this file)."""
    import transformers

    from .. import __version__

    layout = [[c.__name__, [f.name for f in dataclasses.fields(c)]] for c in (PrunedPrefix, PrefillState, KeptPrefix,
                                                                            Visual)]
    return {"vitcop": __version__, "transformers": transformers.__version__, "torch": torch.__version__,
            "layout": _sha(_json(layout))[:8]}


def model_identity(session) -> dict[str, str]:
    """What a prefix's values depend on besides the clip: the model (its name, a hash of its config, of its
    processor's config and chat template, and of its weight files' names / sizes / mtimes or its hub commit),
    dtype, device kind (a CUDA device by its name: kernels differ) and attention implementation."""
    model, processor = session.model, session.processor
    try:
        proc = processor.to_json_string()
    except Exception:  # noqa: BLE001 - a processor that cannot say its config: its chat template still counts
        proc = type(processor).__name__
    proc += str(getattr(processor, "chat_template", None))
    device = torch.device(session.device)
    kind = device.type
    if kind == "cuda":
        kind += ":" + torch.cuda.get_device_name(device)
    return {
        "model": str(session.name),
        "config": _sha(model.config.to_json_string()),
        "processor": _sha(proc),
        "weights": _weights(model),
        "dtype": str(session.dtype).replace("torch.", ""),
        "device": kind,
        "attn": str(session.attn_implementation),
    }


def encode(key: str, session, kept: KeptPrefix, visual: Visual) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of ``kept`` (built by ``session`` for ``visual``) under ``key``; see the module."""
    p = kept.prefix
    tensors = {f"cache.{name}": t for name, t in compat.cache_tensors(p.cache).items()}
    tensors["prefix.input_ids"] = p.input_ids
    tensors.update({f"position.{name}": t for name, t in p.position.items()})
    st = p.state
    if st is not None:
        tensors.update({"state.kept_orig": st.kept_orig, "state.cur": st.cur, "state.visual": st.visual})
        if st.visual_idx is not None:
            tensors["state.visual_idx"] = st.visual_idx
        tensors.update({f"state.layer_cols.{layer}": cols for layer, cols in st.layer_cols.items()})
        for layer, (index, values) in st.written.items():
            tensors[f"state.written.{layer}.index"], tensors[f"state.written.{layer}.values"] = index, values
    if visual.kind == "image":
        import numpy as np

        tensors["visual.image"] = torch.from_numpy(np.asarray(visual.frames.convert("RGB"), dtype=np.uint8).copy())
    # CPU tensors; the small ones copied, since safetensors refuses tensors that share memory (the record's
    # layer_cols alias ``cur``); the cache's own tensors never do (copied only off a GPU)
    tensors = {name: t.detach().to("cpu", copy=not name.startswith("cache.")).contiguous()
               for name, t in tensors.items()}
    fields = {
        "prefix": {name: getattr(p, name) for name in _prefix_scalars()},
        "state": None if st is None else _state_fields(st),
        "costs": {name: float(getattr(kept, name)) for name in _COSTS},
        "visual": {**{name: getattr(visual, name) for name in _VISUAL}, "path": visual.path,
                   "frames_shape": list(visual.frames.shape) if visual.kind == "video" else None},
    }
    metadata = {"format": FORMAT, "key": key, "identity": _json(model_identity(session)),
                "versions": _json(versions()), "fields": _json(fields)}
    metadata["checksum"] = checksum(metadata, tensors)
    return tensors, metadata


def decode(key: str, session, metadata: dict[str, str] | None,
           tensors: Callable[[], dict[str, torch.Tensor]]) -> tuple[KeptPrefix, Visual]:
    """The prefix and visual a file holds, after every check (see the module); :class:`Rejected` otherwise.
    ``tensors()`` reads the file's tensors (CPU); it is called only once the metadata says the file fits."""
    meta = metadata or {}
    if meta.get("format") != FORMAT:
        raise Rejected(f"not a vitcop prefix file of format {FORMAT}")
    if meta.get("key") != key:
        raise Rejected("it holds another clip's prefix (its key differs from its name)")
    if _loads(meta, "versions") != versions():
        got = _loads(meta, "versions")
        raise Rejected("written by " + ", ".join(f"{k} {got.get(k, '?')}" for k in versions()) + " (now "
                       + ", ".join(f"{k} {v}" for k, v in versions().items()) + ")")
    mine, theirs = model_identity(session), _loads(meta, "identity")
    if theirs != mine:
        what = next((k for k in mine if theirs.get(k) != mine[k]), "model")
        raise Rejected(f"written for another model ({what}: {str(theirs.get(what, '?'))[:60]}, "
                       f"not {mine[what][:60]})")
    data = tensors()
    if meta.get("checksum") != checksum(meta, data):
        raise Rejected("its checksum does not match its content (the file is damaged)")
    try:
        return _rebuild(session, data, json.loads(meta["fields"]))
    except Rejected:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, PruningNotApplied) as exc:
        raise Rejected(f"it does not fit this model ({_one_line(exc)})") from None


def checksum(metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) over ``metadata`` but its ``checksum`` (canonical JSON) and each tensor, by name: its name,
    dtype, shape and raw bytes."""
    h = hashlib.sha256(FORMAT.encode() + b"\0")
    h.update(_json({k: v for k, v in metadata.items() if k != "checksum"}).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"\0{name}\0{str(t.dtype)}\0{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


# ---- rebuilding --------------------------------------------------------------------------------------------
def _rebuild(session, data: dict[str, torch.Tensor], fields: dict) -> tuple[KeptPrefix, Visual]:
    device, used = torch.device(session.device), set()

    def take(name: str) -> torch.Tensor:
        used.add(name)
        return data[name].to(device)

    shape = session.adapter.lm_shape()
    names = [n for n in data if n.startswith("cache.")]
    cache_t = {n[len("cache."):]: take(n) for n in names}
    for name, t in cache_t.items():  # keys / values; a linear layer's states are checked by check_cache below
        if not name.endswith((".keys", ".values")):
            continue
        if t.dtype != session.dtype:
            raise Rejected(f"its cache holds {t.dtype} keys, the model runs in {session.dtype}")
        if t.ndim != 4 or t.shape[:2] != (1, shape.kv_heads) or t.shape[3] != shape.head_dim:
            raise Rejected(f"its cache tensor {name} has shape {tuple(t.shape)}, not (1, {shape.kv_heads}, S, "
                           f"{shape.head_dim})")
    cache = compat.cache_from_tensors(session.model.config, cache_t)
    f = fields["prefix"]
    input_ids = take("prefix.input_ids")
    position = {n[len("position."):]: take(n) for n in list(data) if n.startswith("position.")}
    state = None if fields["state"] is None else _state(fields["state"], take, data)
    if input_ids.ndim != 2 or input_ids.shape[0] != 1 or (state is not None and state.prompt_len != input_ids.shape[1]):
        raise Rejected(f"its prompt ids {tuple(input_ids.shape)} do not match its record")
    length = int(input_ids.shape[1])
    if state is not None:
        check_cache(state, shape, cache, " of the stored prefix")
    else:
        for layer in range(shape.layers):  # unpruned: every layer saw the whole prefix (a linear one: its count,
            if not shape.has_keys(layer) and not compat.counts_linear_tokens(cache, layer):  # where it keeps one)
                continue
            got = compat.cache_length(cache, layer)
            if got != length:
                raise Rejected(f"layer {layer} holds {got} tokens, not the prefix's {length}")
    v = fields["visual"]
    frames = (torch.empty(tuple(v["frames_shape"]), dtype=torch.uint8, device="meta") if v["kind"] == "video"
              else _image(data["visual.image"]))
    used |= {"visual.image"} & set(data)
    if set(data) != used:
        raise Rejected(f"it holds tensors this format does not have: {sorted(set(data) - used)[:3]}")
    scalars = {name: tuple(f[name]) if isinstance(f[name], list) else f[name] for name in _prefix_scalars()}
    prefix = PrunedPrefix(input_ids=input_ids, cache=cache, state=state, position=position, **scalars)
    costs = {name: float(fields["costs"][name]) for name in _COSTS}
    kept = KeptPrefix(prefix=prefix, **costs, phases=None, charged=True)  # a disk hit is never charged a build
    visual = Visual(path=str(v["path"]), frames=frames, processed=None, **{name: v[name] for name in _VISUAL})
    return kept, visual


def _prefix_scalars() -> list[str]:
    """The prefix's fields that JSON holds (preset, method, n_visual, encoder_patches (a tuple), ...)."""
    return [f.name for f in dataclasses.fields(PrunedPrefix) if f.name not in ("input_ids", "cache", "state",
                                                                                 "position")]


def _state_fields(st: PrefillState) -> dict:
    """The record's non-tensor fields (dict keys as lists of pairs: JSON keys are strings)."""
    return {
        "prompt_len": st.prompt_len, "n_visual": st.n_visual, "n_visual_cur": st.n_visual_cur,
        "layer_visual": sorted(st.layer_visual.items()), "layer_seen": sorted(st.layer_seen),
        "mixed": sorted(st.mixed.items()), "stages": [list(s) for s in st.stages],
        "cache_lengths": st.cache_lengths, "left_cache": st.left_cache, "decoded": st.decoded,
        "question_len": st.question_len, "layer_cols": sorted(st.layer_cols), "written": sorted(st.written),
    }


def _state(f: dict, take, data) -> PrefillState:
    ints = lambda pairs: {int(k): int(v) for k, v in pairs}  # noqa: E731
    return PrefillState(
        prompt_len=int(f["prompt_len"]), n_visual=int(f["n_visual"]), kept_orig=take("state.kept_orig"),
        cur=take("state.cur"), visual=take("state.visual"), n_visual_cur=int(f["n_visual_cur"]),
        layer_cols={int(layer): take(f"state.layer_cols.{layer}") for layer in f["layer_cols"]},
        layer_visual=ints(f["layer_visual"]), layer_seen={int(x) for x in f["layer_seen"]}, mixed=ints(f["mixed"]),
        written={int(layer): (take(f"state.written.{layer}.index"), take(f"state.written.{layer}.values"))
                 for layer in f["written"]},
        stages=[(int(a), int(b)) for a, b in f["stages"]], gathered=None,
        visual_idx=take("state.visual_idx") if "state.visual_idx" in data else None, additions={},
        decoded=int(f["decoded"]), question_len=int(f["question_len"]),
        cache_lengths=None if f["cache_lengths"] is None else [int(x) for x in f["cache_lengths"]],
        left_cache=bool(f["left_cache"]),
    )


def _image(t: torch.Tensor):
    from PIL import Image

    if t.dtype != torch.uint8 or t.ndim != 3 or t.shape[2] != 3:
        raise Rejected(f"its image is {t.dtype} {tuple(t.shape)}, not (H, W, 3) uint8")
    return Image.fromarray(t.numpy())  # (H, W, 3) uint8: RGB


# ---- small helpers -----------------------------------------------------------------------------------------
def _weights(model) -> str:
    """The weight files' names / sizes / mtimes of a local checkpoint folder, else the hub commit."""
    folder = Path(str(getattr(model, "name_or_path", "") or ""))
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHTS and p.is_file())
        return _sha(_json([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]))
    return str(getattr(model.config, "_commit_hash", None) or "")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def _loads(meta: dict, name: str) -> dict:
    """The JSON object under ``name`` ({} when it is missing or not an object)."""
    try:
        value = json.loads(meta.get(name, "null"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _one_line(exc: BaseException) -> str:
    return f"missing {exc_line(exc)}" if isinstance(exc, KeyError) else exc_line(exc)
