"""What serving costs: the same requests through ``vitcop serve`` and through ``Session.ask``, one process.

What it measures:

* One model, loaded once (default: the random-weight ``bench`` Qwen2-VL that ``prefill_ratios.py``
  caches in ``~/.cache/vitcop/bench-qwen2_vl``, built if missing; ``--model tiny`` builds the tiny
  one, ``--model DIR`` uses a folder).
* The same ``--requests`` requests (default 10: the sample clips and the image, several questions,
  greedy, ``--max-tokens`` tokens, ``--frames`` frames) two ways, interleaved request by request so
  that machine drift favours neither, after one unmeasured warm-up of each:

  - **direct**: ``Session.ask(path, question, on_text=...)`` in this thread;
  - **served**: the FastAPI app of ``vitcop serve`` (``vitcop_cli.serve.create_app``) under uvicorn
    in a background thread of this same process, called over HTTP on 127.0.0.1 with the official
    ``openai`` client, ``stream=True``, media as ``file://`` URLs inside ``--allowed-media-root``.

* TTFT = call to the first piece of answer text (``on_text`` / the first content chunk); total =
  call to the complete answer. Both from the caller's clock, so the served figures include HTTP,
  JSON, SSE, the queue hand-off to the worker thread and the media policy checks.
* Answers of the two paths must be identical (checked; exit 1 otherwise).

Target (from the issue): serving overhead under 5% of total latency (median served total /
median direct total - 1). Exit status 0 when met, 1 otherwise. CPU timings on a busy machine are
noisy: read the load average printed in the header.

Run from the repository root::

    PYTHONPATH=. python benchmarks/serve_overhead.py                   # bench model, 10 requests
    PYTHONPATH=. python benchmarks/serve_overhead.py --model tiny --json /tmp/serve.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from vitcop_cli import api  # noqa: E402
from vitcop_cli.models.devmodels import make_model  # noqa: E402

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vitcop"
SAMPLES = REPO / "samples"
QUESTIONS = ["What happens in the video?", "Describe the motion of every object.", "What colours do you see?",
             "How many objects are there?", "Summarise the clip in one sentence."]
MEDIA = ["shapes.mp4", "bounce.mp4", "scene.png"]
TARGET = 0.05


def resolve_model(arg: str) -> str:
    if arg in ("bench", "tiny"):
        path = CACHE / f"{arg}-qwen2_vl" if arg == "bench" else CACHE / "tiny-qwen2_vl"
        if not (path / "config.json").exists():
            print(f"building the {arg} model into {path} ...", flush=True)
            make_model("qwen2_vl", path, size=arg)
        return str(path)
    return arg


def requests(n: int) -> list[tuple[Path, str]]:
    return [(SAMPLES / MEDIA[i % len(MEDIA)], QUESTIONS[i % len(QUESTIONS)]) for i in range(n)]


def direct(session, path: Path, question: str, args) -> dict:
    first = {}
    started = time.perf_counter()

    def on_text(_piece):
        first.setdefault("t", time.perf_counter())

    result = session.ask(path, question, frames=args.frames, max_new_tokens=args.max_tokens, preset=args.preset,
                         on_text=on_text)
    ended = time.perf_counter()
    return {"ttft_s": first.get("t", ended) - started, "total_s": ended - started, "answer": result.answer,
            "tokens": result.tokens.generated}


def served(client, model: str, path: Path, question: str, args) -> dict:
    kind = "image" if path.suffix == ".png" else "video"
    started = time.perf_counter()
    first, pieces, vitcop = None, [], None
    stream = client.chat.completions.create(
        model=model, max_tokens=args.max_tokens, stream=True,
        messages=[{"role": "user", "content": [{"type": f"{kind}_url", f"{kind}_url": {"url": f"file://{path}"}},
                                               {"type": "text", "text": question}]}],
        extra_body={"vitcop": {"preset": args.preset}},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter()
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            vitcop = chunk.model_extra["vitcop"]
    ended = time.perf_counter()
    return {"ttft_s": (first or ended) - started, "total_s": ended - started, "answer": "".join(pieces),
            "tokens": vitcop["tokens"]["generated"], "queue_s": vitcop["server"]["queue_s"]}


def start_server(session, model: str, args):
    import uvicorn

    from vitcop_cli.serve import ServeConfig, create_app
    from vitcop_cli.serve.server import bind

    config = ServeConfig(model=model, allowed_media_roots=(SAMPLES.resolve(),), frames=args.frames,
                         preset=args.preset, max_new_tokens=args.max_tokens)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(session, config), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bench", help="bench (default), tiny, or a checkpoint folder / hub id")
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--preset", default="1_3")
    parser.add_argument("--json", type=Path, help="write every measurement to this file")
    args = parser.parse_args(argv)

    import openai

    model = resolve_model(args.model)
    api.quiet_library_logs()
    session = api.load(model, device="cpu", offline=True)
    print(f"model: {model} | torch threads {__import__('torch').get_num_threads()} | "
          f"load average {os.getloadavg()[0]:.2f} (cores {os.cpu_count()})", flush=True)
    server, thread, base = start_server(session, model, args)
    client = openai.OpenAI(base_url=base, api_key="none", max_retries=0, timeout=600)
    work = requests(args.requests)
    direct(session, *work[0], args)  # warm-up, unmeasured
    served(client, model, *work[0], args)
    rows = {"direct": [], "served": []}
    for i, (path, question) in enumerate(work):
        order = ("direct", "served") if i % 2 == 0 else ("served", "direct")
        for way in order:
            row = direct(session, path, question, args) if way == "direct" else served(client, model, path, question, args)
            rows[way].append({"media": path.name, "question": question, **row})
        d, s = rows["direct"][-1], rows["served"][-1]
        print(f"{i + 1:2d} {path.name:10s} direct ttft {d['ttft_s']:.3f} total {d['total_s']:.3f} | "
              f"served ttft {s['ttft_s']:.3f} total {s['total_s']:.3f}", flush=True)
    server.should_exit = True
    thread.join(30)

    same = all(d["answer"] == s["answer"] for d, s in zip(rows["direct"], rows["served"]))
    summary = {way: {"ttft_s": median(r, "ttft_s"), "total_s": median(r, "total_s")} for way, r in rows.items()}
    overhead = {k: summary["served"][k] / summary["direct"][k] - 1 for k in ("ttft_s", "total_s")}
    print()
    print(f"{'':8s} {'median TTFT s':>14s} {'median total s':>15s}")
    for way in ("direct", "served"):
        print(f"{way:8s} {summary[way]['ttft_s']:14.3f} {summary[way]['total_s']:15.3f}")
    print(f"{'overhead':8s} {overhead['ttft_s']:14.1%} {overhead['total_s']:15.1%}   (target: total < {TARGET:.0%})")
    print(f"answers identical: {same}; load average now {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"model": model, "rows": rows, "summary": summary, "overhead": overhead,
                                         "answers_identical": same}, indent=2))
    return 0 if same and overhead["total_s"] < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
