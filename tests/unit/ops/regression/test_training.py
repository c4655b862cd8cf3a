"""What both fits share in training: the standardiser, the data's charge, divergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from service.errors import LimitExceeded
from service.limits import Budget
from service.ops.regression.training import charge_data, diverged, standardizer


def test_the_standardizer_equals_sklearns_scaler() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((25, 3)) * [1.0, 10.0, 0.1] + [5.0, -2.0, 0.0]
    x[:, 2] = 7.0  # a constant column keeps a scale of 1
    reference = StandardScaler().fit(x)
    mean, scale = standardizer(torch.from_numpy(x), center=True)
    np.testing.assert_allclose(mean.numpy(), reference.mean_)
    np.testing.assert_allclose(scale.numpy(), reference.scale_)
    uncentred = StandardScaler(with_mean=False).fit(x)
    mean, scale = standardizer(torch.from_numpy(x), center=False)
    assert not bool(mean.any())
    np.testing.assert_allclose(scale.numpy(), uncentred.scale_)


@pytest.mark.parametrize("value", [0.1, 1e12, -3.7, 0.0])
def test_a_constant_column_centres_to_exact_zeros_and_keeps_a_scale_of_1(value: float) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16_000, 4)) * 3.0 + 7.0
    x[:, 1] = value  # its computed mean is not always the value itself
    x[:, 3] = 1.0
    x[::2, 3] += np.spacing(1.0)  # within the two passes' rounding: constant to scikit-learn
    reference = StandardScaler().fit(x)
    mean, scale = standardizer(torch.from_numpy(x), center=True)
    np.testing.assert_allclose(scale.numpy(), reference.scale_)
    np.testing.assert_allclose(mean.numpy(), reference.mean_, rtol=1e-12)
    assert scale[1] == 1.0 and scale[3] == 1.0
    assert not bool((torch.from_numpy(x[:, 1]) - mean[1]).any())


def test_one_sample_has_scale_1_and_no_samples_do_not_fail() -> None:
    mean, scale = standardizer(torch.tensor([[2.0, -1.0]], dtype=torch.float64), center=True)
    assert mean.tolist() == [2.0, -1.0] and scale.tolist() == [1.0, 1.0]
    mean, scale = standardizer(torch.zeros(0, 2, dtype=torch.float64), center=True)
    assert scale.tolist() == [1.0, 1.0]


def test_the_data_is_charged_twice_for_x_and_twice_for_the_outputs() -> None:
    budget = Budget(max_elements=1000, max_total_elements=10_000, max_flops=1e9)
    charge_data(100, 4, 2, budget)
    assert budget.elements == 2 * 100 * 4 + 2 * 100 * 2
    with pytest.raises(LimitExceeded) as info:
        charge_data(100, 11, 1, Budget(max_elements=1000, max_total_elements=10_000, max_flops=1))
    assert info.value.limit == "max_elements"
    assert info.value.details["requested"] == 100 * 11


def test_divergence_names_the_epoch_and_the_rate() -> None:
    error = diverged(7, 0.5)
    assert error.code == "diverged"
    assert error.details == {"epoch": 7, "lr": 0.5}
