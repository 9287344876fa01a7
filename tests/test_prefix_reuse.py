"""Oracles of the pruned prefix (issue 26): an answer never depends on whether its prefix came from a cache.

Every answer runs in two phases: the prompt's system + visual tokens ``[0, P)`` are prefilled under the preset
into a :class:`pruning.prefix.PrunedPrefix`, then the question's tokens ``[P, S)`` are prefilled against a copy.

1. A reused prefix gives tokens and logits **bit-identical** to the run that built it, on every family, under
   sdpa and eager, for a video and an image, for every method that keeps a prefix, at ``none`` and at 1_9 —
   also after other prompts ran in between (the model's position state is restored from the prefix).
2. Two phases against today's single-pass prefill: identical greedy tokens, logits within ``SPLIT_ATOL``
   (measured: at most 2.4e-7 on these float32 models; the split changes only the order of SDPA's / the
   chunked linear-attention kernel's sums). ``none`` in two phases equals the *unmodified* model's two-phase
   run bit for bit.
3. Sabotage: a prefix of another clip or preset is never used (the result says why, the answer is the fresh
   one); a mutated prefix fails the oracle; a prefix whose KV lengths do not match the record is refused
   before it runs; FastV (it reads the question) keeps none; answering never changes a kept prefix.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import pruning
from pruning import compat
from pruning.prefix import prefix_end
from pruning.verify import PruningNotApplied, UnsupportedGeneration
from vitcop_cli import api
from vitcop_cli.errors import PrefixMiss
from vitcop_cli.media.video import load_visual
from vitcop_cli.models.devmodels import FAMILIES

NEW = 4
SPLIT_ATOL = 1e-5
QUESTION = "What happens in the video?"


@pytest.fixture(scope="module")
def loaded(tiny_models):
    api.quiet_library_logs()
    return {(f, a): api.load(str(p), device="cpu", attn=a, offline=True)
            for f, p in tiny_models.items() for a in ("sdpa", "eager")}


@pytest.fixture(scope="module")
def inputs(loaded, clip, image):
    """{(family, attn, media): processor inputs} of one question about the clip (4 frames) / the image."""
    visuals = {"video": load_visual(clip, frames=4), "image": load_visual(image)}
    return {(f, a, m): s.prepare(v, QUESTION).inputs for (f, a), s in loaded.items() for m, v in visuals.items()}


def _greedy(model, **kw):
    out = model.generate(**kw, max_new_tokens=NEW, do_sample=False, output_logits=True, return_dict_in_generate=True)
    return out.sequences[0, kw["input_ids"].shape[1]:], torch.stack(out.logits)


def _question(model, handle, prefix, inputs):
    """The question phase on a copy of ``prefix``: (tokens, logits)."""
    ids, p = inputs["input_ids"], prefix.length
    cache = handle.continue_prefix(prefix)
    return _greedy(model, input_ids=ids[:, p:], attention_mask=inputs["attention_mask"],
                   **compat.generate_cache_kwargs(model, cache))


def _two_phase(model, inputs, preset, method="vitcop"):
    """Build the prefix and answer on it in one attachment: (prefix, tokens, logits)."""
    p = prefix_end(pruning.adapters.adapter_for(model), inputs["input_ids"])  # the adapter the engine uses
    with pruning.attach(model, preset, method) as handle:
        handle.bind(inputs)
        prefix = handle.build_prefix(inputs, p)
        tokens, logits = _question(model, handle, prefix, inputs)
    return prefix, tokens, logits


def _reuse(model, inputs, prefix, preset, method="vitcop"):
    with pruning.attach(model, preset, method) as handle:
        return _question(model, handle, prefix, inputs)


CASES = [(f, a, m, preset, method) for f in FAMILIES for m in ("video", "image")
         for a, preset, method in (("sdpa", "1_9", "vitcop"), ("eager", "1_9", "vitcop"), ("sdpa", "none", "vitcop"),
                                   ("eager", "none", "vitcop"), ("sdpa", "1_9", "uniform"),
                                   ("sdpa", "1_9", "divprune"), ("sdpa", "1_9", "evs"))]


# ---- 1. reused == fresh, bit for bit ----------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c))
def test_a_reused_prefix_is_bit_identical_to_the_run_that_built_it(loaded, inputs, case):
    family, attn, media, preset, method = case
    session, x = loaded[(family, attn)], inputs[(family, attn, media)]
    prefix, tokens, logits = _two_phase(session.model, x, preset, method)
    again = _reuse(session.model, x, prefix, preset, method)
    other = inputs[(family, attn, "image" if media == "video" else "video")]
    _two_phase(session.model, other, "1_3")  # another prompt in between: other position state, other caches
    later = _reuse(session.model, x, prefix, preset, method)
    for t, lg in (again, later):
        assert torch.equal(t, tokens) and torch.equal(lg, logits)
    if preset != "none" and not (method == "evs" and media == "image"):  # EVS prunes repeats across frames only
        assert sum(prefix.cache_lengths(session.adapter.lm_shape().layers)) < prefix.length * session.n_layers


# ---- 2. two phases against one pass ---------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("media", ["video", "image"])
@pytest.mark.parametrize("preset", ["none", "1_9"])
def test_two_phases_match_the_single_pass_prefill(loaded, inputs, family, attn, media, preset):
    session, x = loaded[(family, attn)], inputs[(family, attn, media)]
    model = session.model
    with pruning.attach(model, preset) as handle:
        handle.bind(x)
        tokens, logits = _greedy(model, **x)
        single = handle.report(x["input_ids"])
    with pruning.attach(model, preset) as handle:
        handle.bind(x)
        prefix = handle.build_prefix(x, prefix_end(session.adapter, x["input_ids"]))
        t2, l2 = _question(model, handle, prefix, x)
        split = handle.report(x["input_ids"])
    assert torch.equal(t2, tokens)
    assert (l2 - logits).abs().max().item() <= SPLIT_ATOL
    # the report counts both phases: the same tokens per layer and FLOPs as the single pass
    assert split.kv_cache_lengths == single.kv_cache_lengths and split.prefill_flops == single.prefill_flops
    assert (split.after_stage1, split.after_stage2, split.after_stage3) == \
        (single.after_stage1, single.after_stage2, single.after_stage3)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("media", ["video", "image"])
def test_none_in_two_phases_is_the_unmodified_models_two_phase_run(loaded, inputs, family, media):
    session, x = loaded[(family, "sdpa")], inputs[(family, "sdpa", media)]
    model, p = session.model, prefix_end(session.adapter, x["input_ids"])
    part = {k: (v[:, :p] if k in compat.TOKEN_INPUTS else v) for k, v in x.items()}
    with torch.no_grad():  # the unmodified model, by hand: prefix forward, then generate on a copy of its cache
        cache = compat.output_cache(model(**part, use_cache=True, logits_to_keep=1))
    ref = _greedy(model, input_ids=x["input_ids"][:, p:], attention_mask=x["attention_mask"],
                  **compat.generate_cache_kwargs(model, compat.copy_cache(cache)))
    _, tokens, logits = _two_phase(model, x, "none")
    assert torch.equal(tokens, ref[0]) and torch.equal(logits, ref[1])


# ---- the library: Session.ask == open().ask(), first and reused -------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("media", ["video", "image"])
def test_session_answers_do_not_depend_on_reuse(sessions, clip, image, family, media):
    session, path = sessions[family], clip if media == "video" else image
    fresh = session.ask(path, QUESTION, preset="1_9", frames=4, max_new_tokens=NEW)
    opened = session.open(path, preset="1_9", frames=4)
    first, second = (opened.ask(QUESTION, max_new_tokens=NEW) for _ in range(2))
    assert fresh.generated_ids == first.generated_ids == second.generated_ids
    assert (fresh.prefix.reused, first.prefix.reused, second.prefix.reused) == (False, False, True)
    assert second.prefix.source == "memory" and second.prefix.saved_s > 0 and first.prefix.saved_s == 0
    assert first.prefix.bytes == second.prefix.bytes == opened.nbytes < first.prefix.bytes_unpruned
    assert 0 < second.prefix.tokens < second.tokens.prompt
    # the first answer carries the whole wait (decode and the prefix prefill), a reused one its own part
    assert first.timings.video_decode_s > 0 and second.timings.video_decode_s == 0
    assert second.timings.vision_encoder_s == 0 and first.timings.vision_encoder_s > 0
    assert second.pruning.kv_cache_lengths == fresh.pruning.kv_cache_lengths
    assert second.visual.processed_grid == fresh.visual.processed_grid


def test_a_conversation_about_the_clip_reuses_its_prefix(sessions, clip):
    session = sessions["qwen2_vl"]
    opened = session.open(clip, preset="1_9", frames=4, system="Be brief.")
    first = opened.ask(QUESTION, max_new_tokens=NEW)
    chat = opened.messages(QUESTION) + [
        {"role": "assistant", "content": [{"type": "text", "text": first.answer}]},
        {"role": "user", "content": [{"type": "text", "text": "And then?"}]},
    ]
    follow = opened.ask_chat(chat, max_new_tokens=NEW)
    visual = load_visual(clip, frames=4)
    fresh = session.generate(session.prepare_chat(visual, chat), preset="1_9", max_new_tokens=NEW)
    assert follow.prefix.reused and follow.generated_ids == fresh.generated_ids


# ---- 3. sabotage ---------------------------------------------------------------------------------------
def test_a_prefix_of_another_clip_or_preset_is_never_used(sessions, clip):
    session = sessions["qwen2_vl"]
    bounce = clip.parent / "bounce.mp4"
    kept_visual = load_visual(clip, frames=4)
    _, kept = session.answer(session.prepare(kept_visual, QUESTION), preset="1_9", max_new_tokens=NEW)
    other = session.prepare(load_visual(bounce, frames=4), QUESTION)
    fresh = session.generate(other, preset="1_9", max_new_tokens=NEW)
    got = session.generate(other, preset="1_9", max_new_tokens=NEW, prefix=kept)
    assert not got.prefix.reused and "differ" in got.prefix.reason
    assert got.generated_ids == fresh.generated_ids
    same = session.prepare(kept_visual, QUESTION)
    under = session.generate(same, preset="1_3", max_new_tokens=NEW, prefix=kept)
    assert not under.prefix.reused and "1_9" in under.prefix.reason
    assert under.generated_ids == session.generate(same, preset="1_3", max_new_tokens=NEW).generated_ids
    # a prompt of tokens only (no pixels to prefill afresh) that the prefix does not cover is an error, never an
    # approximation (here: a system prompt before the visual)
    system = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}]
    tokens_only = session.prepare_prompt(kept_visual, system + session.open(clip, frames=4).messages("Q?"))
    with pytest.raises(PrefixMiss, match="differ.*no pixels"):
        session.answer(tokens_only, preset="1_9", max_new_tokens=NEW, prefix=kept)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_mutated_prefix_fails_the_oracle(loaded, inputs, family):
    session, x = loaded[(family, "sdpa")], inputs[(family, "sdpa", "video")]
    prefix, tokens, logits = _two_phase(session.model, x, "1_9")
    bad_cache = compat.copy_cache(prefix.cache)
    tensors = compat.cache_tensors(bad_cache)
    name = next(n for n in tensors if n.endswith((".keys", ".recurrent")))
    tensors[name].add_(1e-3)  # the same tensor object the cache holds
    got = _reuse(session.model, x, dataclasses.replace(prefix, cache=bad_cache), "1_9")
    assert not torch.equal(got[1], logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_prefix_that_does_not_match_its_record_is_refused_before_it_runs(loaded, inputs, family):
    session, x = loaded[(family, "sdpa")], inputs[(family, "sdpa", "video")]
    prefix, _, _ = _two_phase(session.model, x, "1_9")
    shape = session.adapter.lm_shape()
    layer = max(i for i in range(shape.layers) if shape.has_keys(i))
    short = compat.copy_cache(prefix.cache)
    entry = short.layers[layer]
    entry.keys, entry.values = entry.keys[..., 1:, :], entry.values[..., 1:, :]
    with pytest.raises(PruningNotApplied, match=f"layer {layer} of the kept prefix cached"):
        _reuse(session.model, x, dataclasses.replace(prefix, cache=short), "1_9")
    with pytest.raises(ValueError, match="built under vitcop / 1_9"):
        _reuse(session.model, x, prefix, "1_3")
    if shape.layer_types:  # a hybrid model: a linear layer without its state is refused too
        lin = next(i for i in range(shape.layers) if not shape.has_keys(i))
        empty = compat.copy_cache(prefix.cache)
        empty.layers[lin].recurrent_states[0] = None
        with pytest.raises(PruningNotApplied, match=f"linear-attention layer {lin}"):
            _reuse(session.model, x, dataclasses.replace(prefix, cache=empty), "1_9")


def test_answering_never_changes_a_kept_prefix(loaded, inputs):
    session, x = loaded[("qwen3_5", "sdpa")], inputs[("qwen3_5", "sdpa", "video")]
    prefix, _, _ = _two_phase(session.model, x, "1_9")
    before = {k: v.clone() for k, v in compat.cache_tensors(prefix.cache).items()}
    record = (prefix.state.decoded, prefix.state.question_len, prefix.state.cur.clone())
    _reuse(session.model, x, prefix, "1_9")
    after = compat.cache_tensors(prefix.cache)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert (prefix.state.decoded, prefix.state.question_len) == record[:2] and torch.equal(prefix.state.cur, record[2])


def test_fastv_reads_the_question_so_it_keeps_no_prefix(sessions, loaded, inputs, clip):
    session, x = loaded[("qwen2_vl", "sdpa")], inputs[("qwen2_vl", "sdpa", "video")]
    with pruning.attach(session.model, "1_9", "fastv") as handle, pytest.raises(UnsupportedGeneration, match="reads"):
        handle.build_prefix(x, prefix_end(session.adapter, x["input_ids"]))
    s = sessions["qwen2_vl"]
    opened = s.open(clip, preset="1_9", method="fastv", frames=4)
    assert opened.prefix is None and opened.nbytes == 0
    answers = [opened.ask(q, max_new_tokens=NEW) for q in (QUESTION, "Which colour?")]
    assert all(not a.prefix.kept and "fastv reads the question" in a.prefix.reason for a in answers)
    assert answers[0].generated_ids == s.ask(clip, QUESTION, preset="1_9", method="fastv", frames=4,
                                             max_new_tokens=NEW).generated_ids
    assert answers[0].timings.video_decode_s > 0 and answers[1].timings.video_decode_s == 0


def test_keys_separate_everything_a_prefix_depends_on(clip, tmp_path):
    from vitcop_cli.session.prefix_key import ClipOptions, clip_key, media_digest

    digest = media_digest(clip)
    copy = tmp_path / "renamed.mp4"
    copy.write_bytes(clip.read_bytes())
    assert media_digest(copy) == digest  # content, not name
    base = ClipOptions(preset="1_9", method="vitcop")
    keys = {clip_key("m", digest, base)}
    for change in ({"preset": "1_3"}, {"method": "uniform"}, {"system": "s"}, {"frames": 8}, {"fps": 1.0},
                   {"max_pixels": 1000}, {"min_pixels": 10}, {"resize": "exact"}, {"decoder": "pyav"},
                   {"max_frames": 4}, {"decode_device": "cuda"}):
        keys.add(clip_key("m", digest, dataclasses.replace(base, **change)))
    keys |= {clip_key("other-model", digest, base), clip_key("m", "0" * 64, base)}
    assert len(keys) == 14


def test_the_pixel_digest_samples_within_any_large_tensor():
    """Found on a 256-frame clip: float32 sample positions rounded past the end of a 36,126,720-value tensor
    (every count past 2**24 risks it). Positions are integers now; the last value is still read."""
    from pruning.prefix import pixels_digest

    pixels = torch.zeros(36_126_720, dtype=torch.uint8)
    before = pixels_digest({"pixel_values_videos": pixels})
    pixels[-1] = 1
    assert pixels_digest({"pixel_values_videos": pixels}) != before
