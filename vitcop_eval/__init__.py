"""vitcop as an lmms-eval model: accuracy on standard benchmarks under any preset and method.

Install with ``pip install "vitcop[eval]"`` (lmms-eval 0.7.x); the ``lmms_eval.models`` entry point
(:mod:`vitcop_eval.manifest`) makes ``python -m lmms_eval --model vitcop --model_args
pretrained=...,preset=1_9,method=vitcop,fps=1,max_frames=64 --tasks videomme`` work.

Modules: ``manifest`` (the entry point), ``model`` (the lmms-eval model class; imports lmms_eval),
``options`` (model arguments and generation settings), ``visuals`` (``doc_to_visual`` -> vitcop
``Visual``), ``report`` (the per-sample cost report). Importing this package imports nothing heavy.
"""
