"""A router folder is written whole and read whole, or refused in one line naming the file.

Real saves and loads of tiny routers (see conftest.py); the concurrency and kill tests run real
processes on one folder, as the fault trial of issue 20 did.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import KILL_AT_STEP, keyword_rows, record_file

from zooter.errors import ZooterError
from zooter.model.folder import FolderFiles
from zooter.model.neighbours import NEIGHBOURS_NAME, NeighbourBank
from zooter.model.router import ZooterRouter

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests")]))}
EXPERTS = ["mathbot", "coder", "poet"]
QUERIES = ["python regex segfault", "write a haiku about the sea", "an integral and a matrix", "hello"]
OLD = Path(__file__).parent / "data" / "routers_before_checksums"


def neighbour_router(
    encoder: str, experts: list[str] = EXPERTS, *, rows: int = 24, k: int = 3, seed: int = 0
) -> ZooterRouter:
    """A router with a neighbour bank of ``rows`` keyword queries (no training: one encoder pass)."""
    router = ZooterRouter.from_encoder(encoder, experts=experts, max_length=32, device="cpu")
    data = keyword_rows(rows, seed=seed)
    rewards = torch.tensor(  # names the keyword rows lack take the rewards of the column in that place
        [[row["rewards"].get(name, list(row["rewards"].values())[i]) for i, name in enumerate(experts)] for row in data]
    )
    embeddings = router.embed_queries([row["query"] for row in data])
    router.bank = NeighbourBank(embeddings, rewards, torch.softmax(rewards, dim=-1), k=k)
    router.config.neighbours = router.bank.settings()
    return router


@pytest.fixture(scope="module")
def saved(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved neighbour router, copied afresh by :func:`folder`."""
    return neighbour_router(tiny_encoder).save_pretrained(tmp_path_factory.mktemp("saved") / "router")


@pytest.fixture
def folder(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "router"))


def config_of(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def refused(folder: Path, *patterns: str) -> str:
    """Load ``folder``, expect a one-line ZooterError holding every pattern, and return it."""
    with pytest.raises(ZooterError) as caught:
        ZooterRouter.from_pretrained(folder, device="cpu")
    message = str(caught.value)
    assert "\n" not in message, message
    for pattern in patterns:
        assert pattern in message, message
    return message


# -- the folder format -------------------------------------------------------------------------


def test_config_json_lists_every_file_with_its_sha256(folder: Path) -> None:
    config = config_of(folder)
    on_disk = {p.name for p in folder.iterdir()} - {"config.json"}
    assert set(config["files"]) == on_disk
    for name, record in config["files"].items():
        data = (folder / name).read_bytes()
        assert record == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}, name
    shape = {key: config["neighbours"][key] for key in ("k", "temperature", "rows", "dimension", "index")}
    # a small bank is searched exactly
    assert shape == {"k": 3, "temperature": 0.1, "rows": 24, "dimension": 32, "index": {"kind": "exact"}}
    from safetensors import safe_open

    with safe_open(folder / NEIGHBOURS_NAME, "pt") as f:
        assert json.loads(f.metadata()["experts"]) == EXPERTS


def test_a_neighbour_router_saves_no_head_and_a_distilled_one_does(
    folder: Path, tiny_encoder: str, tmp_path: Path
) -> None:
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        names = list(f.keys())
    assert names and not any(name.startswith("head.") for name in names)
    assert all(name.startswith("encoder.") for name in names)
    distilled = ZooterRouter.from_encoder(tiny_encoder, experts=EXPERTS, device="cpu")
    with safe_open(distilled.save_pretrained(tmp_path / "distilled") / "model.safetensors", "pt") as f:
        assert {"head.weight", "head.bias"} <= set(f.keys())


def test_the_model_card_describes_the_method_the_router_was_trained_with(folder: Path, tiny_encoder: str) -> None:
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "nearest to it (the neighbour bank)" in card
    assert "linear head" not in card
    distilled = ZooterRouter.from_encoder(tiny_encoder, experts=EXPERTS, device="cpu")
    card = (distilled.save_pretrained(folder.parent / "distilled") / "README.md").read_text(encoding="utf-8")
    assert "a linear head gives each expert model a probability" in card


def test_a_saved_router_loads_whole_and_routes_the_same(folder: Path, tiny_encoder: str) -> None:
    router = neighbour_router(tiny_encoder)
    loaded = ZooterRouter.from_pretrained(folder, device="cpu")
    assert loaded.experts == EXPERTS
    torch.testing.assert_close(loaded.estimate(QUERIES).expected_rewards, router.estimate(QUERIES).expected_rewards)


def test_an_edited_model_card_is_not_a_reason_to_refuse(folder: Path) -> None:
    (folder / "README.md").write_text("my own notes on this router\n", encoding="utf-8")
    assert ZooterRouter.from_pretrained(folder, device="cpu").experts == EXPERTS


@pytest.mark.parametrize("name", ["model.safetensors", NEIGHBOURS_NAME, "tokenizer.json"])
def test_a_listed_file_missing_or_cut_short_is_refused_by_name(folder: Path, name: str) -> None:
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    refused(folder, f"{name} is not the file this router was saved with")
    (folder / name).unlink()
    refused(folder, f"{name} is missing")


def test_a_file_a_part_of_the_router_adds_is_listed_and_checked_with_no_more_code(
    tiny_encoder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As an ANN index will be: written by the bank's save into the folder, read back through ``files``."""
    real_save, real_load = NeighbourBank.save, NeighbourBank.load.__func__
    read_back = []

    def save_with_an_index(self, folder: Path, *, experts) -> None:
        real_save(self, folder, experts=experts)
        (folder / "neighbours.index").write_bytes(b"an index of %d rows" % len(self))

    def load_with_an_index(cls, files, settings, **kwargs):
        read_back.append(files.read("neighbours.index"))
        return real_load(cls, files, settings, **kwargs)

    monkeypatch.setattr(NeighbourBank, "save", save_with_an_index)
    monkeypatch.setattr(NeighbourBank, "load", classmethod(load_with_an_index))
    folder = neighbour_router(tiny_encoder).save_pretrained(tmp_path / "router")
    record = config_of(folder)["files"]["neighbours.index"]
    assert record["sha256"] == hashlib.sha256(b"an index of 24 rows").hexdigest()
    ZooterRouter.from_pretrained(folder, device="cpu")
    assert read_back == [b"an index of 24 rows"]
    (folder / "neighbours.index").write_bytes(b"an index of 99 rows")
    refused(folder, "neighbours.index is not the file this router was saved with")


@pytest.mark.parametrize("method", ["neighbours", "distill"])
def test_a_folder_written_before_checksums_still_loads(method: str, tmp_path: Path) -> None:
    """Folders written by zooter before this change (tests/data, made by the previous version's save)."""
    expected = json.loads((OLD / "expected.json").read_text(encoding="utf-8"))
    old = shutil.copytree(OLD / method, tmp_path / method)
    assert isinstance(config_of(old)["files"], list)  # the old format: names, no checksums
    router = ZooterRouter.from_pretrained(old, device="cpu")
    estimates = router.estimate(expected["queries"])
    torch.testing.assert_close(estimates.probabilities, torch.tensor(expected[method]["probabilities"]))
    if method == "neighbours":
        torch.testing.assert_close(estimates.expected_rewards, torch.tensor(expected[method]["expected_rewards"]))
    assert [d.expert for d in router.route(expected["queries"])] == expected[method]["experts"]
    assert router.decision is None or router.decision.z == 0.0  # saved before z: the margin alone
    lazy = ZooterRouter.from_pretrained(old, device="cpu", lazy_encoder=True)  # no encoder id recorded
    assert lazy.encoder_id == router.encoder_id
    torch.testing.assert_close(lazy.estimate(expected["queries"]).probabilities, estimates.probabilities)
    resaved = router.save_pretrained(tmp_path / "resaved")  # saved again: the new format, same routing
    assert isinstance(config_of(resaved)["files"], dict)
    assert config_of(resaved)["encoder_id"] == router.encoder_id
    again = ZooterRouter.from_pretrained(resaved, device="cpu").estimate(expected["queries"])
    torch.testing.assert_close(again.probabilities, estimates.probabilities)


# -- a deferred encoder (lazy_encoder=True) ----------------------------------------------------


def test_a_deferred_encoder_is_read_on_first_use_and_routes_as_an_eager_load(folder: Path) -> None:
    eager = ZooterRouter.from_pretrained(folder, device="cpu")
    lazy = ZooterRouter.from_pretrained(folder, device="cpu", lazy_encoder=True)
    assert lazy.encoder_deferred and "encoder" not in dict(lazy.named_children())
    # the id routed feedback is matched on is the one config.json records, known without the weights
    assert lazy.encoder_id == eager.encoder_id == config_of(folder)["encoder_id"]
    assert lazy.encoder_deferred and len(lazy.bank) == len(eager.bank)
    torch.testing.assert_close(lazy.estimate(QUERIES).expected_rewards, eager.estimate(QUERIES).expected_rewards)
    assert not lazy.encoder_deferred
    assert lazy.state_dict().keys() == eager.state_dict().keys() and not lazy.encoder.training
    # read inside routing's inference mode, the weights are still ones to train and hash
    assert not any(p.is_inference() for p in lazy.encoder.parameters())
    with torch.no_grad():
        next(lazy.encoder.parameters()).add_(1.0)
    assert lazy.encoder_id != eager.encoder_id


def test_a_router_saved_before_its_encoder_is_read_links_the_weights_it_was_loaded_from(
    folder: Path, tiny_encoder: str, tmp_path: Path
) -> None:
    weights = (folder / "model.safetensors").read_bytes()
    expected = ZooterRouter.from_pretrained(folder, device="cpu").estimate(QUERIES).expected_rewards
    lazy = ZooterRouter.from_pretrained(folder, device="cpu", lazy_encoder=True)
    linked = lazy.save_pretrained(tmp_path / "linked")
    assert lazy.encoder_deferred  # saving needed neither the weights nor the tokenizer
    assert os.path.samestat(os.stat(linked / "model.safetensors"), os.stat(folder / "model.safetensors"))
    torch.testing.assert_close(
        ZooterRouter.from_pretrained(linked, device="cpu").estimate(QUERIES).expected_rewards, expected
    )

    # another router saved over the folder meanwhile: the file loaded is copied, not the new one linked
    lazy = ZooterRouter.from_pretrained(folder, device="cpu", lazy_encoder=True)
    other = neighbour_router(tiny_encoder)
    with torch.no_grad():
        next(other.encoder.parameters()).add_(1.0)
    other.save_pretrained(folder)
    copied = lazy.save_pretrained(tmp_path / "copied")
    assert (copied / "model.safetensors").read_bytes() == weights
    assert not os.path.samestat(os.stat(copied / "model.safetensors"), os.stat(folder / "model.safetensors"))
    reloaded = ZooterRouter.from_pretrained(copied, device="cpu")
    assert reloaded.encoder_id == lazy.encoder_id != other.encoder_id
    torch.testing.assert_close(reloaded.estimate(QUERIES).expected_rewards, expected)


def test_weights_that_cannot_route_are_refused_when_a_deferred_encoder_is_read(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    name = next(n for n, t in state.items() if t.is_floating_point())
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    record_file(folder, "model.safetensors")
    lazy = ZooterRouter.from_pretrained(folder, device="cpu", lazy_encoder=True)  # the checksum holds
    for _ in range(2):  # still unread after the failure: the next use says the same
        with pytest.raises(ZooterError, match=rf"model.safetensors holds non-finite weights.*{name}"):
            lazy.estimate(QUERIES)
        assert lazy.encoder_deferred
    refused(folder, "model.safetensors holds non-finite weights")  # an eager load refuses it at once


def test_a_router_without_a_bank_reads_its_encoder_at_once(tiny_encoder: str, tmp_path: Path) -> None:
    distilled = ZooterRouter.from_encoder(tiny_encoder, experts=EXPERTS, device="cpu")
    folder = distilled.save_pretrained(tmp_path / "distilled")  # its head is in the encoder's file
    loaded = ZooterRouter.from_pretrained(folder, device="cpu", lazy_encoder=True)
    assert not loaded.encoder_deferred
    torch.testing.assert_close(loaded.predict_proba(QUERIES), distilled.predict_proba(QUERIES))


# -- the bank is checked against config.json ---------------------------------------------------


def write_bank(folder: Path, tensors: dict[str, torch.Tensor], experts: list[str] | None) -> None:
    from safetensors.torch import save_file

    metadata = {"format": "pt"} | ({} if experts is None else {"experts": json.dumps(experts)})
    save_file({n: t.contiguous() for n, t in tensors.items()}, str(folder / NEIGHBOURS_NAME), metadata=metadata)


def bank_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / NEIGHBOURS_NAME)


def another_routers_bank_same_experts_reordered(folder: Path, encoder: str) -> list[str]:
    other = neighbour_router(encoder, ["poet", "mathbot", "coder"]).save_pretrained(folder.parent / "other")
    shutil.copy(other / NEIGHBOURS_NAME, folder / NEIGHBOURS_NAME)
    return ["another router's bank", "'poet', 'mathbot', 'coder'"]


def another_routers_bank_unrelated_experts(folder: Path, encoder: str) -> list[str]:
    other = neighbour_router(encoder, ["gpt", "claude", "llama"]).save_pretrained(folder.parent / "other")
    shutil.copy(other / NEIGHBOURS_NAME, folder / NEIGHBOURS_NAME)
    return ["another router's bank", "'gpt', 'claude', 'llama'"]


def fewer_rows(folder: Path, encoder: str) -> list[str]:
    write_bank(folder, {n: t[:20] for n, t in bank_tensors(folder).items()}, EXPERTS)
    return ["20 rows where config.json's neighbours.rows says 24"]


def another_number_of_experts(folder: Path, encoder: str) -> list[str]:
    tensors = bank_tensors(folder)
    for name in ("rewards", "targets"):
        tensors[name] = torch.cat([tensors[name], tensors[name][:, :1]], dim=1)
    write_bank(folder, tensors, None)  # a bank file without the names of its experts
    return ["4 experts where config.json lists 3"]


def another_embedding_size(folder: Path, encoder: str) -> list[str]:
    tensors = bank_tensors(folder)
    tensors["embeddings"] = tensors["embeddings"][:, :16].contiguous()
    write_bank(folder, tensors, EXPERTS)
    return ["embeddings of length 16 where config.json's neighbours.dimension is 32"]


def nan_in_embeddings(folder: Path, encoder: str) -> list[str]:
    tensors = bank_tensors(folder)
    tensors["embeddings"][3, 0] = float("nan")
    write_bank(folder, tensors, EXPERTS)
    return ["not finite in its embeddings"]


def rewards_as_inf(folder: Path, encoder: str) -> list[str]:
    tensors = bank_tensors(folder)
    tensors["rewards"][0, 1] = float("inf")
    write_bank(folder, tensors, EXPERTS)
    return ["not finite in its rewards"]


@pytest.mark.parametrize(
    "damage",
    [
        another_routers_bank_same_experts_reordered,
        another_routers_bank_unrelated_experts,
        fewer_rows,
        another_number_of_experts,
        another_embedding_size,
        nan_in_embeddings,
        rewards_as_inf,
    ],
)
def test_a_bank_that_does_not_fit_config_json_is_refused_naming_the_file(
    folder: Path, tiny_encoder: str, damage
) -> None:
    patterns = damage(folder, tiny_encoder)
    refused(folder, f"{NEIGHBOURS_NAME} is not the file this router was saved with")
    record_file(folder, NEIGHBOURS_NAME)  # the checksum fixed too: the bank itself is checked
    refused(folder, str(folder / NEIGHBOURS_NAME), *patterns)


def test_a_bank_written_before_checksums_is_checked_too(tmp_path: Path) -> None:
    old = shutil.copytree(OLD / "neighbours", tmp_path / "old")
    write_bank(old, {n: t[:10] for n, t in bank_tensors(old).items()}, None)
    refused(old, str(old / NEIGHBOURS_NAME), "10 rows where config.json's neighbours.rows says 30")


def test_a_bank_header_that_does_not_hold_its_tensors_is_refused_naming_the_file(folder: Path) -> None:
    data = bytearray((folder / NEIGHBOURS_NAME).read_bytes())
    header = int.from_bytes(data[:8], "little")
    (folder / NEIGHBOURS_NAME).write_bytes(bytes(data[: 8 + header + 16]))  # the header, and 16 bytes of data
    record_file(folder, NEIGHBOURS_NAME)
    refused(folder, str(folder / NEIGHBOURS_NAME), "not a readable safetensors file", "do not hold")
    (folder / NEIGHBOURS_NAME).write_bytes((10**9).to_bytes(8, "little") + b"{}")
    record_file(folder, NEIGHBOURS_NAME)
    refused(folder, str(folder / NEIGHBOURS_NAME), "not a readable safetensors file", "header claims")


def test_a_loaded_bank_reads_its_file_copy_on_write_and_outlives_a_save_over_it(
    folder: Path, tiny_encoder: str
) -> None:
    """The bank is mapped from the file it was checked on, not read into memory: writing to the
    loaded bank leaves the file as saved, and a save replacing the folder leaves the loaded router
    routing as it did."""
    loaded = ZooterRouter.from_pretrained(folder, device="cpu")
    before = loaded.estimate(QUERIES).expected_rewards
    on_disk = (folder / NEIGHBOURS_NAME).read_bytes()
    loaded.bank.rewards[0] = 0.5  # in place, as a merge by id writes
    assert (folder / NEIGHBOURS_NAME).read_bytes() == on_disk
    assert ZooterRouter.from_pretrained(folder, device="cpu").bank.rewards[0].tolist() != [0.5] * len(EXPERTS)
    loaded.bank.rewards[0] = ZooterRouter.from_pretrained(folder, device="cpu").bank.rewards[0]

    neighbour_router(tiny_encoder, rows=18, k=5, seed=1).save_pretrained(folder)  # replaces the files
    torch.testing.assert_close(loaded.estimate(QUERIES).expected_rewards, before)
    assert len(ZooterRouter.from_pretrained(folder, device="cpu").bank) == 18


# -- the neighbours section of config.json ----------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "patterns"),
    [
        ({"neighbours": None}, ["config.json: field 'neighbours' is null", NEIGHBOURS_NAME]),
        ({"neighbours": "many"}, ["config.json", "neighbours"]),
        ({"neighbours.k": 0}, ["config.json", "neighbours.k=0"]),
        ({"neighbours.k": -3}, ["config.json", "neighbours.k=-3"]),
        ({"neighbours.k": "5"}, ["config.json", "neighbours.k='5'"]),
        ({"neighbours.k": 2.5}, ["config.json", "neighbours.k=2.5"]),
        ({"neighbours.k": True}, ["config.json", "neighbours.k=True"]),
        ({"neighbours.temperature": 0}, ["config.json", "neighbours.temperature=0"]),
        ({"neighbours.temperature": -0.1}, ["config.json", "neighbours.temperature=-0.1"]),
        ({"neighbours.temperature": float("inf")}, ["config.json", "neighbours.temperature=inf"]),
        ({"neighbours.temperature": float("nan")}, ["config.json", "neighbours.temperature=nan"]),
        ({"neighbours.temperature": "0.1"}, ["config.json", "neighbours.temperature='0.1'"]),
        ({"neighbours.rows": "24"}, ["config.json", "neighbours.rows='24'"]),
        ({"neighbours.k": None}, ["config.json", "neighbours.k=None"]),
    ],
)
def test_a_bad_neighbours_section_is_refused_naming_config_json_and_the_field(
    folder: Path, edit: dict, patterns: list[str]
) -> None:
    config = config_of(folder)
    for key, value in edit.items():
        if "." in key:
            section, field = key.split(".")
            config[section][field] = value
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")  # Infinity, NaN as JSON allows
    message = refused(folder, *patterns)
    assert "safetensors file" not in message


# -- read whole: saves over the folder while it is read ---------------------------------------


def test_a_save_over_the_folder_during_a_load_gives_the_new_router_whole(
    folder: Path, tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load has opened the old folder and checked some files when a save replaces it."""
    new = neighbour_router(tiny_encoder, ["poet", "coder", "mathbot"], rows=18, k=5, seed=1)
    real_check = FolderFiles._check
    swapped = []

    def check_then_save_over(self: FolderFiles, name: str, record) -> None:
        real_check(self, name, record)
        if not swapped:
            swapped.append(name)
            new.save_pretrained(folder)  # the old folder is removed under the open load

    monkeypatch.setattr(FolderFiles, "_check", check_then_save_over)
    loaded = ZooterRouter.from_pretrained(folder, device="cpu")
    assert swapped
    assert loaded.experts == ["poet", "coder", "mathbot"]
    assert loaded.bank is not None and len(loaded.bank) == 18 and loaded.bank.k == 5
    torch.testing.assert_close(loaded.bank.rewards, new.bank.rewards)


def test_a_folder_replaced_between_its_files_is_read_again_not_mixed(
    folder: Path, tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without folder handles (other platforms), files are opened by name: a swap shows as a mismatch."""
    new = neighbour_router(tiny_encoder, ["poet", "coder", "mathbot"], rows=18, k=5, seed=1)
    monkeypatch.setattr(os, "supports_dir_fd", set())
    real_check = FolderFiles._check
    swapped = []

    def check_then_save_over(self: FolderFiles, name: str, record) -> None:
        if not swapped:
            swapped.append(name)
            new.save_pretrained(folder)
        real_check(self, name, record)

    monkeypatch.setattr(FolderFiles, "_check", check_then_save_over)
    loaded = ZooterRouter.from_pretrained(folder, device="cpu")
    assert loaded.experts == ["poet", "coder", "mathbot"] and len(loaded.bank) == 18


READER = r"""
import json, sys, time
from pathlib import Path
import torch
from zooter.model.router import ZooterRouter

target, a, b, out, ready, done, limit = sys.argv[1:]
def signature(router):
    with torch.no_grad():
        return [router.experts, json.dumps(router.config.to_dict()["neighbours"]), float(router.bank.rewards.nansum()),
                float(router.bank.embeddings.float().sum()),
                float(router.encoder.embeddings.word_embeddings.weight.sum())]
known = {"A": signature(ZooterRouter.from_pretrained(a, device="cpu")),
         "B": signature(ZooterRouter.from_pretrained(b, device="cpu"))}
Path(ready).touch()
with open(out, "w") as f:
    for _ in range(int(limit)):
        if Path(done).exists():
            break
        try:
            found = signature(ZooterRouter.from_pretrained(target, device="cpu"))
            result = next((name for name, sig in known.items() if sig == found), f"mixed: {found}")
        except Exception as e:
            result = f"error: {type(e).__name__}: {e}"
        f.write(json.dumps(result) + "\n")
        f.flush()
"""

WRITER = r"""
import sys, time
from pathlib import Path
from zooter.model.router import ZooterRouter

target, a, b, saves, done, *ready = sys.argv[1:]
routers = [ZooterRouter.from_pretrained(a, device="cpu"), ZooterRouter.from_pretrained(b, device="cpu")]
for _ in range(6000):  # the readers signal when they load their first router (bounded wait)
    if all(Path(r).exists() for r in ready):
        break
    time.sleep(0.01)
for i in range(int(saves)):
    routers[i % 2].save_pretrained(target)
Path(done).touch()
print(int(saves))
"""


def test_loads_while_another_process_saves_over_the_folder_are_whole_old_or_whole_new(
    tiny_encoder: str, tmp_path: Path
) -> None:
    """Issue 20's trial: a writer saves two routers in turn over one folder, readers load in a loop."""
    a = neighbour_router(tiny_encoder).save_pretrained(tmp_path / "a")
    b_router = neighbour_router(tiny_encoder, ["poet", "coder", "mathbot"], rows=18, k=5, seed=1)
    with torch.no_grad():
        b_router.encoder.embeddings.word_embeddings.weight.mul_(1.5)  # other weights in model.safetensors too
    b = b_router.save_pretrained(tmp_path / "b")
    target = shutil.copytree(a, tmp_path / "target")
    scripts = tmp_path / "reader.py", tmp_path / "writer.py"
    scripts[0].write_text(READER, encoding="utf-8")
    scripts[1].write_text(WRITER, encoding="utf-8")
    done, readers = tmp_path / "done", []
    for i in range(2):
        argv = [target, a, b, tmp_path / f"loads{i}.jsonl", tmp_path / f"ready{i}", done, "400"]
        readers.append(subprocess.Popen([sys.executable, scripts[0], *map(str, argv)], env=ENV))
    ready = [str(tmp_path / f"ready{i}") for i in range(2)]
    writer = subprocess.run(
        [sys.executable, scripts[1], str(target), str(a), str(b), "40", str(done), *ready],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    for reader in readers:
        assert reader.wait(timeout=120) == 0
    assert writer.returncode == 0, writer.stderr
    loads = [json.loads(line) for i in range(2) for line in (tmp_path / f"loads{i}.jsonl").read_text().splitlines()]
    print(f"{len(loads)} loads during 40 saves: {loads.count('A')} whole A, {loads.count('B')} whole B")
    assert [load for load in loads if load not in ("A", "B")] == []
    assert len(loads) >= 10 and {"A", "B"} <= set(loads)


KILLED = (
    r"""
import json, os, pathlib, shutil, signal, sys
import torch, transformers, safetensors.torch  # noqa: F401  (imported once; each case is a fork)
from transformers import AutoTokenizer, BertModel, BertTokenizerFast  # noqa: F401  (lazy modules, loaded once)
import zooter.model.card, zooter.model.router  # noqa: F401
"""
    + KILL_AT_STEP
    + r"""
source, target, template, out = sys.argv[1:]

def run(point):
    # a save of the new router over the old, SIGKILLed just before its `point`th step (0: never)
    import torch
    from zooter.model.router import ZooterRouter

    router = ZooterRouter.from_pretrained(source, device="cpu")
    steps = kill_at_step(point)
    router.save_pretrained(target)
    with open(out, "a") as f:
        f.write(json.dumps({"steps": steps[0]}) + "\n")

def check(point):
    # what a later process finds: one whole router, and a save after it leaves nothing behind
    from zooter.model.folder import FolderFiles
    from zooter.model.router import ZooterRouter

    router = ZooterRouter.from_pretrained(target, device="cpu")
    with FolderFiles.open(target) as files:
        problems = {n: files.problem(n) for n in files.config["files"] if files.problem(n)}
    router.save_pretrained(target)
    left = sorted(p.name for p in pathlib.Path(target).parent.iterdir() if p.name.startswith(".target"))
    with open(out, "a") as f:
        f.write(json.dumps({"point": point, "experts": router.experts, "rows": len(router.bank),
                            "problems": problems, "left": left}) + "\n")

def fork(job, point):
    pid = os.fork()
    if pid == 0:
        try:
            job(point)
        finally:
            os._exit(0)
    return os.waitpid(pid, 0)[1]

fork(run, 0)  # a whole save over a copy counts its steps
steps = json.loads(pathlib.Path(out).read_text().splitlines()[-1])["steps"]
for point in range(1, steps + 1):
    shutil.rmtree(target)
    shutil.copytree(template, target)
    status = fork(run, point)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (point, status)
    fork(check, point)
print(steps)
"""
)


def test_a_save_killed_at_any_step_leaves_one_whole_router(tiny_encoder: str, tmp_path: Path) -> None:
    old = neighbour_router(tiny_encoder)
    old.training_log = [{"step": 1}]
    template = old.save_pretrained(tmp_path / "template")
    source = neighbour_router(tiny_encoder, ["poet", "coder", "mathbot"], rows=18, k=5, seed=1).save_pretrained(
        tmp_path / "source"
    )
    (tmp_path / "killed.py").write_text(KILLED, encoding="utf-8")
    out = tmp_path / "killed.jsonl"
    target = tmp_path / "target"
    shutil.copytree(template, target)
    ran = subprocess.run(
        [sys.executable, str(tmp_path / "killed.py"), str(source), str(target), str(template), str(out)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    steps = int(ran.stdout)
    checks = [json.loads(line) for line in out.read_text().splitlines() if "point" in line]
    assert steps >= 8 and [c["point"] for c in checks] == list(range(1, steps + 1))
    whole = [(EXPERTS, 24), (["poet", "coder", "mathbot"], 18)]
    for c in checks:
        assert (c["experts"], c["rows"]) in whole, c
        assert c["problems"] == {} and c["left"] == [], c
    assert {tuple(c["experts"]) for c in checks} == {tuple(EXPERTS), ("poet", "coder", "mathbot")}
