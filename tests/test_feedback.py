"""The feedback log: outcomes recorded against decision ids, as dataset rows several writers append to."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import keyword_rows
from langchain_core.messages import AIMessage

from zooter._io import JsonlAppender
from zooter.data import RoutingDataset, load_rows
from zooter.errors import ConfigError, DataError, ExpertMismatchError
from zooter_langchain.feedback import FeedbackLog, default_decisions_path

ROOT = Path(__file__).resolve().parents[1]


def logged(tmp_path: Path, **kwargs) -> FeedbackLog:
    """A log holding two decisions, answered by two experts, as a router with the log writes them."""
    log = FeedbackLog(tmp_path / "feedback.jsonl", **kwargs)
    log.log_decision("d1", "integral of x^2", "mathbot", reason="routed", propensity=0.9)
    log.log_decision("d2", [{"role": "user", "content": "a poem"}], "poet", reason="explore", propensity=0.05)
    return log


def test_outcomes_become_dataset_rows_zooter_reads(tmp_path: Path) -> None:
    log = logged(tmp_path)
    answer = AIMessage("1/3 x^3", response_metadata={"zooter": {"id": "d1", "expert": "mathbot"}})
    row = log.record(answer, 1.0)
    assert row["id"] == "d1" and row["query"] == "integral of x^2" and row["rewards"] == {"mathbot": 1.0}
    assert row["propensity"] == 0.9 and row["reason"] == "routed" and row["time"].endswith("+00:00")
    log.record({"zooter": {"id": "d2", "expert": "poet"}}, 0)  # the response_metadata of an answer
    data = RoutingDataset.load(log.path)
    assert [(ex.id, ex.rewards) for ex in data] == [("d1", {"mathbot": 1.0}), ("d2", {"poet": 0.0})]
    assert data[1].query == [{"role": "user", "content": "a poem"}]
    assert log.decisions_path == default_decisions_path(log.path) == tmp_path / "feedback.decisions.jsonl"


def test_an_id_resolves_in_another_process(tmp_path: Path) -> None:
    logged(tmp_path)
    elsewhere = FeedbackLog(tmp_path / "feedback.jsonl")  # nothing in its memory: it reads the decisions file
    assert elsewhere.record("d2", 0.5)["rewards"] == {"poet": 0.5}
    assert elsewhere.record({"id": "d1", "expert": "mathbot"}, 1)["query"] == "integral of x^2"
    assert [r["id"] for r in elsewhere.rows()] == ["d2", "d1"]


def test_a_rerun_records_nothing_twice_and_a_changed_reward_is_refused(tmp_path: Path) -> None:
    log = logged(tmp_path)
    log.record("d1", 1.0)
    log.record("d1", 1.0)
    FeedbackLog(tmp_path / "feedback.jsonl").record("d1", 1.0)  # the rerun, in a new process
    assert len(log.rows()) == 1
    with pytest.raises(DataError, match=r"id 'd1'.*already recorded reward 1 .*got 0 now"):
        FeedbackLog(tmp_path / "feedback.jsonl").record("d1", 0.0)
    assert len(log.rows()) == 1


def test_bad_input_is_refused_with_what_is_wrong(tmp_path: Path) -> None:
    log = logged(tmp_path, experts=["mathbot", "coder"])
    with pytest.raises(DataError, match=r"id 'nope'.*unknown decision id.*feedback_log="):
        log.record("nope", 1.0)
    for reward in (math.nan, math.inf, -math.inf):
        with pytest.raises(DataError, match="must be finite"):
            log.record("d1", reward)
    for reward in ("good", None, True):
        with pytest.raises(DataError, match="must be a number"):
            log.record("d1", reward)
    with pytest.raises(ExpertMismatchError, match=r"names expert 'coder' but .* logged 'mathbot'"):
        log.record({"id": "d1", "expert": "coder"}, 1.0)
    with pytest.raises(ExpertMismatchError, match=r"'poet' is not one of \['mathbot', 'coder'\]"):
        log.record("d2", 1.0)
    with pytest.raises(DataError, match="expected a router answer"):
        log.record(AIMessage("no router here"), 1.0)
    assert not log.path.exists()  # nothing was written


def test_a_torn_last_line_is_dropped_before_the_next_append(tmp_path: Path) -> None:
    log = logged(tmp_path)
    log.log_decision("d3", "python regex", "coder", reason="routed", propensity=1.0)
    log.record("d1", 1.0)
    log.record("d2", 0.0)

    def killed_writer() -> None:  # a writer killed half-way through its row
        with open(log.path, "a", encoding="utf-8") as f:
            f.write('{"id": "d9", "query": "cut sh')

    killed_writer()
    assert [r["id"] for r in log.rows()] == ["d1", "d2"]  # readers skip the unfinished line
    with pytest.raises(DataError, match="malformed JSON"):
        RoutingDataset.load(log.path)
    FeedbackLog(log.path).recover()  # before another tool reads the file
    assert [ex.id for ex in RoutingDataset.load(log.path)] == ["d1", "d2"]
    killed_writer()
    FeedbackLog(log.path).record("d3", 1.0)  # the next writer cuts it too
    lines = log.path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["d1", "d2", "d3"]
    assert [ex.id for ex in RoutingDataset.load(log.path)] == ["d1", "d2", "d3"]


WRITER = textwrap.dedent(
    """
    import sys
    from zooter_langchain.feedback import FeedbackLog
    path, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    log = FeedbackLog(path)
    for i in range(n):
        decision = f"w{worker}-{i}"
        log.log_decision(decision, f"query {i} of writer {worker} " + "x" * 5000, f"e{i % 3}", reason="routed")
        log.record(decision, float(i))
    """
)


def test_several_writer_processes_append_whole_rows(tmp_path: Path) -> None:
    path = tmp_path / "feedback.jsonl"
    workers, n = 4, 40
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(n)], cwd=ROOT) for w in range(workers)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(f"w{w}-{i}" for w in range(workers) for i in range(n))
    assert all(r["query"].endswith("x" * 5000) for r in rows)  # long rows stayed whole, not interleaved
    decisions = JsonlAppender(default_decisions_path(path)).read_new()
    assert len(decisions) == workers * n
    assert len(RoutingDataset.load(path)) == workers * n


# -- exploration, and the router writing its decisions ----------------------------------------
QUERIES = ["please explain this integral", "python regex segfault", "write a haiku about the sea", "hello"]


@pytest.fixture
def experts():
    from zooter_langchain import FakeExpertChatModel

    return {name: FakeExpertChatModel(name=name) for name in ("mathbot", "coder", "poet")}


def test_the_explorer_explores_at_its_rate_uniformly_with_the_right_propensities() -> None:
    from zooter.decide.decision import RouteDecision
    from zooter.decide.explore import Explorer

    decision = RouteDecision(expert="a", probabilities={"a": 0.6, "b": 0.3, "c": 0.1}, ranking=["a", "c", "b"])
    explorer = Explorer(0.2, seed=0)
    draws = [explorer(decision) for _ in range(10_000)]
    explored = [d for d in draws if d.reason == "explore"]
    assert abs(len(explored) / len(draws) - 0.2) < 0.02  # 5 standard errors of a share of 10,000
    assert all(d.propensity == pytest.approx(0.1) for d in explored) and {d.expert for d in explored} == {"b", "c"}
    assert abs(sum(d.expert == "b" for d in explored) / len(explored) - 0.5) < 0.05  # uniform over the others
    assert {(d.expert, d.reason, round(d.propensity, 9)) for d in draws if d.reason != "explore"} == {
        ("a", "routed", 0.8)
    }
    assert [d.expert for d in map(Explorer(0.2, seed=0), [decision] * 100)] == [d.expert for d in draws[:100]]
    alone = RouteDecision(expert="a", probabilities={"a": 1.0, "b": 0.0}, ranking=["a"])  # nothing else allowed
    assert {(d.expert, d.propensity) for d in map(explorer, [alone] * 100)} == {("a", 1.0)}
    for bad in (1.0, -0.1, "0.1", True):
        with pytest.raises(ConfigError, match=r"rate must be a number in \[0, 1\)"):
            Explorer(bad)
    with pytest.raises(ConfigError, match="one of \\['uniform', 'uncertainty'\\]"):
        Explorer(0.1, method="thompson")


def test_uncertainty_weighted_exploration_tries_the_experts_that_might_be_better() -> None:
    from zooter.decide.decision import RouteDecision
    from zooter.decide.explore import Explorer

    decision = RouteDecision(
        expert="a",
        probabilities={"a": 0.5, "b": 0.3, "c": 0.2},
        ranking=["a", "b", "c"],
        scores={"a": 0.60, "b": 0.58, "c": 0.10},  # b might be better; c is known to be worse
        stderr={"a": 0.05, "b": 0.05, "c": 0.05},
    )
    explorer = Explorer(0.2, method="uncertainty", seed=0)
    draws = [explorer(decision) for _ in range(10_000)]
    explored = [d for d in draws if d.reason == "explore"]
    assert abs(len(explored) / len(draws) - 0.2) < 0.02  # the same rate
    assert sum(d.expert == "b" for d in explored) > 0.95 * len(explored)
    # each explored answer's propensity is the draw's own chance of it
    chances = {d.expert: d.propensity for d in explored}
    assert chances["b"] == pytest.approx(0.2 * 0.389 / (0.389 + 1e-6), rel=0.02)  # Φ(-0.02 / 0.0707)
    # never outside the ranking (allowed, within budget); without standard errors it is uniform
    assert {d.expert for d in draws} <= {"a", "b", "c"}
    plain = RouteDecision(expert="a", probabilities={"a": 0.5, "b": 0.3, "c": 0.2}, ranking=["a", "b", "c"])
    assert {round(d.propensity, 9) for d in map(explorer, [plain] * 200) if d.reason == "explore"} == {0.1}


def test_the_router_explores_in_its_one_decision_step(keyword_router, experts) -> None:
    from zooter_langchain import ChatZooterRouter

    model = ChatZooterRouter(router=keyword_router, experts=experts, explore=0.2, explore_seed=0)
    decisions = model.decide(QUERIES * 100)
    explored = [d for d in decisions if d.reason == "explore"]
    assert abs(len(explored) / len(decisions) - 0.2) < 0.08  # 4 standard errors of a share of 400
    assert all(d.expert != d.ranking[0] and d.propensity == pytest.approx(0.1) for d in explored)
    kept = [d for d in decisions if d.reason != "explore"]
    assert all(d.expert == d.ranking[0] and d.propensity == pytest.approx(0.8) for d in kept)
    again = ChatZooterRouter(router=keyword_router, experts=experts, explore=0.2, explore_seed=0)
    assert [d.expert for d in again.decide(QUERIES * 100)] == [d.expert for d in decisions]  # seeded
    plain = ChatZooterRouter(router=keyword_router, experts=experts).decide(QUERIES)
    assert {d.propensity for d in plain} == {1.0} and {d.reason for d in plain} <= {"routed", "default"}
    weighted = ChatZooterRouter(
        router=keyword_router, experts=experts, explore=0.2, explore_seed=0, explore_method="uncertainty"
    ).decide(QUERIES * 100)
    tried = [d for d in weighted if d.reason == "explore"]
    # a distilled head has no standard errors to weigh: the draw is uniform, at the same rate
    assert abs(len(tried) / len(weighted) - 0.2) < 0.08 and {round(d.propensity, 9) for d in tried} == {0.1}


def test_exploration_never_leaves_the_allowed_experts_or_the_budget(keyword_router, experts) -> None:
    import copy

    from zooter_langchain import ChatZooterRouter

    model = ChatZooterRouter(router=keyword_router, experts=experts, explore=0.5, explore_seed=1)
    allowed = model.decide(QUERIES * 25, allowed_experts=["mathbot", "poet"])
    assert {d.expert for d in allowed} == {"mathbot", "poet"} and any(d.reason == "explore" for d in allowed)
    alone = model.decide(QUERIES * 5, allowed_experts=["coder"])
    assert {(d.expert, d.propensity) for d in alone} == {("coder", 1.0)}  # nothing else to explore
    priced = copy.deepcopy(keyword_router).set_costs(
        {
            "mathbot": {"input_price_per_mtok": 0.5, "output_price_per_mtok": 1.0, "expected_output_tokens": 100},
            "coder": {"input_price_per_mtok": 20.0, "output_price_per_mtok": 20.0, "expected_output_tokens": 200},
            "poet": {"cost_per_call": 0.0001},
        }
    )
    budget = ChatZooterRouter(router=priced, experts=experts, explore=0.5, explore_seed=2, max_cost=1e-3)
    decisions = budget.decide(QUERIES * 25)
    assert "coder" not in {d.expert for d in decisions}  # coder costs over 4e-3 a call
    assert all(d.costs[d.expert] <= 1e-3 for d in decisions) and any(d.reason == "explore" for d in decisions)


def test_answers_carry_ids_the_log_resolves_in_invoke_stream_and_batch(keyword_router, experts, tmp_path) -> None:
    from zooter_langchain import ChatZooterRouter

    log = FeedbackLog(tmp_path / "feedback.jsonl")
    model = ChatZooterRouter(router=keyword_router, experts=experts, explore=0.5, explore_seed=3, feedback_log=log)
    replies = [model.invoke(q) for q in QUERIES]
    chunks = list(model.stream("write a haiku about the sea"))
    replies.append(chunks[0])  # the first chunk carries the decision
    replies += model.batch(QUERIES)
    metas = [r.response_metadata["zooter"] for r in replies]
    assert len({m["id"] for m in metas}) == len(replies) and any(m["reason"] == "explore" for m in metas)
    elsewhere = FeedbackLog(tmp_path / "feedback.jsonl")  # another process, say: it reads the decisions file
    for i, (reply, meta) in enumerate(zip(replies, metas)):
        row = (log if i % 2 else elsewhere).record(reply if i % 3 else meta["id"], float(i))
        assert row["rewards"] == {meta["expert"]: float(i)} and row["propensity"] == meta["propensity"]
        assert row["reason"] == meta["reason"]
    assert [ex.id for ex in RoutingDataset.load(log.path)] == [m["id"] for m in metas]
    assert RoutingDataset.load(log.path)[0].query == QUERIES[0]


def test_a_log_keeps_the_routed_vector_unless_told_not_to(tmp_path: Path) -> None:
    import torch

    from zooter.data import QueryVector

    vector = QueryVector.of(torch.tensor([0.25, -1.5, 3.0]), "sha256:" + "a" * 64)
    for keep in (True, False):
        log = FeedbackLog(tmp_path / f"{keep}.jsonl", keep_vectors=keep)
        log.log_decision("d1", "integral of x^2", "mathbot", reason="routed", propensity=1.0, vector=vector)
        row = FeedbackLog(log.path).record("d1", 1.0)  # resolved from the decisions file
        assert ("vector" in row) is keep
        loaded = load_rows(log.path)[0].vector
        if keep:
            assert loaded == vector and loaded.tensor().tolist() == [0.25, -1.5, 3.0]
        else:
            assert loaded is None


def test_a_fallback_answer_is_logged_under_the_expert_that_answered(keyword_router, tmp_path) -> None:
    from zooter_langchain import ChatZooterRouter, FakeExpertChatModel

    broken = {
        name: FakeExpertChatModel(name=name, fail_every=int(name == "mathbot")) for name in ("mathbot", "coder", "poet")
    }
    log = FeedbackLog(tmp_path / "feedback.jsonl")
    model = ChatZooterRouter(router=keyword_router, experts=broken, fallback=True, feedback_log=log)
    reply = model.invoke("please explain this integral")
    meta = reply.response_metadata["zooter"]
    assert meta["routed_to"] == "mathbot" and meta["expert"] != "mathbot" and meta["reason"] == "fallback"
    row = log.record(reply, 0.0)
    assert row["rewards"] == {meta["expert"]: 0.0} and row["propensity"] is None and row["reason"] == "fallback"


def test_the_python_snippets_of_docs_feedback_run(tiny_encoder: str, experts, tmp_path, monkeypatch) -> None:
    """docs/feedback.md's ```python blocks run in order, in one session, with a tiny neighbour router
    (the last one updates it) and fake experts."""
    import re

    from zooter.data import RoutingExample
    from zooter.training import TrainingConfig, train_router

    data = RoutingDataset([RoutingExample.from_dict(r) for r in keyword_rows(60, seed=11)])
    config = TrainingConfig(encoder=tiny_encoder, max_length=32, device="cpu", show_progress=False, neighbours=[10])
    router = train_router(data, config)
    text = (ROOT / "docs" / "feedback.md").read_text(encoding="utf-8")
    snippets = re.findall(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert len(snippets) >= 4
    monkeypatch.chdir(tmp_path)
    namespace = {"router": router, "experts": experts}
    for snippet in snippets:
        exec(compile(snippet, "docs/feedback.md", "exec"), namespace)
    rows = RoutingDataset.load(tmp_path / "feedback.jsonl")
    assert rows[0].id == namespace["decision_id"] and len(rows) == 2
    served, updater = namespace["served"], namespace["updater"]  # the server picked the update up
    assert served.router.config.neighbours.updates == updater.config.neighbours.updates == 1
    assert len(served.router.bank) == len(router.bank) + 2
