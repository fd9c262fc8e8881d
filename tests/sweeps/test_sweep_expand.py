from gradconf.runs.study import StudySpec, plan_study
from gradconf.sweeps import expand, load_sweep, parse_sweep, run_id_for
from gradconf.sweeps.expand import MAX_RUN_ID_LENGTH


def test_expand_counts_every_axis(tiny_sweep):
    tiny_sweep["grid"] = {"model.depth": [1, 2], "model.width": [8, 16, 32]}
    tiny_sweep["zip"] = {"model.batchnorm": [False, True], "model.skip": [False, True]}
    tiny_sweep["lr_selection"] = {"grid": [0.01, 0.03, 0.1]}
    planned = expand(parse_sweep(tiny_sweep))
    assert len(planned) == 2 * 3 * 2 * 3 * 2
    assert len({run.run_id for run in planned}) == len(planned)
    assert len({run.config.digest() for run in planned}) == len(planned)


def test_expand_varies_seeds_fastest(tiny_sweep):
    planned = expand(parse_sweep(tiny_sweep))
    assert [run.run_id for run in planned] == [
        "model.depth=1,seed=0", "model.depth=1,seed=1",
        "model.depth=2,seed=0", "model.depth=2,seed=1",
    ]


def test_expand_ids_and_labels(tiny_sweep):
    tiny_sweep["grid"] = {"model.depth": [16], "model.width": [2]}
    tiny_sweep["base"]["model"]["kind"] = "cnn"
    tiny_sweep["seeds"] = [0]
    tiny_sweep["lr_selection"] = {"grid": [0.1]}
    (run,) = expand(parse_sweep(tiny_sweep))
    assert run.run_id == "model.depth=16,model.width=2,lr=0.1,seed=0"
    assert run.labels == {"model.depth": 16, "model.width": 2, "train.lr": 0.1, "seed": 0}
    assert run.config.model.depth == 16
    assert run.config.model.width == 2
    assert run.config.train.lr == 0.1
    assert run.config.seed == 0


def test_expand_ids_stable_when_axis_grows(tiny_sweep):
    before = {run.run_id: run.config for run in expand(parse_sweep(tiny_sweep))}
    tiny_sweep["grid"]["model.depth"] = [3, 1, 2]
    after = {run.run_id: run.config for run in expand(parse_sweep(tiny_sweep))}
    assert set(before) < set(after)
    for run_id, config in before.items():
        assert after[run_id] == config


def test_expand_label_axes_not_in_id(tiny_sweep):
    tiny_sweep["zip"] = {"model.width": [8, 16], "label.size": ["small", "large"]}
    planned = expand(parse_sweep(tiny_sweep))
    assert planned[0].run_id == "model.depth=1,model.width=8,seed=0"
    assert planned[0].labels["size"] == "small"
    assert planned[-1].labels["size"] == "large"


def test_run_id_replaces_unsafe_characters():
    run_id = run_id_for({"data.root": "/data/cifar 10", "train.lr_decay_at": (0.4, 0.8)})
    assert run_id == "data.root=_data_cifar_10,train.lr_decay_at=0.4_0.8"


def test_run_id_formats_values():
    run_id = run_id_for({"model.batchnorm": True, "train.lr": 1e-05, "data.max_train": None})
    assert run_id == "model.batchnorm=true,lr=1e-05,data.max_train=none"


def test_run_id_long_gets_hash():
    values = {f"label{index}": "x" * 20 for index in range(10)}
    other = {**values, "label9": "y" * 20}
    first = run_id_for(values)
    assert len(first) == MAX_RUN_ID_LENGTH
    assert first.rsplit(",hash=", 1)[1].isalnum()
    assert first != run_id_for(other)
    assert first == run_id_for(dict(values))


def test_study_file_matches_study_plan():
    planned = expand(load_sweep("study"))
    expected = plan_study(StudySpec())
    assert [run.config for run in planned] == [run.config for run in expected]
    for run, study_run in zip(planned, expected):
        for key in ("group", "x_name", "x", "seed"):
            assert run.labels[key] == study_run.labels[key], (run.run_id, key)
