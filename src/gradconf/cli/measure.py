"""``gradconf measure``: confusion statistics of one configured model at initialization."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from gradconf.cli.options import positive_int
from gradconf.config import (
    ACTIVATIONS,
    BATCHNORM_MODES,
    DATASETS,
    GRANULARITIES,
    INITS,
    MODEL_KINDS,
    PAIRINGS,
    DataConfig,
    MeasureConfig,
    ModelConfig,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the model, data and measurement options."""
    model = parser.add_argument_group("model")
    model.add_argument("--kind", choices=MODEL_KINDS, default="mlp")
    model.add_argument("--width", type=positive_int, default=64,
                       help="hidden units (MLP) or width factor (CNN) (default: %(default)s)")
    model.add_argument("--depth", type=positive_int, default=2,
                       help="hidden layers (MLP) or Wide-ResNet depth (CNN) (default: %(default)s)")
    model.add_argument("--activation", choices=ACTIVATIONS, default="relu")
    model.add_argument("--init", choices=INITS, default="he")
    model.add_argument("--kappa", type=float, default=1.0,
                       help="variance 1/(kappa*fan_in) for --init gaussian (default: 1)")
    model.add_argument("--batchnorm", action="store_true", help="add BatchNorm layers")
    model.add_argument("--skip", action="store_true", help="add identity skip connections")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="digits")
    data.add_argument("--data-root", default=None, help="directory holding MNIST/CIFAR files")
    measure = parser.add_argument_group("measurement")
    measure.add_argument("--granularity", choices=GRANULARITIES, default="example",
                         help="per-example gradients or mini-batch gradients (default: %(default)s)")
    measure.add_argument("--pairing", choices=PAIRINGS, default="all",
                         help="all pairs among --num-gradients, or --num-pairs disjoint pairs")
    measure.add_argument("--num-pairs", type=positive_int, default=100)
    measure.add_argument("--num-gradients", type=positive_int, default=128)
    measure.add_argument("--batch-size", type=positive_int, default=128,
                         help="examples per mini-batch for --granularity minibatch")
    measure.add_argument("--batchnorm-mode", choices=BATCHNORM_MODES, default=None,
                         help="BatchNorm statistics: 'train' (mini-batch only) or 'eval'")
    measure.add_argument("--engine", default="auto", help="Gram engine (default: auto)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")


def run(args: argparse.Namespace) -> int:
    """Build the model, measure once and print the statistics."""
    from gradconf.data import load_dataset
    from gradconf.measure import measure_confusion
    from gradconf.models import build_model
    from gradconf.training import loss_function

    model_config = ModelConfig(
        kind=args.kind, width=args.width, depth=args.depth, activation=args.activation,
        init=args.init, kappa=args.kappa, batchnorm=args.batchnorm, skip=args.skip,
    )
    batchnorm_mode = args.batchnorm_mode or (
        "train" if args.granularity == "minibatch" else "eval"
    )
    measure_config = MeasureConfig(
        granularity=args.granularity, pairing=args.pairing, num_pairs=args.num_pairs,
        num_gradients=args.num_gradients, batch_size=args.batch_size,
        batchnorm=batchnorm_mode, engine=args.engine,
    )
    dataset = load_dataset(DataConfig(name=args.dataset, root=args.data_root))
    torch.manual_seed(args.seed)
    model = build_model(model_config, tuple(dataset.input_shape), dataset.num_classes)
    loss_fn = loss_function("mse" if dataset.num_classes == 1 else "cross_entropy")
    generator = torch.Generator().manual_seed(args.seed)
    measurement = measure_confusion(
        model, loss_fn, dataset.train_inputs, dataset.train_targets, measure_config,
        generator=generator,
    )
    stats = measurement.stats.to_dict()
    if args.json:
        payload = {
            "model": model_config.__dict__, "dataset": args.dataset,
            "measure": measure_config.__dict__, "engine": measurement.engine,
            "coverage": measurement.coverage.share, "stats": stats,
            "layers": {name: layer.__dict__ for name, layer in measurement.layers.items()},
        }
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    sys.stdout.write(
        f"{args.kind} width={args.width} depth={args.depth} init={args.init} on {args.dataset}: "
        f"{measurement.granularity} gradients, {measurement.pairing} pairing, "
        f"engine {measurement.engine}, coverage {measurement.coverage.share:.0%}\n"
    )
    for key, value in stats.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        sys.stdout.write(f"  {key:<18} {text}\n")
    return 0
