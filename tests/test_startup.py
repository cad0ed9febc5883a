"""What every command pays before its work: the help's width without shutil (bz2, lzma, fnmatch)."""

import sys

import pytest

import sound_bulk as sb
from conftest import run


@pytest.mark.parametrize("argv", [["--help"], ["fetch", "--help"], ["fetch", "x"], ["generate", "--workers", "0", "p"]])
def test_commands_parse_and_help_without_shutil(monkeypatch, argv):
    """`import shutil` fails here (sys.modules entry None): help, usage errors and parsing still work."""
    monkeypatch.setenv("COLUMNS", "70")
    monkeypatch.setitem(sys.modules, "shutil", None)
    code, out, err = run(argv)
    assert "Traceback" not in out + err and "shutil" not in out + err
    assert code == (0 if "--help" in argv else 2)
    if "--help" in argv:
        assert "usage:" in out and max(len(line) for line in out.splitlines() if not line.startswith("  ")) <= 70


@pytest.mark.parametrize("value, terminal, expected", [
    ("55", OSError, 55),       # $COLUMNS first, as shutil.get_terminal_size() does
    ("1", 91, 1),              # any width above 0 is taken as it is, from either source
    (None, 1, 1),
    ("", 91, 91),              # then standard output's terminal
    ("0", 91, 91),             # a zero or a word in $COLUMNS is ignored
    ("wide", 91, 91),
    ("-3", OSError, 80),       # not a terminal either: 80
    (None, ValueError, 80),    # a closed standard output
    (None, 0, 80),             # a terminal that says 0 columns (a serial console)
])
def test_terminal_columns_follow_shutils_rule(monkeypatch, value, terminal, expected):
    import os
    if value is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", value)

    def size(fd):
        if isinstance(terminal, type):
            raise terminal("not a terminal")
        return os.terminal_size((terminal, 24))

    monkeypatch.setattr(os, "get_terminal_size", size)
    assert sb._terminal_columns() == expected


def test_terminal_columns_without_a_standard_output(monkeypatch):
    """pythonw and some embedders have no sys.__stdout__ at all."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys, "__stdout__", None)
    assert sb._terminal_columns() == 80


def test_help_follows_the_terminal_width_from_one_call_of_main_to_the_next(monkeypatch):
    """main() keeps its parser between calls (argparse takes ms to build one), but a terminal resized
    in between gets help wrapped to its new width."""
    widths = []
    for columns in ("60", "100", "60"):
        monkeypatch.setenv("COLUMNS", columns)
        code, out, err = run(["fetch", "--help"])
        assert code == 0
        widths.append(max(len(line) for line in out.splitlines()))
    assert widths[0] <= 60 and 80 < widths[1] <= 100 and widths[2] == widths[0]


def test_the_usage_line_follows_how_main_was_called_from_one_call_to_the_next(monkeypatch, tmp_path):
    """With no argv, main() names the command as it was typed; with one, `python -m sound_bulk`."""
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "sound-bulk"), "fetch", "--workers", "0"])
    code, out, err = run(None)
    assert code == 2 and err.startswith("usage: sound-bulk fetch"), err
    code, out, err = run(["fetch", "--workers", "0"])
    assert code == 2 and err.startswith("usage: python -m sound_bulk fetch"), err


def test_one_parser_serves_every_call_while_nothing_changes(monkeypatch):
    monkeypatch.setenv("COLUMNS", "77")
    assert sb._parser("sound-bulk") is sb._parser("sound-bulk")
    assert sb._parser("sound-bulk") is not sb._parser("python -m sound_bulk")


def test_a_command_replaced_after_the_parser_was_built_is_the_one_that_runs(monkeypatch):
    """The parser is kept between calls of main(), but the commands are looked up when they run: a test or
    a notebook that replaces one is heard."""
    assert run(["urls", "--help"])[0] == 0  # the parser is built (and kept)
    monkeypatch.setattr(sb, "_cmd_urls", lambda args, console, stdin: 42)
    assert run(["urls", "101"])[0] == 42


class _Left(Exception):
    pass


@pytest.fixture
def leaving(monkeypatch):
    """os._exit recorded instead of done; the process looks like it runs the main thread alone."""
    import os
    import threading
    left = []

    def _exit(code):
        left.append(code)
        raise _Left()

    monkeypatch.setattr(os, "_exit", _exit)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    return left


def test_python_m_leaves_at_once_once_its_output_is_flushed(leaving, monkeypatch):
    """`python -m sound_bulk` skips the interpreter's teardown when nothing else runs: the exit status is
    the command's, and what it printed is flushed first (nothing written is lost)."""
    import io

    class Out(io.StringIO):
        flushed = False

        def flush(self):
            Out.flushed = True

    monkeypatch.setattr(sys, "stdout", Out())
    with pytest.raises(_Left):
        sb._end_process(3)
    assert leaving == [3] and Out.flushed


@pytest.mark.parametrize("why", ["another thread", "unflushable output", "not a number"])
def test_python_m_exits_normally_when_something_may_still_need_it(leaving, monkeypatch, why):
    """A thread still alive (it may be finishing a paid submission) gets the normal exit, which waits for
    it; so does output that cannot be flushed, or a SystemExit carrying text."""
    import threading
    code = 1
    if why == "another thread":
        monkeypatch.setattr(threading, "active_count", lambda: 2)
    elif why == "unflushable output":
        class Broken:
            def flush(self):
                raise BrokenPipeError(32, "Broken pipe")
        monkeypatch.setattr(sys, "stdout", Broken())
    else:
        code = "sound_bulk: stopped"
    assert sb._end_process(code) is None
    assert leaving == []


def test_python_m_sound_bulk_takes_the_quick_exit():
    """`python -m sound_bulk` (here through runpy, as -m does) ends through _end_process: its output is
    there, its status is the command's, and the interpreter's teardown (an exit handler registered
    before it) never runs.  A child interpreter: the quick exit ends the process it runs in."""
    import subprocess
    from conftest import CHILD_MODULE_DIR
    code = ("import atexit, runpy, sys\n"
            "atexit.register(print, 'teardown')\n"
            "sys.argv = ['sound_bulk', '--version']\n"
            "runpy.run_module('sound_bulk', run_name='__main__', alter_sys=True)\n")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=CHILD_MODULE_DIR, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "sound_bulk %s\n" % sb.__version__  # before: "...\nteardown\n"
