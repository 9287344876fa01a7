"""Defaults shared by the library and the CLI (a module without heavy imports, so ``--help`` is fast)."""

DEFAULT_MODEL = "Qwen/Qwen2-VL-2B-Instruct"
DEFAULT_PRESET = "1_3"
DEFAULT_METHOD = "vitcop"
