"""Random-weight checkpoint builders, one file per family: ``build(size) -> (model, processor)``.

``base.py`` holds what they share (LLM shapes, special tokens, chat templates, the tokenizer,
config parts); every family file depends on it and on no other family. The registry that picks a
builder by name is :mod:`vitcop_cli.models.devmodels`.
"""
