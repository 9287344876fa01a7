"""Generation with the cost report: prepared inputs -> an answer under a pruning preset, in two phases.

Contract: :class:`GenerationMixin` gives ``Session`` :meth:`~GenerationMixin.generate` (and
:meth:`~GenerationMixin.answer`, which also hands back the pruned prefix it ran on, and
:meth:`~GenerationMixin.build_prefix`). Each checks the preset against the model's depth, the method, the
options and the prompt length, then answers with the preset attached:

- **Two phases** (every method whose choice never reads the question — all but FastV — on a prompt with a
  visual): the prompt's system + visual tokens ``[0, P)`` are prefilled under the preset into a
  :class:`pruning.prefix.PrunedPrefix`, then ``generate`` prefills only the question's tokens ``[P, S)``
  against a copy of it and decodes. Given a kept prefix that covers the prompt exactly
  (:meth:`PrunedPrefix.covers`, same preset and method), the first phase is skipped. Both ways run the very
  same code on the very same tensors, so **an answer never depends on whether its prefix came from a
  cache** (bit-identical tokens and logits; ``tests/test_prefix_reuse.py``). FastV (and a prompt without a
  visual) is one single-pass ``generate``, as before.
- The :class:`~vitcop_cli.result.AskResult`: the answer, token counts, the pruning report (both phases
  counted), timings (marked by :class:`~vitcop_cli.session.phases.PhaseTimer` on one timeline: CUDA
  events resolved by one synchronisation at the end), peak memory and ``prefix``
  (:class:`~vitcop_cli.result.PrefixInfo`: kept / reused, tokens, bytes, time saved). A prefix built
  earlier (:class:`KeptPrefix`, by ``Session.open``) is charged to the first answer that uses it: its
  decode, preprocess and prefill times are added to that answer's, so the wait it reports is the whole wait.

A random-weight demo model's result is flagged (``demo_model``) and carries a warning saying so.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch

from pruning import attach, compat
from pruning.methods import method_class
from pruning.prefix import PrunedPrefix, prefix_end
from pruning.presets import Preset
from pruning.stats import ratio_warning
from pruning.verify import PruningNotApplied, UnsupportedGeneration

from ..defaults import DEFAULT_METHOD, DEFAULT_PRESET
from ..errors import PrefixMiss, RuntimeFailure
from ..options import check_generation_options
from ..phase_times import PhaseTimes
from ..result import AskResult, PrefixInfo, Timings, TokenCounts, VisualInfo
from .choices import check_method
from .phases import PhaseTimer
from .prompting import Prepared
from .streaming import CallbackStreamer

__all__ = ["GenerationMixin", "KeptPrefix", "demo_warning"]


def demo_warning(name: str) -> str:
    """The warning every answer of a built-in demo model carries."""
    return (
        f"{name} is a built-in demo model with random weights: its answer is meaningless text; the frames, "
        "token counts, pruning and timings are real"
    )


@dataclass
class KeptPrefix:
    """A pruned prefix and what building it cost (decode, preprocess, its prefill): charged to the first answer
    that runs on it, reported as time saved by every later one. ``charged``: some answer has been charged."""

    prefix: PrunedPrefix
    video_decode_s: float
    preprocess_s: float
    vision_encoder_s: float
    model_s: float  # the prefix prefill, encoder included
    pruning_s: float
    phases: PhaseTimes | None = None  # its phases, when it was built on its own (Session.open)
    charged: bool = False

    @property
    def total_s(self) -> float:
        """The whole cost of building it: what reusing it saves."""
        return self.video_decode_s + self.preprocess_s + self.model_s

    @property
    def nbytes(self) -> int:
        return self.prefix.nbytes


class GenerationMixin:
    """``Session``'s generation side; needs ``model``, ``processor``, ``adapter``, ``device``, ``name``,
    ``demo_model``, ``_memory`` and the checks of ``Session`` / :mod:`.prompting`."""

    def generate(self, prepared: Prepared, **options) -> AskResult:
        """Generate an answer for ``prepared``: :meth:`answer` without the prefix it ran on."""
        return self.answer(prepared, **options)[0]

    def build_prefix(
        self, prepared: Prepared, *, preset: str | Preset = DEFAULT_PRESET, method: str = DEFAULT_METHOD,
        video_decode_s: float = 0.0,
    ) -> KeptPrefix | None:
        """Prefill ``prepared``'s system + visual tokens under the preset and keep them, ahead of any question
        (None when the method reads the question, so no prefix can be kept). ``prepared`` needs its pixels;
        its text after the visual is not used."""
        preset = self.check_preset(preset)
        check_method(method)
        ids = prepared.inputs["input_ids"]
        p = prefix_end(self.adapter, ids)
        if not method_class(method).question_independent or not 0 < p < ids.shape[1]:
            return None
        timer = PhaseTimer(self.model, self.adapter, self.device)
        with _runtime_failures(), attach(self.model, preset, method) as handle, timer:
            timer.mark("start")
            prefix = handle.build_prefix(prepared.inputs, p)
            timer.mark("end")
        timer.settle()
        return KeptPrefix(
            prefix=prefix, video_decode_s=video_decode_s, preprocess_s=prepared.preprocess_s,
            vision_encoder_s=timer.vision_s, model_s=timer.ttft_s, pruning_s=handle.seconds,
            phases=timer.phases(video_decode_s=video_decode_s, preprocess_s=prepared.preprocess_s,
                                pruning=handle.seconds_by_tag),
        )

    def answer(
        self,
        prepared: Prepared,
        *,
        preset: str | Preset = DEFAULT_PRESET,
        method: str = DEFAULT_METHOD,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float | None = None,
        on_text: Callable[[str], None] | None = None,
        video_decode_s: float = 0.0,
        seed: int | None = None,
        stopping_criteria: list | None = None,
        prefix: KeptPrefix | None = None,
        source: str = "memory",
    ) -> tuple[AskResult, KeptPrefix | None]:
        """Answer ``prepared`` (see the module docstring); also return the prefix the answer ran on (None: a
        single pass), so the caller can keep it for the next question about the same clip.

        ``seed`` seeds torch's generators first, so sampling (temperature > 0) is reproducible run to run; it
        is recorded in the result. ``stopping_criteria``: extra ``transformers`` ``StoppingCriteria`` checked
        after every generated token (the server's cancel flag and stop strings); the result then holds the
        tokens generated until one fired. ``prefix``: a kept prefix to continue when it covers this prompt
        exactly, under the same preset and method (else a miss, said in ``result.prefix.reason``, and the
        prefix is prefilled afresh); ``source``: where it came from ("memory" or "disk"), for the report."""
        preset = self.check_preset(preset)
        check_method(method)
        check_generation_options(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        ids = prepared.inputs["input_ids"]
        s = int(ids.shape[1])
        self.check_lengths(max_new_tokens, s)
        p = prefix_end(self.adapter, ids)
        two_phase = method_class(method).question_independent and 0 < p < s
        miss = prefix.prefix.miss(prepared.inputs, preset.label, method) if two_phase and prefix is not None else None
        reuse = two_phase and prefix is not None and miss is None
        if two_phase and not reuse and not any(k.startswith("pixel_values") for k in prepared.inputs):
            raise PrefixMiss(f"{miss or 'no prefix was given'}, and this prompt carries no pixels to prefill it afresh")
        timer = PhaseTimer(self.model, self.adapter, self.device, first=1 if two_phase and not reuse else 0)
        options = _generation_options(self.processor, temperature, top_p, on_text, stopping_criteria,
                                      ids[:, :p] if two_phase else None)
        if seed is not None:
            torch.manual_seed(seed)  # seeds CUDA / MPS generators too
        self._memory.reset()
        with _runtime_failures():
            with attach(self.model, preset, method) as handle, timer:
                handle.bind(prepared.inputs)
                timer.mark("start")
                if two_phase:
                    kept = prefix.prefix if reuse else handle.build_prefix(prepared.inputs, p)
                    cache = handle.continue_prefix(kept)
                    output = self.model.generate(
                        input_ids=ids[:, p:], attention_mask=prepared.inputs["attention_mask"],
                        **compat.generate_cache_kwargs(self.model, cache), max_new_tokens=max_new_tokens, **options,
                    )
                else:
                    output = self.model.generate(**prepared.inputs, max_new_tokens=max_new_tokens, **options)
                timer.mark("end")
            timer.settle()
            pruning_report = handle.report(ids)
        generated = output[0, (s - p if two_phase else s):].tolist()
        charge = prefix if reuse and not prefix.charged else None
        if two_phase and not reuse:  # built here, for this answer: its cost is already in this answer's times
            prefix = KeptPrefix(prefix=kept, video_decode_s=video_decode_s, preprocess_s=prepared.preprocess_s,
                                vision_encoder_s=timer.vision_s, model_s=timer.timeline.between("start", "forward_end0"),
                                pruning_s=handle.seconds, charged=True)
        result = self._result(prepared, preset, method, handle, pruning_report, timer, generated, video_decode_s,
                              charge, seed)
        if charge is not None:
            charge.charged = True
        result.prefix = _prefix_info(prefix if two_phase else None, handle.shape.layers, reused=reuse and charge is None,
                                     source=source, miss=miss, method=method)
        return result, (prefix if two_phase else None)

    def _result(self, prepared, preset, method, handle, pruning_report, timer, generated, video_decode_s,
                charge: KeptPrefix | None, seed: int | None) -> AskResult:
        """The :class:`AskResult` of one answer; ``charge``: a prefix built earlier whose cost this answer
        carries (its first use)."""
        warnings = [demo_warning(self.name)] if self.demo_model else []
        warnings += [*getattr(prepared.visual, "warnings", []), *prepared.warnings]  # then frame-count adjustments
        why = method_class(method).shortfall_reason(handle.shape.layers)
        shortfall = ratio_warning(pruning_report, preset.ratio, why)
        if shortfall:
            warnings.append(shortfall)
        memory = self._memory.read()
        answer = self.processor.tokenizer.decode(generated, skip_special_tokens=True).strip()
        decode_s = timer.decode_s
        # a prefix built ahead (Session.open) is charged to its first answer: its decode, preprocess and prefill
        c_video, c_pre, c_model, c_vision, c_pruning = (
            (charge.video_decode_s, charge.preprocess_s, charge.model_s, charge.vision_encoder_s, charge.pruning_s)
            if charge is not None else (0.0,) * 5
        )
        video_s = video_decode_s + c_video
        preprocess_s = prepared.preprocess_s + c_pre
        model_ttft = timer.ttft_s + c_model
        vision_s = timer.vision_s + c_vision
        phases = timer.phases(video_decode_s=video_decode_s, preprocess_s=prepared.preprocess_s,
                              pruning=handle.seconds_by_tag)
        if charge is not None and charge.phases is not None:
            phases = charge.phases.plus(phases)
        visual = prepared.visual
        ids = prepared.inputs["input_ids"]
        return AskResult(
            answer=answer,
            question=prepared.question,
            model=self.name,
            model_type=self.model_type,
            preset=preset.label,
            method=method,
            device=str(self.device),
            dtype=str(self.dtype).replace("torch.", ""),
            attn_implementation=self.attn_implementation,
            visual=VisualInfo(
                path=visual.path,
                kind=visual.kind,
                frames=len(visual.timestamps),
                sampling_fps=visual.sampling_fps,
                source_fps=visual.source_fps,
                duration_s=visual.duration_s,
                timestamps=[round(t, 4) for t in visual.timestamps],
                width=visual.width,
                height=visual.height,
                processed_grid=_grid(prepared.inputs),
            ),
            tokens=TokenCounts(prompt=int(ids.shape[1]), visual=int(self.adapter.visual_mask(ids).sum()),
                               generated=len(generated)),
            timings=Timings(
                model_load_s=self.load_s,
                video_decode_s=video_s,
                preprocess_s=preprocess_s,
                vision_encoder_s=vision_s,
                prefill_s=model_ttft - vision_s,
                ttft_s=video_s + preprocess_s + model_ttft,
                model_ttft_s=model_ttft,
                decode_s=decode_s,
                decode_tokens_per_s=(len(generated) - 1) / decode_s if len(generated) > 1 and decode_s > 0 else None,
                pruning_s=handle.seconds + c_pruning,
                total_s=video_s + preprocess_s + model_ttft + decode_s,
                phases=phases,
            ),
            memory=memory,
            pruning=pruning_report,
            generated_ids=generated,
            warnings=warnings,
            versions=_versions(),
            seed=seed,
            demo_model=self.demo_model,
        )


_OOM = "out of GPU memory during generation; try a stronger preset, fewer frames or lower --max-pixels"


@contextmanager
def _runtime_failures():
    """Map the engine's refusals and CUDA out-of-memory to :class:`RuntimeFailure`."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise RuntimeFailure(_OOM) from exc
    except (PruningNotApplied, UnsupportedGeneration) as exc:
        raise RuntimeFailure(str(exc)) from exc


def _generation_options(processor, temperature, top_p, on_text, stopping_criteria, prefix_ids=None) -> dict:
    """``generate`` keywords: greedy or sampling, the text streamer, extra stopping criteria. ``prefix_ids``
    (1, P): the prompt's tokens that a two-phase ``generate`` does not see; the criteria are shown them in
    front, so they see the whole prompt + the answer so far either way."""
    options = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p if top_p is not None else 1.0, "top_k": 0}
        if temperature > 0
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )
    options["streamer"] = CallbackStreamer(processor.tokenizer, on_text) if on_text else None
    if stopping_criteria:
        from transformers import StoppingCriteriaList

        if prefix_ids is not None:
            stopping_criteria = [_WholePrompt(c, prefix_ids) for c in stopping_criteria]
        options["stopping_criteria"] = StoppingCriteriaList(stopping_criteria)
    return options


class _WholePrompt:
    """A stopping criterion called with the prompt's prefix tokens in front of ``generate``'s ids."""

    def __init__(self, criterion, prefix_ids: torch.Tensor):
        self.criterion, self.prefix_ids = criterion, prefix_ids

    def __call__(self, input_ids, scores, **kwargs):
        whole = torch.cat([self.prefix_ids.to(input_ids.device).expand(input_ids.shape[0], -1), input_ids], dim=-1)
        return self.criterion(whole, scores, **kwargs)


def _prefix_info(kept: KeptPrefix | None, layers: int, *, reused: bool, source: str, miss: str | None,
                 method: str) -> PrefixInfo:
    if kept is None:
        return PrefixInfo(kept=False, reused=False, source="none", tokens=0, kv_tokens=[], bytes=0,
                          bytes_unpruned=0, saved_s=0.0,
                          reason=f"{method} reads the question" if not method_class(method).question_independent
                          else "the prompt has no visual before its question")
    p = kept.prefix
    return PrefixInfo(
        kept=True, reused=reused, source=source if reused else "built", tokens=p.length,
        kv_tokens=p.cache_lengths(layers), bytes=p.nbytes, bytes_unpruned=p.nbytes_unpruned,
        saved_s=kept.total_s if reused else 0.0, reason=miss,
    )


def _grid(inputs: dict) -> list[int] | None:
    for key in ("video_grid_thw", "image_grid_thw"):
        if key in inputs:
            return [int(x) for x in inputs[key][0].tolist()]
    return None


def _versions() -> dict[str, str]:
    import transformers

    from .. import __version__

    return {"vitcop": __version__, "torch": torch.__version__, "transformers": transformers.__version__}
