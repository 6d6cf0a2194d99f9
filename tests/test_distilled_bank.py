"""``distill+neighbours``: the paper's fine-tuning shapes the embedding, the neighbour bank decides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import keyword_rows

from zooter.cli import main
from zooter.data import RoutingDataset, RoutingExample
from zooter.errors import ConfigError
from zooter.evaluation import evaluate
from zooter.model.encoder import QueryEncoder
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, train_router


def config(encoder: str) -> TrainingConfig:
    # a randomly initialised tiny encoder needs a far higher learning rate than a pretrained one
    return TrainingConfig(
        method="distill+neighbours", encoder=encoder, epochs=3, lr=3e-3, head_lr=3e-3, max_length=32,
        neighbours=[5, 20], device="cpu", show_progress=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def splits() -> tuple[RoutingDataset, RoutingDataset]:
    """(training rows, test rows) of the keyword task, with noisy rewards."""
    rows = RoutingDataset([RoutingExample.from_dict(r) for r in keyword_rows(300, seed=3, noise=2.0)])
    parts = rows.split(validation_fraction=0.0, test_fraction=0.2, seed=0)
    return parts.train, parts.test


@pytest.fixture(scope="module")
def trained(tiny_encoder: str, splits) -> ZooterRouter:
    return train_router(splits[0], config(tiny_encoder))


def test_it_routes_held_out_queries_from_a_bank_it_saves_and_reloads_identically(
    trained: ZooterRouter, splits, tmp_path: Path
) -> None:
    test = splits[1]
    queries = [ex.query for ex in test]
    report = evaluate(trained, test)
    assert trained.bank is not None and trained.decision is not None and trained.decision.routes
    assert report.routed > report.best_single["score"]
    loaded = ZooterRouter.from_pretrained(trained.save_pretrained(tmp_path / "router"), device="cpu")
    assert loaded.config.training["method"] == "distill+neighbours"
    assert loaded.config.decision == trained.config.decision
    before, after = trained.estimate(queries), loaded.estimate(queries)
    torch.testing.assert_close(after.expected_rewards, before.expected_rewards)
    torch.testing.assert_close(after.probabilities, before.probabilities)
    assert [d.expert for d in loaded.route(queries)] == [d.expert for d in trained.route(queries)]
    card = (tmp_path / "router" / "README.md").read_text(encoding="utf-8")
    assert "fine-tuned on the training rewards" in card and "neighbour bank" in card


def test_the_bank_holds_the_fine_tuned_encoders_embeddings_not_the_pretrained_ones(
    trained: ZooterRouter, splits, tiny_encoder: str, tmp_path: Path
) -> None:
    assert trained.config.training_summary["best_epoch"] >= 1  # fine-tuning beat the pretrained encoder here
    query_of = {ex.id: ex.query for ex in splits[0]}
    queries = [query_of[i] for i in trained.bank.ids]  # the training rows, less the validation rows
    unit = torch.nn.functional.normalize
    fine_tuned = unit(trained.embed_queries(queries), dim=-1)
    pretrained = unit(QueryEncoder.load(tiny_encoder, max_length=32).embed_queries(queries), dim=-1)
    bank = trained.bank.embeddings.float()  # kept in fp16
    torch.testing.assert_close(bank, fine_tuned, atol=2e-3, rtol=0)
    assert (bank - pretrained).abs().max() > 0.05
    # and the saved folder carries that encoder: the reloaded router embeds as the trained one does
    loaded = ZooterRouter.from_pretrained(trained.save_pretrained(tmp_path / "router"), device="cpu")
    torch.testing.assert_close(unit(loaded.embed_queries(queries), dim=-1), fine_tuned)
    torch.testing.assert_close(loaded.bank.embeddings, trained.bank.embeddings)


def test_the_epoch_is_chosen_on_validation_rows_and_recorded(trained: ZooterRouter, splits) -> None:
    summary = trained.config.training_summary
    # no validation given: 10 % of the training rows were held out, and kept out of the bank
    assert summary["validation_rows"] == round(0.1 * len(splits[0]))
    assert summary["train_rows"] == len(trained.bank) == len(splits[0]) - summary["validation_rows"]
    assert summary["selected_by"] == "validation gain of the bank"
    epochs = [e for e in trained.training_log if "val_gain" in e]
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3]  # 0: the pretrained encoder, judged too
    best = max(epochs, key=lambda e: e["val_gain"])  # the first of equal gains
    assert summary["best_epoch"] == best["epoch"]
    assert summary["neighbours"] == best["val_neighbours"] == trained.bank.k
    assert trained.decision.calibration["source"] == "validation"
    assert TrainingConfig.from_dict(trained.config.training).method == "distill+neighbours"


def test_it_needs_validation_rows_with_every_reward(tiny_encoder: str, splits) -> None:
    train = splits[0]
    partial = RoutingDataset(
        [RoutingExample(id=ex.id, query=ex.query, rewards={"coder": ex.rewards["coder"]}) for ex in splits[1]],
        experts=train.experts,
    )
    with pytest.raises(ConfigError, match=r"distill\+neighbours.*validation rows"):
        train_router(train, config(tiny_encoder), validation=partial)


def test_zooter_train_takes_the_method(tiny_encoder: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in keyword_rows(120, seed=5)))
    code = main(
        [
            "train", str(data), "--output", str(tmp_path / "router"), "--method", "distill+neighbours",
            "--encoder", tiny_encoder, "--epochs", "1", "--lr", "3e-3", "--max-length", "32",
            "--neighbours", "5,10", "--device", "cpu", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "(distill+neighbours, kept epoch" in line and "neighbours)" in line
    router = ZooterRouter.from_pretrained(tmp_path / "router", device="cpu")
    assert router.bank is not None and router.config.training_summary["validation_rows"] == 12
