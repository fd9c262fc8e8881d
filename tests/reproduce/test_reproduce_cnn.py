import json

import pandas as pd
import pytest
import torch

from gradconf.reproduce.base import Experiment
from gradconf.reproduce.cnn import DEPTH, WIDTH

FIGURE_MARK = "data:image/png;base64,"


@pytest.fixture(scope="module")
def depth_smoke(tmp_path_factory):
    """Run cnn-depth at quick scale with smoke=True once for the tests of this module."""
    out_dir = tmp_path_factory.mktemp("cnn-depth")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        output = DEPTH.run("quick", out_dir, progress=False, smoke=True, device="cpu")
    finally:
        torch.set_num_threads(threads)
    return out_dir, output


@pytest.mark.parametrize("experiment", [DEPTH, WIDTH], ids=["depth", "width"])
def test_experiment_follows_protocol(experiment):
    assert isinstance(experiment, Experiment)
    assert experiment.NAME in ("cnn-depth", "cnn-width")
    assert experiment.settings("quick")["dataset"] == "digits"


def test_quick_settings_axes():
    depth = DEPTH.settings("quick")
    width = WIDTH.settings("quick")
    assert (depth["depths"], depth["width"]) == ([10, 16, 22], 1)
    assert (width["widths"], width["depth"]) == ([1, 2, 4], 10)
    assert len(depth["seeds"]) == 3
    assert len(depth["lr_grid"]) == 2


def test_settings_reject_unknown_scale():
    with pytest.raises(ValueError, match="scale='huge' is not supported"):
        DEPTH.settings("huge")


def test_width_points_are_plain_cnns():
    points = WIDTH.points(WIDTH.settings("quick"))
    assert [point.key for point in points] == ["width-1", "width-2", "width-4"]
    for point, width in zip(points, (1, 2, 4)):
        model = point.config.model
        assert (model.kind, model.width, model.depth) == ("cnn", width, 10)
        assert not model.batchnorm
        assert not model.skip
        assert model.init == "he"
        assert point.labels == {"group": "width", "x_name": "width", "x": width,
                                "width": width, "depth": 10}


@pytest.mark.parametrize("experiment, signs", [(DEPTH, [-1, -1, 1]), (WIDTH, [1, 1, -1])],
                         ids=["depth", "width"])
def test_claim_signs(experiment, signs):
    claims = experiment.claims()
    assert [claim.y for claim in claims] == ["init_min_cosine", "final_min_cosine",
                                             "train_loss_auc"]
    assert [claim.expected_sign for claim in claims] == signs


def test_paper_scale_needs_data_root(tmp_path):
    with pytest.raises(ValueError, match="Pass --data-root"):
        DEPTH.run("paper", tmp_path, progress=False, smoke=True)


def test_smoke_run_output(depth_smoke):
    out_dir, output = depth_smoke
    assert output.name == "cnn-depth"
    assert len(output.verdicts) == 3
    assert {verdict.experiment for verdict in output.verdicts} == {"cnn-depth"}
    assert all(verdict.n_runs == 3 for verdict in output.verdicts)
    titles = [section.title for section in output.sections]
    assert titles == ["Learning-rate selection", "Results by depth", "Final metrics per run",
                      "Settings"]
    assert output.sections[1].html.count(FIGURE_MARK) == 5


def test_smoke_run_files(depth_smoke):
    out_dir, _ = depth_smoke
    selection = pd.read_csv(out_dir / "lr_selection.csv")
    assert len(selection) == 3 * 2
    assert selection.groupby("config_key")["selected"].sum().tolist() == [1, 1, 1]
    study = json.loads((out_dir / "study.json").read_text())
    assert sorted(entry["x"] for entry in study["runs"]) == [10, 16, 22]
    run_dir = out_dir / "runs" / "model.depth=22,lr=0.03,seed=0"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["depth"] == 22
    assert config["train"]["epochs"] == 1


def test_rerun_skips_complete_runs(depth_smoke):
    out_dir, first = depth_smoke
    manifests = sorted(out_dir.glob("runs/*/manifest.json"))
    before = [path.read_text() for path in manifests]
    second = DEPTH.run("quick", out_dir, progress=False, smoke=True, device="cpu")
    assert [path.read_text() for path in manifests] == before
    assert [v.value for v in second.verdicts] == pytest.approx([v.value for v in first.verdicts],
                                                               nan_ok=True)
