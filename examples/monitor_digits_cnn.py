"""Train a small CNN on the bundled digits and monitor gradient confusion while it trains.

    python examples/monitor_digits_cnn.py --epochs 3 --every 5 --out results/monitor-digits

The loop is an ordinary PyTorch loop; the monitor adds one ``with monitor.step(step):``
around the forward and backward and one ``record_loss`` call. It writes the record
(``confusion.parquet``) and its plot (``confusion.png``) to ``--out``; the same plot can be
drawn later with ``gradconf plot OUT/confusion.parquet``. It takes a few seconds on a CPU.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from gradconf.config import DataConfig, ModelConfig
from gradconf.data import load_dataset
from gradconf.models import build_model
from gradconf.monitor import Monitor, plot_record

logger = logging.getLogger("monitor_digits_cnn")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the example's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="passes over the training set")
    parser.add_argument("--batch-size", type=int, default=64, help="examples per step")
    parser.add_argument("--every", type=int, default=5, help="measure every k-th step")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and the batch order")
    parser.add_argument("--out", type=Path, default=Path("results/monitor-digits"), help="output folder")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="intra-op CPU threads (default: %(default)s; the model is small, and more threads "
        "than free cores slow every operation down)",
    )
    return parser.parse_args(argv)


def train(args: argparse.Namespace) -> Monitor:
    """Train CNN-10-1 on the digits with SGD while the monitor measures every k-th step."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load_dataset(DataConfig(name="digits"))
    # CNN-10-1: the Wide-ResNet layout of depth 10 and width factor 1, no BatchNorm.
    model = build_model(ModelConfig(kind="cnn", depth=10, width=1), data.input_shape, data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    monitor = Monitor(model, every=args.every)

    step = 0
    for epoch in range(args.epochs):
        order = torch.randperm(data.num_train)
        for start in range(0, data.num_train, args.batch_size):
            batch = order[start : start + args.batch_size]
            inputs, targets = data.train_inputs[batch], data.train_targets[batch]
            with monitor.step(step):
                loss = F.cross_entropy(model(inputs), targets)
                loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            monitor.record_loss(loss)
            step += 1
        latest = monitor.latest
        logger.info(
            "epoch %d: loss %.3f, step %d: η̂ %.3g, min cosine %.3f, mean cosine %.3f",
            epoch, float(loss.detach()), latest["step"], latest["eta"], latest["min_cosine"],
            latest["mean_cosine"],
        )
    return monitor


def main(argv: list[str] | None = None) -> int:
    """Train, then write the record and its plot."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    monitor = train(args)
    args.out.mkdir(parents=True, exist_ok=True)
    record = args.out / "confusion.parquet"
    monitor.save(record)
    plot = plot_record(monitor.history(), args.out / "confusion.png", title="CNN-10-1 on digits")
    logger.info("Record: %s\nPlot: %s", record, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
