"""``vitcop profile --answers FILE``: accuracy beside the speed-up, per (method, preset), on labelled questions.

Contract:

- :func:`read_answers` reads FILE in the questions-file format of ``vitcop batch`` (JSONL lines
  ``{"video", "question", "options"?, "answer", "id"?}``, ``video`` relative to FILE; parsing and
  validation are :func:`vitcop_cli.questions.inputs.read_jsonl`'s) and keeps the lines about the
  labelled lines (with ``answer``) about the profiled clip (same resolved path). Lines about other
  clips and unlabelled ones are named in notes; no labelled line about the clip is an
  :class:`InputError` (nothing to score).
- :func:`prepare_answers` prepares each question once (multiple choice: the batch prompt
  :func:`~vitcop_cli.questions.scoring.mc_prompt`), from the clip already decoded for the profile.
- :func:`add_accuracy` asks every labelled question once under every row's (method, preset) —
  the unpruned baseline included, with the profile's sampling settings — after the timed runs
  (these runs are not timed), scores each answer as ``vitcop batch`` does (multiple choice: the
  parsed letter equals the gold letter; open questions: normalised exact match) and sets the
  row's ``answers_correct`` / ``answers_total`` / ``accuracy`` and the result's
  ``answers_file`` / ``answers_questions``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..errors import InputError
from ..questions.inputs import BatchItem, printable, read_jsonl
from ..questions.scoring import score


def read_answers(path: str | Path, video: str | Path) -> tuple[list[BatchItem], list[str]]:
    """(the labelled questions of FILE about ``video``, notes for the user)."""
    inputs = read_jsonl(path)
    target = str(Path(video).expanduser().resolve())
    about = [item for item in inputs.items if item.video == target]
    others = len(inputs.items) - len(about)
    mine = [item for item in about if item.answer is not None]
    if not mine:
        why = (f"{len(about)} question{'s' if len(about) != 1 else ''} about it but none with an \"answer\""
               if about else f"{others} line{'s' if others != 1 else ''} about other clips; \"video\" names the "
               "clip, relative to the file")
        raise InputError(f"--answers {printable(path)}: no labelled question about {printable(video)} ({why})")
    notes = list(inputs.notes)
    skipped = [printable(item.id) for item in about if item.answer is None]
    if skipped:
        notes.append(f"--answers {printable(path)}: no \"answer\" to score, skipped: {', '.join(skipped[:5])}"
                     + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""))
    if others:
        notes.append(f"--answers {printable(path)}: {others} line{'s' if others != 1 else ''} about other clips "
                     "ignored")
    return mine, notes


def prepare_answers(session, visual, items: Sequence[BatchItem], *, system=None, max_pixels=None,
                    min_pixels=None) -> list[tuple[BatchItem, object]]:
    """(item, :class:`~vitcop_cli.api.Prepared`) for each labelled question, on the decoded clip."""
    return [(item, session.prepare(visual, item.prompt, system=system, max_pixels=max_pixels,
                                   min_pixels=min_pixels)) for item in items]


def add_accuracy(session, result, labelled: Sequence[tuple[BatchItem, object]], *, answers_file: str,
                 max_new_tokens: int, temperature: float = 0.0, top_p: float | None = None,
                 seed: int | None = None, on_progress: Callable[[int, int], None] | None = None):
    """Score every row of ``result`` on ``labelled``; fills the accuracy fields in place and returns it."""
    from .. import api
    from .run import BASELINE

    total = len(result.rows) * len(labelled)
    done = 0
    for row in result.rows:
        method = api.DEFAULT_METHOD if row.method == BASELINE else row.method
        correct = 0
        for item, prepared in labelled:
            if on_progress:
                on_progress(done, total)
            answer = session.generate(prepared, preset=row.preset, method=method, max_new_tokens=max_new_tokens,
                                      temperature=temperature, top_p=top_p, seed=seed).answer
            correct += bool(score(item, answer)[1])
            done += 1
        row.answers_correct, row.answers_total = correct, len(labelled)
        row.accuracy = correct / len(labelled)
    if on_progress:
        on_progress(total, total)
    result.answers_file, result.answers_questions = str(answers_file), len(labelled)
    return result
