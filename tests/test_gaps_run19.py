"""Tests for the real gaps of the mutation sample on main 7b8c5ec (seed 31, 150 of 4731 mutants): each
fails with the mutant named in its docstring (checked with tools/mutate.py --only)."""
import gc
import io
import os
import socket
import sys

import pytest

import sound_bulk as sb

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None


def test_a_download_url_whose_host_has_a_stray_character_is_refused_without_a_connection(client, tmp_path,
                                                                                         monkeypatch):
    """#2146 (the host pattern emptied): a URL from a server whose host is not a host name is refused,
    and no connection (nor name lookup) is tried for it."""
    def connect(*args, **kw):
        raise AssertionError("a connection was tried")
    monkeypatch.setattr(socket, "create_connection", connect)
    for host in ("ex!ample.com", "storage.example'", "a*b.example"):
        with pytest.raises(sb.DownloadError, match="not an http.s. URL"):
            client.download(1, str(tmp_path), "https://%s/bucket/1.wav" % host)
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("size, shown", [(1023, "(1023 B)"), (1024, "(1.0 KiB)"), (1536, "(1.5 KiB)"),
                                         (1024 * 1024, "(1.0 MiB)")])
def test_a_saved_runs_line_shows_its_size_in_the_right_unit(size, shown):
    """#4313 (1024 B shown as "1024 B"): the line of a saved run gives its size in B below 1 KiB only."""
    line = sb._outcome_line(sb.FetchOutcome(7, "saved", "sounds/7.wav", size))
    assert line.endswith("sounds/7.wav " + shown)


@pytest.mark.skipif(fcntl is None or not os.path.isdir("/proc/self/fd"), reason="needs flock and /proc/self/fd")
def test_a_generate_refused_for_a_folder_in_use_leaves_no_file_open(fake, make_client, tmp_path):
    """#3476 (the lock's descriptor not closed when the lock is refused): a refused run leaks nothing,
    however often it is tried (a long-lived program would run out of descriptors)."""
    holder = open(str(tmp_path / sb.MANIFEST_NAME), "a")  # another run, still under way
    try:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        client = make_client()
        gc.collect()  # (what earlier tests left for the collector closes now, not during the count)
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            with pytest.raises(sb.ConfigurationError, match="another generate run"):
                sb.generate(client, ["drip"], str(tmp_path))
        gc.collect()
        assert len(os.listdir("/proc/self/fd")) - before < 3  # one left open per refusal before
    finally:
        holder.close()
    assert fake.tasks == {}


def test_generate_tries_the_api_again_after_an_earlier_call_found_it_out_of_reach(fake, make_client, tmp_path):
    """#3513 (generate not clearing what an earlier call concluded): a Client whose get_results found the
    API out of reach (every try cut off unanswered) submits again in a later generate, as fetch would."""
    fake.add_runs([1])
    fake.bulk_faults = [("drop",)] * 5
    client = make_client()
    assert "cannot be reached" in client.get_results([1])[1].error and client.unreachable is not None
    fake.task_plan.append(("success", 0))
    (got,) = sb.generate(client, ["drip"], str(tmp_path))
    assert got.status == "saved" and len(fake.tasks) == 1


def test_the_usage_line_names_an_installed_command_called_with_nothing_else(monkeypatch):
    """#4662 (argv[1] read where argv[0] is meant): an installed script run with no argument at all
    (sys.argv holds only its path) still names itself in the usage line, without a traceback."""
    monkeypatch.setattr(sys, "argv", ["/opt/tools/bin/sound-bulk"])
    out, err = io.StringIO(), io.StringIO()
    code = sb.main(None, stdin=io.StringIO(""), stdout=out, stderr=err)  # None: the command line is sys.argv
    assert code == 2 and "usage: sound-bulk" in err.getvalue() + out.getvalue()
    assert "Traceback" not in err.getvalue()


def test_an_api_that_goes_away_in_the_middle_of_generate_ends_it_with_every_prompt_once(fake, make_client,
                                                                                       tmp_path):
    """#3746 (the prompts generate did not send, once the API was found out of reach midway, not saying why):
    the API answers the first submission, then refuses every connection.  The next submission finds it
    out of reach; the task made is left for a rerun, unchecked; the prompts not sent say why, once."""
    fake.task_plan.append(("success", 5))  # the first task is still generating when the API goes
    calls = []

    def gate():
        calls.append(1)
        if len(calls) == 1:
            fake.api.stop()  # this answer still goes out; new connections are refused from now on
    fake.api_gate = gate
    client = make_client()
    got = sb.generate(client, ["a", "b", "c", "d"], str(tmp_path), workers=1)
    assert [o.prompt for o in got] == ["a", "b", "c", "d"]
    assert got[0].status == "pending" and got[0].error == sb._NOT_CHECKED and got[0].task_id
    assert [(o.status, o.error) for o in got[1:]] == [("error", "not submitted: the API could not be reached")] * 3
    assert len(fake.tasks) == 1

