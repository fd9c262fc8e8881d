"""The benchmark as a user runs it: quick mode, one small case, through the CLI entry."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from gradconf.bench import BenchConfig, add_arguments, main
from gradconf.bench.measure import MemoryProbe, time_calls
from gradconf.bench.report import SECTION_END, SECTION_START

BEFORE = "# Benchmarks\n\nIntro written by hand.\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n\n"
AFTER = "\n\nClosing notes written by hand.\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Run the quick benchmark once into a file with hand-written text around the section."""
    out = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    out.write_text(f"{BEFORE}{SECTION_START}\nstale numbers\n{SECTION_END}{AFTER}")
    status = main([
        "--quick", "--cases", "mlp512-b32", "--methods", "loop,vmap,gradconf",
        "--repeats", "1", "--warmup", "0", "--no-progress", "--out", str(out),
    ])
    return status, out


def test_quick_run_keeps_surrounding_text(quick_run):
    status, out = quick_run
    assert status == 0
    text = out.read_text()
    assert text.startswith(BEFORE + SECTION_START)
    assert text.endswith(SECTION_END + AFTER)
    assert "stale numbers" not in text
    assert "| gradconf (auto) → " in text
    assert "### Targets" in text


def test_quick_run_json_rows(quick_run):
    _, out = quick_run
    results = json.loads(out.with_name("benchmarks-gram.json").read_text())
    (case,) = results["cases"]
    assert case["batch_size"] == 8
    assert case["reference"]["status"] == "ok"
    rows = {row["method"]: row for row in case["rows"]}
    assert list(rows) == ["plain", "loop", "vmap", "gradconf"]
    for name, row in rows.items():
        assert row["status"] == "ok", f"{name}: {row.get('reason')}"
        assert row["median_ms"] > 0
    for name in ("loop", "vmap", "gradconf"):
        assert rows[name]["max_rel_error"] <= 1e-5
    assert rows["gradconf"]["details"]["engine"]


def test_from_json_renders_same_section(quick_run, tmp_path):
    _, out = quick_run
    rendered = tmp_path / "rendered.md"

    status = main(["--from-json", str(out.with_name("benchmarks-gram.json")),
                   "--out", str(rendered)])

    assert status == 0
    section = out.read_text()[len(BEFORE):-len(AFTER)]
    assert rendered.read_text() == f"# Benchmarks\n\n{section}\n"


def test_subcommand_keeps_parent_threads():
    parser = argparse.ArgumentParser(prog="gradconf")
    parser.add_argument("--threads", type=int, default=1)
    add_arguments(parser.add_subparsers(dest="command").add_parser("bench"))

    args = parser.parse_args(["--threads", "2", "bench", "--worker-threads", "0", "--quick"])

    assert args.threads == 2
    assert args.worker_threads == 0
    assert args.quick


def test_config_always_includes_plain():
    config = BenchConfig.create(cases=["cnn-b128"], methods=["gradconf"], quick=True)
    assert config.methods == ("plain", "gradconf")
    assert config.repeats == 3
    assert config.warmup == 1


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown method"):
        BenchConfig.create(methods=["jax"])
    with pytest.raises(ValueError, match="unknown benchmark case"):
        BenchConfig.create(cases=["resnet50"])
    with pytest.raises(ValueError, match="repeats=0 is invalid"):
        BenchConfig.create(repeats=0)


def test_time_calls_keeps_min_repeats_over_budget():
    calls = []
    timing, output = time_calls(
        lambda: calls.append(1) or len(calls), device=torch.device("cpu"),
        repeats=50, warmup=2, time_budget_s=0.0,
    )
    assert len(timing.times_ms) == 3
    assert len(calls) == 5
    assert output == 5


def test_time_calls_rejects_zero_repeats():
    with pytest.raises(ValueError, match="repeats=0 is invalid"):
        time_calls(lambda: None, device=torch.device("cpu"), repeats=0, warmup=0,
                   time_budget_s=1.0)


def test_memory_probe_sees_tensor_allocation():
    probe = MemoryProbe(torch.device("cpu"))
    probe.start()
    if probe.peak_bytes() is None:
        pytest.skip("peak RSS cannot be reset on this platform")
    block = torch.ones(256 * 2**20 // 4)  # 256 MiB of float32, touched by the fill
    # The margin absorbs pages the kernel reclaims from the process meanwhile.
    assert probe.peak_bytes() >= 192 * 2**20
    del block
