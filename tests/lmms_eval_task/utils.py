"""Prompt, visual and scoring functions of the local lmms-eval task ``vitcop_local_mc`` (test data only)."""

from __future__ import annotations

import re
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
LETTERS = "ABCD"


def doc_to_visual(doc):
    return [str(SAMPLES / doc["video"])]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    options = "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, doc["options"]))
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}\n{options}{kwargs.get('post_prompt', '')}"


def answer_letter(text: str) -> str | None:
    """The first standalone option letter A-D in ``text`` (``"B."``, ``"(C)"``, ``"answer: D"``), else None."""
    match = re.search(r"\b([A-D])\b", text.strip())
    return match.group(1) if match else None


def process_results(doc, results):
    return {"accuracy": float(answer_letter(results[0]) == doc["answer"])}
