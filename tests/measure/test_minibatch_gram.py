import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradconf.engine import minibatch_gram

# Both sides are float32 gradients; the Gram is accumulated in float64.
FLOAT32_RTOL = 1e-5


def make_model(batchnorm=False):
    torch.manual_seed(0)
    layers = [nn.Linear(5, 7)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(7))
    layers += [nn.Tanh(), nn.Linear(7, 3)]
    return nn.Sequential(*layers)


def direct_gradients(model, batches):
    """Each batch's mean-loss gradient by loss.backward(), flattened over all parameters."""
    flat = []
    for inputs, targets in batches:
        model.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        flat.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double())
        model.zero_grad()
    return torch.stack(flat)


def make_batches(count=4, size=6):
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(size, 5, generator=generator), torch.randint(0, 3, (size,), generator=generator))
        for _ in range(count)
    ]


def test_minibatch_gram_matches_direct():
    model = make_model()
    batches = make_batches()
    result = minibatch_gram(model, F.cross_entropy, batches)
    gradients = direct_gradients(model, batches)
    torch.testing.assert_close(result.gram, gradients @ gradients.T, rtol=FLOAT32_RTOL, atol=0)
    assert result.granularity == "minibatch"
    assert result.coverage.share == 1.0
    total = sum(result.layer_grams.values())
    torch.testing.assert_close(total, result.gram)


def test_minibatch_gram_batchnorm_train_restores_stats():
    model = make_model(batchnorm=True)
    model.train()
    batches = make_batches()
    running_mean = model[1].running_mean.clone()
    result = minibatch_gram(model, F.cross_entropy, batches, batchnorm="train")
    torch.testing.assert_close(model[1].running_mean, running_mean)
    # Direct gradients in train mode use the same batch statistics.
    gradients = direct_gradients(model, batches)
    torch.testing.assert_close(result.gram, gradients @ gradients.T, rtol=FLOAT32_RTOL, atol=0)
    assert result.batchnorm == "train"


def test_minibatch_gram_leaves_grad_and_mode():
    model = make_model()
    model.eval()
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    minibatch_gram(model, F.cross_entropy, make_batches())
    assert not model.training
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())


def test_minibatch_gram_reports_frozen():
    model = make_model()
    model[0].bias.requires_grad_(False)
    result = minibatch_gram(model, F.cross_entropy, make_batches())
    assert result.coverage.frozen == ("0.bias",)
    assert "0.bias" not in result.layer_grams


def test_minibatch_gram_rejects_empty():
    with pytest.raises(ValueError, match="no mini-batches"):
        minibatch_gram(make_model(), F.cross_entropy, [])


def test_minibatch_gram_rejects_nan_loss():
    model = make_model()
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite"):
        minibatch_gram(model, F.cross_entropy, make_batches())
