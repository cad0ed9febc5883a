"""Client.abort() (Ctrl-C in fetch) while a call or a download waits before trying again: the wait ends,
nothing is tried again, and calls made afterwards are not affected.  The waits go through the sleep
seam here; test_cli.py::test_ctrl_c_while_the_api_asks_to_wait_ends_at_once has the real sleep."""
import os
import threading
import time

import pytest

import sound_bulk as sb


def aborting(record, sleeps):
    """A sleep for the Client: it records the wait in ``sleeps.waits``, moves the fake clock a second
    at most, then calls ``abort()`` of the client in ``record["client"]``: Ctrl-C during the wait."""
    def sleep(seconds):
        sleeps.waits.append(seconds)
        sleeps.t += min(seconds, 1.0)
        record["client"].abort()
    return sleep


def test_abort_while_an_api_call_waits_to_try_again_sends_nothing_more(fake, make_client, sleeps):
    fake.add_runs([1])
    fake.bulk_faults = [("status", 503)] * 3
    record = {}
    client = record["client"] = make_client(sleep=aborting(record, sleeps))
    error = client.get_results([1])[1].error
    assert "HTTP 503" in error and "cannot be reached" not in error  # the last answer, not "unreachable"
    assert len(fake.seen("api")) == 1 and sleeps.waits == [0.5]
    assert client.unreachable is None
    fake.bulk_faults = []
    assert client.get_results([1])[1].ready  # a call made afterwards is not affected


def test_abort_while_every_call_waits_out_a_pause_the_api_asked_for(fake, make_client, sleeps):
    """The 429's Retry-After holds every call of the client: the call that got it, and a call made
    afterwards, which is then halted before its first try and says so."""
    fake.add_runs([1])
    fake.bulk_faults = [("status", 429, [("Retry-After", "30")])] * 3
    record = {}
    client = record["client"] = make_client(sleep=aborting(record, sleeps))
    assert "HTTP 429" in client.get_results([1])[1].error
    assert len(fake.seen("api")) == 1 and sleeps.waits == [30.0]
    assert client.get_results([1])[1].error == "POST text-to-sound-results: stopped before it was sent"
    assert len(fake.seen("api")) == 1 and sleeps.waits == [30.0, 29.0]  # the rest of the same pause


def test_abort_while_a_download_waits_to_try_again_ends_it_interrupted(fake, make_client, sleeps, tmp_path):
    fake.add_runs([1])
    fake.storage_faults[1] = [("status", 503)] * 3
    record = {}
    client = record["client"] = make_client(sleep=aborting(record, sleeps))
    with pytest.raises(sb.DownloadError) as info:
        client.download(1, str(tmp_path))
    assert "interrupted" in str(info.value)
    assert len(fake.seen("storage")) == 1 and sleeps.waits == [0.5]
    assert os.listdir(str(tmp_path)) == []
    fake.storage_faults[1] = []
    assert client.download(1, str(tmp_path))[0].endswith("1.wav")  # the next download is not affected


def test_the_real_sleep_is_cut_short_by_a_halt():
    """Timing assumed: a thread that sets the event after 50 ms runs within 10 s."""
    halted = threading.Event()
    threading.Timer(0.05, halted.set).start()
    start = time.monotonic()
    sb._nap(time.sleep, 30, halted)
    assert time.monotonic() - start < 10
    waits = []
    sb._nap(waits.append, 2.5, halted)  # a sleep given to the Client is called as it is
    assert waits == [2.5]
