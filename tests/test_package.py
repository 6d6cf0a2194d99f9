"""Packaging promises: a free import, the shipped data and its attribution, the real default encoder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zooter.cli import main
from zooter.demo import DEMO_EXPERTS, demo_data_path

#: What ``import zooter`` must not load: the heavy core and every optional engine.
OPTIONAL = ("ray", "onnxruntime", "onnx", "onnxruntime_ep_openvino", "faiss")
HEAVY = ("torch", "transformers", "langchain_core", "huggingface_hub", *OPTIONAL)


def test_import_loads_no_heavy_or_optional_package() -> None:
    code = (
        "import sys, logging, zooter, zooter_langchain;"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules];"
        "print(heavy, logging.getLogger().handlers)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"


def test_the_engine_modules_import_their_engines_only_when_used() -> None:
    code = (
        "import sys, zooter.engines, zooter.engines.ray, zooter.model.onnx, zooter.model.index, zooter.rewards.scoring,"
        f" zooter.cli; print([m for m in {OPTIONAL!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_names_resolve_lazily() -> None:
    import zooter

    for name in zooter.__all__:
        assert getattr(zooter, name) is not None
    with pytest.raises(AttributeError):
        zooter.no_such_thing  # noqa: B018


#: What a user of the core reaches for, stage by stage: each must be importable from ``zooter``.
NEEDED = {
    "RoutingDataset", "RoutingExample", "DatasetSplits", "load_queries",  # data
    "RewardScorer", "RewardModelScorer", "read_responses", "score_responses", "ScoreReport",  # score
    "LabelConfig", "make_targets", "soft_targets", "Tagger", "DataTagger", "ClusterTagger", "TagEnhancer",  # label
    "TrainingConfig", "train_router",  # train
    "ZooterRouter", "RouterConfig", "RouteDecision", "Estimates", "DecisionRule",  # route
    "evaluate", "EvalReport",  # evaluate
    "ZooterError", "ConfigError", "DataError", "ExpertMismatchError", "MissingDependencyError",
}  # fmt: skip


def test_the_package_exports_what_users_need() -> None:
    import zooter

    assert sorted(NEEDED - set(zooter.__all__)) == []


@pytest.mark.parametrize("package", ["zooter", "zooter_langchain"])
def test_every_exported_name_is_its_modules_own_and_typed(package: str) -> None:
    """Each lazy export names the module that defines it, is in that module's ``__all__`` where it has
    one, and is imported under ``TYPE_CHECKING`` from there too (what type checkers and IDEs see)."""
    import ast
    import importlib

    root = importlib.import_module(package)
    exports = root._EXPORTS
    assert set(root.__all__) == {"__version__", *exports}
    for name, module_name in exports.items():
        module = importlib.import_module(module_name)
        assert getattr(root, name) is getattr(module, name), name
        assert name in getattr(module, "__all__", [name]), f"{module_name}.__all__ lacks {name}"
    tree = ast.parse(Path(root.__file__).read_text(encoding="utf-8"))
    typed = {
        alias.name: node.module
        for block in tree.body
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == exports


def test_every_module_all_resolves() -> None:
    import importlib
    import pkgutil

    import zooter

    for info in pkgutil.walk_packages(zooter.__path__, "zooter."):
        module = importlib.import_module(info.name)
        missing = [name for name in getattr(module, "__all__", []) if not hasattr(module, name)]
        assert missing == [], f"{info.name}.__all__ names {missing}, which it does not define"


def test_shipped_demo_data_loads_with_its_attribution() -> None:
    from zooter.data import RoutingDataset

    path = demo_data_path()
    data = RoutingDataset.load(path, experts=DEMO_EXPERTS)
    assert len(data) == 300
    assert data.experts == DEMO_EXPERTS
    notice = (path.parent / "NOTICE.md").read_text()
    assert "Apache License 2.0" in notice and "lmarena/arena-hard-auto" in notice


@pytest.mark.slow
def test_real_minilm_routes_with_padding_masked(tmp_path) -> None:
    """The bundled all-MiniLM-L6-v2 loads offline; padding never changes a query's routing."""
    from zooter.model.router import ZooterRouter

    router = ZooterRouter.from_encoder(experts=["a", "b", "c"], device="cpu")
    assert router.encoder.config.hidden_size == 384
    torch.manual_seed(0)
    with torch.no_grad():
        router.head.weight.normal_(std=0.5)
    short = "What is 2 + 2?"
    long = "Explain, with a worked example and references, how transformers use attention. " * 8
    alone = router.predict_proba([short])
    padded = router.predict_proba([short, long], batch_size=2)  # short is padded to long's length
    torch.testing.assert_close(padded[0:1], alone, atol=1e-5, rtol=0)
    folder = router.save_pretrained(tmp_path / "r")
    config = json.loads((folder / "config.json").read_text())
    assert config["encoder"] == "sentence-transformers/all-MiniLM-L6-v2"
    torch.testing.assert_close(ZooterRouter.from_pretrained(folder).predict_proba([short]), alone)


@pytest.mark.slow
def test_demo_runs_end_to_end_offline(tmp_path, capsys) -> None:
    """The arena demo with the real bundled MiniLM (the default llmrouter demo runs in test_demo, tiny)."""
    assert main(["demo", "--data", "arena", "--quiet", "--output", str(tmp_path / "demo-router")]) == 0
    out = capsys.readouterr().out
    assert "held-out test split" in out and "zooter (routed)" in out and "oracle" in out
    assert out.count("<- chosen") == 3  # three example queries explained
    card = (tmp_path / "demo-router" / "README.md").read_text()
    assert "| zooter (routed) |" in card


def test_every_public_name_of_the_adapter_is_exported_and_imports() -> None:
    import importlib
    import pkgutil

    import zooter_langchain

    for name in zooter_langchain.__all__:
        assert getattr(zooter_langchain, name) is not None, name
    for module in pkgutil.iter_modules(zooter_langchain.__path__):
        # zooter_langchain.cli holds the entry points the zooter command loads, not a Python API
        if module.name.startswith("_") or module.name == "cli":
            continue
        public = getattr(importlib.import_module(f"zooter_langchain.{module.name}"), "__all__", None)
        assert public is not None, f"zooter_langchain.{module.name} has no __all__"
        missing = sorted(set(public) - set(zooter_langchain.__all__))
        assert not missing, f"zooter_langchain.{module.name} exports {missing}, missing from zooter_langchain.__all__"
    with pytest.raises(AttributeError):
        zooter_langchain.no_such_thing  # noqa: B018
