"""Entry point of the ``lmms_eval.models`` group: registers the lmms-eval model ``vitcop``.

lmms-eval 0.7.x loads every entry point of that group when ``lmms_eval.models`` is imported and
accepts a ``ModelManifest``, an iterable of them, or a callable returning either. :func:`manifest`
is that callable; it names the model class by import path, so neither torch nor vitcop's library is
imported until lmms-eval actually asks for ``--model vitcop``.
"""

from __future__ import annotations

MODEL_ID = "vitcop"
CLASS_PATH = "vitcop_eval.model.VitcopLMM"


def manifest():
    """lmms-eval's ``ModelManifest`` for ``--model vitcop`` (a "simple" model: visuals via ``doc_to_visual``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=CLASS_PATH)
