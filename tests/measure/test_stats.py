import math

import numpy as np
import pytest
import torch

from gradconf.measure import gram_statistics, pair_statistics


def gram_of(vectors):
    matrix = torch.tensor(vectors, dtype=torch.float64)
    return matrix @ matrix.T


def test_stats_hand_built_gram():
    # g0 = (1, 0), g1 = (0, 2), g2 = (-3, 0): pairs (0,1): 0, (0,2): -3, (1,2): 0.
    stats, cosines = gram_statistics(gram_of([[1, 0], [0, 2], [-3, 0]]))
    assert stats.num_gradients == 3
    assert stats.num_pairs == 3
    assert stats.min_inner == -3.0
    assert stats.eta == 3.0
    assert stats.mean_inner == pytest.approx(-1.0)
    assert stats.min_cosine == pytest.approx(-1.0)
    assert stats.mean_cosine == pytest.approx(-1.0 / 3.0)
    assert stats.median_cosine == pytest.approx(0.0)
    assert stats.negative_fraction == pytest.approx(1.0 / 3.0)
    assert stats.undefined_cosines == 0
    assert stats.mean_sq_norm == pytest.approx((1 + 4 + 9) / 3)
    assert stats.min_sq_norm == 1.0
    assert stats.max_sq_norm == 9.0
    np.testing.assert_allclose(np.sort(cosines), [-1.0, 0.0, 0.0])


def test_stats_eta_zero_when_aligned():
    stats, _ = gram_statistics(gram_of([[1, 1], [2, 1], [1, 3]]))
    assert stats.eta == 0.0
    assert stats.min_inner > 0
    assert stats.negative_fraction == 0.0


def test_stats_zero_gradient_reported():
    stats, cosines = gram_statistics(gram_of([[1, 0], [0, 0], [-1, 1]]))
    assert stats.undefined_cosines == 2
    assert int(np.isnan(cosines).sum()) == 2
    # The one defined pair, (0, 2), has cosine -1/sqrt(2).
    assert stats.min_cosine == pytest.approx(-1 / math.sqrt(2))
    assert stats.min_inner == -1.0


def test_stats_all_zero_gradients():
    stats, _ = gram_statistics(torch.zeros(3, 3, dtype=torch.float64))
    assert stats.undefined_cosines == 3
    assert math.isnan(stats.min_cosine)
    assert stats.eta == 0.0


def test_stats_needs_two_gradients():
    with pytest.raises(ValueError, match="at least two gradients"):
        gram_statistics(torch.ones(1, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least two gradients"):
        pair_statistics(torch.zeros(0), torch.zeros(0), torch.zeros(0))


def test_stats_non_finite_rejected():
    gram = gram_of([[1, 0], [0, 1]])
    gram[0, 1] = gram[1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="diverged"):
        gram_statistics(gram)


def test_stats_non_square_rejected():
    with pytest.raises(ValueError, match="square"):
        gram_statistics(torch.zeros(2, 3, dtype=torch.float64))
