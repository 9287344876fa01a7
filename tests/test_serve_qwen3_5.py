"""``vitcop serve`` on the hybrid family (Qwen3.5): one real server process, one chat request with an
inline clip; the response's ``vitcop`` report carries every pruning stage and the snapped layers."""

from __future__ import annotations

from test_serve import KEY, ROOT, body, data_url, launch, ready


def test_serve_answers_with_a_pruned_report_on_qwen3_5(tiny_models, tmp_path):
    server = ready(launch(tiny_models["qwen3_5"], tmp_path / "serve.log", "--frames", 4, "--max-new-tokens", 3,
                          "--api-key", KEY, "--preset", "1_9"))
    try:
        response = server.post(body(data_url(ROOT / "samples" / "shapes.mp4", "video/mp4")))
        assert response.status_code == 200, response.text
        vitcop = response.json()["vitcop"]
        p = vitcop["pruning"]
        assert vitcop["model_type"] == "qwen3_5"
        assert p["n_visual"] > p["after_stage1"] > p["after_stage2"] > p["after_stage3"] >= 1
        assert (p["shallow_layer"], p["deep_layer"]) == (4, 8)  # snapped after full-attention layers 3 and 7
    finally:
        server.stop()
