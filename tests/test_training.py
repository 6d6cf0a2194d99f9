"""Training: the router learns who answers best, reproducibly, keeping the best validated epoch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import keyword_rows

from zooter.data import RoutingDataset, RoutingExample
from zooter.errors import ConfigError
from zooter.evaluation import evaluate
from zooter.labels.targets import LabelConfig
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, train_router


def dataset(rows: list[dict]) -> RoutingDataset:
    return RoutingDataset([RoutingExample.from_dict(r) for r in rows])


def fast_config(encoder: str, **changes: object) -> TrainingConfig:
    # a randomly initialised tiny encoder needs a far higher learning rate than a pretrained one
    settings = {
        "method": "distill",
        "encoder": encoder,
        "epochs": 8,
        "batch_size": 16,
        "lr": 3e-3,
        "head_lr": 3e-3,
        "max_length": 32,
        "device": "cpu",
        "show_progress": False,
    }
    return TrainingConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def keyword_splits():
    return dataset(keyword_rows(360, seed=0)).split(validation_fraction=0.1, test_fraction=0.25, seed=0)


@pytest.fixture(scope="module")
def trained(tiny_encoder: str, keyword_splits) -> ZooterRouter:
    return train_router(keyword_splits.train, fast_config(tiny_encoder), validation=keyword_splits.validation)


def test_router_learns_the_keyword_rule_on_held_out_queries(trained: ZooterRouter, keyword_splits) -> None:
    test = keyword_splits.test
    decisions = trained.route([ex.query for ex in test])
    best = [max(ex.rewards, key=ex.rewards.get) for ex in test]
    accuracy = sum(d.expert == b for d, b in zip(decisions, best)) / len(test)
    assert accuracy >= 0.9, f"routing accuracy {accuracy:.2f} on {len(test)} held-out queries"
    report = evaluate(trained, test)
    assert report.routed > report.best_single["score"]
    assert report.gap_recovered is not None and report.gap_recovered > 0.8


def test_training_records_its_settings_and_loss_log(trained: ZooterRouter, keyword_splits) -> None:
    assert TrainingConfig.from_dict(trained.config.training).epochs == 8
    training = trained.config.training_summary
    assert training["train_rows"] == len(keyword_splits.train)
    assert training["validation_rows"] == len(keyword_splits.validation)
    assert 1 <= training["best_epoch"] <= 8
    assert trained.config.labels == {"temperature": 1.0, "hard": False, "tags": "none", "beta": 0.3}
    epochs = [e for e in trained.training_log if "val_loss" in e]
    assert [e["epoch"] for e in epochs] == list(range(1, 9))
    steps = [e for e in trained.training_log if "loss" in e]
    assert steps and steps[-1]["loss"] < steps[0]["loss"]
    # the kept epoch is the one with the best validation reward
    best = max(epochs, key=lambda e: e["val_reward"])
    assert training["best_epoch"] == best["epoch"]


def test_training_log_travels_with_the_saved_router(trained: ZooterRouter, tmp_path: Path) -> None:
    loaded = ZooterRouter.from_pretrained(trained.save_pretrained(tmp_path / "r"))
    assert loaded.training_log == trained.training_log
    assert loaded.config.training_summary == trained.config.training_summary
    assert loaded.config.training == trained.config.training


def test_same_seed_same_router_on_cpu(tiny_encoder: str) -> None:
    data = dataset(keyword_rows(60, seed=3))
    config = fast_config(tiny_encoder, epochs=2)
    a = train_router(data, config).predict_proba(data.texts[:10])
    b = train_router(data, config).predict_proba(data.texts[:10])
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    c = train_router(data, config.replace(seed=1)).predict_proba(data.texts[:10])
    assert not torch.equal(a, c)


def test_validation_fraction_holds_out_rows_by_hash(tiny_encoder: str) -> None:
    data = dataset(keyword_rows(50, seed=4))
    router = train_router(data, fast_config(tiny_encoder, epochs=1, validation_fraction=0.2))
    assert router.config.training_summary["validation_rows"] == 10
    assert router.config.training_summary["train_rows"] == 40


def test_missing_rewards_are_masked_in_training(tiny_encoder: str) -> None:
    rows = keyword_rows(48, seed=5)
    for row in rows[::2]:
        del row["rewards"]["poet"]
    router = train_router(dataset(rows), fast_config(tiny_encoder, epochs=1))
    assert router.experts == ["mathbot", "coder", "poet"]


def test_prior_bias_starts_at_the_mean_target(tiny_encoder: str) -> None:
    rows = [{"id": str(i), "query": "hello world", "rewards": {"a": 5.0, "b": 0.0}} for i in range(8)]
    router = train_router(dataset(rows), fast_config(tiny_encoder, epochs=1, lr=1e-12, head_lr=1e-12))
    probs = router.predict_proba(["hello world"])[0]
    expected = torch.softmax(torch.tensor([5.0, 0.0]), 0)
    torch.testing.assert_close(probs, expected, atol=1e-3, rtol=0)


def test_temperature_reaches_the_targets(tiny_encoder: str) -> None:
    data = dataset(keyword_rows(30, seed=6))
    router = train_router(data, fast_config(tiny_encoder, epochs=1, labels=LabelConfig(temperature=4.0)))
    assert router.config.labels["temperature"] == 4.0


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="epochs"):
        TrainingConfig(epochs=0)
    with pytest.raises(ConfigError, match="lr"):
        TrainingConfig(lr=-1.0)
    with pytest.raises(ConfigError, match="select_by"):
        TrainingConfig(select_by="accuracy")
    with pytest.raises(ConfigError, match="epoch"):
        TrainingConfig(epoch=3)  # a typo is not silently ignored
    assert TrainingConfig.from_dict({"epochs": 2, "from_the_future": True}).epochs == 2
    config = TrainingConfig(epochs=3)
    assert TrainingConfig.from_dict(config.to_dict()) == config


def test_validation_without_complete_rows_picks_the_epoch_by_loss(tiny_encoder: str, caplog) -> None:
    rows = keyword_rows(80, seed=7)
    for row in rows[60:]:
        del row["rewards"]["poet"]  # validation rows lack an expert: no routed reward can be computed
    train, validation = dataset(rows[:60]), dataset(rows[60:])
    router = train_router(train, fast_config(tiny_encoder, epochs=3), validation=validation)
    summary = router.config.training_summary
    assert summary["selected_by"] == "loss"
    assert "picking the best epoch by loss" in caplog.text
    losses = {e["epoch"]: e["val_loss"] for e in router.training_log if "val_loss" in e}
    assert summary["best_epoch"] == min(losses, key=losses.get)


def test_unknown_or_missing_device_is_a_config_error(tiny_encoder: str) -> None:
    data = dataset(keyword_rows(10))
    with pytest.raises(ConfigError, match="not a device"):
        train_router(data, fast_config(tiny_encoder, device="gpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            train_router(data, fast_config(tiny_encoder, device="cuda"))


@pytest.mark.parametrize("field", ["lr", "head_lr", "weight_decay", "max_grad_norm"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_settings_are_refused(tiny_encoder: str, field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"{field}=.*finite"):
        fast_config(tiny_encoder, **{field: value})


def test_training_that_diverges_stops_with_a_clear_error(tiny_encoder: str) -> None:
    from zooter.errors import ZooterError

    data = dataset(keyword_rows(40, seed=2))
    with pytest.raises(ZooterError, match=r"diverged.*lower the learning rates"):
        train_router(data, fast_config(tiny_encoder, epochs=3, lr=1e30, head_lr=1e30))
