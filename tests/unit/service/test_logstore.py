"""The job log store: idempotent appends by line index, gaps refused, O(1) line ranges, repair."""

from __future__ import annotations

import json
import threading

import pytest

from dutlab.service.logstore import JobFolder, LogGap


def rec(i: int) -> str:
    return json.dumps({"dt": "2026-01-01T00:00:00+00:00", "lvl": "target", "msg": f"line {i}"})


def test_resent_batches_never_duplicate(tmp_path):
    folder = JobFolder(tmp_path, 7)
    assert folder.append(0, [rec(i) for i in range(5)])[0] == 5
    count, added = folder.append(3, [rec(i) for i in range(3, 8)])  # overlaps 3,4
    assert count == 8 and [n for n, _ in added] == [5, 6, 7]
    assert folder.append(0, [rec(i) for i in range(8)]) == (8, [])
    lines = folder.read_lines().splitlines()
    assert lines == ["- " + rec(i) for i in range(8)]


def test_gap_is_refused_with_resume_point(tmp_path):
    folder = JobFolder(tmp_path, 1)
    folder.append(0, [rec(0)])
    with pytest.raises(LogGap) as gap:
        folder.append(5, [rec(5)])
    assert gap.value.line_count == 1


def test_line_ranges(tmp_path):
    folder = JobFolder(tmp_path, 2)
    folder.append(0, [rec(i) for i in range(100)])
    assert folder.read_lines(10, 12).splitlines() == ["- " + rec(10), "- " + rec(11)]
    assert folder.read_lines(98).splitlines() == ["- " + rec(98), "- " + rec(99)]
    assert folder.read_lines(100) == "" and folder.read_lines(5, 5) == ""
    assert folder.read_lines(99, 1000).splitlines() == ["- " + rec(99)]


def test_repairs_a_torn_append(tmp_path):
    folder = JobFolder(tmp_path, 3)
    folder.append(0, [rec(0), rec(1)])
    with open(folder.file("output.yaml"), "ab") as fh:  # a crash after the log, before the index
        fh.write(b"- " + rec(2).encode() + b"\n- half")
    assert folder.append(2, [rec(2), rec(3)])[0] == 4
    assert folder.read_lines().splitlines() == ["- " + rec(i) for i in range(4)]


def test_concurrent_appenders_agree(tmp_path):
    folder = JobFolder(tmp_path, 4)
    batch = [rec(i) for i in range(200)]

    def send(start: int) -> None:
        for i in range(start, 200, 20):
            try:
                folder.append(i, batch[i:i + 20])
            except LogGap:
                pass

    threads = [threading.Thread(target=send, args=(0,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert folder.read_lines().splitlines() == ["- " + r for r in batch]
