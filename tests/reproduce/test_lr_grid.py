import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from gradconf.reproduce.lr_grid import (
    GridPoint,
    default_jobs,
    plan_grid,
    run_config,
    run_grid,
    smoke_settings,
)
from gradconf.reproduce.lr_grid import PAPER_PROTOCOL, QUICK_PROTOCOL

RATES = (0.03, 0.3)
SEEDS = (0, 1)
# A rate at which the tiny MLP's loss overflows at its first steps.
DIVERGING_RATE = 1e30


@pytest.fixture(autouse=True)
def one_thread():
    """Train the tiny models on one thread: faster than two for them, and steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def width_points(config, widths=(4, 16)):
    return [
        GridPoint(f"width-{width}",
                  {"group": "width", "x_name": "width", "x": width, "width": width, "depth": 1},
                  config.replace(**{"model.width": width}), {"model.width": width})
        for width in widths
    ]


def run_id(width, rate, seed):
    return f"model.width={width},lr={rate!r},seed={seed}"


def final_loss_from_files(run_dir: Path) -> float:
    """Read a run's final training loss straight from its files (+inf when diverged)."""
    status = json.loads((run_dir / "complete.json").read_text())["status"]
    if status == "diverged":
        return math.inf
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    return float(metrics.loc[metrics["epoch"].idxmax(), "train_loss"])


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("grid")


@pytest.fixture(scope="module")
def grid_result(grid_dir):
    from gradconf.config import DataConfig, MeasureConfig, ModelConfig, RunConfig, TrainConfig

    config = RunConfig(
        model=ModelConfig(width=8, depth=1),
        data=DataConfig(name="digits", max_train=128),
        train=TrainConfig(epochs=2, lr=0.1, batch_size=32),
        measure=MeasureConfig(num_pairs=2, batch_size=16),
        device="cpu",
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_grid(width_points(config), [*RATES, DIVERGING_RATE], SEEDS, grid_dir,
                        name="test-grid", progress=False)
    finally:
        torch.set_num_threads(threads)


def test_plan_grid_ids_labels_configs(tiny_run_config):
    planned = plan_grid(width_points(tiny_run_config), RATES, SEEDS)
    assert [run.run_id for run in planned[:3]] == [
        run_id(4, 0.03, 0), run_id(4, 0.03, 1), run_id(4, 0.3, 0)]
    assert len(planned) == 2 * len(RATES) * len(SEEDS)
    first = planned[2]
    assert first.labels["config_key"] == "width-4"
    assert first.labels["lr"] == 0.3
    assert first.labels["seed"] == 0
    assert first.config.train.lr == 0.3
    assert first.config.seed == 0
    assert first.config.model.width == 4


def test_plan_grid_rejects_duplicate_keys(tiny_run_config):
    points = width_points(tiny_run_config, widths=(4, 4))
    with pytest.raises(ValueError, match="differ in their key, but width-4 appear"):
        plan_grid(points, RATES, SEEDS)


def test_plan_grid_rejects_duplicate_configs(tiny_run_config):
    first, second = width_points(tiny_run_config)
    twin = GridPoint("other", second.labels, second.config, first.varied)
    with pytest.raises(ValueError, match="varied values, but model.width=4 appear"):
        plan_grid([first, twin], RATES, SEEDS)


@pytest.mark.parametrize("rates, seeds", [((), SEEDS), (RATES, (0, 0))],
                         ids=["no-rates", "seed-twice"])
def test_plan_grid_rejects_bad_axes(tiny_run_config, rates, seeds):
    with pytest.raises(ValueError, match="at least one value, each once"):
        plan_grid(width_points(tiny_run_config), rates, seeds)


def test_selection_picks_lowest_mean_loss(grid_result, grid_dir):
    for key in ("width-4", "width-16"):
        means = {}
        for rate in (*RATES, DIVERGING_RATE):
            width = int(key.split("-")[1])
            losses = [final_loss_from_files(grid_dir / "runs" / run_id(width, rate, seed))
                      for seed in SEEDS]
            means[rate] = sum(losses) / len(losses)
        assert math.isinf(means[DIVERGING_RATE])
        rows = grid_result.selection[grid_result.selection["config_key"] == key]
        selected = rows.loc[rows["selected"], "lr"].tolist()
        assert selected == [min(means, key=means.get)]
        for row in rows.itertuples():
            assert row.mean_final_train_loss == pytest.approx(means[row.lr])
            assert row.seeds_done == len(SEEDS)


def test_study_lists_only_selected_runs(grid_result, grid_dir):
    chosen = grid_result.selection[grid_result.selection["selected"]]
    expected = sorted(run_id(int(row.config_key.split("-")[1]), row.lr, seed)
                      for row in chosen.itertuples() for seed in SEEDS)
    study = json.loads((grid_dir / "study.json").read_text())
    assert sorted(entry["run_id"] for entry in study["runs"]) == expected
    assert sorted(grid_result.data.runs["run_id"]) == expected
    assert (grid_dir / "lr_selection.csv").is_file()
    assert grid_result.outcome.diverged == 2 * len(SEEDS)


def test_run_grid_resumes_without_training(grid_result, grid_dir):
    manifest = grid_dir / "runs" / run_id(4, 0.03, 0) / "manifest.json"
    before = manifest.read_text()
    again = run_grid(width_points(grid_result.planned[0].config), [*RATES, DIVERGING_RATE],
                     SEEDS, grid_dir, name="test-grid", progress=False)
    assert again.outcome.completed == 0
    assert again.outcome.skipped == len(grid_result.planned)
    assert manifest.read_text() == before
    assert again.selection.equals(grid_result.selection)


def test_all_rates_diverged_keeps_smallest(tiny_run_config, tmp_path):
    config = tiny_run_config.replace(**{"data.max_train": 64, "train.epochs": 1})
    result = run_grid(width_points(config, widths=(4,)), [DIVERGING_RATE, 10 * DIVERGING_RATE],
                      (0,), tmp_path, name="diverging", progress=False)
    assert not result.selection["selected"].any()
    assert result.data.runs["run_id"].tolist() == [run_id(4, DIVERGING_RATE, 0)]
    assert result.data.runs["status"].tolist() == ["diverged"]


def test_parallel_jobs_match_serial_runs(tiny_run_config, tmp_path):
    config = tiny_run_config.replace(**{"data.max_train": 64, "train.epochs": 1})
    points = width_points(config, widths=(4,))
    serial = run_grid(points, RATES, (0,), tmp_path / "serial", name="s", progress=False)
    parallel = run_grid(points, RATES, (0,), tmp_path / "parallel", name="p", progress=False,
                        jobs=2)
    assert parallel.outcome.completed == len(RATES)
    columns = ["config_key", "lr", "mean_final_train_loss", "selected"]
    pd.testing.assert_frame_equal(parallel.selection[columns], serial.selection[columns])


def test_run_config_stores_root_for_files_only(tmp_path):
    digits = run_config(QUICK_PROTOCOL, kind="cnn", width=1, depth=10, data_root=tmp_path)
    cifar = run_config(PAPER_PROTOCOL, kind="cnn", width=2, depth=16, data_root=tmp_path / ".")
    assert digits.data.root is None
    assert cifar.data.root == str(tmp_path.resolve())


def test_smoke_settings_cut_the_grid():
    settings = {**QUICK_PROTOCOL, "depths": [10, 16, 22, 28]}
    smoke = smoke_settings(settings, "quick", ["depths"])
    assert smoke["epochs"] == 1
    assert smoke["seeds"] == [0]
    assert smoke["lr_grid"] == QUICK_PROTOCOL["lr_grid"][:2]
    assert smoke["depths"] == [10, 16, 22]
    assert smoke["measure_epochs"] == [0, 1]
    assert smoke_settings(settings, "paper", ["depths"])["depths"] == [10]


def test_default_jobs_on_cpu():
    assert 1 <= default_jobs("cpu") <= 4
