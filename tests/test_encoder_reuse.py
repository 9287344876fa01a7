"""Encoder reuse (issue 18, part 3): each distinct temporal patch is encoded once and nothing downstream changes.

1. Pure: :func:`pruning.repeats.find_repeats` (bitwise equality, geometry keys, a checksum that only
   narrows) and :meth:`RepeatPlan.expand` (per-patch rows and 2x2-merged tokens, refused misfits).
2. Per family, on clips with repeated temporal patches (a static tail, a still clip, an odd frame count
   whose padded last temporal patch repeats the first, alternating content) and on a clip without:
   a. the encoder's output as the model receives it (every field, DeepStack included) equals the
      unmodified encoder's, while the encoder really ran on the distinct patches only;
   b. the Stage-I records (saliency, VIC features, frame ids, grid positions) equal;
   c. under preset 1_9: the same kept tokens, greedy tokens and logits, and ``handle.encoder_patches``
      = (total, distinct).
   All comparisons are bit-for-bit: on CPU float32 every family's encoder is bit-identical on a subset
   of its temporal patches (see :mod:`pruning.encoder_reuse`).
3. A sabotaged spread-back (the source map shifted by one) makes oracles a, b and c fail.
4. Guards: a call carrying precomputed geometry is encoded whole; a Stage-I capture registered before
   the reuse hooks raises; identity presets attach no reuse; a text-only prefill reports None.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest
import torch

from pruning import compat, encoder_reuse
from pruning.engine import attach
from pruning.presets import load_preset
from pruning.repeats import RepeatPlan, find_repeats
from vitcop_cli.models.devmodels import FAMILIES
from vitcop_cli.media.synthetic import synthetic_clip

NEW_TOKENS = 4


# ---- 1. pure ----------------------------------------------------------------------------------
def test_find_repeats_maps_each_group_to_the_first_with_its_content():
    a, b, c = torch.randn(3, 2, 5).unbind(0)
    rows = torch.cat([a, b, a, c, b])
    plan = find_repeats(rows, [2] * 5)
    assert plan.encoded == (0, 1, 3) and plan.source == (0, 1, 0, 2, 1)
    assert (plan.total, plan.n_encoded, plan.has_repeats) == (5, 3, True)
    assert plan.encoded_rows().tolist() == [0, 1, 2, 3, 6, 7]


def test_equal_pixels_in_another_geometry_are_not_a_repeat():
    rows = torch.randn(4, 3).repeat(2, 1)
    assert find_repeats(rows, [4, 4], keys=[(2, 2), (1, 4)]).encoded == (0, 1)
    assert find_repeats(rows, [4, 4], keys=[(2, 2), (2, 2)]).encoded == (0,)


def test_equality_is_bitwise_and_the_checksum_only_narrows():
    zeros = torch.tensor([[0.0], [-0.0]])
    assert find_repeats(zeros, [1, 1]).encoded == (0, 1)  # equal values, different bits
    nan = torch.tensor([[float("nan")], [float("nan")]])
    assert find_repeats(nan, [1, 1]).encoded == (0,)  # the same bits
    swapped = torch.tensor([[1, 2], [2, 1]], dtype=torch.int32)  # the same checksum, different content
    assert find_repeats(swapped, [1, 1]).encoded == (0, 1)
    half = torch.tensor([[1.5, 2.0], [1.5, 2.0]], dtype=torch.bfloat16)
    assert find_repeats(half, [1, 1]).encoded == (0,)


def test_groups_must_tile_the_rows():
    with pytest.raises(ValueError, match="do not tile"):
        find_repeats(torch.zeros(5, 2), [2, 2])
    with pytest.raises(ValueError, match="keys"):
        find_repeats(torch.zeros(4, 2), [2, 2], keys=[1])


def test_expand_spreads_rows_and_merged_tokens_back():
    plan = RepeatPlan(sizes=(4, 4, 4, 4), source=(0, 1, 0, 0), encoded=(0, 1))
    patches = torch.arange(8.0)[:, None]  # rows of the two encoded groups
    assert plan.expand(patches).flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 0, 1, 2, 3]
    tokens = torch.tensor([[10.0], [20.0]])  # one 2x2-merged token per group
    merged = (1, Fraction(1, 4))
    assert plan.expand(tokens, scales=merged).flatten().tolist() == [10, 20, 10, 10]
    with pytest.raises(ValueError, match="do not follow the groups"):
        plan.expand(tokens)  # a length the caller did not declare
    with pytest.raises(ValueError, match="do not follow the groups"):
        plan.expand(torch.zeros(3, 1), scales=merged)
    still = RepeatPlan(sizes=(16, 16), source=(0, 0), encoded=(0,))
    with pytest.raises(ValueError, match="do not follow the groups"):  # e.g. attention maps (1, H, n, n)
        still.expand(torch.zeros(1, 2, 4, 4), scales=merged)
    none = find_repeats(torch.randn(4, 2), [2, 2])
    x = torch.randn(4, 2)
    assert not none.has_repeats and none.expand(x) is x


# ---- clips --------------------------------------------------------------------------------------
def _clip(kind: str):
    """A synthetic clip whose frames repeat as ``kind`` says (frames differ from each other otherwise)."""
    frames = {"static_tail": 8, "still": 6, "odd_padded": 5, "alternating": 8, "moving": 8}[kind]
    visual = synthetic_clip(frames, 64, 48, seed=1)
    f = visual.frames.clone()
    if kind == "static_tail":  # a still camera after the first two frames
        f[2:] = f[2]
    elif kind == "still":
        f[:] = f[0]
    elif kind == "odd_padded":  # A A B B A: the processor pads the last temporal patch to (A, A) = the first
        f[1], f[3], f[4] = f[0], f[2], f[0]
    elif kind == "alternating":  # A A B B A A B B
        f[1] = f[4] = f[5] = f[0]
        f[3] = f[6] = f[7] = f[2]
    visual.frames = f
    return visual


#: (total, encoded) per clip: Qwen families count temporal patches (2 frames), LLaVA-OneVision frames
EXPECTED = {
    "qwen": {"static_tail": (4, 2), "still": (3, 1), "odd_padded": (3, 2), "alternating": (4, 2), "moving": (4, 4)},
    "llava": {"static_tail": (8, 3), "still": (6, 1), "odd_padded": (5, 2), "alternating": (8, 2), "moving": (8, 8)},
}
CLIPS = tuple(EXPECTED["qwen"])


def _expected(family: str, kind: str) -> tuple[int, int]:
    return EXPECTED["llava" if family == "llava_onevision" else "qwen"][kind]


@pytest.fixture(scope="module")
def inputs(sessions):
    """{(family, clip): processor inputs}."""
    return {(f, k): sessions[f].prepare(_clip(k), "What happens?").inputs for f in FAMILIES for k in CLIPS}


def _snapshot(value):
    """A detached copy of an encoder output (the model reshapes its fields after the call)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_snapshot(v) for v in value]
    return value


def assert_identical(got, ref, where: str = "output", close: frozenset = frozenset()) -> None:
    """Bit-for-bit equality of nested encoder outputs / records (same fields, shapes and bits); fields named
    in ``close`` only to float rounding (a kernel whose arithmetic depends on the batch size)."""
    if isinstance(ref, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.shape == ref.shape, f"{where}: shape"
        if where.rsplit(".", 1)[-1] in close:
            try:
                torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
            except AssertionError as exc:
                raise AssertionError(f"{where}: values differ beyond float rounding: {exc}") from None
        else:
            assert torch.equal(got, ref), f"{where}: values differ"
    elif isinstance(ref, dict):
        assert got.keys() == ref.keys(), f"{where}: fields {sorted(got)} != {sorted(ref)}"
        for k in ref:
            assert_identical(got[k], ref[k], f"{where}.{k}", close)
    elif isinstance(ref, list):
        assert len(got) == len(ref), f"{where}: length"
        for i, (g, r) in enumerate(zip(got, ref)):
            assert_identical(g, r, f"{where}[{i}]", close)
    else:
        assert got == ref, where


#: encoder-output fields that are equal only to float rounding under reuse, per family: SigLIP's attention-
#: pooling head (``pooler_output``; LLaVA-OneVision does not read it, it uses ``hidden_states``) runs a
#: MultiheadAttention whose CPU result depends on how many frames share the batch (~7e-7 here). Every
#: other field of every family is bit-identical.
BATCH_DEPENDENT = {"llava_onevision": frozenset({"pooler_output"})}


# ---- 2a. encoder outputs -----------------------------------------------------------------------
def _encoder_run(session, inputs, reuse: bool):
    """(encoder output as the model receives it, rows the encoder really ran on, encoder_patches)."""
    encoder = session.adapter.vision_encoder
    reused = encoder_reuse.attach(session.model) if reuse else None
    seen = {}
    hooks = [  # registered after the reuse hooks: they see the shrunk call and the spread-back output
        encoder.register_forward_pre_hook(lambda _m, args, kwargs: seen.__setitem__("rows", _pixels(args, kwargs)),
                                          with_kwargs=True),
        encoder.register_forward_hook(lambda _m, _a, out: seen.__setitem__("out", _snapshot(out))),
    ]
    _forward(session, inputs, hooks, reused)
    return seen["out"], seen["rows"], reused.encoder_patches if reused is not None else None


def _forward(session, inputs, hooks: list, reused) -> None:
    """One forward of ``session``'s model on ``inputs``; then the test's ``hooks`` and the reuse attachment
    (or None) are removed, whatever happened."""
    try:
        with torch.inference_mode():
            session.model(**inputs)
    finally:
        for h in hooks:
            h.remove()
        if reused is not None:
            reused.remove()


def _pixels(args, kwargs) -> int:
    slot = compat.SIGLIP_PIXELS if "pixel_values" in kwargs else compat.QWEN_VISION_PIXELS
    return compat.call_input(args, kwargs, slot).shape[0]


def assert_encoder_reuse_exact(session, inputs, expected) -> None:
    ref, ref_rows, _ = _encoder_run(session, inputs, reuse=False)
    got, rows, patches = _encoder_run(session, inputs, reuse=True)
    total, encoded = expected
    assert patches == expected
    assert rows * total == ref_rows * encoded  # the encoder ran on the distinct patches only
    assert_identical(got, ref, "encoder output", BATCH_DEPENDENT.get(session.model_type, frozenset()))


@pytest.mark.parametrize("kind", CLIPS)
def test_encoder_outputs_equal_the_unmodified_encoder(sessions, inputs, family, kind):
    assert_encoder_reuse_exact(sessions[family], inputs[family, kind], _expected(family, kind))


# ---- 2b. Stage-I records ------------------------------------------------------------------------
def _records(session, inputs, reuse: bool) -> list:
    reused = encoder_reuse.attach(session.model) if reuse else None
    records: list = []
    _forward(session, inputs, session.adapter.attach_encoder_capture(records, reuse=reused), reused)
    return [_snapshot(r.payload) for r in records]


def assert_stage1_records_exact(session, inputs) -> None:
    ref = _records(session, inputs, reuse=False)
    assert len(ref) == 1
    assert_identical(_records(session, inputs, reuse=True), ref, "Stage-I records")


@pytest.mark.parametrize("kind", CLIPS)
def test_stage1_records_equal_the_unmodified_path(sessions, inputs, family, kind):
    assert_stage1_records_exact(sessions[family], inputs[family, kind])


# ---- 2c. pruned generation -----------------------------------------------------------------------
def _pruned(session, inputs, reuse: bool):
    with attach(session.model, load_preset("1_9"), encoder_reuse=reuse) as handle:
        handle.bind(inputs)
        out = session.model.generate(
            **inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    return {
        "tokens": out.sequences[0, inputs["input_ids"].shape[1]:],
        "logits": torch.stack(out.logits),
        "kept": handle.last.kept_orig,
        "stages": handle.last.stages,
    }, handle.encoder_patches


def assert_pruned_generation_exact(session, inputs, expected) -> None:
    ref, off = _pruned(session, inputs, reuse=False)
    got, patches = _pruned(session, inputs, reuse=True)
    assert off is None and patches == expected
    assert_identical(got, ref, "pruned generation")


@pytest.mark.parametrize("kind", CLIPS)
def test_pruned_generation_is_unchanged(sessions, inputs, family, kind):
    assert_pruned_generation_exact(sessions[family], inputs[family, kind], _expected(family, kind))


def test_reuse_for_an_unpruned_run_changes_nothing(sessions, inputs, family):
    """``pruning.encoder_reuse.attach`` alone (e.g. for preset ``none``): the same greedy tokens and logits."""
    session, batch = sessions[family], inputs[family, "static_tail"]

    def run():
        out = session.model.generate(
            **batch, max_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
        return [out.sequences, torch.stack(out.logits)]

    ref = run()
    with encoder_reuse.attach(session.model) as reused:
        got = run()
    assert reused.encoder_patches == _expected(family, "static_tail")
    assert_identical(got, ref, "unpruned generation")


# ---- 3. sabotage ----------------------------------------------------------------------------------
@pytest.fixture
def shifted_spread(monkeypatch):
    """Spread results back with the source map shifted by one distinct patch (the wrong patch's output)."""
    original = RepeatPlan.expand

    def shifted(self, x, what="an encoder output", scales=(1,)):
        wrong = tuple((s + 1) % self.n_encoded for s in self.source)
        return original(dataclasses.replace(self, source=wrong), x, what, scales)

    monkeypatch.setattr(RepeatPlan, "expand", shifted)


def test_a_sabotaged_spread_back_fails_every_oracle(sessions, inputs, family, shifted_spread):
    session, batch = sessions[family], inputs[family, "alternating"]
    expected = _expected(family, "alternating")
    with pytest.raises(AssertionError, match="values differ"):
        assert_encoder_reuse_exact(session, batch, expected)
    with pytest.raises(AssertionError, match="values differ"):
        assert_stage1_records_exact(session, batch)
    with pytest.raises(AssertionError, match="values differ"):
        assert_pruned_generation_exact(session, batch, expected)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "llava_onevision"])
def test_one_call_of_several_inputs_reuses_within_and_across_them(sessions, inputs, image, family):
    """A Qwen encoder call of a still video and the same image twice: one temporal patch of the video and one
    image are encoded; the second image is dropped from the shrunk grid; every output equals the unmodified."""
    from vitcop_cli.media.video import load_visual

    session = sessions[family]
    video = inputs[family, "still"]
    img = session.prepare(load_visual(image), "What is shown?").inputs
    pixels = torch.cat([video["pixel_values_videos"], img["pixel_values"], img["pixel_values"]])
    grid = torch.cat([video["video_grid_thw"], img["image_grid_thw"], img["image_grid_thw"]])
    visual = session.adapter.vision_encoder
    with torch.inference_mode():
        ref = _snapshot(visual(pixels, grid_thw=grid))
        seen = {}
        with encoder_reuse.attach(session.model):
            hook = visual.register_forward_pre_hook(
                lambda _m, args, kwargs: seen.update(
                    rows=_pixels(args, kwargs), grid=compat.call_input(args, kwargs, compat.QWEN_VISION_GRID)
                ), with_kwargs=True,
            )
            try:
                got = _snapshot(visual(pixels, grid_thw=grid))
            finally:
                hook.remove()
    (t, h, w), (_, ih, iw) = video["video_grid_thw"][0].tolist(), img["image_grid_thw"][0].tolist()
    assert seen["grid"].tolist() == [[1, h, w], [1, ih, iw]]
    assert seen["rows"] == h * w + ih * iw
    assert_identical(got, ref, "encoder output")


# ---- 4. guards ------------------------------------------------------------------------------------
def test_a_call_with_precomputed_geometry_is_encoded_whole(sessions, inputs):
    """transformers accepts precomputed ``cu_seqlens`` etc.; sized for the full call, they forbid shrinking."""
    session, batch = sessions["qwen2_vl"], inputs["qwen2_vl", "still"]
    visual = session.adapter.vision_encoder
    pixels, grid = batch["pixel_values_videos"], batch["video_grid_thw"]
    cu = torch.nn.functional.pad(torch.repeat_interleave(grid[:, 1] * grid[:, 2], grid[:, 0]).cumsum(0), (1, 0))
    with torch.inference_mode():
        ref = _snapshot(visual(pixels, grid_thw=grid, cu_seqlens=cu.to(torch.int32)))
        with encoder_reuse.attach(session.model):
            rows = {}
            hook = visual.register_forward_pre_hook(
                lambda _m, args, kwargs: rows.__setitem__("n", _pixels(args, kwargs)), with_kwargs=True
            )
            try:
                got = _snapshot(visual(pixels, grid_thw=grid, cu_seqlens=cu.to(torch.int32)))
            finally:
                hook.remove()
    assert rows["n"] == pixels.shape[0]
    assert_identical(got, ref)


def test_other_tensor_inputs_and_attention_maps_are_named():
    pixels, grid = torch.zeros(4, 2), torch.tensor([[1, 2, 2]])
    slots = (compat.QWEN_VISION_PIXELS, compat.QWEN_VISION_GRID)
    assert compat.other_tensor_inputs((pixels,), {"grid_thw": grid, "return_dict": True}, slots) == []
    assert compat.other_tensor_inputs((pixels, grid), {"cu_seqlens": torch.zeros(2)}, slots) == ["cu_seqlens"]
    assert compat.other_tensor_inputs((pixels, grid, torch.zeros(1)), {}, slots) == ["argument 2"]
    assert compat.other_tensor_inputs((pixels, grid), {"output_attentions": True}, slots) == ["output_attentions"]


def test_an_output_whose_rows_do_not_follow_the_patches_raises(sessions):
    """An encoder output field that is not one row per patch / token / frame cannot be spread back: a clear
    error, never a silently wrong output."""
    with encoder_reuse.attach(sessions["qwen2_vl"].model) as reused:
        rows = torch.arange(4.0)[:, None].repeat(2, 1)  # two equal groups of 4 rows
        assert reused.begin(rows, [4, 4], None, (), {}).shrunk
        with pytest.raises(RuntimeError, match="cannot rebuild the full output.*attentions.*do not follow the groups"):
            reused.finish({"pooler_output": torch.zeros(4, 3), "attentions": torch.zeros(3, 3)})


def test_a_capture_registered_before_the_reuse_hooks_raises(sessions, inputs):
    session, batch = sessions["qwen2_vl"], inputs["qwen2_vl", "still"]
    records: list = []
    capture = session.adapter.attach_encoder_capture(records)
    reused = encoder_reuse.attach(session.model)
    try:
        with pytest.raises(RuntimeError, match="encoder reuse must be attached before the capture hooks"):
            with torch.inference_mode():
                session.model(**batch)
    finally:
        for h in capture:
            h.remove()
        reused.remove()


def test_identity_presets_attach_no_reuse(sessions, inputs):
    session, batch = sessions["qwen2_vl"], inputs["qwen2_vl", "still"]
    encoder = session.adapter.vision_encoder
    before = (dict(encoder._forward_pre_hooks), dict(encoder._forward_hooks))
    with attach(session.model, load_preset("none")) as handle:
        assert (dict(encoder._forward_pre_hooks), dict(encoder._forward_hooks)) == before
        with torch.inference_mode():
            session.model(**batch)
        assert handle.encoder_patches is None


def test_a_text_only_prefill_reports_no_encoder_patches(sessions, inputs):
    session, batch = sessions["qwen2_vl"], inputs["qwen2_vl", "still"]
    text = session.processor.tokenizer("hello there", return_tensors="pt")
    with encoder_reuse.attach(session.model) as reused, torch.inference_mode():
        session.model(**batch)
        assert reused.encoder_patches == (3, 1)
        session.model(**text)
        assert reused.encoder_patches is None
