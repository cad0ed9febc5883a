"""Portability: a platform without some POSIX-only name (Windows, macOS, odd builds) still fetches and
generates, and the module alone on a bare ``python -S`` (3.6 included) saves files."""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

import sound_bulk as sb
from conftest import CHILD_MODULE_DIR
from fake_api import API_KEY, body_sha256

CAPTURE = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)  # capture_output, text: 3.7+

# Names that exist on Linux but not everywhere (pread, posix_fadvise, the O_ flags: not on Windows; link: not on
# every file system or build; kill: signals are POSIX; SIGTERM: not on every platform).  O_BINARY is the
# opposite (Windows only), so it is missing here already: the module must open files without it as well.
POSIX_ONLY = [
    (os, "pread"), (os, "pwrite"), (os, "posix_fadvise"), (os, "POSIX_FADV_DONTNEED"), (os, "link"), (os, "kill"),
    (os, "O_NOFOLLOW"), (os, "O_CLOEXEC"), (os, "O_DIRECTORY"), (os, "O_BINARY"), (os, "fdatasync"),
    (os, "getuid"), (os, "geteuid"), (os, "statvfs"), (signal, "SIGTERM"), (signal, "SIGKILL"),
    (signal, "SIGHUP"), (signal, "SIGPIPE"),
]
TORN = b'{"event": "created", "key": "tor'  # a manifest line cut short by a crash


def _point_the_cli_at(fake, monkeypatch):
    monkeypatch.setenv("CAMB_API_KEY", API_KEY)
    monkeypatch.setenv("CAMB_API_BASE_URL", fake.base_url)
    fake.default_task_plan = ("success", 0)  # tasks done at the first poll: no real sleep
    monkeypatch.setattr(sb._Writer, "WRITEBACK_STEP", 4096)  # reach the write-back advice with small files
    return fake


@pytest.fixture
def cli_env(fake, monkeypatch):
    return _point_the_cli_at(fake, monkeypatch)


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    code = sb.main(argv, stdin=io.StringIO(""), stdout=out, stderr=err)
    return code, [json.loads(x) for x in out.getvalue().splitlines()], err.getvalue()


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fetch_and_generate(fake, tmp_path):
    """Both journeys through the CLI; asserts what a user would see: files with the right bytes, a manifest."""
    fake.add_run(1, size=20000)
    fake.add_run(2, size=9000, kind="flac")
    code, got, err = run(["fetch", "1", "2", "-o", str(tmp_path / "f"), "--json"])
    assert code == 0, err
    assert [(g["status"], os.path.basename(g["path"])) for g in got] == [("saved", "1.wav"), ("saved", "2.flac")]
    assert sha256_of(str(tmp_path / "f" / "1.wav")) == body_sha256(1, 20000)
    assert sha256_of(str(tmp_path / "f" / "2.flac")) == body_sha256(2, 9000, "flac")
    assert sorted(os.listdir(str(tmp_path / "f"))) == ["1.wav", "2.flac"]  # no temp file left

    gen = tmp_path / "g"
    gen.mkdir()
    with open(str(gen / sb.MANIFEST_NAME), "wb") as f:
        f.write(TORN)  # the next record must start on a line of its own
    code, got, err = run(["generate", "rain on a tin roof", "-o", str(gen), "--json"])
    assert code == 0, err
    assert [g["status"] for g in got] == ["saved"] and os.path.isfile(got[0]["path"])
    with open(str(gen / sb.MANIFEST_NAME), "rb") as f:
        lines = f.read().split(b"\n")
    assert lines[0] == TORN and lines[-1] == b""
    events = [json.loads(line.decode("utf-8"))["event"] for line in lines[1:-1]]
    assert "created" in events and "saved" in events


def _both_journeys_without(folder, owner=None, name=None):
    """fetch_and_generate (and its checks) without ``owner.name``, or without any of POSIX_ONLY (an early
    scenario: conftest, with its own fake; the names are taken away while it runs, and put back)."""
    import pathlib
    from fake_api import FakeCamb
    with FakeCamb() as fake, pytest.MonkeyPatch.context() as monkeypatch:
        _point_the_cli_at(fake, monkeypatch)
        for owner_, name_ in ([(owner, name)] if owner is not None else POSIX_ONLY):
            monkeypatch.delattr(owner_, name_, raising=False)
        fetch_and_generate(fake, pathlib.Path(folder))


@pytest.mark.early(scenario=_both_journeys_without)
@pytest.mark.parametrize("owner, name", POSIX_ONLY, ids=["%s.%s" % (o.__name__, n) for o, n in POSIX_ONLY])
def test_fetch_and_generate_work_without(early, owner, name):
    early()  # fetch_and_generate's checks, in the scenario: a failed one fails this test


@pytest.mark.early(scenario=_both_journeys_without)
def test_fetch_and_generate_work_without_any_of_them(early):
    early()


def test_without_os_kill_temp_files_of_other_runs_are_kept(cli_env, tmp_path, monkeypatch):
    """Whether the process that left a temp file is gone cannot be told without os.kill: keep the file."""
    monkeypatch.delattr(os, "kill")
    cli_env.add_run(5, size=1000)
    part = tmp_path / ".5.4194305-0badcafe.part"  # a PID above Linux's largest: no such process
    part.write_bytes(b"RIFF")
    code, got, err = run(["fetch", "5", "-o", str(tmp_path), "--json"])
    assert code == 0 and got[0]["status"] == "saved", err
    assert sorted(os.listdir(str(tmp_path))) == [part.name, "5.wav"]


def test_console_main_without_sigterm(cli_env, tmp_path, monkeypatch):
    """The entry point maps SIGTERM to Ctrl-C where there is one; where there is none it just runs."""
    before, before_int, was_cli = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), sb._CLI_PROCESS[0]
    monkeypatch.delattr(signal, "SIGTERM")
    cli_env.add_run(1)
    monkeypatch.setattr(sys, "argv", ["sound-bulk", "fetch", "1", "-o", str(tmp_path), "-q"])
    try:
        with pytest.raises(SystemExit) as exit_:
            sb.console_main()
    finally:  # the CLI leaves Ctrl-C ignored on its way out and marks the process as its own: not for the tests after
        signal.signal(signal.Signals.SIGTERM, before)
        signal.signal(signal.SIGINT, before_int)
        sb._CLI_PROCESS[0] = was_cli
    assert exit_.value.code == 0
    assert os.listdir(str(tmp_path)) == ["1.wav"]


def _bare_fetch_from_a_lone_copy(folder):
    """The test below's child and its fake (an early scenario: conftest): its exit status, stdout, stderr
    and the checksums of what it saved."""
    from fake_api import FakeCamb
    lone = os.path.join(folder, "lone")
    shutil.copytree(CHILD_MODULE_DIR, lone)  # copy2: the file's time kept, so its .pyc stays valid
    with FakeCamb() as fake:
        fake.add_run(11, size=5000)
        fake.add_run(12, size=7000, kind="mp3")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(CAMB_API_KEY=API_KEY, CAMB_API_BASE_URL=fake.base_url)
        out = subprocess.run([sys.executable, "-S", "-m", "sound_bulk", "fetch", "11", "12", "-o",
                              os.path.join(folder, "o"), "--json"], cwd=lone, env=env, timeout=60, **CAPTURE)
    saved = {name: sha256_of(os.path.join(folder, "o", name)) for name in ("11.wav", "12.mp3")
             if os.path.exists(os.path.join(folder, "o", name))}
    return out.returncode, out.stdout, out.stderr, saved


@pytest.mark.early(scenario=_bare_fetch_from_a_lone_copy)
def test_bare_interpreter_fetch_from_a_lone_copy_saves_files(early):
    """`python -S -m sound_bulk fetch` from a folder holding only the file (and the .pyc Python would
    write there on a first run, copied from conftest's compiled copy, so this child does not compile the
    module again): what a locked-down host runs (in CI this runs under every version, 3.6 included)."""
    code, out, err, saved = early()
    assert code == 0, err
    assert [json.loads(x)["status"] for x in out.splitlines()] == ["saved", "saved"]
    assert saved == {"11.wav": body_sha256(11, 5000), "12.mp3": body_sha256(12, 7000, "mp3")}


# What arrived after 3.6, and what to use instead.  The suite runs on 3.6 in CI; this check also runs on the host
# Python, so a newer name is caught before it lands, even on a line no test executes.  Syntax is left to the
# parser (feature_version=(3, 6) rejects :=, positional-only parameters, match, f"{x=}" ...), names to patterns.
NEWER_THAN_36 = [
    (r"\.isascii\(", "str.isascii is 3.7+: compare with a range, or strip the ASCII characters"),
    (r"\bnullcontext\b", "contextlib.nullcontext is 3.7+"),
    (r"\bThreadingHTTPServer\b", "http.server.ThreadingHTTPServer is 3.7+: ThreadingMixIn + HTTPServer"),
    (r"\b(monotonic|time|perf_counter|process_time)_ns\b", "time.*_ns functions are 3.7+"),
    (r"\.fromisoformat\(", "fromisoformat is 3.7+"),
    (r"\bSSLCertVerificationError\b", "ssl.SSLCertVerificationError is 3.7+ (3.6 raises a plain SSLError)"),
    (r"\.reconfigure\(", "TextIOWrapper.reconfigure is 3.7+"),
    (r"\.remove(prefix|suffix)\(", "str.removeprefix/removesuffix are 3.9+"),
    (r"\bcached_property\b", "functools.cached_property is 3.8+"),
    (r"\bcapture_output\s*=", "subprocess capture_output= is 3.7+: stdout=PIPE, stderr=PIPE"),
    (r"[(,]\s*text\s*=\s*True", "subprocess text= is 3.7+: universal_newlines=True"),
    (r"from\s+__future__\s+import\s+annotations", "from __future__ import annotations is 3.7+"),
    (r"^\s*(import|from)\s+(dataclasses|contextvars|zoneinfo|graphlib|tomllib|importlib\.metadata)\b",
     "that module is newer than 3.6"),
]


def _known_36(source, add=False):
    """Whether this exact text already parsed as 3.6 syntax under this Python.  The parse is most of
    this check's cost (~0.35 s for all the files), so passes are kept, by content hash, in a file in
    the temp folder: only changed files are parsed again."""
    import hashlib
    import tempfile
    key = "%s %s\n" % (sys.version.split()[0], hashlib.sha256(source.encode("utf-8")).hexdigest())
    path = os.path.join(tempfile.gettempdir(), "sound_bulk-tests-py36-syntax-ok")
    if add:
        try:
            big = os.path.exists(path) and os.path.getsize(path) > 1 << 20
            with open(path, "w" if big else "a", encoding="ascii") as f:  # bounded: starts over past 1 MiB
                f.write(key)
        except OSError:
            pass
        return True
    try:
        with open(path, encoding="ascii") as f:
            return key in f.read()
    except (OSError, ValueError):
        return False


def _newer_than_36(path):
    import ast
    import re
    with open(path, encoding="utf-8") as f:
        source = f.read()
    name = os.path.basename(path)
    found = []
    if sys.version_info >= (3, 8) and not _known_36(source):  # older parsers take no feature_version
        try:
            ast.parse(source, path, feature_version=(3, 6))
            _known_36(source, add=True)
        except SyntaxError as exc:
            found.append("%s:%s %s" % (name, exc.lineno, exc.msg))
    for pattern, why in NEWER_THAN_36:
        for match in re.finditer(pattern, source, re.MULTILINE):
            found.append("%s:%d %s" % (name, source.count("\n", 0, match.start()) + 1, why))
    return found


def _names_newer_than_36(folder):
    """What the test below looks for, in the module and the tests (an early scenario: conftest; a static
    look at ~15,000 lines)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    here = os.path.abspath(__file__)
    paths = [os.path.abspath(sb.__file__)] + sorted(
        os.path.join(root, "tests", n) for n in os.listdir(os.path.join(root, "tests"))
        if n.endswith(".py") and os.path.join(root, "tests", n) != here)  # this file names them all
    return [f for p in paths for f in _newer_than_36(p)]


@pytest.mark.early(scenario=_names_newer_than_36)
def test_no_name_newer_than_python_36(early):
    """The module and the tests use nothing 3.6 lacks (a static look, so untested lines count too)."""
    found = early()
    assert not found, "\n".join(found)


def test_lines_fit_the_linters_120_columns():
    """ruff (in .ci/run, not installed here) refuses longer lines; this tells before landing, not after."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    long_lines = []
    for folder in ("", "tests", "tools", "benchmarks"):
        top = os.path.join(root, folder)
        names = ["sound_bulk.py"] if not folder else sorted(os.listdir(top)) if os.path.isdir(top) else []
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(top, name), encoding="utf-8") as f:
                    long_lines += ["%s:%d (%d)" % (os.path.join(folder, name), n, len(line.rstrip("\n")))
                                   for n, line in enumerate(f, 1) if len(line.rstrip("\n")) > 120]
    assert not long_lines, "lines over 120 characters: " + ", ".join(long_lines)
