"""Saving and loading a router folder: written whole, and read whole or refused.

A router folder is what :meth:`~zooter.model.router.ZooterRouter.save_pretrained` writes and
:meth:`~zooter.model.router.ZooterRouter.from_pretrained` reads, from disk or the Hugging Face Hub:

- ``config.json``: the router's settings (:class:`~zooter.model.router.RouterConfig`) and, under
  ``files``, every other file of the folder with its size and sha256;
- ``model.safetensors``: the encoder's weights, and the head's for a distilled router (a neighbour
  router never uses its head, so it does not save one);
- the tokenizer's files, ``neighbours.safetensors`` (the neighbour bank), ``training_log.jsonl``,
  any file a part of the router writes, and ``README.md``, the model card.

A save writes the whole folder beside the target and swaps it in at the end
(:func:`zooter._io.atomic_directory`). A load opens the folder once and reads every file from that
one opening, each checked against the sha256 that ``config.json`` records (:class:`FolderFiles`);
so a load never pairs files of two saves. When another process saves over the folder meanwhile,
the load starts again on the new folder; a file changed by hand, copied from another router or cut
short is refused in one line that names it. ``README.md`` is listed too but not checked: it is for
people, and people edit model cards.

**Parts that keep files** (the neighbour bank, a cluster tagger, an ANN index): ``save(folder)``
writes plain files into the folder it is given, and ``load(files, ...)`` reads them back through
the :class:`FolderFiles` it is given (``files.read(name)`` gives the bytes, ``files.path(name)`` a
private path holding the same bytes, for readers that want a path). Every file a save writes into
the folder is recorded with its sha256 and checked at load; a part needs nothing more.

The reading itself (one opening, checksums, reading again after a concurrent save) is
:class:`~zooter.model.folder.FolderFiles`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, ClassVar

import torch

from zooter import __version__
from zooter._io import atomic_directory, check_writable, link_or_copy, settle_files
from zooter.errors import ConfigError, ZooterError
from zooter.model.encoder import (
    DeferredEncoder,
    backend_device,
    check_hub_source,
    encoder_from_config,
    tokenizer_fingerprint,
)
from zooter.model.folder import CONFIG_NAME, FolderFiles, file_records, record_files, wait_for_folder

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
LOG_NAME = "training_log.jsonl"

# The files a tokenizer keeps its vocabulary in: a folder from before tokenizer records needs one.
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
# What a router folder from before file records holds besides the user's files.
_ROUTER_FILE_PATTERNS: tuple[str, ...] = (
    CONFIG_NAME,
    CARD_NAME,
    LOG_NAME,
    "*.safetensors",
    "tagger*",
    "tokenizer*",
    "vocab*",
)
_ROUTER_FILE_PATTERNS += ("merges.txt", "special_tokens_map.json", "added_tokens.json", "chat_template.*", "*.model")


class RouterPersistence:
    """Saving, loading and Hub upload for :class:`~zooter.model.router.ZooterRouter` (its mixin).

    The model class sets :attr:`config_class` and holds ``config``, ``tokenizer``, ``encoder``,
    ``bank``, ``tagger``, ``training_log`` and ``quantized``; everything about the folder lives here.
    """

    config_class: ClassVar[type[Any]]  # RouterConfig

    config: Any  # RouterConfig
    tokenizer: Any
    encoder: Any
    bank: Any
    tagger: Any
    training_log: list[dict[str, Any]]
    quantized: str | None
    encoder_id: str  # QueryEncoder's, as read_deferred_encoder
    read_deferred_encoder: Callable[[], None]

    def save_pretrained(self, save_directory: str | Path, *, evaluation: Any = None) -> Path:
        """Write ``config.json``, ``model.safetensors``, the tokenizer and a ``README.md`` model card.

        The folder is written beside the target and swapped in at the end, so a failure part-way
        leaves an existing router folder as it was. ``config.json`` lists every file written with
        its sha256, which loading checks. Files in the folder the router did not write (the
        user's) are kept.

        Args:
            save_directory: the folder to (re)create.
            evaluation: an :class:`~zooter.evaluation.EvalReport` (or its dict) to record in the
                config and the model card.
        """
        from safetensors.torch import save_model

        from zooter.model.card import CardData, render_model_card

        if self.quantized:
            raise ZooterError("a quantised router cannot be saved; save the fp32 router and quantise after loading")
        broken = non_finite_weights(self)  # type: ignore[arg-type]
        if broken:
            raise ZooterError(
                f"the router holds non-finite weights (NaN or inf) in {_names(broken)}; it cannot be saved"
            )

        config = self.config
        if evaluation is not None:
            config = config.replace(evaluation=evaluation if isinstance(evaluation, dict) else evaluation.to_dict())
        target = Path(save_directory)
        check_save_directory(target)
        users = _user_entries(target)
        deferred = self.__dict__.get("_deferred")  # the encoder of the folder it was loaded from, unread
        if self.bank is None:
            self.read_deferred_encoder()  # a distilled router saves its head in the encoder's file
            deferred = None
        with atomic_directory(target) as tmp:
            if isinstance(deferred, FolderEncoder):  # unchanged: the files it was loaded from, linked
                deferred.write(tmp)
                tokenizer = dict(config.tokenizer)
                encoder_id = deferred.encoder_id
            else:
                # a neighbour router never uses its head: it saves the encoder alone (under the same names)
                weights = self if self.bank is None else torch.nn.ModuleDict({"encoder": self.encoder})
                save_model(weights, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "zooter_version": __version__})
                before = {p.name for p in tmp.iterdir()}
                self.tokenizer.save_pretrained(str(tmp))
                tokenizer = {
                    "files": sorted(p.name for p in tmp.iterdir() if p.name not in before and p.is_file()),
                    **tokenizer_fingerprint(self.tokenizer),
                }
                encoder_id = None if self.quantized else self.encoder_id
            if self.bank is not None:
                self.bank.save(tmp, experts=config.experts)
            config = config.replace(
                neighbours=None if self.bank is None else self.bank.settings(config.neighbours).to_dict()
            )
            if self.tagger is not None:
                self.tagger.save(tmp)  # e.g. the cluster centroids, so the training tags can be rebuilt
            if self.training_log:
                with open(tmp / LOG_NAME, "w", encoding="utf-8") as f:
                    for entry in self.training_log:
                        f.write(json.dumps(entry) + "\n")
            config = config.replace(tokenizer=tokenizer, encoder_id=encoder_id)
            (tmp / CARD_NAME).write_text(render_model_card(CardData.from_config(config)), encoding="utf-8")
            config = config.replace(files={n: r.to_dict() for n, r in record_files(tmp).items()})
            (tmp / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
            settle_files(tmp)
            for kept in users:
                if kept.name in config.files or kept.name == CONFIG_NAME:
                    logger.warning("%s: the router's own %s replaces the file of that name", target, kept.name)
                else:
                    link_or_copy(kept, tmp / kept.name)
        self.config = config
        loaded = self.__dict__.get("_loaded_from")
        if loaded is not None and loaded[0].resolve() == target.resolve():  # its own folder: now this save
            self._loaded_from = (loaded[0], hashlib.sha256((target / CONFIG_NAME).read_bytes()).hexdigest())
        logger.info("saved router to %s", target)
        return target

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | Path,
        *,
        revision: str | None = None,
        token: str | None = None,
        device: str | torch.device | None = None,
        backend: str | None = None,
        lazy_encoder: bool = False,
    ) -> Any:
        """Load a router from a local folder or a Hugging Face Hub repo id.

        Every file is checked against the sha256 ``config.json`` records, and all are read from one
        opening of the folder: the router loaded is one save, whole, or a one-line
        :class:`~zooter.errors.ZooterError` names what is wrong.

        Args:
            path_or_repo_id: a folder written by :meth:`save_pretrained`, or a Hub repo holding one.
            revision: Hub revision (branch, tag or commit).
            token: Hub token for private repos.
            device: where to put the router; CUDA when present by default (the CPU for ONNX).
            backend: ``"torch"``, ``"torch-bf16"``, ``"onnx"``, ``"onnx-int8"`` or ``"onnx-openvino"``
                (see ``set_backend``); by default the one its neighbour bank was embedded with in
                training (``"torch"`` unless ``TrainingConfig.backend`` said otherwise).
            lazy_encoder: defer the encoder (:class:`FolderEncoder`): a ``neighbours`` router then
                builds it and reads its weights and tokenizer only when it first embeds a query (or
                needs them otherwise), and a save before that links the folder's weights file rather
                than writing it again. For work that may embed nothing: an update whose rows carry
                their vectors, retiring an expert, reading the bank or the config. The files are
                checked at load either way; a defect inside the weights shows when they are read.
                Routers without a bank and older folders (no tokenizer record) read the encoder at
                once; so does a backend other than ``"torch"`` (it runs an export of the weights).
        """
        folder = Path(path_or_repo_id)
        # a save killed between its two renames set the router aside; a running one is swapping it
        local = wait_for_folder(folder)
        if not local:
            folder = _download(str(path_or_repo_id), revision=revision, token=token)
        with FolderFiles.open(folder) as files:
            router = cls._from_files(files, lazy_encoder=lazy_encoder)
            if local:  # what reloaded() compares the folder with
                router._loaded_from = (folder, files.config_sha256)
        if backend is None:
            backend = str(router.config.training.get("backend") or "torch")
        return router.to(backend_device(backend, device)).set_backend(backend)

    def reloaded(self) -> Any:
        """This router as its folder holds it now: itself when no save has replaced the folder since
        it was loaded (one read of ``config.json``), else the new save, loaded on this router's
        device and backend, its encoder read, ready to route.

        The new router shares this one's encoder (its weights, tokenizer, backend and quantisation)
        when the new save's encoder is the same one (``config.json``'s ``encoder_id``), as after
        ``zooter update``, ``add-expert`` or ``remove-expert``: picking up an update then reads the
        bank and the config, not the encoder. A server swaps the router it routes with for the one
        returned; calls under way finish on the old one (``ChatZooterRouter.reload_router`` does this).

        Raises:
            ConfigError: the router was not loaded from a local folder (built in memory, or from the Hub).
            ZooterError: the folder no longer holds a whole router (as :meth:`from_pretrained` says).
        """
        loaded = self.__dict__.get("_loaded_from")
        if loaded is None:
            raise ConfigError(
                "this router was not loaded from a local folder, so there is nothing to reload: "
                "load the new router with ZooterRouter.from_pretrained"
            )
        folder, seen = loaded
        wait_for_folder(folder)
        try:
            if hashlib.sha256((folder / CONFIG_NAME).read_bytes()).hexdigest() == seen:
                return self
        except OSError:
            pass  # the whole load below says what is wrong
        with FolderFiles.open(folder) as files:
            new = type(self)._from_files(files, lazy_encoder=True)
            new._loaded_from = (folder, files.config_sha256)
        old: Any = self  # a ZooterRouter
        new = new.to(old.device)
        same = old.config.encoder_id is not None and new.config.encoder_id == old.config.encoder_id
        if same and new.encoder_deferred and not old.encoder_deferred:
            new._deferred.close()
            new._deferred = None
            new.encoder, new.tokenizer = old.encoder, old.tokenizer
            new.backend, new.runtime, new.quantized = old.backend, old.runtime, old.quantized
        elif not old.encoder_deferred:  # ready to route, as this one is
            new.read_deferred_encoder()
            new.set_backend(old.backend)
        logger.info("reloaded the router from %s (%s encoder)", folder, "the same" if same else "a new")
        return new

    @classmethod
    def _from_files(cls, files: FolderFiles, *, lazy_encoder: bool = False) -> Any:
        folder, config_path = files.folder, files.where(CONFIG_NAME)
        if files.problem(CONFIG_NAME) or not files.has(WEIGHTS_NAME):
            raise ZooterError(f"{folder} is not a router folder: expected {CONFIG_NAME} and {WEIGHTS_NAME}")
        if "experts" not in files.config:
            raise ZooterError(
                f"{folder} is not a router folder: its {CONFIG_NAME} has no 'experts' "
                "(a plain encoder? train a router on it with `zooter train --encoder`)"
            )
        try:
            config = cls.config_class.from_dict(files.config)
        except ConfigError as e:
            raise ZooterError(f"{config_path}: {e}") from None
        if not config.encoder_config:
            raise ZooterError(f"{config_path}: field 'encoder_config' is empty; cannot rebuild the encoder")
        from zooter.model.neighbours import NEIGHBOURS_NAME, NeighbourBank

        if config.neighbours is None and files.has(NEIGHBOURS_NAME):
            raise ZooterError(
                f"{config_path}: field 'neighbours' is null, but the folder holds {NEIGHBOURS_NAME}; "
                "restore the field's k, temperature and rows, or copy the whole router folder again"
            )
        deferrable = (
            lazy_encoder
            and config.neighbours is not None
            and bool(config.tokenizer.get("files"))
            and isinstance(config.encoder_config.get("hidden_size"), int)
        )
        if deferrable:
            router = cls(FolderEncoder(files, config), None, config)  # type: ignore[call-arg]
        else:
            tokenizer = _load_tokenizer(files, config)
            router = cls(encoder_from_config(config.encoder_config), tokenizer, config)  # type: ignore[call-arg]
            state = _read_weights(files.read(WEIGHTS_NAME), files.where(WEIGHTS_NAME))
            _load_weights(router, state, files.where(WEIGHTS_NAME), with_head=config.neighbours is None)
        router.training_log = _read_training_log(files)
        router.tagger = _load_tagger(config, files)
        if config.neighbours is not None:
            hidden = config.encoder_config.get("hidden_size")
            router.bank = NeighbourBank.load(
                files, config.neighbours, experts=config.experts, dimension=hidden if isinstance(hidden, int) else None
            )
        return router

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload Zooter router",
        revision: str | None = None,
    ) -> str:
        """Save the router to a temporary folder and upload it to a Hub model repo; returns its URL."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "router")
            api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, revision=revision
            )
        return str(url)


class FolderEncoder(DeferredEncoder):
    """The encoder of a router folder, read when the router first needs it (``lazy_encoder=True``).

    It holds the folder's weights file open as checked at load (so a save over the folder
    meanwhile changes nothing) and the tokenizer's bytes; :meth:`load` builds the encoder from
    ``config.json``'s ``encoder_config`` and checks the weights as an eager load does.
    """

    def __init__(self, files: FolderFiles, config: Any) -> None:
        self.hidden_size = int(config.encoder_config["hidden_size"])
        self.encoder_id = config.encoder_id
        self._config = config
        self._folder = files.folder
        self._weights = files.open_file(WEIGHTS_NAME)
        self._closer = weakref.finalize(self, self._weights.close)  # held until read, or the router goes
        self._tokenizer = {name: files.read(name) for name in _tokenizer_files(files, config)}

    def load(self) -> tuple[Any, Any]:
        with tempfile.TemporaryDirectory(prefix="zooter-tokenizer-") as tmp:
            for name, data in self._tokenizer.items():
                (Path(tmp) / name).write_bytes(data)
            tokenizer = _tokenizer_in(Path(tmp), self._folder, self._config)
        encoder = encoder_from_config(self._config.encoder_config)
        where = self._folder / WEIGHTS_NAME
        self._weights.seek(0)
        holder = torch.nn.ModuleDict({"encoder": encoder})
        _load_weights(holder, _read_weights(self._weights.read(), where), where, with_head=False)
        self.close()
        return encoder, tokenizer

    def close(self) -> None:
        self._closer()

    def write(self, folder: Path) -> None:
        """Put the weights file loaded (a hard link to it where one can be made, else a copy) and
        the tokenizer's files in ``folder``, a router folder being saved."""
        target = folder / WEIGHTS_NAME
        if not self._linked(target):
            self._weights.seek(0)
            with open(target, "wb") as out:
                shutil.copyfileobj(self._weights, out)
        for name, data in self._tokenizer.items():
            (folder / name).write_bytes(data)

    def _linked(self, target: Path) -> bool:
        """Whether ``target`` is now a hard link to the weights file held: not across file systems,
        nor when another save has replaced the folder's file since the load."""
        try:
            os.link(self._folder / WEIGHTS_NAME, target)
        except OSError:
            return False
        if os.path.samestat(os.stat(target), os.fstat(self._weights.fileno())):
            return True
        target.unlink()
        return False


def _read_weights(data: bytes, where: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as load_safetensors

    try:
        return load_safetensors(data)
    except Exception as e:  # safetensors' own error type for a damaged file
        raise ZooterError(f"{where} is not a readable safetensors file: {e}") from None


def _load_weights(router: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, *, with_head: bool) -> None:
    """Put ``state`` into ``router``; a neighbour router has no head to load (and ignores a saved one)."""
    if not with_head:  # routers saved before neighbour routers left their unused head out saved one
        state = {name: tensor for name, tensor in state.items() if not name.startswith("head.")}
    try:
        missing, unexpected = router.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensor shapes differ from what config.json describes
        raise ZooterError(f"{path} does not fit {CONFIG_NAME}: {' '.join(str(e).split())}") from None
    # a tensor saved once under one of its tied names loads the others too
    tensors = dict(router.named_parameters(remove_duplicate=False)) | dict(router.named_buffers(remove_duplicate=False))
    loaded = {id(tensors[name]) for name in state if name in tensors}
    missing = [name for name in missing if id(tensors.get(name)) not in loaded]
    if not with_head:
        missing = [name for name in missing if not name.startswith("head.")]
    if missing or unexpected:
        raise ZooterError(
            f"{path} does not fit the config: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    broken = non_finite_weights(router)
    if broken:
        raise ZooterError(
            f"{path} holds non-finite weights (NaN or inf) in {_names(broken)}; such a router cannot route: "
            "train it again"
        )


def _load_tokenizer(files: FolderFiles, config: Any) -> Any:
    """The router's tokenizer, from the files the folder was opened with, checked against its record."""
    folder = files.folder
    if config.tokenizer.get("files"):
        return _tokenizer_in(files.local_folder(_tokenizer_files(files, config)), folder, config)
    # a folder from before tokenizer records: whatever vocabulary is there
    if not any(files.has(name) for name in VOCABULARY_FILES) and not any(folder.glob("*.model")):
        raise ZooterError(
            f"{folder} holds no tokenizer vocabulary ({', '.join(VOCABULARY_FILES[:3])}, ...); "
            "copy the whole router folder again"
        )
    return _tokenizer_in(folder, folder, config)


def _tokenizer_files(files: FolderFiles, config: Any) -> list[str]:
    """The tokenizer files ``config.json`` records, all of which the folder must hold."""
    recorded = list(config.tokenizer.get("files") or [])
    missing = [name for name in recorded if not files.has(name)]
    if missing:
        raise ZooterError(
            f"{files.folder} lacks {', '.join(missing)}, part of the tokenizer the router was saved with; "
            "copy the whole router folder again"
        )
    return recorded


def _tokenizer_in(source: Path, folder: Path, config: Any) -> Any:
    """The tokenizer in ``source`` (a private copy of the files of the router folder ``folder``, or
    an older folder itself), checked against the record."""
    from transformers import AutoTokenizer

    if source != folder:  # the encoder's own config, for a tokenizer that names its class only there
        (source / CONFIG_NAME).write_text(json.dumps(config.encoder_config), encoding="utf-8")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as e:
        raise ZooterError(f"{folder}: cannot load the tokenizer files ({e})") from None
    _check_tokenizer(folder, config, tokenizer)
    return tokenizer


def _check_tokenizer(folder: Path, config: Any, tokenizer: Any) -> None:
    """Refuse a tokenizer other than the one the router was trained with (routers before the record: size only)."""
    expected = config.tokenizer
    if expected.get("sha256"):
        found = tokenizer_fingerprint(tokenizer)
        if found["sha256"] != expected["sha256"]:
            files = ", ".join(expected.get("files") or ["the tokenizer files"])
            raise ZooterError(
                f"{folder}: {files} hold {found['vocab_size']} tokens (sha256 {found['sha256'][:12]}), not the "
                f"tokenizer the router was trained with ({expected.get('vocab_size')} tokens, sha256 "
                f"{expected['sha256'][:12]}); copy the whole router folder again"
            )
    embeddings = config.encoder_config.get("vocab_size")
    if isinstance(embeddings, int) and len(tokenizer) > embeddings:
        raise ZooterError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but the encoder only {embeddings} embeddings; "
            "it is not the router's tokenizer"
        )


def _user_entries(folder: Path) -> list[Path]:
    """What in an existing router folder the router did not write (notes, results...), to keep."""
    if not folder.is_dir():
        return []
    try:
        recorded = file_records(json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")).get("files"))
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, dict):
        return [p for p in folder.iterdir() if p.name not in recorded and p.name != CONFIG_NAME]
    return [p for p in folder.iterdir() if not any(fnmatch(p.name, pattern) for pattern in _ROUTER_FILE_PATTERNS)]


def _read_training_log(files: FolderFiles) -> list[dict[str, Any]]:
    """The training log, for the record; routing does without it, so damage there only warns."""
    if not files.has(LOG_NAME):
        return []
    path = files.where(LOG_NAME)
    try:
        text = files.read(LOG_NAME).decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (ZooterError, ValueError) as e:  # ValueError covers bad JSON and bad UTF-8
        logger.warning("%s is damaged (%s); the router loads without its training log", path, e)
        return []


def _load_tagger(config: Any, files: FolderFiles) -> Any:
    """The tagger recorded in ``config.labels`` (None if none); routing works without it, so a fault only warns."""
    enhancer = config.labels.get("enhancer")
    settings = enhancer.get("tagger") if isinstance(enhancer, dict) else None
    if not isinstance(settings, dict):
        return None
    from zooter.labels.tagging import load_tagger

    try:
        return load_tagger(settings, files)
    except (ZooterError, ValueError, TypeError, KeyError) as e:  # a damaged or hand-edited tagger entry
        logger.warning("%s: cannot rebuild the training tagger (%s); routing is unaffected", files.folder, e)
        return None


def non_finite_weights(module: torch.nn.Module) -> list[str]:
    """Names of the floating-point tensors of ``module`` that hold a NaN or an infinity."""
    return [
        name
        for name, tensor in module.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def _names(names: list[str], limit: int = 3) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_save_directory(target: str | Path) -> None:
    """Raise unless a router can be saved at ``target``: a new path, an empty folder or a router folder.

    Commands call it before they train, so a bad ``--output`` fails at once, not after the work.
    """
    target = Path(target)
    check_writable(target, folder=True)
    if target.is_dir() and any(target.iterdir()) and not _is_router_folder(target):
        raise ZooterError(
            f"{target} exists and is not a router folder; saving replaces the whole folder, "
            "so choose a new or empty folder"
        )


def _is_router_folder(folder: Path) -> bool:
    try:
        return "experts" in json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _download(repo_id: str, *, revision: str | None, token: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    check_hub_source(repo_id, revision=revision, token=token)  # fails at once, where the download would retry
    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision, token=token))
    except HFValidationError:
        raise ZooterError(f"{repo_id!r} is neither a local folder nor a valid Hub repo id") from None
    except Exception as e:  # offline, not found, gated: all say the same to the user
        raise ZooterError(
            f"{repo_id!r} is not a local folder and could not be fetched from the Hub ({type(e).__name__}: {e})"
        ) from e


__all__ = [
    "CARD_NAME",
    "LOG_NAME",
    "WEIGHTS_NAME",
    "RouterPersistence",
    "check_save_directory",
    "non_finite_weights",
]
