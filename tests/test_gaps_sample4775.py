"""Tests for real gaps of the mutation sample on main aa8840d (seed 31, 150 of 4775 mutants): each fails
with the mutant named in its docstring (checked with tools/mutate.py --only)."""
import hashlib
import threading

import pytest

import sound_bulk as sb
from fake_api import body_sha256
from test_generate_journey import manifest
from test_integrity import Storage, m4a, reply, wav


def test_an_api_500_is_tried_again(fake, client, sleeps):
    """#707 (500 taken as final): a 500 from the API is a server error like 502-504, so the call is tried
    again, and the run's URL comes from the second answer."""
    fake.add_run(1)
    fake.bulk_faults = [("status", 500)]
    assert client.get_results([1])[1].ready
    assert len(fake.seen("api", "POST")) == 2 and len(sleeps.waits) == 1


def test_a_refused_url_for_a_run_the_api_no_longer_has_ready_says_both(fake, client, tmp_path):
    """#610 (the second half of the message dropped, which left it unset): the storage refuses the URL,
    and the API, asked for a fresh one, has none ready; the error says both, and no file is left."""
    fake.add_run(5, state="pending")
    url = fake.storage_origin + "/bucket/audio_5.wav?X-Amz-Signature=forged"
    with pytest.raises(sb.DownloadError) as caught:
        client.download(5, str(tmp_path), url=url)
    message = str(caught.value)
    assert message.startswith("run 5: the storage refused the download URL (HTTP 403")
    assert message.endswith(", and the API has no download URL for it now (pending)"), message
    assert caught.value.run_id == 5 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("plan", [("success", 0), ("error", 0, "the model refused the prompt")])
def test_the_manifest_names_the_task_of_each_finished_prompt(fake, make_client, tmp_path, plan):
    """#3865 (the "task_id" field of a failed task's line renamed ""): the manifest's line for a finished
    task carries its task ID (a person reading the manifest, or support, needs it), with its status and
    the run ID or the error."""
    fake.task_plan.append(plan)
    (got,) = sb.generate(make_client(), ["drip"], str(tmp_path))
    (task,) = [line for line in manifest(tmp_path) if line["event"] == "task"]
    assert task["task_id"] == got.task_id is not None
    if plan[0] == "success":
        assert got.status == "saved" and (task["task_status"], task["run_id"]) == ("SUCCESS", got.run_id)
    else:
        assert got.status == "failed" and (task["task_status"], task["error"]) == ("ERROR", plan[2])


def test_a_body_that_starts_over_is_judged_by_its_own_first_bytes(client, tmp_path):
    """#3028 (the first try's head kept when a try starts over): the storage, with no validator, cuts a
    WAV short, and the next try brings another object, an M4A; it is saved as .m4a, byte for byte (the
    first bytes kept from the WAV would have named it .wav and judged its length by the WAV's header)."""
    a, b = wav(100_000), m4a(60_000)
    with Storage([reply(a, cut=100), reply(b)]) as storage:
        path, size = client.download(5, str(tmp_path), url=storage.url)
    assert path.endswith("5.m4a") and size == len(b)
    assert open(path, "rb").read() == b


def test_a_download_cancelled_while_its_body_arrives_says_interrupted(fake, client, tmp_path):
    """#2879 (the message emptied): ``download(cancel=...)`` set while the body arrives (here, from its
    progress callback) ends with DownloadError("interrupted") and no file at all."""
    size = 4 * sb.READ_CHUNK
    fake.add_run(5, size=size)
    cancel = threading.Event()
    with pytest.raises(sb.DownloadError) as caught:
        client.download(5, str(tmp_path), progress=lambda n: cancel.set(), cancel=cancel)
    assert str(caught.value) == "interrupted" and caught.value.run_id == 5
    assert list(tmp_path.iterdir()) == []
    cancel.clear()
    path, got = client.download(5, str(tmp_path))  # the Client is fine afterwards
    assert got == size and hashlib.sha256(open(path, "rb").read()).hexdigest() == body_sha256(5, size)


def test_a_ctrl_c_while_a_request_is_sent_closes_its_connection(fake, make_client, monkeypatch, sockets):
    """#2406 (the connection not given back on KeyboardInterrupt): a Ctrl-C (KeyboardInterrupt) raised
    while a request goes out leaves no socket open, and the next call works."""
    import http.client
    opened = sockets
    real_request = http.client.HTTPConnection.request

    def request(self, *a, **kw):
        if len(opened) == 1:
            raise KeyboardInterrupt
        return real_request(self, *a, **kw)
    monkeypatch.setattr(http.client.HTTPConnection, "request", request)
    fake.add_run(1)
    client = make_client()
    with pytest.raises(KeyboardInterrupt):
        client.get_results([1])
    assert opened[0].fileno() == -1, "the interrupted connection is still open"
    assert client.get_results([1])[1].ready


def test_once_the_api_is_out_of_reach_generate_ends_without_waiting_for_another_poll(fake, make_client, sleeps,
                                                                                     tmp_path):
    """#3782 (the polls still planned kept after the API was found out of reach): two tasks; the first
    poll says "not finished"; then the API stops listening, so the second poll finds it out of reach (one
    try).  generate ends then: it does not wait for the first prompt's next poll (which could not be made:
    no request goes out once the Client knows the API is out of reach), and both prompts end pending, "not
    checked"."""
    fake.task_plan += [("success", 5), ("success", 5)]
    client = make_client(max_attempts=1)
    late = []

    def gate():  # two submissions and the first poll are answered; then the API is gone
        late.append(client.unreachable is not None)
        if len(late) > 3:
            fake.api.stop()
            raise ConnectionResetError
    fake.api_gate = gate
    got = sb.generate(client, ["a", "b"], str(tmp_path), workers=1)
    assert [(o.status, o.error) for o in got] == [("pending", sb._NOT_CHECKED)] * 2
    assert sleeps.waits == []
    assert len(late) == 4 and not any(late), late
    assert [r["method"] for r in fake.seen("api")] == ["POST", "POST", "GET"]
