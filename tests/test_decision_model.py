"""ZooterDecisionModel: the router answers LangChain's Choice questions, alone and in ModelRouterMiddleware."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import EventLoopWatch
from langchain_core.decisions import Box, Choice, Noul, Score
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.tracers.context import collect_runs

from zooter.errors import ExpertMismatchError, ZooterError
from zooter_langchain import ChatZooterRouter, FakeExpertChatModel, ZooterDecisionModel

EXPERTS = ("mathbot", "coder", "poet")
WHO = Choice(instructions="Which expert answers this best?", criteria={name: f"the {name}" for name in EXPERTS})
QUESTIONS = ["please explain this integral", "python regex segfault", "write a haiku about the sea"]


@pytest.fixture
def classifier(keyword_router) -> ZooterDecisionModel:
    return ZooterDecisionModel(router=keyword_router)


def ask(classifier: ZooterDecisionModel, state: Any, question: Any = WHO) -> Any:
    return classifier.invoke({"state": state, "questions": {"who": question}}).choices["who"]


def count_router_passes(router: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    passes: list[int] = []
    original = router.estimate
    monkeypatch.setattr(
        router, "estimate", lambda queries, **kw: passes.append(len(queries)) or original(queries, **kw)
    )
    return passes


def test_the_answer_is_the_routers_decision_with_its_probabilities(classifier, keyword_router) -> None:
    experts = {name: FakeExpertChatModel(name=name) for name in EXPERTS}
    chat = ChatZooterRouter(router=keyword_router, experts=experts)
    for question in QUESTIONS:
        routed = keyword_router.route([question])[0]
        answer = ask(classifier, question)
        assert answer.choice == routed.expert == chat.decide([question])[0].expert
        assert answer.probabilities == pytest.approx(routed.probabilities)
        assert answer.confidence == pytest.approx(routed.probabilities[routed.expert])
    assert [ask(classifier, q).choice for q in QUESTIONS] == list(EXPERTS)


def test_every_state_shape_reads_the_query(classifier) -> None:
    chat = [
        SystemMessage("you write poems"),
        HumanMessage("write a poem"),
        AIMessage("ok"),
        HumanMessage("python regex"),
    ]
    assert ask(classifier, HumanMessage("python regex")).choice == "coder"
    assert ask(classifier, chat).choice == "coder"
    assert ask(classifier, {"messages": chat}).choice == "coder"
    assert ask(classifier, [("user", "write a haiku")]).choice == "poet"
    with pytest.raises(ZooterError, match="cannot read a query from a state of type int"):
        ask(classifier, 42)


def test_a_question_over_some_experts_chooses_among_them(classifier) -> None:
    two = Choice(instructions="Which?", criteria={"mathbot": None, "poet": None})
    answer = ask(classifier, "python regex segfault", two)  # the coder would win; it is not offered
    assert answer.choice in {"mathbot", "poet"} and set(answer.probabilities) == {"mathbot", "poet"}
    assert sum(answer.probabilities.values()) == pytest.approx(1.0)
    assert answer.confidence == pytest.approx(answer.probabilities[answer.choice])


def test_labels_map_to_experts_and_unknown_labels_are_named(keyword_router) -> None:
    mapped = ZooterDecisionModel(router=keyword_router, labels={"maths": "mathbot", "code": "coder", "verse": "poet"})
    question = Choice(instructions="Which?", criteria={"maths": None, "code": None, "verse": None})
    assert ask(mapped, "python regex", question).choice == "code"
    with pytest.raises(ExpertMismatchError, match="'painter'") as info:
        ZooterDecisionModel(router=keyword_router, labels={"art": "painter"})
    assert info.value.extra == ["painter"]
    with pytest.raises(ExpertMismatchError, match="'lawyer'") as info:
        ask(
            ZooterDecisionModel(router=keyword_router),
            "python regex",
            Choice(instructions="?", criteria={"coder": 1, "lawyer": 2}),
        )
    assert info.value.extra == ["lawyer"]
    with pytest.raises(ZooterError, match="distinct experts"):
        ZooterDecisionModel(router=keyword_router, labels={"a": "coder", "b": "coder"})


@pytest.mark.parametrize(
    "question",
    [
        Noul(instructions="Is this about code?"),
        Score(instructions="How hard?", criteria=["easy", "hard"]),
        Box(instructions="Where is the cat?"),
    ],
)
def test_other_kinds_of_question_raise_rather_than_guess(classifier, question) -> None:
    with pytest.raises(ZooterError, match=f"is a {type(question).__name__}: ZooterDecisionModel answers only Choice"):
        ask(classifier, "python regex", question)


def test_a_batch_takes_one_router_pass_and_each_request_is_its_own_run(classifier, keyword_router, monkeypatch) -> None:
    passes = count_router_passes(keyword_router, monkeypatch)
    requests = [{"state": q, "questions": {"who": WHO}} for q in QUESTIONS * 4]
    with collect_runs() as runs:
        responses = classifier.batch(requests)
    assert passes == [12]
    assert [r.choices["who"].choice for r in responses] == list(EXPERTS) * 4
    assert [run.name for run in runs.traced_runs] == ["ZooterDecisionModel"] * 12
    assert runs.traced_runs[0].extra["metadata"]["ls_provider"] == "zooter"
    bad = {"state": "python", "questions": {"urgent": Noul(instructions="Urgent?")}}
    mixed = classifier.batch([requests[0], bad, requests[1]], return_exceptions=True)
    assert isinstance(mixed[1], ZooterError)
    assert [mixed[0].choices["who"].choice, mixed[2].choices["who"].choice] == ["mathbot", "coder"]
    passes.clear()
    assert [r.choices["who"].choice for r in asyncio.run(classifier.abatch(requests[:3]))] == list(EXPERTS)
    assert passes == [3]


async def test_async_calls_do_not_run_the_encoder_on_the_event_loop(classifier, keyword_router, monkeypatch) -> None:
    async with EventLoopWatch(keyword_router, monkeypatch) as watch:
        answer = await classifier.ainvoke({"state": "python regex", "questions": {"who": WHO}})
        await classifier.abatch([{"state": q, "questions": {"who": WHO}} for q in QUESTIONS])
    assert answer.choices["who"].choice == "coder"
    assert watch.off_the_loop
    assert watch.ticks >= 20  # the loop kept ticking through ~0.4 s of encoder time


@pytest.mark.filterwarnings("ignore:The middleware `ModelRouterMiddleware` is in beta")
def test_drives_model_router_middleware_in_a_real_agent(classifier) -> None:
    pytest.importorskip("langchain.agents")
    from langchain.agents import create_agent
    from langchain.agents.middleware import ModelChoice, ModelRouterMiddleware

    experts = {name: FakeExpertChatModel(name=name) for name in EXPERTS}
    router = ModelRouterMiddleware(
        choices={
            name: ModelChoice(model=model, criteria=f"questions for the {name}") for name, model in experts.items()
        },
        instructions="Pick the expert that answers best.",
        classifier=classifier,
    )
    agent = create_agent(experts["poet"], middleware=[router])
    with collect_runs() as runs:
        state = agent.invoke({"messages": [HumanMessage("python regex segfault")]})
    assert state["model_route"].choice == "coder"
    assert state["model_route"].probabilities["coder"] == pytest.approx(state["model_route"].confidence)
    assert state["messages"][-1].content == "[coder] python regex segfault"
    assert experts["coder"].calls == 1 and experts["poet"].calls == 0

    def walk(run: Any) -> list[Any]:
        return [run, *(r for child in run.child_runs for r in walk(child))]

    traced = [r for root in runs.traced_runs for r in walk(root) if r.name == "ZooterDecisionModel"]
    assert len(traced) == 1 and traced[0].run_type == "llm"
    assert traced[0].outputs["output"].choices["model_route"].choice == "coder"
    later = asyncio.run(agent.ainvoke({"messages": [HumanMessage("write a haiku about the sea")]}))
    assert later["model_route"].choice == "poet" and later["messages"][-1].content.startswith("[poet]")
