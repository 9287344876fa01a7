"""Parse and validate a ``POST /v1/chat/completions`` body into a :class:`ChatRequest`.

Contract: :func:`parse_chat_request` takes the decoded JSON body and returns a :class:`ChatRequest`,
or raises :class:`~vitcop_cli.serve.errors.ApiError` (400 naming the offending field, 404 for a
model this server does not serve). Nothing is loaded or decoded here.

- ``messages``: ``system`` (or ``developer``) / ``user`` / ``assistant`` turns, content a string or
  a list of parts; user parts ``text``, ``image_url``, ``video_url`` (``{"url": ...}``); exactly one
  image / video part in the whole conversation; the last turn is a user turn. They become Hugging
  Face chat messages, the visual part as ``{"type": "visual"}`` until its file is decoded and its
  kind known (:func:`with_visual_kind`).
- Sampling: ``max_completion_tokens`` (else ``max_tokens``, else the server default), ``temperature``
  (default 0 = greedy; OpenAI's own default is 1; a positive one at least ``MIN_TEMPERATURE``, since
  dividing the logits by less can overflow), ``top_p`` (ignored when greedy), ``seed``, ``stop`` (a
  string or up to ``MAX_STOPS`` of at most ``MAX_STOP_CHARS`` characters each), ``stream``,
  ``stream_options.include_usage``. ``n`` other than 1, ``tools``, ``logprobs`` and non-text
  ``response_format`` are refused rather than ignored.
- Types and values are checked here, at the boundary: ``model`` and ``role`` must be strings, no
  string anywhere in the body may hold a lone UTF-16 surrogate (JSON allows ``"\ud800"``; tokenizers
  and file systems do not), integers are at most ``MAX_INT`` (``max_tokens`` at most
  ``MAX_TOKENS``). Messages name the API field and never echo more than a short prefix of a value.
- ``"vitcop": {"preset", "method", "fps", "frames", "max_pixels"}`` override the server defaults;
  giving ``fps`` or ``frames`` replaces the server's frame sampling. Only built-in presets (or the
  server's own default preset) are accepted: a request never names a file on the server.
  ``max_pixels`` must lie within the server's ``--min-pixels`` .. ``--max-pixels`` (each bound only
  when the server sets it), so a client cannot raise the per-frame cost above the operator's cap.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from .. import api
from ..errors import VitcopError
from ..options import MIN_TEMPERATURE
from .config import ServeConfig
from .errors import SHOWN_CHARS, ApiError, bad_request, from_library, shown

VITCOP_KEYS = ("preset", "method", "fps", "frames", "max_pixels")
MAX_STOPS = 4  # OpenAI's own limit on stop sequences
MAX_STOP_CHARS = 1000  # per stop string: far beyond any practical stop sequence, and it bounds the held-back text
MAX_TOKENS = 1 << 20  # a sanity bound; the model's own context limit is checked when the prompt is known
MAX_INT = (1 << 31) - 1  # any other integer field (seed: 2**63 - 1)
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class ChatRequest:
    messages: list[dict]  # Hugging Face chat messages; the visual part is {"type": "visual"}
    media_url: str
    max_tokens: int
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    preset: str = "1_3"
    method: str = "vitcop"
    fps: float | None = None
    frames: int | None = None
    max_pixels: int | None = None


def with_visual_kind(messages: list[dict], kind: str) -> list[dict]:
    """``messages`` with the ``{"type": "visual"}`` placeholder turned into ``{"type": kind}``."""
    return [
        {**m, "content": [{"type": kind} if p.get("type") == "visual" else p for p in m["content"]]}
        for m in messages
    ]


def parse_chat_request(body: object, config: ServeConfig, served_names: set[str]) -> ChatRequest:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    _refuse_surrogates(body)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("model must be a string", "model")
    if model is not None and model not in served_names:
        raise ApiError(404, f"model {shown(model)} is not served here; this server serves {config.model!r} "
                            "(see GET /v1/models)", code="model_not_found", param="model")
    _refuse_unsupported(body)
    messages, media_url = _messages(body.get("messages"))
    req = ChatRequest(messages=messages, media_url=media_url, max_tokens=_max_tokens(body, config))
    req.temperature = _number(body, "temperature", 0.0, minimum=0.0)
    if 0 < req.temperature < MIN_TEMPERATURE:
        raise bad_request(f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g} "
                          f"(got {shown(req.temperature)}: sampling would overflow)", "temperature")
    top_p = _number(body, "top_p", None, minimum=0.0)
    if top_p is not None and not 0 < top_p <= 1:
        raise bad_request("top_p must be in (0, 1]", "top_p")
    req.top_p = top_p if req.temperature > 0 else None  # greedy decoding ignores top_p
    req.seed = _integer(body, "seed", None, minimum=0, maximum=2**63 - 1)
    req.stop = _stop(body.get("stop"))
    req.stream = _boolean(body, "stream", False)
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise bad_request("stream_options must be an object", "stream_options")
        if not req.stream:
            raise bad_request("stream_options is only allowed with stream: true", "stream_options")
        req.include_usage = _boolean(options, "include_usage", False, prefix="stream_options.")
    _vitcop(body.get("vitcop"), config, req)
    return req


def _refuse_surrogates(body: dict) -> None:
    """400 naming the top-level field when any string (key or value) in ``body`` holds a lone surrogate."""
    for name, value in body.items():
        stack = [name, value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if not item.isascii() and _SURROGATE.search(item):
                    field = name if isinstance(name, str) and not _SURROGATE.search(name) else "body"
                    raise bad_request(f"{field} holds a lone UTF-16 surrogate (e.g. \\ud800), which is not "
                                      "valid Unicode; send UTF-8 text", field)
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)


def _refuse_unsupported(body: dict) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise bad_request("only n = 1 is supported (one answer per request)", "n")
    for name in ("tools", "functions"):
        if body.get(name):
            raise bad_request(f"{name} are not supported by this server", name)
    if body.get("logprobs") or body.get("top_logprobs"):
        raise bad_request("logprobs are not supported by this server", "logprobs")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise bad_request("only response_format {\"type\": \"text\"} is supported", "response_format")


def _messages(raw: object) -> tuple[list[dict], str]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("messages must be a non-empty list", "messages")
    out, media = [], []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"{where} must be an object", "messages")
        role = m.get("role")
        role = _ROLES.get(role) if isinstance(role, str) else None
        if role is None:
            raise bad_request(f"{where}.role {shown(m.get('role'))} is not supported; use system, user or assistant",
                              "messages")
        parts = _parts(m.get("content"), where, role, media)
        out.append({"role": role, "content": parts})
    if out[-1]["role"] != "user":
        raise bad_request("the last message must be a user message", "messages")
    if len(media) != 1:
        raise bad_request(
            f"a request needs exactly one image_url or video_url part (got {len(media)}); "
            "this server answers about one image or video per conversation", "messages")
    return out, media[0]


def _parts(content: object, where: str, role: str, media: list[str]) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or a list of parts", "messages")
    parts = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise bad_request(f"{at}.text must be a string", "messages")
            parts.append({"type": "text", "text": part["text"]})
        elif kind in ("image_url", "video_url"):
            if role != "user":
                raise bad_request(f"{at}: {kind} parts are only allowed in user messages", "messages")
            ref = part.get(kind)
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str) or not url:
                raise bad_request(f"{at}.{kind}.url must be a non-empty string", "messages")
            media.append(url)
            parts.append({"type": "visual"})
        else:
            raise bad_request(f"{at}.type {shown(kind)} is not supported; use text, image_url or video_url",
                              "messages")
    return parts


def _max_tokens(body: dict, config: ServeConfig) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            return _integer(body, name, None, minimum=1, maximum=MAX_TOKENS)
    return config.max_new_tokens


def _stop(raw: object) -> list[str]:
    if raw is None:
        return []
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOPS:
        raise bad_request(f"stop must be a non-empty string or a list of up to {MAX_STOPS} non-empty strings", "stop")
    longest = max(len(s) for s in stops) if stops else 0
    if longest > MAX_STOP_CHARS:
        raise bad_request(f"a stop string may have at most {MAX_STOP_CHARS:,} characters (got one of {longest:,})",
                          "stop")
    return list(stops)


def _vitcop(raw: object, config: ServeConfig, req: ChatRequest) -> None:
    req.preset, req.method = config.preset, config.method
    req.fps, req.frames, req.max_pixels = config.fps, config.frames, config.max_pixels
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise bad_request("vitcop must be an object", "vitcop")
    unknown = sorted(set(raw) - set(VITCOP_KEYS))
    if unknown:
        raise bad_request(f"unknown vitcop field(s) {', '.join(unknown)}; known: {', '.join(VITCOP_KEYS)}", "vitcop")
    if raw.get("preset") is not None:
        req.preset = _preset(raw["preset"], config)
    if raw.get("method") is not None:
        method = raw["method"]
        try:
            req.method = api.check_method(method if isinstance(method, str) and len(method) <= SHOWN_CHARS
                                          else shown(method))
        except VitcopError as exc:
            raise from_library(exc, "vitcop") from None
    fps = _number(raw, "fps", None, prefix="vitcop.")
    frames = _integer(raw, "frames", None, minimum=1, prefix="vitcop.")
    if fps is not None and frames is not None:
        raise bad_request("vitcop.fps and vitcop.frames are mutually exclusive; give one of them", "vitcop")
    if fps is not None and fps <= 0:
        raise bad_request("vitcop.fps must be positive", "vitcop")
    if fps is not None or frames is not None:
        req.fps, req.frames = fps, frames
    max_pixels = _integer(raw, "max_pixels", None, minimum=1, prefix="vitcop.")
    if max_pixels is not None:
        if config.min_pixels is not None and max_pixels < config.min_pixels:
            raise bad_request(f"vitcop.max_pixels ({shown(max_pixels)}) is below the server's --min-pixels "
                              f"({config.min_pixels})", "vitcop")
        if config.max_pixels is not None and max_pixels > config.max_pixels:
            raise bad_request(f"vitcop.max_pixels ({shown(max_pixels)}) is above the server's --max-pixels "
                              f"({config.max_pixels}); ask for at most {config.max_pixels}", "vitcop")
        req.max_pixels = max_pixels


def _preset(value: object, config: ServeConfig) -> str:
    from pruning.presets import builtin_presets

    names = builtin_presets()
    if value == config.preset or value in names:
        try:
            api.check_preset(value)
        except VitcopError as exc:
            raise from_library(exc, "vitcop") from None
        return value
    raise bad_request(f"unknown preset {shown(value)}; built-in presets: {', '.join(names)} "
                      "(a request cannot name a preset file)", "vitcop")


def _boolean(obj: dict, name: str, default: bool, prefix: str = "") -> bool:
    value = obj.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"{prefix}{name} must be true or false", prefix.rstrip(".") or name)
    return value


def _number(obj: dict, name: str, default, *, minimum: float | None = None, prefix: str = ""):
    value = obj.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"{prefix}{name} must be a number", prefix.rstrip(".") or name)
    if minimum is not None and value < minimum:
        raise bad_request(f"{prefix}{name} must be >= {minimum:g}", prefix.rstrip(".") or name)
    return float(value)


def _integer(obj: dict, name: str, default, *, minimum: int | None = None, maximum: int = MAX_INT,
             prefix: str = ""):
    value = obj.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{prefix}{name} must be an integer", prefix.rstrip(".") or name)
    if minimum is not None and value < minimum:
        raise bad_request(f"{prefix}{name} must be at least {minimum}", prefix.rstrip(".") or name)
    if value > maximum:
        raise bad_request(f"{prefix}{name} must be at most {maximum} (got {shown(value)})", prefix.rstrip(".") or name)
    return value
