"""``vitcop serve --prefix-cache DIR``: the disk tier under the server's memory LRU of pruned prefixes.

Servers run in this process, one after the other on one folder, around one loaded Session (the fixtures and
helpers of ``test_serve_prefix``): closing a server joins its worker, so its last save is on disk before the next
server starts (the save runs after the answer is handed back).

- A second server's first request about a clip (video, and image: its decoded image is stored) is a disk hit
  (``server.prefix_cache == "hit_disk"``, ``prefix.source == "disk"``, nothing decoded) answering exactly what a
  fresh ``Session`` answers; the prefix then sits in its memory LRU (the next request is a memory ``hit``).
- A damaged file is a miss: the request is answered (as fresh), one warning in the log, an error counted, and the
  prefix it built is written again. With the memory tier off the folder still serves.
- Without a folder no store is ever built or written; ``--prefix-cache`` naming a file or a size of 0 fails before
  the model loads.
"""

from __future__ import annotations

import logging

import pytest
from test_serve import lively_model  # noqa: F401  (module fixture)
from test_serve_prefix import (  # noqa: F401  (module fixtures: the loaded session, the media root)
    CLIP,
    IMAGE,
    fresh,
    metric,
    report,
    root,
    serving,
    session,
    video,
)

from vitcop_cli.session.prefix_store import PrefixStore

SYSTEM = "Disk tier."


def files(folder) -> list:
    return sorted(p for p in folder.iterdir() if p.suffix == ".safetensors")


def final(served) -> dict:
    """The metrics of a server that has stopped (its worker joined: every save done)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = served.app.state.metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _no_decoding(*_args, **_kwargs):
    raise AssertionError("a disk hit decoded its media")


def test_a_second_server_on_the_same_folder_answers_from_disk(session, root, tmp_path):  # noqa: F811
    folder = tmp_path / "prefixes"
    clip = video(str(root / "clip.mp4"), system=SYSTEM)
    image = video(str(root / "image.png"), "What is in the picture?", kind="image", system=SYSTEM)
    with serving(session, root, prefix_cache_bytes=2**20, prefix_cache_dir=folder) as first:
        built = [first.ask(clip), first.ask(image)]
        assert [report(o)["server"]["prefix_cache"] for o in built] == ["absent", "absent"]
    assert len(files(folder)) == 2 and metric(final(first), "vitcop_prefix_cache_disk_saves_total") == 2

    with pytest.MonkeyPatch.context() as patch, \
            serving(session, root, prefix_cache_bytes=2**20, prefix_cache_dir=folder) as second:
        patch.setattr(session, "load_visual", _no_decoding)  # a disk hit decodes nothing
        outs = [second.ask(clip), second.ask(image), second.ask(clip)]
    m = final(second)
    assert [report(o)["server"]["prefix_cache"] for o in outs] == ["hit_disk", "hit_disk", "hit"]
    assert [report(o)["prefix"]["source"] for o in outs] == ["disk", "disk", "memory"]
    assert all(report(o)["prefix"]["reused"] is True and report(o)["prefix"]["saved_s"] > 0 for o in outs)
    assert metric(m, "vitcop_prefix_cache_disk_hits_total") == 2
    assert metric(m, "vitcop_prefix_cache_hits_total") == 1 and metric(m, "vitcop_prefix_cache_entries") == 2
    assert metric(m, "vitcop_prefix_cache_misses_total", reason="absent") == 0
    assert metric(m, "vitcop_prefix_cache_disk_saves_total") == 0  # nothing new to write
    assert report(outs[0])["visual"]["path"] == str(root / "clip.mp4")  # named as this request names it

    ref_clip, ref_image = fresh(session, CLIP, clip), fresh(session, IMAGE, image, kind="image")
    assert report(outs[0])["generated_ids"] == report(outs[2])["generated_ids"] == ref_clip.generated_ids
    assert report(built[0])["generated_ids"] == ref_clip.generated_ids
    assert report(outs[1])["generated_ids"] == ref_image.generated_ids
    assert report(outs[0])["tokens"] == ref_clip.to_dict()["tokens"]
    assert ref_clip.generated_ids != ref_image.generated_ids  # the comparison can fail


def test_a_damaged_file_is_a_miss_and_the_request_succeeds(session, root, tmp_path, caplog):  # noqa: F811
    folder = tmp_path / "prefixes"
    messages = video(str(root / "clip.mp4"), system="Damaged file.")
    with serving(session, root, prefix_cache_bytes=0, prefix_cache_dir=folder) as first:  # disk tier only
        assert report(first.ask(messages))["server"]["prefix_cache"] == "absent"
    assert metric(final(first), "vitcop_prefix_cache_disk_saves_total") == 1
    (path,) = files(folder)
    path.write_bytes(b"not a safetensors file" * 10)

    with caplog.at_level(logging.WARNING, logger="vitcop.serve"), \
            serving(session, root, prefix_cache_bytes=0, prefix_cache_dir=folder) as second:
        out = second.ask(messages)
    m = final(second)
    assert report(out)["server"]["prefix_cache"] == "absent" and report(out)["prefix"]["source"] == "built"
    assert report(out)["generated_ids"] == fresh(session, CLIP, messages).generated_ids
    warned = [r.getMessage() for r in caplog.records if r.name == "vitcop.serve" and "prefix cache" in r.getMessage()]
    assert len(warned) == 1 and "was not used" in warned[0], warned
    assert metric(m, "vitcop_prefix_cache_disk_errors_total") == 1
    assert metric(m, "vitcop_prefix_cache_disk_hits_total") == 0
    assert metric(m, "vitcop_prefix_cache_disk_saves_total") == 1
    # the prefix this answer built replaced the damaged file: a good file again
    assert PrefixStore(folder).load(path.stem, session) is not None


def test_without_a_folder_nothing_is_built_or_written(session, root, monkeypatch):  # noqa: F811
    def refuse(*_args, **_kwargs):
        raise AssertionError("a PrefixStore was used without --prefix-cache")

    monkeypatch.setattr(PrefixStore, "__init__", refuse)
    monkeypatch.setattr(PrefixStore, "save", refuse)
    with serving(session, root, prefix_cache_bytes=2**20) as served:
        messages = video(str(root / "clip.mp4"), system="No folder.")
        outs = [served.ask(messages), served.ask(messages)]
        assert served.app.state.worker.reuse.store is None
        m = served.metrics()
    assert [report(o)["server"]["prefix_cache"] for o in outs] == ["absent", "hit"]
    assert metric(m, "vitcop_prefix_cache_disk_saves_total") == metric(m, "vitcop_prefix_cache_disk_hits_total") == 0


@pytest.mark.parametrize("args, named", [(["--prefix-cache-gb", "0"], "--prefix-cache-gb"),
                                         (["--prefix-cache", "FILE"], "not a folder")])
def test_a_bad_folder_or_size_fails_before_loading(args, named, tmp_path):
    from typer.testing import CliRunner

    from vitcop_cli.app import app

    file = tmp_path / "file"
    file.write_text("x")
    args = [str(file) if a == "FILE" else a for a in args]
    result = CliRunner().invoke(app, ["serve", "--model", "/no/such/model", "--offline", *args],
                                env={"NO_COLOR": "1", "COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr


def test_the_start_up_line_names_the_folder(tmp_path):
    from vitcop_cli.serve.cli import _cache_phrase

    assert _cache_phrase(2**30, tmp_path, 2**31) == f"prefix cache 1,024 MiB + disk {tmp_path} (2 GiB)"
    assert _cache_phrase(0, tmp_path, 2**29) == f"prefix cache: no memory tier + disk {tmp_path} (0.5 GiB)"
    assert _cache_phrase(0) == "prefix cache off"


def test_a_prefix_kept_by_ask_is_found_by_the_server(session, root, tmp_path):  # noqa: F811
    """One folder serves every front end: the disk tier's key is ``prefix_store.prefix_key`` (the file's bytes and
    the options), so a prefix ``Session.open(..., prefix_store=...)`` — what ``vitcop ask --prefix-cache`` runs —
    kept is a disk hit for the server's first request about the same clip and options."""
    folder = tmp_path / "shared"
    opened = session.open(root / "clip.mp4", frames=4, system=SYSTEM, prefix_store=PrefixStore(folder))  # decord
    assert opened.prefix is not None and len(files(folder)) == 1
    clip = video(str(root / "clip.mp4"), system=SYSTEM)
    with pytest.MonkeyPatch.context() as patch, serving(session, root, prefix_cache_bytes=2**20,
                                                        prefix_cache_dir=folder) as served:
        patch.setattr(session, "load_visual", _no_decoding)
        out = served.ask(clip)
    assert report(out)["server"]["prefix_cache"] == "hit_disk" and report(out)["prefix"]["source"] == "disk"
    assert report(out)["generated_ids"] == fresh(session, CLIP, clip).generated_ids
