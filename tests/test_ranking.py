"""RewardRankingRunnable: every expert asked, all answers scored in one call, the best returned."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
from fake_experts import Gauge, MeteredExpert
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tracers.context import collect_runs

from zooter.data import Query
from zooter.errors import ZooterError
from zooter.rewards.scorers import RewardScorer
from zooter_langchain import FakeExpertChatModel, RewardRankingRunnable


class LengthScorer:
    """Rewards longer answers; records each call it gets and the thread it ran on."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Query], list[str]]] = []
        self.threads: list[int] = []

    def score(self, queries: Sequence[Query], responses: Sequence[str]) -> list[float | None]:
        self.calls.append((list(queries), list(responses)))
        self.threads.append(threading.get_ident())
        return [float(len(r)) for r in responses]


class AsyncKeywordScorer:
    """Scores 1 for answers that contain a keyword, else 0, and cannot score answers mentioning ``???``."""

    def __init__(self, keyword: str) -> None:
        self.keyword = keyword
        self.used: list[str] = []

    def score(self, queries: Sequence[Query], responses: Sequence[str]) -> list[float | None]:
        self.used.append("score")
        return [None if "???" in r else float(self.keyword in r) for r in responses]

    async def ascore(self, queries: Sequence[Query], responses: Sequence[str]) -> list[float | None]:
        self.used.append("ascore")
        await asyncio.sleep(0)
        return [None if "???" in r else float(self.keyword in r) for r in responses]


@pytest.fixture
def experts() -> dict[str, FakeExpertChatModel]:
    return {name: FakeExpertChatModel(name=name, model_name=f"{name}-v1") for name in ("mid", "brief", "verbose")}


def test_returns_the_best_scored_answer_with_every_score(experts) -> None:
    scorer = LengthScorer()
    ranker = RewardRankingRunnable(experts=experts, scorer=scorer)
    assert isinstance(scorer, RewardScorer)
    reply = ranker.invoke("Explain recursion")
    answers = {name: f"[{name}] Explain recursion" for name in experts}
    best = max(answers, key=lambda name: len(answers[name]))
    assert reply.content == answers[best]
    meta = reply.response_metadata["reward_ranking"]
    assert meta["expert"] == best and reply.response_metadata["model_name"] == f"{best}-v1"
    assert meta["scores"] == {name: float(len(text)) for name, text in answers.items()}
    assert meta["expert_calls"] == 3 and meta["failed"] == {}
    # the cost of the call: every expert's tokens, while the message keeps the chosen expert's own usage
    assert meta["usage"]["total_tokens"] == 3 * reply.usage_metadata["total_tokens"]
    # one scorer call over all the answers, each paired with the query
    assert scorer.calls == [(["Explain recursion"] * 3, list(answers.values()))]
    assert all(e.calls == 1 for e in experts.values())


def test_a_failing_expert_is_skipped_and_recorded_and_all_failing_raises(experts) -> None:
    experts["verbose"] = FakeExpertChatModel(name="verbose", fail_every=1)
    ranker = RewardRankingRunnable(experts=experts, scorer=LengthScorer())
    meta = ranker.invoke("hi").response_metadata["reward_ranking"]
    assert meta["expert"] == "brief"  # the longest of the answers that arrived
    assert set(meta["scores"]) == {"mid", "brief"} and meta["expert_calls"] == 3
    assert meta["failed"]["verbose"].startswith("RuntimeError: verbose is unavailable")

    down = {n: FakeExpertChatModel(name=n, fail_every=1) for n in ("a", "b")}
    with pytest.raises(ZooterError, match=r"every expert failed: a: RuntimeError.*; b: RuntimeError"):
        RewardRankingRunnable(experts=down, scorer=LengthScorer()).invoke("hi")


async def test_async_path_uses_the_scorers_ascore_and_records_unscored_answers() -> None:
    experts = {
        "vague": FakeExpertChatModel(name="vague"),
        "lost": FakeExpertChatModel(name="???"),
        "expert": FakeExpertChatModel(name="python"),
    }
    scorer = AsyncKeywordScorer("python")
    reply = await RewardRankingRunnable(experts=experts, scorer=scorer).ainvoke("how do I sort a dict?")
    meta = reply.response_metadata["reward_ranking"]
    assert meta["expert"] == "expert" and meta["scores"] == {"vague": 0.0, "lost": None, "expert": 1.0}
    assert scorer.used == ["ascore"]

    with pytest.raises(ZooterError, match="could not score any"):
        await RewardRankingRunnable(experts={"lost": experts["lost"]}, scorer=scorer).ainvoke("q")


async def test_a_sync_scorer_runs_off_the_event_loop(experts) -> None:
    scorer = LengthScorer()
    await RewardRankingRunnable(experts=experts, scorer=scorer).ainvoke("hi")
    assert scorer.threads and scorer.threads[0] != threading.get_ident()


def test_works_in_an_lcel_chain_and_in_batch(experts) -> None:
    ranker = RewardRankingRunnable(experts=experts, scorer=AsyncKeywordScorer("brief"))
    prompt = ChatPromptTemplate.from_messages([("system", "be precise"), ("human", "{question}")])
    chain = prompt | ranker | StrOutputParser()
    assert chain.invoke({"question": "what is a monad?"}) == "[brief] what is a monad?"
    replies = ranker.batch(["one", "two", "three"])
    assert [r.content for r in replies] == ["[brief] one", "[brief] two", "[brief] three"]
    assert all(r.response_metadata["reward_ranking"]["expert_calls"] == 3 for r in replies)


async def test_abatch_and_the_query_the_scorer_sees_for_a_chat(experts) -> None:
    scorer = LengthScorer()
    ranker = RewardRankingRunnable(experts=experts, scorer=scorer)
    replies = await ranker.abatch(["one", [SystemMessage("be brief"), HumanMessage("two")]])
    assert [r.response_metadata["reward_ranking"]["expert"] for r in replies] == ["verbose", "verbose"]
    queries = sorted((str(q[0]) for q, _ in scorer.calls), key=len)
    assert queries[0] == "one"
    assert queries[1] == str([{"role": "system", "content": "be brief"}, {"role": "user", "content": "two"}])


@pytest.mark.parametrize("limit", [1, None])
async def test_max_concurrency_bounds_the_expert_calls(limit: int | None) -> None:
    gauge = Gauge()
    experts = {n: MeteredExpert(name=n, latency=0.05, gauge=gauge) for n in ("a", "b", "c")}
    ranker = RewardRankingRunnable(experts=experts, scorer=LengthScorer(), max_concurrency=limit)
    await ranker.ainvoke("hi")
    assert gauge.peak == (limit or len(experts))
    gauge.peak = 0
    ranker.invoke("hi")
    assert gauge.peak == (limit or len(experts))


def test_expert_runs_nest_inside_the_ranking_run(experts) -> None:
    ranker = RewardRankingRunnable(experts=experts, scorer=LengthScorer())
    with collect_runs() as cb:
        ranker.invoke("hi", {"tags": ["eval"]})
    (root,) = cb.traced_runs
    assert root.name == "ChatRewardRanker"  # runs are named after the class; the old name is an alias
    assert sorted(child.name for child in root.child_runs) == sorted(experts)
    assert all("eval" in child.tags for child in root.child_runs)


def test_bad_construction_is_refused(experts) -> None:
    with pytest.raises(ZooterError, match="at least one expert"):
        RewardRankingRunnable(experts={}, scorer=LengthScorer())
    with pytest.raises(ZooterError, match="no score"):
        RewardRankingRunnable(experts=experts, scorer=object())
