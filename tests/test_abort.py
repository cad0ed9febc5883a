"""Client.abort() (Ctrl-C in fetch) while a call or a download waits before trying again: the wait ends,
nothing is tried again, and calls made afterwards are not affected.  The waits go through the sleep
seam here; test_cli.py::test_ctrl_c_while_the_api_asks_to_wait_ends_at_once has the real sleep."""
import json
import os
import threading
import time

import pytest

import sound_bulk as sb
from conftest import json_calls


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
    afterwards, which waits out the rest of the same pause (the sleep stand-in aborts again during
    that wait: a second Ctrl-C) and is then halted before its first try, and says so."""
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


# -- a halt that comes while a call is on the wire, or between a journey's look at its cancel and its call --

def test_a_call_halted_while_its_try_failed_neither_waits_nor_calls_the_api_unreachable(make_client, sleeps):
    """Ctrl-C while a try is under way (here: as it fails to connect, through the jitter seam, which is
    asked for the wait before another try).  The call ends with that try's error, without a wait or a
    "retry" line; and a halt is not the API being out of reach, which would hold for later calls too."""
    from test_generate_journey import refused_url
    record = {}

    def rand():
        record["client"].abort()
        return 0.5

    client = record["client"] = make_client(base_url=refused_url(), rand=rand)
    with pytest.raises(sb.TransportError) as info:
        client.get_task("t1")
    assert not isinstance(info.value, sb.APIUnreachableError) and client.unreachable is None
    assert sleeps.waits == []


@pytest.mark.parametrize("where", ["api", "storage"])
def test_a_halt_ends_the_real_wait_before_another_try(fake, make_client, monkeypatch, tmp_path, where):
    """With the real sleep: a halt during the wait after a 503 ends that wait.  The wait is made 20 s
    long; timing assumed: the halted call or download ends within 10 s."""
    import logging
    fake.add_runs([1])
    if where == "api":
        fake.bulk_faults = [("status", 503)] * 3
    else:
        fake.storage_faults[1] = [("status", 503)] * 3
    monkeypatch.setattr(sb, "BACKOFF_INITIAL", 20.0)
    client = make_client(sleep=time.sleep, clock=time.monotonic)

    class HaltAtTheRetryLine(logging.Handler):  # logged just before the wait
        def emit(self, record):
            if " retry 1 in " in record.getMessage():
                client.abort()

    log = logging.getLogger("sound_bulk")
    handler, level = HaltAtTheRetryLine(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    start = time.monotonic()
    try:
        if where == "api":
            assert "HTTP 503" in client.get_results([1])[1].error
        else:
            with pytest.raises(sb.DownloadError, match="interrupted"):
                client.download(1, str(tmp_path))
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert time.monotonic() - start < 10
    assert len(fake.seen(where)) == 1


def runs_in(thread, function, file_name):
    """Wait (~10 s at most) until ``thread`` runs ``function`` of the file ``file_name``; whether it did."""
    import sys
    for _ in range(10000):
        frame = sys._current_frames().get(thread.ident)
        while frame is not None:
            if (frame.f_code.co_name, os.path.basename(frame.f_code.co_filename)) == (function, file_name):
                return True
            frame = frame.f_back
        time.sleep(0.001)
    return False


def test_a_halt_wakes_a_call_waiting_for_a_free_slot(fake, make_client, monkeypatch):
    """One slot (api_concurrency=1), held by a call the fake does not answer yet; a call of another piece
    of work waits for it.  Halting that work (generate's first Ctrl-C: connections are not cut) ends the
    wait at once, not when the window's safety net would (made 60 s here).  Timing assumed: the first
    call reaches the fake within 5 s, the second its wait for a slot within 10 s, and the halted call
    ends within 10 s."""
    monkeypatch.setattr(sb._CallWindow, "SAFETY_NET", 60.0)
    fake.add_runs([1, 2])
    answer = threading.Event()
    fake.api_gate = lambda: answer.wait(20)
    client = make_client(api_concurrency=1, timeout=30)  # the first call holds its slot until answered
    first = threading.Thread(target=client.get_results, args=([1],))
    first.start()
    try:
        for _ in range(1000):  # the first call is on the wire
            if fake.api_active:
                break
            time.sleep(0.005)
        assert fake.api_active
        got, halted = {}, threading.Event()
        second = threading.Thread(target=lambda: got.update(client._resolve_chunk([2], halted)))
        second.start()
        assert runs_in(second, "acquire", "sound_bulk.py")
        start = time.monotonic()
        client._halt(halted)
        second.join(15)
        assert time.monotonic() - start < 10
        assert got[2].error == "POST text-to-sound-results: stopped before it was sent"
    finally:
        answer.set()
        first.join(15)
    assert len(fake.seen("api")) == 1


@pytest.mark.parametrize("journey", ["fetch", "generate"])
def test_ctrl_c_just_after_a_journey_looked_at_its_cancel_sends_nothing_more(fake, make_client, monkeypatch,
                                                                            tmp_path, journey):
    """Every call and download of a journey takes the journey's own halt event, so a Ctrl-C after a
    worker looked at the journey's cancel, but before its call, still stops that call: no request goes
    out after Ctrl-C, and no task is paid for."""
    import signal
    fake.add_runs([1, 2])
    client = make_client()
    field, pressed = ("run_ids" if journey == "fetch" else "prompt"), []

    def ctrl_c_at_the_first_request(value):  # (a manifest line has an "event")
        if not pressed and field in value and "event" not in value:
            pressed.append(1)
            _ctrl_c_and_wait_for(client)
    # encoding a request's body is the step of a call between a journey's look at its cancel and its request
    json_calls(monkeypatch, "dumps", ctrl_c_at_the_first_request)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(sb.FetchInterrupted):
            if journey == "fetch":
                client.fetch([1, 2], str(tmp_path))
            else:
                sb.generate(client, ["rain"], str(tmp_path))
    finally:
        signal.signal(signal.SIGINT, old)
    assert pressed and fake.requests == []
    if journey == "generate":  # the manifest knows no task was made: a rerun submits the prompt
        events = [json_line["event"] for json_line in map(json.loads, (tmp_path / sb.MANIFEST_NAME).open())]
        assert events == ["submitting", "submit_failed"]


def test_the_first_ctrl_c_in_generate_lets_a_submission_on_the_wire_get_its_task(fake, make_client, tmp_path):
    """The submission is held at the fake until generate has handled Ctrl-C and waits for what is under
    way; then it is answered.  Its task is in the manifest as created, and the prompt has its ID.
    Timing assumed: generate reaches that wait within 10 s of the Ctrl-C."""
    import signal
    client = make_client()
    main = threading.main_thread()

    def gate():
        signal.pthread_kill(main.ident, signal.SIGINT)
        assert runs_in(main, "wait", "_base.py")  # concurrent.futures.wait: generate's wait for what is under way

    fake.api_gate = gate
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(sb.FetchInterrupted) as info:
            sb.generate(client, ["rain"], str(tmp_path))
    finally:
        signal.signal(signal.SIGINT, old)
    (task_id,) = fake.tasks
    events = [(m["event"], m.get("task_id")) for m in map(json.loads, (tmp_path / sb.MANIFEST_NAME).open())]
    assert events == [("submitting", None), ("created", task_id)]
    assert info.value.outcomes[0].task_id == task_id


def test_abort_during_get_results_stops_its_chunks_not_started_yet(fake, make_client):
    """get_results is one piece of work: abort() while its first chunk is on the wire also stops the
    chunks that were to follow (nothing more is sent), and each says so."""
    ids = list(range(1, 16))  # three chunks of five
    fake.add_runs(ids)
    record, calls = {}, []
    fake.api_gate = lambda: calls.append(1) or record["client"].abort()
    client = record["client"] = make_client()
    got = client.get_results(ids)
    assert len(calls) == 1  # (not fake.seen: the fake records a request after its gate)
    assert all(r.status == "missing" for r in got.values())
    assert {got[rid].error for rid in ids[5:]} == {"POST text-to-sound-results: stopped before it was sent"}


def _ctrl_c_and_wait_for(client):
    """Press Ctrl-C (SIGINT to the main thread) while the client's one piece of work runs, and wait (10 s
    at most) until that work has been halted; then go on either way (the test's checks tell)."""
    import signal
    (halted,) = client._works
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    halted.wait(10)


def _connects_then(monkeypatch, then):
    """Every new connection of a Client calls ``then()`` once it is made (a Ctrl-C while it connects)."""
    real = sb._Pool._connect

    def connect(self, origin):
        conn = real(self, origin)
        made = conn.connect

        def connect_then():
            made()
            then()
        conn.connect = connect_then
        return conn
    monkeypatch.setattr(sb._Pool, "_connect", connect)


def test_ctrl_c_while_a_submission_connects_sends_nothing(fake, make_client, monkeypatch, tmp_path):
    """A connection still being made (slow DNS, a lost SYN) cannot be cut by shutting sockets: once it
    is made, nothing is sent on it after Ctrl-C.  No task is paid for, and the manifest says so."""
    import signal
    client = make_client()
    _connects_then(monkeypatch, lambda: _ctrl_c_and_wait_for(client))
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(sb.FetchInterrupted):
            sb.generate(client, ["rain"], str(tmp_path))
    finally:
        signal.signal(signal.SIGINT, old)
    assert fake.requests == [] and fake.tasks == {}
    events = [json_line["event"] for json_line in map(json.loads, (tmp_path / sb.MANIFEST_NAME).open())]
    assert events == ["submitting", "submit_failed"]


def test_abort_while_a_download_connects_sends_nothing(fake, make_client, monkeypatch, tmp_path):
    fake.add_runs([1])
    url = make_client().get_results([1])[1].url
    client = make_client()
    _connects_then(monkeypatch, client.abort)
    with pytest.raises(sb.DownloadError, match="interrupted"):
        client.download(1, str(tmp_path), url)
    assert fake.seen("storage") == [] and os.listdir(str(tmp_path)) == []


def test_ctrl_c_in_one_journey_leaves_another_on_the_same_client_alone(fake, make_client, monkeypatch, tmp_path):
    """Two journeys share a Client: a generate in another thread, started first (so Ctrl-C is not its
    business: only journeys of the main thread, and those started inside them, take it), then a fetch
    in the main thread, Ctrl-C'd.  The generate's submission, on the wire meanwhile, is neither halted
    nor cut: it gets its task, recorded as created, and the prompt is saved.  Timing assumed: each
    side's waits for the other (10 s at most) are long enough."""
    import signal
    fake.add_runs([3])
    fake.task_plan.append(("success", 0))
    client = make_client()
    on_the_wire, fetch_over = threading.Event(), threading.Event()

    def gate():  # the first API request is the generate's submission: held until the fetch is over
        if not on_the_wire.is_set():
            on_the_wire.set()
            fetch_over.wait(10)
    fake.api_gate = gate

    def ctrl_c_at_the_fetchs_call(value):
        if isinstance(value, dict) and value.get("run_ids") == [3]:
            fetch_halted = [h for h in client._works if h is not generate_halted[0]][0]
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            fetch_halted.wait(10)
    json_calls(monkeypatch, "dumps", ctrl_c_at_the_fetchs_call)
    generate_halted, got = [], {}
    real_as_work = client._as_work

    def as_work(halted, work):  # note which halt event is the generate's
        if threading.current_thread() is not threading.main_thread():
            generate_halted.append(halted)
        return real_as_work(halted, work)
    client._as_work = as_work
    other = threading.Thread(target=lambda: got.update(
        outcomes=sb.generate(client, ["rain"], str(tmp_path / "other"), workers=1)))
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        other.start()
        assert on_the_wire.wait(10)
        with pytest.raises(sb.FetchInterrupted):
            client.fetch([3], str(tmp_path / "first"))
    finally:
        signal.signal(signal.SIGINT, old)
        fetch_over.set()
        other.join(15)
    (outcome,) = got["outcomes"]
    assert outcome.status == "saved" and outcome.task_id in fake.tasks
    events = [m["event"] for m in map(json.loads, (tmp_path / "other" / sb.MANIFEST_NAME).open())]
    assert events[:2] == ["submitting", "created"]


def test_a_call_halted_on_the_wire_still_passes_on_the_pause_the_api_asked_for(fake, make_client, sleeps):
    """A 429 with Retry-After that comes to a call of halted work ends that call, and still holds the
    client's other callers for the time the API asked (Ctrl-C in one journey; the others go on)."""
    fake.add_runs([1])
    fake.bulk_faults = [("status", 429, [("Retry-After", "30")])]
    halted = threading.Event()
    fake.api_gate = halted.set  # halted while its request is on the wire (connections are not cut)
    client = make_client()
    assert "HTTP 429" in client._resolve_chunk([1], halted)[1].error and sleeps.waits == []
    fake.api_gate = None
    assert client.get_results([1])[1].ready and sleeps.waits == [30.0]


def test_abort_while_a_body_is_held_back_ends_the_download_interrupted(fake, make_client, tmp_path):
    """abort() while the storage holds the body back (headers sent): the connection it shuts ends the
    body early, which is not the storage's doing; the download ends "interrupted", not as a short or
    empty body, and leaves no file.  Timing assumed: the fake holds the body 20 s, far longer than
    the abort takes to come."""
    fake.add_runs([1])
    fake.slow_delay = 20
    fake.storage_faults[1] = ["slow"]
    client = make_client()
    got = {}

    def download():
        try:
            client.download(1, str(tmp_path))
        except sb.DownloadError as exc:
            got["error"] = str(exc)

    thread = threading.Thread(target=download)
    thread.start()
    for _ in range(2000):  # ~10 s at most
        if fake.stalled:
            break
        time.sleep(0.005)
    client.abort()
    thread.join(15)
    assert got["error"] == "interrupted" and os.listdir(str(tmp_path)) == []


def test_ctrl_c_in_get_results_stops_the_chunks_of_its_threads(fake, make_client, monkeypatch):
    """get_results sends its first chunk itself, the others from threads.  Ctrl-C while it waits for
    them: a chunk not sent yet is not sent (here: the next one, caught as it is being encoded)."""
    import signal
    ids = list(range(1, 16))  # three chunks of five
    fake.add_runs(ids)
    client = make_client(api_concurrency=1)  # one thread for the second and third chunks, in turn

    json_calls(monkeypatch, "dumps", lambda value: value.get("run_ids") == ids[5:10] and _ctrl_c_and_wait_for(client))
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            client.get_results(ids)
    finally:
        signal.signal(signal.SIGINT, old)
    for thread in threading.enumerate():
        if thread.name.startswith("sound_bulk-resolve"):
            thread.join(30)  # (longer than the 10 s the Ctrl-C waits for the halt: a wrong program sends)
    assert [json.loads(r["body"])["run_ids"] for r in fake.seen("api")] == [ids[:5]]


def test_ctrl_c_between_two_tries_gives_the_slot_back(fake, make_client):
    """Ctrl-C in the calling thread just after a try failed (here: as the jitter for the wait is drawn)
    leaves the call window as it was: with one slot, the next call does not wait forever for it.
    Timing assumed: that call ends within 10 s."""
    fake.add_runs([1])
    fake.bulk_faults = [("status", 503)]

    def rand():
        raise KeyboardInterrupt

    client = make_client(api_concurrency=1, rand=rand)
    with pytest.raises(KeyboardInterrupt):
        client.get_results([1])
    client._rand = lambda: 0.5
    got = {}
    later = threading.Thread(target=lambda: got.update(client.get_results([1])), daemon=True)
    later.start()
    later.join(10)
    assert got and got[1].ready


@pytest.mark.parametrize("journey", ["fetch", "generate"])
def test_abort_from_another_thread_ends_a_journey_as_ctrl_c_would(fake, make_client, tmp_path, journey):
    """abort() (here from the fake's thread, as the first API call arrives) while a journey runs in a
    thread of its own: it raises FetchInterrupted with every run or prompt, and nothing more is sent.
    Timing assumed: the journey ends within 10 s of the abort."""
    ids = list(range(1, 11))
    fake.add_runs(ids)
    client = make_client()
    calls = []
    fake.api_gate = lambda: calls.append(1) or (len(calls) == 1 and client.abort())
    got = {}

    def run():
        try:
            if journey == "fetch":
                client.fetch(ids, str(tmp_path), workers=1)
            else:
                sb.generate(client, ["rain", "wind", "sea"], str(tmp_path), workers=1)
        except sb.FetchInterrupted as exc:
            got["outcomes"] = exc.outcomes

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and "outcomes" in got
    assert len(got["outcomes"]) == (10 if journey == "fetch" else 3)
    assert not any(o.status == "saved" for o in got["outcomes"])
    assert len(calls) == 1 and fake.seen("storage") == []  # (calls: the fake records a request after its gate)
