import pytest

from gradconf.config import ConfigError
from gradconf.sweeps import expand, load_sweep, parse_sweep, shipped_sweeps


def _with(data, **changes):
    data.update(changes)
    return data


INVALID_SWEEPS = [
    ("top-level-typo", {"grdi": {"model.depth": [1]}},
     r"unknown key\(s\) grdi in the sweep file; known keys: name, base, grid, zip, seeds"),
    ("base-typo", {"base": {"model": {"widht": 8}}},
     r"unknown key\(s\) model.widht in \[base\]; known keys of model: kind, width, depth"),
    ("base-wrong-type", {"base": {"train": {"lr": "fast"}}},
     r"\[base\] train.lr must be a number, got 'fast'"),
    ("base-invalid-value", {"base": {"model": {"width": 0}}},
     r"run model.depth=1,seed=0 is invalid: model.width=0 is invalid; it must be at least 1"),
    ("axis-typo", {"grid": {"model.widht": [8]}},
     r"unknown field 'model.widht' in \[grid\]; known fields: model.kind, model.width"),
    ("axis-unknown-section", {"grid": {"optimizer.lr": [0.1]}},
     r"unknown field 'optimizer.lr'.*known fields: model, data, train, measure, device"),
    ("axis-wrong-type", {"grid": {"model.width": [8, "wide"]}},
     r"\[grid\] model.width must be an integer, got 'wide'"),
    ("axis-not-a-list", {"grid": {"model.width": 8}},
     r"\[grid\] model.width must be a list of values, got 8"),
    ("bool-for-int", {"grid": {"train.epochs": [True]}},
     r"train.epochs must be an integer, got True"),
    ("seeds-wrong-type", {"seeds": "0"}, r"seeds must be a list of values, got '0'"),
    ("seeds-negative", {"seeds": [0, -1]}, r"seeds contains -1; seeds must be integers >= 0"),
    ("name-missing", {"name": None}, r"name must be a non-empty string, got None"),
    ("empty-axis", {"grid": {"model.depth": []}}, r"\[grid\] model.depth is an empty list"),
    ("empty-grid", {"grid": {}}, r"\[grid\] is empty"),
    ("empty-seeds", {"seeds": []}, r"seeds is an empty list"),
    ("repeated-value", {"grid": {"model.depth": [1, 1]}}, r"contains 1 twice"),
    ("zip-lengths", {"zip": {"model.batchnorm": [False, True], "model.skip": [False]}},
     r"\[zip\] axes have different lengths \(model.batchnorm has 2, model.skip has 1 values\)"),
    ("axis-twice", {"zip": {"model.depth": [1, 2]}},
     r"axis model.depth appears more than once in \[grid\] and \[zip\]"),
    ("seed-axis", {"grid": {"seed": [0, 1]}}, r"varies 'seed'; list the seeds in"),
    ("label-with-dot", {"zip": {"label.a.b": [1, 2], "model.width": [8, 16]}},
     r"label axis 'label.a.b'"),
    ("lr-axis-and-selection", {"grid": {"train.lr": [0.1]}, "lr_selection": {"grid": [0.1]}},
     r"train.lr is an axis and \[lr_selection\] is set"),
    ("lr-rule", {"lr_selection": {"grid": [0.1], "rule": "best_test_accuracy"}},
     r"rule='best_test_accuracy' is not supported; allowed rules: lowest_final_train_loss"),
    ("lr-negative", {"lr_selection": {"grid": [0.1, -1]}},
     r"\[lr_selection\] grid contains -1; learning rates must be numbers > 0"),
    ("lr-typo", {"lr_selection": {"grid": [0.1], "rules": "x"}},
     r"unknown key\(s\) rules in \[lr_selection\]; known keys: grid, rule"),
    ("invalid-combination", {"grid": {"model.kind": ["cnn"], "model.depth": [12]}},
     r"run model.kind=cnn,model.depth=12,seed=0 is invalid: model.depth=12 is invalid for "
     r"kind='cnn'"),
    ("label-only-difference", {"grid": {"model.depth": [1]},
                               "zip": {"label.variant": ["a", "b"]}},
     r"have the same config \(only label axes differ\)"),
]


@pytest.mark.parametrize("changes, message", [case[1:] for case in INVALID_SWEEPS],
                         ids=[case[0] for case in INVALID_SWEEPS])
def test_parse_rejects_invalid(tiny_sweep, changes, message):
    with pytest.raises(ConfigError, match=message):
        parse_sweep(_with(tiny_sweep, **changes))


def test_parse_defaults_seeds_to_base(tiny_sweep):
    del tiny_sweep["seeds"]
    tiny_sweep["base"]["seed"] = 7
    assert parse_sweep(tiny_sweep).seeds == (7,)


def test_parse_converts_int_learning_rates(tiny_sweep):
    tiny_sweep["lr_selection"] = {"grid": [1, 0.1]}
    spec = parse_sweep(tiny_sweep)
    assert spec.lr_selection.grid == (1.0, 0.1)
    assert spec.lr_selection.rule == "lowest_final_train_loss"


def test_spec_round_trip(tiny_sweep):
    tiny_sweep["zip"] = [{"model.batchnorm": [False, True], "label.variant": ["plain", "bn"]},
                         {"train.lr_decay_at": [[0.5], [0.4, 0.8]]}]
    tiny_sweep["lr_selection"] = {"grid": [0.01, 0.1]}
    spec = parse_sweep(tiny_sweep)
    assert parse_sweep(spec.to_dict()) == spec


def test_paper_scale_sweep_expressible():
    data = {
        "name": "cifar10-wrn",
        "seeds": [0, 1, 2, 3, 4],
        "base": {
            "model": {"kind": "cnn", "width": 2, "depth": 16},
            "data": {"name": "cifar10", "root": "data/cifar10", "augment": True},
            "train": {"epochs": 200, "batch_size": 128, "lr_decay_at": [0.4, 0.8]},
            "measure": {"num_pairs": 100},
        },
        "grid": {"model.depth": [16, 22, 28], "model.width": [2, 4]},
        "zip": {"model.batchnorm": [False, True, False, True],
                "model.skip": [False, False, True, True],
                "label.variant": ["plain", "bn", "skip", "bn+skip"]},
        "lr_selection": {"grid": [0.01, 0.03, 0.1]},
    }
    planned = expand(parse_sweep(data))
    assert len(planned) == 3 * 2 * 4 * 3 * 5
    last = planned[-1]
    assert last.run_id == ("model.depth=28,model.width=4,model.batchnorm=true,"
                           "model.skip=true,lr=0.1,seed=4")
    assert last.labels["variant"] == "bn+skip"
    assert last.config.data.root == "data/cifar10"
    assert last.config.train.epochs == 200
    assert last.config.train.lr_decay_at == (0.4, 0.8)


def test_load_sweep_file(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('name = "grid"\nseeds = [0]\n[grid]\n"model.width" = [8, 16]\n')
    spec = load_sweep(path)
    assert spec.name == "grid"
    assert spec.grid == {"model.width": (8, 16)}


def test_load_sweep_names_file_in_error(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('name = "typo"\n[grid]\n"model.widht" = [8]\n')
    with pytest.raises(ConfigError, match=r"typo.toml: unknown field 'model.widht'"):
        load_sweep(path)


def test_load_sweep_rejects_invalid_toml(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match=r"broken.toml is not valid TOML"):
        load_sweep(path)


def test_load_sweep_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not the name of a shipped sweep \(example"):
        load_sweep(tmp_path / "absent.toml")


def test_shipped_sweeps_load():
    assert set(shipped_sweeps()) >= {"example", "study"}
    for name in shipped_sweeps():
        assert load_sweep(name).name == name
