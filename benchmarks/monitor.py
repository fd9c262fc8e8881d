"""Measure the monitor's cost per training step and update the monitor section of docs/benchmarks.md.

Usage: ``python benchmarks/monitor.py [--repeats 9] [--threads 1] [--quick] [--no-write]``.

Each case trains one model copy per configuration: without the monitor ("plain"), with a
monitor measuring every step, with one measuring every 16th step, and with Cockpit's
"economy" quantities when ``cockpit-for-pytorch`` imports. A step is forward, backward,
SGD update, ``zero_grad`` and ``record_loss``. The configurations run in blocks of steps,
interleaved round-robin within each repeat, so that drifts of a shared machine hit all of
them alike. The table reports medians over repeats of the mean step time per block and of
its ratio to the plain block of the same repeat.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from gradconf.bench.report import DOC_TITLE, machine_info
from gradconf.monitor import Monitor

logger = logging.getLogger("benchmarks.monitor")

SECTION_START = "<!-- monitor:start -->"
SECTION_END = "<!-- monitor:end -->"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BATCH_SIZE = 128
# A block of 16 steps contains exactly one measured step of the every-16th configuration.
BLOCK_STEPS = 16
# Cockpit's economy set costs seconds per step on a CPU, so its blocks are shorter.
COCKPIT_BLOCK_STEPS = 2
COCKPIT_REPEATS = 3
# Maximum step-time ratio to "plain", per case family and measurement schedule.
TARGETS = {("mlp", "every step"): 1.15, ("cnn", "every step"): 1.3,
           ("mlp", "every 16th step"): 1.02, ("cnn", "every 16th step"): 1.02}


def mlp() -> nn.Module:
    """MLP 64→512→512→512→512→10 with ReLU."""
    widths = [64, 512, 512, 512, 512]
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths, widths[1:], strict=False):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(512, 10))


def cnn() -> nn.Module:
    """Three 3×3 conv layers (32, 64, 64 channels) with pooling, then a linear head."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 16, 16)
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 8, 8)
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),  # (B, 64, 1, 1)
        nn.Flatten(), nn.Linear(64, 10),
    )


CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], str]] = {
    "mlp": (mlp, (64,), "MLP 64→512→512→512→512→10, B=128"),
    "cnn": (cnn, (3, 32, 32), "CNN conv32-conv64-conv64 (3×3, pooling) on 3×32×32, B=128"),
}


@dataclass
class Config:
    """One way of running the training step, with its own model copy and timings."""

    name: str
    step: Callable[[int], None]
    block_steps: int = BLOCK_STEPS
    repeats: int | None = None  # None: every repeat
    monitor: Monitor | None = None
    seconds: list[float] = field(default_factory=list)


def _import_cockpit() -> tuple[object | None, str]:
    """Import cockpit; return (module, reason it is unavailable or its version)."""
    try:
        version = importlib.metadata.version("cockpit-for-pytorch")
    except importlib.metadata.PackageNotFoundError:
        return None, "cockpit-for-pytorch is not installed"
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            # NOTE: cockpit 1.0.2 imports pkg_resources only to read its own version, but
            # setuptools 84 in this venv no longer ships it. The stand-in provides that call.
            stand_in = types.ModuleType("pkg_resources")
            stand_in.DistributionNotFound = importlib.metadata.PackageNotFoundError
            stand_in.get_distribution = lambda name: types.SimpleNamespace(
                version=importlib.metadata.version("cockpit-for-pytorch")
            )
            sys.modules["pkg_resources"] = stand_in
    try:
        import cockpit
    except ImportError as err:
        return None, f"cockpit-for-pytorch {version} failed to import: {err}"
    return cockpit, f"cockpit-for-pytorch {version}"


def _configs(case: str, cockpit_module: object | None) -> list[Config]:
    build, shape, _ = CASES[case]
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(BATCH_SIZE, *shape, generator=generator),
         torch.randint(0, 10, (BATCH_SIZE,), generator=generator))
        for _ in range(4)
    ]
    torch.manual_seed(0)
    template = build()

    def copy_model() -> tuple[nn.Module, torch.optim.Optimizer]:
        model = build()
        model.load_state_dict(template.state_dict())
        return model, torch.optim.SGD(model.parameters(), lr=0.01)

    def plain_step(model, optimizer) -> Callable[[int], None]:
        def step(index: int) -> None:
            inputs, targets = batches[index % len(batches)]
            loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return step

    def monitored_step(model, optimizer, monitor) -> Callable[[int], None]:
        def step(index: int) -> None:
            inputs, targets = batches[index % len(batches)]
            with monitor.step(index):
                loss = F.cross_entropy(model(inputs), targets)
                loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            monitor.record_loss(loss)
        return step

    configs = [Config("plain", plain_step(*copy_model()))]
    for name, every in (("every step", 1), ("every 16th step", 16)):
        model, optimizer = copy_model()
        monitor = Monitor(model, every=every, batchnorm="error")
        configs.append(Config(name, monitored_step(model, optimizer, monitor), monitor=monitor))
    if cockpit_module is not None:
        configs.append(_cockpit_config(cockpit_module, copy_model, batches))
    return configs


def _cockpit_config(cockpit_module, copy_model, batches) -> Config:
    from backpack import extend
    from cockpit.utils.configuration import configuration

    model, optimizer = copy_model()
    model = extend(model)
    loss_function = extend(nn.CrossEntropyLoss())
    cockpit = cockpit_module.Cockpit(model.parameters(), quantities=configuration("economy"))

    def step(index: int) -> None:
        inputs, targets = batches[index % len(batches)]
        outputs = model(inputs)
        loss = loss_function(outputs, targets)
        losses = F.cross_entropy(outputs, targets, reduction="none")
        info = {"batch_size": BATCH_SIZE, "individual_losses": losses, "loss": loss, "optimizer": optimizer}
        with cockpit(index, info=info):
            loss.backward(create_graph=cockpit.create_graph(index))
        optimizer.step()
        optimizer.zero_grad()

    return Config("cockpit economy", step, block_steps=COCKPIT_BLOCK_STEPS, repeats=COCKPIT_REPEATS)


def run_case(case: str, repeats: int, cockpit_module: object | None, cockpit_reason: str) -> dict:
    """Time every configuration of ``case``; return its rows and target verdicts."""
    configs = _configs(case, cockpit_module)
    counters = {config.name: 0 for config in configs}
    errors: dict[str, str] = {}
    for config in configs:  # warm-up: one block each, not timed
        try:
            for _ in range(config.block_steps):
                config.step(counters[config.name])
                counters[config.name] += 1
        except Exception as err:  # a peer tool failing on this model is reported, not fatal
            if config.name != "cockpit economy":
                raise
            errors[config.name] = f"{type(err).__name__}: {err}"
    configs = [config for config in configs if config.name not in errors]
    for repeat in range(repeats):
        # The order rotates from repeat to repeat, so no configuration always runs first.
        shift = repeat % len(configs)
        for config in configs[shift:] + configs[:shift]:
            if config.repeats is not None and repeat >= config.repeats:
                continue
            start = time.perf_counter()
            for _ in range(config.block_steps):
                config.step(counters[config.name])
                counters[config.name] += 1
            config.seconds.append((time.perf_counter() - start) / config.block_steps)
        logger.info("%s: repeat %d of %d done", case, repeat + 1, repeats)

    plain = configs[0].seconds
    rows = []
    for config in configs:
        # Each repeat's ratio compares blocks that ran within seconds of each other.
        ratios = [ours / theirs for ours, theirs in zip(config.seconds, plain, strict=False)]
        row = {"config": config.name, "ms": 1e3 * statistics.median(config.seconds),
               "ratio": statistics.median(ratios), "repeats": len(config.seconds)}
        if config.monitor is not None:
            history = config.monitor.history()
            measured = history[history["measured"]]
            row["measure_ms"] = 1e3 * float(measured["measure_seconds"].median())
        rows.append(row)
    if cockpit_module is None:
        rows.append({"config": "cockpit economy", "skipped": cockpit_reason})
    elif "cockpit economy" in errors:
        rows.append({"config": "cockpit economy", "skipped": errors["cockpit economy"]})
    verdicts = []
    for row in rows:
        limit = TARGETS.get((case, row["config"]))
        if limit is not None:
            met = "met" if row["ratio"] <= limit else "not met"
            verdicts.append(f"{case}, monitor {row['config']}: {row['ratio']:.3f}× (target ≤ {limit}×): {met}")
    return {"case": case, "description": CASES[case][2], "rows": rows, "verdicts": verdicts}


def render(results: list[dict], info: dict, args: argparse.Namespace, cockpit_reason: str) -> str:
    """Render the benchmark results as the markdown body of the monitor section."""
    lines = [
        "## Monitor overhead per training step",
        "",
        f"Generated by `python benchmarks/monitor.py --repeats {args.repeats} --threads {args.threads}` "
        f"on {info['date']}; do not edit by hand.",
        "",
        f"- Machine: {info['cpu']}, {info['logical_cores']} logical cores, {args.threads} torch "
        f"thread(s), {info['platform']}.",
        f"- Versions: Python {info['python']}, torch {info['torch']}, gradconf {info['gradconf']} "
        f"(commit {info['commit']}), {cockpit_reason}.",
        f"- A step is forward, backward, SGD update, zero_grad and record_loss on a fixed batch "
        f"of {BATCH_SIZE}. Configurations run in blocks of {BLOCK_STEPS} steps "
        f"({COCKPIT_BLOCK_STEPS} for Cockpit, first {COCKPIT_REPEATS} repeats only), "
        "interleaved round-robin in one process with the order rotating per repeat. ms/step "
        "is the median over repeats of the block mean; the ratio is the median over repeats "
        "of the block mean divided by the plain block mean of the same repeat.",
        "- \"monitor work after backward\" is the median `measure_seconds` of the record: "
        "statistics and bookkeeping after the backward. The rest of the overhead is the "
        "engine's Gram kernels, which run inside the backward.",
        "- One run on a shared machine; ratios carry run-to-run noise of a few percent.",
        "",
    ]
    for result in results:
        lines += [f"### {result['case']}: {result['description']}", "",
                  "| configuration | ms/step | ratio to plain | monitor work after backward (ms) | repeats |",
                  "|---|---:|---:|---:|---:|"]
        for row in result["rows"]:
            if "skipped" in row:
                lines.append(f"| {row['config']} | skipped: {row['skipped']} | | | |")
                continue
            measure = f"{row['measure_ms']:.2f}" if "measure_ms" in row else ""
            lines.append(
                f"| {row['config']} | {row['ms']:.2f} | {row['ratio']:.3f}× | {measure} | {row['repeats']} |"
            )
        lines.append("")
    lines += ["### Targets", ""]
    lines += [f"- {verdict}" for result in results for verdict in result["verdicts"]]
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    """Replace the text between the monitor markers of ``path`` with ``body``.

    A missing file is created with a title, and a file without the markers gets the
    section appended. Text outside the markers is kept byte for byte.
    """
    block = f"{SECTION_START}\n{body.rstrip()}\n{SECTION_END}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{DOC_TITLE}\n\n{block}\n")
        return
    text = path.read_text()
    starts, ends = text.count(SECTION_START), text.count(SECTION_END)
    if starts == 0 and ends == 0:
        path.write_text(text.rstrip("\n") + f"\n\n{block}\n")
        return
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if starts != 1 or ends != 1 or end < start:
        raise ValueError(
            f"{path} has {starts} '{SECTION_START}' and {ends} '{SECTION_END}' markers, not one "
            "pair in that order; fix the markers by hand, then rerun."
        )
    path.write_text(text[:start] + block + text[end + len(SECTION_END):])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the section and write it to docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed blocks per configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases to run")
    parser.add_argument("--quick", action="store_true", help="2 repeats, no Cockpit, nothing written")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    parser.add_argument("--out", type=Path, default=DOCS, help="markdown file to update")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quick:
        args.repeats, args.no_write = 2, True
    torch.set_num_threads(args.threads)

    cockpit_module, cockpit_reason = (None, "Cockpit skipped (--quick)") if args.quick else _import_cockpit()
    results = [run_case(case, args.repeats, cockpit_module, cockpit_reason) for case in args.cases]
    body = render(results, machine_info("cpu"), args, cockpit_reason)
    print(body)
    if not args.no_write:
        write_section(args.out, body)
        logger.info("updated %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
