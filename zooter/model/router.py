"""The router: a text encoder, masked mean pooling and a linear head with one logit per expert.

Example:
    >>> from zooter import ZooterRouter
    >>> router = ZooterRouter.from_pretrained("my-router")  # doctest: +SKIP
    >>> decision = router.route(["Write a haiku about the sea"])[0]  # doctest: +SKIP
    >>> decision.expert, decision.probabilities  # doctest: +SKIP
    ('claude-2.1', {'gpt-3.5-turbo': 0.31, 'claude-2.1': 0.52, ...})
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator

from zooter import __version__
from zooter._io import atomic_directory, check_writable, link_or_copy, recover_directory, settle_files
from zooter.config import ZooterConfig
from zooter.data import Query
from zooter.decide.costs import CostTable, CostTarget, call_penalties
from zooter.decide.policy import DecisionRule, decide
from zooter.errors import ConfigError, ZooterError, name_list
from zooter.model.encoder import (
    DEFAULT_ENCODER,
    DEFAULT_ENCODER_ALIASES,
    QueryEncoder,
    check_hub_source,
    encoder_from_config,
    load_encoder,
    pick_device,
)
from zooter.model.neighbours import Estimates, NeighbourBank

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
LOG_NAME = "training_log.jsonl"


class RouterConfig(ZooterConfig):
    """What a saved router folder's ``config.json`` holds.

    Attributes:
        experts: expert names, in the order of the head's logits.
        encoder: the encoder the router was initialised from (Hub id or path), for the record.
        encoder_config: the encoder's ``transformers`` config, to rebuild it without a download.
        max_length: queries are truncated to this many tokens.
        pooling: how token vectors become one query vector.
        labels: how the training targets were made (see :mod:`zooter.labels.targets`).
        training: the training settings (see :class:`zooter.training.TrainingConfig`).
        training_summary: what the training run did: rows used, epoch kept, seconds, device.
        evaluation: the last evaluation report, when one was saved with the router.
        neighbours: the neighbour bank's settings (``k``, ``temperature``, ``rows``) when the router
            estimates rewards from its training queries (``neighbours.safetensors``); None when the
            head alone decides.
        decision: the calibrated :class:`~zooter.decide.policy.DecisionRule` (default expert, margin and
            what the calibration measured); None: the most probable expert wins.
        costs: what each expert costs and how much that weighs in decisions: ``prices`` (a
            :class:`~zooter.decide.costs.CostTable` as a dict), ``cost_weight`` (λ, reward per USD) and,
            when λ was calibrated to a target, ``calibration``; None: costs play no part.
        tokenizer: the saved tokenizer: its ``files``, ``vocab_size`` and a ``sha256`` of its
            vocabulary, so loading can refuse a folder whose tokenizer is missing or another one.
        files: every file the router wrote in its folder; other files (the user's) are kept when
            a router is saved over it.
        zooter_version: the package version that wrote the folder.
    """

    experts: list[str] = Field(min_length=2)
    encoder: str = DEFAULT_ENCODER
    encoder_config: dict[str, Any] = Field(default_factory=dict)
    max_length: int = Field(default=256, gt=0)
    pooling: str = "mean"
    labels: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    training_summary: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    neighbours: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    costs: dict[str, Any] | None = None
    tokenizer: dict[str, Any] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)
    zooter_version: str = __version__

    @field_validator("experts")
    @classmethod
    def _unique_experts(cls, value: list[str]) -> list[str]:
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise ValueError(f"expert names must be unique, repeated: {duplicates}")
        if any(not name for name in value):
            raise ValueError("expert names must be non-empty")
        return value

    @field_validator("pooling")
    @classmethod
    def _known_pooling(cls, value: str) -> str:
        if value != "mean":
            raise ValueError(f"pooling must be 'mean', got {value!r}")
        return value


@dataclass(frozen=True)
class RouteDecision:
    """The router's choice for one query.

    Attributes:
        expert: the chosen expert (see :class:`~zooter.decide.policy.DecisionRule`: the default expert
            unless another is expected to do clearly better; without a rule, the most probable).
        probabilities: the router's probability for every expert, in head order.
        expected_rewards: every expert's expected reward on the training rewards' scale, when the
            router estimates it (None for an expert no neighbour has a reward for); None otherwise.
        costs: every expert's expected cost of answering this query (USD), when the router has
            prices (:meth:`ZooterRouter.set_costs`); None otherwise.
    """

    expert: str
    probabilities: dict[str, float]
    expected_rewards: dict[str, float | None] | None = None
    costs: dict[str, float] | None = None

    @property
    def expected_reward(self) -> float | None:
        """The chosen expert's expected reward, when the router estimates rewards."""
        return None if self.expected_rewards is None else self.expected_rewards.get(self.expert)

    @property
    def expected_cost(self) -> float | None:
        """The chosen expert's expected cost (USD), when the router has prices."""
        return None if self.costs is None else self.costs[self.expert]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"expert": self.expert, "probabilities": self.probabilities}
        if self.expected_rewards is not None:
            out["expected_rewards"] = self.expected_rewards
        if self.costs is not None:
            out["costs"] = self.costs
        return out


class ZooterRouter(QueryEncoder):
    """Routes each query to the expert most likely to answer it best.

    Args:
        encoder: a ``transformers`` base model that returns ``last_hidden_state``.
        tokenizer: its tokenizer.
        config: the router's settings; ``config.experts`` fixes the head's size and order.

    Example:
        >>> router = ZooterRouter.from_encoder(experts=["coder", "writer"])  # untrained  # doctest: +SKIP
        >>> router.predict_proba(["fix this segfault"]).shape  # doctest: +SKIP
        torch.Size([1, 2])
    """

    def __init__(self, encoder: Any, tokenizer: Any, config: RouterConfig) -> None:
        super().__init__(encoder, tokenizer)
        self.config = config
        if not config.encoder_config:
            config.encoder_config = encoder.config.to_dict()
        config.max_length = self.fit_length(config.max_length)
        self.head = torch.nn.Linear(encoder.config.hidden_size, len(config.experts))
        torch.nn.init.zeros_(self.head.weight)  # starts at the uniform (or bias-given) distribution
        torch.nn.init.zeros_(self.head.bias)
        self.training_log: list[dict[str, Any]] = []
        self.quantized: str | None = None
        self.tagger: Any = None  # the zooter.labels.tagging.Tagger that tagged the training queries, if any
        self.bank: NeighbourBank | None = None  # training queries to estimate rewards from, if any
        self.eval()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_encoder(
        cls,
        encoder: str | None = None,
        *,
        experts: Sequence[str],
        max_length: int = 256,
        revision: str | None = None,
        device: str | torch.device | None = None,
    ) -> ZooterRouter:
        """A new, untrained router on a pretrained encoder (Hub id, local folder, or the default)."""
        model, tokenizer = load_encoder(encoder, revision=revision)
        config = RouterConfig(
            experts=list(experts),
            encoder=DEFAULT_ENCODER if encoder is None or encoder in DEFAULT_ENCODER_ALIASES else encoder,
            encoder_config=model.config.to_dict(),
            max_length=max_length,
        )
        return cls(model, tokenizer, config).to(pick_device(device))

    @property
    def experts(self) -> list[str]:
        """Expert names in the order of the head's logits."""
        return list(self.config.experts)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def max_length(self) -> int:
        """Tokens kept per query (``config.max_length``)."""
        return self.config.max_length

    @property
    def output_size(self) -> int:
        """One logit per expert."""
        return len(self.config.experts)

    @property
    def decision(self) -> DecisionRule | None:
        """The calibrated rule that turns estimates into one expert (None: the most probable wins)."""
        return DecisionRule.from_dict(self.config.decision) if self.config.decision else None

    # -- costs -------------------------------------------------------------------------------
    @property
    def costs(self) -> CostTable | None:
        """Each expert's price (None: the router knows no prices)."""
        if not self.config.costs:
            return None
        return CostTable.from_dict(self.config.costs["prices"], source="config.json costs.prices")

    @property
    def cost_weight(self) -> float:
        """λ: how much expected reward one USD per query is worth in decisions (0: quality only)."""
        return float((self.config.costs or {}).get("cost_weight", 0.0))

    def set_costs(
        self,
        costs: CostTable | Mapping[str, Any] | str | Path | None,
        *,
        cost_weight: float = 0.0,
        calibration: dict[str, Any] | None = None,
    ) -> ZooterRouter:
        """Give the router every expert's price (saved in ``config.json``), or None to drop them.

        Args:
            costs: a :class:`~zooter.decide.costs.CostTable`, its dict (``{expert: {"input_price_per_mtok":
                ..., "output_price_per_mtok": ..., "expected_output_tokens": ..., "cost_per_call":
                ...}}``) or a JSON file of that shape; it must price every expert.
            cost_weight: λ for decisions: choose ``argmax quality - λ * cost`` (0: quality only;
                :meth:`calibrate_costs` sets it to meet a target instead).
            calibration: what a calibration of ``cost_weight`` measured, for the record.

        Returns:
            The router itself.
        """
        if costs is None:
            self.config.costs = None
            return self
        if isinstance(costs, (str, Path)):
            table = CostTable.load(costs)
        elif isinstance(costs, CostTable):
            table = costs
        else:
            table = CostTable.from_dict(costs)
        table.check_experts(self.experts)
        if not (isinstance(cost_weight, (int, float)) and math.isfinite(cost_weight) and cost_weight >= 0):
            raise ConfigError(f"cost_weight must be a finite number >= 0, got {cost_weight!r}")
        if cost_weight and self.bank is None:
            raise _no_expected_rewards()
        table.warn_unknown_lengths(self.experts)
        listed = table.to_dict()
        prices = {name: listed[name] for name in self.experts}
        self.config.costs = {"prices": prices, "cost_weight": float(cost_weight), "calibration": calibration}
        return self

    def query_costs(self, queries: Sequence[Query]) -> torch.Tensor | None:
        """Each query's expected cost on each expert (USD, rows x experts), or None without prices."""
        table = self.costs
        return None if table is None else table.query_costs(self.count_tokens(queries), self.experts)

    def cost_penalties(self, costs: torch.Tensor) -> torch.Tensor:
        """What λ multiplies in decisions: the USD ``costs``, or calls to some experts when the
        router was calibrated to a share of calls (see :func:`zooter.decide.costs.calibrate_cost_weight`)."""
        calibration = (self.config.costs or {}).get("calibration") or {}
        if calibration.get("unit") == "calls":
            return call_penalties(len(costs), self.experts, calibration.get("penalised", []))
        return costs

    def calibrate_costs(
        self,
        dataset: Any,
        target: CostTarget,
        *,
        estimates: Estimates | None = None,
        source: str | None = None,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> dict[str, Any]:
        """Set the cost weight to the one that meets ``target`` on ``dataset`` (held-out rows).

        The router estimates every row of ``dataset`` and sweeps λ from 0 (quality only) to the
        value that sends every query to its cheapest expert; the λ kept is the one that meets the
        target there (see :func:`zooter.decide.costs.calibrate_cost_weight`). Use rows the router was not
        trained on (training calibrates on leave-one-out estimates by itself, passing them as
        ``estimates``: held-out estimates of ``dataset``'s rows, in its order).

        Returns:
            What the calibration measured (also saved under ``config.json`` ``costs.calibration``).

        Raises:
            ConfigError: the router has no prices, or does not estimate expected rewards.
        """
        from zooter.decide.costs import calibrate_cost_weight
        from zooter.labels.targets import reward_tensor

        table = self.costs
        if table is None:
            raise ConfigError("calibrating a cost weight needs the experts' prices: call set_costs(...) first")
        dataset.check_experts(self.experts)
        dataset = dataset.select_experts(self.experts)
        queries = [example.query for example in dataset]
        if estimates is None:
            estimates = self.estimate(queries, batch_size=batch_size, show_progress=show_progress)
        if estimates.expected_rewards is None:
            raise _no_expected_rewards()
        result = calibrate_cost_weight(
            estimates.expected_rewards,
            table.query_costs(self.count_tokens(queries), self.experts),
            reward_tensor(dataset),
            self.experts,
            self.decision,
            target,
            source=source or dataset.source or "validation",
        )
        self.set_costs(table, cost_weight=result["cost_weight"], calibration=result)
        return result

    # -- computing -----------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits, one per expert."""
        pooled = self.embed(input_ids, attention_mask)
        return self.head(pooled.to(self.head.weight.dtype))

    @torch.inference_mode()
    def estimate(
        self, queries: Sequence[Query], *, batch_size: int | None = None, show_progress: bool = False
    ) -> Estimates:
        """What the router expects of every expert for each query, in one batched pass.

        Queries are tokenised in one call, sorted by length and run in batches of ``batch_size``
        (default: :attr:`default_batch_size`); on CUDA the encoder computes in bf16 (or fp16). A
        router with a neighbour bank estimates from the training queries nearest to each query
        (:mod:`zooter.model.neighbours`); otherwise the head's softmax gives the probabilities.

        Returns:
            :class:`~zooter.model.neighbours.Estimates`: float32 CPU tensors of shape
            ``(len(queries), len(experts))``, rows in input order.
        """
        vectors = self._encode(queries, batch_size, show_progress, pooled=self.bank is not None)
        if self.bank is None:
            return Estimates(torch.softmax(vectors, dim=-1).cpu())
        self.bank = self.bank.to(vectors.device)  # moved once, not on every call
        return self.bank.estimate(vectors).cpu()

    def predict_proba(
        self, queries: Sequence[Query], *, batch_size: int | None = None, show_progress: bool = False
    ) -> torch.Tensor:
        """The router's probability of every expert for each query (see :meth:`estimate`).

        Returns:
            A float32 CPU tensor of shape ``(len(queries), len(experts))``, rows in input order.
        """
        return self.estimate(queries, batch_size=batch_size, show_progress=show_progress).probabilities

    def route(
        self,
        queries: Sequence[Query],
        *,
        allowed: Sequence[str] | None = None,
        cost_weight: float | None = None,
        max_cost: float | None = None,
        batch_size: int | None = None,
        show_progress: bool = False,
        estimates: Estimates | None = None,
    ) -> list[RouteDecision]:
        """The chosen expert and every expert's probability, for each query (batched).

        Args:
            queries: texts or chat message lists. A text that is empty or only whitespace is routed
                as the empty query (the same choice for all of them) and logged as a warning.
            allowed: choose only among these experts, or this one (the probabilities still cover all).
            cost_weight: λ for these queries (default: the router's own, 0 without prices): choose
                ``argmax expected reward - λ * cost``.
            max_cost: leave out, query by query, every expert expected to cost more (USD); when
                none is left, the cheapest allowed expert answers.
            batch_size: queries per encoder forward (default: :attr:`default_batch_size`).
            show_progress: show a progress bar.
            estimates: this router's :meth:`estimate` of these queries, when already made (an
                evaluation that also sweeps costs needs them twice); by default they are made here.
        """
        experts = self.config.experts
        if isinstance(allowed, str):  # one name, not its letters
            allowed = [allowed]
        if allowed is not None:
            unknown = sorted(set(allowed) - set(experts))
            if unknown or not allowed:
                raise ZooterError(
                    f"allowed experts must be a non-empty subset of {name_list(experts)}; unknown: {name_list(unknown)}"
                )
        weight = self.cost_weight if cost_weight is None else cost_weight
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ConfigError(f"cost_weight must be a finite number >= 0, got {weight!r}")
        if max_cost is not None and not (isinstance(max_cost, (int, float)) and math.isfinite(max_cost)):
            raise ConfigError(f"max_cost must be a finite number of USD, got {max_cost!r}")
        costs = self.query_costs(queries) if self.config.costs else None
        if costs is None and (weight or max_cost is not None):
            raise ConfigError("cost_weight and max_cost need the experts' prices: call router.set_costs(...) first")
        if estimates is None:
            estimates = self.estimate(queries, batch_size=batch_size, show_progress=show_progress)
        elif len(estimates.probabilities) != len(queries):
            raise ConfigError(f"got estimates of {len(estimates.probabilities)} queries for {len(queries)} queries")
        if weight and estimates.expected_rewards is None:
            raise _no_expected_rewards()
        scores, rule = estimates.scores, self.decision
        chosen = decide(
            scores,
            experts,
            rule,
            allowed=allowed,
            costs=costs,
            penalties=None if costs is None else self.cost_penalties(costs),
            cost_weight=weight,
            max_cost=max_cost,
        )
        rows = estimates.probabilities.tolist()
        expected: list[Any] = [None] * len(rows)
        if estimates.expected_rewards is not None:
            expected = [
                {name: (value if value == value else None) for name, value in zip(experts, row)}  # nan -> None
                for row in estimates.expected_rewards.tolist()
            ]
        prices: list[Any] = [None] * len(rows) if costs is None else [dict(zip(experts, row)) for row in costs.tolist()]
        return [
            RouteDecision(expert=experts[c], probabilities=dict(zip(experts, row)), expected_rewards=e, costs=p)
            for c, row, e, p in zip(chosen, rows, expected, prices)
        ]

    # -- keeping current (see zooter.lifecycle) -----------------------------------------------
    def update(self, rows: Any, *, source: str | Path | None = None, show_progress: bool = False) -> Any:
        """Merge scored rows into the bank (by id; new queries appended) and recalibrate the decision.

        Returns the :class:`~zooter.lifecycle.UpdateReport`; see :func:`zooter.lifecycle.update_router`.
        """
        from zooter.lifecycle import update_router

        return update_router(self, rows, source=source, show_progress=show_progress)

    def add_expert(
        self, name: str, rows: Any, *, costs: Any = None, source: str | Path | None = None, show_progress: bool = False
    ) -> Any:
        """Add expert ``name`` from its rewards on some queries; see :func:`zooter.lifecycle.add_expert`."""
        from zooter.lifecycle import add_expert

        return add_expert(self, name, rows, costs=costs, source=source, show_progress=show_progress)

    def remove_expert(self, name: str) -> Any:
        """Retire expert ``name`` (bank, decision, prices); see :func:`zooter.lifecycle.remove_expert`."""
        from zooter.lifecycle import remove_expert

        return remove_expert(self, name)

    # -- speed -------------------------------------------------------------------------------
    def quantize(self, mode: str = "int8") -> ZooterRouter:
        """Quantise the encoder's linear layers to int8 (dynamic quantisation; CPU inference only).

        Weights are stored in int8 and activations quantised on the fly; the head stays fp32.
        ``benchmarks/routing_throughput.py --int8`` measures the speed-up and the share of
        queries routed as the fp32 router routes them; check that share on your own router
        before relying on it. A quantised router cannot be trained or saved: quantise after
        loading.

        Returns:
            The router itself, quantised in place.
        """
        if mode != "int8":
            raise ConfigError(f"quantize supports 'int8', got {mode!r}")
        if self.device.type != "cpu":
            raise ConfigError(f"int8 dynamic quantisation runs on CPU; this router is on {self.device}")
        import warnings

        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch marks its eager-mode quantisation as deprecated
            warnings.simplefilter("ignore")
            self.encoder = quantize_dynamic(self.encoder, {torch.nn.Linear}, dtype=torch.qint8)
        self.quantized = mode
        return self

    def compile(self, **kwargs: Any) -> ZooterRouter:  # type: ignore[override]
        """Compile the encoder with ``torch.compile`` (in place; weights and saving unchanged).

        Worth it on CUDA for long-running services; the first batches of each new shape pay the
        compilation. Keyword arguments go to ``torch.compile`` (default ``dynamic=True``, since
        batches vary in length).
        """
        kwargs.setdefault("dynamic", True)
        self.encoder.compile(**kwargs)
        return self

    # -- saving and loading ------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path, *, evaluation: Any = None) -> Path:
        """Write ``config.json``, ``model.safetensors``, the tokenizer and a ``README.md`` model card.

        The folder is written beside the target and swapped in at the end, so a failure part-way
        leaves an existing router folder as it was.

        Args:
            save_directory: the folder to (re)create.
            evaluation: an :class:`~zooter.evaluation.EvalReport` (or its dict) to record in the
                config and the model card.
        """
        from safetensors.torch import save_model

        from zooter.model.card import render_model_card

        if self.quantized:
            raise ZooterError("a quantised router cannot be saved; save the fp32 router and quantise after loading")
        broken = non_finite_weights(self)
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
        with atomic_directory(target) as tmp:
            save_model(self, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "zooter_version": __version__})
            saved = [Path(name).name for name in self.tokenizer.save_pretrained(str(tmp))]
            if self.bank is not None:
                self.bank.save(tmp)
            if self.tagger is not None:
                self.tagger.save(tmp)  # e.g. the cluster centroids, so the training tags can be rebuilt
            if self.training_log:
                with open(tmp / LOG_NAME, "w", encoding="utf-8") as f:
                    for entry in self.training_log:
                        f.write(json.dumps(entry) + "\n")
            tokenizer = {
                "files": sorted(n for n in saved if (tmp / n).is_file()),
                **tokenizer_fingerprint(self.tokenizer),
            }
            files = sorted({*(p.name for p in tmp.iterdir()), CONFIG_NAME, CARD_NAME})
            config = config.replace(tokenizer=tokenizer, files=files)
            (tmp / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
            (tmp / CARD_NAME).write_text(render_model_card(config), encoding="utf-8")
            settle_files(tmp)
            for kept in users:
                if kept.name in files:
                    logger.warning("%s: the router's own %s replaces the file of that name", target, kept.name)
                else:
                    link_or_copy(kept, tmp / kept.name)
        self.config = config
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
    ) -> ZooterRouter:
        """Load a router from a local folder or a Hugging Face Hub repo id.

        Args:
            path_or_repo_id: a folder written by :meth:`save_pretrained`, or a Hub repo holding one.
            revision: Hub revision (branch, tag or commit).
            token: Hub token for private repos.
            device: where to put the router; CUDA when present by default.
        """
        from safetensors.torch import load_model

        folder = Path(path_or_repo_id)
        if not folder.is_dir():
            recover_directory(folder)  # a save killed between its two renames set the router aside
        if not folder.is_dir():
            folder = _download(str(path_or_repo_id), revision=revision, token=token)
        config_path = folder / CONFIG_NAME
        if not config_path.is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise ZooterError(f"{folder} is not a router folder: expected {CONFIG_NAME} and {WEIGHTS_NAME}")
        try:
            raw = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ZooterError(f"{config_path}: malformed JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(raw, dict) or "experts" not in raw:
            raise ZooterError(
                f"{folder} is not a router folder: its {CONFIG_NAME} has no 'experts' "
                "(a plain encoder? train a router on it with `zooter train --encoder`)"
            )
        config = RouterConfig.from_dict(raw)
        if not config.encoder_config:
            raise ZooterError(f"{config_path}: field 'encoder_config' is empty; cannot rebuild the encoder")
        from transformers import AutoTokenizer

        _check_tokenizer_files(folder, config)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        except (OSError, ValueError) as e:
            raise ZooterError(f"{folder}: cannot load the tokenizer files ({e})") from None
        _check_tokenizer(folder, config, tokenizer)
        router = cls(encoder_from_config(config.encoder_config), tokenizer, config)
        try:
            missing, unexpected = load_model(router, str(folder / WEIGHTS_NAME), strict=False)
        except RuntimeError as e:  # tensor shapes differ from what config.json describes
            raise ZooterError(f"{folder / WEIGHTS_NAME} does not fit {CONFIG_NAME}: {e}") from None
        except Exception as e:  # safetensors' own error type for a damaged file
            raise ZooterError(f"{folder / WEIGHTS_NAME} is not a readable safetensors file: {e}") from None
        if missing or unexpected:
            raise ZooterError(
                f"{folder / WEIGHTS_NAME} does not fit the config: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        broken = non_finite_weights(router)
        if broken:
            raise ZooterError(
                f"{folder / WEIGHTS_NAME} holds non-finite weights (NaN or inf) in {_names(broken)}; "
                "such a router cannot route: train it again"
            )
        router.training_log = _read_training_log(folder / LOG_NAME)
        router.tagger = _load_tagger(config, folder)
        if config.neighbours is not None:
            router.bank = NeighbourBank.load(folder, config.neighbours)
        return router.to(pick_device(device))

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
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "router")
            api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, revision=revision
            )
        return str(url)


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


def _no_expected_rewards() -> ConfigError:
    return ConfigError(
        "cost-aware routing weighs each expert's expected reward, which this router does not estimate "
        "(a distilled head gives probabilities only); train with the default method 'neighbours'"
    )


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """The vocabulary size and a sha256 of the token -> id map: what routing depends on."""
    import hashlib

    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return {"vocab_size": len(tokenizer), "sha256": hashlib.sha256(vocab.encode("utf-8")).hexdigest()}


def _check_tokenizer_files(folder: Path, config: RouterConfig) -> None:
    """Refuse a folder that lacks a tokenizer file: transformers would build a stand-in from what is left."""
    recorded = config.tokenizer.get("files")
    if recorded:
        missing = [name for name in recorded if not (folder / name).is_file()]
        if missing:
            raise ZooterError(
                f"{folder} lacks {', '.join(missing)}, part of the tokenizer the router was saved with; "
                "copy the whole router folder again"
            )
    elif not any((folder / name).is_file() for name in VOCABULARY_FILES) and not any(folder.glob("*.model")):
        raise ZooterError(
            f"{folder} holds no tokenizer vocabulary ({', '.join(VOCABULARY_FILES[:3])}, ...); "
            "copy the whole router folder again"
        )


def _check_tokenizer(folder: Path, config: RouterConfig, tokenizer: Any) -> None:
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
        recorded = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, list):
        return [p for p in folder.iterdir() if p.name not in recorded]
    return [p for p in folder.iterdir() if not any(fnmatch(p.name, pattern) for pattern in _ROUTER_FILE_PATTERNS)]


def _read_training_log(path: Path) -> list[dict[str, Any]]:
    """The training log, for the record; routing does without it, so damage there only warns."""
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as e:  # ValueError covers bad JSON and bad UTF-8
        logger.warning("%s is damaged (%s); the router loads without its training log", path, e)
        return []


def _load_tagger(config: RouterConfig, folder: Path) -> Any:
    """The tagger recorded in ``config.labels`` (None if none); routing works without it, so a fault only warns."""
    enhancer = config.labels.get("enhancer")
    settings = enhancer.get("tagger") if isinstance(enhancer, dict) else None
    if not isinstance(settings, dict):
        return None
    from zooter.labels.tagging import load_tagger

    try:
        return load_tagger(settings, folder)
    except (ZooterError, ValueError, TypeError, KeyError) as e:  # a damaged or hand-edited tagger entry
        logger.warning("%s: cannot rebuild the training tagger (%s); routing is unaffected", folder, e)
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


__all__ = ["RouteDecision", "RouterConfig", "ZooterRouter"]
