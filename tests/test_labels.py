"""Rewards to soft targets: the masked, tempered softmax, its config, and user label enhancers."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
import torch

from zooter.data import RoutingDataset, RoutingExample
from zooter.errors import ConfigError
from zooter.labels.targets import LabelConfig, LabelEnhancer, make_targets, reward_tensor, soft_targets

NAN = float("nan")


def softmax(values: list[float], temperature: float = 1.0) -> list[float]:
    """Reference softmax, by hand."""
    exps = [math.exp(v / temperature) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def assert_close(actual: torch.Tensor, expected: list[list[float]], tol: float = 1e-6) -> None:
    assert actual.shape == (len(expected), len(expected[0]))
    for got_row, want_row in zip(actual.tolist(), expected, strict=True):
        assert got_row == pytest.approx(want_row, abs=tol)


# -- soft_targets --------------------------------------------------------------------------------


def test_temperature_one_is_plain_softmax():
    # exp(1), exp(2), exp(3) over their sum: 0.0900, 0.2447, 0.6652
    total = math.exp(1) + math.exp(2) + math.exp(3)
    expected = [math.exp(1) / total, math.exp(2) / total, math.exp(3) / total]
    assert expected == pytest.approx([0.09003, 0.24473, 0.66524], abs=1e-5)
    assert_close(soft_targets(torch.tensor([[1.0, 2.0, 3.0]]), temperature=1.0), [expected])
    assert_close(soft_targets(torch.tensor([[1.0, 2.0, 3.0]])), [expected])  # tau = 1 is the default


def test_temperature_two_flattens():
    # exp(0.5), exp(1), exp(1.5) over their sum: 0.1863, 0.3072, 0.5065
    total = math.exp(0.5) + math.exp(1.0) + math.exp(1.5)
    expected = [math.exp(0.5) / total, math.exp(1.0) / total, math.exp(1.5) / total]
    assert expected == pytest.approx([0.18632, 0.30720, 0.50648], abs=1e-5)
    targets = soft_targets(torch.tensor([[1.0, 2.0, 3.0]]), temperature=2.0)
    assert_close(targets, [expected])
    assert targets[0, 2] < soft_targets(torch.tensor([[1.0, 2.0, 3.0]]), temperature=1.0)[0, 2]


def test_small_temperature_is_nearly_one_hot():
    targets = soft_targets(torch.tensor([[1.0, 2.0, 3.0], [5.0, 0.0, 4.9]]), temperature=0.01)
    assert_close(targets, [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], tol=1e-4)
    assert torch.isfinite(targets).all()


def test_large_rewards_do_not_overflow():
    targets = soft_targets(torch.tensor([[1000.0, 1001.0]]), temperature=1.0)
    assert_close(targets, [softmax([0.0, 1.0])])


def test_shift_invariance():
    base = soft_targets(torch.tensor([[1.0, 2.0, 3.0]]), temperature=1.5)
    shifted = soft_targets(torch.tensor([[11.0, 12.0, 13.0]]), temperature=1.5)
    assert torch.allclose(base, shifted, atol=1e-6)


def test_missing_rewards_get_exactly_zero_and_the_rest_renormalise():
    rewards = torch.tensor([[1.0, NAN, 3.0], [NAN, 2.0, NAN], [NAN, 4.0, 4.0]])
    targets = soft_targets(rewards, temperature=1.0)
    assert targets[0, 1].item() == 0.0
    assert targets[1, 0].item() == 0.0 and targets[1, 2].item() == 0.0
    assert targets[2, 0].item() == 0.0
    p1, p3 = softmax([1.0, 3.0])  # 0.1192, 0.8808: the masked softmax over the present experts
    assert_close(targets, [[p1, 0.0, p3], [0.0, 1.0, 0.0], [0.0, 0.5, 0.5]])
    assert not torch.isnan(targets).any()


def test_rows_sum_to_one():
    generator = torch.Generator().manual_seed(0)
    rewards = torch.rand(50, 6, generator=generator) * 10
    rewards[torch.rand(50, 6, generator=generator) < 0.3] = NAN
    rewards[:, 0] = 1.0  # every row keeps at least one reward
    for temperature in (0.1, 1.0, 7.0):
        targets = soft_targets(rewards, temperature=temperature)
        assert targets.shape == (50, 6)
        assert torch.allclose(targets.sum(dim=-1), torch.ones(50), atol=1e-5)
        assert (targets >= 0).all()
        assert (targets[torch.isnan(rewards)] == 0).all()


def test_one_dimensional_rewards_are_one_row():
    assert soft_targets(torch.tensor([1.0, 2.0, 3.0])).tolist() == pytest.approx(softmax([1, 2, 3]), abs=1e-6)


@pytest.mark.parametrize("bad_row", [[NAN, NAN, NAN], [float("inf"), NAN, float("-inf")]])
def test_row_without_a_finite_reward_raises(bad_row):
    with pytest.raises(ValueError, match="at least one reward"):
        soft_targets(torch.tensor([[1.0, 2.0, 3.0], bad_row]))


@pytest.mark.parametrize("temperature", [0.0, -1.0, -0.001])
def test_non_positive_temperature_raises(temperature):
    with pytest.raises(ValueError, match="temperature"):
        soft_targets(torch.tensor([[1.0, 2.0]]), temperature=temperature)


def test_nan_temperature_raises():
    with pytest.raises(ValueError, match="temperature"):
        soft_targets(torch.tensor([[1.0, 2.0]]), temperature=float("nan"))


def test_integer_rewards_work_like_floats():
    targets = soft_targets(torch.tensor([[1, 2, 3]]))
    assert_close(targets, [softmax([1.0, 2.0, 3.0])])


# -- LabelConfig ---------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0, -0.5, float("nan")])
def test_label_config_rejects_non_positive_temperature(temperature):
    with pytest.raises(ConfigError) as info:
        LabelConfig(temperature=temperature)
    assert "temperature" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_label_config_rejects_unknown_keys_in_code():
    with pytest.raises(ConfigError, match="temprature"):
        LabelConfig(temprature=2.0)


def test_label_config_default_and_round_trip():
    assert LabelConfig().temperature == 1.0
    config = LabelConfig(temperature=0.5)
    assert config.to_dict() == {"temperature": 0.5, "hard": False, "tags": "none", "beta": 0.3}
    assert LabelConfig.from_dict(config.to_dict()) == config


def test_label_config_from_dict_drops_unknown_keys_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        config = LabelConfig.from_dict({"temperature": 2.5, "sharpening": "v2"})
    assert config.temperature == 2.5
    assert config.to_dict()["temperature"] == 2.5 and "sharpening" not in config.to_dict()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("sharpening" in m and "LabelConfig" in m for m in messages)


def test_label_config_from_dict_still_validates_known_keys():
    with pytest.raises(ConfigError, match="temperature"):
        LabelConfig.from_dict({"temperature": -1, "extra": 1})


# -- make_targets and enhancers ------------------------------------------------------------------


class UniformMix:
    """Mixes every target toward the uniform distribution over the experts a row has rewards for.

    ``fit`` learns the mixing weight from the data: the share of rows with a tag.
    """

    def __init__(self) -> None:
        self.alpha: float | None = None
        self.fitted_on: tuple[RoutingDataset, torch.Tensor] | None = None
        self.calls: list[str] = []

    def fit(self, dataset: RoutingDataset, targets: torch.Tensor) -> UniformMix:
        self.calls.append("fit")
        self.fitted_on = (dataset, targets.clone())
        self.alpha = sum(1 for ex in dataset if ex.tags) / len(dataset)
        return self

    def transform(self, dataset: RoutingDataset, targets: torch.Tensor) -> torch.Tensor:
        self.calls.append("transform")
        assert self.alpha is not None, "transform before fit"
        present = (targets > 0).float()
        uniform = present / present.sum(dim=-1, keepdim=True)
        return (1 - self.alpha) * targets + self.alpha * uniform

    def to_dict(self) -> dict[str, Any]:
        return {"name": "uniform-mix", "alpha": self.alpha}


def small_dataset() -> RoutingDataset:
    return RoutingDataset(
        [
            RoutingExample("a", "q a", {"x": 1.0, "y": 2.0, "z": 3.0}, tags=("t1",)),
            RoutingExample("b", "q b", {"x": 0.0, "z": 2.0}),
            RoutingExample("c", "q c", {"y": 5.0, "x": 5.0}, tags=("t2",)),
            RoutingExample("d", "q d", {"z": 1.0}),
        ]
    )


def test_reward_tensor_follows_expert_order_with_nan_gaps():
    tensor = reward_tensor(small_dataset())
    assert tensor.dtype == torch.float32
    assert tensor.shape == (4, 3)
    expected = [[1.0, 2.0, 3.0], [0.0, NAN, 2.0], [5.0, 5.0, NAN], [NAN, NAN, 1.0]]
    for got_row, want_row in zip(tensor.tolist(), expected, strict=True):
        for got, want in zip(got_row, want_row, strict=True):
            assert (math.isnan(got) and math.isnan(want)) or got == want


def test_make_targets_without_enhancer_is_masked_softmax():
    p_a = softmax([1.0, 2.0, 3.0])
    p_b = softmax([0.0, 2.0])  # x, z; y is missing
    expected = [p_a, [p_b[0], 0.0, p_b[1]], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    assert_close(make_targets(small_dataset()), expected)

    p_a2 = softmax([1.0, 2.0, 3.0], temperature=2.0)
    p_b2 = softmax([0.0, 2.0], temperature=2.0)
    expected2 = [p_a2, [p_b2[0], 0.0, p_b2[1]], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    assert_close(make_targets(small_dataset(), LabelConfig(temperature=2.0)), expected2)


def test_make_targets_fits_then_applies_a_user_enhancer():
    dataset = small_dataset()
    enhancer = UniformMix()
    assert isinstance(enhancer, LabelEnhancer)

    targets = make_targets(dataset, LabelConfig(temperature=1.0), enhancer)

    assert enhancer.calls == ["fit", "transform"]
    assert enhancer.fitted_on is not None
    fitted_dataset, fitted_targets = enhancer.fitted_on
    assert fitted_dataset is dataset
    assert torch.allclose(fitted_targets, make_targets(dataset))
    assert enhancer.alpha == 0.5  # 2 of the 4 rows have tags
    assert enhancer.to_dict() == {"name": "uniform-mix", "alpha": 0.5}

    # by hand: 0.5 * softmax + 0.5 * uniform over the row's present experts
    p_a = softmax([1.0, 2.0, 3.0])
    p_b = softmax([0.0, 2.0])
    expected = [
        [0.5 * p + 0.5 / 3 for p in p_a],
        [0.5 * p_b[0] + 0.25, 0.0, 0.5 * p_b[1] + 0.25],
        [0.5, 0.5, 0.0],
        [0.0, 0.0, 1.0],
    ]
    assert_close(targets, expected)
    assert torch.allclose(targets.sum(dim=-1), torch.ones(4), atol=1e-6)


def test_label_enhancer_protocol_needs_all_three_methods():
    class FitOnly:
        def fit(self, dataset, targets):
            return self

        def transform(self, dataset, targets):
            return targets

    assert not isinstance(FitOnly(), LabelEnhancer)
    assert not isinstance(object(), LabelEnhancer)
