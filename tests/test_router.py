"""The router: batching, routing choices, saving and loading through the real Hugging Face code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zooter.errors import ConfigError, ZooterError
from zooter.model.router import RouterConfig, ZooterRouter

QUERIES = [
    "hello",
    "please help me with this integral and the derivative of a matrix now",
    "write a haiku",
    "python regex segfault",
    "a longer sentence with some words about the story and the poem and lyrics for today",
]


@pytest.fixture
def router(tiny_encoder: str) -> ZooterRouter:
    torch.manual_seed(1)
    router = ZooterRouter.from_encoder(tiny_encoder, experts=["mathbot", "coder", "poet"], device="cpu")
    with torch.no_grad():  # a non-trivial head, so probabilities differ between queries
        router.head.weight.normal_(std=1.0)
        router.head.bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
    return router


def test_probabilities_are_distributions_in_input_order(router: ZooterRouter) -> None:
    probs = router.predict_proba(QUERIES, batch_size=2)
    assert probs.shape == (len(QUERIES), 3)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(len(QUERIES)))
    # input order is kept although batches run longest first
    for i, query in enumerate(QUERIES):
        torch.testing.assert_close(router.predict_proba([query])[0], probs[i], atol=1e-5, rtol=1e-5)


def test_route_on_a_batch_equals_route_one_by_one(router: ZooterRouter) -> None:
    batched = router.route(QUERIES, batch_size=8)
    single = [router.route([q])[0] for q in QUERIES]
    assert [d.expert for d in batched] == [d.expert for d in single]
    for a, b in zip(batched, single):
        assert a.probabilities.keys() == b.probabilities.keys()
        for name in a.probabilities:
            assert a.probabilities[name] == pytest.approx(b.probabilities[name], abs=1e-5)


def test_decision_is_the_most_probable_expert(router: ZooterRouter) -> None:
    for decision in router.route(QUERIES):
        assert list(decision.probabilities) == router.experts
        assert decision.expert == max(decision.probabilities, key=decision.probabilities.get)


def test_allowed_restricts_the_choice_but_not_the_probabilities(router: ZooterRouter) -> None:
    free = router.route(QUERIES)
    for decision, unrestricted in zip(router.route(QUERIES, allowed=["poet", "coder"]), free):
        assert decision.expert in {"poet", "coder"}
        assert decision.probabilities == pytest.approx(unrestricted.probabilities)
        best_allowed = max(["poet", "coder"], key=decision.probabilities.get)
        assert decision.expert == best_allowed
    with pytest.raises(ZooterError, match="unknown"):
        router.route(QUERIES, allowed=["nobody"])


def test_chat_message_queries_route_like_their_text(router: ZooterRouter) -> None:
    chat = [{"role": "user", "content": "python regex segfault"}]
    text = "user: python regex segfault"
    torch.testing.assert_close(router.predict_proba([chat]), router.predict_proba([text]))


def test_truncation_to_max_length(router: ZooterRouter) -> None:
    router.config.max_length = 8
    ids = router.tokenize(["please help me with this integral and the derivative of a matrix now"])
    assert len(ids[0]) == 8
    assert router.predict_proba(["hello " * 300]).shape == (1, 3)


def test_a_single_string_is_rejected_with_advice(router: ZooterRouter) -> None:
    with pytest.raises(TypeError, match="list"):
        router.predict_proba("hello")  # type: ignore[arg-type]


def test_save_then_load_gives_identical_probabilities(router: ZooterRouter, tmp_path: Path) -> None:
    folder = router.save_pretrained(tmp_path / "router")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "tokenizer_config.json"} <= names
    assert not any(name.endswith((".bin", ".pkl", ".pt")) for name in names)
    config = json.loads((folder / "config.json").read_text())
    assert config["experts"] == ["mathbot", "coder", "poet"]
    assert config["encoder_config"]["hidden_size"] == 32

    loaded = ZooterRouter.from_pretrained(folder, device="cpu")
    assert loaded.experts == router.experts
    assert type(loaded.encoder).__name__ == "BertModel"
    torch.testing.assert_close(loaded.predict_proba(QUERIES), router.predict_proba(QUERIES), atol=0, rtol=0)


def test_model_card_names_experts_encoder_and_evaluation(router: ZooterRouter, tmp_path: Path) -> None:
    from zooter.data import RoutingDataset, RoutingExample
    from zooter.evaluation import evaluate

    rows = [
        {"id": str(i), "query": q, "rewards": {"mathbot": 1.0 + i, "coder": 2.0, "poet": 3.0 - i}}
        for i, q in enumerate(QUERIES)
    ]
    report = evaluate(router, RoutingDataset([RoutingExample.from_dict(r) for r in rows]))
    folder = router.save_pretrained(tmp_path / "router", evaluation=report)
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: zooter-langchain")
    for name in router.experts:
        assert f"`{name}`" in card
    assert "| zooter (routed) |" in card and f"{report.routed:.3f}" in card
    loaded = ZooterRouter.from_pretrained(folder)
    assert loaded.config.evaluation is not None
    assert loaded.config.evaluation["routed"] == pytest.approx(report.routed)


def test_failed_save_leaves_the_existing_folder_intact(
    router: ZooterRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "router"
    router.save_pretrained(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    with torch.no_grad():
        router.head.bias.add_(1.0)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(router.tokenizer, "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        router.save_pretrained(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["router"]  # no temporary folder left behind


def test_saving_over_an_existing_router_replaces_it(router: ZooterRouter, tmp_path: Path) -> None:
    target = tmp_path / "router"
    router.save_pretrained(target)
    with torch.no_grad():
        router.head.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    router.save_pretrained(target)
    loaded = ZooterRouter.from_pretrained(target)
    assert all(d.expert == "mathbot" for d in loaded.route(QUERIES))


def test_loading_something_that_is_not_a_router(tmp_path: Path, tiny_encoder: str) -> None:
    with pytest.raises(ZooterError, match="not a router folder"):
        ZooterRouter.from_pretrained(tiny_encoder)  # a bare encoder folder: no head
    with pytest.raises(ZooterError, match="Hub"):
        ZooterRouter.from_pretrained(str(tmp_path / "missing-router"))
    with pytest.raises(ZooterError, match="could not be fetched"):
        ZooterRouter.from_pretrained("someone/no-such-router")  # HF_HUB_OFFLINE=1 in tests


def test_loading_a_folder_with_mismatched_weights(router: ZooterRouter, tmp_path: Path) -> None:
    folder = router.save_pretrained(tmp_path / "router")
    config = json.loads((folder / "config.json").read_text())
    config["experts"].append("extra")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ZooterError, match=r"does not fit config\.json"):
        ZooterRouter.from_pretrained(folder)


def test_config_from_a_newer_version_drops_unknown_keys(caplog: pytest.LogCaptureFixture) -> None:
    config = RouterConfig.from_dict({"experts": ["a", "b"], "future_option": 1})
    assert config.experts == ["a", "b"]
    assert "future_option" in caplog.text


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="experts"):
        RouterConfig(experts=["only-one"])
    with pytest.raises(ConfigError, match="repeated"):
        RouterConfig(experts=["a", "a"])
    with pytest.raises(ConfigError, match="max_length"):
        RouterConfig(experts=["a", "b"], max_length=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_routing_matches_cpu(router: ZooterRouter) -> None:
    cpu = router.predict_proba(QUERIES)
    gpu = router.to("cuda").predict_proba(QUERIES)
    torch.testing.assert_close(gpu, cpu, atol=2e-2, rtol=0)


def test_push_to_hub_uploads_a_loadable_router_folder(
    router: ZooterRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Hub calls are replaced by a local 'hub' folder; what would be uploaded must load."""
    import shutil

    import huggingface_hub

    hub = tmp_path / "hub"
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = (repo_id, kwargs)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls["upload"] = repo_id
        shutil.copytree(folder_path, hub / repo_id)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = router.push_to_hub("me/router", private=True)
    assert url == "https://huggingface.co/me/router"
    assert calls["create"] == ("me/router", {"private": True, "exist_ok": True, "repo_type": "model"})
    loaded = ZooterRouter.from_pretrained(hub / "me" / "router")
    torch.testing.assert_close(loaded.predict_proba(QUERIES), router.predict_proba(QUERIES), atol=0, rtol=0)


def test_saving_refuses_to_replace_a_folder_that_is_not_a_router(router: ZooterRouter, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("keep me")
    with pytest.raises(ZooterError, match="not a router folder"):
        router.save_pretrained(project)
    assert (project / "notes.txt").read_text() == "keep me"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ZooterError):
        router.save_pretrained(tmp_path / "afile")


def test_saved_files_get_the_usual_permissions(router: ZooterRouter, tmp_path: Path) -> None:
    import os
    import stat

    umask = os.umask(0o022)
    try:
        folder = router.save_pretrained(tmp_path / "router")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert set(modes.values()) == {0o644}, modes  # model.safetensors too: another user can load it


def test_save_to_the_current_folder(router: ZooterRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    router.save_pretrained(".")
    assert ZooterRouter.from_pretrained(".").experts == router.experts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_max_length_is_capped_at_what_the_encoder_can_read(tiny_encoder: str, caplog) -> None:
    router = ZooterRouter.from_encoder(tiny_encoder, experts=["a", "b"], max_length=512, device="cpu")
    assert router.config.max_length == 128  # the tiny BERT has 128 positions
    assert "exceeds" in caplog.text
    assert router.predict_proba(["hello " * 400]).shape == (1, 2)


def test_an_empty_query_still_routes(router: ZooterRouter) -> None:
    assert router.predict_proba([""]).shape == (1, 3)


def test_a_bare_chat_is_rejected_with_advice(router: ZooterRouter) -> None:
    with pytest.raises(TypeError, match="wrap a single query"):
        router.route([{"role": "user", "content": "hi"}])  # type: ignore[list-item]


def test_int8_quantisation_keeps_probabilities_close_and_forbids_saving(router: ZooterRouter, tmp_path: Path) -> None:
    fp32 = router.predict_proba(QUERIES)
    assert router.quantize("int8") is router
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    quantised_linears = [m for m in router.encoder.modules() if isinstance(m, DynamicInt8Linear)]
    assert quantised_linears, "the encoder's linear layers should be int8 now"
    int8 = router.predict_proba(QUERIES)
    torch.testing.assert_close(int8.sum(dim=1), torch.ones(len(QUERIES)))
    torch.testing.assert_close(int8, fp32, atol=0.05, rtol=0)
    with pytest.raises(ZooterError, match="quantise after loading"):
        router.save_pretrained(tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_quantisation_rejects_unknown_modes(router: ZooterRouter) -> None:
    with pytest.raises(ConfigError, match="int8"):
        router.quantize("int4")


def test_compiled_router_routes_and_saves_like_the_original(router: ZooterRouter, tmp_path: Path) -> None:
    expected = router.predict_proba(QUERIES)
    router.compile(backend="eager")  # the plumbing, without a C compiler; inductor is for real use
    torch.testing.assert_close(router.predict_proba(QUERIES), expected)
    loaded = ZooterRouter.from_pretrained(router.save_pretrained(tmp_path / "r"), device="cpu")
    torch.testing.assert_close(loaded.predict_proba(QUERIES), expected)


def test_a_router_with_non_finite_weights_is_refused(router: ZooterRouter, tmp_path: Path) -> None:
    from conftest import record_file
    from safetensors.torch import load_file, save_file

    folder = router.save_pretrained(tmp_path / "router")
    weights = load_file(folder / "model.safetensors")
    weights["head.bias"][1] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ZooterError, match=r"model\.safetensors is not the file this router was saved with"):
        ZooterRouter.from_pretrained(folder)
    record_file(folder, "model.safetensors")  # the checksum fixed too: the weights are still refused
    with pytest.raises(ZooterError, match=r"non-finite.*head\.bias"):
        ZooterRouter.from_pretrained(folder)
    with torch.no_grad():
        router.head.weight[0, 0] = float("inf")
    with pytest.raises(ZooterError, match=r"non-finite.*head\.weight"):
        router.save_pretrained(tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_saving_over_a_router_keeps_the_users_own_files(router: ZooterRouter, tmp_path: Path) -> None:
    router.training_log = [{"step": 1, "loss": 1.0}]
    target = router.save_pretrained(tmp_path / "router")
    (target / "NOTES.txt").write_text("keep me")
    (target / "runs").mkdir()
    (target / "runs" / "eval.json").write_text("{}")
    router.training_log = []  # the new router writes no log: the old router's log must not linger
    router.save_pretrained(target)
    assert (target / "NOTES.txt").read_text() == "keep me"
    assert (target / "runs" / "eval.json").read_text() == "{}"
    assert not (target / "training_log.jsonl").exists()
    assert ZooterRouter.from_pretrained(target).experts == router.experts


def test_a_folder_without_its_tokenizer_file_is_refused(router: ZooterRouter, tmp_path: Path) -> None:
    folder = router.save_pretrained(tmp_path / "router")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ZooterError, match=r"tokenizer\.json"):
        ZooterRouter.from_pretrained(folder)


def test_a_tokenizer_other_than_the_trained_one_is_refused(router: ZooterRouter, tmp_path: Path) -> None:
    from conftest import build_tiny_encoder

    folder = router.save_pretrained(tmp_path / "router")
    words = [f"w{i}" for i in range(len(router.tokenizer) - 5)]  # as many tokens, other words
    other = build_tiny_encoder(tmp_path / "other", words=words)
    from conftest import record_file

    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((other / name).read_bytes())
    with pytest.raises(ZooterError, match=r"tokenizer\.json is not the file this router was saved with"):
        ZooterRouter.from_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        record_file(folder, name)  # the checksums fixed too: the vocabulary is still not the router's
    with pytest.raises(ZooterError, match=r"tokenizer\.json.*not the tokenizer the router was trained with"):
        ZooterRouter.from_pretrained(folder)


def test_a_router_saved_before_tokenizer_records_still_loads(router: ZooterRouter, tmp_path: Path) -> None:
    folder = router.save_pretrained(tmp_path / "router")
    config = json.loads((folder / "config.json").read_text())
    for key in ("tokenizer", "files"):
        config.pop(key, None)
    (folder / "config.json").write_text(json.dumps(config))
    loaded = ZooterRouter.from_pretrained(folder)
    torch.testing.assert_close(loaded.predict_proba(QUERIES), router.predict_proba(QUERIES), atol=0, rtol=0)
    (folder / "tokenizer.json").unlink()  # the file checks still apply
    with pytest.raises(ZooterError, match="tokenizer"):
        ZooterRouter.from_pretrained(folder)


def test_a_damaged_training_log_does_not_stop_routing(router: ZooterRouter, tmp_path: Path, caplog) -> None:
    router.training_log = [{"step": 1, "loss": 1.0}]
    folder = router.save_pretrained(tmp_path / "router")
    (folder / "training_log.jsonl").write_bytes(b'{"step": 1, "loss": 1.0}\n{"step": 2, "lo\xff')
    loaded = ZooterRouter.from_pretrained(folder)
    assert loaded.route(QUERIES[:1])[0].expert in router.experts
    assert "training_log.jsonl" in caplog.text


@pytest.mark.parametrize("bad", [None, 5, ["not", "messages"]])
def test_a_query_of_the_wrong_type_is_named_by_its_position(router: ZooterRouter, bad: object) -> None:
    with pytest.raises(TypeError, match=r"query 1 .*expected a string or a list of chat messages"):
        router.route(["fine", bad])  # type: ignore[list-item]


def test_allowed_may_name_a_single_expert(router: ZooterRouter) -> None:
    assert {d.expert for d in router.route(QUERIES, allowed="poet")} == {"poet"}  # type: ignore[arg-type]


def test_queries_without_text_route_alike_and_are_reported(router: ZooterRouter, caplog) -> None:
    decisions = router.route(["", "   ", "\n\t"])
    assert decisions[0].expert == decisions[1].expert == decisions[2].expert
    # one batch, three equal rows: BLAS may still round each row its own way in the last bits
    for other in decisions[1:]:
        assert other.probabilities == pytest.approx(decisions[0].probabilities, rel=1e-5, abs=1e-9)
    assert "3 of 3 queries have no text" in caplog.text


def test_torch_bf16_backend_embeds_in_bf16_and_trains_saves_and_routes_on_it(tiny_encoder: str, tmp_path: Path) -> None:
    from conftest import keyword_rows

    from zooter.data import RoutingDataset, RoutingExample
    from zooter.training import TrainingConfig, train_router

    data = RoutingDataset([RoutingExample.from_dict(r) for r in keyword_rows(120, seed=3)])
    config = TrainingConfig(encoder=tiny_encoder, max_length=32, neighbours=[10], device="cpu", show_progress=False)
    fp32 = train_router(data, config)
    bf16 = train_router(data, config.model_copy(update={"backend": "torch-bf16"}))
    assert bf16.backend == "torch-bf16" and bf16.config.training["backend"] == "torch-bf16"
    queries = [ex.query for ex in data][:40]
    a, b = fp32.embed_queries(queries), bf16.embed_queries(queries)
    assert not torch.equal(a, b)  # computed in bf16, not fp32
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99
    bf16.save_pretrained(tmp_path / "r")
    loaded = ZooterRouter.from_pretrained(tmp_path / "r")
    assert loaded.backend == "torch-bf16"
    assert [d.expert for d in loaded.route(queries)] == [d.expert for d in bf16.route(queries)]
    with pytest.raises(ConfigError, match="quantize"):
        loaded.quantize()


def test_torch_bf16_warns_on_a_cpu_without_bf16(
    router: ZooterRouter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    router.set_backend("torch-bf16")
    assert "no bf16 instructions" in caplog.text
    assert router.predict_proba(["write a poem"]).shape == (1, len(router.experts))
