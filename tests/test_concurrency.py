"""Many array tasks writing into one derivatives folder at once never corrupt or lose a file.

On a cluster every participant task of ``mcpvs slurm`` writes the shared top-level files
(dataset_description.json, desc-regions_dseg.tsv) into the same folder at the same moment, and
readers (the group job, a user's ``cat``) may look at any time. These tests start 16 real
processes released together by a barrier, with readers polling throughout, and check that no
reader ever saw a partial file, that every final file is complete and valid, and that no
temporary file is left behind.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pandas as pd

from mcpvs_bidsapp.bids import dataset_description
from mcpvs_bidsapp.outputs.spec import REGION_TABLE
from mcpvs_bidsapp.outputs.write import write_if_absent_json, write_json, write_region_table

N_WRITERS = 16
N_ROUNDS = 10
# big enough that a non-atomic write would be caught half-written by the readers
PAYLOAD_ITEMS = 20000


def _writer(out: str, rank: int, barrier) -> None:
    out_dir = Path(out)
    barrier.wait()
    for round_ in range(N_ROUNDS):
        write_if_absent_json(out_dir / "dataset_description.json", dataset_description())
        write_region_table(out_dir)
        # a shared file rewritten by every task with different content (last one wins)
        write_json(
            out_dir / "shared.json",
            {"rank": rank, "round": round_, "values": [rank] * PAYLOAD_ITEMS, "end": True},
        )


def _reader(out: str, stop, seen, bad) -> None:
    out_dir = Path(out)
    n = 0
    while not stop.is_set():
        for name in ("dataset_description.json", "shared.json", "desc-regions_dseg.tsv"):
            path = out_dir / name
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue  # not written yet: allowed before the first rename only
            n += 1
            try:
                if name.endswith(".json"):
                    data = json.loads(text)
                    if name == "shared.json":
                        assert data["end"] is True
                        assert data["values"] == [data["rank"]] * PAYLOAD_ITEMS
                else:
                    assert text.splitlines()[0] == "index\tname"
                    assert len(text.splitlines()) == len(REGION_TABLE) + 1
            except (ValueError, AssertionError, KeyError, IndexError) as err:
                bad.put(f"{name}: {type(err).__name__} after {len(text)} chars")
    seen.put(n)


def test_sixteen_processes_write_shared_files_at_once(tmp_path):
    ctx = mp.get_context("fork")
    out = tmp_path / "derivatives"
    out.mkdir()
    barrier = ctx.Barrier(N_WRITERS)
    stop, seen, bad = ctx.Event(), ctx.Queue(), ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(str(out), stop, seen, bad)) for _ in range(2)]
    writers = [
        ctx.Process(target=_writer, args=(str(out), rank, barrier)) for rank in range(N_WRITERS)
    ]
    for proc in readers + writers:
        proc.start()
    for proc in writers:
        proc.join(timeout=120)
    stop.set()
    for proc in readers:
        proc.join(timeout=30)
    assert [p.exitcode for p in writers] == [0] * N_WRITERS
    assert [p.exitcode for p in readers] == [0, 0]
    reads = sum(seen.get(timeout=5) for _ in readers)
    problems = []
    while not bad.empty():
        problems.append(bad.get())
    assert problems == [], problems[:5]
    assert reads > 0  # the readers did look while the writers wrote

    assert json.loads((out / "dataset_description.json").read_text()) == json.loads(
        json.dumps(dataset_description())
    )
    table = pd.read_csv(out / "desc-regions_dseg.tsv", sep="\t")
    assert list(table.itertuples(index=False, name=None)) == [tuple(r) for r in REGION_TABLE]
    final = json.loads((out / "shared.json").read_text())
    assert final["round"] == N_ROUNDS - 1 and final["values"] == [final["rank"]] * PAYLOAD_ITEMS
    # every temporary file was renamed or removed; files are readable by the group job
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset_description.json",
        "desc-regions_dseg.tsv",
        "shared.json",
    ]
    for path in out.iterdir():
        assert os.stat(path).st_mode & 0o777 == 0o644


def test_naive_writes_are_caught_by_the_readers(tmp_path):
    """The readers above do detect torn files: a plain open/write is seen half-written."""
    ctx = mp.get_context("fork")
    out = tmp_path / "derivatives"
    out.mkdir()
    stop, seen, bad = ctx.Event(), ctx.Queue(), ctx.Queue()
    reader = ctx.Process(target=_reader, args=(str(out), stop, seen, bad))
    reader.start()
    payload = {"rank": 0, "round": 0, "values": [0] * PAYLOAD_ITEMS, "end": True}
    for _ in range(300):
        with open(out / "shared.json", "w") as fh:  # not atomic: truncate, then write
            for chunk in json.JSONEncoder().iterencode(payload):
                fh.write(chunk)
        if not bad.empty():
            break
    stop.set()
    reader.join(timeout=30)
    assert not bad.empty()
