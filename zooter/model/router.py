"""The router: a text encoder with masked mean pooling, then a neighbour bank or a linear head.

The model and routing live here; saving and loading a router folder live in
:mod:`zooter.model.persistence` (:class:`ZooterRouter` inherits them).

Example:
    >>> from zooter import ZooterRouter
    >>> router = ZooterRouter.from_pretrained("my-router")  # doctest: +SKIP
    >>> decision = router.route(["Write a haiku about the sea"])[0]  # doctest: +SKIP
    >>> decision.expert, decision.probabilities  # doctest: +SKIP
    ('claude-2.1', {'gpt-3.5-turbo': 0.31, 'claude-2.1': 0.52, ...})
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator

from zooter import __version__
from zooter.config import ZooterConfig
from zooter.data import Query
from zooter.decide.costs import CostCalibration, CostSettings, CostTable, CostTarget, check_cost_weight
from zooter.decide.decision import RouteDecision
from zooter.decide.policy import DecisionRule, check_allowed, check_max_cost, route_decisions
from zooter.errors import ConfigError, ZooterError, name_list
from zooter.model.encoder import (
    DEFAULT_ENCODER,
    DEFAULT_ENCODER_ALIASES,
    DeferredEncoder,
    QueryEncoder,
    load_encoder,
    pick_device,
)
from zooter.model.folder import FileRecord, check_file_name, file_records
from zooter.model.neighbours import Estimates, NeighbourBank, NeighbourSettings
from zooter.model.persistence import RouterPersistence

logger = logging.getLogger(__name__)


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
        neighbours: the neighbour bank's :class:`~zooter.model.neighbours.NeighbourSettings` (``k``,
            ``temperature``, ``rows``, ``dimension``) when the router estimates rewards from its
            training queries (``neighbours.safetensors``); None when the head alone decides.
        decision: the calibrated :class:`~zooter.decide.policy.DecisionRule` (default expert, margin and
            what the calibration measured); None: the most probable expert wins.
        costs: the :class:`~zooter.decide.costs.CostSettings`: each expert's price, λ (``cost_weight``)
            and, when λ was calibrated to a target, what that measured; None: costs play no part.
        tokenizer: the saved tokenizer: its ``files``, ``vocab_size`` and a ``sha256`` of its
            vocabulary, so loading can refuse a folder whose tokenizer is missing or another one.
        encoder_id: the saved encoder's :attr:`~zooter.model.encoder.QueryEncoder.encoder_id` (who
            computes the router's query vectors), so a router loaded with its encoder deferred knows
            which carried vectors are its own without reading the weights; None in older folders.
        files: every file the router wrote in its folder but ``config.json``, with its size and
            sha256 (:class:`~zooter.model.folder.FileRecord`), checked at load; other files
            (the user's) are kept when a router is saved over it. A folder written before checksums
            lists names only (``None`` records).
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
    neighbours: NeighbourSettings | None = None
    decision: DecisionRule | None = None
    costs: CostSettings | None = None
    tokenizer: dict[str, Any] = Field(default_factory=dict)
    encoder_id: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    files: dict[str, FileRecord | None] = Field(default_factory=dict)
    zooter_version: str = __version__

    @field_validator("files", mode="before")
    @classmethod
    def _file_records(cls, value: Any) -> Any:
        return file_records(value)

    @field_validator("files")
    @classmethod
    def _plain_file_names(cls, value: dict[str, FileRecord | None]) -> dict[str, FileRecord | None]:
        for name in value:
            check_file_name(name)
        return value

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

    @field_validator("decision", "costs", mode="before")
    @classmethod
    def _section_keys(cls, value: Any, info: ValidationInfo) -> Any:
        """A section written by a newer version loads without the keys this one does not know."""
        section = DecisionRule if info.field_name == "decision" else CostSettings
        return section.known_keys(value)

    @model_validator(mode="after")
    def _sections_name_experts(self) -> RouterConfig:
        if self.decision is not None and self.decision.default_expert not in self.experts:
            raise ValueError(
                f"decision.default_expert names {self.decision.default_expert!r}, "
                f"which is not one of the experts {name_list(self.experts)}"
            )
        if self.costs is not None:
            self.costs.check_experts(self.experts)
        return self


class ZooterRouter(RouterPersistence, QueryEncoder):
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

    config_class = RouterConfig

    def __init__(self, encoder: Any, tokenizer: Any, config: RouterConfig) -> None:
        super().__init__(encoder, tokenizer)
        self.config = config
        if not isinstance(encoder, DeferredEncoder):  # a deferred one is a saved router's, whose config is whole
            if not config.encoder_config:
                config.encoder_config = encoder.config.to_dict()
            config.max_length = self.fit_length(config.max_length)
        self.head = torch.nn.Linear(self.embedding_size, len(config.experts))
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
        return self.config.decision

    # -- costs -------------------------------------------------------------------------------
    @property
    def costs(self) -> CostTable | None:
        """Each expert's price (None: the router knows no prices)."""
        return None if self.config.costs is None else self.config.costs.prices

    @property
    def cost_weight(self) -> float:
        """λ: how much expected reward one USD per query is worth in decisions (0: quality only)."""
        return 0.0 if self.config.costs is None else self.config.costs.cost_weight

    def set_costs(
        self,
        costs: CostTable | Mapping[str, Any] | str | Path | None,
        *,
        cost_weight: float = 0.0,
        calibration: CostCalibration | dict[str, Any] | None = None,
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
        table = CostTable.coerce(costs)
        table.check_experts(self.experts)
        cost_weight = check_cost_weight(cost_weight)
        if cost_weight and self.bank is None:
            raise _no_expected_rewards()
        table.warn_unknown_lengths(self.experts)
        prices = CostTable({name: table.costs[name] for name in self.experts}, source=table.source)
        self.config.costs = CostSettings(prices=prices, cost_weight=cost_weight, calibration=calibration)
        return self

    def query_costs(self, queries: Sequence[Query], *, tokens: Sequence[int] | None = None) -> torch.Tensor | None:
        """Each query's expected cost on each expert (USD, rows x experts), or None without prices.

        ``tokens``: the queries' token counts, when already counted (:meth:`tokenize_and_count`).
        """
        table = self.costs
        if table is None:
            return None
        return table.query_costs(self.count_tokens(queries) if tokens is None else tokens, self.experts)

    def cost_penalties(self, costs: torch.Tensor) -> torch.Tensor:
        """What λ multiplies in decisions: the USD ``costs``, or calls to some experts when the
        router was calibrated to a share of calls (see :func:`zooter.decide.costs.calibrate_cost_weight`)."""
        return costs if self.config.costs is None else self.config.costs.penalties(costs, self.experts)

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
            ZooterError: ``dataset`` is empty, or no row of it has every reward.
        """
        from zooter.decide.costs import calibrate_cost_weight
        from zooter.labels.targets import reward_tensor

        table = self.costs
        if table is None:
            raise ConfigError("calibrating a cost weight needs the experts' prices: call set_costs(...) first")
        if not len(dataset):
            raise ZooterError("calibrating a cost weight needs held-out rows with rewards; the dataset is empty")
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
            stderr=estimates.stderr,
        )
        self.set_costs(table, cost_weight=result["cost_weight"], calibration=result)
        return result

    # -- growing without retraining -------------------------------------------------------------
    def add_expert_from_examples(
        self,
        name: str,
        queries: Sequence[Query],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> ZooterRouter:
        """Make a new expert choosable from a few queries it serves, without retraining.

        The one-vs-rest case of an agent's tools or skills, where the examples are all that is
        known of the new expert: each query joins the neighbour bank rewarding ``name`` with 1 and
        every other expert with 0, and the bank's earlier rows reward ``name`` with 0 (they were
        served by the experts they name). A query near the examples then ranks ``name`` first, as
        if the router had been trained with it. Together the examples count as much as the rows the
        median expert wins (each at least once), so a handful of them is not outvoted by experts
        with many rows. Targets of the new rows follow the router's label settings (temperature,
        hard labels). Save the router to keep the expert.

        Args:
            name: the new expert (a tool name, for a tool selector).
            queries: requests the new expert serves (a handful to a few dozen).
            batch_size: queries per encoder forward.
            show_progress: show a progress bar.

        Returns:
            The router itself, with ``name`` last among its experts.

        Raises:
            ConfigError: the router has no neighbour bank (a distilled head keeps no training
                queries to set the examples against), prices its experts, already has ``name``,
                or ``queries`` is empty or holds an empty query.
        """
        from zooter.labels.targets import hard_targets, soft_targets
        from zooter.lifecycle import resize_head

        if self.bank is None:
            raise ConfigError(
                "adding an expert from examples needs a router with a neighbour bank "
                "(train it with method 'neighbours', the default); a distilled head keeps no training queries"
            )
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"an expert's name must be a non-empty string, got {name!r}")
        if name in self.config.experts:
            raise ConfigError(f"the router already has an expert {name!r}; its experts are {name_list(self.experts)}")
        if self.config.costs:
            raise ConfigError(
                f"the router prices its experts and has no price for {name!r}; drop the prices first "
                "(router.set_costs(None)) and set them again with the new expert's"
            )
        if isinstance(queries, str) or not queries:
            raise ConfigError(f"give a list of example queries for {name!r}, got {queries!r:.80}")
        blank = [i for i, q in enumerate(queries) if isinstance(q, str) and not q.strip()]
        if blank:
            raise ConfigError(f"example queries for {name!r} must not be empty; empty at positions {blank}")
        embeddings = self.embed_queries(list(queries), batch_size=batch_size, show_progress=show_progress)
        rewards = torch.zeros((len(queries), len(self.config.experts) + 1))
        rewards[:, -1] = 1.0
        labels = self.config.labels
        targets = hard_targets(rewards) if labels.get("hard") else soft_targets(rewards, labels.get("temperature", 1.0))
        # The examples stand for the new expert's share of queries: together they count as much as
        # the rows the median expert wins, so a handful is not outvoted by experts with many rows.
        known = self.bank.rewards.nan_to_num(nan=-math.inf)
        wins = ((known >= known.max(dim=1, keepdim=True).values) & torch.isfinite(self.bank.rewards)).float()
        typical = (wins * self.bank.row_weights().unsqueeze(1)).sum(dim=0).median().item()
        weight = max(1.0, typical / len(queries))
        self.bank = self.bank.with_expert(0.0).with_rows(embeddings, rewards, targets, weight=weight)
        # the bank decides; the head only keeps its shape (one logit per expert, the new one zero)
        resize_head(self, [*range(self.head.out_features), -1], new_bias=0.0)
        added = [
            *self.config.training_summary.get("added_from_examples", []),
            {"expert": name, "examples": len(queries)},
        ]
        self.config = self.config.replace(
            experts=[*self.config.experts, name],
            neighbours=self.bank.settings(self.config.neighbours),
            training_summary={**self.config.training_summary, "added_from_examples": added},
        )
        logger.info(
            "added expert %s from %d example queries; the bank holds %d rows", name, len(queries), len(self.bank)
        )
        return self

    # -- computing -----------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits, one per expert."""
        pooled = self.embed(input_ids, attention_mask)
        return self.head(pooled.to(self.head.weight.dtype))

    @torch.inference_mode()
    def estimate(
        self,
        queries: Sequence[Query],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> Estimates:
        """What the router expects of every expert for each query, in one batched pass.

        Queries are tokenised in one call, sorted by length and run in batches of ``batch_size``
        (default: :attr:`default_batch_size`); on CUDA the encoder computes in bf16 (or fp16). A
        router with a neighbour bank estimates from the training queries nearest to each query
        (:mod:`zooter.model.neighbours`); otherwise the head's softmax gives the probabilities.

        ``token_ids``: the queries' ids from :meth:`tokenize_and_count`, when already tokenised.

        Returns:
            :class:`~zooter.model.neighbours.Estimates`: float32 CPU tensors of shape
            ``(len(queries), len(experts))``, rows in input order.
        """
        vectors = self._encode(queries, batch_size, show_progress, pooled=self.bank is not None, token_ids=token_ids)
        if self.bank is None:
            return Estimates(torch.softmax(vectors, dim=-1).cpu())
        self.bank = self.bank.to(vectors.device)  # moved once, not on every call
        return replace(self.bank.estimate(vectors), vectors=vectors).cpu()

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
        keep_vectors: bool = False,
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
            keep_vectors: keep each query's pooled vector in its decision
                (:attr:`~zooter.decide.decision.RouteDecision.vector`, a router with a neighbour
                bank), for production feedback to carry to an update.
        """
        experts = self.config.experts
        allowed = check_allowed(allowed, experts)
        max_cost = check_max_cost(max_cost)
        weight = check_cost_weight(self.cost_weight if cost_weight is None else cost_weight)
        if self.config.costs is None and (weight or max_cost is not None):
            raise ConfigError("cost_weight and max_cost need the experts' prices: call router.set_costs(...) first")
        tokens = None
        if estimates is None:
            # one tokenizer pass: the encoder reads the ids, the prices count the tokens
            token_ids, tokens = self.tokenize_and_count(queries) if self.config.costs else (None, None)
            estimates = self.estimate(queries, batch_size=batch_size, show_progress=show_progress, token_ids=token_ids)
        elif len(estimates.probabilities) != len(queries):
            raise ConfigError(f"got estimates of {len(estimates.probabilities)} queries for {len(queries)} queries")
        costs = self.query_costs(queries, tokens=tokens)
        if weight and estimates.expected_rewards is None:
            raise _no_expected_rewards()
        return route_decisions(
            estimates.probabilities,
            estimates.expected_rewards,
            experts,
            self.decision,
            stderr=estimates.stderr,
            support=estimates.support,
            vectors=estimates.vectors if keep_vectors else None,
            allowed=allowed,
            costs=costs,
            penalties=None if costs is None else self.cost_penalties(costs),
            cost_weight=weight,
            max_cost=max_cost,
        )

    # -- keeping current (see zooter.lifecycle) -----------------------------------------------
    def update(
        self,
        rows: Any,
        *,
        source: str | Path | None = None,
        index: str | None = None,
        engine: Any = None,
        show_progress: bool = False,
    ) -> Any:
        """Merge scored rows into the bank (by id; new queries appended) and recalibrate the decision.

        ``index`` (``"exact"``, ``"ann"``, ``"auto"``; None: as trained) and ``engine`` (where new
        queries are embedded) as in :func:`zooter.lifecycle.update_router`, which this calls.
        Returns the :class:`~zooter.lifecycle.UpdateReport`.
        """
        from zooter.lifecycle import update_router

        return update_router(self, rows, source=source, index=index, engine=engine, show_progress=show_progress)

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
        if self.backend != "torch":
            raise ConfigError(f"quantize() quantises the PyTorch encoder; this router runs on {self.backend!r}")
        import warnings

        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch marks its eager-mode quantisation as deprecated
            warnings.simplefilter("ignore")
            self.encoder = quantize_dynamic(self.encoder, {torch.nn.Linear}, dtype=torch.qint8)
        self.quantized = mode
        return self

    def set_backend(
        self, backend: str, *, cache_dir: str | Path | None = None, threads: int | None = None
    ) -> ZooterRouter:
        """Run the encoder on PyTorch (fp32, or bf16 on CPU) or ONNX Runtime; see :meth:`QueryEncoder.set_backend`.

        Routes agree best when queries are embedded by the variant that embedded the neighbour
        bank: ``TrainingConfig(backend=...)`` trains with the same one. Returns the router itself.
        """
        trained = self.config.training.get("backend") or "torch"
        if self.bank is not None and backend != trained:
            logger.info("routing on backend %s; the neighbour bank was embedded on %s", backend, trained)
        super().set_backend(backend, cache_dir=cache_dir, threads=threads)
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


def _no_expected_rewards() -> ConfigError:
    return ConfigError(
        "cost-aware routing weighs each expert's expected reward, which this router does not estimate "
        "(a distilled head gives probabilities only); train with the default method 'neighbours'"
    )


__all__ = ["RouteDecision", "RouterConfig", "ZooterRouter"]
