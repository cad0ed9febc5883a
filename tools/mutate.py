"""Sampled mutation testing of sound_bulk.py: does the suite notice when the code is wrong?

    python tools/mutate.py                    # 150 mutants, seed 10, 2 jobs
    python tools/mutate.py --sample 40 -j 1 --timeout 120
    python tools/mutate.py --list             # every mutant the file has, by operator
    python tools/mutate.py --show 1234        # one mutant's change; --only 1234 runs just that one

Each mutant is one small change to a copy of sound_bulk.py, found through its syntax tree:

    compare  a comparison flipped (< and >=, > and <=, == and !=, in and not in, is and is not)
    boolop   `and` and `or` swapped
    if       the condition of an `if`/`elif` negated
    number   a numeric constant plus one, or 0
    delete   a simple statement replaced by `pass` (not imports, returns or docstrings)
    return   `return X` made `return None`
    string   a string constant emptied (never a docstring, an f-string part or an annotation)

Annotations are never mutated (a string annotation is read by a type checker only), nor a bare
`name: "type"` line, nor anything inside `if TYPE_CHECKING:` (never run).

The mutants are drawn uniformly with a fixed seed, so two runs on the same file draw the same ones.
Each is run against the whole suite (`pytest -x -q -p no:cacheprovider`) through
SOUND_BULK_UNDER_TEST, which tests/conftest.py honours and the tests' subprocesses inherit; a mutant
is killed when the suite fails, survives when it passes, and times out past --timeout (by default
three times the unmutated run).  A line ending in `# pragma: no mutate` is left alone.

Prints each survivor with its line and the change, the score per operator, and a last line
`SUMMARY {json}`; --json FILE writes every result.  Standard library only; needs Python 3.8+
(node end positions) though the module it mutates runs on 3.6.  Slow by nature (the whole suite per
mutant): not part of CI, a habit for whoever changes the module.
"""

import argparse
import ast
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPERATORS = ("compare", "boolop", "if", "number", "delete", "return", "string")
FLIP = {ast.Lt: ">=", ast.GtE: "<", ast.Gt: "<=", ast.LtE: ">", ast.Eq: "!=", ast.NotEq: "==",
        ast.In: "not in", ast.NotIn: "in", ast.Is: "is not", ast.IsNot: "is"}
OP_TEXT = {ast.Lt: "<", ast.GtE: ">=", ast.Gt: ">", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!=",
           ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
SIMPLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Raise, ast.Continue, ast.Break,
          ast.Delete, ast.Assert)
# Test files fastest first (the many small edge tests of test_gaps_*.py, then these): with -x a mutant
# dies at its first failing test.
ORDER = ["test_pure.py", "test_client.py", "test_download.py", "test_generate.py"]


class Mutant:
    def __init__(self, op, start, end, new, note=""):
        self.op, self.start, self.end, self.new, self.note = op, start, end, new, note
        self.id = None

    def apply(self, lines):
        """The mutated source (bytes); positions are (line, byte column), lines 1-based."""
        (l1, c1), (l2, c2) = self.start, self.end
        head = b"".join(lines[:l1 - 1]) + lines[l1 - 1][:c1]
        tail = lines[l2 - 1][c2:] + b"".join(lines[l2:])
        return head + self.new + tail

    def describe(self, lines):
        """One line: where, which operator, the line before and after."""
        l1 = self.start[0]
        before = lines[l1 - 1].decode("utf-8", "replace").strip()
        after_src = self.apply(lines).splitlines()[l1 - 1].decode("utf-8", "replace").strip()
        more = " ..." if self.end[0] > l1 else ""
        return "L%d %s: `%s`%s -> `%s`%s" % (l1, self.op, before, more, after_src, more)


def _pos(node):
    return (node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)


def _segment(lines, start, end):
    (l1, c1), (l2, c2) = start, end
    if l1 == l2:
        return lines[l1 - 1][c1:c2]
    return lines[l1 - 1][c1:] + b"".join(lines[l1:l2 - 1]) + lines[l2 - 1][:c2]


def _gap_mutant(lines, op, left, right, old, new):
    """Replace the operator text between two nodes, if that gap holds only it (and parentheses)."""
    start, end = (left.end_lineno, left.end_col_offset), (right.lineno, right.col_offset)
    gap = _segment(lines, start, end).decode("utf-8")
    bare = " ".join(gap.replace("(", " ").replace(")", " ").replace("\\\n", " ").split())
    if bare != old:
        return None
    words = old.split()
    pattern = r"\s+".join(re.escape(w) for w in words)
    replaced = re.sub(pattern, new, gap, count=1)
    return Mutant(op, start, end, replaced.encode("utf-8"), "%s -> %s" % (old, new))


def _skipped_nodes(tree):
    """Nodes whose strings are never mutated: docstrings, annotations, f-strings."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            for stmt in node.body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                        and isinstance(stmt.value.value, str):
                    skip.update(id(n) for n in ast.walk(stmt))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            skip.update(id(n) for n in ast.walk(node.returns))
        if isinstance(node, ast.arg) and node.annotation is not None:
            skip.update(id(n) for n in ast.walk(node.annotation))
        if isinstance(node, ast.AnnAssign):
            skip.update(id(n) for n in ast.walk(node.annotation))
        if isinstance(node, ast.JoinedStr):
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.AnnAssign) and node.value is None:  # `name: "type"` alone does nothing
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:  # read by a type checker only, never run (its `if` is still mutated)
                skip.update(id(n) for n in ast.walk(stmt))
    return skip


def find_mutants(source):
    """Every mutant of ``source`` (bytes), in a stable order, numbered from 0."""
    tree = ast.parse(source)
    lines = source.splitlines(True)
    skip = _skipped_nodes(tree)
    out = []
    for node in ast.walk(tree):
        if id(node) in skip or not hasattr(node, "lineno"):
            continue
        if isinstance(node, ast.Compare):
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                m = _gap_mutant(lines, "compare", left, right, OP_TEXT[type(op)], FLIP[type(op)])
                if m:
                    out.append(m)
                left = right
        elif isinstance(node, ast.BoolOp):
            old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            parts = [_gap_mutant(lines, "boolop", a, b, old, new) for a, b in zip(node.values, node.values[1:])]
            if all(parts):  # one mutant swaps every operator of the chain
                start, end = parts[0].start, parts[-1].end
                mutated, cursor = b"", start
                for part in parts:
                    mutated += _segment(lines, cursor, part.start) + part.new
                    cursor = part.end
                out.append(Mutant("boolop", start, end, mutated, "%s -> %s" % (old, new)))
        elif isinstance(node, ast.If):
            start, end = _pos(node.test)
            out.append(Mutant("if", start, end, b"not (" + _segment(lines, start, end) + b")", "negated"))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            start, end = _pos(node)
            v = node.value
            out.append(Mutant("number", start, end, repr(v + 1).encode(), "%r -> %r" % (v, v + 1)))
            if v != 0:
                out.append(Mutant("number", start, end, repr(type(v)(0)).encode(), "%r -> 0" % (v,)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value:
            start, end = _pos(node)
            out.append(Mutant("string", start, end, b'""', "emptied"))
        if isinstance(node, SIMPLE) and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            start, end = _pos(node)
            out.append(Mutant("delete", start, end, b"pass", "deleted"))
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            start, end = _pos(node)
            out.append(Mutant("return", start, end, b"return None", "return None"))
    kept = [m for m in out if not any(b"pragma: no mutate" in lines[i - 1] for i in range(m.start[0], m.end[0] + 1))]
    kept.sort(key=lambda m: (m.start, m.end, OPERATORS.index(m.op), m.new))
    for i, m in enumerate(kept):
        m.id = i
    return kept


def _refind(path, mutants, lines):
    """The survivors of an earlier run, in this version of the file: same operator and the same line before
    and after the change; of several such, the one nearest the old line number."""
    with open(path) as f:
        old = [r for r in json.load(f)["results"] if r["verdict"] == "survived"]
    by_change = {}
    for m in mutants:
        by_change.setdefault(m.describe(lines).split(" ", 1)[1], []).append(m)
    chosen = []
    for r in old:
        same = by_change.get(r["change"].split(" ", 1)[1], [])
        if same:
            chosen.append(min(same, key=lambda m: abs(m.start[0] - r["line"])))
        else:
            print("#%d is gone: its line changed (%s)" % (r["id"], r["change"]))
    return sorted(set(chosen), key=lambda m: m.id)


def _compiles(source):
    try:
        compile(source, "sound_bulk.py", "exec")
        return True
    except SyntaxError:
        return False


def test_files():
    names = sorted(n for n in os.listdir(os.path.join(ROOT, "tests")) if n.startswith("test_") and n.endswith(".py"))
    first = [n for n in names if n.startswith("test_gaps_")] + [n for n in ORDER if n in names]
    last = [n for n in names if n not in ORDER and n != "test_cli.py"]
    last += ["test_cli.py"] if "test_cli.py" in names else []
    return [os.path.join(ROOT, "tests", n) for n in first + last]


def run_suite(module_path, timeout, workdir):
    """(verdict, seconds, first failing test) for the suite against ``module_path``."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "--rootdir", ROOT, "-c", os.path.join(ROOT, "pyproject.toml"),
           "--basetemp", os.path.join(workdir, "tmp")] + test_files()  # its own: runs in parallel
    env = dict(os.environ, SOUND_BULK_UNDER_TEST=module_path, PYTHONDONTWRITEBYTECODE="1")
    log = os.path.join(workdir, "pytest.log")
    started = time.monotonic()
    with open(log, "wb") as out:
        # cwd: the mutant's own folder, so hypothesis keeps its example database there, not in the repo.
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the suite and every child it started
            proc.wait()
            return "timeout", time.monotonic() - started, None
    took = time.monotonic() - started
    with open(log, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    failed = [re.sub(r"^.*?(?=tests/)", "", f) for f in re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)]
    if code == 0:
        return "survived", took, None
    if code in (1, 2) or failed:
        return "killed", took, failed[0] if failed else "exit %d" % code
    if code == 4 and "conftest" in text:  # the mutant does not even import (tests/conftest.py imports it)
        return "killed", took, "tests/conftest.py: " + (text.strip().splitlines() or [""])[-1].strip()
    return "error", took, "pytest exit %d: %s" % (code, text.strip().splitlines()[-1:] or "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--module", default=os.path.join(ROOT, "sound_bulk.py"))
    p.add_argument("--sample", type=int, default=150, help="mutants to draw (default 150; 0: all)")
    p.add_argument("--seed", type=int, default=10)
    p.add_argument("--timeout", type=float, help="seconds per mutant (default: 3 x the unmutated run, at least 60)")
    p.add_argument("-j", "--jobs", type=int, default=2)
    p.add_argument("--trust-green", action="store_true",
                   help="with --timeout: skip the unmutated run (you have just seen the suite pass)")
    p.add_argument("--only", type=int, nargs="+", metavar="ID", help="run these mutants only")
    p.add_argument("--operators", nargs="+", choices=OPERATORS, help="draw from these operators only")
    p.add_argument("--list", action="store_true", help="count the mutants per operator and stop")
    p.add_argument("--show", type=int, nargs="+", metavar="ID", help="print these mutants' changes and stop")
    p.add_argument("--json", metavar="FILE", help="write every result here")
    p.add_argument("--recheck", metavar="FILE", help="run again the survivors listed in an earlier --json FILE, "
                   "found by their change (the file may have moved on since)")
    args = p.parse_args(argv)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # Started in the background (`cmd &` ignores Ctrl-C): the suites would inherit that, and the
        # tests that send themselves a Ctrl-C would fail whatever the mutant.  Give them a terminal's.
        signal.signal(signal.SIGINT, signal.default_int_handler)

    with open(args.module, "rb") as f:
        source = f.read()
    lines = source.splitlines(True)
    mutants = find_mutants(source)
    if args.list:
        for op in OPERATORS:
            print("%-8s %d" % (op, sum(1 for m in mutants if m.op == op)))
        print("%-8s %d" % ("all", len(mutants)))
        return 0
    if args.show:
        for i in args.show:
            print("#%d %s" % (i, mutants[i].describe(lines)))
        return 0
    if args.recheck:
        chosen = _refind(args.recheck, mutants, lines)
    elif args.only:
        chosen = [mutants[i] for i in args.only]
    else:
        pool = [m for m in mutants if not args.operators or m.op in args.operators]
        n = len(pool) if args.sample <= 0 else min(args.sample, len(pool))
        random.Random(args.seed).shuffle(pool)
        chosen = []
        for m in pool:  # a uniform draw; the rare change that does not compile is passed over
            if len(chosen) == n:
                break
            if _compiles(m.apply(lines)):
                chosen.append(m)
        chosen.sort(key=lambda m: m.id)

    base = tempfile.mkdtemp(prefix="sound-bulk-mutants-")
    try:
        return _run(args, base, lines, chosen, len(mutants))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(args, base, lines, chosen, total):
    clean = os.path.join(base, "clean")
    os.mkdir(clean)
    shutil.copy(args.module, os.path.join(clean, "sound_bulk.py"))
    if args.timeout and args.trust_green:
        took = 0.0
    else:
        print("unmutated suite ...", flush=True)
        verdict, took, why = run_suite(os.path.join(clean, "sound_bulk.py"), 1800, clean)
        if verdict != "survived":
            print("the suite fails without any mutation (%s: %s); fix that first" % (verdict, why))
            return 2
    timeout = args.timeout or max(60.0, 3 * took)
    print("green in %.1f s; %d of %d mutants, seed %d, timeout %.0f s, %d jobs"
          % (took, len(chosen), total, args.seed, timeout, args.jobs), flush=True)

    results, lock = [], threading.Lock()

    def one(m):
        work = os.path.join(base, "m%d" % m.id)
        os.mkdir(work)
        path = os.path.join(work, "sound_bulk.py")
        with open(path, "wb") as f:
            f.write(m.apply(lines))
        verdict, took, why = run_suite(path, timeout, work)
        shutil.rmtree(work, ignore_errors=True)
        r = {"id": m.id, "operator": m.op, "line": m.start[0], "change": m.describe(lines), "verdict": verdict,
             "seconds": round(took, 1), "killed_by": why}
        with lock:
            results.append(r)
            print("[%3d/%d] #%-5d %-8s %-8s %5.1fs  %s" % (len(results), len(chosen), m.id, verdict, m.op, took,
                                                        why or r["change"]), flush=True)
        return r

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
        list(ex.map(one, chosen))
    results.sort(key=lambda r: r["id"])
    _report(results)
    summary = {"module": os.path.basename(args.module), "seed": args.seed, "sample": len(chosen),
               "mutants_in_file": total}
    for v in ("killed", "survived", "timeout", "error"):
        summary[v] = sum(1 for r in results if r["verdict"] == v)
    summary["score"] = round((summary["killed"] + summary["timeout"]) / max(1, len(results)), 3)
    summary["per_operator"] = {op: "%d/%d" % (
        sum(1 for r in results if r["operator"] == op and r["verdict"] != "survived"),
        sum(1 for r in results if r["operator"] == op))
        for op in OPERATORS if any(r["operator"] == op for r in results)}
    summary["survivors"] = [r["id"] for r in results if r["verdict"] == "survived"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "results": results}, f, indent=1)
    print("SUMMARY " + json.dumps(summary, sort_keys=True))
    return 0 if not summary["error"] else 1


def _report(results):
    survivors = [r for r in results if r["verdict"] == "survived"]
    if survivors:
        print("\nsurvivors (the suite passed with this change):")
        for r in survivors:
            print("  #%d %s" % (r["id"], r["change"]))
    for r in results:
        if r["verdict"] in ("timeout", "error"):
            print("  #%d %s: %s" % (r["id"], r["verdict"], r["change"]))
    print("\n%-8s %7s %9s %8s" % ("operator", "killed", "survived", "timeout"))
    for op in OPERATORS:
        rs = [r for r in results if r["operator"] == op]
        if rs:
            print("%-8s %7d %9d %8d" % (op, sum(r["verdict"] == "killed" for r in rs),
                                        sum(r["verdict"] == "survived" for r in rs),
                                        sum(r["verdict"] == "timeout" for r in rs)))
    killed = sum(r["verdict"] in ("killed", "timeout") for r in results)
    print("score: %d/%d killed (%.0f%%), timeouts counted as killed" % (killed, len(results),
                                                                       100.0 * killed / max(1, len(results))))


if __name__ == "__main__":
    sys.exit(main())
