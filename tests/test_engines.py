"""The heavy passes on Ray Data give what the local engine gives: the same rows, the same numbers.

One local Ray (2 CPUs) serves the whole module: Ray takes seconds to start, its actors seconds more.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_encoder, keyword_rows

from zooter.cli import main
from zooter.engines import LocalEngine, ModelLoader, make_engine
from zooter.errors import ConfigError, MissingDependencyError
from zooter.model.encoder import QueryEncoder
from zooter.rewards.scorers import RewardModelScorer
from zooter.rewards.scoring import score_responses, scored_pairs_path

MODELS = ["mathbot", "coder", "poet"]


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray with 2 CPUs for the module, shut down after it."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """24 queries (a chat among them), each answered by 3 models, and a tiny reward model."""
    folder = tmp_path_factory.mktemp("pairs")
    rows = keyword_rows(24, seed=3)
    queries = [{"id": r["id"], "query": r["query"], "task": r["task"]} for r in rows]
    queries[5]["query"] = [{"role": "user", "content": "a python question"}, {"role": "user", "content": "regex?"}]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    answers = [
        {"id": r["id"], "model": m, "response": f"{m} {' '.join(r['query'].split()[: 2 + i])}"}
        for r in rows
        for i, m in enumerate(MODELS)
    ]
    (folder / "responses.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers), encoding="utf-8")
    return {
        "queries": folder / "queries.jsonl",
        "responses": folder / "responses.jsonl",
        "reward_model": build_tiny_encoder(folder / "rm", num_labels=1),
    }


def score_args(pairs: dict[str, Path], output: Path, *extra: str) -> list[str]:
    return ["score", str(pairs["responses"]), "--queries", str(pairs["queries"]), "--reward-model",
            str(pairs["reward_model"]), "--output", str(output), "--batch-size", "8", "--quiet", *extra]  # fmt: skip


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_ray_scores_what_the_local_engine_scores_and_resumes_from_its_side_file(
    ray_session, pairs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    local = tmp_path / "local.jsonl"
    assert main(score_args(pairs, local)) == 0
    # a Ray run killed after 3 batches left these lines in its side file; the rerun must skip them
    out = tmp_path / "ray.jsonl"
    written = scored_pairs_path(local).read_text(encoding="utf-8").splitlines()[: 1 + 3 * 8]
    scored_pairs_path(out).write_text("\n".join(written) + "\n", encoding="utf-8")
    capsys.readouterr()

    assert main(score_args(pairs, out, "--engine", "ray", "--workers", "2")) == 0
    assert "scored 48 pairs" in capsys.readouterr().out  # 72 pairs, 24 resumed
    records = [json.loads(line) for line in scored_pairs_path(out).read_text(encoding="utf-8").splitlines()[1:]]
    assert sorted((r["id"], r["model"]) for r in records) == sorted(
        (r["id"], m) for r in read_rows(local) for m in MODELS
    )  # every pair exactly once
    got, expected = read_rows(out), read_rows(local)
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    assert [r["query"] for r in got] == [r["query"] for r in expected]
    for a, b in zip(got, expected):
        assert list(a["rewards"]) == list(b["rewards"]) == MODELS
        torch.testing.assert_close(list(a["rewards"].values()), list(b["rewards"].values()), rtol=1e-5, atol=1e-5)


def test_zooter_train_on_ray_builds_the_bank_the_local_engine_builds(
    ray_session, tiny_encoder: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from safetensors.torch import load_file

    from zooter.model.router import ZooterRouter

    rows = keyword_rows(60, seed=7)
    rows[3]["query"] = [{"role": "user", "content": "my regex"}, {"role": "assistant", "content": "ok"}]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    args = ["train", str(data), "--encoder", tiny_encoder, "--max-length", "32", "--neighbours", "5,10",
            "--device", "cpu", "--quiet"]  # fmt: skip
    assert main([*args, "--output", str(tmp_path / "local")]) == 0
    assert main([*args, "--output", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 0
    local, ray = (load_file(tmp_path / name / "neighbours.safetensors") for name in ("local", "ray"))
    assert local.keys() == ray.keys()
    for key in local:
        torch.testing.assert_close(ray[key], local[key], rtol=1e-3, atol=1e-3)
    queries = [r["query"] for r in keyword_rows(30, seed=8)]
    routers = [ZooterRouter.from_pretrained(tmp_path / name) for name in ("local", "ray")]
    assert [d.expert for d in routers[1].route(queries)] == [d.expert for d in routers[0].route(queries)]


def test_embedding_on_ray_needs_a_loader(ray_session, tiny_encoder: str) -> None:
    encoder = QueryEncoder.load(tiny_encoder, max_length=32, device="cpu")
    with pytest.raises(ConfigError, match="loader"):
        make_engine("ray").embed_queries(encoder, ["q"])


def test_the_local_engine_needs_no_ray_and_refuses_ray_settings() -> None:
    engine = make_engine("local")
    assert isinstance(engine, LocalEngine)
    with pytest.raises(ConfigError, match="workers only apply to engine 'ray'"):
        make_engine("local", workers=2)
    with pytest.raises(ConfigError, match="engine must be one of"):
        make_engine("spark")
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        make_engine("ray", workers=0)


def test_a_loaded_scorer_is_refused_by_ray_with_what_to_pass(pairs: dict[str, Path], tmp_path: Path) -> None:
    scorer = RewardModelScorer.from_pretrained(pairs["reward_model"], device="cpu")
    with pytest.raises(ConfigError, match=r"RewardModelScorer.loader"):
        score_responses(pairs["responses"], pairs["queries"], scorer, tmp_path / "out.jsonl", engine=make_engine("ray"))


def test_a_loader_scores_as_the_loaded_scorer_on_the_local_engine(pairs: dict[str, Path], tmp_path: Path) -> None:
    loader = RewardModelScorer.loader(pairs["reward_model"], batch_size=4)
    assert isinstance(loader, ModelLoader) and loader.name == str(pairs["reward_model"])
    by_loader = score_responses(pairs["responses"], pairs["queries"], loader, tmp_path / "a.jsonl")
    scorer = RewardModelScorer.from_pretrained(pairs["reward_model"], device="cpu", batch_size=4)
    by_scorer = score_responses(pairs["responses"], pairs["queries"], scorer, tmp_path / "b.jsonl")
    assert by_loader.scorer == by_scorer.scorer and by_loader.rows == by_scorer.rows == 24
    assert read_rows(tmp_path / "a.jsonl") == read_rows(tmp_path / "b.jsonl")


def test_engine_ray_without_the_extra_says_what_to_install(
    pairs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    assert main(score_args(pairs, tmp_path / "out.jsonl", "--engine", "ray")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'zooter-langchain[ray]'" in err
    assert not (tmp_path / "out.jsonl.scored.jsonl").exists()
    with pytest.raises(MissingDependencyError, match=r"zooter-langchain\[ray\]"):
        make_engine("ray").embed_queries(None, ["q"], loader=ModelLoader(QueryEncoder.load))  # type: ignore[arg-type]


def test_cli_refuses_ray_options_without_engine_ray(pairs: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert main(score_args(pairs, tmp_path / "out.jsonl", "--workers", "2")) == 2
    assert "need --engine ray" in capsys.readouterr().err


def test_zooter_update_on_ray_embeds_the_new_queries_as_the_local_engine(
    ray_session, tiny_encoder: str, tmp_path: Path, write_jsonl, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from zooter.engines.ray import RayEngine
    from zooter.model.router import ZooterRouter

    on_ray: list[int] = []
    real = RayEngine.embed_queries
    monkeypatch.setattr(
        RayEngine, "embed_queries", lambda self, enc, q, **kw: on_ray.append(len(q)) or real(self, enc, q, **kw)
    )

    data = write_jsonl(keyword_rows(40, seed=7))
    assert main(["train", str(data), "--output", str(tmp_path / "router"), "--encoder", tiny_encoder,
                 "--max-length", "32", "--neighbours", "5", "--device", "cpu", "--quiet"]) == 0  # fmt: skip
    new = [{**row, "id": f"new{i}"} for i, row in enumerate(keyword_rows(20, seed=9))]
    new[2]["query"] = [{"role": "user", "content": "my regex"}, {"role": "assistant", "content": "ok"}]
    rows = write_jsonl(new)
    args = ["update", str(tmp_path / "router"), str(rows), "--quiet"]
    assert main([*args, "--output", str(tmp_path / "local")]) == 0
    assert main([*args, "--output", str(tmp_path / "ray"), "--engine", "ray", "--workers", "2"]) == 0
    assert on_ray == [20]  # only the new queries, embedded on the Ray workers
    # this process never read its own encoder: the updated folder links the router's weights file
    weights = [os.stat(tmp_path / name / "model.safetensors") for name in ("router", "ray", "local")]
    assert os.path.samestat(weights[0], weights[1]) and not os.path.samestat(weights[0], weights[2])
    local, ray = (load_file(tmp_path / name / "neighbours.safetensors") for name in ("local", "ray"))
    assert local["embeddings"].shape[0] == 60
    for key in local:
        torch.testing.assert_close(ray[key], local[key], rtol=1e-3, atol=1e-3)
    queries = [r["query"] for r in keyword_rows(30, seed=8)]
    routers = [ZooterRouter.from_pretrained(tmp_path / name) for name in ("local", "ray")]
    assert [d.expert for d in routers[1].route(queries)] == [d.expert for d in routers[0].route(queries)]
