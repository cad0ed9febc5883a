"""How long the test suite takes, with one or more counts of workers (tests/two_cores.py), compared fairly.

    python tools/suite_time.py                                   # this Python, 1 and 2 workers, 3 rounds
    python tools/suite_time.py --python /tmp/py36/bin/python /tmp/py313/bin/python --workers 1 2 3 --rounds 4

Each round runs `python -m pytest -q -p no:cacheprovider` once per Python and worker count, with
PYTHONDONTWRITEBYTECODE=1 as in CI (SOUND_BULK_WORKERS=N tells conftest's plugin how many workers to fork);
the order of the worker counts rotates from one round to the next, so that none always runs first.  Each
run gives pytest's own timer and the CPU it used (user + system, every process).  Prints a Markdown table
of the medians, with the 1-minute load average before the first run and after the last: this machine is
shared, and only figures from one run of this tool compare.  A run that fails stops the tool.
Standard library only; each Python needs the test requirements (tests/requirements.txt).
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_suite(python, workers):
    """(pytest's timer in s, CPU in s) of one run of the suite."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", SOUND_BULK_WORKERS=str(workers))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    timer = re.search(r" in ([0-9.]+)s", proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "")
    if proc.returncode != 0 or timer is None:
        sys.exit("%s with %d workers: the suite failed (status %d)\n%s" % (
            python, workers, proc.returncode, proc.stdout[-3000:]))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(timer.group(1)), cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", nargs="+", default=[sys.executable], help="interpreters to run the suite with")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2], help="worker counts to compare")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.rounds < 1 or any(n < 0 for n in args.workers):
        parser.error("--rounds must be 1 or more, --workers 0 or more")
    load_before = os.getloadavg()[0]
    got = {}  # (python, workers) -> [(timer, cpu)]
    for round_ in range(args.rounds):
        shift = round_ % len(args.workers)
        for python in args.python:
            for workers in args.workers[shift:] + args.workers[:shift]:
                timer, cpu = run_suite(python, workers)
                got.setdefault((python, workers), []).append((timer, cpu))
                print("round %d  %s  workers=%d: %.2f s (CPU %.1f s)" % (round_ + 1, python, workers, timer, cpu),
                      file=sys.stderr)
    print("load average (1 min): %.2f before, %.2f after; median of %d rounds" % (
        load_before, os.getloadavg()[0], args.rounds))
    print()
    print("| Python | " + " | ".join("workers=%d: pytest's timer, CPU" % n for n in args.workers) + " |")
    print("| --- |" + " ---: |" * len(args.workers))
    for python in args.python:
        cells = []
        for workers in args.workers:
            runs = got[(python, workers)]
            timer, cpu = statistics.median(t for t, _ in runs), statistics.median(c for _, c in runs)
            cells.append("%.1f s, %.1f s" % (timer, cpu))
        print("| %s | %s |" % (python, " | ".join(cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
