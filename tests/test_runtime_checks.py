"""The engine never reports an unpruned run as pruned, and refuses what it cannot serve (issue 7).

- A sabotaged hook (a decoder layer's pre-hook that does not fire, or a cache keyword the engine can
  no longer see — what transformers 5.24's ``past_key_values`` -> ``cache`` rename did) raises
  ``PruningNotApplied`` naming the transformers version and the tested range; ``ask`` exits 1 with it.
  An invisible cache fails at the first decode step of a plain ``model.generate`` (no ``report()``
  needed), while a genuine new prompt after a finished generation is still a prefill.
- Generation modes the engine cannot serve are refused before they produce output.
- Review fixes: VIC features are the un-rotated keys (Qwen2-VL); a mask-less pruned call equals the
  all-ones-mask call; ``position_ids`` are withheld from every layer in the prefill; processor extras do
  not leak into the next prompt; pruning time is measured without per-layer synchronisation; a clamped
  budget adds a ratio warning.
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import pruning
from pruning import compat
from pruning.engine import PruningHandle
from pruning.flops import paper_prefill_flops
from pruning.timing import Stopwatch
from pruning.verify import PruningNotApplied, UnsupportedGeneration
from vitcop_cli.models.devmodels import FAMILIES
from vitcop_cli.errors import RuntimeFailure
from vitcop_cli.media.video import load_visual


@pytest.fixture(scope="module")
def prepared(sessions, clip):
    return {f: s.prepare(load_visual(clip, frames=4), "What happens?") for f, s in sessions.items()}


def _generate(model, inputs, **kw):
    return model.generate(**inputs, max_new_tokens=3, do_sample=False, **kw)


# ---- the run-time check fires ------------------------------------------------------------
def _layer0_hook_silent(monkeypatch):
    real = PruningHandle._layer_hook
    monkeypatch.setattr(
        PruningHandle, "_layer_hook", lambda self, layer: (lambda *a, **k: None) if layer == 0 else real(self, layer)
    )


def _deep_stage_skipped(monkeypatch):
    from pruning.methods.vitcop import VitcopMethod

    real = VitcopMethod.at_layer
    monkeypatch.setattr(
        VitcopMethod, "at_layer", lambda self, layer, ctx: None if layer == self.deep else real(self, layer, ctx)
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "sabotage, detail",
    [(_layer0_hook_silent, "hooks of decoder layer(s) 0 did not run"), (_deep_stage_skipped, "visual tokens per stage")],
    ids=["hook_not_called", "stage_skipped"],
)
def test_a_sabotaged_hook_is_an_error(sessions, prepared, family, sabotage, detail, monkeypatch):
    session, inputs = sessions[family], prepared[family].inputs
    sabotage(monkeypatch)
    with pytest.raises(PruningNotApplied) as info, pruning.attach(session.model, "1_9") as handle:
        handle.bind(inputs)
        _generate(session.model, inputs)
    message = str(info.value)
    assert "pruning was not applied as planned" in message and detail in message
    assert f"transformers {compat.transformers_version()}" in message and compat.tested_range_text() in message


@pytest.mark.parametrize("family", FAMILIES)
def test_an_invisible_cache_keyword_is_an_error_not_a_silent_unpruned_run(sessions, prepared, family, monkeypatch):
    """Simulate a future rename of the cache keyword that the type scan does not catch either."""
    session = sessions[family]
    monkeypatch.setattr(compat, "find_cache", lambda kwargs: None)
    with pytest.raises(RuntimeFailure, match="pruning was not applied as planned"):
        session.generate(prepared[family], preset="1_9", max_new_tokens=3)


@pytest.mark.parametrize("family", FAMILIES)
def test_an_invisible_cache_fails_at_the_decode_step_of_a_plain_generate(sessions, prepared, family, monkeypatch):
    """A library user calling ``model.generate`` under ``attach`` (no ``report()``) gets the error at the
    first decode step, not an unpruned continuation: the engine knows it left a cache after the prefill."""
    session, inputs = sessions[family], prepared[family].inputs
    monkeypatch.setattr(compat, "find_cache", lambda kwargs: None)
    calls = []
    spy = session.adapter.language_model.register_forward_pre_hook(lambda *_: calls.append(1), prepend=True)
    try:
        with pytest.raises(PruningNotApplied) as info, pruning.attach(session.model, "1_9") as handle:
            handle.bind(inputs)
            _generate(session.model, inputs)
    finally:
        spy.remove()
    assert len(calls) == 2  # the prefill, then the first decode step raised
    message = str(info.value)
    assert "pruning was not applied as planned" in message and "found no KV cache" in message
    assert f"transformers {compat.transformers_version()}" in message and compat.tested_range_text() in message


def test_a_new_prompt_after_a_finished_generation_is_a_prefill(sessions, prepared, image):
    """The decode-step check does not mistake a genuine second prefill for a lost cache: a new prompt (and
    a fresh one-token prompt with zero positions) after a finished pruned generation runs normally."""
    session, video = sessions["llava_onevision"], prepared["llava_onevision"].inputs
    picture = session.prepare(load_visual(image), "What is shown?").inputs
    one = {"input_ids": video["input_ids"][:, -1:], "position_ids": torch.zeros(1, 1, dtype=torch.long)}
    with torch.inference_mode():
        ref_one = session.model(**one).logits
    with pruning.attach(session.model, "1_9") as handle:
        for inputs in (video, picture):
            handle.bind(inputs)
            _generate(session.model, inputs)
            report = handle.report(inputs["input_ids"])
            assert report.n_visual > report.after_stage3 and handle.last.decoded == 2
        with torch.inference_mode():
            got_one = session.model(**one).logits  # a one-token prompt has nothing to prune: unchanged
    torch.testing.assert_close(got_one, ref_one, atol=1e-6, rtol=0)


def test_the_cache_is_found_under_either_keyword_or_by_type(sessions, prepared):
    from transformers import DynamicCache

    cache = DynamicCache()
    assert compat.find_cache({"cache": cache}) is cache
    assert compat.find_cache({"past_key_values": cache}) is cache
    assert compat.find_cache({"kv_store_of_the_future": cache}) is cache
    assert compat.find_cache({"cache": None, "use_cache": True}) is None


def test_ask_exits_1_with_the_message_when_a_hook_is_sabotaged(tiny_models, clip, monkeypatch):
    from vitcop_cli.app import app

    monkeypatch.setattr(compat, "find_cache", lambda kwargs: None)
    result = CliRunner().invoke(
        app, ["ask", str(clip), "What happens?", "--model", str(tiny_models["qwen2_vl"]), "--preset", "1_9",
              "--frames", "4", "--max-new-tokens", "2", "--json", "--offline"],
    )
    assert result.exit_code == 1, result.output
    assert "pruning was not applied as planned" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_steps_are_checked_against_the_engines_state(sessions, prepared, family, monkeypatch):
    """A decode step whose layer-0 cache is not what the prefill left is an error."""
    session, inputs = sessions[family], prepared[family].inputs
    real = PruningHandle._check_decode
    monkeypatch.setattr(PruningHandle, "_check_decode", lambda self, past, n: real(self, past + 1, n))
    with pytest.raises(PruningNotApplied, match="decode step found"), pruning.attach(session.model, "1_3") as h:
        h.bind(inputs)
        _generate(session.model, inputs)


# ---- refused up front --------------------------------------------------------------------
@pytest.mark.parametrize(
    "how, match",
    [
        (lambda m, i: _generate(m, i, use_cache=False), r"generate\(use_cache=False\)"),
        (lambda m, i: m(**i, labels=i["input_ids"]), "labels="),
        (lambda m, i: _generate(m, i, prefill_chunk_size=16), "chunked prefill"),
    ],
    ids=["use_cache_false", "labels", "chunked_prefill"],
)
def test_unsupported_generation_modes_are_refused(sessions, prepared, how, match):
    session, inputs = sessions["qwen2_vl"], prepared["qwen2_vl"].inputs
    with pytest.raises(UnsupportedGeneration, match=match), pruning.attach(session.model, "1_9") as h:
        h.bind(inputs)
        how(session.model, inputs)


def test_continuing_a_non_empty_cache_with_a_new_prompt_is_refused(sessions, prepared):
    session, inputs = sessions["qwen2_vl"], prepared["qwen2_vl"].inputs
    with pruning.attach(session.model, "1_9") as h, torch.inference_mode():
        h.bind(inputs)
        out = session.model(**inputs, use_cache=True)
        more = {"input_ids": inputs["input_ids"][:, -4:], "cache": compat.output_cache(out)}
        with pytest.raises(UnsupportedGeneration, match="non-empty KV cache"):
            session.model(**more)


def test_dict_valued_masks_are_refused(sessions, prepared):
    session, inputs = sessions["qwen2_vl"], prepared["qwen2_vl"].inputs
    lm = session.adapter.language_model

    def as_dict(_m, args, kwargs):
        kwargs["attention_mask"] = {"full_attention": None}
        return args, kwargs

    hook = lm.register_forward_pre_hook(as_dict, with_kwargs=True, prepend=True)
    try:
        with pytest.raises(UnsupportedGeneration, match="dict-valued"), pruning.attach(session.model, "1_9"):
            with torch.inference_mode():
                session.model(**inputs)
    finally:
        hook.remove()


def test_identity_presets_refuse_nothing(sessions, prepared):
    session, inputs = sessions["qwen2_vl"], prepared["qwen2_vl"].inputs
    with pruning.attach(session.model, "none"), torch.inference_mode():
        _generate(session.model, inputs, use_cache=False)


# ---- review fixes ------------------------------------------------------------------------
def test_qwen2_vl_vic_features_are_the_keys_before_rotary(sessions, prepared):
    session, inputs = sessions["qwen2_vl"], prepared["qwen2_vl"].inputs
    block = session.model.model.visual.blocks[-1].attn
    raw = {}
    grab = block.qkv.register_forward_hook(lambda _m, _a, out: raw.__setitem__("qkv", out))
    records: list = []
    hooks = session.adapter.attach_encoder_capture(records)
    try:
        with torch.inference_mode():
            session.model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    finally:
        grab.remove()
        for h in hooks:
            h.remove()
    n = raw["qkv"].shape[0]
    keys = raw["qkv"].reshape(n, 3, block.num_heads, -1)[:, 1].reshape(n // 4, 4, -1).float().mean(1)
    torch.testing.assert_close(records[0].payload["features"], keys)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_pruned_call_without_a_mask_equals_the_call_with_an_all_ones_mask(sessions, prepared, family):
    session, inputs = sessions[family], prepared[family].inputs
    no_mask = {k: v for k, v in inputs.items() if k != "attention_mask"}
    with pruning.attach(session.model, "1_9") as h, torch.inference_mode():
        h.bind(inputs)
        with_mask = session.model(**inputs, use_cache=False).logits[0, -1]
        h.bind(inputs)
        without = session.model(**no_mask, use_cache=False).logits[0, -1]
    torch.testing.assert_close(without, with_mask, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_position_ids_are_withheld_from_every_layer_in_the_prefill(sessions, prepared, family):
    session, inputs = sessions[family], prepared[family].inputs
    seen = {}

    def spy(layer):
        def hook(_m, _args, kwargs):
            seen.setdefault(layer, kwargs.get("position_ids"))
        return hook

    with pruning.attach(session.model, "1_9") as h:
        spies = [layer.register_forward_pre_hook(spy(i), with_kwargs=True)  # after the engine's hooks
                 for i, layer in enumerate(session.adapter.decoder_layers)]
        try:
            h.bind(inputs)
            with torch.inference_mode():
                session.model(**inputs)
        finally:
            for s in spies:
                s.remove()
    assert len(seen) == len(session.adapter.decoder_layers)
    assert all(v is None for v in seen.values()), {k: v is None for k, v in seen.items()}


def test_processor_extras_do_not_survive_into_the_next_prompt(sessions, prepared):
    session, inputs = sessions["llava_onevision"], prepared["llava_onevision"].inputs
    with pruning.attach(session.model, "1_9") as h, torch.inference_mode():
        h.bind({"image_sizes": torch.tensor([[10, 10]])})
        session.model(**inputs)
        assert h._extras == {}


class _FakeEvent:
    log: list = []

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        _FakeEvent.log.append("record")
        self.t = len(_FakeEvent.log)

    def synchronize(self):
        _FakeEvent.log.append("sync")

    def elapsed_time(self, other):
        return 1000.0 * (other.t - self.t)


def test_cuda_stopwatch_records_events_and_synchronises_once(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: pytest.fail("no device-wide sync in spans"))
    _FakeEvent.log = []
    watch = Stopwatch(torch.device("cuda"))
    for _ in range(5):
        with watch.span():
            pass
    assert "sync" not in _FakeEvent.log  # spans never wait for the GPU
    assert watch.settle() == pytest.approx(5.0)
    assert _FakeEvent.log.count("sync") == 1


def test_layers_before_the_first_cut_do_no_timed_work(sessions, prepared, monkeypatch):
    """Decoder layers before the first cut open no timed span (no pruning work, no sync) and every
    layer from the first cut on opens exactly one."""
    session, inputs = sessions["qwen2_vl"], prepared["qwen2_vl"].inputs
    where = {"layer": None}
    spans = []
    real = Stopwatch.span
    monkeypatch.setattr(Stopwatch, "span", lambda self, *tag: (spans.append(where["layer"]), real(self, *tag))[1])

    def entering(i):
        def hook(*_):
            where["layer"] = i
        return hook

    layers = session.adapter.decoder_layers
    spies = [layer.register_forward_pre_hook(entering(i), prepend=True) for i, layer in enumerate(layers)]
    try:
        with pruning.attach(session.model, "1_9") as h, torch.inference_mode():
            h.bind(inputs)
            session.model(**inputs)
            first = min(h.method.prune_layers)
    finally:
        for spy in spies:
            spy.remove()
    in_layers = [layer for layer in spans if layer is not None]
    assert in_layers == list(range(first, len(layers)))


def test_a_clamped_budget_adds_a_ratio_warning(sessions, prepared):
    result = sessions["qwen2_vl"].generate(prepared["qwen2_vl"], preset="1_9", method="fastv", max_new_tokens=2)
    assert result.pruning.layer_averaged_ratio > 1 / 9 * 1.05
    assert any("layer-averaged ratio" in w for w in result.warnings), result.warnings
    ok = sessions["qwen2_vl"].generate(prepared["qwen2_vl"], preset="1_3", method="uniform", max_new_tokens=2)
    assert not any("layer-averaged ratio" in w for w in ok.warnings)


def test_ask_json_prints_its_warnings_on_stderr_too(tiny_models, clip):
    """``ask --json``: stdout is exactly the JSON object (warnings inside), and each warning is also one
    ``warning: ...`` line on stderr (here the clamped-budget ratio warning of fastv at 1_9)."""
    import json

    from vitcop_cli.app import app

    result = CliRunner().invoke(
        app, ["ask", str(clip), "What happens?", "--model", str(tiny_models["qwen2_vl"]), "--preset", "1_9",
              "--method", "fastv", "--frames", "4", "--max-new-tokens", "2", "--json", "--offline"],
        env={"NO_COLOR": "1"},
    )
    assert result.exit_code == 0, (result.output, result.exception)
    warnings = json.loads(result.stdout)["warnings"]  # the whole of stdout is one JSON object
    assert any("layer-averaged ratio" in w for w in warnings), warnings
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert lines == [f"warning: {' '.join(w.split())}" for w in warnings]


def test_the_report_has_the_papers_flops_convention(sessions, prepared):
    result = sessions["qwen2_vl"].generate(prepared["qwen2_vl"], preset="1_9", max_new_tokens=2)
    p = result.pruning
    cfg = sessions["qwen2_vl"].model.config.get_text_config()
    expected = paper_prefill_flops(p.kv_cache_lengths, hidden=cfg.hidden_size, intermediate=cfg.intermediate_size)
    assert p.prefill_flops_paper == expected
    assert p.prefill_flops_paper < p.prefill_flops_paper_unpruned


def test_paper_flops_formula_by_hand():
    # one layer, n = 2, d = 3, m = 5: 4*2*9 + 2*4*3 + 3*2*3*5 = 72 + 24 + 90
    assert paper_prefill_flops([2], hidden=3, intermediate=5) == 186.0
    assert paper_prefill_flops([2, 0], hidden=3, intermediate=5) == 186.0


def test_the_engine_spells_no_transformers_keyword_itself():
    """Every forward keyword the engine reads or writes comes from :mod:`pruning.compat` (one place to
    follow a rename): no string literal in engine.py is one of compat's keyword names."""
    import ast
    from pathlib import Path

    import pruning.engine

    names = {compat.ROPE, compat.MASK, compat.POSITION_IDS, compat.HIDDEN, compat.INPUT_IDS, compat.INPUTS_EMBEDS,
             compat.USE_CACHE, compat.LABELS, compat.VISUAL_POS_MASKS, compat.DEEPSTACK_EMBEDS, *compat.CACHE_KWARGS}
    tree = ast.parse(Path(pruning.engine.__file__).read_text())
    literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert not literals & names, sorted(literals & names)


def test_the_declared_transformers_range_is_the_tested_range():
    """pyproject.toml declares exactly compat.TESTED_RANGE: >= its floor, < the next untested minor."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    floor, ceiling = re.search(r'"transformers>=(\d+\.\d+),<(\d+\.\d+)"', text).groups()
    (a, b), (c, d) = compat.TESTED_RANGE
    assert floor == f"{a}.{b}" and ceiling == f"{c}.{d + 1}"
    assert compat.in_tested_range() and compat.in_tested_range(f"{a}.{b}.0") and not compat.in_tested_range(ceiling)
