"""Monitor integrations: TensorBoard, the Lightning callback and ``gradconf plot``."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from monitor_helpers import TIMING_COLUMNS, batch, build, loss_fn
from torch import nn
from torch.nn import functional as F

from gradconf.cli.main import main
from gradconf.monitor import Monitor, plot_record

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
HAS_LIGHTNING = importlib.util.find_spec("lightning") is not None
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _trained_monitor(steps: int = 6, **options) -> Monitor:
    torch.manual_seed(0)
    model, shape, classes = build("cnn")
    monitor = Monitor(model, every=2, **options)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        inputs, targets = batch(shape, classes, 6)
        with monitor.step(step):
            loss = loss_fn("mean")(model(inputs), targets)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        monitor.record_loss(loss)
    return monitor


def _read_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return events


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed (pip install gradconf[tensorboard])")
def test_tensorboard_writer_gets_measured_steps(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(tmp_path) as writer:
        monitor = _trained_monitor(tensorboard_writer=writer)
        monitor.flush()
    events = _read_events(tmp_path)

    tags = events.Tags()
    assert "gradconf/cosines" in tags["histograms"]
    assert {"gradconf/eta", "gradconf/min_cosine", "gradconf/min_cosine/0"} <= set(tags["scalars"])
    assert [event.step for event in events.Scalars("gradconf/eta")] == [0, 2, 4]
    history = monitor.history().set_index("step")
    for event in events.Scalars("gradconf/min_cosine"):
        assert event.value == pytest.approx(history.loc[event.step, "min_cosine"], rel=1e-6)
    # Losses reach the writer with their measured step once record_loss has run.
    assert [event.step for event in events.Scalars("gradconf/loss")] == [0, 2, 4]


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed (pip install gradconf[tensorboard])")
def test_to_tensorboard_writes_whole_record(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    monitor = _trained_monitor(keep_cosines=True)
    with SummaryWriter(tmp_path) as writer:
        monitor.to_tensorboard(writer, prefix="run")
    events = _read_events(tmp_path)

    assert [event.step for event in events.Scalars("run/loss")] == list(range(6))
    assert [event.step for event in events.Scalars("run/eta")] == [0, 2, 4]
    assert len(events.Histograms("run/cosines")) == 3


def test_plot_command_writes_png(tmp_path, capsys):
    record = tmp_path / "confusion.parquet"
    _trained_monitor().save(record)

    assert main(["plot", str(record), "--out", str(tmp_path / "plot.png")]) == 0
    assert (tmp_path / "plot.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "Plot:" in capsys.readouterr().out
    assert main(["plot", str(record)]) == 0
    assert (tmp_path / "confusion.png").is_file()


def test_plot_command_rejects_other_file(tmp_path, capsys):
    other = tmp_path / "other.parquet"
    import pandas as pd

    pd.DataFrame({"x": [1]}).to_parquet(other)
    assert main(["plot", str(other)]) == 2
    assert "is not a monitor record" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "missing.parquet")]) == 2


def test_plot_marks_nonfinite_steps(tmp_path):
    monitor = _trained_monitor(steps=3)
    monitor.record_loss(float("nan"), step=3)
    assert plot_record(monitor.history(), tmp_path / "plot.png").read_bytes().startswith(PNG_SIGNATURE)


if HAS_LIGHTNING:
    import lightning.pytorch as pl

    class Classifier(pl.LightningModule):
        """A small classifier trained by Lightning's automatic optimization."""

        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 4))

        def training_step(self, batch, batch_idx):
            inputs, targets = batch
            return F.cross_entropy(self.net(inputs), targets)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(callback, *, steps: int, accumulate: int = 1, ckpt_path=None, checkpoint_dir=None):
    torch.manual_seed(0)
    inputs, targets = torch.randn(96, 6), torch.randint(0, 4, (96,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets), batch_size=8)
    trainer = pl.Trainer(
        max_steps=steps, accumulate_grad_batches=accumulate, callbacks=[callback],
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=checkpoint_dir,
    )
    trainer.fit(Classifier(), loader, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.skipif(not HAS_LIGHTNING, reason="lightning is not installed (pip install gradconf[lightning])")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("accumulate", [1, 2])
def test_lightning_callback_logs_statistics(tmp_path, accumulate):
    from gradconf.monitor.lightning import ConfusionCallback

    callback = ConfusionCallback(every=2, save_path=tmp_path / "confusion.parquet")
    trainer = _fit(callback, steps=5, accumulate=accumulate)

    history = callback.monitor.history()
    assert history["step"].tolist() == [0, 1, 2, 3, 4]
    measured = history[history["measured"]]
    assert measured["step"].tolist() == [0, 2, 4]
    assert (measured["num_micro_batches"] == accumulate).all()
    assert (measured["batch_size"] == 8 * accumulate).all()
    assert history["loss"].between(0.5, 3.0).all()  # the mean micro-batch loss, unscaled
    assert float(trainer.callback_metrics["gradconf/eta"]) == pytest.approx(measured["eta"].iloc[-1], rel=1e-6)
    assert (tmp_path / "confusion.parquet").is_file()


@pytest.mark.skipif(not HAS_LIGHTNING, reason="lightning is not installed (pip install gradconf[lightning])")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lightning_checkpoint_continues_record(tmp_path):
    from gradconf.monitor.lightning import ConfusionCallback

    full = ConfusionCallback(every=2)
    _fit(full, steps=6)
    first = ConfusionCallback(every=2)
    trainer = _fit(first, steps=3)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    resumed = ConfusionCallback(every=2)
    _fit(resumed, steps=6, ckpt_path=tmp_path / "last.ckpt")

    expected = full.monitor.history().drop(columns=TIMING_COLUMNS)
    actual = resumed.monitor.history().drop(columns=TIMING_COLUMNS)
    assert actual["step"].tolist() == list(range(6))
    assert actual["measured"].tolist() == expected["measured"].tolist()
    assert actual.iloc[:3].equals(first.monitor.history().drop(columns=TIMING_COLUMNS))
