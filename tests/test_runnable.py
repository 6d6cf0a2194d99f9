"""ChatZooterRouter (alias ZooterRouterRunnable): routing, visibility, batching, async, fallback, tools, caching."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import EventLoopWatch
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField
from langchain_core.tracers.context import collect_runs
from pydantic import BaseModel

from zooter.errors import ExpertMismatchError, ZooterError
from zooter_langchain import ChatZooterRouter, FakeExpertChatModel, ZooterRouterRunnable

QUESTIONS = ["please explain this integral", "python regex segfault", "write a haiku about the sea", "hello"]


@pytest.fixture
def experts() -> dict[str, FakeExpertChatModel]:
    return {name: FakeExpertChatModel(name=name, model_name=f"{name}-v1") for name in ("mathbot", "coder", "poet")}


@pytest.fixture
def model(keyword_router, experts) -> ZooterRouterRunnable:
    return ZooterRouterRunnable(router=keyword_router, experts=experts)


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((name, data))


def test_answers_come_from_the_expert_the_router_picks(model, keyword_router) -> None:
    expected = [d.expert for d in keyword_router.route(QUESTIONS)]
    assert expected[:3] == ["mathbot", "coder", "poet"]
    for question, expert in zip(QUESTIONS, expected):
        reply = model.invoke(question)
        assert reply.content == f"[{expert}] {question}"
        meta = reply.response_metadata["zooter"]
        assert meta["expert"] == expert and meta["reason"] in {"routed", "default"}
        probs = keyword_router.route([question])[0].probabilities
        assert meta["probabilities"] == pytest.approx(probs)
        assert reply.response_metadata["model_name"] == f"{expert}-v1"


def test_every_input_shape_routes_on_the_last_human_message(model) -> None:
    prompt = ChatPromptTemplate.from_messages([("system", "be brief"), ("human", "{q}")])
    assert model.invoke(prompt.invoke({"q": "python regex"})).response_metadata["zooter"]["expert"] == "coder"
    chat = [HumanMessage("write a poem"), AIMessage("ok"), HumanMessage("now a python function")]
    assert model.invoke(chat).response_metadata["zooter"]["expert"] == "coder"
    chain = prompt | model | StrOutputParser()
    assert chain.invoke({"q": "write a haiku"}) == "[poet] write a haiku"


def test_conversation_and_custom_routing(keyword_router, experts) -> None:
    chat = [HumanMessage("integral integral derivative equation"), AIMessage("sure"), HumanMessage("and hello")]
    last = ZooterRouterRunnable(router=keyword_router, experts=experts)
    whole = ZooterRouterRunnable(router=keyword_router, experts=experts, route_on="conversation")
    assert whole.invoke(chat).response_metadata["zooter"]["expert"] == "mathbot"
    assert last.route_text(chat) == "and hello"
    assert whole.route_text(chat).startswith("user: integral")
    custom = ZooterRouterRunnable(router=keyword_router, experts=experts, route_on=lambda msgs: "python function")
    assert custom.invoke("a poem").response_metadata["zooter"]["expert"] == "coder"


def test_non_text_blocks_are_skipped_and_empty_text_goes_to_the_default(keyword_router, experts) -> None:
    model = ZooterRouterRunnable(router=keyword_router, experts=experts, default_expert="poet")
    image_only = HumanMessage(content=[{"type": "image", "url": "https://example.com/cat.png"}])
    reply = model.invoke([image_only])
    meta = reply.response_metadata["zooter"]
    assert {key: meta[key] for key in ("expert", "routed_to", "reason", "attempts")} == {
        "expert": "poet",
        "routed_to": "poet",
        "reason": "empty query",
        "attempts": [],
    }
    mixed = HumanMessage(content=[{"type": "image", "url": "x"}, {"type": "text", "text": "python regex"}])
    assert model.invoke([mixed]).response_metadata["zooter"]["expert"] == "coder"


def test_decision_is_a_custom_event_and_the_expert_run_nests_inside(model) -> None:
    recorder = Recorder()
    with collect_runs() as runs:
        model.invoke("python regex", config={"callbacks": [recorder], "tags": ["t1"], "metadata": {"user": "u"}})
    assert [name for name, _ in recorder.events] == ["zooter_route"]
    assert recorder.events[0][1]["expert"] == "coder"
    (root,) = runs.traced_runs
    assert root.name == "ChatZooterRouter"
    assert [child.name for child in root.child_runs] == ["coder"]
    child = root.child_runs[0]
    assert "t1" in child.tags and child.extra["metadata"]["user"] == "u"
    # the router's run starts before the route is known; the expert's run inside it names the model
    assert root.extra["metadata"]["ls_model_name"] == "zooter-router"
    assert root.extra["metadata"]["ls_provider"] == "zooter"
    assert child.extra["metadata"]["ls_model_name"] == "coder-v1"


def test_streaming_yields_the_expert_tokens_once_with_the_decision(model) -> None:
    recorder = Recorder()
    with collect_runs() as runs:
        chunks = list(model.stream("write a haiku now", config={"callbacks": [recorder]}))
    text = "".join(str(c.content) for c in chunks)
    assert text == "[poet] write a haiku now"
    assert chunks[0].response_metadata["zooter"]["expert"] == "poet"
    assert sum(1 for c in chunks if "zooter" in c.response_metadata) == 1
    assert [name for name, _ in recorder.events] == ["zooter_route"]
    (root,) = runs.traced_runs
    assert [child.name for child in root.child_runs] == ["poet"]


async def test_async_paths_and_stream_events(model) -> None:
    reply = await model.ainvoke("python regex")
    assert reply.content == "[coder] python regex"
    chunks = [c async for c in model.astream("write a haiku")]
    assert "".join(str(c.content) for c in chunks) == "[poet] write a haiku"
    events = [e async for e in model.astream_events("please explain this integral", version="v2")]
    custom = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["name"] for e in custom] == ["zooter_route"] and custom[0]["data"]["expert"] == "mathbot"
    expert_starts = [e for e in events if e["event"] == "on_chat_model_start" and e["name"] == "mathbot"]
    assert len(expert_starts) == 1 and expert_starts[0]["parent_ids"]
    replies = await model.abatch(QUESTIONS[:3], config={"max_concurrency": 2})
    assert [r.response_metadata["zooter"]["expert"] for r in replies] == ["mathbot", "coder", "poet"]


def test_batch_routes_in_one_router_pass(model, keyword_router, monkeypatch) -> None:
    passes, forwards = [], []
    original_pass, original_forward = keyword_router.estimate, keyword_router.forward

    def counting_pass(queries, **kwargs: Any):
        passes.append(len(queries))
        return original_pass(queries, **kwargs)

    def counting_forward(*args: Any, **kwargs: Any):
        forwards.append(args[0].shape[0])
        return original_forward(*args, **kwargs)

    monkeypatch.setattr(keyword_router, "estimate", counting_pass)
    monkeypatch.setattr(keyword_router, "forward", counting_forward)
    inputs = [QUESTIONS[i % 3] + f" {i}" for i in range(40)]
    replies = model.batch(inputs, config={"max_concurrency": 4})
    assert passes == [40]  # one router pass for the whole batch, not one per input
    assert sum(forwards) == 40 and max(forwards) == keyword_router.default_batch_size  # in full batches
    assert [r.response_metadata["zooter"]["expert"] for r in replies] == [
        ["mathbot", "coder", "poet"][i % 3] for i in range(40)
    ]
    passes.clear()
    asyncio.run(model.abatch(inputs))
    assert passes == [40]
    passes.clear()
    model.invoke("hello")
    assert passes == [1]


async def test_async_calls_do_not_run_the_encoder_on_the_event_loop(model, keyword_router, monkeypatch) -> None:
    async with EventLoopWatch(keyword_router, monkeypatch) as watch:
        await model.ainvoke("python regex")
        await model.abatch(QUESTIONS)
        _ = [c async for c in model.astream("write a haiku")]
    assert watch.off_the_loop
    assert watch.ticks >= 30  # the loop kept ticking through ~0.6 s of encoder time


def test_fallback_tries_the_next_most_probable_experts_in_order(keyword_router) -> None:
    experts = {
        "mathbot": FakeExpertChatModel(name="mathbot", fail_every=1),
        "coder": FakeExpertChatModel(name="coder", fail_every=1),
        "poet": FakeExpertChatModel(name="poet"),
    }
    model = ZooterRouterRunnable(router=keyword_router, experts=experts, fallback=True, max_fallbacks=2)
    question = "please explain this integral"
    probs = keyword_router.route([question])[0].probabilities
    order = sorted(probs, key=lambda e: -probs[e])
    reply = model.invoke(question)
    meta = reply.response_metadata["zooter"]
    failed = [a["expert"] for a in meta["attempts"]]
    assert failed == [e for e in order if e != "poet"][: len(failed)]
    assert meta["expert"] == "poet" and meta["routed_to"] == "mathbot" and meta["reason"] == "fallback"
    assert all("unavailable" in a["error"] for a in meta["attempts"])
    streamed = list(model.stream(question))
    assert "".join(str(c.content) for c in streamed) == f"[poet] {question}"


def test_without_fallback_the_original_error_surfaces(keyword_router) -> None:
    experts = {
        n: FakeExpertChatModel(name=n, fail_every=1 if n == "coder" else 0) for n in ("mathbot", "coder", "poet")
    }
    model = ZooterRouterRunnable(router=keyword_router, experts=experts)
    with pytest.raises(RuntimeError, match="coder is unavailable"):
        model.invoke("python regex")
    limited = ZooterRouterRunnable(router=keyword_router, experts=experts, fallback=True, max_fallbacks=0)
    with pytest.raises(RuntimeError, match="coder is unavailable"):
        limited.invoke("python regex")
    # LangChain's own composition still works around the router
    safe = model.with_fallbacks([FakeExpertChatModel(name="backup")])
    assert safe.invoke("python regex").content == "[backup] python regex"
    flaky = {n: FakeExpertChatModel(name=n, fail_every=2) for n in ("mathbot", "coder", "poet")}
    flaky["coder"].calls = 1  # its next call fails, the retry succeeds
    retried = ZooterRouterRunnable(router=keyword_router, experts=flaky).with_retry(stop_after_attempt=2)
    assert retried.invoke("python regex").content == "[coder] python regex"


def test_expert_names_must_match_the_router(keyword_router, experts) -> None:
    with pytest.raises(ExpertMismatchError) as info:
        ZooterRouterRunnable(router=keyword_router, experts={"mathbot": experts["mathbot"], "judge": experts["poet"]})
    assert info.value.missing == ["coder", "poet"] and info.value.extra == ["judge"]
    assert "coder" in str(info.value) and "judge" in str(info.value)
    with pytest.raises(ExpertMismatchError, match="allow_subset"):
        ZooterRouterRunnable(router=keyword_router, experts={"mathbot": experts["mathbot"], "poet": experts["poet"]})
    subset = ZooterRouterRunnable(
        router=keyword_router, experts={"mathbot": experts["mathbot"], "poet": experts["poet"]}, allow_subset=True
    )
    reply = subset.invoke("python regex")  # coder would win; it is masked
    assert reply.response_metadata["zooter"]["expert"] in {"mathbot", "poet"}
    with pytest.raises(ExpertMismatchError):
        ZooterRouterRunnable(router=keyword_router, experts=experts, default_expert="nobody")


def test_per_call_control_without_rebuilding(model) -> None:
    forced = model.invoke("python regex", force_expert="poet")
    assert forced.content == "[poet] python regex"
    assert forced.response_metadata["zooter"]["reason"] == "forced"
    assert forced.response_metadata["zooter"]["probabilities"]["coder"] > 0.5  # the router's view is still reported
    allowed = model.invoke("python regex", allowed_experts=["mathbot", "poet"])
    assert allowed.response_metadata["zooter"]["expert"] in {"mathbot", "poet"}
    configurable = model.configurable_fields(force_expert=ConfigurableField(id="expert"))
    reply = configurable.invoke("python regex", config={"configurable": {"expert": "mathbot"}})
    assert reply.content == "[mathbot] python regex"
    with pytest.raises(ZooterError, match="nobody"):
        model.invoke("python regex", force_expert="nobody")


def test_bind_tools_calls_the_chosen_expert_with_tools(model) -> None:
    def calculator(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    bound = model.bind_tools([calculator])
    reply = bound.invoke("python calculator 2 and 3")
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "calculator"
    assert reply.tool_calls[0]["args"] == {"a": 2, "b": 3}
    assert reply.response_metadata["zooter"]["expert"] == "coder"
    plain = model.invoke("python calculator 2 and 3")
    assert not plain.tool_calls  # binding made a new runnable; the router itself is unchanged


def test_with_structured_output_routes_then_uses_the_expert_schema(model) -> None:
    class Answer(BaseModel):
        a: int
        b: int

    recorder = Recorder()
    structured = model.with_structured_output(Answer)
    result = structured.invoke("python Answer 4 and 5", config={"callbacks": [recorder]})
    assert result == Answer(a=4, b=5)
    assert recorder.events and recorder.events[0][1]["expert"] == "coder"


def test_works_as_the_model_of_an_agent(model) -> None:
    pytest.importorskip("langchain.agents")
    from langchain.agents import create_agent

    def weather(city: str) -> str:
        """Current weather for a city."""
        return f"sunny in {city}"

    def calculator(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    agent = create_agent(model, tools=[weather, calculator])
    result = agent.invoke({"messages": [HumanMessage("python calculator 20 and 22")]})
    messages = result["messages"]
    assert messages[1].tool_calls[0]["name"] == "calculator"
    assert messages[2].content == "42"  # the tool ran
    assert messages[-1].content == "[coder] 42"  # the routed expert answered with the tool's result
    assert all(m.response_metadata["zooter"]["expert"] == "coder" for m in messages if isinstance(m, AIMessage))


def test_system_prompt_does_not_change_the_route(model) -> None:
    with_system = [SystemMessage("You write poems and haiku."), HumanMessage("python regex")]
    assert model.invoke(with_system).response_metadata["zooter"]["expert"] == "coder"


def test_from_pretrained_loads_a_saved_router(keyword_router, experts, tmp_path) -> None:
    keyword_router.save_pretrained(tmp_path / "router")
    model = ZooterRouterRunnable.from_pretrained(tmp_path / "router", experts=experts, device="cpu")
    assert model.invoke("python regex").response_metadata["zooter"]["expert"] == "coder"
    assert model._identifying_params["experts"] == {"mathbot": "mathbot-v1", "coder": "coder-v1", "poet": "poet-v1"}


def test_text_free_calls_route_as_the_router_routes_the_empty_query(keyword_router, experts) -> None:
    empty = keyword_router.route([""])[0]
    plain = ZooterRouterRunnable(router=keyword_router, experts=experts)
    for text in ("", "   "):
        meta = plain.invoke(text).response_metadata["zooter"]
        assert (meta["expert"], meta["probabilities"]) == (empty.expert, empty.probabilities)
    with_default = ZooterRouterRunnable(router=keyword_router, experts=experts, default_expert="poet")
    assert with_default.invoke("  \n").response_metadata["zooter"]["reason"] == "empty query"


def test_allowed_experts_may_name_a_single_expert(model) -> None:
    assert model.invoke("python regex", allowed_experts="poet").response_metadata["zooter"]["expert"] == "poet"


class InvocationParams(BaseCallbackHandler):
    """Records the invocation params of every top-level chat-model run."""

    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        if kwargs.get("parent_run_id") is None:
            self.params.append(kwargs.get("invocation_params") or {})


def test_a_repeated_prompt_is_an_llm_cache_hit_and_the_route_stays_out_of_the_call(
    model, keyword_router, monkeypatch
) -> None:
    from langchain_core.caches import InMemoryCache
    from langchain_core.globals import set_llm_cache

    passes = []
    original = keyword_router.estimate
    monkeypatch.setattr(keyword_router, "estimate", lambda q, **kw: passes.append(len(q)) or original(q, **kw))
    params = InvocationParams()
    set_llm_cache(InMemoryCache())
    try:
        first = model.invoke("python regex", config={"callbacks": [params]})
        again = model.invoke("python regex", config={"callbacks": [params]})
        batched = model.batch(["write a haiku", "write a haiku"], config={"callbacks": [params], "max_concurrency": 1})
    finally:
        set_llm_cache(None)
    assert passes == [1, 2]  # the repeat was answered from the cache without routing; the batch routed once
    assert again.content == first.content == "[coder] python regex"
    assert again.response_metadata["zooter"]["expert"] == "coder"  # the cached answer keeps its decision
    assert [m.content for m in batched] == ["[poet] write a haiku"] * 2
    assert len(params.params) == 4
    for invocation in params.params:
        assert not {"zooter_route", "probabilities", "expert"} & set(invocation)
        assert "probabilities" not in str(invocation)


def coder_down() -> dict[str, FakeExpertChatModel]:
    """Experts of which the coder always fails."""
    return {n: FakeExpertChatModel(name=n, fail_every=int(n == "coder")) for n in ("mathbot", "coder", "poet")}


def test_fallback_recovers_only_from_the_exceptions_it_is_told_to(keyword_router) -> None:
    experts = coder_down()
    picky = ZooterRouterRunnable(
        router=keyword_router, experts=experts, fallback=True, exceptions_to_handle=(TimeoutError,)
    )
    with pytest.raises(RuntimeError, match="coder is unavailable"):
        picky.invoke("python regex")
    with pytest.raises(RuntimeError, match="coder is unavailable"):
        list(picky.stream("python regex"))
    lenient = ZooterRouterRunnable(router=keyword_router, experts=experts, fallback=True)
    assert lenient.invoke("python regex").response_metadata["zooter"]["reason"] == "fallback"


async def test_async_fallback_and_streamed_fallback(keyword_router) -> None:
    experts = coder_down()
    model = ZooterRouterRunnable(router=keyword_router, experts=experts, fallback=True)
    reply = await model.ainvoke("python regex")
    assert reply.response_metadata["zooter"]["routed_to"] == "coder"
    assert reply.response_metadata["zooter"]["attempts"][0]["expert"] == "coder"
    chunks = [c async for c in model.astream("python regex")]
    assert chunks[0].response_metadata["zooter"]["expert"] == reply.response_metadata["zooter"]["expert"]


def test_the_old_names_are_aliases() -> None:
    from zooter_langchain import ChatRewardRanker, RewardRankingRunnable

    assert ZooterRouterRunnable is ChatZooterRouter
    assert RewardRankingRunnable is ChatRewardRanker
    assert "alias" in (ChatZooterRouter.__doc__ or "") and "alias" in (ChatRewardRanker.__doc__ or "")
