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


def test_a_halt_wakes_a_call_waiting_for_a_free_slot(fake, make_client, monkeypatch):
    """One slot (api_concurrency=1), held by a call the fake does not answer yet; a second call waits
    for it.  A halt ends that wait at once, not when the window's safety net would (made 60 s here).
    Timing assumed: the halted call ends within 10 s."""
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
        got = {}
        second = threading.Thread(target=lambda: got.update(client.get_results([2])))
        second.start()
        time.sleep(0.05)  # (if it has not reached its wait yet, it finds the halt there: the same end)
        start = time.monotonic()
        client._halt()  # what Ctrl-C in generate does: the first call may still get its answer
        second.join(15)
        assert time.monotonic() - start < 10
        assert got[2].error == "POST text-to-sound-results: stopped before it was sent"
    finally:
        answer.set()
        first.join(15)
    assert len(fake.seen("api")) == 1


class _CtrlCWhileEncoding:
    """A stand-in for the module's json (``sb._json()``): encoding a request's body, the step between
    a journey's look at its cancel and its request, first presses Ctrl-C (SIGINT to the main thread)
    and waits until the journey has stopped its client (the halt event it began with is set)."""

    def __init__(self, halted, path_word):
        import json
        self.json, self.halted, self.path_word = json, halted, path_word
        self.pressed = False

    def __getattr__(self, name):
        return getattr(self.json, name)

    def dumps(self, value, **kw):
        if not self.pressed and self.path_word in value:
            self.pressed = True
            import signal
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            assert self.halted.wait(10)
        return self.json.dumps(value, **kw)


@pytest.mark.parametrize("journey", ["fetch", "generate"])
def test_ctrl_c_just_after_a_journey_looked_at_its_cancel_sends_nothing_more(fake, make_client, monkeypatch,
                                                                            tmp_path, journey):
    """Every call and download of a journey takes the halt event the client has when the journey
    begins, so a Ctrl-C after a worker looked at the journey's cancel, but before its call, still
    stops that call: no request goes out after Ctrl-C, and no task is paid for."""
    import signal
    fake.add_runs([1, 2])
    client = make_client()
    word = "run_ids" if journey == "fetch" else "prompt"
    encoder = _CtrlCWhileEncoding(client._halted, word)
    monkeypatch.setattr(sb, "_json", lambda: encoder)
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(sb.FetchInterrupted):
            if journey == "fetch":
                client.fetch([1, 2], str(tmp_path))
            else:
                sb.generate(client, ["rain"], str(tmp_path))
    finally:
        signal.signal(signal.SIGINT, old)
    assert encoder.pressed and fake.requests == []
    if journey == "generate":  # the manifest knows no task was made: a rerun submits the prompt
        events = [json_line["event"] for json_line in map(_json_loads, (tmp_path / sb.MANIFEST_NAME).open())]
        assert events == ["submitting", "submit_failed"]


def _json_loads(line):
    import json
    return json.loads(line)


def test_the_first_ctrl_c_in_generate_lets_a_submission_on_the_wire_get_its_task(fake, make_client, tmp_path):
    """The submission is held at the fake until generate has handled Ctrl-C and waits for what is under
    way; then it is answered.  Its task is in the manifest as created, and the prompt has its ID."""
    import signal
    import sys
    client = make_client()
    main = threading.main_thread()

    def generate_waits_in_stop():
        for _ in range(10000):  # at most ~10 s
            frame, names = sys._current_frames().get(main.ident), []
            while frame is not None:
                names.append((frame.f_code.co_name, os.path.basename(frame.f_code.co_filename)))
                frame = frame.f_back
            if ("_stop", "sound_bulk.py") in names and ("wait", "_base.py") in names:
                return True
            time.sleep(0.001)
        return False

    def gate():
        signal.pthread_kill(main.ident, signal.SIGINT)
        assert generate_waits_in_stop()

    fake.api_gate = gate
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(sb.FetchInterrupted) as info:
            sb.generate(client, ["rain"], str(tmp_path))
    finally:
        signal.signal(signal.SIGINT, old)
    (task_id,) = fake.tasks
    events = [(m["event"], m.get("task_id")) for m in map(_json_loads, (tmp_path / sb.MANIFEST_NAME).open())]
    assert events == [("submitting", None), ("created", task_id)]
    assert info.value.outcomes[0].task_id == task_id
