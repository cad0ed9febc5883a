"""tests/two_cores.py, the plugin that shares the suite with a forked worker: a small suite run with it in a
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
os.environ["TWO_CORES_MAIN"] = str(os.getpid())  # pytest's process; the worker inherits it


def pytest_addoption(parser, pluginmanager):
    import two_cores
    pluginmanager.register(two_cores.TwoCores({workers}), "two-cores")
"""

MODULE = """
import os
import time
import warnings

import pytest

MODULE = {module!r}


def log(*words):
    fd = os.open(os.environ["TWO_CORES_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (" ".join(map(str, words)) + "\\n").encode())
    os.close(fd)


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
    if n == 0:  # this process goes on once the worker has run c1, c0, b2, b1 and b0, and died in a34
        deadline = time.monotonic() + 60
        while not os.path.getsize(os.environ["TWO_CORES_LOG"] + ".b0") and time.monotonic() < deadline:
            time.sleep(0.01)
        with open(os.environ["TWO_CORES_LOG"] + ".b0") as f:
            stat = "/proc/%s/stat" % f.read()
        while time.monotonic() < deadline:
            try:
                with open(stat) as f:
                    if f.read().rpartition(")")[2].split()[0] == "Z":
                        break
            except OSError:
                break
            time.sleep(0.01)
    if n == 5:
        print("shown a5")
        assert value == 3
    if n == 34 and os.getpid() != int(os.environ["TWO_CORES_MAIN"]):
        os._exit(3)  # the worker dies in the middle of a test
""",
    "b": """
    if n == 0:
        with open(os.environ["TWO_CORES_LOG"] + ".b0", "w") as f:
            f.write(str(os.getpid()))
    if n == 1:
        warnings.warn("careful b1")
""",
    "c": """
    if n == 0:
        print("shown c0")
        assert value == 7
    if n == 1:
        pytest.skip("skipped c1")
""",
}


def _small_suite(folder, workers=1, special=None, counts=(("a", 35), ("b", 3), ("c", 2))):
    """Runs the small suite in a child pytest (an early scenario: conftest) with that many workers: its
    exit status, its output and the log its tests wrote."""
    import pathlib
    folder = pathlib.Path(folder)
    (folder / "conftest.py").write_text(CONFTEST.format(here=HERE, workers=workers))
    for module, count in counts:
        (folder / ("test_%s.py" % module)).write_text(
            MODULE.format(module=module, count=count, special=(special or SPECIAL)[module].strip("\n")))
    log = folder / "log"
    (folder / "log.b0").write_text("")
    env = dict(os.environ, TWO_CORES_LOG=str(log))
    env.pop("SOUND_BULK_EARLY", None)
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
    proc = subprocess.run(command, cwd=str(folder), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=300)
    return proc.returncode, proc.stdout, log.read_text()


@pytest.mark.skipif(not hasattr(os, "fork") or (os.cpu_count() or 1) < 2 or not os.path.isdir("/proc/self"),
                    reason="the worker needs fork and 2 cores; the test looks at it in /proc")
@pytest.mark.early(scenario=_small_suite)
def test_the_worker_takes_tests_from_the_back_and_pytest_reports_them_all_in_order(early):
    """Timing assumed: the worker starts, runs five tiny tests and dies within 60 s (the first test waits
    for that, on Linux's /proc, so what each process runs is known).  The worker runs c1, c0, b2, b1, b0,
    then dies in a34; pytest's process runs a0-a33, then a34 itself (no record), and hands on the worker's
    reports: failure, skip and warning included, in collection order.  pytest's process keeps a module's
    fixture up for the tests it runs in a row; the worker, which does not know its next test, tears it
    down after each."""
    returncode, out, log = early()
    assert returncode == 1, out
    assert "2 failed, 37 passed, 1 skipped, 1 warning" in out, out
    names = [line.split(" ")[0] for line in out.splitlines() if " PASSED " in line or " FAILED " in line
             or " SKIPPED " in line]
    assert names == (["test_a.py::test_it[%d]" % n for n in range(35)] + ["test_b.py::test_it[%d]" % n
                                                                         for n in range(3)]
                     + ["test_c.py::test_it[%d]" % n for n in range(2)]), out
    assert "shown a5" in out and "assert 5 == 3" in out  # pytest's own failure, with its rewritten assert
    assert "shown c0" in out and "assert 0 == 7" in out  # the worker's, just the same
    assert "careful b1" in out and "skipped c1" in out

    runs, fixtures = {}, {}
    for line in log.splitlines():
        words = line.split()
        if words[0] == "run":
            runs.setdefault(words[1] + words[2], []).append(int(words[3]))
        else:
            fixtures.setdefault(int(words[2]), []).append(words[0] + " " + words[1])
    main = runs["a0"][0]
    worker = runs["c1"][0]
    assert main != worker
    assert {name: pids for name, pids in runs.items() if pids != [main]} == {
        "b0": [worker], "b1": [worker], "b2": [worker], "c0": [worker], "c1": [worker], "a34": [worker, main]}
    assert len(runs) == 40
    # the worker does not know its next test: it tears a module's fixture down after each test.  It was gone
    # before a33 ended: a34 was then this process's to run next, so a stayed up here
    assert fixtures == {worker: ["setup c", "teardown c"] * 2 + ["setup b", "teardown b"] * 3 + ["setup a"],
                        main: ["setup a", "teardown a"]}


SPECIAL_TWO = {  # two workers, each in one of c1 and c0 until pytest's process has run every other test
    "a": "",
    "b": "",
    "c": """
    if os.getpid() != int(os.environ["TWO_CORES_MAIN"]):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                {"run c 0", "run c 1"} <= {line.rpartition(" ")[0] for line in _lines()}
                and "run b 2 " + os.environ["TWO_CORES_MAIN"] in _lines()):
            time.sleep(0.01)
        if n == 0:
            time.sleep(0.3)  # still at work when pytest's process comes to c0
            log("end", MODULE, n, os.getpid())
        else:  # once c0 has ended (and its record is written), this worker dies in the middle of c1
            while time.monotonic() < deadline and not any(line.startswith("end c 0 ") for line in _lines()):
                time.sleep(0.01)
            time.sleep(0.3)
            os._exit(3)
""",
}


def _two_workers(folder):
    special = {name: "    def _lines():\n        with open(os.environ['TWO_CORES_LOG']) as f:\n" +
               "            return f.read().splitlines()\n" + text for name, text in SPECIAL_TWO.items()}
    return _small_suite(folder, workers=2, special=special)


@pytest.mark.skipif(not hasattr(os, "fork") or (os.cpu_count() or 1) < 2,
                    reason="the workers need fork and 2 cores")
@pytest.mark.early(scenario=_two_workers)
def test_two_workers_share_the_back_and_pytest_waits_for_each_or_runs_what_a_dead_one_had(early):
    """Timing assumed: the two workers start within 60 s, and each takes one of the last two tests, c1
    and c0, which wait for each other and for pytest's process to run every other test.  The worker in c0
    ends it 0.3 s later, while pytest's process waits for its record (it does not run c0 again); the
    worker in c1 dies 0.3 s after c0 has ended (by then c0's record is written), and pytest's process runs
    c1 itself.  Every test is reported once, in collection order."""
    returncode, out, log = early()
    assert returncode == 0, out
    assert "40 passed" in out, out
    names = [line.split(" ")[0] for line in out.splitlines() if " PASSED " in line]
    assert names == (["test_a.py::test_it[%d]" % n for n in range(35)] + ["test_b.py::test_it[%d]" % n
                                                                         for n in range(3)]
                     + ["test_c.py::test_it[%d]" % n for n in range(2)]), out
    runs = {}
    for line in log.splitlines():
        words = line.split()
        if words[0] == "run":
            runs.setdefault(words[1] + words[2], []).append(int(words[3]))
    main = runs["a0"][0]
    workers = {runs["c0"][0], runs["c1"][0]}
    assert len(workers) == 2 and main not in workers, (log, out)
    assert {name: pids for name, pids in runs.items() if pids != [main]} == {
        "c0": [runs["c0"][0]], "c1": [runs["c1"][0], main]}, runs
    assert len(runs) == 40
