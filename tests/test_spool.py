"""The spool on real files: it loses nothing, and a failed write costs the same at any length."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tollhouse.api.classify import Kind
from tollhouse.ledger.spool import Spool, dumps
from tollhouse.ledger.store import Batch, Owned
from tollhouse.metering.meter import ObjectSeen

T0 = 1_764_000_000


class DatabaseDown(Exception):
    """What a replay's ``apply`` raises while the database is away."""


def batch(number: int, owners: bool = True) -> Batch:
    owned = [
        Owned("acme", ObjectSeen(f"thread_{number}", Kind.THREAD, None, T0, False, None, None))
    ]
    return Batch(
        owned=owned if owners else [],
        requests={("acme", "POST", "forwarded", T0 + number * 60): 1},
    )


def numbers(batches: list[Batch]) -> list[int]:
    return [next(iter(b.requests))[3] // 60 - T0 // 60 for b in batches]


def down(_batch: Batch) -> None:
    raise DatabaseDown


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    spool = Spool(tmp_path / "ledger.spool")
    yield spool
    spool.close()


def drain(spool: Spool) -> list[Batch]:
    applied: list[Batch] = []
    spool.replay(applied.append)
    return applied


def test_appends_during_a_replay_are_kept(spool: Spool) -> None:
    for number in range(3):
        spool.append(batch(number))
    applied: list[Batch] = []

    def apply_while_appending(replayed: Batch) -> None:
        applied.append(replayed)
        if len(applied) <= 3:  # the event loop goes on spooling meanwhile
            spool.append(batch(100 + len(applied)))

    spool.replay(apply_while_appending, limit=3)
    assert numbers(applied) == [0, 1, 2]
    assert spool.batches == 3
    assert numbers(drain(spool)) == [101, 102, 103]
    assert not spool.pending()
    assert (spool.bytes, spool.batches) == (0, 0)
    assert sorted(p.name for p in spool.path.parent.iterdir()) == []


def test_appends_from_another_thread_are_replayed_once_each_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "ledger.spool", fsync=lambda _fd: None, segment_bytes=4 * 1024)
    total = 2_000
    applied: list[Batch] = []
    attempts = 0

    def flaky(replayed: Batch) -> None:
        nonlocal attempts
        attempts += 1
        if attempts % 7 == 0:  # the database fails now and then
            raise DatabaseDown
        applied.append(replayed)

    appender = threading.Thread(target=lambda: [spool.append(batch(n)) for n in range(total)])
    appender.start()
    while appender.is_alive():
        with contextlib.suppress(DatabaseDown):
            spool.replay(flaky, limit=50)
    appender.join()
    while spool.pending():
        with contextlib.suppress(DatabaseDown):
            spool.replay(flaky)
    assert numbers(applied) == list(range(total))
    assert (spool.bytes, spool.batches) == (0, 0)
    spool.close()


def test_a_replay_that_fails_midway_keeps_everything_not_yet_applied(tmp_path: Path) -> None:
    path = tmp_path / "ledger.spool"
    spool = Spool(path)
    for number in range(5):
        spool.append(batch(number))
    applied: list[Batch] = []

    def fails_on_the_third(replayed: Batch) -> None:
        if len(applied) == 2:
            raise DatabaseDown
        applied.append(replayed)

    with pytest.raises(DatabaseDown):
        spool.replay(fails_on_the_third)
    assert numbers(applied) == [0, 1]
    assert spool.batches == 3
    spool.close()
    # the process stops here; the next one replays what was left, not what was done
    restarted = Spool(path)
    assert restarted.batches == 3
    assert numbers(drain(restarted)) == [2, 3, 4]
    assert not restarted.pending()
    restarted.close()


def test_a_record_cut_short_by_a_crash_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.spool"
    spool = Spool(path)
    spool.append(batch(0))
    spool.append(batch(1))
    spool.close()
    with path.open("ab") as segment:  # the process died halfway through a record
        segment.write(dumps(batch(2)).encode()[:40])
    restarted = Spool(path)
    restarted.append(batch(3))  # a new segment: nothing is glued to the torn record
    assert numbers(drain(restarted)) == [0, 1, 3]
    assert "cut short" in caplog.text
    assert not restarted.pending()
    restarted.close()


def test_an_unreadable_record_is_skipped_and_the_rest_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.spool"
    spool = Spool(path)
    spool.append(batch(0))
    spool.close()
    with path.open("ab") as segment:
        segment.write(b'{"owned": "not a list"}\n')
        segment.write((dumps(batch(1)) + "\n").encode())
    restarted = Spool(path)
    assert restarted.batches == 3
    assert numbers(drain(restarted)) == [0, 1]
    assert "unreadable record" in caplog.text
    assert (restarted.bytes, restarted.batches) == (0, 0)
    restarted.close()


def test_a_spool_file_of_the_single_file_format_is_replayed_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.spool"
    path.write_text("".join(dumps(batch(n)) + "\n" for n in range(3)))
    spool = Spool(path)
    assert spool.batches == 3
    assert numbers(drain(spool)) == [0, 1, 2]
    spool.close()
    assert list(tmp_path.iterdir()) == []
    again = Spool(path)
    assert not again.pending()
    again.close()


def test_sizes_follow_appends_and_replays(spool: Spool) -> None:
    first, second = batch(0), batch(1)
    spool.append(first)
    spool.append(second)
    size = len(dumps(first)) + len(dumps(second)) + 2
    assert (spool.bytes, spool.batches) == (size, 2)
    spool.replay(lambda _b: None, limit=1)
    assert (spool.bytes, spool.batches) == (len(dumps(second)) + 1, 1)


def test_owner_records_are_fsynced_before_append_returns(tmp_path: Path) -> None:
    synced: list[str] = []

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        os.fsync(fd)

    path = tmp_path / "ledger.spool"
    spool = Spool(path, fsync=fsync)
    spool.append(batch(0, owners=False))
    assert synced == [str(tmp_path)]  # the new segment's name; usage alone is not fsynced
    spool.append(batch(1, owners=True))
    assert synced == [str(tmp_path), str(path)]
    spool.append(batch(2, owners=False))
    assert synced == [str(tmp_path), str(path)]
    spool.close()


# -- what a failed write costs --------------------------------------------------------

_recording: list[tuple[str, tuple[Any, ...]]] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recording is not None and event in ("open", "os.listdir", "os.scandir", "os.rename"):
        _recording.append((event, args))


sys.addaudithook(_audit)  # hooks cannot be removed; this one records only inside `files`


@contextmanager
def files() -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """The files opened, listed and renamed inside the block (Python's audit events)."""
    global _recording
    _recording = []
    try:
        yield _recording
    finally:
        _recording = None


def failed_flushes(spool: Spool, count: int) -> list[tuple[str, tuple[Any, ...]]]:
    """What ``count`` flushes do while the database is down: spool the batch, try a replay."""
    with files() as touched:
        for number in range(count):
            spool.append(batch(10_000 + number))
            with pytest.raises(DatabaseDown):
                spool.replay(down)
    return touched


@pytest.mark.parametrize("length", [10, 5_000])
def test_a_failed_flush_reads_and_rewrites_nothing_already_spooled(
    tmp_path: Path, length: int
) -> None:
    path = tmp_path / "ledger.spool"
    segment_bytes = 8 * 1024
    spool = Spool(path, fsync=lambda _fd: None, segment_bytes=segment_bytes)
    for number in range(length):
        spool.append(batch(number))
    with pytest.raises(DatabaseDown):
        spool.replay(down)  # the first attempt reads the oldest batch, once
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    flushes = 100
    touched = failed_flushes(spool, flushes)
    # Only the open segment is written: no closed segment is opened, listed or
    # rewritten. Closing a full open segment (a rename) and starting the next (an
    # open, and the directory's fsync) are the only file operations, as many as the
    # new batches fill segments, whatever the spool held before.
    assert {event for event, _ in touched} <= {"open", "os.rename"}
    opened = [Path(str(args[0])) for event, args in touched if event == "open"]
    renamed = [Path(str(args[0])) for event, args in touched if event == "os.rename"]
    assert set(opened) <= {path, tmp_path}
    assert set(renamed) <= {path}
    appended = flushes * (len(dumps(batch(10_000))) + 1)
    assert len(renamed) <= appended // segment_bytes + 1
    after = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert {name for name in before if before[name] != after.get(name)} <= {path.name}
    assert spool.batches == length + flushes
    assert numbers(drain(spool)) == [*range(length), *range(10_000, 10_000 + flushes)]
    spool.close()
