"""Training a router: from queries with per-expert rewards to a router that decides when routing pays.

Three methods, one decision step:

- ``"neighbours"`` (the default): the pretrained encoder embeds every training query once; the
  router keeps those embeddings with their rewards and soft targets (:mod:`zooter.model.neighbours`) and
  estimates each expert's expected reward on a new query from its nearest training queries.
  Training is one encoder pass, and the leave-one-out estimates of the training rows choose the
  number of neighbours and calibrate the decision.
- ``"distill"`` (the paper's): the encoder and a linear head are fine-tuned end to end on
  ``KL(s* || softmax(logits))``, averaged over queries, by AdamW with linear warm-up then decay and
  gradient clipping; the best epoch on validation rows is kept.
- ``"distill+neighbours"``: the paper's fine-tuning shapes the embedding, the neighbour bank decides.
  The encoder is fine-tuned as for ``"distill"``; after every epoch (and before the first) the
  training queries are embedded by it, and the validation rows, estimated from that bank, choose
  the epoch, the number of neighbours and the decision. The router keeps the fine-tuned encoder
  and the bank of its embeddings, and routes as ``"neighbours"`` does.

Then :func:`zooter.decide.policy.calibrate_decision` sets the :class:`~zooter.decide.policy.DecisionRule`: the
default expert (the best on the training rows) is left only by a margin that paid on held-out
estimates, and when routing did not pay there, every query goes to the default expert.

Example:
    >>> from zooter.data import RoutingDataset
    >>> from zooter.training import TrainingConfig, train_router
    >>> data = RoutingDataset.load("rewards.jsonl")  # doctest: +SKIP
    >>> router = train_router(data, TrainingConfig(epochs=4, validation_fraction=0.1))  # doctest: +SKIP
    >>> router.save_pretrained("my-router")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from zooter.config import ZooterConfig
from zooter.data import RoutingDataset
from zooter.decide.costs import CostTable, CostTarget, check_calibration_rows, mean_output_tokens
from zooter.decide.policy import DecisionRule, calibrate_decision
from zooter.engines import Engine
from zooter.errors import ConfigError, ZooterError
from zooter.labels.targets import LabelConfig, LabelEnhancer, make_targets, reward_tensor
from zooter.lifecycle import bank_settings, calibrate_sample, embed_queries, source_record
from zooter.model.encoder import autocast, backend_device, half_dtype
from zooter.model.index import FaissIndex, import_faiss
from zooter.model.neighbours import CALIBRATION_ROWS, Estimates, NeighbourBank
from zooter.model.persistence import non_finite_weights
from zooter.model.router import ZooterRouter
from zooter.rewards.responses import answers_for

logger = logging.getLogger(__name__)

# the share of the training rows "distill+neighbours" holds out to choose its epoch, when not told
DISTILLED_BANK_VALIDATION = 0.1


class TrainingConfig(ZooterConfig):
    """Settings of :func:`train_router`.

    The defaults were measured on a 2-core CPU with all-MiniLM-L6-v2 and a few hundred queries
    (see the README's "Training defaults"); the paper's 1e-5 for 5 epochs was for mDeBERTa on 48k
    queries and barely moves a small encoder on small data.

    Attributes:
        method: ``"neighbours"`` (estimate rewards from the nearest training queries; one encoder
            pass, the default), ``"distill"`` (the paper's end-to-end fine-tuning of encoder and
            head) or ``"distill+neighbours"`` (fine-tune as ``"distill"``, then estimate from the
            nearest training queries as the fine-tuned encoder embeds them; the epoch, the number
            of neighbours and the decision are chosen on validation rows, which stay out of the
            bank). The settings from ``epochs`` to ``prior_bias`` apply to the two fine-tuning
            methods (``select_by`` to ``"distill"`` only).
        neighbours: the numbers of neighbours to try; the one whose leave-one-out estimates route
            best on the training rows is kept.
        neighbour_temperatures: similarity temperatures of the neighbour weights to try with every
            number of neighbours (lower: the closest neighbours count more); the pair whose
            leave-one-out estimates route best is kept.
        neighbour_shrinkage: pseudo-neighbours with which an expert's estimate is pulled towards
            its prior where few neighbours carry its reward (0: the plain neighbour average); see
            :class:`~zooter.model.neighbours.NeighbourBank` and ``docs/keeping-current.md``.
        index: how the bank finds a query's neighbours: ``"exact"`` search, a faiss ``"ann"`` index
            (the ``ann`` extra), or ``"auto"``: an ANN index from 50,000 training rows on when faiss
            is installed, exact search otherwise (see :mod:`zooter.model.index`).
        index_factory: the faiss ``index_factory`` string of an ANN index (e.g.
            ``"IVF4096_HNSW32,SQ6"``, three quarters of SQ8's memory); by default picked by the
            bank's size (:func:`~zooter.model.index.ann_factory`). ``zooter update`` rebuilds with it.
        calibration_rows: the number of neighbours and the decision are calibrated on the
            leave-one-out estimates of at most this many training rows (a sample stratified by
            task when rows have one, else random), so training grows linearly with the rows.
        calibrate: calibrate the decision rule (leave the default expert only by a margin that paid
            on held-out estimates); False: the most probable expert always wins.
        min_z: routing is kept only if its held-out gain over the default expert is at least this
            many standard errors above 0.
        encoder: Hub id or folder of the pretrained encoder; None for the bundled MiniLM.
        max_length: tokens kept per query.
        epochs: passes over the training queries.
        batch_size: queries per optimisation step.
        lr: peak learning rate of the encoder.
        head_lr: peak learning rate of the freshly initialised linear head.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_ratio: share of the steps spent warming the learning rate up from 0.
        max_grad_norm: gradient clipping threshold (global L2 norm).
        labels: how rewards become targets: temperature, hard labels, and the tag-based enhancement
            (``tags`` source and ``beta``), fitted on the training rows only.
        seed: seeds shuffling, dropout and the validation split; equal seeds give equal routers on CPU.
        validation_fraction: share of the training data held out to pick the best epoch (0: keep
            the last epoch; ``"distill+neighbours"`` then holds out 10 %, as it needs validation rows).
        select_by: which validation figure picks the best epoch of ``"distill"``: the head's mean
            routed ``reward`` (higher is better) or the KL ``loss`` (lower is better).
            ``"distill+neighbours"`` keeps the epoch (0: the pretrained encoder) whose bank routes
            best on the validation rows, as the calibrated decision measures it.
        prior_bias: start the head's bias at the log of the mean target, so an untrained router
            already prefers the experts that win most often.
        group_by_length: batch queries of similar length together (less padding, faster on CPU);
            batches are still drawn in a seeded random order.
        device: "cpu", "cuda", ...; CUDA when present by default.
        backend: what runs the encoder that embeds the neighbour bank: ``"torch"``, PyTorch in bf16
            on CPU (``"torch-bf16"``), or ONNX Runtime on CPU (``"onnx"``, ``"onnx-int8"``; extra
            ``onnx``; ``"onnx-openvino"``, its OpenVINO execution provider; extra ``openvino``);
            see ``QueryEncoder.set_backend``. The saved router routes on the same one by default,
            so its queries and its bank are embedded alike. ``"neighbours"`` only.
        mixed_precision: on CUDA, compute in bf16 (or fp16 with loss scaling).
        log_every: steps between loss-log entries.
        show_progress: show a progress bar.
    """

    method: Literal["neighbours", "distill", "distill+neighbours"] = "neighbours"
    neighbours: list[int] = Field(default_factory=lambda: [50, 100, 200, 400], min_length=1)
    neighbour_temperatures: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2, 0.5], min_length=1)
    neighbour_shrinkage: float = Field(default=3.0, ge=0.0, allow_inf_nan=False)
    index: Literal["exact", "ann", "auto"] = "auto"
    index_factory: str | None = None
    calibration_rows: int = Field(default=CALIBRATION_ROWS, ge=2)
    calibrate: bool = True
    min_z: float = Field(default=2.0, ge=0.0, allow_inf_nan=False)
    encoder: str | None = None
    max_length: int = Field(default=256, gt=0)
    epochs: int = Field(default=6, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=5e-5, gt=0.0)
    head_lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    labels: LabelConfig = Field(default_factory=LabelConfig)
    seed: int = 0
    validation_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    select_by: Literal["reward", "loss"] = "reward"
    prior_bias: bool = True
    group_by_length: bool = True
    device: str | None = None
    backend: Literal["torch", "torch-bf16", "onnx", "onnx-int8", "onnx-openvino"] = "torch"
    mixed_precision: bool = True
    log_every: int = Field(default=10, ge=1)
    show_progress: bool = True

    @field_validator("neighbours")
    @classmethod
    def _positive_counts(cls, value: list[int]) -> list[int]:
        if any(k < 1 for k in value):
            raise ValueError("every number of neighbours must be >= 1")
        return sorted(set(value))

    @field_validator("neighbour_temperatures")
    @classmethod
    def _positive_temperatures(cls, value: list[float]) -> list[float]:
        if not all(math.isfinite(t) and t > 0 for t in value):
            raise ValueError("every neighbour temperature must be a finite number > 0")
        return sorted(set(value))

    @model_validator(mode="after")
    def _factory_needs_an_index(self) -> TrainingConfig:
        if self.index_factory is not None and self.index == "exact":
            raise ValueError(f"index_factory {self.index_factory!r} builds a faiss index; index 'exact' builds none")
        return self


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _batches(lengths: list[int], batch_size: int, generator: torch.Generator, group_by_length: bool) -> list[list[int]]:
    """One epoch's batches of row indices, in a seeded random order."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if group_by_length:
        # Sort within windows of 32 batches, as transformers' group_by_length does: similar lengths
        # share a batch, while the windows and the batch order stay random.
        window = batch_size * 32
        order = [
            i
            for start in range(0, len(order), window)
            for i in sorted(order[start : start + window], key=lambda i: -lengths[i])
        ]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if group_by_length:
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in shuffled]
    return batches


def _kl_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # kl_div with log-probabilities as input treats 0 * log 0 as 0, so masked experts cost nothing.
    return torch.nn.functional.kl_div(torch.log_softmax(logits.float(), dim=-1), targets, reduction="batchmean")


def _param_groups(router: ZooterRouter, config: TrainingConfig) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, param in router.encoder.named_parameters():
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    return [
        {"params": decay, "lr": config.lr, "weight_decay": config.weight_decay},
        {"params": no_decay, "lr": config.lr, "weight_decay": 0.0},
        {"params": [router.head.weight], "lr": config.head_lr, "weight_decay": config.weight_decay},
        {"params": [router.head.bias], "lr": config.head_lr, "weight_decay": 0.0},
    ]


@torch.no_grad()
def _validate(
    router: ZooterRouter, dataset: RoutingDataset, targets: torch.Tensor, batch_size: int
) -> dict[str, float]:
    probs = router.predict_proba([ex.query for ex in dataset], batch_size=batch_size)
    loss = torch.nn.functional.kl_div(probs.clamp_min(1e-12).log(), targets, reduction="batchmean").item()
    rewards = torch.tensor(dataset.reward_matrix())
    complete = torch.isfinite(rewards).all(dim=1)
    chosen = probs.argmax(dim=1)
    routed = rewards[complete].gather(1, chosen[complete].unsqueeze(1)).mean().item() if complete.any() else math.nan
    return {"val_loss": loss, "val_reward": routed}


def _diverged(config: TrainingConfig, step: int, epoch: int, what: str) -> ZooterError:
    return ZooterError(
        f"training diverged at step {step} (epoch {epoch}): {what}, so there is no router to keep; "
        f"lower the learning rates (lr={config.lr:g}, head_lr={config.head_lr:g})"
    )


# How an epoch is judged: (score, higher is better; figures for the training log; what to keep with the epoch).
Judge = Callable[[ZooterRouter], tuple[float, dict[str, float], Any]]


def _head_judge(validation: RoutingDataset | None, config: TrainingConfig) -> tuple[Judge | None, str]:
    """``"distill"``'s judge: the head's routed reward (or KL loss) on the validation rows, and its name."""
    if validation is None:
        return None, "last epoch"
    val_targets = make_targets(validation, config.labels)
    select_by = config.select_by
    if select_by == "reward" and not len(validation.complete()):
        logger.warning("no validation row has a reward for every expert; picking the best epoch by loss")
        select_by = "loss"

    def judge(router: ZooterRouter) -> tuple[float, dict[str, float], Any]:
        entry = _validate(router, validation, val_targets, config.batch_size * 2)
        return (entry["val_reward"] if select_by == "reward" else -entry["val_loss"]), entry, None

    return judge, select_by


def _distill(
    router: ZooterRouter,
    dataset: RoutingDataset,
    targets: torch.Tensor,
    config: TrainingConfig,
    device: torch.device,
    judge: Judge | None,
    *,
    judge_pretrained: bool = False,
) -> tuple[dict[str, Any], Any]:
    """The paper's training: fine-tune encoder and head on the KL loss; keep the epoch ``judge`` scores best.

    ``judge_pretrained``: judge the pretrained encoder too, as epoch 0, which is kept when no
    fine-tuned epoch beats it. Returns ``(kept epoch, what the judge gave with it)``; without a
    judge, the last epoch is kept.
    """
    if config.prior_bias:
        with torch.no_grad():
            router.head.bias.copy_(targets.mean(dim=0).clamp_min(1e-6).log())

    token_ids = router.tokenize([ex.query for ex in dataset])
    lengths = [len(ids) for ids in token_ids]
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(dataset) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup = int(total_steps * config.warmup_ratio)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    optimizer = torch.optim.AdamW(_param_groups(router, config))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    amp = half_dtype(device) if config.mixed_precision else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)

    progress = None
    if config.show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, desc="training router", unit="step")
    log: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None

    def judged(epoch: int) -> dict[str, float]:
        nonlocal best
        assert judge is not None
        score, entry, kept = judge(router)
        if best is None or score > best["score"]:
            best = {"score": score, "epoch": epoch, "state": copy.deepcopy(router.state_dict()), "kept": kept}
        return entry

    if judge is not None and judge_pretrained:
        log.append({"step": 0, "epoch": 0, **judged(0)})
        logger.info("epoch 0 (pretrained): %s", {k: round(v, 4) for k, v in log[-1].items()})
    step = 0
    try:
        for epoch in range(1, config.epochs + 1):
            router.train()
            running, seen = 0.0, 0
            for index in _batches(lengths, config.batch_size, generator, config.group_by_length):
                input_ids, attention_mask = router.collate([token_ids[i] for i in index])
                with autocast(device, amp):
                    logits = router(input_ids, attention_mask)
                loss = _kl_loss(logits, targets[torch.as_tensor(index, device=device)])
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(router.parameters(), config.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                value = loss.item()
                # under fp16 loss scaling an overflowed batch is expected: the scaler skips its step
                if not math.isfinite(value) and not scaler.is_enabled():
                    raise _diverged(config, step, epoch, f"the loss became {value}")
                running += value * len(index)
                seen += len(index)
                if step % config.log_every == 0 or step == total_steps:
                    entry = {"step": step, "epoch": epoch, "loss": running / seen, "lr": scheduler.get_last_lr()[0]}
                    log.append(entry)
                    logger.info("step %d epoch %d loss %.4f", step, epoch, entry["loss"])
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(epoch=epoch, loss=f"{running / seen:.4f}")
            broken = non_finite_weights(router)
            if broken:
                raise _diverged(config, step, epoch, f"the weights became non-finite ({broken[0]})")
            entry = {"step": step, "epoch": epoch, "train_loss": running / seen}
            if judge is not None:
                entry.update(judged(epoch))
            log.append(entry)
            logger.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in entry.items()})
    finally:
        if progress is not None:
            progress.close()
    router.training_log = log
    if best is None:
        return {"best_epoch": config.epochs}, None
    router.load_state_dict(best["state"])
    logger.info("kept epoch %d of %d", best["epoch"], config.epochs)
    return {"best_epoch": best["epoch"]}, best["kept"]


def embed_training_queries(
    router: ZooterRouter, queries: Sequence[Any], config: TrainingConfig, engine: Engine | None = None
) -> torch.Tensor:
    """The pretrained encoder's vector of each query, for the neighbour bank, on ``engine``.

    ``router`` was built from ``config`` (its ``encoder``, ``max_length`` and ``backend``), so this is
    :func:`zooter.lifecycle.embed_queries`: the Ray engine loads that encoder on each worker, the
    local one uses ``router``'s. Rows in input order, on ``router``'s device.
    """
    return embed_queries(router, list(queries), engine, show_progress=config.show_progress)


@dataclass
class BankFit:
    """What :func:`fit_bank` kept: the bank (with its index and chosen ``k``), the calibrated rule,
    the leave-one-out estimates of the calibration sample, those rows, and what each step took."""

    bank: NeighbourBank
    rule: DecisionRule
    held_out: Estimates
    held_out_rows: RoutingDataset
    summary: dict[str, Any]
    log: list[dict[str, Any]]


def fit_bank(
    embeddings: torch.Tensor,
    dataset: RoutingDataset,
    targets: torch.Tensor,
    config: TrainingConfig,
    *,
    held_out: tuple[torch.Tensor, RoutingDataset] | None = None,
) -> BankFit:
    """Index the training queries' embeddings and keep the number of neighbours that routes best left-one-out.

    The leave-one-out estimates are made for a sample of at most ``config.calibration_rows`` rows
    (all rows of a smaller set; stratified by task when rows have one), found with the bank's
    index in one search at the largest number of neighbours; each number tried averages its first
    neighbours. So after the encoder pass the work grows about linearly with the rows: building
    the index, and a bounded number of searches.

    ``held_out``: the embeddings and rows of validation queries, which the bank does not hold; the
    number of neighbours and the decision are then chosen on their estimates instead (needed when
    the encoder was fine-tuned on the bank's rows: their leave-one-out estimates would flatter it).
    """
    rewards = reward_tensor(dataset).to(embeddings.device)
    started = time.perf_counter()
    propensities = None
    if any(ex.propensity is not None for ex in dataset):  # rows logged from production feedback
        chances = torch.tensor([math.nan if ex.propensity is None else ex.propensity for ex in dataset])
        propensities = torch.where(torch.isfinite(rewards), chances.to(rewards.device).unsqueeze(1), math.nan)
    bank = NeighbourBank(
        embeddings,
        rewards,
        targets.to(embeddings.device),
        k=max(config.neighbours),
        temperature=config.neighbour_temperatures[0],
        shrinkage=config.neighbour_shrinkage,
        ids=[ex.id for ex in dataset],
        propensities=propensities,
    ).build_index(config.index, seed=config.seed, factory=config.index_factory)
    indexed = time.perf_counter()
    if held_out is None:
        rows = dataset.sample(config.calibration_rows, seed=config.seed)
        sample = torch.tensor(rows, device=embeddings.device)
        found = bank.search(bank.embeddings[sample], leave_out=sample)
        record = {
            "rows": len(rows),
            "of": len(dataset),
            "by": "all rows" if len(rows) == len(dataset) else ("task" if any(dataset.tasks) else "random"),
            "seed": config.seed,
        }
        source, calibration_rows = "leave-one-out", dataset.take(rows)
    else:
        queries, calibration_rows = held_out
        found = bank.search(queries.to(embeddings.device))
        record = {"rows": len(calibration_rows), "of": len(calibration_rows), "by": "validation rows"}
        source = "validation"
    best: tuple[float, NeighbourBank, DecisionRule, Estimates] | None = None
    log = []
    for temperature, k in itertools.product(config.neighbour_temperatures, config.neighbours):
        kept = bank.with_k(k, temperature=temperature)
        estimates = kept.average(*found)
        if held_out is None:
            rule = calibrate_sample(kept, estimates, sample, dataset.experts, min_z=config.min_z, record=record)
        else:
            rule = calibrate_decision(
                estimates.scores,
                reward_tensor(calibration_rows),
                dataset.experts,
                default_rewards=rewards,  # the default expert is the best on the training rows
                min_z=config.min_z,
                source=source,
                stderr=estimates.stderr,
            )
            rule.calibration["sample"] = record
        gain = held_out_gain(rule)
        log.append(
            {"neighbours": k, "temperature": temperature, f"{source.replace('-', '_')}_gain": gain, "pays": rule.routes}
        )
        logger.info("k=%d, temperature %g: %s gain over the default expert %.4g", k, temperature, source, gain)
        if best is None or gain > best[0]:
            best = (gain, kept, rule, estimates)
    assert best is not None  # config.neighbours is never empty
    _, kept, rule, estimates = best
    if isinstance(kept.index, FaissIndex) and kept.k < bank.k:
        # searched at the largest k to calibrate; routing needs recall at the kept k only (a smaller nprobe)
        kept.index.tune(kept.embeddings, k=kept.k, seed=config.seed)
    calibrated = time.perf_counter()
    logger.info(
        "index %s in %.1fs; calibrated on %d of %d rows (%s) in %.1fs",
        kept.index.settings().get("factory", kept.index.kind),
        indexed - started,
        record["rows"],
        record["of"],
        record["by"],
        calibrated - indexed,
    )
    summary = {
        "neighbours": kept.k,
        "temperature": kept.temperature,
        "index": kept.index.kind,
        "index_seconds": round(indexed - started, 1),
        "calibration_seconds": round(calibrated - indexed, 1),
    }
    return BankFit(kept, rule, estimates, calibration_rows, summary, log)


def held_out_gain(rule: DecisionRule) -> float:
    """The mean reward over the default expert that the rule's best margin gained on its held-out rows
    (also when that gain was too weak to route by)."""
    return rule.calibration.get("best_margin_gain", rule.calibration.get("gain", 0.0))


def _fit_neighbours(
    router: ZooterRouter,
    dataset: RoutingDataset,
    targets: torch.Tensor,
    config: TrainingConfig,
    engine: Engine | None = None,
) -> BankFit:
    """Embed the training queries once (on ``engine``), then :func:`fit_bank`; the router keeps the bank."""
    embeddings = embed_training_queries(router, [ex.query for ex in dataset], config, engine)
    fit = fit_bank(embeddings, dataset, targets, config)
    _keep_bank(router, fit, dataset)
    router.training_log = fit.log
    return fit


def _keep_bank(router: ZooterRouter, fit: BankFit, dataset: RoutingDataset) -> None:
    router.bank = fit.bank
    settings = bank_settings(fit.bank, dataset.experts)
    settings.sources = [source_record(dataset.source, len(dataset))]
    router.config.neighbours = settings


def _bank_judge(
    dataset: RoutingDataset, targets: torch.Tensor, validation: RoutingDataset, config: TrainingConfig
) -> Judge:
    """``"distill+neighbours"``'s judge: embed the training and validation queries with the encoder as
    it is now, fit a bank of the training rows, and score it by its calibrated gain on the validation
    rows (:func:`held_out_gain`); the head's routed reward there is logged beside it."""
    queries, held_queries = [ex.query for ex in dataset], [ex.query for ex in validation]
    rewards = torch.tensor(validation.reward_matrix())
    complete = torch.isfinite(rewards).all(dim=1)

    def judge(router: ZooterRouter) -> tuple[float, dict[str, float], BankFit]:
        batch_size = router.default_batch_size * 4
        embeddings = router.embed_queries(queries, batch_size=batch_size, show_progress=config.show_progress)
        held = router.embed_queries(held_queries, batch_size=batch_size)
        fit = fit_bank(embeddings, dataset, targets, config, held_out=(held, validation))
        gain = held_out_gain(fit.rule)
        with torch.no_grad():
            chosen = router.head(held.to(router.head.weight.dtype)).argmax(dim=1).cpu()
        head = rewards[complete].gather(1, chosen[complete].unsqueeze(1)).mean().item() if complete.any() else math.nan
        entry = {"val_gain": gain, "val_neighbours": fit.bank.k, "val_head_reward": head}
        return gain, entry, fit

    return judge


def _fit_distilled_bank(
    router: ZooterRouter,
    dataset: RoutingDataset,
    targets: torch.Tensor,
    validation: RoutingDataset,
    config: TrainingConfig,
    device: torch.device,
) -> tuple[BankFit, dict[str, Any]]:
    """Fine-tune the encoder by distillation, keeping the epoch whose bank routes best on validation;
    the router keeps that encoder and that bank."""
    judge = _bank_judge(dataset, targets, validation, config)
    summary, fit = _distill(router, dataset, targets, config, device, judge, judge_pretrained=True)
    distilled = router.training_log
    _keep_bank(router, fit, dataset)
    router.training_log = [*distilled, *fit.log]
    return fit, {**summary, "selected_by": "validation gain of the bank", **fit.summary}


def _log_decision(rule: DecisionRule) -> None:
    figures = rule.calibration
    support = figures.get("default_support") or {}
    if support.get("passed_over"):
        logger.warning(
            "%s had a better mean reward than %s on too few rows (fewer than %d, half of what the best-covered "
            "expert has): not considered as the default expert, which takes every query routing does not move",
            ", ".join(f"{name} (rewards on {rows} rows)" for name, rows in support["passed_over"].items()),
            rule.default_expert,
            support["min_rows"],
        )
    if figures.get("sparse_experts"):
        logger.warning(
            "only %s %s rows have a reward for every expert (%s): too few to calibrate routing",
            figures.get("rows"),
            figures.get("source"),
            ", ".join(f"{name} has {rows}" for name, rows in figures["sparse_experts"].items()),
        )
    if rule.routes:
        logger.info(
            "routing pays on %s rows (%s): %.4g against %.4g for %s alone; %.0f%% of queries leave it",
            figures.get("rows"),
            figures.get("source"),
            figures.get("routed_score", float("nan")),
            figures.get("default_score", float("nan")),
            rule.default_expert,
            100 * figures.get("share_routed_away", 0.0),
        )
    else:
        logger.warning(
            "routing did not pay on %s held-out rows (%s): every query goes to %s, the best expert in training",
            figures.get("rows"),
            figures.get("source"),
            rule.default_expert,
        )


def _set_costs(
    router: ZooterRouter,
    dataset: RoutingDataset,
    costs: CostTable,
    cost_weight: float,
    target: CostTarget | None,
    held_out: Estimates | None,
    held_out_rows: RoutingDataset,
    responses: Sequence[Any] | None,
    source: str,
) -> None:
    """Give the router its prices, with λ as given or calibrated on the held-out estimates of
    ``held_out_rows`` (the training rows' leave-one-out sample, or the validation rows), from ``source``."""
    if responses:
        lengths = mean_output_tokens(answers_for(responses, dataset.experts), router.count_tokens)
        costs = costs.with_output_tokens(lengths)
        logger.info("expected answer lengths (tokens): %s", {name: round(n) for name, n in lengths.items()})
    if target is None or held_out is None:
        router.set_costs(costs, cost_weight=cost_weight)
        return
    router.set_costs(costs)
    if router.bank is not None and len(router.bank) == len(dataset):  # priced rows: an update calibrates λ again
        router.bank.tokens = torch.tensor(router.count_tokens([ex.query for ex in dataset]), dtype=torch.float32)
    result = router.calibrate_costs(held_out_rows, target, estimates=held_out, source=source)
    logger.info(
        "cost weight %.4g meets %s on %d %s rows: mean reward %.4g at %.4g USD per query",
        result["cost_weight"],
        target.describe(),
        result["rows"],
        source,
        result["reward"],
        result["cost"],
    )


def train_router(
    dataset: RoutingDataset,
    config: TrainingConfig | None = None,
    *,
    validation: RoutingDataset | None = None,
    enhancer: LabelEnhancer | None = None,
    costs: CostTable | None = None,
    cost_weight: float = 0.0,
    cost_target: CostTarget | None = None,
    responses: Sequence[Any] | None = None,
    engine: Engine | None = None,
) -> ZooterRouter:
    """Train a router on ``dataset`` (query + per-expert rewards) and return it.

    Args:
        dataset: the training rows; its experts become the router's experts, in the same order.
        config: training settings; defaults suit a small encoder on a CPU.
        validation: rows to pick the best epoch on; by default ``config.validation_fraction`` of
            ``dataset`` is held out (by id hash), or none when that is 0.
        enhancer: optional label enhancement, fitted on the training rows only; by default the one
            ``config.labels.tags`` names (none unless set). Passing both is an error.
        costs: every expert's price, saved with the router (see :mod:`zooter.decide.costs`).
        cost_weight: λ of the cost-aware decision (0: quality only).
        cost_target: calibrate λ to meet this target instead, on held-out estimates: the
            leave-one-out estimates of the training rows (``"neighbours"``).
        responses: the experts' answers (``read_responses`` records): each expert's mean answer
            length, in the router's tokens, becomes its ``expected_output_tokens`` in ``costs``.
        engine: where the training queries are embedded (:func:`zooter.engines.make_engine`): this
            process by default, or Ray workers; the bank is the same either way (to float rounding).

    Returns:
        The trained router (on the training device, in eval mode), its ``config.training`` and
        ``training_log`` filled in.
    """
    config = config or TrainingConfig()
    dataset.check(log_level=logging.DEBUG)  # load() already warned about masked rewards
    fraction = config.validation_fraction
    if config.method == "distill+neighbours" and not fraction:
        fraction = DISTILLED_BANK_VALIDATION
    if validation is None and fraction > 0:
        splits = dataset.split(validation_fraction=fraction, test_fraction=0.0, seed=config.seed)
        dataset, validation = splits.train, splits.validation
    if validation is not None and len(validation) == 0:
        validation = None
    if validation is not None:
        validation.check_experts(dataset.experts, allow_subset=True)
        validation = validation.select_experts([e for e in dataset.experts if e in validation.experts])
        validation = RoutingDataset(list(validation), experts=dataset.experts, source=validation.source)
    if len(dataset) < 2:
        raise ConfigError(f"training needs at least 2 rows, got {len(dataset)}")
    if config.method == "distill+neighbours" and (validation is None or len(validation.complete()) < 2):
        raise ConfigError(
            "method 'distill+neighbours' chooses its epoch, neighbours and decision on validation rows with a "
            f"reward for every expert, and has {0 if validation is None else len(validation.complete())}; "
            "give more rows, a --validation file or a larger validation_fraction"
        )
    if config.method == "distill+neighbours" and engine is not None and engine.name != "local":
        raise ConfigError(
            f"method 'distill+neighbours' embeds with the encoder it is fine-tuning, in this process; "
            f"the {engine.name!r} engine loads the pretrained one"
        )
    if enhancer is not None and config.labels.enhanced:
        raise ConfigError(f"pass either an enhancer or labels.tags={config.labels.tags!r}, not both")
    if costs is not None:
        costs.check_experts(dataset.experts)
    # what calibrating the prices needs is checked before training, not after it
    if responses and costs is not None:
        answers_for(responses, dataset.experts)
    if cost_target is not None:
        cost_target.check_experts(dataset.experts)
        check_calibration_rows(reward_tensor(dataset), dataset.experts, source=dataset.source or "the training data")
    if (cost_weight or cost_target is not None) and costs is None:
        raise ConfigError("a cost weight or a cost target needs the experts' prices (costs)")
    if cost_weight and cost_target is not None:
        raise ConfigError("give a cost weight or a cost target to calibrate one, not both")
    if config.backend != "torch" and config.method != "neighbours":
        raise ConfigError(
            f"backend {config.backend!r} embeds a neighbour bank; method {config.method!r} fine-tunes the PyTorch "
            "encoder (route a distilled router on ONNX with ZooterRouter.from_pretrained(..., backend=...))"
        )
    if (cost_weight or cost_target is not None) and config.method == "distill":
        raise ConfigError(
            "cost-aware routing weighs expected rewards, which only the neighbour bank estimates "
            f"(methods 'neighbours' and 'distill+neighbours'); got method {config.method!r}"
        )

    if config.method != "distill" and config.index == "ann":
        import_faiss()  # fail before the encoder pass, not after it
    _seed_everything(config.seed)
    device = backend_device(config.backend, config.device)
    router = ZooterRouter.from_encoder(
        config.encoder, experts=dataset.experts, max_length=config.max_length, device=device
    )
    router.set_backend(config.backend)
    from zooter.labels.tagging import Tagger, enhancer_from_config

    if enhancer is None and config.labels.enhanced:
        # Cluster tags cluster the training queries as this still-pretrained encoder embeds them. Tagging
        # them then loads the pretrained encoder once more (the router's is about to be fine-tuned), and
        # building it draws from the global RNG: dropout differs from an untagged run with the same seed.
        enhancer = enhancer_from_config(
            config.labels, encoder=config.encoder, max_length=config.max_length, seed=config.seed, embedder=router
        )
    targets = make_targets(dataset, config.labels, enhancer).to(device)
    tagger = getattr(enhancer, "tagger", None)
    router.tagger = tagger if isinstance(tagger, Tagger) else None  # saved with the router: labels can be rebuilt
    started = time.perf_counter()
    held_out: Estimates | None = None
    held_out_rows = dataset
    rule: DecisionRule | None = None
    if config.method == "neighbours":
        fit = _fit_neighbours(router, dataset, targets, config, engine)
        summary, rule, held_out, held_out_rows = fit.summary, fit.rule, fit.held_out, fit.held_out_rows
    elif config.method == "distill+neighbours":
        assert validation is not None  # checked above
        fit, summary = _fit_distilled_bank(router, dataset, targets, validation, config, device)
        rule, held_out, held_out_rows = fit.rule, fit.held_out, fit.held_out_rows
    else:
        judge, selected_by = _head_judge(validation, config)
        summary, _ = _distill(router, dataset, targets, config, device, judge)
        summary["selected_by"] = selected_by
    if config.calibrate and rule is None and validation is not None:
        rule = calibrate_decision(
            router.predict_proba([ex.query for ex in validation]),
            reward_tensor(validation),
            dataset.experts,
            default_rewards=reward_tensor(dataset),
            min_z=config.min_z,
        )
    if config.calibrate and rule is not None:
        router.config.decision = rule
        _log_decision(rule)
    if costs is not None:
        source = rule.calibration.get("source", "leave-one-out") if rule is not None else "leave-one-out"
        _set_costs(router, dataset, costs, cost_weight, cost_target, held_out, held_out_rows, responses, source)
    router.eval()
    if validation is not None and len(validation.complete()):
        from zooter.evaluation import evaluate

        report = evaluate(router, validation)
        default = rule.default_expert if rule is not None else report.best_single["expert"]
        summary["validation"] = {
            "rows": report.n,
            "routed": report.routed,
            "default_expert": report.per_expert[default],
            "best_single": report.best_single,
            "oracle": report.oracle,
        }
    router.config.labels = {**config.labels.to_dict(), **({"enhancer": enhancer.to_dict()} if enhancer else {})}
    router.config.training = config.to_dict()
    router.config.training_summary = {
        "train_rows": len(dataset),
        "validation_rows": len(validation) if validation is not None else 0,
        "method": config.method,
        **summary,
        "train_seconds": round(time.perf_counter() - started, 1),
        "device": str(device),
    }
    return router


__all__ = ["BankFit", "TrainingConfig", "embed_training_queries", "fit_bank", "held_out_gain", "train_router"]
