"""The lmms-eval model's pure parts (model arguments, generation settings, visuals, the cost report).

These run without lmms-eval installed; the end-to-end harness run is in test_lmms_eval.py.
"""

from __future__ import annotations

import pytest
from PIL import Image

from vitcop_cli.defaults import DEFAULT_METHOD, DEFAULT_PRESET
from vitcop_cli.errors import InputError
from vitcop_eval.options import (
    GenerationSettings,
    ModelArgs,
    cut_at_stop,
    generation_settings,
    parse_model_args,
    preset_name,
    question_text,
)
from vitcop_eval.report import prefix_totals, run_averages, sample_report
from vitcop_eval.visuals import to_visual

# ---- model arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize("value, name", [(19.0, "1_9"), (13.0, "1_3"), (29.0, "2_9"), (19, "1_9"), ("1_9", "1_9"), ("none", "none")])
def test_preset_numbers_from_lmms_eval_parser_map_back_to_builtin_names(value, name):
    # lmms-eval's --model_args parser runs float("1_9") == 19.0
    assert preset_name(value) == name


@pytest.mark.parametrize("value", [7.0, 19.5, True, ""])
def test_preset_values_that_name_no_preset_are_refused(value):
    with pytest.raises(InputError, match="preset"):
        preset_name(value)


def test_model_args_parse_typed_values_and_defaults():
    args = parse_model_args(
        pretrained="Qwen/Qwen2-VL-7B-Instruct", preset=19.0, method="fastv", fps=1, max_frames=64,
        device="cpu", dtype="float32", attn="sdpa", max_new_tokens=32, batch_size="1", max_batch_size=None,
    )
    assert args == ModelArgs(
        pretrained="Qwen/Qwen2-VL-7B-Instruct", preset="1_9", method="fastv", fps=1.0, max_frames=64,
        device="cpu", dtype="float32", attn="sdpa", max_new_tokens=32,
    )
    defaults = parse_model_args(pretrained="m")
    assert (defaults.preset, defaults.method) == (DEFAULT_PRESET, DEFAULT_METHOD)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "pretrained"),
        ({"pretrained": "m", "presett": "1_9"}, "unknown vitcop model argument.*presett"),
        ({"pretrained": "m", "preset": "nope"}, "nope"),
        ({"pretrained": "m", "method": "magic"}, "unknown pruning method"),
        ({"pretrained": "m", "fps": "fast"}, "fps"),
        ({"pretrained": "m", "fps": 0}, "--fps must be positive"),
        ({"pretrained": "m", "max_frames": 2.5}, "max_frames"),
        ({"pretrained": "m", "max_frames": 0}, "max-frames"),
        ({"pretrained": "m", "batch_size": 4}, "one request at a time"),
        ({"pretrained": "m", "batch_size": "auto"}, "batch_size"),
        ({"pretrained": "m", "offline": "maybe"}, "offline"),
    ],
)
def test_bad_model_args_are_refused_before_loading(kwargs, match):
    with pytest.raises(InputError, match=match):
        parse_model_args(**kwargs)


# ---- generation settings ------------------------------------------------------------------------

ARGS = ModelArgs(pretrained="m", max_new_tokens=99)


def test_task_greedy_kwargs_become_greedy_without_top_p():
    # videomme's generation_kwargs: top_p 1.0 with temperature 0 must not trip the "top_p needs sampling" guard
    s = generation_settings({"max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False}, ARGS)
    assert (s.max_new_tokens, s.temperature, s.top_p, s.stop, s.frames) == (16, 0.0, None, (), None)


def test_sampling_needs_do_sample_and_a_positive_temperature():
    s = generation_settings({"do_sample": True, "temperature": 0.7, "top_p": 0.9}, ARGS)
    assert (s.temperature, s.top_p) == (0.7, 0.9)
    assert generation_settings({"do_sample": False, "temperature": 0.7, "top_p": 0.9}, ARGS).temperature == 0.0
    assert generation_settings({"do_sample": True, "temperature": 0}, ARGS).temperature == 0.0


def test_defaults_until_and_task_frame_count():
    s = generation_settings({"until": "\n\n", "image_aspect_ratio": "pad"}, ARGS)
    assert (s.max_new_tokens, s.stop, s.frames) == (99, ("\n\n",), None)
    assert generation_settings({"until": ["A", "B"], "num_frames": 8}, ARGS).stop == ("A", "B")
    assert generation_settings({"num_frames": 8}, ARGS).frames == 8
    assert generation_settings({"nframes": 16}, ARGS).frames == 16
    assert generation_settings(None, ARGS).max_new_tokens == 99


@pytest.mark.parametrize(
    "gen, match",
    [
        ({"num_beams": 4}, "beam search"),
        ({"num_frames": 0}, "at least 1"),
        ({"max_new_tokens": 0}, "max-new-tokens"),
        ({"until": 3}, "until"),
        ({"do_sample": True, "temperature": float("nan")}, "finite"),
    ],
)
def test_unsupported_generation_kwargs_are_refused(gen, match):
    with pytest.raises(InputError, match=match):
        generation_settings(gen, ARGS)


def test_cut_at_stop_and_question_text():
    assert cut_at_stop("B. Blue\n\nmore", ("\n\n", "more")) == "B. Blue"
    assert cut_at_stop("B", ()) == "B"
    assert cut_at_stop("B", ("",)) == "B"
    assert question_text("<video>\nWhat is it?<image> ") == "What is it?"


# ---- visuals ------------------------------------------------------------------------------------


def test_video_path_sampled_by_fps_or_by_the_task_frame_count(clip):
    assert to_visual([str(clip)], fps=1.0, frames=None, max_frames=6).num_frames == 6  # 8 s at 1 fps, capped
    assert to_visual([str(clip)], fps=0.5, frames=None, max_frames=64).num_frames == 4
    assert to_visual(str(clip), fps=1.0, frames=4, max_frames=64).num_frames == 4


def test_image_path_and_pil_image(image):
    v = to_visual([str(image)], fps=None, frames=None, max_frames=6)
    assert (v.kind, v.num_frames) == ("image", 1)
    pil = Image.new("L", (40, 30))
    w = to_visual([pil], fps=None, frames=None, max_frames=6)
    assert (w.kind, w.width, w.height, w.frames.mode) == ("image", 40, 30, "RGB")


@pytest.mark.parametrize(
    "raw, match",
    [
        ([], "0 visuals"),
        (None, "0 visuals"),
        (["a.mp4", "b.mp4"], "2 visuals"),
        ([{"array": [0.0], "sampling_rate": 16000}], "type dict"),
        (["/no/such/clip.mp4"], "file not found"),
    ],
)
def test_visuals_vitcop_cannot_take_are_refused(raw, match):
    with pytest.raises(InputError, match=match):
        to_visual(raw, fps=1.0, frames=None, max_frames=6)


# ---- the per-sample report ----------------------------------------------------------------------


def test_sample_report_carries_tokens_per_stage_and_ttft(sessions, image):
    result = sessions["qwen2_vl"].ask(image, "What color is the square?", preset="1_9", max_new_tokens=2)
    report = sample_report(result)
    p = result.pruning
    assert report["visual_tokens"] == {
        "input": p.n_visual, "stage1": p.after_stage1, "stage2": p.after_stage2, "stage3": p.after_stage3,
    }
    assert report["ttft_s"] == result.timings.ttft_s == report["timings"]["ttft_s"]
    assert report["tokens"] == {"prompt": result.tokens.prompt, "visual": result.tokens.visual, "generated": result.tokens.generated}
    assert (report["preset"], report["method"], report["visual"]["kind"]) == ("1_9", "vitcop", "image")
    averages = run_averages([report, report])
    assert averages["vitcop_ttft_s"] == pytest.approx(result.timings.ttft_s)
    assert averages["vitcop_visual_tokens_after_stage3"] == p.after_stage3
    assert run_averages([]) == {}


# ---- consecutive documents about one visual share its pruned prefix (vitcop_eval.answering) -------


def _settings(frames: int | None = 4) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=3, temperature=0.0, top_p=None, stop=(), frames=frames)


def _docs(clip, image):
    """(doc_to_visual's value, question, settings) of six documents, as a task would hand them in turn."""
    pil = Image.open(image).convert("RGB")
    return [
        ([str(clip)], "What moves?", _settings()),
        ([str(clip)], "Which colour is the circle?", _settings()),  # the same clip and options: reused
        ([str(clip)], "How many shapes?", _settings(6)),  # the task asks for other frames: fresh
        ([pil], "What colour is the square?", _settings(None)),
        ([pil.copy()], "Where is the square?", _settings(None)),  # an equal image: reused
        ([str(image)], "What is it?", _settings(None)),  # the same picture, but a file: fresh
    ]


@pytest.fixture(scope="module")
def plain_answers(sessions, clip, image):
    """Every document answered afresh (``reuse=False``): (results, decodes)."""
    from vitcop_eval.answering import DocAnswerer

    session = sessions["qwen2_vl"]
    answerer = DocAnswerer(session, ModelArgs(pretrained="m"), session.check_preset("1_9"), reuse=False)
    return [answerer.answer(raw, q, st) for raw, q, st in _docs(clip, image)]


def test_documents_about_one_visual_reuse_its_prefix_with_the_fresh_answers(sessions, clip, image, plain_answers,
                                                                            monkeypatch):
    from vitcop_eval.answering import DocAnswerer

    session = sessions["qwen2_vl"]
    decoded = []
    load = session.load_visual
    monkeypatch.setattr(session, "load_visual", lambda path, **kw: decoded.append(path) or load(path, **kw))
    args = ModelArgs(pretrained="m")
    assert args.resize == "exact"  # the plugin's default: the reference preprocessing
    answerer = DocAnswerer(session, args, session.check_preset("1_9"))
    results = [answerer.answer(raw, q, st) for raw, q, st in _docs(clip, image)]
    assert [r.prefix.reused for r in results] == [False, True, False, False, True, False]
    assert [r.prefix.reused for r in plain_answers] == [False] * 6
    assert [r.generated_ids for r in results] == [r.generated_ids for r in plain_answers]
    assert [r.prefix.kv_tokens for r in results] == [r.prefix.kv_tokens for r in plain_answers]
    assert [r.tokens for r in results] == [r.tokens for r in plain_answers]
    assert [r.visual.frames for r in results] == [4, 4, 6, 1, 1, 1]
    assert len(decoded) == 3  # the clip at 4 and 6 frames, the image file: a reused document is not decoded
    assert results[1].timings.video_decode_s == 0.0 and results[1].prefix.saved_s > 0
    assert (answerer.answers, answerer.reuses) == (6, 2)
    assert answerer.saved_s == pytest.approx(results[1].prefix.saved_s + results[4].prefix.saved_s)
    # the run log and the throughput block
    reports = [sample_report(r) for r in results]
    assert reports[1]["prefix"]["reused"] is True and reports[0]["prefix"]["source"] == "built"
    assert prefix_totals(reports) == (2, pytest.approx(answerer.saved_s))
    averages = run_averages(reports)
    assert averages["vitcop_prefix_reuse_ratio"] == pytest.approx(2 / 6)
    assert averages["vitcop_prefix_saved_s"] == pytest.approx(answerer.saved_s / 6)
    answerer.drop()
    assert not answerer.answer(*_docs(clip, image)[1]).prefix.reused  # nothing held after drop()


def test_keys_tell_apart_what_changes_the_prefix(sessions, clip, image, tmp_path):
    from vitcop_eval.answering import DocAnswerer, media_identity

    session = sessions["qwen2_vl"]
    preset = session.check_preset("1_9")
    key = DocAnswerer(session, ModelArgs(pretrained="m"), preset).key
    base = key([str(clip)], _settings())
    others = [
        key(str(clip), _settings(6)),
        DocAnswerer(session, ModelArgs(pretrained="m", system="Be brief."), preset).key([str(clip)], _settings()),
        DocAnswerer(session, ModelArgs(pretrained="m", resize="fast"), preset).key([str(clip)], _settings()),
        DocAnswerer(session, ModelArgs(pretrained="m", method="divprune"), preset).key([str(clip)], _settings()),
        DocAnswerer(session, ModelArgs(pretrained="m"), session.check_preset("1_3")).key([str(clip)], _settings()),
    ]
    assert key(str(clip), _settings()) == base and len({base, *others}) == 6
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(clip.read_bytes())
    assert media_identity([str(copy)]) != media_identity([str(clip)])  # another file: its own prefix
    pil = Image.open(image).convert("RGB")
    edited = pil.copy()
    edited.putpixel((0, 0), (1, 2, 3))
    assert media_identity(pil) == media_identity([pil.copy()]) != media_identity(edited)
    for raw in ([], [str(clip), str(clip)], [{"array": [0.0]}], ["/no/such/clip.mp4"]):
        assert media_identity(raw) is None  # no key: to_visual refuses it


def test_a_prefix_that_does_not_cover_the_prompt_is_answered_afresh(sessions, clip, image, plain_answers,
                                                                       monkeypatch):
    from vitcop_eval.answering import DocAnswerer

    session = sessions["qwen2_vl"]
    answerer = DocAnswerer(session, ModelArgs(pretrained="m"), session.check_preset("1_9"))
    render = session.prepare_prompt

    def other_system(visual, messages, **kw):  # a prompt whose tokens before the visual differ
        return render(visual, [{"role": "system", "content": [{"type": "text", "text": "Other."}]}, *messages], **kw)

    monkeypatch.setattr(session, "prepare_prompt", other_system)
    first, second = (answerer.answer(*doc) for doc in _docs(clip, image)[:2])
    assert (second.prefix.reused, second.prefix.source, answerer.reuses) == (False, "built", 0)
    assert [first.generated_ids, second.generated_ids] == [r.generated_ids for r in plain_answers[:2]]
    assert second.timings.video_decode_s > 0  # decoded again for the fresh answer


# ---- the local lmms-eval task's scorer (tests/lmms_eval_task/utils.py) --------------------------


def test_local_task_scores_by_the_first_option_letter():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "lmms_eval_task" / "utils.py"
    spec = importlib.util.spec_from_file_location("vitcop_local_task_utils", path)
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    doc = {"video": "scene.png", "question": "What color is the square?", "options": ["Red", "Blue", "Green", "Yellow"], "answer": "B"}
    assert utils.process_results(doc, ["B. Blue"]) == {"accuracy": 1.0}
    assert utils.process_results(doc, ["(B)"]) == {"accuracy": 1.0}
    assert utils.process_results(doc, ["Blue"]) == {"accuracy": 0.0}  # no letter, no credit
    assert utils.process_results(doc, ["C"]) == {"accuracy": 0.0}
    assert utils.doc_to_visual(doc) == [str(Path(__file__).resolve().parent.parent / "samples" / "scene.png")]
    assert utils.doc_to_text(doc, {"post_prompt": "\nLetter?"}).endswith("B. Blue\nC. Green\nD. Yellow\nLetter?")
