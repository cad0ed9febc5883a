"""The command line at its edges: messages written for a shell, options anywhere, bad local input,
help that fits the terminal, the fake's own command line, and the README's library example."""

import gc
import inspect
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import warnings

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import fake_api
from conftest import CHILD_MODULE_DIR, THOROUGH, any_text, property_scenario
import sound_bulk as sb
from fake_api import API_KEY

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODULE = os.path.abspath(sb.__file__)
MODULE_DIR = CHILD_MODULE_DIR  # cwd of subprocesses (`python -m` looks there first): a compiled copy (conftest)
NOWHERE = "http://127.0.0.1:9/apis"  # the discard port: nothing listens, nothing leaves the machine


def run(argv, stdin=""):
    out, err = io.StringIO(), io.StringIO()
    code = sb.main(argv, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def child(args, timeout=60, **kw):
    """A Python child (-S: the standard library is all it needs, and site's .pth files cost ~80 ms of
    every start here) from the module's folder: (exit status, stdout, stderr) as text."""
    proc = subprocess.Popen([sys.executable, "-S"] + args, cwd=kw.pop("cwd", MODULE_DIR), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# -- messages written for the command line ----------------------------------------------------------

def test_missing_key_on_the_cli_says_how_to_set_it_in_a_shell(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("CAMB_API_BASE_URL", fake.base_url)
    for argv in (["fetch", "101"], ["urls", "101"], ["generate", "rain"]):
        code, out, err = run(argv + ([] if argv[0] == "urls" else ["-o", str(tmp_path)]))
        assert code == 2, err
        assert ("set CAMB_API_KEY=" if os.name == "nt" else "export CAMB_API_KEY=") in err
        assert "api_key=" not in err  # that is the library's wording, not a shell's
        assert "Traceback" not in err
    assert fake.requests == []
    with pytest.raises(sb.ConfigurationError, match="pass api_key= or set CAMB_API_KEY"):
        sb.Client(base_url=fake.base_url)  # the library keeps its own wording


def test_common_options_work_before_the_command(env, tmp_path):
    env.add_runs([1, 2])
    code, out, err = run(["--json", "-q", "fetch", "1", "2", "-o", str(tmp_path)])
    assert code == 0, err
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["saved", "saved"]
    assert err == ""  # -q before the command is honoured too
    # after the command wins over before it
    code, out, err = run(["--base-url", "http://127.0.0.1:9/apis", "--timeout", "1", "fetch", "1",
                          "--base-url", env.base_url, "-o", str(tmp_path), "--timeout", "5"])
    assert code == 0, err
    assert out.split()[:2] == ["1", "skipped"]
    code, out, err = run(["--base-url", env.base_url, "urls", "1"])
    assert code == 0 and json.loads(out)["status"] == "ready"


@pytest.mark.parametrize("command", [["fetch", "101"], ["generate", "rain on a roof", "--wait", "0"]])
def test_out_that_is_a_file_is_a_usage_error_before_any_request(env, tmp_path, command):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    for out_arg in (str(target), str(target / "sub")):
        code, out, err = run(command + ["-o", out_arg])
        assert code == 2, err
        assert "not a folder" in err and "Traceback" not in err
    assert env.requests == []
    assert target.read_text() == "mine"
    assert sorted(os.listdir(str(tmp_path))) == ["notes.txt"]


def _usage_children(folder):
    """The children of the test below: each form's argv, exit status, stdout and stderr (an early scenario:
    conftest)."""
    script = os.path.join(folder, "sound-bulk")
    with open(script, "w") as f:
        f.write("import sys\nsys.path.insert(0, %r)\nimport sound_bulk\nsound_bulk.console_main()\n" % MODULE_DIR)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    forms = [["-S", "-m", "sound_bulk", "--help"], ["-S", script, "--bogus"]]
    procs = [subprocess.Popen([sys.executable] + args, cwd=MODULE_DIR, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for args in forms]
    results = []
    for proc, args in zip(procs, forms):
        outputs = [o.decode() for o in proc.communicate(timeout=60)]
        results.append((args, proc.returncode, outputs))
    return results


@pytest.mark.early(scenario=_usage_children)
def test_usage_line_names_the_command_as_typed(early):
    """`python -m sound_bulk` and an installed `sound-bulk` script (the form pip writes: import the module,
    call console_main) each see their own name; `python sound_bulk.py` is checked by
    test_help_fits_a_real_terminal_of_60_columns (on a lone copy, -I).  Both children here run -S: the
    module needs only the standard library (a lone copy on `python -S` fetching:
    test_portable.py::test_bare_interpreter_fetch_from_a_lone_copy_saves_files)."""
    # (exit status, where the usage line goes, its pattern), per form
    expected = [(0, 0, r"usage: \S*python\S* -m sound_bulk "), (2, 1, r"usage: sound-bulk ")]
    results = early()
    assert len(results) == len(expected)
    for (args, code, outputs), (status, stream, pattern) in zip(results, expected):
        assert code == status, outputs
        assert "Traceback" not in outputs[1], outputs
        assert re.search(pattern, outputs[stream]), (args, outputs)
        assert "python -m sound_bulk" not in outputs[stream] or "-m" in args
        if status == 0:
            assert "fetch" in outputs[0] and "generate" in outputs[0]  # the whole help, not a stub


def test_summary_counts_agree_in_number(env, tmp_path):
    env.add_run(1)
    code, _, err = run(["fetch", "1", "-o", str(tmp_path / "a")])
    assert code == 0 and "1 saved (1 run," in err, err
    env.add_runs([2, 3], kind="html")
    code, _, err = run(["fetch", "2", "3", "-o", str(tmp_path / "b")])
    assert code == 1 and "2 errors (2 runs," in err, err
    code, _, err = run(["fetch", "2", "-o", str(tmp_path / "c")])
    assert code == 1 and "1 error (1 run," in err, err


def test_quiet_json_prints_each_problem_once(env, tmp_path):
    env.add_run(1, "failed")
    env.add_run(2, "pending")
    env.add_run(3)
    code, out, err = run(["fetch", "1", "2", "3", "-q", "--json", "-o", str(tmp_path)])
    assert code == 1
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["failed", "pending", "saved"]
    assert err == ""  # the problems are in the JSON lines; not again on stderr
    code, out, err = run(["fetch", "1", "2", "3", "-q", "-o", str(tmp_path)])
    assert out == ""
    assert [line.split()[1:3] for line in err.splitlines()] == [["1", "failed"], ["2", "pending"]]


@pytest.mark.parametrize("command", [[], ["fetch"], ["urls"], ["generate"]])
def test_help_is_wrapped_to_the_terminal(monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "60")  # argparse asks the terminal through $COLUMNS first
    code, out, _ = run(command + ["--help"])
    assert code == 0
    too_long = [line for line in out.splitlines() if len(line) > 60]
    # only the examples (indented, each one command) may be wider; prose never is
    assert all(line.startswith("  ") and "sound_bulk fetch" in line for line in too_long), too_long


def test_readme_command_synopsis_agrees_with_help():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    synopsis = re.findall(r"^python -m sound_bulk (\w+) +(.*)$", readme, re.M)
    assert {name for name, _ in synopsis} == {"fetch", "urls", "generate"}
    for name, rest in synopsis:
        _, help_text, _ = run([name, "--help"])
        for option, metavar in re.findall(r"\[(-[-\w]+) ([^\]|]+?)\]", rest):
            assert re.search(r"%s %s\b" % (re.escape(option), re.escape(metavar)), help_text), (name, option)


def test_manifest_option_takes_the_file_or_its_folder(env, tmp_path):
    env.add_runs([7, 8])
    folder = tmp_path / "g"
    folder.mkdir()
    (folder / sb.MANIFEST_NAME).write_text(
        '{"event": "created", "key": "a-1", "task_id": "t1"}\n{"event": "done", "key": "a-1", "run_id": 7}\n'
        '{"event": "done", "key": "b-1", "run_id": 8}\n')
    for path in (str(folder), str(folder / sb.MANIFEST_NAME)):
        code, out, err = run(["fetch", "--manifest", path, "-o", str(tmp_path / path[-3:]), "--json"])
        assert code == 0, err
        assert [json.loads(line)["run_id"] for line in out.splitlines()] == [7, 8]


# -- local input that once gave a traceback --------------------------------------------------------

@pytest.mark.parametrize("option, value", [("--timeout", "1e10"), ("--timeout", "inf"), ("--timeout", "nan"),
                                           ("--timeout", "-1"), ("--wait", "inf"), ("--wait", "1e300")])
def test_seconds_out_of_range_are_refused_saying_why(env, tmp_path, option, value):
    env.add_run(101)  # ready: code that took the value would end at once, not wait for ages
    code, out, err = run(["fetch", "101", "-o", str(tmp_path), option, value])
    assert code == 2 and "Traceback" not in err
    assert option in err
    if value in ("1e10", "inf", "1e300"):
        assert "at most 604800 seconds" in err and "overflow" in err
    assert env.requests == []


def test_library_refuses_a_timeout_that_would_overflow(fake):
    with pytest.raises(sb.ConfigurationError, match="at most"):
        sb.Client(API_KEY, base_url=fake.base_url, timeout=1e10)
    sb.Client(API_KEY, base_url=fake.base_url, timeout=sb.MAX_SECONDS).close()


@pytest.mark.parametrize("argv", [["fetch", "\udcff"], ["generate", "rain \udce9", "--wait", "0"],
                                  ["fetch", "1", "-o", "d\udcff"], ["urls", "--base-url", "http://\udcc3/apis", "1"]])
def test_undecodable_argument_is_a_clean_usage_error(env, tmp_path, monkeypatch, argv):
    """POSIX hands Python undecodable argv bytes as lone surrogates (surrogateescape)."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(argv)
    assert code == 2
    assert "not valid" in err and "\\x" in err
    err.encode("ascii")  # printable on any terminal, in any encoding
    assert env.requests == [] and os.listdir(str(tmp_path)) == []


def _undecodable_argv_children(folder):
    """The two children of the test below, in turn (an early scenario: conftest): (status, stdout, stderr)
    of each, and what is left in ``folder``."""
    first = child(["-m", "sound_bulk", "fetch", os.fsdecode(b"\xff\xfe"), "-o", folder],
                  env=dict(os.environ, CAMB_API_KEY="k", LC_ALL="C.UTF-8", CAMB_API_BASE_URL=NOWHERE))
    second = child(["-m", "sound_bulk", "generate", "x", "-o", os.fsdecode(b"dir\xff")], cwd=folder,
                   env=dict(os.environ, CAMB_API_KEY="k", LC_ALL="C.UTF-8", PYTHONPATH=MODULE_DIR,
                            CAMB_API_BASE_URL=NOWHERE))
    return first, second, os.listdir(folder)


@pytest.mark.skipif(os.name != "posix", reason="argv bytes are a POSIX notion")
@pytest.mark.early(scenario=_undecodable_argv_children)
def test_undecodable_argv_bytes_from_a_real_shell(early):
    (code, out, err), (code2, out2, err2), left = early()
    assert code == 2 and "Traceback" not in err, err
    assert code2 == 2 and "Traceback" not in err2 and "\\xff" in err2, err2
    assert left == []


WORDS = ["fetch", "urls", "generate", "-", "--json", "-q", "-v", "--timeout", "--wait", "--workers", "-o",
         "--manifest", "--base-url", "--duration", "--type", "--from-file", "--resubmit", "--help", "101", "0",
         "1e400", "nan", "-1", "http://127.0.0.1:9/apis", "ftp://x", "", " ", "\udcff", "\x00", "\u202e"]


@settings(max_examples=2000 if THOROUGH else 25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.one_of(st.sampled_from(WORDS), any_text(12)), max_size=7),
       stdin=any_text(20))
@example(argv=["generate", "--from-file", "a\x00"], stdin="")  # open() raised ValueError: embedded null byte
@example(argv=["fetch", "--manifest", "\x00"], stdin="")
@example(argv=["fetch", "-", "-o", "\x00"], stdin="1")
def no_argv_gives_a_traceback(tmp_path, argv, stdin):
    """Whatever the arguments, main() returns an exit status; with no key nothing can be sent."""
    os.environ.pop("CAMB_API_KEY", None)
    os.environ["CAMB_API_BASE_URL"] = NOWHERE
    old = os.getcwd()
    os.chdir(str(tmp_path))
    try:
        code, out, err = run(argv, stdin=stdin)
    finally:
        os.chdir(old)
        del os.environ["CAMB_API_BASE_URL"]
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in err


@pytest.mark.early(scenario=property_scenario(no_argv_gives_a_traceback, folder_as="tmp_path"))
def test_no_argv_gives_a_traceback(early):
    """The property above, run as an early scenario (conftest): it changes the process's environment and
    working folder while it runs, and puts them back."""
    early()  # fails the test with the property's failure, if any


# -- the fake's own command line ----------------------------------------------------------------------

@pytest.mark.parametrize("runs, message", [("abc", "not a run ID"), ("5-3", "empty range"),
                                           ("1-2-3", "not a run ID"), ("", "no runs to serve")])
def test_fake_command_line_refuses_bad_runs_clearly(capsys, runs, message):
    with pytest.raises(SystemExit) as exc:
        fake_api.main(["--runs", runs])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_fake_says_when_it_will_stop(capsys):
    assert fake_api.main(["--runs", "1-3", "--seconds", "0.01"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("CAMB_API_BASE_URL=http://127.0.0.1:")  # the line other programs read
    assert "stopping in 0.01 s" in err and "3 ready" in err and "stopped" in err


def _fake_started_by_hand(folder):
    """The test below's child (an early scenario: conftest): its first lines, its exit status, the rest of
    its stderr."""
    # -S: the fake needs only the standard library; site's .pth files cost ~80 ms of every start here
    proc = subprocess.Popen([sys.executable, "-S", os.path.join(HERE, "fake_api.py"), "--runs", "101-102"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first_out = proc.stdout.readline()
        first_err = proc.stderr.readline()
        if first_out.startswith(b"CAMB_API_BASE_URL=") and b"press Ctrl-C to stop" in first_err:
            proc.send_signal(signal.SIGINT)  # only once it says it runs
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return first_out, first_err, proc.returncode, err


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT")
@pytest.mark.early(scenario=_fake_started_by_hand)
def test_fake_started_by_hand_runs_until_ctrl_c(early):
    first_out, first_err, code, err = early()
    assert first_out.startswith(b"CAMB_API_BASE_URL=")
    assert b"press Ctrl-C to stop" in first_err
    assert code == 0 and b"stopped" in err and b"Traceback" not in err


def test_demo_folder_is_ignored_by_git():
    ignored = open(os.path.join(ROOT, ".gitignore")).read().split()
    assert 'const="sound_bulk-demo"' in open(os.path.join(HERE, "fake_api.py")).read()  # --demo's default
    assert "sound_bulk-demo/" in ignored


# -- the library as the README shows it -----------------------------------------------------------------

def test_readme_library_example_runs_twice_without_warnings(env, tmp_path, monkeypatch):
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    code = re.search(r"## The library in ten lines\s+```python\n(.*?)```", readme, re.S).group(1)
    assert "with sound_bulk.Client() as client:" in code
    env.add_runs([101, 102, 103, 104, 105, 106])
    env.task_plan = [("success", 0), ("success", 0)]
    real_client = sb.Client
    monkeypatch.setattr(sb, "Client", lambda *a, **kw: real_client(*a, sleep=lambda s: None, **kw))
    monkeypatch.chdir(tmp_path)
    # Each gc.collect() below looks only at objects made since the session's start-up: conftest set
    # those aside (gc.freeze, 3.7+) once the tests were collected
    for attempt in (1, 2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            namespace = {}
            exec(compile(code, "README.md", "exec"), namespace)
            del namespace
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], attempt
        assert sorted(os.listdir("sounds"))[:6] == ["101.wav", "102.wav", "103.wav", "104.wav",
                                                    "900001.wav", "900002.wav"]
    assert len(env.tasks) == 2  # the second run paid for nothing


def test_public_arguments_are_documented():
    def documented(name, doc):
        return re.search(r"``%s[`(]" % name, doc or "")  # ``name`` or ``name(args)``
    for name in list(inspect.signature(sb.Client.__init__).parameters)[1:]:
        assert documented(name, sb.Client.__doc__), name
    for method, names in ((sb.Client.fetch, ("workers", "progress", "on_outcome", "cancel", "on_wait")),
                          (sb.Client.download, ("progress", "cancel"))):
        for name in names:
            assert name in inspect.signature(method).parameters
            assert documented(name, method.__doc__), (method.__name__, name)
    for member in (sb.FetchOutcome.ok, sb.FetchOutcome.as_dict, sb.PromptOutcome.ok):
        assert (member.__doc__ or "").strip()


def _help_on_a_60_column_pty(folder):
    """The test below's child (an early scenario: conftest): its exit status and what it wrote on the pty."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    shutil.copy(MODULE, os.path.join(folder, "sb.py"))  # a short name: the usage line must fit in 60 columns too
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 60, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-I", "-S", "sb.py", "generate", "--help"], cwd=folder,
                            stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    try:
        while select.select([master], [], [], 30)[0]:  # bounded: 30 s of silence ends the wait
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        proc.wait(timeout=60)
        os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pty")
@pytest.mark.early(scenario=_help_on_a_60_column_pty)
def test_help_fits_a_real_terminal_of_60_columns(early):
    """No $COLUMNS: the width comes from the terminal itself (a pty set to 60 columns).  The child is
    also `python -I -S sb.py` from a folder holding only that file (a renamed copy): the usage line names
    the script as typed, and the module needs nothing but a bare interpreter (no PYTHON* variables, no
    site-packages)."""
    code, text = early()
    assert code == 0 and "resumes them" in text and "Traceback" not in text, text
    assert re.search(r"usage: \S*python\S* sb\.py generate ", text), text  # the script's name as typed
    assert "-m sound_bulk" not in text
    assert max(len(line) for line in text.splitlines()) <= 60, text
