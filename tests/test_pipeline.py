"""The README's path for your own models, end to end on real arena-bench answers:
collect -> score -> train -> route, through the same commands the README shows.

The experts replay the answers real models gave (no provider is reachable offline), and the reward
model is a tiny one built from a config; every stage runs its real code and files.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from test_rewards import build_tiny_reward_model

from zooter.cli import build_parser, main
from zooter.data import RoutingDataset
from zooter_langchain import ReplayChatModel
from zooter_langchain.cli import cmd_collect

ARENA = SHARED_DATA / "arena_bench_v1"
MODELS = ["gpt-3.5-turbo", "claude-2.1", "mistralai/Mixtral-8x7B-Instruct-v0.1"]


def test_collect_score_train_route(tmp_path: Path, tiny_encoder: str, capsys: pytest.CaptureFixture) -> None:
    if not (ARENA / "responses.jsonl.gz").is_file():
        pytest.skip(f"shared data not found at {ARENA}")
    rows = [json.loads(line) for line in (ARENA / "rewards.jsonl").read_text(encoding="utf-8").splitlines()][:12]
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"id": r["id"], "query": r["query"]}) + "\n" for r in rows))
    query_of = {r["id"]: r["query"] for r in rows}
    recorded: dict[str, dict[str, str]] = {m: {} for m in MODELS}
    with gzip.open(ARENA / "responses.jsonl.gz", "rt", encoding="utf-8") as f:
        for answer in map(json.loads, f):
            if answer["id"] in query_of and answer["model"] in recorded:
                recorded[answer["model"]][query_of[answer["id"]]] = answer["response"]

    # zooter collect queries.jsonl --expert NAME=PROVIDER:MODEL ... --output responses.jsonl
    argv = ["collect", str(queries), "--output", str(tmp_path / "responses.jsonl"), "--quiet"]
    for name in MODELS:
        argv += ["--expert", f"{name}=replay:{name}"]

    def replay(spec: str, **kwargs) -> ReplayChatModel:  # stands in for init_chat_model("provider:model")
        name = spec.split(":", 1)[1]
        return ReplayChatModel(name=name, answers=recorded[name])

    assert cmd_collect(build_parser().parse_args(argv), model_factory=replay) == 0
    lines = (tmp_path / "responses.jsonl").read_text().splitlines()
    assert len(lines) == len(rows) * len(MODELS)

    # zooter score responses.jsonl --queries queries.jsonl --reward-model RM --output rewards.jsonl
    reward_model = build_tiny_reward_model(tmp_path / "rm", [*query_of.values(), *recorded["claude-2.1"].values()])
    score = ["score", str(tmp_path / "responses.jsonl"), "--queries", str(queries), "--reward-model", str(reward_model)]
    assert main([*score, "--output", str(tmp_path / "rewards.jsonl"), "--quiet"]) == 0
    data = RoutingDataset.load(tmp_path / "rewards.jsonl")
    assert len(data) == len(rows) and sorted(data.experts) == sorted(MODELS)

    # zooter train rewards.jsonl --output my-router ; zooter route my-router "..."
    train = ["train", str(tmp_path / "rewards.jsonl"), "--encoder", tiny_encoder, "--epochs", "1", "--quiet"]
    assert main([*train, "--output", str(tmp_path / "my-router")]) == 0
    capsys.readouterr()
    assert main(["route", "--json", str(tmp_path / "my-router"), "Write a haiku about autumn"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["expert"] in MODELS and set(decision["probabilities"]) == set(MODELS)
