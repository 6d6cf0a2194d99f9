"""The collect stage: every expert on every query, retries, failures on record, resume without duplicates."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fake_experts import Gauge, MeteredExpert
from langchain_core.messages import HumanMessage, SystemMessage

from zooter.cli import build_parser, main
from zooter.data import load_queries
from zooter.demo import demo_data_path
from zooter.errors import ConfigError, DataError, MissingDependencyError, ZooterError
from zooter_langchain import FakeExpertChatModel, acollect_responses, collect_responses
from zooter_langchain._retry import is_transient
from zooter_langchain.cli import cmd_collect
from zooter_langchain.collect import default_failures_path, read_collected

REPO = Path(__file__).resolve().parents[1]


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def queries_file(tmp_path: Path) -> Path:
    """The first 6 prompts of the bundled arena-bench-v1 file, as a query file (rewards dropped)."""
    lines = demo_data_path().read_text(encoding="utf-8").splitlines()[:6]
    rows = [{"id": r["id"], "query": r["query"]} for r in map(json.loads, lines)]
    path = tmp_path / "queries.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def assert_responses_file(path: Path, ids: list[str], experts: list[str]) -> list[dict[str, Any]]:
    """The file the score stage reads: one {id, model, response} line per pair, each pair exactly once."""
    rows = read_rows(path)
    for row in rows:
        assert set(row) == {"id", "model", "response"}
        assert all(isinstance(v, str) for v in row.values()) and row["response"]
    counts = Counter((r["id"], r["model"]) for r in rows)
    assert counts == Counter((i, e) for i in ids for e in experts)
    return rows


class RejectingExpert(FakeExpertChatModel):
    """Fails the way a request the provider refuses fails: the same way every time."""

    def _answer(self, messages, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        raise ValueError("prompt is too long: 250000 tokens > 200000 maximum")


def test_every_expert_answers_every_query_with_retries_and_failures_on_record(queries_file: Path, tmp_path) -> None:
    ids = [ex.id for ex in load_queries(queries_file)]
    experts = {
        "steady": FakeExpertChatModel(name="steady"),
        "flaky": FakeExpertChatModel(name="flaky", fail_every=3),  # every third call fails
        "down": FakeExpertChatModel(name="down", fail_every=1),  # every call fails
        "refused": RejectingExpert(name="refused"),
    }
    out = tmp_path / "responses.jsonl"
    report = collect_responses(queries_file, experts, out, max_retries=2, backoff=0)

    rows = assert_responses_file(out, ids, ["steady", "flaky"])
    queries = {ex.id: ex.query for ex in load_queries(queries_file)}
    assert all(r["response"] == f"[{r['model']}] {queries[r['id']]}" for r in rows)
    # flaky's failed calls were retried (more calls than answers) and all its answers arrived
    assert experts["flaky"].calls > len(ids)
    assert report.total == 4 * len(ids) and report.collected == 2 * len(ids) and report.skipped == 0
    assert not report.complete

    failures = read_rows(default_failures_path(out))
    assert Counter((f["id"], f["model"]) for f in failures) == Counter((i, e) for i in ids for e in ("down", "refused"))
    by_model = {f["model"]: f for f in failures}
    assert by_model["down"]["attempts"] == 3 and by_model["down"]["error"].startswith(
        "RuntimeError: down is unavailable"
    )
    assert by_model["refused"]["attempts"] == 1  # a ValueError is not transient: asked once, not retried
    assert "prompt is too long" in by_model["refused"]["error"]
    assert experts["refused"].calls == len(ids)
    assert sorted((f.id, f.model) for f in report.failures) == sorted((f["id"], f["model"]) for f in failures)


def test_a_rerun_retries_only_the_failed_pairs_and_clears_the_failures_file(queries_file: Path, tmp_path) -> None:
    ids = [ex.id for ex in load_queries(queries_file)]
    out = tmp_path / "responses.jsonl"
    first = collect_responses(
        queries_file, {"a": FakeExpertChatModel(name="a"), "b": FakeExpertChatModel(name="b", fail_every=1)}, out
    )
    assert first.failed == len(ids) and default_failures_path(out).exists()
    recovered = {"a": FakeExpertChatModel(name="a"), "b": FakeExpertChatModel(name="b")}
    second = collect_responses(queries_file, recovered, out)
    assert (second.skipped, second.collected, second.failed) == (len(ids), len(ids), 0)
    assert recovered["a"].calls == 0 and recovered["b"].calls == len(ids)
    assert second.complete and not default_failures_path(out).exists()
    assert_responses_file(out, ids, ["a", "b"])


def test_chat_queries_are_sent_as_messages_and_text_as_one_human_message(tmp_path) -> None:
    chat = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "hello there"}]
    expert = MeteredExpert(name="e")
    collect_responses([("text", "good morning"), ("chat", chat)], {"e": expert}, tmp_path / "out.jsonl")
    sent = {tuple(type(m) for m in msgs): msgs for msgs in expert.seen}
    assert [m.content for m in sent[(HumanMessage,)]] == ["good morning"]
    assert [m.content for m in sent[(SystemMessage, HumanMessage)]] == ["Answer in French.", "hello there"]


@pytest.mark.parametrize("limit", [1, 3])
def test_calls_in_flight_never_exceed_max_concurrency(tmp_path, limit: int) -> None:
    gauge = Gauge()
    experts = {n: MeteredExpert(name=n, latency=0.05, gauge=gauge) for n in ("a", "b", "c")}
    queries = [(f"q{i}", f"question {i}") for i in range(4)]
    report = collect_responses(queries, experts, tmp_path / "out.jsonl", max_concurrency=limit)
    assert report.collected == 12
    assert gauge.peak == limit  # reached, never exceeded


# A run in a child process whose experts hang after a few answers, so it can be killed part-way.
KILLED_RUN = """
import sys, time
from zooter_langchain import FakeExpertChatModel, collect_responses

class Hanging(FakeExpertChatModel):
    def _answer(self, messages, **kwargs):
        if self.calls >= 2:
            time.sleep(3600)
        return super()._answer(messages, **kwargs)

experts = {n: Hanging(name=n) for n in ("a", "b", "c")}
collect_responses(sys.argv[1], experts, sys.argv[2], max_concurrency=2)
"""


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_a_killed_run_resumes_with_every_pair_exactly_once(queries_file: Path, tmp_path) -> None:
    ids = [ex.id for ex in load_queries(queries_file)]
    out = tmp_path / "responses.jsonl"
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(queries_file), str(out)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120  # a guard against a hung test, not a timing assertion
        while count_lines(out) < 4:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the child process wrote nothing"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    kept = count_lines(out)
    assert 4 <= kept < 3 * len(ids)  # killed part-way
    # as if the kill had also cut a line short while it was being written
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"id": "' + ids[-1] + '", "model": "c", "resp')

    experts = {n: FakeExpertChatModel(name=n) for n in ("a", "b", "c")}
    report = collect_responses(queries_file, experts, out)
    assert report.skipped == kept and report.collected == 3 * len(ids) - kept
    assert_responses_file(out, ids, ["a", "b", "c"])
    assert read_collected(out) == {(i, e) for i in ids for e in ("a", "b", "c")}


async def test_a_cancelled_run_resumes_with_every_pair_exactly_once(tmp_path) -> None:
    queries = [(f"q{i}", f"question {i}") for i in range(8)]
    experts = {n: FakeExpertChatModel(name=n, latency=0.02) for n in ("a", "b")}
    out = tmp_path / "out.jsonl"
    task = asyncio.create_task(acollect_responses(queries, experts, out, max_concurrency=2))
    while count_lines(out) < 3 and not task.done():
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    kept = count_lines(out)
    assert 3 <= kept < 16
    report = await acollect_responses(queries, experts, out)
    assert (report.skipped, report.collected) == (kept, 16 - kept)
    assert_responses_file(out, [q for q, _ in queries], ["a", "b"])


async def test_the_sync_form_says_to_await_the_async_one_inside_an_event_loop(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="acollect_responses"):
        collect_responses([("q", "hi")], {"a": FakeExpertChatModel(name="a")}, tmp_path / "out.jsonl")


def test_bad_input_is_refused_before_any_call(tmp_path) -> None:
    expert = FakeExpertChatModel(name="a")
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match="duplicate id"):
        collect_responses([("q", "one"), ("q", "two")], {"a": expert}, out)
    with pytest.raises(DataError, match="cannot send the query"):
        collect_responses([("q", [{"role": "wizard", "content": "hi"}])], {"a": expert}, out)
    with pytest.raises(ConfigError, match="no experts"):
        collect_responses([("q", "hi")], {}, out)
    with pytest.raises(ConfigError, match="max_concurrency"):
        collect_responses([("q", "hi")], {"a": expert}, out, max_concurrency=0)
    with pytest.raises(ConfigError, match="plain JSONL"):
        collect_responses([("q", "hi")], {"a": expert}, tmp_path / "out.jsonl.gz")
    assert expert.calls == 0
    out.write_text('{"id": "q", "model": "a", "response": "ok"}\n{"id": "q2", "model": 3, "response": "x"}\n')
    with pytest.raises(DataError, match=r"out.jsonl:2.*'model'"):
        collect_responses([("q", "hi")], {"a": expert}, out)


class StatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class AuthenticationError(Exception):
    """Named like the provider SDKs' authentication errors, which carry no status on some SDKs."""


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (RuntimeError("server overloaded"), True),
        (ConnectionError("reset by peer"), True),
        (TimeoutError(), True),
        (StatusError(429), True),
        (StatusError(503), True),
        (StatusError(408), True),
        (StatusError(400), False),
        (StatusError(401), False),
        (StatusError(404), False),
        (ValueError("bad input"), False),
        (TypeError("wrong type"), False),
        (AuthenticationError("invalid x-api-key"), False),
    ],
)
def test_which_errors_are_retried(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


# -- the command line ------------------------------------------------------------------------------
def test_cli_collects_with_the_chat_models_its_specs_name(queries_file: Path, tmp_path, capsys) -> None:
    made: list[tuple[str, dict[str, Any]]] = []

    def factory(spec: str, **kwargs: Any) -> FakeExpertChatModel:
        made.append((spec, kwargs))
        return FakeExpertChatModel(name=spec.split(":", 1)[1], fail_every=1 if "down" in spec else 0)

    out = tmp_path / "responses.jsonl"
    argv = ["collect", str(queries_file), "--expert", "a=fake:alpha", "--expert", "b=fake:beta"]
    args = build_parser().parse_args([*argv, "--output", str(out), "--temperature", "0.7", "--quiet"])
    assert cmd_collect(args, model_factory=factory) == 0
    assert made == [("fake:alpha", {"temperature": 0.7}), ("fake:beta", {"temperature": 0.7})]
    rows = assert_responses_file(out, [ex.id for ex in load_queries(queries_file)], ["a", "b"])
    assert {r["response"].split("]")[0] for r in rows} == {"[alpha", "[beta"}
    assert "collected 12 answers, 0 already in" in capsys.readouterr().out

    args = build_parser().parse_args([*argv, "--expert", "c=fake:down", "--output", str(out), "--retries", "0"])
    assert cmd_collect(args, model_factory=factory) == 1  # incomplete: says so, and how to finish
    assert "6 of 18 (id, model) pairs failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("expert", "message"),
    [
        ("gpt", "NAME=PROVIDER:MODEL"),
        ("=openai:gpt-4o", "NAME=PROVIDER:MODEL"),
        ("a=", "NAME=PROVIDER:MODEL"),
        ("a=no-such-model-family", "Unable to infer model provider"),
    ],
)
def test_cli_bad_expert_specs_exit_2(queries_file: Path, tmp_path, capsys, expert: str, message: str) -> None:
    assert main(["collect", str(queries_file), "--expert", expert, "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zooter collect: error:") and message in err and err.count("\n") == 1


def test_cli_repeated_expert_name_exits_2(queries_file: Path, tmp_path, capsys) -> None:
    argv = ["collect", str(queries_file), "--expert", "a=openai:x", "--expert", "a=anthropic:y"]
    assert main([*argv, "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "given twice" in capsys.readouterr().err


def test_cli_names_the_package_a_provider_needs(queries_file: Path, tmp_path, capsys) -> None:
    pytest.importorskip("langchain")
    if __import__("importlib").util.find_spec("langchain_openai") is not None:
        pytest.skip("langchain-openai is installed here")
    argv = ["collect", str(queries_file), "--expert", "a=openai:gpt-4o-mini", "--output", str(tmp_path / "o.jsonl")]
    assert main(argv) == 2
    assert "pip install langchain-openai" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_without_langchain_the_error_names_the_extra(monkeypatch) -> None:
    from zooter_langchain.models import chat_model_from_spec

    monkeypatch.setitem(sys.modules, "langchain.chat_models", None)  # import fails as if not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "zooter-langchain\[agents\]"'):
        chat_model_from_spec("openai:gpt-4o-mini")


def test_an_output_that_is_the_queries_file_is_refused_untouched(queries_file: Path, tmp_path) -> None:
    before = queries_file.read_bytes()
    expert = FakeExpertChatModel(name="a")
    with pytest.raises(ZooterError, match="is the input"):
        collect_responses(queries_file, {"a": expert}, queries_file)
    with pytest.raises(ZooterError, match="is the input"):
        collect_responses(queries_file, {"a": expert}, tmp_path / "o.jsonl", failures_path=queries_file)
    with pytest.raises(ZooterError, match="is the input"):
        collect_responses(queries_file, {"a": expert}, tmp_path / "o.jsonl", failures_path=tmp_path / "o.jsonl")
    assert queries_file.read_bytes() == before and expert.calls == 0


@pytest.mark.parametrize("lines", [2, 1])
def test_a_file_that_is_not_a_responses_file_is_refused_before_it_is_touched(tmp_path, lines: int) -> None:
    other = tmp_path / "other_queries.jsonl"  # given as the output by mistake; its last line lacks a newline
    other.write_text("\n".join(json.dumps({"id": f"q{i}", "query": f"question {i}"}) for i in range(lines)))
    before = other.read_bytes()
    expert = FakeExpertChatModel(name="a")
    with pytest.raises(DataError, match="responses record"):
        collect_responses([("q", "hi")], {"a": expert}, other)
    assert other.read_bytes() == before and expert.calls == 0
