"""The lmms-eval model ``vitcop``: one :func:`vitcop_cli.api.load`, then one ``Session`` answer per request.

Contract (lmms-eval 0.7.x "simple" model; registered by :mod:`vitcop_eval.manifest`):

- ``VitcopLMM(**model_args)`` validates the arguments (:func:`vitcop_eval.options.parse_model_args`;
  a bad value raises :class:`~vitcop_cli.errors.InputError` before anything is loaded), then loads
  the checkpoint once. One process only: a multi-process launch (``WORLD_SIZE > 1``) is refused.
- ``generate_until(requests)``: each request's ``args`` are lmms-eval's
  ``(context, generation_kwargs, doc_to_visual, doc_id, task, split)``. The document's visual is
  decoded by vitcop (:func:`vitcop_eval.visuals.to_visual`: ``fps`` / ``max_frames`` from the model
  arguments, or the task's own frame count from ``generation_kwargs``), the context (``<image>`` /
  ``<video>`` placeholders removed) becomes the question, and ``Session.prepare`` + ``answer`` run
  it through the checkpoint's own processor and chat template under the preset / method. Consecutive
  documents about the same visual (same file or image, same options) share one pruned prefix: the
  later ones are not decoded and are answered on the prefix the one before kept, with bit-identical
  tokens (:class:`vitcop_eval.answering.DocAnswerer`). The answer is cut at the task's ``until`` strings. Each answer is returned as a ``GenerationResult`` whose
  ``token_counts`` (prompt and generated tokens) carry vitcop's per-sample cost report
  (:func:`vitcop_eval.report.sample_report`) under ``"vitcop"``, which lmms-eval writes into the
  sample's ``token_counts`` in its per-sample log (``--log_samples``). Averages of the cost figures
  go to lmms-eval's ``throughput`` block of the results JSON (with the share of answers on a reused
  prefix and the mean time that saved), and the log says how many answers reused a prefix. A request vitcop cannot serve raises
  ``InputError`` naming the task and document; the run stops (no answer is invented).
- ``loglikelihood`` and ``generate_until_multi_round`` are refused with an ``InputError`` naming
  the tasks: vitcop only generates answers to one-turn questions.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

from lmms_eval.api.instance import GenerationResult, TokenCounts
from lmms_eval.api.model import lmms
from loguru import logger as eval_logger

from vitcop_cli import api
from vitcop_cli.errors import InputError, VitcopError

from .answering import DocAnswerer
from .options import cut_at_stop, generation_settings, parse_model_args, question_text
from .report import prefix_totals, run_averages, sample_report

__all__ = ["VitcopLMM", "VitcopTokenCounts"]


@dataclass
class VitcopTokenCounts(TokenCounts):
    """lmms-eval's token counts plus vitcop's cost report, kept by the per-sample log."""

    vitcop: dict | None = None

    def to_dict(self) -> dict:
        out = super().to_dict()
        if self.vitcop is not None:
            out["vitcop"] = self.vitcop
        return out


class VitcopLMM(lmms):
    """Any vitcop preset / method evaluated by lmms-eval (see the module docstring)."""

    is_simple = True

    def __init__(self, **model_args) -> None:
        super().__init__()
        self.args = parse_model_args(**model_args)
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world > 1:
            raise InputError(
                f"WORLD_SIZE={world}: the vitcop lmms-eval model runs in one process; launch lmms-eval without "
                "accelerate/torchrun (one GPU per run)"
            )
        self.preset = api.check_preset(self.args.preset)
        api.quiet_library_logs()
        self.session = api.load(
            self.args.pretrained,
            device=self.args.device,
            dtype=self.args.dtype,
            attn=self.args.attn,
            offline=self.args.offline,
        )
        self.answerer = DocAnswerer(self.session, self.args, self.preset)
        eval_logger.info(
            f"vitcop: loaded {self.args.pretrained} on {self.session.device} ({self.session.dtype}); "
            f"preset {self.preset.label}, method {self.args.method}"
        )

    # ---- lmms-eval request types -----------------------------------------------------------
    def generate_until(self, requests) -> list[GenerationResult]:
        from tqdm import tqdm

        outputs, reports = [], []
        try:
            for request in tqdm(requests, disable=self.rank != 0, desc="vitcop"):
                context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
                try:
                    output, report = self._answer(context, gen_kwargs, doc_to_visual, doc_id, task, split)
                except VitcopError as exc:
                    raise type(exc)(f"task {task}, doc {doc_id}: {exc}") from None
                outputs.append(output)
                reports.append(report)
        finally:
            self.answerer.drop()  # no prefix is held between calls
        self._log_run(reports)
        return outputs

    def loglikelihood(self, requests):
        raise InputError(
            f"task(s) {_task_names(requests)} score answers by log-likelihood, which the vitcop model does not "
            "serve (it generates answers); pick the task's generate_until variant"
        )

    def generate_until_multi_round(self, requests):
        raise InputError(
            f"task(s) {_task_names(requests)} are multi-round conversations, which the vitcop model does not "
            "serve (one question per video or image)"
        )

    def clean(self):
        self.session = self.answerer = None
        gc.collect()
        super().clean()

    # ---- one request ------------------------------------------------------------------------
    def _answer(self, context, gen_kwargs, doc_to_visual, doc_id, task, split) -> tuple[GenerationResult, dict]:
        settings = generation_settings(gen_kwargs, self.args)
        question = question_text(context)
        if not question:
            raise InputError("the task's prompt is empty")
        doc = self.task_dict[task][split][doc_id]
        result = self.answerer.answer(doc_to_visual(doc), question, settings)
        report = sample_report(result)
        counts = VitcopTokenCounts(
            input_tokens=result.tokens.prompt, output_tokens=result.tokens.generated, vitcop=report
        )
        return GenerationResult(text=cut_at_stop(result.answer, settings.stop), token_counts=counts), report

    def _log_run(self, reports: list[dict]) -> None:
        if not reports:
            return
        from lmms_eval.models.model_utils.gen_metrics import log_metrics

        elapsed = sum(r["timings"]["total_s"] for r in reports)
        generated = sum(r["tokens"]["generated"] for r in reports)
        log_metrics(
            total_elapsed_time=elapsed,
            total_gen_tokens=generated,
            avg_speed=generated / elapsed if elapsed > 0 else 0.0,
            additional_metrics=run_averages(reports),
        )
        reused, saved_s = prefix_totals(reports)
        eval_logger.info(
            f"vitcop: {reused} of {len(reports)} answers reused the pruned prefix of the document before "
            f"(same visual and options; {saved_s:.1f} s of decode, preprocess and prefill saved)"
        )


def _task_names(requests) -> str:
    names = sorted({getattr(r, "task_name", None) or "?" for r in requests})
    return ", ".join(names) or "?"
