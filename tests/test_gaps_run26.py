"""Gaps a mutation run (tools/mutate.py --seed 26, on main 4846967) showed: the suite passed with these wrong."""

import sys

import pytest

import sound_bulk as sb


def test_a_409_from_the_bulk_call_is_retried_and_the_run_is_saved(fake, client, tmp_path, sleeps):
    fake.add_run(1)
    fake.bulk_faults.append(("status", 409))
    outcomes = client.fetch([1], str(tmp_path))
    assert [o.status for o in outcomes] == ["saved"]
    assert len(fake.seen("api", "POST")) == 2 and len(sleeps.waits) >= 1


def test_the_user_agent_names_the_python_version(fake, client):
    fake.add_run(1)
    client.get_results([1])
    agent = fake.seen("api", "POST")[0]["headers"]["user-agent"]
    assert agent.startswith("sound_bulk/%s " % sb.__version__)
    assert agent.endswith("(+python %d.%d)" % sys.version_info[:2])


def test_a_download_that_stays_short_says_how_many_bytes_were_expected(fake, make_client, tmp_path):
    fake.add_run(5, size=10000)
    fake.storage_faults[5] = ["truncate"] * 10
    client = make_client(max_attempts=1)
    with pytest.raises(sb.DownloadError) as info:
        client.download(5, str(tmp_path))
    assert (info.value.run_id, info.value.expected) == (5, 10000)
    assert 0 < info.value.received < 10000
