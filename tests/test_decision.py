"""The decision rule: leave the best expert only where routing paid on held-out rows, never silently worse."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from conftest import keyword_rows

from zooter.data import RoutingDataset, RoutingExample
from zooter.decide.policy import DecisionRule, best_expert, calibrate_decision, decide, route_decisions
from zooter.errors import ConfigError
from zooter.evaluation import evaluate
from zooter.labels.targets import LabelConfig, make_targets
from zooter.model.neighbours import NEIGHBOURS_NAME, NeighbourBank
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, fit_bank, train_router

EXPERTS = ["a", "b", "c"]
NAN = math.nan


def dataset(rows: list[dict]) -> RoutingDataset:
    return RoutingDataset([RoutingExample.from_dict(r) for r in rows])


def config(encoder: str | None, **changes: object) -> TrainingConfig:
    return TrainingConfig(encoder=encoder, max_length=32, device="cpu", show_progress=False, **changes)


# -- decide -------------------------------------------------------------------------------------
def test_the_default_expert_is_left_only_beyond_the_margin() -> None:
    scores = torch.tensor([[0.50, 0.55, 0.1], [0.50, 0.70, 0.1], [0.9, 0.2, 0.1]])
    rule = DecisionRule(default_expert="a", margin=0.1)
    assert decide(scores, EXPERTS, rule) == [0, 1, 0]
    assert decide(scores, EXPERTS) == [1, 1, 0]  # no rule: the highest score


def test_a_rule_that_does_not_route_sends_everything_to_the_default() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.0, 0.0, 1.0]])
    assert decide(scores, EXPERTS, DecisionRule(default_expert="a", margin=None)) == [0, 0]


def test_allowed_experts_bound_the_choice_and_nan_never_wins() -> None:
    scores = torch.tensor([[0.5, NAN, 0.4], [0.5, 0.9, 0.45]])
    rule = DecisionRule(default_expert="a", margin=0.0)
    assert decide(scores, EXPERTS, rule) == [0, 1]
    assert decide(scores, EXPERTS, rule, allowed=["b", "c"]) == [2, 1]  # default not allowed: best allowed
    assert decide(scores, EXPERTS, DecisionRule(default_expert="a", margin=None), allowed=["c"]) == [2, 2]


def test_a_decision_rule_validates_its_margin() -> None:
    with pytest.raises(ConfigError, match="margin"):
        DecisionRule(default_expert="a", margin=-1.0)
    with pytest.raises(ConfigError, match="margin"):
        DecisionRule(default_expert="a", margin=math.inf)


# -- calibrate_decision -------------------------------------------------------------------------
def test_informative_scores_calibrate_a_rule_that_routes() -> None:
    rng = random.Random(0)
    rewards = torch.tensor([[1.0, 0.0] if rng.random() < 0.6 else [0.0, 1.0] for _ in range(400)])
    scores = rewards + torch.tensor([[rng.gauss(0, 0.3), rng.gauss(0, 0.3)] for _ in range(400)])
    rule = calibrate_decision(scores, rewards, ["a", "b"])
    assert rule.default_expert == "a" and rule.routes
    c = rule.calibration
    assert c["pays"] and c["routed_score"] > c["default_score"] + 2 * c["standard_error"]
    assert 0.2 < c["share_routed_away"] < 0.6


def test_uninformative_scores_keep_the_default_expert() -> None:
    rng = random.Random(1)
    rewards = torch.tensor([[float(rng.random() < 0.7), float(rng.random() < 0.5)] for _ in range(300)])
    scores = torch.rand(300, 2, generator=torch.Generator().manual_seed(0))
    rule = calibrate_decision(scores, rewards, ["a", "b"])
    assert rule.default_expert == "a"
    assert not rule.routes and rule.calibration["pays"] is False


# -- evidence per query: the rule's z ---------------------------------------------------------------
def test_an_advantage_on_thin_evidence_keeps_the_default_and_strong_evidence_routes() -> None:
    rule = DecisionRule(default_expert="a", margin=0.0, z=2.0)
    scores = torch.tensor([[0.5, 0.7, 0.1], [0.5, 0.7, 0.1], [0.5, 0.9, 0.6]])
    stderr = torch.tensor([[0.02, 0.03, 0.02], [0.02, 0.30, 0.02], [0.02, 0.40, 0.03]])
    # row 0: +0.2 on a standard error of 0.036 routes; row 1: the same +0.2 on 0.30 does not;
    # row 2: the best score rests on thin evidence, the runner-up's +0.1 on 0.036 clears it and answers
    assert decide(scores, EXPERTS, rule, stderr=stderr) == [1, 0, 2]
    assert decide(scores, EXPERTS, rule) == [1, 1, 1]  # no standard errors (a distilled head): the margin alone
    assert decide(scores, EXPERTS, DecisionRule(default_expert="a", margin=0.0), stderr=stderr) == [1, 1, 1]
    routed, kept, _ = route_decisions(scores.softmax(-1), scores, EXPERTS, rule, stderr=stderr)
    assert routed.z == 2.0 and routed.stderr == pytest.approx({"a": 0.02, "b": 0.03, "c": 0.02})
    assert routed.to_dict()["z"] == 2.0 and "stderr" in routed.to_dict()
    assert "plus 2 x the standard error 0.03606 of the difference" in routed.explain().splitlines()[-1]
    assert kept.reason == "default" and "std. error" in kept.explain()
    assert "2 standard errors" in kept.explain().splitlines()[-1]


def test_a_rule_saved_before_z_existed_loads_with_the_margin_alone() -> None:
    rule = DecisionRule.from_dict({"default_expert": "a", "margin": 0.1, "calibration": {}})
    assert rule.z == 0.0
    with pytest.raises(ConfigError, match="z"):
        DecisionRule(default_expert="a", margin=0.0, z=-1.0)


def test_calibration_asks_for_evidence_where_thin_estimates_mislead() -> None:
    # "b" beats the default on a third of the rows; its estimate is exact on some rows and pure noise
    # on others, and its standard error says which: only the rule that weighs it routes well
    gen = torch.Generator().manual_seed(0)
    rows = 600
    better = torch.rand(rows, generator=gen) < 0.35
    rewards = torch.stack([torch.full((rows,), 0.5), torch.where(better, 0.9, 0.1)], dim=1)
    thin = torch.rand(rows, generator=gen) < 0.5
    noise = torch.randn(rows, generator=gen) * 0.5
    scores = torch.stack([torch.full((rows,), 0.5), torch.where(thin, 0.5 + noise, rewards[:, 1])], dim=1)
    stderr = torch.stack([torch.full((rows,), 0.02), torch.where(thin, 0.5, 0.02)], dim=1)
    plain = calibrate_decision(scores, rewards, ["a", "b"])
    weighed = calibrate_decision(scores, rewards, ["a", "b"], stderr=stderr)
    assert weighed.routes and weighed.z > 0 and weighed.calibration["z_grid"][0] == 0.0
    assert weighed.calibration["gain"] > plain.calibration["gain"] + 0.01
    picks = torch.tensor(decide(scores, ["a", "b"], weighed, stderr=stderr))
    assert bool((picks[~thin] == better[~thin].long()).all())  # every well-evidenced row goes to its best
    assert float((picks[thin] == 1).float().mean()) < 0.05  # the noisy ones stay with the default


def test_uninformative_scores_with_standard_errors_keep_the_default_expert() -> None:
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        rewards = (torch.rand(300, 3, generator=gen) < torch.tensor([0.7, 0.6, 0.5])).float()
        scores = torch.rand(300, 3, generator=gen)
        stderr = torch.rand(300, 3, generator=gen) * 0.3
        rule = calibrate_decision(scores, rewards, ["a", "b", "c"], stderr=stderr)
        assert rule.default_expert == "a" and not rule.routes and rule.z == 0.0


def test_best_expert_ignores_missing_rewards() -> None:
    assert best_expert(torch.tensor([[1.0, NAN], [0.0, 0.9], [0.5, 0.9]]), ["a", "b"]) == "b"


def test_an_expert_with_a_reward_on_few_rows_is_not_the_default_and_the_record_says_why() -> None:
    # issue 20 item 10: "rare" has one reward, of 10, on 75 rows; it would take all traffic on that one
    rng = random.Random(2)
    rewards = torch.tensor([[rng.uniform(4, 6), rng.uniform(3, 5), NAN] for _ in range(75)])
    rewards[0, 2] = 10.0
    experts = ["a", "b", "rare"]
    assert best_expert(rewards, experts) == "a"
    rule = calibrate_decision(torch.rand(75, 3), rewards, experts)
    assert rule.default_expert == "a" and not rule.routes
    c = rule.calibration
    assert c["default_support"] == {"rows": 75, "min_rows": 38, "passed_over": {"rare": 1}}
    # "rare" is a thin expert: the margin is calibrated on every row among the others, and "rare"
    # is chosen only if a doubly robust estimate of its own rows shows that it pays (it does not)
    assert c["rows"] == 75 and c["thin_experts"]["rows"] == {"rare": 1} and rule.thin_experts == {"rare": None}
    assert c["default_score"] == pytest.approx(float(rewards[:, 0].mean()))  # a figure, not "nan"


# -- neighbour bank -------------------------------------------------------------------------------
def test_leave_one_out_never_uses_the_row_itself() -> None:
    embeddings = torch.eye(3)
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    bank = NeighbourBank(embeddings, rewards, rewards / rewards.sum(1, keepdim=True), k=1)
    assert bank.estimate(embeddings).expected_rewards.tolist() == rewards.tolist()
    held_out = bank.leave_one_out().expected_rewards
    assert not torch.equal(held_out[0], rewards[0])  # row 0 is the only one preferring "a"


def test_an_expert_without_neighbour_rewards_is_never_chosen() -> None:
    rewards = torch.tensor([[1.0, NAN], [0.0, NAN]])
    bank = NeighbourBank(torch.eye(2), rewards, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), k=2)
    estimates = bank.estimate(torch.tensor([[1.0, 0.0]]))
    assert math.isnan(estimates.expected_rewards[0, 1].item())
    assert decide(estimates.scores, ["a", "b"]) == [0]


def test_the_temperature_is_chosen_with_k_on_held_out_estimates() -> None:
    # two groups of queries close in cosine (0.98 apart), each with its own best expert: only a sharp
    # temperature tells them apart among all the neighbours; a flat one averages the two groups away
    gen = torch.Generator().manual_seed(0)
    rows, side = 200, torch.arange(200) % 2
    angle = torch.where(side == 0, -0.1, 0.1) + 0.01 * torch.randn(rows, generator=gen)
    embeddings = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    data = dataset(
        [
            {"id": f"q{i}", "query": f"q{i}", "rewards": {"a": float(side[i] == 0), "b": float(side[i] == 1) + 0.01}}
            for i in range(rows)
        ]
    )
    config = TrainingConfig(neighbours=[400], neighbour_temperatures=[0.005, 10.0], show_progress=False)
    fit = fit_bank(embeddings, data, make_targets(data, LabelConfig()), config)
    assert fit.bank.temperature == 0.005 and fit.rule.routes
    assert {(e["temperature"], e["neighbours"]) for e in fit.log} == {(0.005, 400), (10.0, 400)}
    assert fit.summary["temperature"] == 0.005
    gains = {e["temperature"]: e["leave_one_out_gain"] for e in fit.log}
    assert gains[0.005] > gains[10.0] + 0.3  # the flat temperature loses the groups' signal


# -- training end to end ------------------------------------------------------------------------
def test_where_routing_cannot_pay_every_query_goes_to_the_best_expert(tiny_encoder: str, tmp_path: Path) -> None:
    rng = random.Random(3)
    # rewards independent of the query: "steady" is best on average; no query says otherwise
    rows = [
        {
            "id": f"q{i}",
            "query": " ".join(rng.sample(["the", "a", "story", "python", "sum", "poem", "code", "math"], 4)),
            "rewards": {"steady": float(rng.random() < 0.7), "coin": float(rng.random() < 0.5)},
        }
        for i in range(240)
    ]
    splits = dataset(rows).split(validation_fraction=0.0, test_fraction=0.25, seed=0)
    router = train_router(splits.train, config(tiny_encoder))
    rule = router.decision
    assert rule is not None and rule.default_expert == "steady" and not rule.routes
    assert {d.expert for d in router.route([ex.query for ex in splits.test])} == {"steady"}
    folder = router.save_pretrained(tmp_path / "router")
    assert json.loads((folder / "config.json").read_text())["decision"]["margin"] is None
    assert "Routing did not pay" in (folder / "README.md").read_text()
    reloaded = ZooterRouter.from_pretrained(folder, device="cpu")
    assert {d.expert for d in reloaded.route([ex.query for ex in splits.test])} == {"steady"}


@pytest.mark.slow
def test_a_keyword_that_decides_the_best_expert_is_routed_by(tmp_path: Path) -> None:
    # the default recipe on the bundled MiniLM: neighbours are found by meaning, which a random tiny encoder lacks
    splits = dataset(keyword_rows(480, seed=5)).split(validation_fraction=0.0, test_fraction=0.25, seed=0)
    router = train_router(splits.train, config(None))
    assert router.decision is not None and router.decision.routes
    test = splits.test
    decisions = router.route([ex.query for ex in test])
    best = [max(ex.rewards, key=ex.rewards.get) for ex in test]
    accuracy = sum(d.expert == b for d, b in zip(decisions, best)) / len(test)
    assert accuracy >= 0.9, f"routing accuracy {accuracy:.2f} on {len(test)} held-out queries"
    assert decisions[0].expected_rewards is not None and set(decisions[0].expected_rewards) == set(router.experts)
    report = evaluate(router, test)
    assert report.routed > report.best_single["score"]
    # the bank and the rule travel with the saved router and decide the same way
    folder = router.save_pretrained(tmp_path / "router")
    assert (folder / NEIGHBOURS_NAME).is_file()
    reloaded = ZooterRouter.from_pretrained(folder, device="cpu")
    assert [d.expert for d in reloaded.route([ex.query for ex in test])] == [d.expert for d in decisions]
    card = (folder / "README.md").read_text()
    assert "## Decision" in card and "routed away" in card


def test_a_distilled_router_is_calibrated_on_its_validation_rows(tiny_encoder: str) -> None:
    splits = dataset(keyword_rows(240, seed=2)).split(validation_fraction=0.2, test_fraction=0.0, seed=0)
    router = train_router(
        splits.train,
        config(tiny_encoder, method="distill", epochs=6, lr=3e-3, head_lr=3e-3),
        validation=splits.validation,
    )
    rule = router.decision
    assert rule is not None and rule.calibration["source"] == "validation"
    assert rule.calibration["rows"] == len(splits.validation)
    assert (
        router.config.training_summary["validation"]["routed"]
        >= router.config.training_summary["validation"]["default_expert"]
    )
