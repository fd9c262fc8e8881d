import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradconf.engine import check_engine, loop_gram, reference_gram

FLOAT64_RTOL = 1e-12


def linear_problem(batch_size=5):
    generator = torch.Generator().manual_seed(0)
    model = nn.Linear(4, 2, bias=False).double()
    inputs = torch.randn(batch_size, 4, generator=generator, dtype=torch.float64)
    targets = torch.randn(batch_size, 2, generator=generator, dtype=torch.float64)
    return model, inputs, targets


def analytic_gram(model, inputs, targets):
    # f_i = ||W x_i - y_i||², so ∇_W f_i = 2 (W x_i - y_i) x_iᵀ and
    # ⟨∇f_i, ∇f_j⟩ = 4 ⟨r_i, r_j⟩ ⟨x_i, x_j⟩.
    residuals = inputs @ model.weight.detach().T - targets
    return 4 * (residuals @ residuals.T) * (inputs @ inputs.T)


def sum_squared_error(outputs, targets):
    return ((outputs - targets) ** 2).sum()


def test_loop_gram_matches_closed_form():
    model, inputs, targets = linear_problem()
    result = loop_gram(model, sum_squared_error, inputs, targets, loss_reduction="sum")
    torch.testing.assert_close(result.gram, analytic_gram(model, inputs, targets),
                               rtol=FLOAT64_RTOL, atol=0)
    assert result.engine == "loop"


def test_loop_gram_mean_scales_by_batch_squared():
    model, inputs, targets = linear_problem(batch_size=5)

    def mean_squared_error(outputs, batch_targets):
        return ((outputs - batch_targets) ** 2).sum() / outputs.shape[0]

    mean = loop_gram(model, mean_squared_error, inputs, targets, loss_reduction="mean")
    summed = loop_gram(model, sum_squared_error, inputs, targets, loss_reduction="sum")
    torch.testing.assert_close(mean.gram * 25, summed.gram, rtol=FLOAT64_RTOL, atol=0)
    torch.testing.assert_close(mean.example_gram(), summed.gram, rtol=FLOAT64_RTOL, atol=0)
    torch.testing.assert_close(mean.cosines(), summed.cosines(), rtol=FLOAT64_RTOL, atol=0)


def test_loop_gram_rejects_bad_reduction():
    model, inputs, targets = linear_problem()
    with pytest.raises(ValueError, match="loss_reduction='avg'"):
        loop_gram(model, sum_squared_error, inputs, targets, loss_reduction="avg")


def test_loop_gram_rejects_empty_batch():
    model, inputs, targets = linear_problem()
    with pytest.raises(ValueError, match="at least one example"):
        loop_gram(model, sum_squared_error, inputs[:0], targets[:0], loss_reduction="sum")


def test_loop_gram_rejects_all_frozen():
    model, inputs, targets = linear_problem()
    model.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        loop_gram(model, sum_squared_error, inputs, targets, loss_reduction="sum")


def test_loop_gram_batchnorm_eval_leaves_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    model.train()
    inputs = torch.randn(6, 3)
    targets = torch.randint(0, 2, (6,))
    running_mean = model[1].running_mean.clone()
    result = loop_gram(model, F.cross_entropy, inputs, targets, batchnorm="eval")
    assert result.batchnorm == "eval"
    assert model.training and model[1].training
    torch.testing.assert_close(model[1].running_mean, running_mean)


def test_loop_gram_batchnorm_train_rejected():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="batchnorm='eval'"):
        loop_gram(model, F.cross_entropy, torch.randn(4, 3), torch.zeros(4, dtype=torch.long),
                  batchnorm="none")


def test_reference_gram_leaves_user_model_float32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    result = reference_gram(model, F.cross_entropy, torch.randn(4, 3),
                            torch.tensor([0, 1, 1, 0]))
    assert result.gram.dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float32


def test_check_engine_loop_passes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    check = check_engine(model, F.cross_entropy, torch.randn(4, 3), torch.tensor([0, 1, 1, 0]),
                         engine="loop")
    assert check.passed
    assert check.max_relative_error < 1e-5
