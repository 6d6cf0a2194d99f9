"""Cost-aware routing: prices in the router, the λ trade-off, its calibration, and the frontier report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import keyword_rows

from zooter.cli import main
from zooter.data import RoutingDataset, RoutingExample
from zooter.decide.costs import CostTable, CostTarget, calibrate_cost_weight, call_penalties, sweep_cost_weights
from zooter.decide.policy import DecisionRule, decide
from zooter.errors import ConfigError, DataError, ZooterError
from zooter.evaluation import evaluate_costs
from zooter.model.router import ZooterRouter
from zooter.rewards.responses import ResponseRecord
from zooter.training import TrainingConfig, train_router

EXPERTS = ["mathbot", "coder", "poet"]
# coder is the expensive one: 20 USD per million tokens in and out; the others are cheap
PRICES = {
    "mathbot": {"input_price_per_mtok": 0.5, "output_price_per_mtok": 1.0, "expected_output_tokens": 100},
    "coder": {"input_price_per_mtok": 20.0, "output_price_per_mtok": 20.0, "expected_output_tokens": 200},
    "poet": {"cost_per_call": 0.0001},
}


def dataset(rows: list[dict]) -> RoutingDataset:
    return RoutingDataset([RoutingExample.from_dict(r) for r in rows])


def config(encoder: str, **changes: object) -> TrainingConfig:
    return TrainingConfig(encoder=encoder, max_length=32, device="cpu", show_progress=False, **changes)


@pytest.fixture(scope="module")
def router(tiny_encoder: str) -> ZooterRouter:
    """A neighbours router on the keyword rows (each expert best on its own topic)."""
    return train_router(dataset(keyword_rows(150, seed=5)), config(tiny_encoder))


@pytest.fixture(scope="module")
def held_out() -> RoutingDataset:
    return dataset(keyword_rows(60, seed=9))


# -- prices ---------------------------------------------------------------------------------------
def test_a_query_costs_its_tokens_at_each_experts_prices() -> None:
    table = CostTable.from_dict(PRICES)
    costs = table.query_costs([10, 1000], EXPERTS)
    # mathbot: 10 tokens in at 0.5/M plus 100 out at 1/M; coder: 10 in + 200 out at 20/M; poet: per call
    assert costs[0].tolist() == pytest.approx([10 * 0.5e-6 + 100e-6, 210 * 20e-6, 1e-4])
    assert costs[1].tolist() == pytest.approx([1000 * 0.5e-6 + 100e-6, 1200 * 20e-6, 1e-4])


def test_the_shipped_price_list_reads_as_it_is(tmp_path: Path) -> None:
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmrouter_9model" / "experts.json"
    if not shared.is_file():
        pytest.skip("../shared/data is not beside the repository")
    table = CostTable.load(shared)
    assert len(table.experts) == 9
    assert table.costs["gemma-2-9b-it"].input_price_per_mtok == 0.1
    assert table.costs["llama-3.1-nemotron-51b-instruct"].model == "nvidia/llama-3.1-nemotron-51b-instruct"


@pytest.mark.parametrize(
    ("prices", "words"),
    [
        ({"coder": {"input_price_per_mtok": -1}}, ["coder.input_price_per_mtok", ">= 0", "-1"]),
        ({"coder": {"output_price_per_mtok": "cheap"}}, ["coder.output_price_per_mtok", "number", "cheap"]),
        ({"coder": {"cost_per_call": float("nan")}}, ["coder.cost_per_call", "finite"]),
        ({"coder": {"expected_output_tokens": True}}, ["coder.expected_output_tokens", "number"]),
        ({"coder": {"price": 1}}, ["'coder'", "unknown price field", "price"]),
        ({"coder": 3}, ["'coder'", "expected an object"]),
        ([1, 2], ["expected an object of expert name"]),
        ({"coder": {"input_price_per_mtok": int("9" * 400)}}, ["coder.input_price_per_mtok", "finite", "400 digits"]),
        ({"coder": {"output_price_per_mtok": 1e300}}, ["coder.output_price_per_mtok", "<= 1e+09", "1e+300"]),
        ({"coder": {"expected_output_tokens": 2e9}}, ["coder.expected_output_tokens", "<= 1e+09"]),
    ],
)
def test_a_bad_price_is_refused_naming_its_field(prices: object, words: list[str]) -> None:
    with pytest.raises(DataError) as caught:
        CostTable.from_dict(prices, source="prices.json")  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("prices.json")
    for word in words:
        assert word in message, (word, message)


def test_no_price_that_passes_can_overflow_a_cost() -> None:
    from zooter.decide.costs import MAX_PRICE, ExpertCost

    with pytest.raises(ConfigError, match="cost_per_call"):
        ExpertCost(cost_per_call=1e300)  # built in code, not read from a file: the same limit
    most = {"input_price_per_mtok": MAX_PRICE, "output_price_per_mtok": MAX_PRICE, "expected_output_tokens": MAX_PRICE}
    table = CostTable.from_dict({"a": most, "b": {"cost_per_call": MAX_PRICE}})
    costs = table.query_costs([10**9] * 1000, ["a", "b"])  # a billion-token query, a thousand times
    assert torch.isfinite(costs).all() and math.isfinite(float(costs.sum()))


def test_a_price_list_must_cover_every_expert(router: ZooterRouter) -> None:
    with pytest.raises(DataError, match=r"no cost for expert.*poet"):
        router.set_costs({k: v for k, v in PRICES.items() if k != "poet"})
    assert router.costs is None  # nothing half-set


def test_prices_and_the_cost_weight_survive_save_and_load(router: ZooterRouter, tmp_path: Path) -> None:
    router.set_costs(PRICES, cost_weight=12.5, calibration=None)
    try:
        router.save_pretrained(tmp_path / "r")
        loaded = ZooterRouter.from_pretrained(tmp_path / "r")
        assert loaded.costs == CostTable.from_dict(PRICES)
        assert loaded.cost_weight == 12.5
        saved = json.loads((tmp_path / "r" / "config.json").read_text())
        assert saved["costs"]["prices"]["coder"]["input_price_per_mtok"] == 20.0
        card = (tmp_path / "r" / "README.md").read_text()
        assert "## Costs" in card and "λ = 12.5" in card and "| `coder` | 20 | 20 | 200 | 0 |" in card
        queries = ["hello world", "short simple"]
        same = [d.to_dict() | {"id": None} for d in loaded.route(queries)]
        assert same == [d.to_dict() | {"id": None} for d in router.route(queries)]  # each decision has its own id
    finally:
        router.set_costs(None)


# -- the decision ---------------------------------------------------------------------------------
def test_a_zero_cost_weight_routes_exactly_as_the_quality_router(
    router: ZooterRouter, held_out: RoutingDataset
) -> None:
    queries = [example.query for example in held_out]
    quality_only = [d.expert for d in router.route(queries)]
    router.set_costs(PRICES)
    try:
        assert [d.expert for d in router.route(queries)] == quality_only
        assert [d.expert for d in router.route(queries, cost_weight=0.0)] == quality_only
        # the same holds for every rule, including one that never leaves its default
        scores = router.estimate(queries).expected_rewards
        costs = router.query_costs(queries)
        for rule in (None, router.decision, DecisionRule(default_expert="coder", margin=None)):
            assert decide(scores, EXPERTS, rule, costs=costs, cost_weight=0.0) == decide(scores, EXPERTS, rule)
    finally:
        router.set_costs(None)


def test_a_cost_weight_moves_queries_to_cheaper_experts(router: ZooterRouter, held_out: RoutingDataset) -> None:
    queries = [example.query for example in held_out]
    router.set_costs(PRICES)
    try:
        shares = []
        for weight in (0.0, 1e3, 1e5, 1e9):
            decisions = router.route(queries, cost_weight=weight)
            shares.append(sum(d.expert == "coder" for d in decisions) / len(decisions))
            assert all(d.costs is not None and d.expected_cost == d.costs[d.expert] for d in decisions)
        assert shares[0] > 0.2  # coder is best on a third of the queries
        assert shares == sorted(shares, reverse=True)
        assert shares[-1] == 0.0  # at a huge λ nobody pays for coder
    finally:
        router.set_costs(None)


def test_max_cost_rules_out_experts_that_cost_more_and_falls_back_to_the_cheapest() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.2], [0.9, 0.1, 0.2]])
    costs = torch.tensor([[1.0, 5.0, 0.5], [3.0, 4.0, 2.5]], dtype=torch.float64)
    assert decide(scores, EXPERTS, costs=costs, max_cost=2.0) == [2, 2]  # row 1: nobody fits, poet is cheapest
    assert decide(scores, EXPERTS, costs=costs, max_cost=3.0) == [2, 0]
    rule = DecisionRule(default_expert="coder", margin=None)
    assert decide(scores, EXPERTS, rule, costs=costs, max_cost=4.5) == [2, 1]  # the default fits only in row 1
    with pytest.raises(ConfigError, match="set_costs"):
        decide(scores, EXPERTS, max_cost=1.0)


def test_routing_with_costs_needs_prices_and_expected_rewards(tiny_encoder: str) -> None:
    data = dataset(keyword_rows(30, seed=2))
    distilled = train_router(data, config(tiny_encoder, method="distill", epochs=1))
    with pytest.raises(ConfigError, match="set_costs"):
        distilled.route(["hello"], cost_weight=1.0)
    with pytest.raises(ConfigError, match="neighbours"):
        distilled.set_costs(PRICES, cost_weight=1.0)
    distilled.set_costs(PRICES)  # prices alone are fine: reports and max_cost use them
    assert distilled.route(["hello"], max_cost=1e-9)[0].expert == "poet"
    with pytest.raises(ConfigError, match="neighbours"):
        train_router(
            data, config(tiny_encoder, method="distill", epochs=1), costs=CostTable.from_dict(PRICES), cost_weight=1
        )


# -- calibration ----------------------------------------------------------------------------------
def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Estimates, costs and 0/1 rewards of a strong, a middle and a cheap expert.

    Each row has a true success probability per expert; the router's estimate is that probability
    plus noise, and the reward is a draw from it. The strong expert costs 10x the middle one.
    """
    g = torch.Generator().manual_seed(seed)
    difficulty = torch.rand(n, 1, generator=g)
    p = (torch.tensor([[0.95, 0.8, 0.6]]) - difficulty * torch.tensor([[0.3, 0.5, 0.6]])).clamp(0, 1)
    estimates = (p + 0.05 * torch.randn(n, 3, generator=g)).float()
    rewards = (torch.rand(n, 3, generator=g) < p).double()
    tokens = torch.randint(20, 400, (n, 1), generator=g).double()
    costs = tokens * torch.tensor([[10e-6, 1e-6, 0.5e-6]], dtype=torch.float64)
    return estimates, costs, rewards


@pytest.mark.parametrize(
    "target",
    [
        CostTarget(share=0.3, share_experts=["mathbot"]),
        CostTarget(mean_cost=1.2e-3),
        CostTarget(quality_fraction=0.95),
    ],
    ids=["share", "mean-cost", "quality"],
)
def test_a_calibrated_cost_weight_meets_its_target_on_fresh_rows(target: CostTarget) -> None:
    """Calibrated on 4,000 rows, checked on 4,000 others from the same distribution.

    Tolerance: the share within 0.03 of its target, the mean cost within 5 %, the quality within
    0.01 of its floor (about two standard errors of a 4,000-row mean of 0/1 rewards).
    """
    rule = DecisionRule(default_expert="mathbot", margin=0.0)
    calibration = calibrate_cost_weight(*synthetic(4000, 0), EXPERTS, rule, target)
    assert calibration["met"]
    scores, costs, rewards = synthetic(4000, 1)
    # a share target prices calls to its experts; the others price USD
    assert calibration["unit"] == ("calls" if target.share is not None else "usd")
    penalties = call_penalties(len(scores), EXPERTS, target.share_experts) if target.share is not None else None
    weight = [calibration["cost_weight"]]
    fresh = sweep_cost_weights(scores, costs, rewards, EXPERTS, rule, weight, penalties=penalties)[0]
    if target.share is not None:
        assert calibration["share"]["mathbot"] <= 0.3
        assert fresh["share"]["mathbot"] == pytest.approx(0.3, abs=0.03)
    elif target.mean_cost is not None:
        assert calibration["cost"] <= 1.2e-3
        assert fresh["cost"] == pytest.approx(1.2e-3, rel=0.05)
    else:
        floor = 0.95 * rewards[:, 0].mean().item()
        assert fresh["reward"] >= floor - 0.01
        assert fresh["cost"] < costs[:, 0].mean().item()  # and it is cheaper than the best expert alone
    assert calibration["cost_weight"] > 0


def test_a_target_no_weight_can_meet_keeps_the_closest_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    scores, costs, rewards = synthetic(500, 3)
    result = calibrate_cost_weight(scores, costs, rewards, EXPERTS, None, CostTarget(mean_cost=1e-9))
    assert not result["met"]
    assert result["share"]["poet"] == 1.0  # the cheapest routing there is
    assert "no cost weight met the target" in caplog.text


def test_a_cost_target_takes_exactly_one_kind() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        CostTarget(mean_cost=1.0, quality_fraction=0.9)
    with pytest.raises(ConfigError, match="exactly one"):
        CostTarget()
    with pytest.raises(ConfigError, match="share and share_experts"):
        CostTarget(share=0.5)


def test_no_queries_route_to_nothing_and_a_bad_query_is_named_on_a_priced_router(
    router: ZooterRouter, held_out: RoutingDataset
) -> None:
    # issue 20 items 11 and 13: counting a priced router's tokens came before the checks routing makes
    router.set_costs(PRICES)
    try:
        assert router.route([]) == []
        for bad in (None, 123):
            with pytest.raises(TypeError, match=f"query 0 is {bad}; expected a string or a list of chat messages"):
                router.route([bad])
        with pytest.raises(ZooterError, match="the dataset is empty"):
            router.calibrate_costs(held_out[:0], CostTarget(mean_cost=1e-4))
    finally:
        router.set_costs(None)


def test_what_calibrating_the_prices_needs_is_checked_before_training(tmp_path: Path) -> None:
    # issue 20 items 11 and 13: an encoder that does not exist is loaded only once these pass
    data, prices = dataset(keyword_rows(20, seed=4)), CostTable.from_dict(PRICES)
    settings = config(str(tmp_path / "no-such-encoder"))
    others = [ResponseRecord("q0", "gpt-4", "an answer", 1)]
    with pytest.raises(DataError, match=r"no answer from any of the experts .*'gpt-4'"):
        train_router(data, settings, costs=prices, responses=others)
    share = CostTarget(share=0.5, share_experts=["gpt-4"])
    with pytest.raises(ConfigError, match=r"share_experts names \['gpt-4'\]"):
        train_router(data, settings, costs=prices, cost_target=share)


def test_a_cost_weight_is_not_calibrated_on_a_handful_of_rows(tmp_path: Path) -> None:
    # issue 20 item 10: an expert with one reward left one row with every reward, and λ was fitted on it
    rows = keyword_rows(40, seed=4)
    for i, row in enumerate(rows):
        row["rewards"]["rare"] = 9.0 if i < 3 else None
    data = dataset(rows)
    prices = CostTable.from_dict({**PRICES, "rare": {"cost_per_call": 1.0}})
    with pytest.raises(ZooterError, match=r"only 3 of 40 .* fewer than the 10 .*\(rare has 3\)"):
        train_router(
            data,
            config(str(tmp_path / "no-such-encoder")),
            costs=prices,
            cost_target=CostTarget(share=0.5, share_experts=["rare"]),
        )
    scores, costs, rewards = synthetic(40, 1)
    rewards[5:, 2] = math.nan
    with pytest.raises(ZooterError, match="only 5 of 40"):
        calibrate_cost_weight(scores, costs, rewards, EXPERTS, None, CostTarget(mean_cost=1e-4))


# -- training and the command line ----------------------------------------------------------------
def test_training_learns_answer_lengths_from_responses(tiny_encoder: str) -> None:
    rows = keyword_rows(40, seed=4)
    responses = [
        ResponseRecord(id=r["id"], model=m, response=" ".join(["words"] * (3 if m == "poet" else 9)), line=i)
        for i, r in enumerate(rows)
        for m in EXPERTS
    ]
    prices = {name: {"output_price_per_mtok": 1.0} for name in EXPERTS}
    trained = train_router(dataset(rows), config(tiny_encoder), costs=CostTable.from_dict(prices), responses=responses)
    assert trained.costs is not None
    assert trained.costs.costs["poet"].expected_output_tokens == 3
    assert trained.costs.costs["coder"].expected_output_tokens == 9


def test_train_calibrates_and_eval_draws_the_frontier(
    tiny_encoder: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in keyword_rows(150, seed=5)))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in keyword_rows(60, seed=9)))
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES))
    out = tmp_path / "router"
    code = main(
        ["train", str(data), "--output", str(out), "--encoder", tiny_encoder, "--max-length", "32",
         "--device", "cpu", "--quiet", "--costs", str(prices), "--target-share", "coder=0.2"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "cost weight λ =" in printed and "leave-one-out" in printed
    calibration = json.loads((out / "config.json").read_text())["costs"]["calibration"]
    assert calibration["target"]["share"] == 0.2 and calibration["share"]["coder"] <= 0.2
    assert calibration["unit"] == "calls" and calibration["penalised"] == ["coder"]  # a share target prices calls
    assert "reward per call" in (out / "README.md").read_text()

    assert main(["eval", str(out), str(test), "--json", "--quiet", "--plot", str(tmp_path / "f.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    costs = report["costs"]
    assert report["n"] == 60 and costs["n"] == 60
    assert set(costs["singles"]) == set(EXPERTS)
    assert costs["cheapest"]["expert"] == "poet"  # 1e-4 a call; mathbot's 100 answer tokens cost a little more
    assert costs["frontier"][0]["cost_weight"] == 0.0
    # the router's own point on the frontier is the routing the quality report scored
    assert costs["router"]["cost_weight"] == calibration["cost_weight"]
    assert costs["router"]["reward"] == pytest.approx(report["routed"])
    assert costs["router"]["share"] == pytest.approx(report["routing_share"])
    assert costs["apgr"] is None or math.isfinite(costs["apgr"])
    assert set(costs["cost_to_reach"]) == {"50%", "80%", "95%", "100%"}
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["eval", str(out), str(test), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "cost-quality trade-off" in table and "APGR" in table and "95% of the best single" in table


def test_the_frontier_of_a_quality_router_starts_at_its_own_choices(
    router: ZooterRouter, held_out: RoutingDataset
) -> None:
    report = evaluate_costs(router, held_out, PRICES)
    quality_only = [d.expert for d in router.route([example.query for example in held_out])]
    rewards = [example.rewards[name] for example, name in zip(held_out, quality_only)]
    assert report.router["cost_weight"] == 0.0
    assert report.router["reward"] == pytest.approx(sum(rewards) / len(rewards))
    # the cheapest end of the sweep sends everything to the cheapest expert
    cheapest = max(report.frontier, key=lambda p: p["cost_weight"])
    assert cheapest["share"][report.cheapest["expert"]] == 1.0
    assert report.cheapest["cost"] <= report.router["cost"] <= report.singles["coder"]["cost"]
    pareto = report.pareto()
    assert [p["cost"] for p in pareto] == sorted(p["cost"] for p in pareto)
    assert [p["reward"] for p in pareto] == sorted(p["reward"] for p in pareto)


# -- in LangChain ---------------------------------------------------------------------------------
def test_the_chat_model_routes_by_cost_per_call_and_records_the_expected_cost(
    router: ZooterRouter, held_out: RoutingDataset, tmp_path: Path
) -> None:
    from zooter_langchain import ChatZooterRouter, FakeExpertChatModel

    router.set_costs(PRICES, cost_weight=500.0)
    try:
        router.save_pretrained(tmp_path / "priced")
    finally:
        router.set_costs(None)
    experts = {name: FakeExpertChatModel(name=name) for name in EXPERTS}
    model = ChatZooterRouter.from_pretrained(tmp_path / "priced", experts=experts)
    priced = model.router
    queries = [example.query for example in held_out][:12]

    # by default the router folder's own λ decides
    for query, decision in zip(queries, priced.route(queries)):
        meta = model.invoke(query).response_metadata["zooter"]
        assert meta["expert"] == decision.expert
        assert meta["expected_cost"] == pytest.approx(decision.expected_cost)
        assert meta["expected_reward"] == pytest.approx(decision.expected_reward)
    # per call: quality only, a huge λ, a budget; batch takes the same options
    quality = [d.expert for d in priced.route(queries, cost_weight=0.0)]
    assert "coder" in quality  # so that pricing coder out below changes something
    assert [m.response_metadata["zooter"]["expert"] for m in model.batch(queries, cost_weight=0.0)] == quality
    assert {model.invoke(q, cost_weight=1e9).response_metadata["zooter"]["expert"] for q in queries} <= {
        "mathbot",
        "poet",
    }
    budget = model.invoke(queries[0], max_cost=2e-4).response_metadata["zooter"]
    assert budget["expected_cost"] <= 2e-4
    # a model-wide setting, overridden per call
    cheap = ChatZooterRouter(router=priced, experts=experts, cost_weight=1e9)
    assert "coder" not in {m.response_metadata["zooter"]["expert"] for m in cheap.batch(queries)}
    assert [m.response_metadata["zooter"]["expert"] for m in cheap.batch(queries, cost_weight=0.0)] == quality


def test_plotting_without_matplotlib_is_refused_before_any_work(
    router: ZooterRouter, held_out: RoutingDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import importlib.util

    router.set_costs(PRICES)
    try:
        router.save_pretrained(tmp_path / "priced")
    finally:
        router.set_costs(None)
    held_out.save(tmp_path / "test.jsonl")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    code = main(["eval", str(tmp_path / "priced"), str(tmp_path / "test.jsonl"), "--plot", str(tmp_path / "f.png")])
    captured = capsys.readouterr()
    assert code == 2
    assert "zooter-langchain[plot]" in captured.err and captured.out == ""  # nothing evaluated, nothing printed
    assert not (tmp_path / "f.png").exists()
