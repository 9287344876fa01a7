"""OpenAI Chat Completions response bodies (``chat.completion`` and ``chat.completion.chunk``).

Contract: plain dict builders, no I/O. Every body has ``id``, ``object``, ``created``, ``model``
and ``choices`` (one choice, ``index`` 0, ``logprobs`` null). ``usage`` counts prompt tokens
(visual placeholders included), completion tokens (every generated token, a stop string's
included) and their total. The ``vitcop`` object is :func:`vitcop_report`: what ``ask --json``
prints (``AskResult.to_dict()``) without ``answer`` (it is the message content), ``visual.path``
naming the media as the request gave it (also when its pruned prefix came from another request's),
``prefix`` (the pruned prefix it ran on: ``reused``, ``source`` "memory" on a prefix-cache hit, "disk" on a
hit in ``--prefix-cache DIR``, ``saved_s``, ``bytes``, ...), plus ``server``: ``request_id``, ``queue_s``
(admission to generation start), ``ttft_s`` (admission to the end of the first forward), ``total_s`` and
``prefix_cache`` (``"hit"``, ``"hit_disk"``, the miss reason ``"absent"`` / ``"not_covered"`` / ``"not_kept"``,
or ``"off"``).
In a stream, the chunk carrying ``finish_reason`` also carries ``vitcop``; with
``stream_options.include_usage`` every chunk has ``usage: null`` and one last chunk with no
choices carries the usage. SSE framing: ``data: <json>\\n\\n`` per chunk, then ``data: [DONE]\\n\\n``.
"""

from __future__ import annotations

import json

from .worker import Job, Outcome


def usage(outcome: Outcome) -> dict:
    tokens = outcome.result.tokens
    return {"prompt_tokens": tokens.prompt, "completion_tokens": tokens.generated,
            "total_tokens": tokens.prompt + tokens.generated}


def vitcop_report(job: Job, outcome: Outcome) -> dict:
    report = outcome.result.to_dict()
    report.pop("answer", None)
    report["server"] = {
        "request_id": job.id,
        "queue_s": outcome.queue_s,
        "ttft_s": outcome.ttft_s,
        "total_s": outcome.total_s,
        "prefix_cache": job.plan.lookup,
    }
    return report


def _envelope(job: Job, model: str, obj: str) -> dict:
    """The fields every response object and stream chunk of one request shares."""
    return {"id": job.id, "object": obj, "created": job.created, "model": model, "system_fingerprint": None}


def completion(job: Job, model: str, outcome: Outcome) -> dict:
    return {
        **_envelope(job, model, "chat.completion"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": outcome.answer, "refusal": None},
            "logprobs": None,
            "finish_reason": outcome.finish_reason,
        }],
        "usage": usage(outcome),
        "vitcop": vitcop_report(job, outcome),
    }


def chunk(job: Job, model: str, delta: dict, *, finish_reason: str | None = None,
          include_usage: bool = False, **extra) -> dict:
    body = {
        **_envelope(job, model, "chat.completion.chunk"),
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if include_usage:
        body["usage"] = None
    body.update(extra)
    return body


def usage_chunk(job: Job, model: str, outcome: Outcome) -> dict:
    return {**_envelope(job, model, "chat.completion.chunk"), "choices": [], "usage": usage(outcome)}


def sse(body: dict | str) -> str:
    return f"data: {body if isinstance(body, str) else json.dumps(body)}\n\n"
