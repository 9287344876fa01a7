"""Prometheus metrics of one server (its own registry, so several apps can live in one process).

Contract: :class:`Metrics` owns a ``CollectorRegistry``; ``render()`` is the ``/metrics`` body in
the Prometheus text format. Names (all prefixed ``vitcop_``):

- ``requests_total{endpoint, status}``: every HTTP response, by route and status code;
- ``queue_depth``: requests admitted and not yet generating; ``generating``: 0 or 1;
- ``generations_total{outcome}``: ``completed`` / ``cancelled_disconnect`` / ``cancelled_timeout`` /
  ``cancelled_shutdown`` / ``failed``; ``generated_tokens_total{outcome}``: tokens they produced;
- histograms (seconds): ``queue_wait_seconds`` (admission to generation start), ``ttft_seconds``
  (admission to the end of the first forward), ``prefill_seconds`` (LLM prefill), ``request_latency_seconds``
  (admission to the full answer);
- ``visual_tokens{stage}`` histogram: ``before`` = visual tokens in the prompt, ``after`` =
  layer-averaged visual tokens the LLM processed after pruning;
- the pruned-prefix cache (:mod:`~vitcop_cli.serve.prefix_cache`; nothing counted when it is off):
  ``prefix_cache_hits_total`` (answered on a cached prefix), ``prefix_cache_misses_total{reason}``
  (``absent``: nothing cached under its key; ``not_covered``: its prompt before the question cannot be
  shared, e.g. text before the visual; ``not_kept``: its method reads the question, no prefix is kept),
  ``prefix_cache_evictions_total``, ``prefix_cache_oversize_total`` (prefixes larger than the whole
  capacity, not cached); gauges ``prefix_cache_bytes``, ``prefix_cache_entries``, ``prefix_cache_capacity_bytes``;
  with ``--prefix-cache DIR`` (the disk tier): ``prefix_cache_disk_hits_total`` (answered on a prefix read from
  the folder after a memory miss; not counted in ``hits_total`` nor ``misses_total``),
  ``prefix_cache_disk_saves_total`` (prefixes written to it) and ``prefix_cache_disk_errors_total`` (files not
  used or not written: damaged, another model, disk full...; each one also a warning in the server log).
  A looked-up request is exactly one of: a hit, a disk hit, a miss.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300, 600)
_TOKENS = (16, 64, 256, 1024, 4096, 16384, 65536)
MISS_REASONS = ("absent", "not_covered", "not_kept")

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("vitcop_requests", "HTTP responses by endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self.queue_depth = Gauge("vitcop_queue_depth", "Requests admitted and not yet generating.", registry=r)
        self.generating = Gauge("vitcop_generating", "1 while a generation runs.", registry=r)
        self.generations = Counter("vitcop_generations", "Generations by outcome.", ["outcome"], registry=r)
        self.generated_tokens = Counter("vitcop_generated_tokens", "Tokens generated, by outcome.", ["outcome"],
                                        registry=r)
        self.queue_wait = Histogram("vitcop_queue_wait_seconds", "Admission to generation start.",
                                    buckets=_SECONDS, registry=r)
        self.ttft = Histogram("vitcop_ttft_seconds", "Admission to the end of the first forward (first token).",
                              buckets=_SECONDS, registry=r)
        self.prefill = Histogram("vitcop_prefill_seconds", "LLM prefill time (vision encoder excluded).",
                                 buckets=_SECONDS, registry=r)
        self.latency = Histogram("vitcop_request_latency_seconds", "Admission to the complete answer.",
                                 buckets=_SECONDS, registry=r)
        self.visual_tokens = Histogram("vitcop_visual_tokens", "Visual tokens per request: before pruning, "
                                       "and layer-averaged after it.", ["stage"], buckets=_TOKENS, registry=r)
        self.prefix_hits = Counter("vitcop_prefix_cache_hits", "Requests answered on a cached pruned prefix.",
                                   registry=r)
        self.prefix_misses = Counter("vitcop_prefix_cache_misses", "Requests answered without a cached pruned "
                                     "prefix, by reason (absent, not_covered, not_kept).", ["reason"], registry=r)
        for reason in MISS_REASONS:
            self.prefix_misses.labels(reason)
        self.prefix_evictions = Counter("vitcop_prefix_cache_evictions", "Pruned prefixes evicted (least recently "
                                        "used first) to make room.", registry=r)
        self.prefix_oversize = Counter("vitcop_prefix_cache_oversize", "Pruned prefixes not cached: larger than "
                                       "the whole capacity.", registry=r)
        self.prefix_disk_hits = Counter("vitcop_prefix_cache_disk_hits", "Requests answered on a pruned prefix read "
                                        "from --prefix-cache DIR (after a memory miss).", registry=r)
        self.prefix_disk_saves = Counter("vitcop_prefix_cache_disk_saves", "Pruned prefixes written to "
                                         "--prefix-cache DIR.", registry=r)
        self.prefix_disk_errors = Counter("vitcop_prefix_cache_disk_errors", "Prefix files in --prefix-cache DIR "
                                          "not used (damaged, another model or version) or not written.", registry=r)
        self.prefix_bytes = Gauge("vitcop_prefix_cache_bytes", "Bytes the cached pruned prefixes hold.", registry=r)
        self.prefix_entries = Gauge("vitcop_prefix_cache_entries", "Cached pruned prefixes.", registry=r)
        self.prefix_capacity = Gauge("vitcop_prefix_cache_capacity_bytes", "The prefix cache's capacity "
                                     "(--prefix-cache-mb; 0: off).", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
