"""Tag-based label enhancement: the mixing formula, no leaks from held-out rows, taggers, hard labels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import keyword_rows

from zooter.cli import main as cli_main
from zooter.data import RoutingDataset, RoutingExample
from zooter.errors import ConfigError
from zooter.labels.tagging import (
    ClusterTagger,
    DataTagger,
    TagEnhancer,
    default_cluster_count,
    enhancer_from_config,
    kmeans,
)
from zooter.labels.targets import LabelConfig, hard_targets, make_targets
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, train_router

LN3, LN4, LN9 = math.log(3), math.log(4), math.log(9)


def dataset(rows: list[dict]) -> RoutingDataset:
    return RoutingDataset([RoutingExample.from_dict(r) for r in rows])


def row(rid: str, a: float, b: float, tags: list[str], task: str | None = None) -> dict:
    out = {"id": rid, "query": f"query {rid}", "rewards": {"a": a, "b": b}, "tags": tags}
    if task is not None:
        out["task"] = task
    return out


def tiny_config(encoder: str, **changes: object) -> TrainingConfig:
    settings = {"encoder": encoder, "epochs": 1, "lr": 3e-3, "head_lr": 3e-3, "max_length": 32, "device": "cpu"}
    return TrainingConfig(**{**settings, "show_progress": False, **changes})


# Rewards chosen so the softmax (tau = 1) is exact: softmax(ln k, 0) = (k/(k+1), 1/(k+1)).
#   q1 (ln3, 0) -> s = (0.75, 0.25)  tags {a}
#   q2 (ln4, 0) -> s = (0.80, 0.20)  tags {a, b}
#   q3 (0, ln3) -> s = (0.25, 0.75)  tags {b}
#   q4 (ln9, 0) -> s = (0.90, 0.10)  no tags
SMALL = [
    row("q1", LN3, 0.0, ["a"]),
    row("q2", LN4, 0.0, ["a", "b"]),
    row("q3", 0.0, LN3, ["b"]),
    row("q4", LN9, 0.0, []),
]


def test_tag_averages_and_mixed_targets_match_the_hand_computation():
    data = dataset(SMALL)
    enhancer = TagEnhancer(DataTagger(), beta=0.3)
    targets = make_targets(data, LabelConfig(), enhancer)
    # s_a = mean(s(q1), s(q2)) = (0.775, 0.225); s_b = mean(s(q2), s(q3)) = (0.525, 0.475)
    assert enhancer.tag_targets["a"].tolist() == pytest.approx([0.775, 0.225])
    assert enhancer.tag_targets["b"].tolist() == pytest.approx([0.525, 0.475])
    expected = [
        [0.3 * 0.75 + 0.7 * 0.775, 0.3 * 0.25 + 0.7 * 0.225],  # (0.7675, 0.2325)
        [0.3 * 0.80 + 0.7 * 0.650, 0.3 * 0.20 + 0.7 * 0.350],  # mean of s_a, s_b = (0.65, 0.35)
        [0.3 * 0.25 + 0.7 * 0.525, 0.3 * 0.75 + 0.7 * 0.475],  # (0.4425, 0.5575)
        [0.90, 0.10],  # no tags: keeps s(q)
    ]
    assert expected[0] == pytest.approx([0.7675, 0.2325]) and expected[2] == pytest.approx([0.4425, 0.5575])
    for got, want in zip(targets.tolist(), expected, strict=True):
        assert got == pytest.approx(want, abs=1e-6)


def test_beta_one_changes_nothing_and_beta_zero_is_the_tag_average():
    data = dataset(SMALL)
    plain = make_targets(data)
    assert torch.allclose(make_targets(data, enhancer=TagEnhancer(DataTagger(), beta=1.0)), plain)
    only_tags = make_targets(data, enhancer=TagEnhancer(DataTagger(), beta=0.0))
    assert only_tags[0].tolist() == pytest.approx([0.775, 0.225])  # q1 has only tag a
    assert only_tags[1].tolist() == pytest.approx([0.65, 0.35])  # q2: mean over its tags a and b
    assert only_tags[3].tolist() == pytest.approx(plain[3].tolist())


def test_rows_with_unseen_tags_keep_their_own_target():
    enhancer = TagEnhancer(DataTagger(), beta=0.3)
    train = dataset(SMALL[:3])
    targets = make_targets(train)
    enhancer.fit(train, targets)
    other = dataset([row("new", LN3, 0.0, ["never-seen"]), row("mix", LN3, 0.0, ["never-seen", "b"])])
    out = enhancer.transform(other, make_targets(other))
    assert out[0].tolist() == pytest.approx([0.75, 0.25])
    assert out[1].tolist() == pytest.approx([0.3 * 0.75 + 0.7 * 0.525, 0.3 * 0.25 + 0.7 * 0.475])


def test_an_expert_without_a_reward_stays_at_zero_after_mixing():
    rows = [
        {"id": "x", "query": "x", "rewards": {"a": 0.0, "b": 0.0, "c": 0.0}, "tags": ["t"]},
        {"id": "y", "query": "y", "rewards": {"a": 0.0, "b": LN3}, "tags": ["t"]},
    ]
    data = dataset(rows)
    targets = make_targets(data, enhancer=TagEnhancer(DataTagger(), beta=0.5))
    # s(x) = (1/3, 1/3, 1/3), s(y) = (1/4, 3/4, 0); s_t = (7/24, 13/24, 1/6).
    # y lacks c: the tag part renormalised over a, b is (7/20, 13/20).
    assert targets[1].tolist() == pytest.approx([0.5 * 0.25 + 0.5 * 7 / 20, 0.5 * 0.75 + 0.5 * 13 / 20, 0.0])
    assert targets[0].tolist() == pytest.approx([0.5 / 3 + 0.5 * 7 / 24, 0.5 / 3 + 0.5 * 13 / 24, 0.5 / 3 + 0.5 / 6])
    assert targets.sum(dim=1).tolist() == pytest.approx([1.0, 1.0])


def test_data_tagger_reads_tags_task_or_both():
    rows = [RoutingExample("q", "x", {"a": 1.0, "b": 0.0}, tags=("code", "code", "debug"), task="humaneval")]
    assert DataTagger().tag(rows) == [("code", "debug")]
    assert DataTagger(use_tags=False, use_task=True).tag(rows) == [("task:humaneval",)]
    assert DataTagger(use_task=True).tag(rows) == [("code", "debug", "task:humaneval")]
    with pytest.raises(ConfigError):
        DataTagger(use_tags=False)


# -- no leaks ---------------------------------------------------------------------------------------


class RecordingTagger(DataTagger):
    """A data tagger that remembers which rows it was fitted on."""

    def __init__(self) -> None:
        super().__init__(use_task=True)
        self.fitted_ids: list[str] = []

    def fit(self, rows):  # type: ignore[override]
        self.fitted_ids = [r.id for r in rows]
        return self


def leak_rows(validation_reward: float) -> tuple[RoutingDataset, RoutingDataset]:
    train = dataset([r for r in keyword_rows(24, seed=3)])
    # the validation rows share every task tag with training, with wildly different rewards
    validation = dataset(
        [
            {**r, "id": f"v{i}", "rewards": {e: validation_reward * (j + 1) for j, e in enumerate(r["rewards"])}}
            for i, r in enumerate(keyword_rows(9, seed=4))
        ]
    )
    return train, validation


@pytest.mark.parametrize("validation_reward", [0.0, 50.0])
def test_tag_averages_come_from_the_training_rows_only(tiny_encoder: str, validation_reward: float):
    train, validation = leak_rows(validation_reward)
    tagger = RecordingTagger()
    enhancer = TagEnhancer(tagger, beta=0.3)
    train_router(train, tiny_config(tiny_encoder), validation=validation, enhancer=enhancer)
    assert tagger.fitted_ids == [r.id for r in train]
    reference = TagEnhancer(DataTagger(use_task=True), beta=0.3)
    make_targets(train, LabelConfig(), reference)
    assert set(enhancer.tag_targets) == {"task:mathbot", "task:coder", "task:poet"}
    for tag, value in reference.tag_targets.items():  # the same whatever the validation rewards are
        assert torch.allclose(enhancer.tag_targets[tag], value)


def test_a_held_out_fraction_is_not_tagged_either(tiny_encoder: str):
    data = dataset(keyword_rows(40, seed=5))
    config = tiny_config(tiny_encoder, validation_fraction=0.25, labels=LabelConfig(tags="task", beta=0.3))
    router = train_router(data, config)
    enhancer = router.config.labels["enhancer"]
    assert enhancer["rows_fitted"] == router.config.training_summary["train_rows"] == 30
    assert router.config.training_summary["validation_rows"] == 10


def test_an_enhancer_and_a_tag_setting_together_are_refused(tiny_encoder: str):
    config = tiny_config(tiny_encoder, labels=LabelConfig(tags="data"))
    with pytest.raises(ConfigError, match="not both"):
        train_router(dataset(SMALL), config, enhancer=TagEnhancer(DataTagger()))


# -- label config and hard labels -------------------------------------------------------------------


def test_label_config_validates_tags_and_beta():
    assert LabelConfig(tags="Cluster:16").tags == "cluster:16"
    assert not LabelConfig().enhanced  # the default trains on plain soft labels
    assert LabelConfig(tags="data").enhanced and not LabelConfig(tags="data", beta=1.0).enhanced
    for bad in ("clusters", "cluster:1", "cluster:x", "instag"):
        with pytest.raises(ConfigError, match="tags"):
            LabelConfig(tags=bad)
    with pytest.raises(ConfigError, match="beta"):
        LabelConfig(beta=1.5)
    assert enhancer_from_config(LabelConfig(tags="none", beta=0.0)) is None


def test_hard_labels_are_one_hot_on_the_best_and_split_ties():
    nan = float("nan")
    rewards = torch.tensor([[1.0, 5.0, 2.0], [3.0, 3.0, 1.0], [nan, 0.0, -1.0], [9.0, nan, 9.0]])
    expected = [[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]
    assert hard_targets(rewards).tolist() == expected
    with pytest.raises(ValueError):
        hard_targets(torch.tensor([[nan, nan]]))
    targets = make_targets(dataset(SMALL), LabelConfig(hard=True))
    assert targets.tolist() == [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]


def test_hard_labels_train_and_are_recorded_and_an_untagged_router_has_no_tagger(tiny_encoder: str, tmp_path: Path):
    router = train_router(dataset(keyword_rows(24, seed=1)), tiny_config(tiny_encoder, labels=LabelConfig(hard=True)))
    assert all(math.isfinite(e["train_loss"]) for e in router.training_log if "train_loss" in e)
    saved = router.save_pretrained(tmp_path / "plain")
    assert json.loads((saved / "config.json").read_text())["labels"]["hard"] is True
    assert "Hard labels" in (saved / "README.md").read_text()
    assert not (saved / "tagger.safetensors").exists()
    assert ZooterRouter.from_pretrained(saved, device="cpu").tagger is None


# -- the cluster tagger -----------------------------------------------------------------------------


def test_kmeans_finds_separated_blobs_and_is_seeded():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.3 * torch.randn(20, 2, generator=generator) for c in centres])
    centroids, inertia = kmeans(points, 3, seed=0)
    found = sorted(tuple(round(v) for v in c) for c in centroids.tolist())
    assert found == [(0, 0), (0, 10), (10, 0)]
    again, inertia_again = kmeans(points, 3, seed=0)
    assert torch.equal(centroids, again) and inertia == inertia_again
    with pytest.raises(ConfigError):
        kmeans(points, 61)


def test_the_tagger_embeds_queries_as_a_fresh_router_does(tiny_encoder: str):
    """ClusterTagger's bare QueryEncoder and the router share one embedding path, so their vectors agree."""
    from zooter.model.encoder import QueryEncoder

    queries = [row["query"] for row in keyword_rows(12, seed=3)]
    bare = QueryEncoder.load(tiny_encoder, max_length=32, device="cpu")
    router = ZooterRouter.from_encoder(tiny_encoder, experts=["a", "b"], max_length=32, device="cpu")
    assert isinstance(router, QueryEncoder) and bare.max_length == router.max_length == 32
    torch.testing.assert_close(bare.embed_queries(queries, batch_size=5), router.embed_queries(queries, batch_size=5))


def test_default_cluster_count_grows_with_the_data():
    assert default_cluster_count(210) == 10  # round(sqrt(105))
    assert default_cluster_count(4) == 2
    assert default_cluster_count(1_000_000) == 64


def test_cluster_tagger_is_deterministic_with_a_seed(tiny_encoder: str):
    rows = dataset(keyword_rows(30, seed=2))
    first = ClusterTagger(4, seed=7, encoder=tiny_encoder, max_length=32).fit(rows)
    second = ClusterTagger(4, seed=7, encoder=tiny_encoder, max_length=32).fit(rows)
    assert torch.equal(first.centroids, second.centroids)
    tags = first.tag(rows)
    assert tags == second.tag(rows)
    assert all(len(t) == 1 and t[0].startswith("cluster-") for t in tags)
    assert len(set(tags)) > 1
    top2 = ClusterTagger(4, top_m=2, seed=7, encoder=tiny_encoder, max_length=32).fit(rows).tag(rows)
    assert [t[0] for t in top2] == [t[0] for t in tags] and all(len(set(t)) == 2 for t in top2)
    with pytest.raises(ConfigError, match="clusters"):
        ClusterTagger(31, encoder=tiny_encoder).fit(rows)


def test_cluster_tags_are_saved_with_the_router_and_reproduce_the_training_tags(tiny_encoder: str, tmp_path: Path):
    train = dataset(keyword_rows(30, seed=2))
    config = tiny_config(tiny_encoder, seed=3, labels=LabelConfig(tags="cluster:3", beta=0.3))
    router = train_router(train, config)
    saved = router.save_pretrained(tmp_path / "router")
    assert (saved / "tagger.safetensors").is_file()
    settings = json.loads((saved / "config.json").read_text())["labels"]
    assert settings["tags"] == "cluster:3" and settings["enhancer"]["tagger"]["k"] == 3

    loaded = ZooterRouter.from_pretrained(saved, device="cpu")
    assert isinstance(loaded.tagger, ClusterTagger)
    assert torch.equal(loaded.tagger.centroids, router.tagger.centroids)
    # the tags used in training: the same seed and encoder, fitted anew
    fresh = ClusterTagger(3, seed=3, encoder=tiny_encoder, max_length=32).fit(train)
    assert loaded.tagger.tag(train) == fresh.tag(train)
    # and the targets built from them
    enhancer = TagEnhancer(loaded.tagger, beta=0.3)
    expected = make_targets(train, LabelConfig(), TagEnhancer(fresh, beta=0.3))
    assert torch.allclose(enhancer.fit(train, make_targets(train)).transform(train, make_targets(train)), expected)
    assert "k-means cluster tags (k=3" in (saved / "README.md").read_text()


def test_a_missing_centroid_file_warns_but_the_router_still_routes(tiny_encoder: str, tmp_path: Path, caplog):
    router = train_router(
        dataset(keyword_rows(24, seed=2)), tiny_config(tiny_encoder, labels=LabelConfig(tags="cluster:2"))
    )
    saved = router.save_pretrained(tmp_path / "router")
    (saved / "tagger.safetensors").unlink()
    loaded = ZooterRouter.from_pretrained(saved, device="cpu")
    assert loaded.tagger is None
    assert "tagger.safetensors is missing" in caplog.text
    assert len(loaded.route(["python regex"])) == 1


# -- the CLI ----------------------------------------------------------------------------------------


def test_cli_tag_options_land_in_config_and_card(tiny_encoder: str, write_jsonl, tmp_path: Path):
    data = write_jsonl(keyword_rows(24, seed=6))
    out = tmp_path / "router"
    args = ["train", str(data), "--output", str(out), "--encoder", tiny_encoder, "--epochs", "1"]
    args += ["--max-length", "32", "--device", "cpu", "--quiet", "--tags", "cluster:3", "--beta", "0.1"]
    assert cli_main([*args, "--hard-labels"]) == 0
    labels = json.loads((out / "config.json").read_text())["labels"]
    assert (labels["tags"], labels["beta"], labels["hard"]) == ("cluster:3", 0.1, True)
    assert labels["enhancer"]["beta"] == 0.1 and (out / "tagger.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert "Hard labels" in card and "s* = 0.1·s(q)" in card


def test_cli_refuses_beta_without_tags(tiny_encoder: str, write_jsonl, tmp_path: Path, capsys):
    data = write_jsonl(keyword_rows(6, seed=6))
    code = cli_main(["train", str(data), "--output", str(tmp_path / "r"), "--encoder", tiny_encoder, "--beta", "0.3"])
    assert code == 2
    assert "--beta" in capsys.readouterr().err
    assert cli_main(["train", str(data), "--output", str(tmp_path / "r"), "--tags", "clusters"]) == 2
    assert "tags" in capsys.readouterr().err
