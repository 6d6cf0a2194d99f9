"""The router's encoder on ONNX Runtime: the same routes as PyTorch, a cached export, a clear missing extra."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import torch
from conftest import keyword_rows

from zooter.cli import main
from zooter.data import RoutingDataset, RoutingExample
from zooter.errors import ConfigError, MissingDependencyError
from zooter.model.encoder import QueryEncoder
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, train_router

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Exports go to one folder for the module, never to the user's ~/.cache."""
    folder = tmp_path_factory.getbasetemp() / "zooter-cache"
    monkeypatch.setenv("ZOOTER_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def data() -> RoutingDataset:
    return RoutingDataset([RoutingExample.from_dict(r) for r in keyword_rows(240, seed=11)])


@pytest.fixture(scope="module")
def queries() -> list:
    texts: list = [r["query"] for r in keyword_rows(120, seed=5)]
    return [*texts, "", [{"role": "user", "content": "a regex"}, {"role": "assistant", "content": "sure"}]]


def config(tiny_encoder: str, **changes) -> TrainingConfig:
    return TrainingConfig(
        encoder=tiny_encoder, max_length=32, neighbours=[10, 20], device="cpu", show_progress=False, **changes
    )


@pytest.fixture(scope="module")
def router_dir(tiny_encoder: str, data: RoutingDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("router")
    train_router(data, config(tiny_encoder)).save_pretrained(folder)
    return folder


def test_onnx_fp32_routes_as_pytorch_does(router_dir: Path, queries: list) -> None:
    router = ZooterRouter.from_pretrained(router_dir, device="cpu")
    assert router.backend == "torch" and router.runtime is None
    expected = router.estimate(queries)
    onnx = ZooterRouter.from_pretrained(router_dir, backend="onnx")
    assert onnx.backend == "onnx"
    got = onnx.estimate(queries)
    torch.testing.assert_close(got.probabilities, expected.probabilities, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.expected_rewards, expected.expected_rewards, rtol=1e-4, atol=1e-4)
    assert [d.expert for d in onnx.route(queries)] == [d.expert for d in router.route(queries)]


def test_onnx_int8_keeps_the_vectors_close_and_most_routes(router_dir: Path, queries: list) -> None:
    router = ZooterRouter.from_pretrained(router_dir, device="cpu")
    int8 = ZooterRouter.from_pretrained(router_dir, backend="onnx-int8")
    assert int8.runtime.path.name == "encoder-onnx-int8.onnx"
    fp32, quantised = router.embed_queries(queries), int8.embed_queries(queries)
    assert torch.nn.functional.cosine_similarity(fp32, quantised).min() > 0.98
    agree = sum(a.expert == b.expert for a, b in zip(router.route(queries), int8.route(queries))) / len(queries)
    assert agree >= 0.9


def test_onnx_openvino_keeps_the_vectors_within_bf16_rounding_and_the_routes(router_dir: Path, queries: list) -> None:
    pytest.importorskip("onnxruntime_ep_openvino")
    import onnxruntime as ort

    from zooter.model.onnx import OPENVINO_EP, openvino_cpu

    router = ZooterRouter.from_pretrained(router_dir, device="cpu")
    with contextlib.suppress(ConfigError):
        openvino_cpu(ort)  # registers the plugin, so its devices are listed
    if not any(d.ep_name == OPENVINO_EP and d.ep_metadata.get("ov_device") == "CPU" for d in ort.get_ep_devices()):
        # the plugin offers Intel CPUs only: elsewhere (an AMD CI machine) the backend must say so plainly
        with pytest.raises(ConfigError, match=r"OpenVINO execution provider found no CPU device.*use backend 'onnx'"):
            ZooterRouter.from_pretrained(router_dir, backend="onnx-openvino")
        return
    openvino = ZooterRouter.from_pretrained(router_dir, backend="onnx-openvino")
    assert openvino.backend == "onnx-openvino"
    assert openvino.runtime.session.get_providers()[0] == "OpenVINOExecutionProvider"
    assert openvino.runtime.path.name == "encoder-onnx.onnx"  # the fp32 export backend onnx runs too
    fp32, got = router.embed_queries(queries), openvino.embed_queries(queries)
    assert torch.nn.functional.cosine_similarity(fp32, got).min() > 0.999
    agree = sum(a.expert == b.expert for a, b in zip(router.route(queries), openvino.route(queries))) / len(queries)
    assert agree >= 0.95
    # a second session in the same process: the plugin is registered once
    again = ZooterRouter.from_pretrained(router_dir, backend="onnx-openvino")
    torch.testing.assert_close(again.embed_queries(queries), got)


def test_a_bert_encoder_is_exported_fused_with_the_same_vectors(tiny_encoder: str, tmp_path: Path) -> None:
    import onnx

    from zooter.model.onnx import OnnxEncoder, export_encoder

    encoder = QueryEncoder.load(tiny_encoder, max_length=32, device="cpu")
    fused, plain = (export_encoder(encoder, "onnx", cache_dir=tmp_path, fuse=fuse) for fuse in (True, False))
    ops = {
        name: {n.op_type for n in onnx.load(str(path)).graph.node}
        for name, path in (("fused", fused), ("plain", plain))
    }
    assert {"Attention", "SkipLayerNormalization"} <= ops["fused"]  # ONNX Runtime's fused BERT operators
    assert not {"Attention", "SkipLayerNormalization"} & ops["plain"]
    assert encoder.encoder.config._attn_implementation != "eager"  # the export's eager attention is undone
    batch = encoder.collate(encoder.tokenize(["a regex question", "write me a poem about the sea tonight"]))
    expected = encoder.torch_embed(*batch)
    for path in (fused, plain):
        torch.testing.assert_close(OnnxEncoder(path)(*batch), expected.detach(), rtol=1e-4, atol=1e-5)


def test_the_export_is_cached_by_the_weights_and_rebuilt_for_others(
    tiny_encoder: str, onnx_cache: Path, tmp_path: Path
) -> None:
    encoder = QueryEncoder.load(tiny_encoder, max_length=32, device="cpu").set_backend("onnx")
    first = encoder.runtime.path
    assert first.is_relative_to(onnx_cache) and first.is_file()
    stamp = first.stat().st_mtime_ns
    again = QueryEncoder.load(tiny_encoder, max_length=32, device="cpu", backend="onnx")
    assert again.runtime.path == first and first.stat().st_mtime_ns == stamp  # not exported twice
    changed = QueryEncoder.load(tiny_encoder, max_length=32, device="cpu")
    with torch.no_grad():
        next(changed.encoder.parameters()).add_(0.01)
    assert changed.set_backend("onnx").runtime.path != first
    # an explicit folder is used as given
    assert encoder.set_backend("onnx", cache_dir=tmp_path).runtime.path.is_relative_to(tmp_path)
    # back to PyTorch
    assert encoder.set_backend("torch").runtime is None and encoder.backend == "torch"


def test_training_on_a_backend_embeds_the_bank_with_it_and_the_router_routes_on_it(
    tiny_encoder: str, data: RoutingDataset, queries: list, tmp_path: Path
) -> None:
    router = train_router(data, config(tiny_encoder, backend="onnx-int8"))
    assert router.backend == "onnx-int8" and router.config.training["backend"] == "onnx-int8"
    bank = router.bank.embeddings.float()
    expected = torch.nn.functional.normalize(router.embed_queries([ex.query for ex in data]), dim=-1)
    torch.testing.assert_close(bank, expected.to(bank.dtype).float(), rtol=1e-2, atol=2e-3)
    router.save_pretrained(tmp_path / "r")  # the PyTorch weights are saved; the ONNX file stays in the cache
    assert not list((tmp_path / "r").glob("*.onnx"))
    loaded = ZooterRouter.from_pretrained(tmp_path / "r")
    assert loaded.backend == "onnx-int8"
    assert [d.expert for d in loaded.route(queries)] == [d.expert for d in router.route(queries)]
    assert ZooterRouter.from_pretrained(tmp_path / "r", backend="torch").backend == "torch"


def test_backend_settings_are_checked(tiny_encoder: str, data: RoutingDataset, router_dir: Path) -> None:
    with pytest.raises(ConfigError, match="backend must be one of"):
        ZooterRouter.from_pretrained(router_dir, backend="tensorrt")
    with pytest.raises(ConfigError, match="distill"):
        train_router(data, config(tiny_encoder, backend="onnx", method="distill"))
    router = ZooterRouter.from_pretrained(router_dir, backend="onnx")
    with pytest.raises(ConfigError, match="quantize"):
        router.quantize()


@pytest.mark.parametrize(
    ("module", "backend", "extra"),
    [("onnxruntime", "onnx-int8", "onnx"), ("onnxruntime_ep_openvino", "onnx-openvino", "openvino")],
)
def test_without_the_extra_the_error_names_it(
    router_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    module: str,
    backend: str,
    extra: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=rf"pip install 'zooter-langchain\[{extra}\]'"):
        ZooterRouter.from_pretrained(router_dir, backend=backend)
    assert main(["route", str(router_dir), "hello", "--backend", backend]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"zooter-langchain[{extra}]" in err
    assert main(["route", str(router_dir), "hello"]) == 0  # PyTorch needs no extra


def test_cli_routes_on_onnx(router_dir: Path, capsys: pytest.CaptureFixture) -> None:
    query = "please explain this python regex"
    assert main(["route", str(router_dir), query, "--json", "--device", "cpu"]) == 0
    torch_line = capsys.readouterr().out
    assert main(["route", str(router_dir), query, "--json", "--backend", "onnx"]) == 0
    import json

    a, b = json.loads(torch_line), json.loads(capsys.readouterr().out)
    assert a["expert"] == b["expert"]
    for name, p in a["probabilities"].items():
        assert b["probabilities"][name] == pytest.approx(p, abs=1e-5)
