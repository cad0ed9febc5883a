"""Tests for real gaps of the mutation sample on main 4134c18 (seed 31, 150 of 4740 mutants): each fails
with the mutant named in its docstring (checked with tools/mutate.py --only)."""
import json
import logging
import threading

import pytest

import sound_bulk as sb
from hostile_server import http


def test_an_api_out_of_reach_after_one_try_says_one_try(make_client):
    """#197 ("try" emptied): the message counts the tries in words that read right for one."""
    from test_generate_journey import refused_url
    client = make_client(base_url=refused_url(), max_attempts=1)
    assert "cannot be reached" in client.get_results([1])[1].error
    assert str(client.unreachable).endswith("(1 try)")


def test_fetch_tries_the_api_again_after_an_earlier_call_found_it_out_of_reach(fake, make_client, tmp_path):
    """#573 (fetch not clearing what an earlier call concluded): after get_results found the API out of
    reach, a later fetch on the same Client asks again and saves the run."""
    fake.add_runs([1])
    fake.bulk_faults = [("drop",)] * 5
    client = make_client()
    assert client.get_results([1])[1].status == "missing" and client.unreachable is not None
    (got,) = client.fetch([1], str(tmp_path))
    assert got.status == "saved"


def test_an_error_answer_that_is_json_but_not_an_object_is_kept_as_the_detail(hostile, make):
    """#749 (the decoded answer dropped): a 400 whose body is a JSON list gives an APIError carrying that
    list as its detail, and its text in the message."""
    hostile.handler = lambda method, path, body: http(400, ["run_ids", "bad"])
    with pytest.raises(sb.APIError) as caught:
        make().create_task("rain")
    assert caught.value.status == 400 and caught.value.detail == ["run_ids", "bad"]
    assert "run_ids" in str(caught.value)


def test_a_retry_is_logged_at_info_level(fake, make_client, caplog):
    """#2073 (info records at level 21): the retry lines come as INFO, which is what -v and a host
    program's logging.INFO handler expect to see and filter on."""
    caplog.set_level(logging.INFO, logger="sound_bulk")
    fake.add_runs([1])
    fake.bulk_faults = [("status", 503)]
    assert make_client().get_results([1])[1].ready
    retries = [r for r in caplog.records if "retry 1 in" in r.getMessage()]
    assert retries and all(r.levelno == logging.INFO for r in retries)


def test_a_base_url_with_a_delete_character_is_refused():
    """#2100 (DEL, 0x7f, let through): the base URL may hold no control character, DEL included."""
    with pytest.raises(sb.ConfigurationError, match="whitespace or control"):
        sb.Client(api_key="k" * 32, base_url="https://api.example/ap\x7fis")


def test_an_ipv6_origin_is_written_with_brackets():
    """#2173 (the brackets dropped): an IPv6 host in a message is bracketed, so its port reads apart."""
    assert sb._origin_text(("https", "::1", 8443)) == "https://[::1]:8443"
    assert sb._origin_text(("https", "storage.example", 443)) == "https://storage.example:443"


def test_runs_a_fetch_never_reached_before_ctrl_c_say_interrupted(fake, make_client, monkeypatch, tmp_path):
    """#3269 (their reason emptied): Ctrl-C during a fetch of many runs reports the runs it never got to
    as interrupted.  Timing assumed: the journey sees the Ctrl-C (it looks every 0.05 s) before it has
    got through 19 runs: the fake holds the first bulk call's answer 0.1 s after the Ctrl-C."""
    import signal
    ids = list(range(1, 21))
    fake.add_runs(ids)
    pressed = []

    def gate():  # the first bulk call: Ctrl-C, then wait until it is seen
        if not pressed:
            pressed.append(1)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            threading.Event().wait(0.1)
    fake.api_gate = gate
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(sb.FetchInterrupted) as caught:
            make_client().fetch(ids, str(tmp_path), workers=1)
    finally:
        signal.signal(signal.SIGINT, old)
    outcomes = caught.value.outcomes
    assert [o.run_id for o in outcomes] == ids
    assert outcomes[-1].status == "error" and outcomes[-1].error == "interrupted"


def test_a_task_not_finished_when_time_is_up_says_so(fake, make_client, tmp_path):
    """#3839 (the reason emptied): a prompt whose task still generates when --wait is over is pending,
    saying that the task is not finished and how to pick it up."""
    fake.task_plan.append(("success", 100))
    (got,) = sb.generate(make_client(), ["slow rain"], str(tmp_path), wait=5)
    assert got.status == "pending" and got.task_id
    assert got.error == "the task is not finished yet; run the same command again later"


def test_the_manifest_records_each_created_task_with_its_prompt(fake, make_client, tmp_path):
    """#3912 (the prompt's key emptied): the "created" line holds the prompt, for a person reading the
    manifest to find which task is which."""
    fake.task_plan.append(("success", 0))
    (got,) = sb.generate(make_client(), ["rain on a tin roof"], str(tmp_path))
    lines = [json.loads(line) for line in (tmp_path / sb.MANIFEST_NAME).open()]
    created = [m for m in lines if m["event"] == "created"]
    assert len(created) == 1 and created[0]["prompt"] == "rain on a tin roof"
    assert created[0]["task_id"] == got.task_id


def test_the_summary_counts_the_prompts_not_checked_once_each(tmp_path, monkeypatch, sleeps):
    """#4576 (each counted twice): resuming three created tasks with the API out of reach, the one
    message says 3 prompts were not checked."""
    from conftest import API_KEY
    from test_generate_journey import refused_url, run_cli, seamed_client
    m = sb.Manifest(str(tmp_path / sb.MANIFEST_NAME))
    for key, n in zip(sb.prompt_keys(["x", "y", "z"], None, "sound"), range(3)):
        m.append({"event": "created", "key": key, "task_id": "task-%d" % n})
    monkeypatch.setenv("CAMB_API_KEY", API_KEY)
    seamed_client(monkeypatch, sleeps)
    code, out, err = run_cli(["generate", "x", "y", "z", "-o", str(tmp_path), "--base-url", refused_url()],
                             monkeypatch)
    assert code == 1 and "; 3 prompts not checked (check --base-url" in err


def test_ctrl_c_in_generate_keeps_what_was_already_settled(fake, make_client, tmp_path):
    """#3546 (the test for "not settled yet" negated): Ctrl-C once the first prompt is saved leaves it
    saved, and the prompt still generating says interrupted."""
    import signal
    fake.task_plan += [("success", 0), ("success", 100)]

    def settled(outcome):
        if outcome.status == "saved":
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(sb.FetchInterrupted) as caught:
            sb.generate(make_client(), ["quick", "slow"], str(tmp_path), workers=1, on_outcome=settled)
    finally:
        signal.signal(signal.SIGINT, old)
    first, second = caught.value.outcomes
    assert first.status == "saved" and first.path
    assert (second.status, second.error) == ("error", "interrupted")


@pytest.mark.parametrize("columns", [60, 71, 95])
def test_help_fills_the_terminal_but_two_columns(monkeypatch, columns):
    """#4024 (one column fewer): help text is wrapped to the terminal's width less two, as argparse does."""
    import io
    monkeypatch.setenv("COLUMNS", str(columns))
    out = io.StringIO()
    sb.main(["fetch", "--help"], stdout=out, stderr=io.StringIO())
    assert max(len(line) for line in out.getvalue().splitlines()) == columns - 2

