"""The feedback log: outcomes recorded against decision ids, as dataset rows several writers append to."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage

from zooter._io import JsonlAppender
from zooter.data import RoutingDataset
from zooter.errors import DataError, ExpertMismatchError
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
    log.record("d1", 1.0)
    with open(log.path, "a", encoding="utf-8") as f:  # a writer killed half-way through its row
        f.write('{"id": "d9", "query": "cut sh')
    assert [r["id"] for r in log.rows()] == ["d1"]  # readers skip the unfinished line
    FeedbackLog(log.path).record("d2", 0.0)
    lines = log.path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["d1", "d2"]
    assert [ex.id for ex in RoutingDataset.load(log.path)] == ["d1", "d2"]


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
