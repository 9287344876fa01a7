"""vitcop: video question answering with vision-language models and ViTCoP visual-token pruning.

Library use::

    from vitcop_cli import api
    session = api.load("Qwen/Qwen2-VL-2B-Instruct")
    result = session.ask("clip.mp4", "What happens?", preset="1_3")
"""

__version__ = "0.1.0"
