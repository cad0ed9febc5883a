"""Big files are written to disk behind the download, not all at the end (issue 9: keep fsyncs out of the
transfer, so a slow disk does not idle the network), and nothing about that can lose a disk error."""

import errno
import hashlib
import os
import threading
import time

import pytest

import sound_bulk as sb
from fake_api import body_sha256

MIB = 1024 * 1024
# The tests below that only need a file longer than one step of the write-behind make the step 1 MiB
# (from 8), with files of 1.125 MiB (from 9): the same shape at an eighth of the bytes to send and hash.
# The first test keeps the real step.
STEP = MIB
BIG = 9 * STEP // 8


@pytest.fixture
def small_step(monkeypatch):
    monkeypatch.setattr(sb._Writer, "WRITEBACK_STEP", STEP)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_the_file_reaches_the_disk_while_it_downloads_from_another_thread(fake, client, tmp_path, monkeypatch):
    """At 8 MiB a thread other than the download's syncs what has arrived (fdatasync), then drops it from
    the page cache (posix_fadvise DONTNEED over what it synced), and the download goes on meanwhile: the
    first sync here waits (up to 10 s) until the whole body is in (the download's final hint), which it
    could not if the download waited for it.  (Waiting only for the file's last byte let a loaded
    machine finish this sync before the download's thread, just after that write, looked whether one
    was still at work: then it rightly started another.)"""
    seen = []
    real_sync = getattr(os, "fdatasync", os.fsync)
    final = ("advise", 0, 0, 4)  # the whole body is in: start writing it all (see the next test)

    def fdatasync(fd):
        deadline = time.monotonic() + 10
        while final not in seen and time.monotonic() < deadline:
            time.sleep(0.002)
        seen.append(("sync", os.fstat(fd).st_size, threading.current_thread().name))
        real_sync(fd)

    def fadvise(fd, offset, length, advice):
        seen.append(("advise", offset, length, advice))

    monkeypatch.setattr(os, "fdatasync", fdatasync, raising=False)
    monkeypatch.setattr(os, "posix_fadvise", fadvise, raising=False)
    monkeypatch.setattr(os, "POSIX_FADV_DONTNEED", 4, raising=False)
    fake.add_run(5, size=20 * MIB)
    path, size = client.download(5, str(tmp_path))
    assert size == 20 * MIB and sha(path) == body_sha256(5, 20 * MIB)
    assert seen.count(final) == 1
    behind = [call for call in seen if call != final]
    assert behind[0] == ("sync", 20 * MIB, "sound_bulk-write-behind")
    assert behind[1][:2] == ("advise", 0) and 8 * MIB <= behind[1][2] < 8 * MIB + sb.READ_CHUNK and behind[1][3] == 4
    assert len(behind) == 2  # one at a time: the 16 MiB step came while the first was still at work


def test_every_finished_file_starts_its_writeback_before_the_committer_fsyncs_it(fake, client, tmp_path,
                                                                                monkeypatch):
    """Small files too: when a transfer ends, its thread asks the kernel to start writing the whole file
    (posix_fadvise DONTNEED starts writeback without waiting, on Linux), so the disk works while other
    files download; the committer's fsync, which alone makes the file durable, comes after, in its own
    thread.  (Before: nothing reached the disk until each fsync, one after another at the end.)"""
    calls = []
    real_fsync = os.fsync

    def fadvise(fd, offset, length, advice):
        calls.append(("advise", os.fstat(fd).st_ino, offset, length, advice, threading.current_thread().name))

    def fsync(fd):
        calls.append(("fsync", os.fstat(fd).st_ino, threading.current_thread().name))
        real_fsync(fd)

    monkeypatch.setattr(os, "posix_fadvise", fadvise, raising=False)
    monkeypatch.setattr(os, "POSIX_FADV_DONTNEED", 4, raising=False)
    monkeypatch.setattr(os, "fsync", fsync)
    ids = [1, 2, 3, 4, 5, 6]
    fake.add_runs(ids, size=64 * 1024)
    outcomes = client.fetch(ids, str(tmp_path), workers=3)
    assert [o.status for o in outcomes] == ["saved"] * 6
    files = {os.stat(o.path).st_ino for o in outcomes}
    for ino in files:
        mine = [c for c in calls if c[1] == ino]
        assert [c[0] for c in mine] == ["advise", "fsync"], mine
        assert mine[0][2:5] == (0, 0, 4) and mine[0][5].startswith("sound_bulk-transfer")
        assert mine[1][2].startswith("sound_bulk-commit")


def test_a_disk_error_met_behind_the_download_fails_it(fake, client, tmp_path, monkeypatch, small_step):
    """Linux reports a write-back error once per open file: if the thread behind met it, the final fsync
    would say nothing, so the thread's error must fail the run (and no file may appear)."""
    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken, raising=False)
    fake.add_run(5, size=BIG)
    with pytest.raises(sb.DownloadError, match="cannot save run 5: Input/output error"):
        client.download(5, str(tmp_path))
    assert os.listdir(str(tmp_path)) == []


def test_without_fdatasync_or_posix_fadvise_big_files_still_download(fake, client, tmp_path, monkeypatch,
                                                                      small_step):
    """fdatasync (not on macOS or Windows) falls back to fsync; a missing or refusing posix_fadvise is only a
    hint left out."""
    fake.add_runs([5, 6], size=BIG)
    synced = []
    monkeypatch.delattr(os, "fdatasync", raising=False)
    monkeypatch.delattr(os, "posix_fadvise", raising=False)
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(threading.current_thread().name), real_fsync(fd))[1])
    path, _ = client.download(5, str(tmp_path))
    assert sha(path) == body_sha256(5, BIG)
    assert "sound_bulk-write-behind" in synced  # the fallback ran behind the download

    refused = []

    def refuse(*args):
        refused.append(args)
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fadvise", refuse, raising=False)
    monkeypatch.setattr(os, "POSIX_FADV_DONTNEED", 4, raising=False)
    path, _ = client.download(6, str(tmp_path))
    assert sha(path) == body_sha256(6, BIG)
    assert refused  # the hint was asked for, and its refusal cost nothing


@pytest.mark.parametrize("short_of", ["descriptors", "threads"])
def test_no_descriptor_or_thread_to_spare_leaves_the_writing_to_the_final_fsync(fake, client, tmp_path,
                                                                                monkeypatch, short_of, small_step):
    """A process at its limit of open files (os.dup: EMFILE) or of threads still downloads: the write-behind
    is only a head start, never a reason for a transfer to fail."""
    refused = []
    if short_of == "descriptors":
        def dup(fd):
            refused.append(fd)
            raise OSError(errno.EMFILE, "Too many open files")
        monkeypatch.setattr(os, "dup", dup)
    else:
        real_start = threading.Thread.start

        def start(self):  # the servers' and the client's other threads start as usual
            if self.name == "sound_bulk-write-behind":
                refused.append(self.name)
                raise RuntimeError("can't start new thread")
            return real_start(self)
        monkeypatch.setattr(threading.Thread, "start", start)
    fake.add_run(5, size=BIG)
    path, size = client.download(5, str(tmp_path))
    assert size == BIG and sha(path) == body_sha256(5, BIG)
    assert len(fake.seen("storage")) == 1  # one transfer, not one broken off and resumed
    assert refused  # the write-behind was tried, and its refusal cost nothing
