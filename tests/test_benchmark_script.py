"""benchmarks/run.py's judging, without running a benchmark: a tiny run gives no verdicts."""
import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("bench_run", os.path.join(os.path.dirname(HERE), "benchmarks", "run.py"))
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

ROWS = [("wall a/c", "4.69", "<= 1.5", False), ("peak RSS", "23.2 MiB", "< 32 MiB", True),
        ("import camb", "684.2 ms", "(for comparison)", None)]


def test_a_tiny_run_prints_figures_but_no_verdicts(capsys):
    bench.Report(tiny=True).targets(ROWS)
    out = capsys.readouterr().out
    assert "4.69" in out and "<= 1.5" in out
    assert "MISSED" not in out and " ok" not in out


def test_a_full_run_judges_each_target(capsys):
    bench.Report(tiny=False).targets(ROWS)
    lines = capsys.readouterr().out.splitlines()
    assert any("wall a/c" in line and "MISSED" in line for line in lines)
    assert any("peak RSS" in line and " ok" in line for line in lines)
    assert any("import camb" in line and "MISSED" not in line and " ok" not in line for line in lines)


def test_tiny_shrinks_every_table_and_repeats_once():
    args = bench.parse_args(["--tiny"])
    assert args.repeat == args.repeat_large == args.repeat_latency == 1
    assert max(args.scale) <= 20 and args.latency_count <= 20 and args.big <= 8 * 1024 * 1024
    assert bench.parse_args([]).scale == [5, 60, 1000, 10000]
