"""The neighbour bank's index: exact or faiss ANN, chosen by size, saved tied to its bank; calibration on a sample."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import keyword_rows, record_file

from zooter.cli import main
from zooter.data import RoutingDataset, RoutingExample
from zooter.decide.policy import calibrate_decision, decide
from zooter.errors import MissingDependencyError, ZooterError
from zooter.model import index as index_module
from zooter.model.folder import FolderFiles
from zooter.model.index import INDEX_NAME, ExactIndex, FaissIndex, build_index
from zooter.model.neighbours import NeighbourBank, NeighbourSettings
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, train_router

pytest.importorskip("faiss")  # the test extra installs it; an ANN index needs it

EXPERTS = ["a", "b", "c", "d"]


def clustered(rows: int, *, seed: int = 0, dim: int = 48, clusters: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectors around ``clusters`` topics, and rewards of 4 experts: each topic has its best, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(clusters, dim, generator=generator), dim=-1)
    quality = torch.rand(clusters, 4, generator=generator)
    topic = torch.randint(0, clusters, (rows,), generator=generator)
    vectors = centres[topic] + 0.08 * torch.randn(rows, dim, generator=generator)
    rewards = (quality[topic] + 0.3 * torch.randn(rows, 4, generator=generator)).clamp(0, 1)
    return vectors, rewards


def clustered_bank(rows: int = 4000, *, seed: int = 0) -> NeighbourBank:
    vectors, rewards = clustered(rows, seed=seed)
    return NeighbourBank(vectors, rewards, torch.softmax(rewards / 0.1, dim=1), k=50)


def dataset(rows: list[dict]) -> RoutingDataset:
    return RoutingDataset([RoutingExample.from_dict(r) for r in rows])


def neighbours_config(encoder: str, **changes: object) -> TrainingConfig:
    settings = {"encoder": encoder, "max_length": 32, "device": "cpu", "show_progress": False, "neighbours": [5, 10]}
    return TrainingConfig(**{**settings, **changes})


@pytest.fixture
def no_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    """faiss cannot be imported, as without the ``ann`` extra."""
    monkeypatch.setitem(sys.modules, "faiss", None)


def test_ivf_search_scans_a_floor_of_rows_per_neighbour() -> None:
    """Bank rows find their own near-copies in their own list: tuning alone would stop too early."""
    vectors, _ = clustered(4000)
    index = FaissIndex.build(torch.nn.functional.normalize(vectors, dim=-1), factory="IVF64,Flat", k=20)
    per_list = 4000 / 64
    assert index.search_params["nprobe"] * per_list >= index_module.CANDIDATES_PER_NEIGHBOUR * 20
    assert index.search_params["nprobe"] >= index_module.MIN_NPROBE
    assert all(t["nprobe"] >= index.search_params["nprobe"] for t in index.record["tried"])
    # a user may search more thoroughly than tuned: every list probed is exact search
    index.set_search(nprobe=64)
    queries = torch.nn.functional.normalize(clustered(4100)[0][4000:], dim=-1)
    _, found = index.search(queries, 20)
    _, truth = ExactIndex(torch.nn.functional.normalize(vectors, dim=-1)).search(queries, 20)
    assert index.search_params == {"nprobe": 64} and torch.equal(found.sort(1).values, truth.sort(1).values)


def test_tuning_stops_where_recall_stops_rising() -> None:
    """An 8-bit index cannot tell near-tied rows apart: probing more lists buys no recall, only time."""
    vectors, _ = clustered(12000)
    unit = torch.nn.functional.normalize(vectors, dim=-1)
    # 4-bit codes on 48 dimensions: recall@20 stays below the target whatever nprobe
    index = FaissIndex.build(unit, factory="IVF256,SQ4", k=20, target_recall=0.999)
    tried = index.record["tried"]
    assert tried[-1].get("plateau") and tried[-1]["nprobe"] < 256
    assert index.search_params["nprobe"] == tried[-2]["nprobe"]
    assert index.record["recall"] == tried[-2]["recall"] < 0.999


def test_ann_decisions_agree_with_exact_search_on_clustered_vectors() -> None:
    exact = clustered_bank()
    ann = clustered_bank().build_index("ann")
    assert isinstance(ann.index, FaissIndex)
    record = ann.index.settings()
    assert record["factory"].startswith("IVF") and record["recall"] >= 0.99 and record["recall_at"] == 50
    held_out = exact.leave_one_out()
    experts = EXPERTS
    rule = calibrate_decision(held_out.scores, exact.rewards, experts, min_z=0.0)
    queries = clustered(5000)[0][4000:]  # new rows from the bank's topics
    exact_choice = decide(exact.estimate(queries).scores, experts, rule)
    ann_choice = decide(ann.estimate(queries).scores, experts, rule)
    agreement = sum(a == b for a, b in zip(exact_choice, ann_choice)) / len(exact_choice)
    assert agreement >= 0.99
    # leave-one-out through the index never returns the row left out
    rows = torch.arange(0, 4000, 7)
    _, found = ann.search(ann.embeddings[rows], leave_out=rows)
    assert not (found == rows.unsqueeze(1)).any()


def test_auto_picks_exact_for_small_banks_and_ann_for_large(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    vectors = clustered_bank(3000).embeddings
    with caplog.at_level(logging.INFO, logger="zooter.model.index"):
        assert isinstance(build_index(vectors, "auto"), ExactIndex)
    assert "exact search over 3000 rows" in caplog.text
    monkeypatch.setattr(index_module, "ANN_MIN_ROWS", 2000)
    assert isinstance(build_index(vectors, "auto"), FaissIndex)
    assert isinstance(build_index(vectors, "exact"), ExactIndex)


def test_auto_without_faiss_searches_exactly_and_says_so(
    monkeypatch: pytest.MonkeyPatch, no_faiss: None, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(index_module, "ANN_MIN_ROWS", 2000)
    with caplog.at_level(logging.WARNING, logger="zooter.model.index"):
        assert isinstance(build_index(clustered_bank(3000).embeddings, "auto"), ExactIndex)
    assert "faiss is not installed" in caplog.text and "zooter-langchain[ann]" in caplog.text
    with pytest.raises(MissingDependencyError, match=r"zooter-langchain\[ann\]"):
        build_index(clustered_bank(3000).embeddings, "ann")


def test_train_index_ann_without_the_extra_fails_before_training(
    tiny_encoder: str, write_jsonl, tmp_path: Path, no_faiss: None, capsys: pytest.CaptureFixture
) -> None:
    data = write_jsonl(keyword_rows(60))
    out = tmp_path / "router"
    code = main(["train", str(data), "--output", str(out), "--encoder", tiny_encoder, "--index", "ann", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "zooter-langchain[ann]" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_index_is_saved_with_the_router_and_rebuilt_when_missing(
    tiny_encoder: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = dataset(keyword_rows(400))
    router = train_router(data, neighbours_config(tiny_encoder, index="ann"))
    assert isinstance(router.bank.index, FaissIndex)
    queries = [row["query"] for row in keyword_rows(40, seed=5)]
    expected = [d.expert for d in router.route(queries)]
    folder = router.save_pretrained(tmp_path / "router")
    assert (folder / INDEX_NAME).is_file()
    assert INDEX_NAME in router.config.files
    saved = router.config.neighbours.index
    assert saved["fingerprint"] == router.bank.fingerprint and saved["search"]
    assert saved["recall_at"] == router.bank.k  # tuned again at the kept k after calibrating at the largest

    loaded = ZooterRouter.from_pretrained(folder, device="cpu")
    assert isinstance(loaded.bank.index, FaissIndex)
    assert [d.expert for d in loaded.route(queries)] == expected

    (folder / INDEX_NAME).unlink()
    with caplog.at_level(logging.WARNING):
        rebuilt = ZooterRouter.from_pretrained(folder, device="cpu")
    assert "rebuilding" in caplog.text
    assert isinstance(rebuilt.bank.index, FaissIndex) and len(rebuilt.bank.index) == len(rebuilt.bank)
    assert [d.expert for d in rebuilt.route(queries)] == expected

    (folder / INDEX_NAME).write_bytes(b"not a faiss index")
    record_file(folder, INDEX_NAME)  # listed with its checksum: the index itself is refused
    with pytest.raises(ZooterError, match=f"{INDEX_NAME} is not a readable faiss index"):
        ZooterRouter.from_pretrained(folder, device="cpu")


def test_the_index_factory_chosen_at_training_is_built_saved_and_kept_by_updates(
    tiny_encoder: str, write_jsonl, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = neighbours_config(tiny_encoder, index="ann", index_factory="IVF8,SQ6")
    folder = train_router(dataset(keyword_rows(400)), config).save_pretrained(tmp_path / "router")
    router = ZooterRouter.from_pretrained(folder, device="cpu")
    assert router.bank.index.factory == "IVF8,SQ6" == router.config.neighbours.index["factory"]
    # a bank grown by more than a tenth gets a new index, of the same factory
    more = renamed(keyword_rows(60, seed=12), "more")
    assert main(["update", str(folder), str(write_jsonl(more)), "--quiet"]) == 0
    router = ZooterRouter.from_pretrained(folder, device="cpu")
    assert len(router.bank.index) == 460 and router.bank.index.factory == "IVF8,SQ6"

    with pytest.raises(ZooterError, match="'IVF8,Nonsense' is not a faiss index_factory string"):
        train_router(
            dataset(keyword_rows(400)), neighbours_config(tiny_encoder, index="ann", index_factory="IVF8,Nonsense")
        )
    with pytest.raises(ValueError, match="index 'exact' builds none"):
        neighbours_config(tiny_encoder, index="exact", index_factory="IVF8,SQ6")
    data = write_jsonl(keyword_rows(60))
    assert main(["train", str(data), "--output", str(tmp_path / "bad"), "--encoder", tiny_encoder,
                 "--index-factory", "IVF8,Nonsense", "--index", "ann", "--quiet"]) == 2  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' own loading bar
    assert error.startswith("zooter train: error:") and "could not parse code description Nonsense" in error
    assert not (tmp_path / "bad").exists()


def load_bank(folder: Path, settings: NeighbourSettings) -> NeighbourBank:
    """The bank saved in ``folder`` (bank files only: read unchecked, as in a folder from before checksums)."""
    with FolderFiles.open(folder) as files:
        return NeighbourBank.load(files, settings, experts=EXPERTS, dimension=None)


def test_an_index_that_does_not_match_its_bank_is_refused(tmp_path: Path) -> None:
    bank = clustered_bank(3000).build_index("ann")
    other = clustered_bank(3000, seed=7).build_index("ann")
    for name, b in (("bank", bank), ("other", other)):
        (tmp_path / name).mkdir()
        b.save(tmp_path / name, experts=EXPERTS)
    settings = bank.settings()
    assert load_bank(tmp_path / "bank", settings).index.holds(bank.embeddings)

    # another bank's index file beside this bank
    shutil.copy(tmp_path / "other" / INDEX_NAME, tmp_path / "bank" / INDEX_NAME)
    with pytest.raises(ZooterError, match="does not index"):
        load_bank(tmp_path / "bank", settings)
    # a bank file other than the one the index was recorded for
    with pytest.raises(ZooterError, match="fingerprint"):
        load_bank(tmp_path / "other", settings)


def test_calibration_sample_is_bounded_stratified_and_reported(tiny_encoder: str) -> None:
    data = dataset(keyword_rows(300))
    router = train_router(data, neighbours_config(tiny_encoder, calibration_rows=90))
    calibration = router.decision.calibration
    assert calibration["sample"] == {"rows": 90, "of": 300, "by": "task", "seed": 0}
    assert calibration["rows"] == 90 and calibration["standard_error"] >= 0
    sample = data.take(data.sample(90))
    assert sorted(sample.tasks) == sorted(["mathbot", "coder", "poet"] * 30)  # each task keeps its third

    everything = train_router(data, neighbours_config(tiny_encoder))
    assert everything.decision.calibration["sample"]["by"] == "all rows"
    assert everything.decision.calibration["rows"] == 300


def test_a_bank_that_grows_keeps_its_kind_of_index() -> None:
    bank = clustered_bank(3000).build_index("ann")
    vectors, rewards = clustered(3100)
    grown = bank.with_expert(0.0).with_rows(
        vectors[3000:], torch.cat([rewards[3000:], torch.zeros(100, 1)], 1), (torch.full((100, 5), 0.2))
    )
    assert isinstance(grown.index, FaissIndex) and len(grown.index) == 3100
    assert grown.index.holds(grown.embeddings)
    _, found = grown.search(grown.embeddings[3000:])
    assert (found[:, 0] >= 3000).float().mean() > 0.9  # the new rows are found where they are
    exact = clustered_bank(3000).with_rows(vectors[3000:], rewards[3000:], torch.full((100, 4), 0.25))
    assert isinstance(exact.index, ExactIndex) and len(exact.index) == 3100


def renamed(rows: list[dict], prefix: str) -> list[dict]:
    return [{**row, "id": f"{prefix}{i}"} for i, row in enumerate(rows)]


def test_update_keeps_the_ann_index_tied_to_the_updated_bank(tiny_encoder: str, write_jsonl, tmp_path: Path) -> None:
    config = neighbours_config(tiny_encoder, index="ann", calibration_rows=150)
    folder = train_router(dataset(keyword_rows(400)), config).save_pretrained(tmp_path / "router")
    trained = ZooterRouter.from_pretrained(folder, device="cpu")
    built = trained.config.neighbours.index["build_seconds"]

    # 30 new queries (under a tenth of the bank): the index grows by them, tuned again
    new = renamed(keyword_rows(30, seed=11), "new")
    assert main(["update", str(folder), str(write_jsonl(new)), "--quiet"]) == 0
    router = ZooterRouter.from_pretrained(folder, device="cpu")
    index = router.bank.index
    assert isinstance(index, FaissIndex) and len(index) == len(router.bank) == 430
    assert router.config.neighbours.index["fingerprint"] == router.bank.fingerprint != trained.bank.fingerprint
    assert router.config.neighbours.index["build_seconds"] == built  # grown, not rebuilt
    assert router.config.neighbours.index["recall_at"] == router.bank.k
    _, found = router.bank.search(router.bank.embeddings[400:], k=1)
    assert (found[:, 0] >= 400).all()  # the new rows are in the index, where they are
    assert router.decision.calibration["sample"] == {"rows": 150, "of": 430, "by": "random", "seed": 0}

    # a bank that grows by more than a tenth gets a new index over all its rows
    more = renamed(keyword_rows(60, seed=12), "more")
    assert main(["update", str(folder), str(write_jsonl(more)), "--index", "ann", "--quiet"]) == 0
    router = ZooterRouter.from_pretrained(folder, device="cpu")
    assert isinstance(router.bank.index, FaissIndex) and len(router.bank.index) == 490
    assert router.config.neighbours.index["fingerprint"] == router.bank.fingerprint
    assert router.bank.index.holds(router.bank.embeddings)

    # --index exact: no index file left behind to mismatch the bank
    assert main(["update", str(folder), str(write_jsonl(renamed(keyword_rows(5, seed=13), "x"))), "--index",
                 "exact", "--quiet"]) == 0  # fmt: skip
    router = ZooterRouter.from_pretrained(folder, device="cpu")
    assert isinstance(router.bank.index, ExactIndex) and router.config.neighbours.index == {"kind": "exact"}
    assert not (folder / INDEX_NAME).exists()


def test_update_index_ann_without_the_extra_fails_before_touching_the_router(
    tiny_encoder: str, write_jsonl, tmp_path: Path, no_faiss: None, capsys: pytest.CaptureFixture
) -> None:
    folder = train_router(dataset(keyword_rows(60)), neighbours_config(tiny_encoder)).save_pretrained(tmp_path / "r")
    before = (folder / "config.json").read_bytes()
    assert main(["update", str(folder), str(write_jsonl(renamed(keyword_rows(5), "n"))), "--index", "ann"]) == 2
    err = capsys.readouterr().err
    assert "zooter-langchain[ann]" in err and len(err.strip().splitlines()) == 1
    assert (folder / "config.json").read_bytes() == before
