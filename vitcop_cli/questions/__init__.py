"""Labelled questions: what ``batch`` and ``profile --answers`` ask, and how an answer is marked.

    inputs.py    items of a folder or a JSONL questions file (``BatchItem``), validated per line
    scoring.py   the multiple-choice prompt, reading a letter back, ``score(item, answer)``

Pure functions of their arguments and the file system; shared by two front ends, so it is not one.
"""
