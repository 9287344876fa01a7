"""``vitcop chat``: an interactive session about one clip, decoded and pruned once, asked many questions.

Parts, each with its own contract: :mod:`.cli` (the typer command: options, checks, load, open, exit
status), :mod:`.source` (the clip's media and opening options: open it under a preset, or answer a
conversation afresh from its pixels), :mod:`.conversation` (the history -> Hugging Face chat messages),
:mod:`.loop` (reading lines, the ``/`` commands, answering, rendering), :mod:`.cancel` (Ctrl-C during an
answer cancels that answer). Importing this package is cheap (no torch).
"""
