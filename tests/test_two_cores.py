"""tests/two_cores.py, the plugin that shares the suite with forked workers: a small suite run with it in a
child pytest, where what each process ran is known."""
import os
import subprocess
import sys

import pytest

from conftest import HERE

CONFTEST = """
import os
import sys
sys.path.insert(0, {here!r})
os.environ["TWO_CORES_MAIN"] = str(os.getpid())  # pytest's process; the workers inherit it


def pytest_addoption(parser, pluginmanager):
    import two_cores
    pluginmanager.register(two_cores.TwoCores(), "two-cores")
"""

MODULE = """
import os
import time
import warnings

import pytest

MODULE = {module!r}
MAIN = os.environ["TWO_CORES_MAIN"]


def log(*words):
    fd = os.open(os.environ["TWO_CORES_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (" ".join(map(str, words)) + "\\n").encode())
    os.close(fd)


def wait_for(*lines):
    # until the log holds lines that start with each of ``lines`` (60 s at most)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with open(os.environ["TWO_CORES_LOG"]) as f:
            have = f.read().splitlines()
        if all(any(line.startswith(start) for line in have) for start in lines):
            return
        time.sleep(0.01)


@pytest.fixture(scope="module", autouse=True)
def module_fixture():
    log("setup", MODULE, os.getpid())
    yield
    log("teardown", MODULE, os.getpid())


@pytest.mark.parametrize("n", range({count}))
def test_it(n):
    log("run", MODULE, n, os.getpid())
    value = n
{special}
"""

SPECIAL = {
    "a": """
    if n == 0:  # this process goes on once the workers are in a34 and a33 (each took one)
        wait_for("run a 33 ", "run a 34 ")
    if n == 5:
        print("shown a5")
        assert value == 3
    if n == 33 and str(os.getpid()) != MAIN:  # ends once pytest's process is at a33 (0.3 s after a32)
        wait_for("run a 32 " + MAIN)
        time.sleep(0.3)
        log("end", MODULE, n, os.getpid())
    if n == 34 and str(os.getpid()) != MAIN:  # dies once a33 has ended and its record is written (0.3 s)
        wait_for("end a 33 ")
        time.sleep(0.3)
        os._exit(3)
""",
    "b": """
    if n == 1:
        warnings.warn("careful b1")
""",
    "c": """
    wait_for("run c 0 ", "run c 1 ")  # c1 and c0 run at the same time: the workers' first tests
    if n == 0:
        print("shown c0")
        assert value == 7
    if n == 1:
        pytest.skip("skipped c1")
""",
}


def _small_suite(folder):
    """Runs the small suite in a child pytest (an early scenario: conftest): its exit status, its output
    and the log its tests wrote."""
    import pathlib
    folder = pathlib.Path(folder)
    (folder / "conftest.py").write_text(CONFTEST.format(here=HERE))
    for module, count in (("a", 35), ("b", 3), ("c", 2)):
        (folder / ("test_%s.py" % module)).write_text(
            MODULE.format(module=module, count=count, special=SPECIAL[module].strip("\n")))
    log = folder / "log"
    log.write_text("")
    env = dict(os.environ, TWO_CORES_LOG=str(log))
    env.pop("SOUND_BULK_EARLY", None)
    env["SOUND_BULK_WORKERS"] = "2"  # whatever this run has (tools/suite_time.py sets it)
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
    proc = subprocess.run(command, cwd=str(folder), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=300)
    return proc.returncode, proc.stdout, log.read_text()


@pytest.mark.skipif(not hasattr(os, "fork") or (os.cpu_count() or 1) < 2, reason="the workers need fork and 2 cores")
@pytest.mark.early(scenario=_small_suite)
def test_the_workers_take_tests_from_the_back_and_pytest_reports_them_all_in_order(early):
    """Timing assumed: the two workers start, and each takes one of c1 and c0, within 60 s (the two wait
    for each other); each then takes tests from the back until one is in a34 and the other in a33 (a0
    waits for that).  pytest's process runs a0-a32 and comes to a33 while it is still under way (it ends
    0.3 s after a32): it waits for its record, and does not run it again.  The worker in a34 dies 0.3 s
    after a33 has ended (its record written by then): pytest's process runs a34 itself.  It hands on
    the workers' reports, failure, skip and warning included, in collection order.  pytest's process
    keeps a module's fixture up for the tests it runs in a row; a worker, which does not know its next
    test, tears it down after each."""
    returncode, out, log = early()
    assert returncode == 1, out
    assert "2 failed, 37 passed, 1 skipped, 1 warning" in out, out
    names = [line.split(" ")[0] for line in out.splitlines() if " PASSED " in line or " FAILED " in line
             or " SKIPPED " in line]
    assert names == (["test_a.py::test_it[%d]" % n for n in range(35)] + ["test_b.py::test_it[%d]" % n
                                                                         for n in range(3)]
                     + ["test_c.py::test_it[%d]" % n for n in range(2)]), out
    assert "shown a5" in out and "assert 5 == 3" in out  # pytest's own failure, with its rewritten assert
    assert "shown c0" in out and "assert 0 == 7" in out  # a worker's, just the same
    assert "careful b1" in out and "skipped c1" in out

    runs, fixtures = {}, {}
    for line in log.splitlines():
        words = line.split()
        if words[0] == "run":
            runs.setdefault(words[1] + words[2], []).append(int(words[3]))
        elif words[0] != "end":
            fixtures.setdefault(int(words[2]), []).append(words[0] + " " + words[1])
    main = runs["a0"][0]
    workers = {runs["c0"][0], runs["c1"][0]}
    assert len(workers) == 2 and main not in workers, (log, out)
    dead = runs["a34"][0]
    assert {runs["a33"][0], dead} == workers
    assert {name: pids for name, pids in runs.items() if pids != [main]} == {
        "a33": [runs["a33"][0]], "a34": [dead, main], "b0": runs["b0"], "b1": runs["b1"], "b2": runs["b2"],
        "c0": runs["c0"], "c1": runs["c1"]}, runs
    assert all(len(runs[name]) == 1 and runs[name][0] in workers for name in ("b0", "b1", "b2")), runs
    assert len(runs) == 40
    # a32 here was followed by a33, a worker's: a's fixture went down, and came up again for a34
    assert fixtures[main] == ["setup a", "teardown a"] * 2
    for worker in workers:
        took = [name for name, pids in runs.items() if pids[0] == worker]
        expected = sorted("setup " + name[0] for name in took)
        assert sorted(line for line in fixtures[worker] if line.startswith("setup ")) == expected, fixtures
        assert fixtures[worker].count("teardown a") == len([n for n in took if n[0] == "a"]) - (worker == dead)
