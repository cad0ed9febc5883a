"""Downloads: verified bytes, atomic names, resume, refresh, faults, disk errors, memory."""

import hashlib
import io
import os
import subprocess
import sys
import textwrap
import threading

import pytest
from hypothesis import given, strategies as st

import sound_bulk as sb
from conftest import CHILD_MODULE_DIR, property_scenario
from fake_api import API_KEY, body_bytes, body_sha256


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def leftovers(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".part"))


def storage_never_saw_the_key(fake):
    gets = fake.seen("storage")
    assert gets, "no download happened"
    return all("x-api-key" not in r["headers"] for r in gets)


def test_download_is_verified_and_named_atomically(fake, client, tmp_path):
    fake.add_run(101, size=1_000_003)
    path, size = client.download(101, str(tmp_path))
    assert path == str(tmp_path / "101.wav") and size == 1_000_003
    assert sha(path) == body_sha256(101, 1_000_003)
    assert storage_never_saw_the_key(fake)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind,ext", [("flac", ".flac"), ("ogg", ".ogg"), ("mp3", ".mp3")])
def test_other_audio_formats_keep_their_extension(fake, client, tmp_path, kind, ext):
    fake.add_run(7, kind=kind, size=5000)
    path, _ = client.download(7, str(tmp_path))
    assert path.endswith("7" + ext) and sha(path) == body_sha256(7, 5000, kind)


def test_wav_url_suffix_is_not_trusted(fake, client, tmp_path):
    fake.add_run(8, kind="flac", size=100)
    url = fake.presign(fake.runs[8]).replace(".flac?", ".wav?")
    path, _ = client.download(8, str(tmp_path), url=url)
    assert path.endswith("8.flac")


@pytest.mark.parametrize("fault", ["html200"])
def test_html_page_with_status_200_is_an_error_and_nothing_is_kept(fake, client, tmp_path, fault):
    fake.add_run(9)
    fake.storage_faults[9] = [fault]
    with pytest.raises(sb.DownloadError, match="HTML page, not audio"):
        client.download(9, str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind", ["html", "xml"])
def test_error_documents_are_not_saved(fake, client, tmp_path, kind):
    fake.add_run(9, kind=kind, size=300)
    with pytest.raises(sb.DownloadError, match="not audio"):
        client.download(9, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_truncated_body_resumes_with_range(fake, client, tmp_path, sleeps):
    size = 3 * 1024 * 1024 + 17
    fake.add_run(5, size=size)
    fake.storage_faults[5] = ["truncate"]
    path, _ = client.download(5, str(tmp_path))
    assert sha(path) == body_sha256(5, size)
    first, second = fake.seen("storage")
    assert "range" not in first["headers"]
    assert second["headers"]["range"] == "bytes=%d-" % (size // 2)
    assert second["headers"]["if-range"].startswith('"')
    assert len(sleeps.waits) == 1
    assert leftovers(tmp_path) == []


def test_range_less_storage_starts_over(fake, client, tmp_path):
    size = 2 * 1024 * 1024
    fake.range_support = False
    fake.add_run(5, size=size)
    fake.storage_faults[5] = ["truncate"]
    path, _ = client.download(5, str(tmp_path))
    assert sha(path) == body_sha256(5, size)
    assert len(fake.seen("storage")) == 2


def test_storage_without_etag_starts_over(fake, client, tmp_path):
    # Nothing names the version of the object, so appending could splice two of them.
    size = 1024 * 1024
    fake.send_etag = False
    fake.add_run(5, size=size)
    fake.storage_faults[5] = ["truncate"]
    path, _ = client.download(5, str(tmp_path))
    assert sha(path) == body_sha256(5, size)
    assert "range" not in fake.seen("storage")[1]["headers"]


@pytest.mark.parametrize("faults", [["reset"], ["503"], ["503", "reset", "truncate"]])
def test_resets_and_5xx_are_retried(fake, client, tmp_path, sleeps, faults):
    fake.add_run(5, size=200_000)
    fake.storage_faults[5] = list(faults)
    path, _ = client.download(5, str(tmp_path))
    assert sha(path) == body_sha256(5, 200_000)
    assert len(sleeps.waits) == len(faults)


def test_retries_give_up_and_leave_nothing(fake, client, tmp_path):
    fake.add_run(5, size=200_000)
    fake.storage_faults[5] = ["503"] * 10
    with pytest.raises(sb.DownloadError, match="after 5 tries"):
        client.download(5, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_expired_url_is_refreshed_through_the_bulk_endpoint(fake, client, tmp_path):
    fake.add_run(5, size=10_000)
    fake.expire_next_urls(5, 2)
    path, _ = client.download(5, str(tmp_path))
    assert sha(path) == body_sha256(5, 10_000)
    assert len(fake.seen("api", "POST")) == 3  # the first resolve and two refreshes
    assert storage_never_saw_the_key(fake)


def test_refreshes_are_bounded(fake, client, tmp_path):
    fake.add_run(5)
    fake.expire_next_urls(5, 10)
    with pytest.raises(sb.DownloadError, match="expired"):
        client.download(5, str(tmp_path))
    assert len(fake.seen("api", "POST")) == 1 + sb.URL_REFRESHES
    assert os.listdir(tmp_path) == []


def _slow_body(folder):
    """The test below, up to its checks (an early scenario: conftest, with its own fake; it mostly waits
    for the timeout)."""
    from conftest import Sleeps
    from fake_api import FakeCamb
    sleeps = Sleeps()
    with FakeCamb() as fake:
        client = sb.Client(API_KEY, base_url=fake.base_url, sleep=sleeps, clock=sleeps.clock, rand=lambda: 0.5,
                           timeout=0.3)
        try:
            fake.slow_delay = 1.0
            fake.add_run(5, size=300_000)
            fake.storage_faults[5] = ["slow"]
            path, _ = client.download(5, folder)
        finally:
            client.close()
        return sha(path), len(fake.seen("storage"))


@pytest.mark.early(scenario=_slow_body)
def test_slow_body_times_out_and_is_retried(early):
    """Timing assumed: a read timeout of 0.3 s fires during the fake's 1 s stall, and no other read of
    this 300 kB download waits as long (it would be retried too, and the count below would be off)."""
    checksum, storage_requests = early()
    assert checksum == body_sha256(5, 300_000)
    assert storage_requests == 2


def test_full_disk_is_a_clear_error_and_leaves_nothing(fake, client, tmp_path, monkeypatch):
    fake.add_run(5, size=1_000_000)
    real_write = sb._Writer.write

    def write(self, data):
        if self.size > 300_000:
            raise OSError(28, "No space left on device")
        real_write(self, data)

    monkeypatch.setattr(sb._Writer, "write", write)
    with pytest.raises(sb.DownloadError, match="No space left on device"):
        client.download(5, str(tmp_path))
    assert os.listdir(tmp_path) == []
    assert len(fake.seen("storage")) == 1  # a full disk is not a network fault: no retry


def test_unwritable_folder_is_a_clear_error(fake, client, tmp_path):
    fake.add_run(5)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(sb.DownloadError, match="cannot (write in|create)"):
        client.download(5, str(blocker))


def test_an_existing_file_is_never_replaced(fake, client, tmp_path):
    fake.add_run(5, size=5000)
    (tmp_path / "5.wav").write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        client.download(5, str(tmp_path))
    assert (tmp_path / "5.wav").read_bytes() == b"mine"
    assert fake.requests == []


def test_a_file_that_appears_meanwhile_wins(fake, client, tmp_path):
    fake.add_run(5, size=5000)
    url = client.get_results([5])[5].url
    download = sb._Download(client, 5, str(tmp_path), url, None, None, threading.Event())
    real = download._transfer

    def transfer(writer):
        result = real(writer)
        (tmp_path / "5.wav").write_bytes(b"someone else's")
        return result

    download._transfer = transfer
    with pytest.raises(FileExistsError):
        download.run()
    assert (tmp_path / "5.wav").read_bytes() == b"someone else's"
    assert leftovers(tmp_path) == []


def test_files_get_the_usual_permissions(fake, client, tmp_path):
    fake.add_run(5, size=100)
    old = os.umask(0o022)
    try:
        path, _ = client.download(5, str(tmp_path))
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644


class ChoppyAnswer:
    """An answer whose reads return pieces of the given sizes."""

    def __init__(self, data, sizes):
        self.data, self.sizes, self.pos = data, list(sizes), 0

    def read1(self, limit):
        n = self.sizes.pop(0) if self.sizes else limit
        n = max(1, min(n, limit))
        piece = self.data[self.pos:self.pos + n]
        self.pos += len(piece)
        return piece

    def readinto1(self, view):
        piece = self.read1(len(view))
        view[:len(piece)] = piece
        return len(piece)


class NoClient:
    """What _Download._stream needs of a Client: a clock (standing still)."""
    _clock = staticmethod(lambda: 0.0)


# (427: the smallest body the fake makes that is whole audio in every kind: an ID3 tag and one MP3 frame)
@given(st.integers(min_value=427, max_value=600_000),
       st.lists(st.integers(min_value=1, max_value=300_000), max_size=40),
       st.sampled_from(["wav", "flac", "ogg", "mp3"]))
def any_chunk_boundaries_give_the_same_file(size, sizes, kind):
    # Written to memory: what reaches the file is what _stream hands the writer (no fsync per example).
    data = b"".join(body_bytes(3, size, kind))
    writer = sb._Writer(io.BytesIO())
    seen = []
    download = sb._Download(NoClient, 3, ".", "http://x/", seen.append, None, threading.Event())
    ext = download._stream(ChoppyAnswer(data, sizes), writer, None, len(data))
    assert writer.file.getvalue() == data
    assert sum(seen) == len(data)
    assert ext == {"wav": ".wav", "flac": ".flac", "ogg": ".ogg", "mp3": ".mp3"}[kind]


@pytest.mark.early(scenario=property_scenario(any_chunk_boundaries_give_the_same_file))
def test_any_chunk_boundaries_give_the_same_file(early):
    """The property above, run as an early scenario (conftest)."""
    early()  # fails the test with the property's failure, if any


def test_short_body_against_content_length_is_caught():
    data = b"".join(body_bytes(3, 1000))
    writer = sb._Writer(io.BytesIO())
    download = sb._Download(NoClient, 3, ".", "http://x/", None, None, threading.Event())
    with pytest.raises(sb._Retry, match="truncated: got 1000 of 2000"):
        download._stream(ChoppyAnswer(data, [10, 500]), writer, None, 2000)


def _peak_memory_of_two_downloads(folder):
    """The test below's child and its fake (an early scenario: conftest): the child's exit status, stdout
    and stderr, and the size of the big file on disk."""
    from fake_api import FakeCamb
    small, big = 1024 * 1024, 16 * 1024 * 1024
    with FakeCamb() as fake:
        fake.add_run(76, size=small)
        fake.add_run(77, size=big)
        child = textwrap.dedent("""
            import resource, sys
            sys.path.insert(0, %r)
            import sound_bulk

            def peak():
                try:  # VmHWM belongs to this address space alone; ru_maxrss can carry the parent's peak
                    with open("/proc/self/status") as f:  # across fork+exec (subprocess on Python < 3.10)
                        return [int(l.split()[1]) for l in f if l.startswith("VmHWM:")][0]
                except (OSError, IndexError):
                    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

            c = sound_bulk.Client(%r, base_url=%r)
            c.download(76, %r)
            before = peak()
            path, size = c.download(77, %r)
            print(size, before, peak())
        """) % (CHILD_MODULE_DIR, API_KEY, fake.base_url, folder, folder)
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", child], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True)
        out, err = proc.communicate(timeout=120)
    big_path = os.path.join(folder, "77.wav")
    return proc.returncode, out, err, os.path.getsize(big_path) if os.path.exists(big_path) else None


@pytest.mark.early(scenario=_peak_memory_of_two_downloads)
def test_memory_does_not_grow_with_file_size(early):
    """Constant memory: after a 1 MiB download, a 16 MiB one raises the peak RSS of the same process by less
    than 6 MiB (a body held whole, or the 8 MiB write-back span held, would show), and the peak stays
    under 64 MiB.  Measured as the child's own high-water mark (VmHWM) where /proc has it (a child: this
    process's peak is not its own); sizes kept small so the test takes well under a second."""
    big = 16 * 1024 * 1024
    code, out, err, on_disk = early()
    assert code == 0, err
    got, before_kib, after_kib = map(int, out.split())
    assert got == big
    assert on_disk == big
    assert after_kib - before_kib < 6 * 1024, "peak RSS grew from %d to %d KiB" % (before_kib, after_kib)
    assert after_kib < 64 * 1024, "peak RSS %d KiB" % after_kib


def _record_syncs(monkeypatch):
    """Record fsync (by path) and link calls, in order."""
    calls = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd):
        try:
            calls.append(("fsync", os.readlink("/proc/self/fd/%d" % fd)))
        except OSError:
            calls.append(("fsync", fd))
        return real_fsync(fd)

    def link(src, dst, **kw):
        calls.append(("link", src))
        return real_link(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    return calls


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to name fds")
def test_bytes_are_fsynced_before_the_file_gets_its_name(fake, client, tmp_path, monkeypatch):
    fake.add_run(5, size=100_000)
    calls = _record_syncs(monkeypatch)
    client.download(5, str(tmp_path))
    (link,) = [c for c in calls if c[0] == "link"]
    assert ("fsync", link[1]) in calls[:calls.index(link)]
    assert calls[-1] == ("fsync", str(tmp_path))  # and the folder, so the new name is durable too


@pytest.mark.skipif(os.name != "posix", reason="POSIX process check")
def test_temp_files_of_killed_runs_are_swept_and_live_ones_kept(fake, client, tmp_path):
    fake.add_run(5, size=1000)
    ended = subprocess.Popen([sys.executable, "-I", "-S", "-c", ""])  # a process ID that is gone
    ended.wait(60)
    gone = ended.pid
    stale = tmp_path / (".5.%s-0badcafe.part" % gone)
    live = tmp_path / (".5.%d-0123abcd.part" % os.getpid())
    mine = tmp_path / "notes.part"
    for p in (stale, live, mine):
        p.write_bytes(b"x")
    outcomes = client.fetch([5], str(tmp_path))
    assert outcomes[0].status == "saved"
    assert not stale.exists() and live.exists() and mine.exists()
