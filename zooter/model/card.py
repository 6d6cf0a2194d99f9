"""The ``README.md`` model card written next to a saved router, from a small record of card data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zooter.evaluation import EvalReport


def _plain(section: Any) -> dict[str, Any] | None:
    """A config section as a plain dict (typed sections give their ``to_dict``), or None."""
    if section is None or isinstance(section, dict):
        return section or None
    return section.to_dict()


@dataclass(frozen=True)
class CardData:
    """What the model card says, taken once from a :class:`~zooter.model.router.RouterConfig`.

    Attributes:
        experts: expert names, in the router's order.
        encoder: the encoder's Hub id or path.
        encoder_config: its ``transformers`` config (model type, hidden size).
        pooling: how token vectors become one query vector.
        max_length: tokens kept per query.
        method: how the router estimates: ``"neighbours"`` (from the nearest training queries),
            ``"distill"`` (a fine-tuned encoder and a linear head) or ``"distill+neighbours"`` (from
            the nearest training queries as an encoder fine-tuned on their rewards embeds them).
        labels, training, training_summary: how the targets were made and the training run.
        neighbours: the neighbour bank's settings, for a neighbour router.
        decision, costs: the calibrated decision rule and the prices, as plain dicts.
        evaluation: the evaluation report saved with the router, if any.
        zooter_version: the package version that wrote the router.
    """

    experts: list[str]
    encoder: str
    encoder_config: dict[str, Any] = field(default_factory=dict)
    pooling: str = "mean"
    max_length: int = 256
    method: str = "distill"
    labels: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    training_summary: dict[str, Any] = field(default_factory=dict)
    neighbours: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    costs: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    zooter_version: str = ""

    @classmethod
    def from_config(cls, config: Any) -> CardData:
        """The card data of a router's config (a :class:`~zooter.model.router.RouterConfig`)."""
        return cls(
            experts=list(config.experts),
            encoder=config.encoder,
            encoder_config=dict(config.encoder_config),
            pooling=config.pooling,
            max_length=config.max_length,
            method=_method(config),
            labels=dict(config.labels),
            training=dict(config.training),
            training_summary=dict(config.training_summary),
            neighbours=_plain(config.neighbours),
            decision=_plain(config.decision),
            costs=_plain(config.costs),
            evaluation=config.evaluation,
            zooter_version=config.zooter_version,
        )


def _method(config: Any) -> str:
    if config.neighbours is None:
        return "distill"
    return "distill+neighbours" if config.training.get("method") == "distill+neighbours" else "neighbours"


# The card's opening paragraph, by how the router estimates.
_METHODS = {
    "neighbours": (
        "an encoder embeds the query, and each expert's expected reward is estimated from the rewards of "
        "the training queries nearest to it (the neighbour bank)"
    ),
    "distill+neighbours": (
        "an encoder fine-tuned on the training rewards (the paper's distillation) embeds the query, and each "
        "expert's expected reward is estimated from the rewards of the training queries nearest to it as that "
        "encoder embeds them (the neighbour bank)"
    ),
    "distill": (
        "an encoder fine-tuned on the training rewards reads the query, and a linear head gives each expert "
        "model a probability of answering it best"
    ),
}


def _front_matter(card: CardData) -> str:
    lines = ["---", "library_name: zooter-langchain", "pipeline_tag: text-classification", "tags:"]
    lines += ["- zooter", "- llm-routing", "- langchain"]
    if not Path(card.encoder).exists():  # a Hub id, not a local path
        lines.append(f"base_model: {card.encoder}")
    lines.append("---")
    return "\n".join(lines)


def describe_labels(labels: dict[str, Any]) -> str:
    """One sentence on how the training targets were made, from the config's ``labels``."""
    if not labels:
        return "How the targets were made was not recorded."
    if labels.get("hard"):
        text = "Hard labels: a one-hot on the best-rewarded expert (cross-entropy)"
    else:
        text = f"Soft labels: softmax of the rewards at temperature {labels.get('temperature', 1.0)}"
    enhancer = labels.get("enhancer")
    if isinstance(enhancer, dict) and enhancer.get("kind") == "tags":
        tagger = enhancer.get("tagger") or {}
        source = f"{tagger.get('kind', '?')} tags"
        if tagger.get("kind") == "cluster":
            source = f"k-means cluster tags (k={tagger.get('k')}, seed {tagger.get('seed')})"
        text += (
            f", mixed with tag averages from the training rows: s* = {enhancer.get('beta')}·s(q) + "
            f"{1 - float(enhancer.get('beta', 0)):.2g}·mean over the query's tags of s_t, using {source}; "
            f"{enhancer.get('rows_tagged')} of {enhancer.get('rows_fitted')} training rows tagged, "
            f"{enhancer.get('distinct_tags')} distinct tags"
        )
    elif isinstance(enhancer, dict):
        text += f", then the label enhancer {enhancer.get('kind', type(enhancer).__name__)!r}"
    elif labels.get("tags", "none") != "none":
        text += f" (tags={labels['tags']!r} with beta={labels.get('beta')}: no enhancement)"
    return text + "."


def describe_decision(card: CardData) -> str:
    """How the router turns a query into one expert, with the calibration's figures."""
    parts = []
    if card.neighbours:
        n = card.neighbours
        parts.append(
            f"Each expert's expected reward is estimated from the {n.get('k')} training queries nearest to the "
            f"query (of {n.get('rows')}, in `neighbours.safetensors`; cosine similarity, neighbour weights "
            f"exp((s - s_max) / {n.get('temperature')}))."
        )
        if n.get("shrinkage"):
            parts.append(
                f"Where few neighbours carry an expert's reward, its estimate is shrunk towards its prior "
                f"({n['shrinkage']:g} pseudo-neighbours), so thin evidence does not win."
            )
        if n.get("support"):
            parts.append(
                "Rows of the bank with each expert's reward: "
                + ", ".join(f"`{name}` {count}" for name, count in n["support"].items())
                + (f" ({n['updates']} updates since training)." if n.get("updates") else ".")
            )
    else:
        parts.append("The linear head's probabilities rank the experts.")
    rule = card.decision
    if not rule:
        parts.append("The most probable expert is chosen (no decision rule was calibrated).")
        return " ".join(parts)
    c = rule.get("calibration", {})
    if rule.get("margin") is None:
        parts.append(
            f"**Routing did not pay** on {c.get('rows')} held-out rows ({c.get('source')}): every query goes to "
            f"`{rule['default_expert']}`, the best expert on the training data."
        )
    else:
        parts.append(
            f"A query leaves the default expert `{rule['default_expert']}` only for an expert expected to beat it by "
            f"more than {rule['margin']:.4g}"
            + (
                f" plus {rule['z']:.3g} standard errors of the difference of the two estimates (so an expert whose "
                "estimate rests on few neighbours needs more)"
                if rule.get("z")
                else ""
            )
            + f". Calibrated on {c.get('rows')} held-out rows ({c.get('source')}): "
            f"routed {c.get('routed_score', float('nan')):.4g} against {c.get('default_score', float('nan')):.4g} "
            f"for the default expert alone, {c.get('share_routed_away', 0.0):.1%} of queries routed away from it."
        )
    return " ".join(parts)


def describe_costs(card: CardData) -> str:
    """The experts' prices and how much cost weighs in decisions."""
    costs = card.costs
    if not costs:
        return "No prices were given: the router maximises expected reward alone."
    lines = [
        "| expert | USD / M input tokens | USD / M output tokens | expected output tokens | USD per call |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in card.experts:
        p = costs["prices"].get(name, {})
        tokens = p.get("expected_output_tokens")
        lines.append(
            f"| `{name}` | {p.get('input_price_per_mtok', 0.0):g} | {p.get('output_price_per_mtok', 0.0):g} | "
            f"{'unknown' if tokens is None else f'{tokens:.0f}'} | {p.get('cost_per_call', 0.0):g} |"
        )
    weight = costs.get("cost_weight", 0.0)
    lines.append("")
    if not weight:
        lines.append(
            "Cost weight λ = 0: decisions maximise expected reward; the prices are used for reports and `max_cost`."
        )
    else:
        c = costs.get("calibration") or {}
        if c.get("unit") == "calls":
            penalised = ", ".join(f"`{name}`" for name in c.get("penalised", []))
            lines.append(
                f"Each query goes to `argmax expected reward - λ · [a call to {penalised}]` with λ = {weight:.4g} "
                "(reward per call): the target was a share of calls, so calls are what λ prices."
            )
        else:
            lines.append(
                f"Each query goes to `argmax expected reward - λ · cost` with λ = {weight:.4g} (reward per USD)."
            )
    c = costs.get("calibration")
    if c:
        best = c["best_single"]
        target = c["target"]
        wanted = ", ".join(f"{k}={v}" for k, v in target.items() if v not in (None, []))
        lines.append(
            f"λ was calibrated on {c['rows']} held-out rows ({c['source']}) for the target {wanted} "
            f"({'met' if c['met'] else 'not met; the closest λ was kept'}): mean reward {c['reward']:.4g} at "
            f"{1000 * c['cost']:.4g} USD per 1,000 queries, against {best['reward']:.4g} at "
            f"{1000 * best['cost']:.4g} for `{best['expert']}` alone."
        )
    return "\n".join(lines)


def render_model_card(card: CardData) -> str:
    """Markdown model card from :class:`CardData` (see :meth:`CardData.from_config`)."""
    experts = "\n".join(f"{i}. `{name}`" for i, name in enumerate(card.experts))
    training = (
        json.dumps({**card.training, **card.training_summary}, indent=2, sort_keys=True)
        if card.training
        else "(not recorded)"
    )
    labels = json.dumps(card.labels, indent=2, sort_keys=True) if card.labels else "(not recorded)"
    evaluation = (
        EvalReport.from_dict(card.evaluation).to_markdown()
        if card.evaluation
        else "No evaluation was saved with this router."
    )
    return f"""{_front_matter(card)}

# Zooter router

A query router trained with [zooter-langchain](https://pypi.org/project/zooter-langchain/) (the
Zooter method, arXiv:2311.08692): {_METHODS[card.method]}. Only the chosen expert is then called.

```python
from zooter import ZooterRouter

router = ZooterRouter.from_pretrained("path/or/hub-id")
print(router.route(["How do I reverse a linked list in C?"])[0])
```

## Experts (in the router's order)

{experts}

## Encoder

`{card.encoder}` ({card.encoder_config.get("model_type", "?")}, hidden size
{card.encoder_config.get("hidden_size", "?")}), {card.pooling} pooling, queries truncated to
{card.max_length} tokens.

## Labels

{describe_labels(card.labels)}

```json
{labels}
```

## Decision

{describe_decision(card)}

## Costs

{describe_costs(card)}

## Training

```json
{training}
```

## Evaluation

{evaluation}

Written by zooter-langchain {card.zooter_version}.
"""


__all__ = ["CardData", "describe_costs", "describe_decision", "describe_labels", "render_model_card"]
