"""Which ONNX Runtime build of the router's encoder routes fastest on a CPU, and how many decisions it keeps.

Variants of the bundled all-MiniLM-L6-v2, each built once into ``.benchmarks/onnx-variants/``:

- ``onnx`` / ``onnx-int8``: what the backends of the same names run: the ``torch.onnx`` export
  (eager attention) rewritten by ``onnxruntime.transformers.optimizer``'s BERT fusions (Attention,
  EmbedLayerNormalization, BiasGelu, SkipLayerNormalization), and its dynamic int8 quantisation
  (``quantize_dynamic``: int8 weights with per-channel scales, activations quantised on the fly);
- ``onnx-openvino``: what backend ``onnx-openvino`` runs: the fused fp32 graph on ONNX Runtime's
  OpenVINO execution provider (the ``onnxruntime-ep-openvino`` plugin), at OpenVINO's default
  precision (bf16 on a CPU with AMX or AVX512-BF16);
- ``openvino-f32``: the same with OpenVINO's inference precision hint set to f32 (what it
  computes on a CPU without bf16 instructions);
- ``unfused`` / ``unfused-int8`` / ``unfused-openvino``: the same without the fusions (what the
  backends ran before);
- ``int8-...``: dynamic int8 of the fused graph with some linear layers kept in fp32: ``-xattn`` (the
  fused Q/K/V projections), ``-xaout`` (the attention outputs), ``-xffn1`` / ``-xffn2`` (the
  feed-forward up / down projections), ``-xlN`` (all of layer N); ``-pt``: per-tensor weight
  scales; ``-rr``: ``reduce_range`` (7-bit weights, for CPUs without VNNI);
- ``qdq``: static int8 in QDQ format, activations calibrated on 256 training queries (``-u8``:
  unsigned activations; ``-pct``: percentile calibration);
- ``torch-bf16``: not ONNX: backend ``torch-bf16``, a bf16 copy of the PyTorch encoder (fast where
  the CPU has AMX or AVX512-BF16), its vectors within bf16 rounding of fp32's.

Each runs in an ONNX Runtime session (``--threads`` intra-op threads, all graph optimisations, idle
threads not spinning: ``--spin default`` lets them, which slows whatever runs next) inside
the router's own embedding path, so tokenising and padding are the same for every variant and for
PyTorch: length-sorted batches of ``--batch-size`` queries, each padded to its longest query. Speed
is measured in one process over llmrouter_9model's 500 test queries (route = tokenise + embed +
neighbour search + decision), batch by batch, every variant routing each batch in turn (the order
rotating), ``--repeats`` times; ``speedup`` is PyTorch fp32's total time over the variant's.
Agreement is the share of test queries whose decision equals the PyTorch fp32 router's
(``routed_reward``: the mean test reward of the variant's decisions against the fp32 bank, to
tell flips between near-equal experts from flips that cost quality):

- ``agree_fp32_bank``: the variant's query vectors against the fp32 bank and rule;
- ``agree_own_bank`` (``--bank``): the bank embedded by the variant too, with the fp32 router's
  ``k`` and decision rule (only the vectors change);
- ``agree_retrained`` (``--bank``): the bank embedded by the variant, ``k`` and the rule calibrated
  on it, as ``zooter train --backend`` does.

Usage::

    python benchmarks/onnx_variants.py --variants unfused,unfused-int8,onnx,onnx-int8 --repeats 3 --json
    python benchmarks/onnx_variants.py --variants onnx-int8 --bank onnx-int8 --repeats 0 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import SHARED_DATA
from scale import read, source_embeddings

from zooter.decide.policy import decide
from zooter.labels.targets import LabelConfig, make_targets, reward_tensor
from zooter.model.encoder import Bf16Encoder, length_sorted_batches
from zooter.model.neighbours import NeighbourBank
from zooter.model.onnx import OnnxEncoder, export_encoder, openvino_cpu
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, fit_bank

LLMROUTER = SHARED_DATA / "llmrouter_9model"
FOLDER = Path(__file__).resolve().parents[1] / ".benchmarks" / "onnx-variants"
BANK_CACHE = FOLDER / "banks"


EXCLUDE = {  # a variant's "-x..." parts: which linear layers stay in fp32
    "xattn": lambda n, layers: n.op_type == "Attention",  # the fused Q, K, V projection
    "xaout": lambda n, layers: "attention/output/dense" in n.name,
    "xffn1": lambda n, layers: "intermediate/dense" in n.name,
    "xffn2": lambda n, layers: "/output/dense" in n.name and "attention" not in n.name,
}


def fused_ops(path: Path) -> dict[str, int]:
    """How many of the graph's operators are ONNX Runtime's fused ones."""
    import collections

    import onnx

    fused = {"Attention", "QAttention", "EmbedLayerNormalization", "BiasGelu", "SkipLayerNormalization"}
    counts = collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    return {op: counts[op] for op in sorted(fused) if counts[op]}


def excluded_nodes(path: Path, parts: list[str], layers: int) -> list[str]:
    """The names of the nodes the variant's ``-x...`` parts keep in fp32 (``-xl5``: all of layer 5)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    names = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Attention", "Gemm"):
            continue
        for part in parts:
            if part in EXCLUDE and EXCLUDE[part](node, layers):
                names.append(node.name)
            elif part.startswith("xl") and part[2:].isdigit():
                i = int(part[2:])
                if f"layer.{i}/" in node.name or node.name == f"Attention_{i}":
                    names.append(node.name)
    return sorted(set(names))


class Calibration:
    """onnxruntime.quantization's CalibrationDataReader over tokenised training queries."""

    def __init__(self, router: ZooterRouter, queries: list[str], batch_size: int = 16) -> None:
        ids = router.tokenize(queries)
        self.batches = []
        for start in range(0, len(ids), batch_size):
            input_ids, mask = router.collate(ids[start : start + batch_size])
            self.batches.append({"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()})
        self.position = 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return self.batches[self.position - 1]


def build_variant(name: str, router: ZooterRouter, calibration_queries: list[str]) -> tuple[Path, dict]:
    """The ONNX file of variant ``name`` (built once, then read from ``FOLDER``), and how it was built."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if name in ("onnx", "onnx-int8", "onnx-openvino", "openvino-f32", "unfused", "unfused-int8", "unfused-openvino"):
        # the backends' own files
        backend = "onnx-int8" if name.endswith("int8") else "onnx-openvino" if "openvino" in name else "onnx"
        path = export_encoder(router, backend, cache_dir=FOLDER / "export", fuse=not name.startswith("unfused"))
        return path, {"fused_ops": fused_ops(path)}
    fused = export_encoder(router, "onnx", cache_dir=FOLDER / "export")
    path = FOLDER / f"{name}.onnx"
    parts = name.split("-")
    exclude = excluded_nodes(fused, parts, router.encoder.config.num_hidden_layers)
    info: dict[str, Any] = {"fp32_nodes": len(exclude)}
    if path.is_file():
        return path, info
    started = time.perf_counter()
    float_outputs = {"DefaultTensorType": onnx.TensorProto.FLOAT}  # the fused contrib operators' outputs
    if parts[0] == "int8":  # dynamic, as backend onnx-int8, with some layers kept in fp32
        quantize_dynamic(
            str(fused),
            str(path),
            weight_type=QuantType.QInt8,
            per_channel="pt" not in parts,
            reduce_range="rr" in parts,
            nodes_to_exclude=exclude,
            extra_options=float_outputs,
        )
    elif parts[0] == "qdq":
        quantize_static(
            str(fused),
            str(path),
            Calibration(router, calibration_queries),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8 if "u8" in parts else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel="pt" not in parts,
            reduce_range="rr" in parts,
            nodes_to_exclude=exclude,
            calibrate_method=CalibrationMethod.Percentile if "pct" in parts else CalibrationMethod.MinMax,
            extra_options={**float_outputs, "ActivationSymmetric": "u8" not in parts, "WeightSymmetric": True},
        )
    else:
        raise SystemExit(f"unknown variant {name!r}")
    info["quantise_s"] = round(time.perf_counter() - started, 1)
    return path, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants", default="onnx,onnx-int8,onnx-openvino,torch-bf16", help="the backends' own by default"
    )
    parser.add_argument("--bank", default="", help="variants whose own bank is embedded (train queries; minutes each)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--spin",
        choices=["default", "off"],
        default="off",
        help="ONNX Runtime's thread spinning: 'off' as the backends run it; 'default' (ONNX Runtime's) lets "
        "each session's idle threads spin after a run, which takes the cores from the variant measured next "
        "(PyTorch fp32 measured 2x slower beside them)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train, test = read(LLMROUTER / "train.jsonl.gz"), read(LLMROUTER / "test.jsonl.gz")
    router = ZooterRouter.from_encoder(experts=train.experts, device="cpu")
    cached = source_embeddings(router, train, test)
    targets = make_targets(train, LabelConfig())
    config = TrainingConfig(show_progress=False, device="cpu")
    reference = fit_bank(cached["train"], train, targets, config)
    bank, rule = reference.bank, reference.rule
    queries = test.texts
    test_rewards = reward_tensor(test)[:, [test.experts.index(e) for e in train.experts]]  # decide's columns
    fp32_choice = decide(bank.estimate(cached["test"]).scores, train.experts, rule)

    import onnxruntime as ort

    def session(path: Path, openvino: bool, hint: str | None = None) -> OnnxEncoder:
        runtime = OnnxEncoder(path, threads=args.threads, openvino=openvino)  # as the backends run it: no spinning
        if hint:  # the same session with OpenVINO's precision hint
            options = ort.SessionOptions()
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            cpu = {"INFERENCE_NUM_THREADS": str(args.threads), "INFERENCE_PRECISION_HINT": hint}
            options.add_provider_for_devices([openvino_cpu(ort)], {"load_config": json.dumps({"CPU": cpu})})
            runtime.session = ort.InferenceSession(str(path), options)
        if args.spin == "default" and not openvino:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = args.threads
            runtime.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return runtime

    calibration = [train.texts[i] for i in train.sample(256, seed=1)]
    runtimes: dict[str, Any] = {"torch": None}
    result: dict[str, Any] = {
        "cpu_flags": sorted({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16"} & cpu_flags()),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "padding": "length-sorted batches, padded to the batch's longest query, the same for every variant",
        "k": bank.k,
        "variants": {},
    }
    for name in [v for v in args.variants.split(",") if v]:
        if name == "torch-bf16":
            runtimes[name] = Bf16Encoder(router.encoder)
            result["variants"][name] = {}
            continue
        path, info = build_variant(name, router, calibration)
        runtimes[name] = session(path, openvino="openvino" in name, hint="f32" if name == "openvino-f32" else None)
        result["variants"][name] = {**info, "file_mb": round(path.stat().st_size / 2**20, 1)}

    def use(name: str) -> None:
        router.runtime = runtimes[name]
        router.backend = "torch" if name.startswith("torch") else "onnx"

    def route(name: str) -> tuple[torch.Tensor, list[int]]:
        use(name)
        vectors = router.embed_queries(queries, batch_size=args.batch_size)
        return vectors, decide(bank.estimate(vectors).scores, train.experts, rule)

    torch_vectors, torch_choice = route("torch")
    result["torch_vs_cached_agreement"] = agreement(torch_choice, fp32_choice)
    for name in runtimes:
        vectors, choice = route(name)  # also the warm-up
        figures = result["variants"].setdefault(name, {})
        figures["cosine_min"] = round(float(torch.nn.functional.cosine_similarity(vectors, torch_vectors).min()), 5)
        figures["agree_fp32_bank"] = agreement(choice, torch_choice)
        figures["routed_reward"] = round(float(test_rewards.gather(1, torch.tensor(choice).unsqueeze(1)).mean()), 4)

    # Interleaved batch by batch (each batch of queries routed by every variant in turn, the order
    # rotating), so that a machine whose load changes by the second slows every variant alike.
    token_ids = router.tokenize(queries)
    batches = [[queries[i] for i in index] for index in length_sorted_batches(token_ids, args.batch_size)]
    seconds: dict[str, list[float]] = {name: [] for name in runtimes}
    names = list(runtimes)
    loads = [os.getloadavg()[0]]
    for repeat in range(args.repeats):
        spent = dict.fromkeys(names, 0.0)
        for b, batch in enumerate(batches):
            shift = (repeat + b) % len(names)
            for name in names[shift:] + names[:shift]:
                use(name)
                start = time.perf_counter()
                vectors = router.embed_queries(batch, batch_size=args.batch_size)
                decide(bank.estimate(vectors).scores, train.experts, rule)
                spent[name] += time.perf_counter() - start
        for name in names:
            seconds[name].append(spent[name])
        loads.append(os.getloadavg()[0])
    base = sum(seconds["torch"])
    for name in names if args.repeats else []:
        result["variants"][name].update(
            qps=round(len(queries) * args.repeats / sum(seconds[name]), 1),
            speedup=round(base / sum(seconds[name]), 2),
            speedup_per_repeat=[round(t / s, 2) for t, s in zip(seconds["torch"], seconds[name])],
        )
    result["load_average"] = [round(x, 1) for x in loads]

    for name in [v for v in args.bank.split(",") if v]:
        use(name)
        embedded = bank_embeddings(router, name, train.texts, args.batch_size)
        own = NeighbourBank(embedded, bank.rewards, bank.targets, k=bank.k, temperature=bank.temperature,
                            shrinkage=bank.shrinkage)  # fmt: skip
        vectors = router.embed_queries(queries, batch_size=args.batch_size)
        figures = result["variants"][name]
        figures["agree_own_bank"] = agreement(decide(own.estimate(vectors).scores, train.experts, rule), torch_choice)
        refit = fit_bank(embedded, train, targets, config)
        retrained = decide(refit.bank.estimate(vectors).scores, train.experts, refit.rule)
        figures["agree_retrained"] = agreement(retrained, torch_choice)
        figures["retrained_k"] = refit.bank.k
    print(json.dumps(result) if args.json else json.dumps(result, indent=2), flush=True)


def bank_embeddings(router: ZooterRouter, name: str, texts: list[str], batch_size: int) -> torch.Tensor:
    """The training queries embedded by variant ``name`` (cached: it takes minutes)."""
    from safetensors.torch import load_file, save_file

    path = BANK_CACHE / f"{name}.safetensors"
    if path.is_file():
        return load_file(str(path))["embeddings"]
    started = time.perf_counter()
    embedded = router.embed_queries(texts, batch_size=batch_size).cpu()
    print(f"{name}: bank embedded in {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    BANK_CACHE.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": embedded.contiguous()}, str(path))
    return embedded


def agreement(a: list[int], b: list[int]) -> float:
    return round(sum(x == y for x, y in zip(a, b)) / len(a), 4)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


if __name__ == "__main__":
    main()
