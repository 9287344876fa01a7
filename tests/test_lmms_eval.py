"""``python -m lmms_eval --model vitcop`` end to end on a local task (tests/lmms_eval_task), offline.

Needs the ``eval`` extra (lmms-eval 0.7.x) and vitcop installed so that its ``lmms_eval.models``
entry point is registered (``pip install -e ".[eval]"``); skipped when lmms_eval is not importable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lmms_eval  # select with -m lmms_eval
pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (pip install -e '.[eval]')")

from vitcop_cli.errors import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TASK_DIR = ROOT / "tests" / "lmms_eval_task"


def run_lmms_eval(model_dir: Path, out: Path, *, preset: str, tasks: str) -> tuple[dict, dict[str, list[dict]], str]:
    """(results JSON, {task: per-sample log lines}, console output) of one offline lmms-eval run."""
    env = dict(
        os.environ,
        HF_HOME=str(out / "hf"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    cmd = [
        sys.executable, "-m", "lmms_eval",
        "--model", "vitcop",
        "--model_args", f"pretrained={model_dir},preset={preset},method=vitcop,fps=1,max_frames=6,device=cpu,offline=true",
        "--tasks", tasks,
        "--include_path", str(TASK_DIR),
        "--batch_size", "1",
        "--log_samples",
        "--output_path", str(out / "results"),
    ]
    # data_files in the task YAML are relative to the repository root
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    console = proc.stdout + proc.stderr
    results = sorted((out / "results").rglob("*_results.json"))
    assert proc.returncode == 0 and "Error during evaluation" not in console and len(results) == 1, console[-4000:]
    samples = {}
    for task in tasks.split(","):
        (log,) = (out / "results").rglob(f"*_samples_{task}.jsonl")
        samples[task] = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return json.loads(results[0].read_text()), samples, console


def vitcop_reports(samples: list[dict]) -> list[dict]:
    reports = []
    for sample in samples:
        (counts,) = sample["token_counts"]
        assert counts["input_tokens"] == counts["vitcop"]["tokens"]["prompt"]
        assert counts["output_tokens"] == counts["vitcop"]["tokens"]["generated"]
        reports.append(counts["vitcop"])
    return reports


def test_unpruned_run_reports_accuracy_and_full_token_counts(tiny_models, tmp_path):
    results, samples, _ = run_lmms_eval(tiny_models["qwen2_vl"], tmp_path, preset="none", tasks="vitcop_local_mc")
    accuracy = results["results"]["vitcop_local_mc"]["accuracy,none"]
    per_sample = [s["accuracy"] for s in samples["vitcop_local_mc"]]
    assert len(per_sample) == 4 and set(per_sample) <= {0.0, 1.0}
    assert accuracy == pytest.approx(sum(per_sample) / 4)  # the random model scores what its answers earn
    reports = vitcop_reports(samples["vitcop_local_mc"])
    # model_args fps=1, max_frames=6: shapes.mp4 (8 s) -> 6 frames, bounce.mp4 (6 s) -> 6, scene.png -> 1 image
    assert [(r["visual"]["kind"], r["visual"]["frames"]) for r in reports] == [("video", 6), ("video", 6), ("video", 6), ("image", 1)]
    # the second question on shapes.mp4 follows the first: answered on its pruned prefix, not decoded again
    assert [r["prefix"]["reused"] for r in reports] == [False, True, False, False]
    assert reports[1]["timings"]["video_decode_s"] == 0.0 and reports[1]["prefix"]["saved_s"] > 0
    for r in reports:
        assert r["preset"] == "none"
        stages = r["visual_tokens"]
        assert stages["input"] == stages["stage3"] == r["tokens"]["visual"] > 0
        assert r["ttft_s"] > 0
    assert results["throughput"]["avg_vitcop_ttft_s"] > 0


def test_pruned_run_honours_task_frame_count_and_logs_pruning(tiny_models, tmp_path):
    results, samples, _ = run_lmms_eval(tiny_models["qwen2_vl"], tmp_path, preset="1_9", tasks="vitcop_local_mc_4f")
    per_sample = [s["accuracy"] for s in samples["vitcop_local_mc_4f"]]
    assert results["results"]["vitcop_local_mc_4f"]["accuracy,none"] == pytest.approx(sum(per_sample) / 4)
    reports = vitcop_reports(samples["vitcop_local_mc_4f"])
    # the task's generation_kwargs num_frames=4 overrides fps=1 / max_frames=6
    assert [r["visual"]["frames"] for r in reports] == [4, 4, 4, 1]
    for r in reports:
        assert r["preset"] == "1_9"  # lmms-eval parsed preset=1_9 as 19.0; the model maps it back
        stages = r["visual_tokens"]
        assert stages["input"] == r["tokens"]["visual"]
        assert stages["input"] > stages["stage1"] >= stages["stage2"] >= stages["stage3"]
        assert r["pruning"]["layer_averaged_ratio"] < 1.0
        assert r["ttft_s"] > 0
    assert results["throughput"]["avg_vitcop_layer_averaged_ratio"] < 1.0


# ---- in-process: registration and refusals ---------------------------------------------------------


@pytest.fixture(scope="module")
def lmm(tiny_models):
    from lmms_eval.models import get_model

    return get_model("vitcop").create_from_arg_string(
        f"pretrained={tiny_models['qwen2_vl']},preset=1_9,device=cpu,offline=true", {"batch_size": 1}
    )


def _instance(request_type: str, arguments: tuple, task: str = "some_task"):
    from lmms_eval.api.instance import Instance

    return Instance(request_type=request_type, arguments=arguments, idx=0, metadata={"task": task, "doc_id": 0, "repeats": 1})


def test_entry_point_registers_the_vitcop_model(lmm):
    from lmms_eval.models import get_model

    from vitcop_eval.model import VitcopLMM

    assert get_model("vitcop") is VitcopLMM
    assert lmm.preset.label == "1_9"


def test_loglikelihood_requests_are_refused_naming_the_task(lmm):
    with pytest.raises(InputError, match="mmbench_ll.*log-likelihood"):
        lmm.loglikelihood([_instance("loglikelihood", ("question", " A"), task="mmbench_ll")])
    with pytest.raises(InputError, match="multi-round"):
        lmm.generate_until_multi_round([_instance("generate_until_multi_round", ())])


def test_a_question_with_two_clips_is_refused_naming_task_and_doc(lmm, clip):
    lmm.task_dict = {"two_clips": {"test": [{"id": 0}]}}
    request = _instance(
        "generate_until",
        ("Compare the clips.", {"max_new_tokens": 2}, lambda doc: [str(clip), str(clip)], 0, "two_clips", "test"),
    )
    with pytest.raises(InputError, match="task two_clips, doc 0: the task gives 2 visuals"):
        lmm.generate_until([request])


def test_bad_model_args_fail_before_loading():
    from lmms_eval.models import get_model

    with pytest.raises(InputError, match="unknown vitcop model argument"):
        get_model("vitcop").create_from_arg_string("pretrained=/nonexistent,max_frame=8", {"batch_size": 1})
