"""The encoder on ONNX Runtime, for fast CPU routing (extra ``zooter-langchain[onnx]``).

A router (or any :class:`~zooter.model.encoder.QueryEncoder`) can run its encoder's pooled
forward pass on ONNX Runtime instead of PyTorch: ``backend="onnx"`` (fp32, the same vectors to
float rounding), ``backend="onnx-int8"`` (linear layers' weights in int8, activations quantised
on the fly: faster on a CPU, vectors slightly off) or ``backend="onnx-openvino"`` (the fp32 graph
on ONNX Runtime's OpenVINO execution provider, which computes in bf16 on a CPU with bf16
instructions: the fastest there, with vectors within bf16 rounding of fp32's; see
:meth:`~zooter.model.encoder.QueryEncoder.set_backend`). The PyTorch weights stay the router's
weights: the ONNX file is built from them on first use (``torch.onnx``, then
``onnxruntime.quantization`` for int8) and cached under ``$ZOOTER_CACHE/onnx`` (default
``~/.cache/zooter/onnx``), keyed by a hash of the weights, so a router folder holds no extra file
and later loads skip the export.

Example:
    >>> from zooter import ZooterRouter
    >>> router = ZooterRouter.from_pretrained("my-router", backend="onnx-int8")  # doctest: +SKIP
    >>> router.route(["Write a haiku about the sea"])[0].expert  # doctest: +SKIP
    'claude-2.1'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from zooter.errors import ConfigError, import_optional

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8", "onnx-openvino")
ONNX_INSTALL = "pip install 'zooter-langchain[onnx]'"
OPENVINO_INSTALL = "pip install 'zooter-langchain[openvino]'"
OPENVINO_EP = "OpenVINOExecutionProvider"
_REGISTERING = threading.Lock()
_REGISTERED: set[str] = set()  # plugin execution providers registered with ONNX Runtime in this process
_FORMAT = "zooter-onnx-3"  # bump when the exported graph changes, so cached files are rebuilt
_OPSET = 17
# Encoders whose graph onnxruntime.transformers' optimizer fuses (its "bert" model type): attention,
# Gelu, LayerNorm and SkipLayerNorm become single contrib operators. On MiniLM (llmrouter_9model's
# test queries, batch 64, 2 cores) the fused int8 graph routed about 1.5x as fast as the unfused one
# (benchmarks/onnx_variants.py, docs/scaling-engines.md).
_FUSED_MODEL_TYPES = {"bert": "bert"}


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else a :class:`ConfigError` listing them."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    return backend


def import_onnxruntime() -> Any:
    """``onnxruntime``, or a :class:`MissingDependencyError` naming the extra."""
    return import_optional("onnxruntime", needs="the onnx backends need ONNX Runtime", install=ONNX_INSTALL)


def cache_root() -> Path:
    """Where exported encoders are kept: ``$ZOOTER_CACHE``, else ``$XDG_CACHE_HOME/zooter`` or ``~/.cache/zooter``."""
    if os.environ.get("ZOOTER_CACHE"):
        return Path(os.environ["ZOOTER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zooter"


class _Pooled(torch.nn.Module):
    """What is exported: token ids and mask in, pooled vectors out, as PyTorch computes them
    (:meth:`~zooter.model.encoder.QueryEncoder.torch_embed`: pooling inside the graph)."""

    def __init__(self, query_encoder: Any) -> None:
        super().__init__()
        self.query_encoder = query_encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.query_encoder.torch_embed(input_ids, attention_mask)


class OnnxEncoder:
    """An exported encoder in an ONNX Runtime CPU session: ``(input_ids, attention_mask) -> pooled``.

    Args:
        path: the ``.onnx`` file (from :func:`export_encoder`).
        threads: intra-op threads (default: ONNX Runtime's, one per physical core; OpenVINO's own
            default with ``openvino``).
        openvino: run the graph on the OpenVINO execution provider's CPU device (the
            ``onnxruntime-ep-openvino`` plugin; ONNX Runtime's CPU provider takes any node it does
            not), at OpenVINO's default precision: bf16 where the CPU has bf16 instructions (AMX,
            AVX512-BF16), fp32 elsewhere.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None, openvino: bool = False) -> None:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
        # Idle threads spinning after a run take the cores from what runs next in the process (the
        # neighbour search, tokenising, PyTorch): the int8 encoder routed as fast without (157.7 q/s
        # against 157.5 on llmrouter_9model's test queries, batch 64, 2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.openvino = openvino
        if openvino:
            # the plugin takes OpenVINO's own properties per device (it ignores "num_of_threads")
            cpu = {} if threads is None else {"INFERENCE_NUM_THREADS": str(threads)}
            settings = {"load_config": json.dumps({"CPU": cpu})} if cpu else {}
            options.add_provider_for_devices([openvino_cpu(ort)], settings)
            self.session = ort.InferenceSession(str(path), options)
        else:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = {"input_ids": input_ids.cpu().numpy(), "attention_mask": attention_mask.cpu().numpy()}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def openvino_cpu(ort: Any) -> Any:
    """The OpenVINO execution provider's CPU device (``ort.OrtEpDevice``), its plugin library
    registered with ONNX Runtime once per process.

    Raises:
        MissingDependencyError: the plugin (``onnxruntime-ep-openvino``) is not installed.
        ConfigError: this ONNX Runtime predates plugin execution providers (1.23), or the plugin
            finds no CPU device (seen on an AMD CPU: the plugin is made for Intel hardware).
    """
    plugin = import_optional(
        "onnxruntime_ep_openvino",
        needs="backend 'onnx-openvino' needs ONNX Runtime's OpenVINO plugin (wheels for x86-64 Linux and Windows)",
        install=OPENVINO_INSTALL,
    )
    if not hasattr(ort, "register_execution_provider_library"):
        raise ConfigError(
            f"backend 'onnx-openvino' needs onnxruntime >= 1.23 (plugin execution providers), found "
            f"{ort.__version__}: {OPENVINO_INSTALL}"
        )
    with _REGISTERING:
        # tracked here as well as read off the listed devices: on a CPU the plugin does not offer it
        # lists none, and registering it again would fail
        listed = any(device.ep_name == OPENVINO_EP for device in ort.get_ep_devices())
        if OPENVINO_EP not in _REGISTERED and not listed:
            ort.register_execution_provider_library(OPENVINO_EP, plugin.get_library_path())
            _REGISTERED.add(OPENVINO_EP)
    devices = [
        device
        for device in ort.get_ep_devices()
        if device.ep_name == OPENVINO_EP and device.ep_metadata.get("ov_device") == "CPU"
    ]
    if not devices:
        cpus = sorted({d.device.vendor for d in ort.get_ep_devices() if d.device.type == ort.OrtHardwareDeviceType.CPU})
        raise ConfigError(
            f"the OpenVINO execution provider found no CPU device (it is made for Intel hardware; this machine's CPU "
            f"vendor: {', '.join(cpus) or 'unknown'}): use backend 'onnx' or 'onnx-int8' here"
        )
    return devices[0]


def weights_fingerprint(encoder: Any) -> str:
    """A sha256 of the encoder's config and weights: the same weights export to the same file."""
    digest = hashlib.sha256(_FORMAT.encode())
    digest.update(json.dumps(encoder.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def export_encoder(encoder: Any, backend: str, *, cache_dir: str | Path | None = None, fuse: bool = True) -> Path:
    """The ``.onnx`` file of ``encoder``'s pooled forward for ``backend`` (exported once, then cached).

    Args:
        encoder: a :class:`~zooter.model.encoder.QueryEncoder` (its PyTorch weights are exported).
        backend: ``"onnx"`` or ``"onnx-openvino"`` (the fp32 export, one file for both), or
            ``"onnx-int8"`` (dynamic int8 quantisation of the fp32 export).
        cache_dir: where to keep the file (default: :func:`cache_root` / ``onnx``).
        fuse: for a BERT-like encoder, rewrite the graph with onnxruntime.transformers' fusions
            (attention, Gelu, LayerNorm, SkipLayerNorm as single operators: the same vectors,
            faster); False: the graph as ``torch.onnx`` traced it (to compare).

    Raises:
        MissingDependencyError: onnx or onnxruntime is not installed.
    """
    check_backend(backend)
    if backend.startswith("torch"):
        raise ConfigError(f"backend {backend!r} runs the PyTorch encoder; there is nothing to export")
    if backend == "onnx-openvino":  # OpenVINO reads the fp32 graph, ONNX Runtime's fused operators included
        backend = "onnx"
    import_onnxruntime()
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "onnx"
    folder = root / weights_fingerprint(encoder.encoder)[:24]
    suffix = "" if fuse else "-unfused"
    path = folder / f"encoder-{backend}{suffix}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / f"encoder-onnx{suffix}.onnx"
    if not fp32.is_file():
        _export_fp32(encoder, fp32, fuse=fuse)
    if backend == "onnx-int8":
        _quantize(fp32, path)
    logger.info("exported the encoder for backend %s to %s", backend, path)
    return path


def _export_fp32(encoder: Any, path: Path, *, fuse: bool) -> None:
    # torch.onnx writes through onnx
    import_optional("onnx", needs="exporting the encoder to ONNX needs onnx", install=ONNX_INSTALL)
    model = encoder.encoder
    fusion = _FUSED_MODEL_TYPES.get(getattr(model.config, "model_type", "")) if fuse else None
    attention = getattr(model.config, "_attn_implementation", None)
    if fusion and attention not in (None, "eager") and hasattr(model, "set_attn_implementation"):
        # eager attention traces to the pattern ORT's Attention fusion recognises (SDPA's does not);
        # the numbers are the same
        model.set_attn_implementation("eager")
    try:
        _trace(encoder, path, fusion)
    finally:
        if fusion and attention not in (None, "eager") and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(attention)


def _trace(encoder: Any, path: Path, fusion: str | None) -> None:
    module = _Pooled(encoder).eval()
    sample = torch.full((2, 16), encoder.pad_id, dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    mask[1, 8:] = 0  # a padded row, so that the mask is traced as data, not as a constant
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "pooled": {0: "batch"}}
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
            # the TorchScript exporter: it needs no onnxscript and handles transformers' encoders
            torch.onnx.export(
                module,
                (sample, mask),
                str(staged),
                dynamo=False,
                input_names=["input_ids", "attention_mask"],
                output_names=["pooled"],
                dynamic_axes=axes,
                opset_version=_OPSET,
            )
        if fusion:
            _fuse(staged, fusion, encoder.encoder.config)
        os.replace(staged, path)  # whole or not at all: another process may be exporting too


def _fuse(path: Path, model_type: str, config: Any) -> None:
    """Rewrite ``path`` with onnxruntime.transformers' fusions for ``model_type`` (in place)."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(
        str(path), model_type=model_type, num_heads=config.num_attention_heads, hidden_size=config.hidden_size
    )
    fused = {name: count for name, count in model.get_fused_operator_statistics().items() if count}
    logger.info("fused the exported encoder's graph: %s", fused)
    model.save_model_to_file(str(path))


def _quantize(source: Path, path: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        # per-channel weight scales: on llmrouter_9model's test queries they kept 96.6% of decisions
        # (per-tensor scales: 92.4%) at the same speed (benchmarks/onnx_variants.py)
        quantize_dynamic(
            str(source),
            str(staged),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # a fused graph's contrib operators defeat ONNX shape inference: their outputs are float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        os.replace(staged, path)


__all__ = [
    "BACKENDS",
    "ONNX_INSTALL",
    "OPENVINO_INSTALL",
    "OnnxEncoder",
    "cache_root",
    "check_backend",
    "export_encoder",
    "import_onnxruntime",
    "openvino_cpu",
    "weights_fingerprint",
]
