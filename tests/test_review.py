"""A second adversarial review of issue 8's promises (the "review" helper): each test here broke a
README promise on main before its fix.  Servers are ``test_hostile.Hostile`` on 127.0.0.1."""

import json

import pytest

import sound_bulk as sb
from test_hostile import KEY, cli, hostile, http, make  # noqa: F401 (fixtures)


def redirecting_creation(hostile, status):
    """Task creation answered by a redirect to itself, after the server counted (and maybe made) a task."""
    created = []

    def handler(method, path, body):
        if method == "POST" and path == "/apis/text-to-sound":
            created.append(body)
            return http(status, {"task_id": "t%d" % len(created)}, reason="Redirect",
                        headers=[("Location", "/apis/text-to-sound")])
        return http(404, {"detail": "Not Found"})

    hostile.handler = handler
    return created


@pytest.mark.parametrize("status", [307, 308])
def test_a_redirect_never_sends_a_task_creation_again(hostile, make, status):
    """fails before: a 307/308 answer to task creation was followed, the POST sent again each hop
    (6 creations for one create_task, then 'more than 5 redirects').  The server did answer: it is not
    called unreachable (which would stop a generate from asking for the other prompts)."""
    created = redirecting_creation(hostile, status)
    with pytest.raises(sb.TransportError) as info:
        make().create_task("rain")
    assert len(created) == 1
    assert info.value.sent is True and "/apis/text-to-sound" in str(info.value)
    assert not isinstance(info.value, sb.APIUnreachableError)


def test_generate_pays_once_when_creation_is_redirected(hostile, monkeypatch, tmp_path):
    """fails before: 6 paid creations for one prompt; a rerun without --resubmit creates none."""
    created = redirecting_creation(hostile, 307)
    argv = ["generate", "rain", "--wait", "0", "--json", "-o", str(tmp_path)]
    code, out, err = cli(argv, hostile, monkeypatch)
    assert code == 1 and len(created) == 1, err
    code, out, err = cli(argv, hostile, monkeypatch)
    assert len(created) == 1 and "--resubmit" in json.loads(out)["error"]
