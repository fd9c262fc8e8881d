import pandas as pd
import pytest
import torch

from gradconf.reproduce import mlp

FIGURE_MARK = "data:image/png;base64,"


def test_points_follow_the_study_plan():
    resolved = mlp.settings("quick")
    points = mlp.points(resolved)
    keys = [point.key for point in points]
    assert keys == ["width-8", "width-32", "width-128", "width-512",
                    "depth-1", "depth-2", "depth-4", "depth-8"]
    for point in points:
        model = point.config.model
        assert model.kind == "mlp"
        assert (model.width, model.depth) == (point.labels["width"], point.labels["depth"])
        if point.labels["group"] == "width":
            assert model.depth == resolved["base_depth"]
        else:
            assert model.width == resolved["base_width"]
        assert "seed" not in point.labels
        assert point.config.train.measure_epochs == tuple(resolved["measure_epochs"])


def test_paper_scale_needs_data_root(tmp_path):
    with pytest.raises(ValueError, match="trains on mnist"):
        mlp.run("paper", tmp_path, progress=False, smoke=True)


def test_smoke_run(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        output = mlp.run("quick", tmp_path, progress=False, smoke=True, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert output.name == "mlp-mnist"
    assert len(output.verdicts) == 6
    assert {verdict.experiment for verdict in output.verdicts} == {"mlp-mnist"}
    assert all("MLPs" in verdict.claim for verdict in output.verdicts)
    titles = [section.title for section in output.sections]
    assert titles == ["Learning-rate selection", "Width sweep", "Depth sweep",
                      "Final metrics per run", "Settings"]
    assert output.sections[1].html.count(FIGURE_MARK) == 5
    selection = pd.read_csv(tmp_path / "lr_selection.csv")
    assert sorted(selection["config_key"].unique()) == sorted(
        ["width-8", "width-32", "width-128", "depth-1", "depth-2", "depth-4"])
