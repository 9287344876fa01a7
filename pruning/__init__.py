"""vitcop's pruning package (docs VITCOP.md).

Pure tensor math, no transformers import: ``budget`` (stage budgets), ``saliency``
(key norms, [CLS] / pseudo-CLS attention), ``vic`` (density-peak clustering),
``select`` (Stage I/II/III selection and merging), ``flops`` (prefill FLOPs),
``presets`` (YAML presets). Model plumbing lives in ``attach`` and ``adapters``.

This file imports nothing on purpose, so importing a pure submodule never pulls in
model code.
"""


def attach(model, preset, method: str = "vitcop", *, encoder_reuse: bool = True):
    """Attach pruning to one loaded model instance; returns a removable handle (see ``pruning.engine``).

    ``preset`` is a :class:`pruning.presets.Preset` or a built-in name / YAML path; ``method`` one of
    ``pruning.methods.method_names()`` (default ``vitcop``; baselines take the preset's ratio);
    ``encoder_reuse``: encode each distinct temporal patch once (``pruning.encoder_reuse``; on by default).
    """
    from .engine import attach as _attach
    from .presets import Preset, load_preset

    preset = preset if isinstance(preset, Preset) else load_preset(preset)
    return _attach(model, preset, method, encoder_reuse=encoder_reuse)
