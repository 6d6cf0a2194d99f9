"""Tool selection: the policy, the selector, the LCEL runnable, the agent middleware and the example."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import distill_config, keyword_rows
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field

from zooter.data import RoutingDataset, RoutingExample
from zooter.decide.policy import SelectionPolicy, select_top
from zooter.errors import ConfigError, ExpertMismatchError, MissingDependencyError, ZooterError
from zooter.evaluation import evaluate_rankings, evaluate_selection
from zooter.training import TrainingConfig, train_router
from zooter_langchain import TOOL_SELECTION_EVENT, FakeExpertChatModel, ZooterToolSelector

ROOT = Path(__file__).resolve().parents[1]
TOOL_OF = {"mathbot": "calculator", "coder": "code_runner", "poet": "writer"}  # keyword topic -> tool


def tool_rows(n: int, *, seed: int) -> RoutingDataset:
    """Synthetic tool-use rows: the right tool (reward 1) is decided by one keyword among filler words."""
    rows = keyword_rows(n, seed=seed)
    for row in rows:
        row["rewards"] = {tool: float(topic == row["task"]) for topic, tool in TOOL_OF.items()}
        row["task"] = TOOL_OF[row["task"]]
    return RoutingDataset([RoutingExample.from_dict(r) for r in rows])


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("tool_selection_example", ROOT / "examples" / "tool_selection.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The worked example (tested at the end) lends its tools and event counter; it has no writing tool.
EXAMPLE = _example()
calculator, code_runner, web_search = EXAMPLE.calculator, EXAMPLE.code_runner, EXAMPLE.web_search


@tool
def writer(brief: str) -> str:
    """A writing sub-agent: poems, stories, lyrics."""
    return "a poem"


TOOLS = [calculator, code_runner, writer]
MATH, CODE = "please use the calculator on this integral", "run the code_runner on this python function"


@pytest.fixture(scope="module")
def tool_router(tiny_encoder: str):
    return train_router(tool_rows(150, seed=1), distill_config(tiny_encoder, epochs=8, max_length=16))


class CountingRouter:
    """The trained router, counting its encoder passes (the cost the middleware's cache saves)."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self.passes = 0

    @property
    def experts(self) -> list[str]:
        return self.router.experts

    def predict_proba(self, queries: Any, **kwargs: Any) -> Any:
        self.passes += 1
        return self.router.predict_proba(queries, **kwargs)


class ToolRecordingModel(FakeExpertChatModel):
    """The fake chat model, remembering which tools each call was offered."""

    offered: list[list[str]] = Field(default_factory=list)

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        self.offered.append([t["function"]["name"] for t in kwargs.get("tools") or []])
        return super()._generate(messages, stop, run_manager, **kwargs)

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        self.offered.append([t["function"]["name"] for t in kwargs.get("tools") or []])
        return super()._stream(messages, stop, run_manager, **kwargs)


# -- the policy -------------------------------------------------------------------------------
EXPERTS = ["a", "b", "c", "d"]
PROBS = [[0.6, 0.25, 0.1, 0.05], [0.1, 0.1, 0.5, 0.3]]


def test_top_k_keeps_the_k_most_probable_in_order() -> None:
    picked = select_top(PROBS, EXPERTS, SelectionPolicy(k=2))
    assert [s.selected for s in picked] == [["a", "b"], ["c", "d"]]
    assert picked[0].probabilities == {"a": 0.6, "b": 0.25, "c": 0.1, "d": 0.05}
    assert select_top([[0.3, 0.3, 0.2, 0.2]], EXPERTS, SelectionPolicy(k=3))[0].selected == ["a", "b", "c"]  # ties
    assert SelectionPolicy().k == 3  # the default rule
    restricted = select_top(PROBS, EXPERTS, SelectionPolicy(k=3), allowed=["b", "d"])
    assert [s.selected for s in restricted] == [["b", "d"], ["d", "b"]]


def test_cumulative_p_grows_the_set_until_the_mass_is_reached() -> None:
    def chosen(**policy: Any) -> list[str]:
        return select_top(PROBS[:1], EXPERTS, SelectionPolicy(**policy))[0].selected

    assert chosen(cumulative_p=0.5) == ["a"]
    assert chosen(cumulative_p=0.8) == ["a", "b"]
    assert chosen(cumulative_p=0.9) == ["a", "b", "c"]
    assert chosen(cumulative_p=1.0) == ["a", "b", "c", "d"]  # float sums just under 1 still count
    assert chosen(cumulative_p=0.5, min_k=2) == ["a", "b"]
    assert chosen(cumulative_p=0.99, max_k=2) == ["a", "b"]
    # an always-included expert's probability counts towards p, and it does not count against k
    assert chosen(cumulative_p=0.8, always_include=["b"]) == ["a", "b"]
    assert chosen(k=1, always_include=["c"]) == ["a", "c"]
    # probabilities are renormalised over the allowed experts: b, c, d hold 0.25, 0.1, 0.05 of 0.4
    allowed = select_top(PROBS[:1], EXPERTS, SelectionPolicy(cumulative_p=0.8), allowed=["b", "c", "d"])
    assert allowed[0].selected == ["b", "c"]


def test_policy_errors_name_the_value() -> None:
    with pytest.raises(ConfigError, match="not both"):
        SelectionPolicy(k=2, cumulative_p=0.9)
    with pytest.raises(ConfigError, match="cumulative_p"):
        SelectionPolicy(cumulative_p=1.5)
    with pytest.raises(ConfigError, match="max_k"):
        SelectionPolicy(cumulative_p=0.9, min_k=3, max_k=2)
    with pytest.raises(ConfigError, match=r"always_include names \['zz'\]"):
        select_top(PROBS, EXPERTS, SelectionPolicy(always_include=["zz"]))
    with pytest.raises(ConfigError, match=r"allowed names unknown expert\(s\) \['zz'\]"):
        select_top(PROBS, EXPERTS, SelectionPolicy(), allowed=["a", "zz"])
    policy = SelectionPolicy(cumulative_p=0.9, max_k=3, always_include=["a"])
    assert SelectionPolicy.from_dict(policy.to_dict()) == policy


def test_recall_at_k_counts_a_right_tool_in_the_top_k() -> None:
    rows = [
        {"id": "1", "query": "q1", "rewards": {"a": 1.0, "b": 0.0, "c": 0.0}, "task": "x"},
        {"id": "2", "query": "q2", "rewards": {"a": 1.0, "b": 0.0, "c": 1.0}, "task": "y"},  # two right tools
        {"id": "3", "query": "q3", "rewards": {"a": 0.0, "b": 0.0, "c": 0.0}, "task": "y"},  # none: skipped
    ]
    data = RoutingDataset([RoutingExample.from_dict(r) for r in rows])
    rankings = [["b", "a", "c"], ["c", "b", "a"], ["a", "b", "c"]]
    report = evaluate_rankings(data, rankings, ks=(1, 2), selections=[["b"], ["c", "b"], ["a"]])
    assert (report.n, report.skipped) == (2, 1)
    assert report.recall_at_k == {1: 0.5, 2: 1.0}
    assert report.per_task == {"x": {1: 0.0, 2: 1.0}, "y": {1: 1.0, 2: 1.0}}
    assert report.task_sizes == {"x": 1, "y": 1}
    assert report.policy_recall == 0.5 and report.mean_selected == 1.5
    assert "recall@2" in report.format_table()
    with pytest.raises(ZooterError, match="rankings"):
        evaluate_rankings(data, rankings[:2])


# -- the selector -----------------------------------------------------------------------------
def test_selector_picks_the_right_tool_on_held_out_queries(tool_router) -> None:
    held_out = tool_rows(90, seed=99)
    selector = ZooterToolSelector(tool_router, k=1)
    picked = selector.select_many([ex.query for ex in held_out])
    right = [max(ex.rewards, key=ex.rewards.get) for ex in held_out]
    accuracy = sum(s.tools == [r] for s, r in zip(picked, right)) / len(held_out)
    assert accuracy >= 0.9, f"top-1 tool right on {accuracy:.0%} of {len(held_out)} held-out queries"
    report = evaluate_selection(tool_router, held_out, ks=(1, 2), policy=SelectionPolicy(k=2))
    assert report.recall_at_k[1] == pytest.approx(accuracy)
    assert report.recall_at_k[2] >= report.recall_at_k[1]
    assert report.mean_selected == 2.0 and report.policy_recall == report.recall_at_k[2]
    single = selector.select(held_out[0].query)
    assert single.tools == picked[0].tools
    assert single.probabilities == pytest.approx(
        dict(zip(tool_router.experts, tool_router.predict_proba([held_out[0].query])[0].tolist()))
    )


def test_selector_reads_texts_chats_and_prompts(tool_router) -> None:
    selector = ZooterToolSelector(tool_router, k=1)
    chat = [HumanMessage("write a sonnet"), AIMessage("sure"), HumanMessage("now the integral")]
    assert selector.select(chat).tools == ["calculator"]  # the last human message
    assert selector.select([{"role": "user", "content": "python regex"}]).tools == ["code_runner"]
    prompt = ChatPromptTemplate.from_messages([("system", "be brief"), ("human", "{q}")]).invoke({"q": "a haiku"})
    assert selector.select(prompt).tools == ["writer"]
    whole = ZooterToolSelector(tool_router, k=1, route_on="conversation")
    assert whole.query_text(chat).startswith("user: write a sonnet")
    assert ZooterToolSelector(tool_router, route_on=lambda messages: "regex").select(chat).tools[0] == "code_runner"
    with pytest.raises(ConfigError, match="route_on"):
        ZooterToolSelector(tool_router, route_on="first_human")


def test_always_include_adds_tools_after_the_ranked_ones(tool_router) -> None:
    selector = ZooterToolSelector(tool_router, k=1, always_include=["writer", "search"])
    assert selector.select("explain this integral").tools == ["calculator", "writer", "search"]
    # an always-included tool the router would rank first is not counted against k
    assert selector.select("write a poem").tools[-2:] == ["writer", "search"]
    assert len(selector.select("write a poem").tools) == 3


# -- the LCEL runnable ------------------------------------------------------------------------
def test_runnable_maps_queries_to_tools_in_one_router_pass(tool_router) -> None:
    counting = CountingRouter(tool_router)
    names = ZooterToolSelector(counting, k=1).as_runnable()
    assert names.invoke("explain this integral") == ["calculator"]
    counting.passes = 0
    assert names.batch(["explain this integral", "python regex", "a haiku"]) == [
        ["calculator"],
        ["code_runner"],
        ["writer"],
    ]
    assert counting.passes == 1
    objects = ZooterToolSelector(tool_router, k=2).as_runnable(TOOLS)
    chosen = objects.invoke("python function")
    assert chosen[0] is code_runner and len(chosen) == 2 and all(t in TOOLS for t in chosen)
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | names
    assert chain.invoke({"q": "a sonnet please"}) == ["writer"]


async def test_runnable_async(tool_router) -> None:
    pick = ZooterToolSelector(tool_router, k=1).as_runnable(TOOLS)
    assert await pick.ainvoke("the integral") == [calculator]
    assert await pick.abatch(["python regex", "a poem"]) == [[code_runner], [writer]]


def test_runnable_checks_the_tools_it_is_given(tool_router) -> None:
    selector = ZooterToolSelector(tool_router)
    with pytest.raises(ExpertMismatchError, match="code_runner") as error:
        selector.as_runnable([calculator, writer])
    assert error.value.missing == ["code_runner"] and error.value.extra == []
    subset = selector.as_runnable([calculator, writer], allow_subset=True)
    assert code_runner not in subset.invoke("python regex")


# -- the agent middleware ---------------------------------------------------------------------
def test_middleware_narrows_tools_and_routes_once_per_turn(tool_router) -> None:
    counting = CountingRouter(tool_router)
    model = ToolRecordingModel(name="agent")
    middleware = ZooterToolSelector(counting, k=1).as_middleware(TOOLS)
    agent = create_agent(model, tools=TOOLS, middleware=[middleware], checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t1"}}

    first = agent.invoke({"messages": [("user", MATH)]}, config)["messages"]
    # the model was offered only the calculator on both calls of the tool loop: call it, then answer
    assert model.offered == [["calculator"], ["calculator"]]
    assert [m.type for m in first] == ["human", "ai", "tool", "ai"]
    assert first[1].tool_calls[0]["name"] == "calculator" and first[3].content == "[agent] 409.5"
    assert counting.passes == 1  # no re-encoding inside the tool loop
    assert [m.response_metadata["zooter_tools"]["cached"] for m in (first[1], first[3])] == [False, True]

    second = agent.invoke({"messages": [("user", CODE)]}, config)["messages"]
    assert model.offered[2:] == [["code_runner"], ["code_runner"]]  # a new turn selects afresh
    assert counting.passes == 2
    assert second[-1].content == "[agent] stdout: ['i', 'm', 'p', 's']"
    meta = second[-1].response_metadata["zooter_tools"]
    assert meta["tools"] == ["code_runner"]
    assert meta["probabilities"]["code_runner"] == max(meta["probabilities"].values())


def test_selection_is_visible_as_a_callback_event(tool_router) -> None:
    agent = create_agent(
        FakeExpertChatModel(name="agent"),
        tools=TOOLS,
        middleware=[ZooterToolSelector(tool_router, k=2).as_middleware()],
    )
    recorder = EXAMPLE.SelectionEvents()
    agent.invoke({"messages": [("user", MATH)]}, {"callbacks": [recorder]})
    assert len(recorder.events) == 1  # once per turn, when the router runs
    event = recorder.events[0]
    assert event["tools"][0] == "calculator" and len(event["tools"]) == 2 and event["cached"] is False
    assert set(event["probabilities"]) == {"calculator", "code_runner", "writer"}


async def test_middleware_async_narrows_caches_and_streams_the_event(tool_router) -> None:
    counting = CountingRouter(tool_router)
    model = ToolRecordingModel(name="agent")
    agent = create_agent(model, tools=TOOLS, middleware=[ZooterToolSelector(counting, k=1).as_middleware(TOOLS)])
    events = [
        event
        async for event in agent.astream_events({"messages": [("user", CODE)]}, version="v2")
        if event["event"] == "on_custom_event" and event["name"] == TOOL_SELECTION_EVENT
    ]
    assert model.offered == [["code_runner"], ["code_runner"]]
    assert counting.passes == 1
    assert [e["data"]["tools"] for e in events] == [["code_runner"]]


def _request(tools: list[Any], *messages: Any) -> ModelRequest:
    return ModelRequest(model=FakeExpertChatModel(), messages=list(messages), tools=tools)


def test_provider_tools_pass_through_and_always_include_is_kept(tool_router) -> None:
    counting = CountingRouter(tool_router)
    selector = ZooterToolSelector(counting, k=1, always_include=["writer"])
    middleware = selector.as_middleware(TOOLS)
    provider_tool = {"type": "web_search_preview"}
    seen: list[list[Any]] = []

    def handler(request: ModelRequest) -> ModelResponse:
        seen.append(request.tools)
        return ModelResponse(result=[AIMessage("ok")])

    question = HumanMessage("explain this integral", id="m1")
    response = middleware.wrap_model_call(_request([*TOOLS, provider_tool], question), handler)
    assert seen[0] == [calculator, writer, provider_tool]
    assert response.result[0].response_metadata["zooter_tools"]["tools"] == ["calculator", "writer"]
    middleware.wrap_model_call(_request([*TOOLS, provider_tool], question, AIMessage("calling")), handler)
    assert counting.passes == 1  # same human message: the turn's selection is reused
    middleware.wrap_model_call(_request(TOOLS, HumanMessage("explain this integral", id="m2")), handler)
    assert counting.passes == 2  # the same words in a new message are a new turn
    # nothing to route on (an image only): every tool is offered and nothing is claimed
    image = HumanMessage(content=[{"type": "image", "url": "https://example.com/x.png"}])
    untouched = middleware.wrap_model_call(_request(TOOLS, image), handler)
    assert seen[-1] == TOOLS and "zooter_tools" not in untouched.result[0].response_metadata


def test_tool_name_mismatch_is_an_error_at_construction(tool_router) -> None:
    selector = ZooterToolSelector(tool_router)
    with pytest.raises(ExpertMismatchError, match=r"not among the agent's tools: \['writer'\]") as missing:
        selector.as_middleware([calculator, code_runner])
    assert missing.value.missing == ["writer"]
    with pytest.raises(ExpertMismatchError, match="always_include") as extra:
        selector.as_middleware([*TOOLS, web_search])
    assert extra.value.extra == ["web_search"]
    ZooterToolSelector(tool_router, always_include=["web_search"]).as_middleware([*TOOLS, web_search])  # offered always
    with pytest.raises(ExpertMismatchError, match="web_search"):
        ZooterToolSelector(tool_router, always_include=["web_search"]).as_middleware(TOOLS)


def test_tool_name_mismatch_is_an_error_at_the_first_call_without_tools(tool_router) -> None:
    middleware = ZooterToolSelector(tool_router).as_middleware()
    agent = create_agent(FakeExpertChatModel(), tools=[calculator, code_runner], middleware=[middleware])
    with pytest.raises(ExpertMismatchError, match="writer"):
        agent.invoke({"messages": [("user", MATH)]})


def test_allow_subset_selects_among_the_agents_tools(tool_router) -> None:
    model = ToolRecordingModel(name="agent")
    middleware = ZooterToolSelector(tool_router, k=1).as_middleware([code_runner, writer], allow_subset=True)
    agent = create_agent(model, tools=[code_runner, writer], middleware=[middleware])
    agent.invoke({"messages": [("user", "explain this integral")]})
    assert len(model.offered[0]) == 1 and model.offered[0][0] in {"code_runner", "writer"}


# -- adding a tool without retraining ---------------------------------------------------------
def topic_rows(n: int, *, seed: int, tools: list[str] | None = None) -> list[RoutingExample]:
    """Short tool requests (two topic words and a filler word): a tiny random encoder's neighbours tell them apart."""
    import random

    from conftest import FILLER, TOPICS

    rng = random.Random(seed)
    tools = tools or list(TOOL_OF.values())
    rows = []
    for i in range(n):
        topic = list(TOOL_OF)[i % len(TOOL_OF)]
        words = [*rng.sample(TOPICS[topic], 2), rng.choice(FILLER)]
        rng.shuffle(words)
        right = TOOL_OF[topic]
        rewards = {t: float(t == right) for t in tools}
        rows.append(RoutingExample(f"{seed}-{i}", " ".join(words), rewards, task=right))
    return rows


@pytest.fixture
def router_without_writer(tiny_encoder: str):
    """A neighbour-bank tool router trained before the writer tool existed: no writer rows, no writer column."""
    known = ["calculator", "code_runner"]
    rows = [row for row in topic_rows(60, seed=1, tools=known) if row.task in known]
    config = TrainingConfig(encoder=tiny_encoder, max_length=16, device="cpu", show_progress=False, neighbours=[5])
    return train_router(RoutingDataset(rows), config)


def test_a_tool_added_from_a_few_requests_is_selected_for_requests_like_them(router_without_writer, tmp_path) -> None:
    held_out = RoutingDataset(topic_rows(60, seed=99))
    writer_requests = [row.query for row in topic_rows(30, seed=5) if row.task == "writer"][:6]
    selector = ZooterToolSelector(router_without_writer, k=1, always_include=["writer"])
    assert selector.select("a haiku about the sea").tools[-1] == "writer"  # offered, but not ranked
    rows_before = len(router_without_writer.bank)

    selector.add_tool("writer", writer_requests)
    assert selector.tool_names == ["calculator", "code_runner", "writer"]
    assert selector.policy.always_include == ["writer"] and selector._unranked == []
    report = evaluate_selection(selector.router, held_out, ks=(1,))
    assert report.per_task["writer"][1] >= 0.8, report.per_task
    assert report.recall_at_k[1] >= 0.85, report.per_task  # the other tools still win their requests
    assert len(selector.router.bank) == rows_before + 6

    # saved and loaded, the router ranks exactly as before: the new rows and their weights are kept
    selector.router.save_pretrained(tmp_path / "tools")
    loaded = ZooterToolSelector.from_pretrained(tmp_path / "tools", k=1)
    queries = [row.query for row in held_out][:12]
    assert loaded.tool_names == selector.tool_names
    before, after = selector.router.predict_proba(queries), loaded.router.predict_proba(queries)
    assert (after - before).abs().max().item() < 1e-5


def test_adding_a_tool_refuses_what_it_cannot_do(router_without_writer, tool_router) -> None:
    selector = ZooterToolSelector(router_without_writer)
    with pytest.raises(ConfigError, match="already has an expert 'calculator'"):
        selector.add_tool("calculator", ["integral please"])
    with pytest.raises(ConfigError, match="list of example"):
        selector.add_tool("writer", "a poem please")
    with pytest.raises(ConfigError, match="list of example"):
        selector.add_tool("writer", [])
    with pytest.raises(ConfigError, match="must not be empty"):
        selector.add_tool("writer", ["a poem", "  "])
    with pytest.raises(ConfigError, match="neighbour bank"):
        ZooterToolSelector(tool_router).add_tool("search", ["search the web"])  # a distilled router
    assert selector.tool_names == ["calculator", "code_runner"]  # nothing changed


def test_the_middleware_offers_a_tool_added_while_the_agent_runs(router_without_writer) -> None:
    model = ToolRecordingModel(name="agent")
    middleware = ZooterToolSelector(router_without_writer, k=1).as_middleware([calculator, code_runner])
    agent = create_agent(model, tools=[calculator, code_runner], middleware=[middleware])
    agent.invoke({"messages": [("user", "poem haiku please")]})
    assert model.offered[-1] in (["calculator"], ["code_runner"])  # no writer tool yet

    writer_requests = [row.query for row in topic_rows(30, seed=5) if row.task == "writer"][:6]
    middleware.add_tool(writer, writer_requests)
    agent = create_agent(model, tools=TOOLS, middleware=[middleware])  # the agent gets the tool too
    agent.invoke({"messages": [("user", "poem haiku please")]})
    assert model.offered[-1] == ["writer"]


def test_the_python_snippet_of_docs_tool_selection_updates_runs(router_without_writer, tmp_path, monkeypatch) -> None:
    import re

    text = (ROOT / "docs" / "tool-selection-updates.md").read_text(encoding="utf-8")
    (snippet,) = re.findall(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    monkeypatch.chdir(tmp_path)
    namespace = {"selector": ZooterToolSelector(router_without_writer, k=1)}
    exec(compile(snippet, "docs/tool-selection-updates.md", "exec"), namespace)
    assert namespace["selector"].tool_names == ["calculator", "code_runner", "writer", "search"]
    assert ZooterToolSelector.from_pretrained(tmp_path / "tool-router").tool_names[-1] == "writer"


def test_middleware_without_langchain_names_the_extra(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "zooter_langchain.tool_middleware", raising=False)
    monkeypatch.setitem(sys.modules, "langchain.agents.middleware", None)  # as if langchain were absent
    with pytest.raises(MissingDependencyError, match=r"zooter-langchain\[agents\]"):
        import zooter_langchain.tool_middleware  # noqa: F401


# -- the worked example -----------------------------------------------------------------------
def test_the_hand_made_dataset_is_what_its_readme_says() -> None:
    data = RoutingDataset.load(EXAMPLE.DATA)
    assert len(data) >= 200 and 6 <= len(data.experts) <= 10
    assert sorted(data.experts) == sorted(t.name for t in EXAMPLE.TOOLS)
    for row in data:
        assert set(row.rewards.values()) == {0.0, 1.0} and sum(row.rewards.values()) in (1.0, 2.0), row.id
    assert len({row.text for row in data}) == len(data)
    splits = EXAMPLE.load_splits()
    assert {ex.task for ex in splits.test} == {ex.task for ex in data}  # every tool is tested


def test_the_example_trains_evaluates_and_runs_an_agent_on_a_tiny_encoder(tiny_encoder: str, capsys) -> None:
    args = ["--encoder", tiny_encoder, "--epochs", "1", "--lr", "3e-3", "--head-lr", "3e-3"]
    assert EXAMPLE.main(args) == 0
    out = capsys.readouterr().out
    assert "182 training and 60 held-out queries" in out
    assert "recall@1" in out and "recall@3" in out and "mean selected 2.00" in out
    assert "model calls:" in out and "router runs: 3 (one per turn)" in out
    splits = EXAMPLE.load_splits()
    router = EXAMPLE.train_tool_router(splits.train, encoder=tiny_encoder, epochs=1, lr=3e-3, head_lr=3e-3)
    report = EXAMPLE.evaluate_held_out(router, splits.test, SelectionPolicy(k=2))
    recalls = [report.recall_at_k[k] for k in (1, 2, 3)]
    assert recalls == sorted(recalls) and all(0.0 <= r <= 1.0 for r in recalls)
    assert report.n == len(splits.test) and report.policy_recall == report.recall_at_k[2]
