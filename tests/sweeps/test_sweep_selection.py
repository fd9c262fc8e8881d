import json
import math

import pandas as pd
import pytest

from gradconf.sweeps import expand, parse_sweep, select_learning_rates
from gradconf.sweeps.directory import prepare_directory

# Final training loss of each (width, lr) for seeds 0 and 1; None leaves the run pending.
LOSSES = {
    (8, 0.01): (0.9, 0.7),     # mean 0.8
    (8, 0.1): (0.5, 0.7),      # mean 0.6: selected for width 8
    (8, 1.0): (0.1, "diverged"),  # one diverged seed rules this rate out
    (16, 0.01): (0.4, 0.4),    # mean 0.4: tie with 0.1, the smaller rate wins
    (16, 0.1): (0.3, 0.5),     # mean 0.4
    (16, 1.0): (0.2, None),    # one seed pending: mean 0.2 over the done seed, selected
}


def _write_run(run_dir, digest, loss):
    run_dir.mkdir(parents=True)
    status = "diverged" if loss == "diverged" else "completed"
    losses = [2.0, math.nan if loss == "diverged" else loss]
    pd.DataFrame({"epoch": [0, 1], "train_loss": losses}).to_parquet(
        run_dir / "metrics.parquet")
    (run_dir / "complete.json").write_text(
        json.dumps({"status": status, "config_digest": digest}))


@pytest.fixture
def selection_dir(tmp_path, tiny_sweep):
    tiny_sweep["grid"] = {"model.width": [8, 16]}
    tiny_sweep["lr_selection"] = {"grid": [0.01, 0.1, 1.0]}
    spec = parse_sweep(tiny_sweep)
    planned = expand(spec)
    prepare_directory(tmp_path, spec, planned)
    for run in planned:
        loss = LOSSES[(run.labels["model.width"], run.labels["train.lr"])][run.labels["seed"]]
        if loss is not None:
            _write_run(tmp_path / "runs" / run.run_id, run.config.digest(), loss)
    return tmp_path


def test_selection_lowest_mean_loss(selection_dir):
    table = select_learning_rates(selection_dir)
    chosen = table[table["selected"]].set_index("model.width")["lr"].to_dict()
    assert chosen == {8: 0.1, 16: 1.0}


def test_selection_table_columns(selection_dir):
    table = select_learning_rates(selection_dir)
    assert list(table.columns) == ["model.width", "lr", "seeds_done", "seeds_planned",
                                   "mean_final_train_loss", "selected"]
    assert len(table) == 6
    row = table[(table["model.width"] == 8) & (table["lr"] == 0.01)].iloc[0]
    assert row["mean_final_train_loss"] == pytest.approx(0.8)
    assert row["seeds_done"] == 2


def test_selection_diverged_counts_as_inf(selection_dir):
    table = select_learning_rates(selection_dir)
    row = table[(table["model.width"] == 8) & (table["lr"] == 1.0)].iloc[0]
    assert row["mean_final_train_loss"] == math.inf
    assert not row["selected"]


def test_selection_counts_pending_runs(selection_dir):
    table = select_learning_rates(selection_dir)
    row = table[(table["model.width"] == 16) & (table["lr"] == 1.0)].iloc[0]
    assert row["seeds_done"] == 1
    assert row["seeds_planned"] == 2


def test_selection_tie_goes_to_smaller_rate(selection_dir):
    (selection_dir / "runs" / "model.width=16,lr=1.0,seed=0" / "complete.json").unlink()
    table = select_learning_rates(selection_dir)
    chosen = table[table["selected"]].set_index("model.width")["lr"].to_dict()
    assert chosen[16] == 0.01


def test_selection_needs_lr_selection(tmp_path, tiny_sweep):
    spec = parse_sweep(tiny_sweep)
    prepare_directory(tmp_path, spec, expand(spec))
    with pytest.raises(ValueError, match=r"has no \[lr_selection\] table"):
        select_learning_rates(tmp_path)
