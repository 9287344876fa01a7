"""Generation with the cost report: ``model.generate`` on prepared inputs under a pruning preset.

Contract: :class:`GenerationMixin` gives ``Session`` its :meth:`~GenerationMixin.generate`, which
checks the preset against the model's depth, the method, the options and the prompt length, then
runs ``model.generate`` with the preset attached and returns an
:class:`~vitcop_cli.result.AskResult`: the answer, token counts, the pruning report, timings (the
start and end of ``generate``, the vision encoder, the end of the first forward and the phases of the
time to the first token, all marked by :class:`~vitcop_cli.session.phases.PhaseTimer` on one timeline:
CUDA events resolved by one synchronisation after ``generate``) and peak memory.
A random-weight demo model's result is flagged (``demo_model``) and carries a warning saying so.
"""

from __future__ import annotations

from typing import Callable

import torch

from pruning import attach
from pruning.methods import method_class
from pruning.presets import Preset
from pruning.stats import ratio_warning
from pruning.verify import PruningNotApplied, UnsupportedGeneration

from ..defaults import DEFAULT_METHOD, DEFAULT_PRESET
from ..errors import RuntimeFailure
from ..options import check_generation_options
from ..result import AskResult, Timings, TokenCounts, VisualInfo
from .choices import check_method
from .phases import PhaseTimer
from .prompting import Prepared
from .streaming import CallbackStreamer

__all__ = ["GenerationMixin", "demo_warning"]


def demo_warning(name: str) -> str:
    """The warning every answer of a built-in demo model carries."""
    return (
        f"{name} is a built-in demo model with random weights: its answer is meaningless text; the frames, "
        "token counts, pruning and timings are real"
    )


class GenerationMixin:
    """``Session``'s generation side; needs ``model``, ``processor``, ``adapter``, ``device``, ``name``,
    ``demo_model``, ``_memory`` and the checks of ``Session`` / :mod:`.prompting`."""

    def generate(
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
    ) -> AskResult:
        """Generate an answer for ``prepared``. ``seed`` seeds torch's generators first, so sampling
        (temperature > 0) is reproducible run to run; it is recorded in the result.
        ``stopping_criteria``: extra ``transformers`` ``StoppingCriteria`` checked after every
        generated token (the server's cancel flag and stop strings); the result then holds the
        tokens generated until one fired."""
        preset = self.check_preset(preset)
        check_method(method)
        check_generation_options(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
        self.check_lengths(max_new_tokens, int(prepared.inputs["input_ids"].shape[1]))
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p if top_p is not None else 1.0, "top_k": 0}
            if temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        streamer = CallbackStreamer(self.processor.tokenizer, on_text) if on_text else None
        stopping = {}
        if stopping_criteria:
            from transformers import StoppingCriteriaList

            stopping["stopping_criteria"] = StoppingCriteriaList(stopping_criteria)
        timer = PhaseTimer(self.model, self.adapter, self.device)
        if seed is not None:
            torch.manual_seed(seed)  # seeds CUDA / MPS generators too
        self._memory.reset()
        try:
            with attach(self.model, preset, method) as handle, timer:
                handle.bind(prepared.inputs)
                timer.mark("start")
                output = self.model.generate(
                    **prepared.inputs, max_new_tokens=max_new_tokens, streamer=streamer, **sampling, **stopping
                )
                timer.mark("end")
            timer.settle()
            pruning_report = handle.report(prepared.inputs["input_ids"])
        except torch.cuda.OutOfMemoryError as exc:
            raise RuntimeFailure(
                "out of GPU memory during generation; try a stronger preset, fewer frames or lower --max-pixels"
            ) from exc
        except (PruningNotApplied, UnsupportedGeneration) as exc:
            raise RuntimeFailure(str(exc)) from exc
        warnings = [demo_warning(self.name)] if self.demo_model else []
        warnings += [*getattr(prepared.visual, "warnings", []), *prepared.warnings]  # then frame-count adjustments
        why = method_class(method).shortfall_reason(handle.shape.layers)
        shortfall = ratio_warning(pruning_report, preset.ratio, why)
        if shortfall:
            warnings.append(shortfall)
        memory = self._memory.read()
        prompt_len = prepared.inputs["input_ids"].shape[1]
        generated = output[0, prompt_len:].tolist()
        answer = self.processor.tokenizer.decode(generated, skip_special_tokens=True).strip()
        ttft, decode_s = timer.ttft_s, timer.decode_s
        visual = prepared.visual
        n_visual = int(self.adapter.visual_mask(prepared.inputs["input_ids"]).sum())
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
            tokens=TokenCounts(prompt=prompt_len, visual=n_visual, generated=len(generated)),
            timings=Timings(
                model_load_s=self.load_s,
                video_decode_s=video_decode_s,
                preprocess_s=prepared.preprocess_s,
                vision_encoder_s=timer.vision_s,
                prefill_s=ttft - timer.vision_s,
                ttft_s=video_decode_s + prepared.preprocess_s + ttft,
                model_ttft_s=ttft,
                decode_s=decode_s,
                decode_tokens_per_s=(len(generated) - 1) / decode_s if len(generated) > 1 and decode_s > 0 else None,
                pruning_s=handle.seconds,
                total_s=video_decode_s + prepared.preprocess_s + ttft + decode_s,
                phases=timer.phases(
                    video_decode_s=video_decode_s, preprocess_s=prepared.preprocess_s,
                    pruning=handle.seconds_by_tag,
                ),
            ),
            memory=memory,
            pruning=pruning_report,
            generated_ids=generated,
            warnings=warnings,
            versions=_versions(),
            seed=seed,
            demo_model=self.demo_model,
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
