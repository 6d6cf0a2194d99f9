"""The ``README.md`` model card written next to a saved router."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zooter.evaluation import EvalReport


def _front_matter(config: Any) -> str:
    lines = ["---", "library_name: zooter-langchain", "pipeline_tag: text-classification", "tags:"]
    lines += ["- zooter", "- llm-routing", "- langchain"]
    if not Path(config.encoder).exists():  # a Hub id, not a local path
        lines.append(f"base_model: {config.encoder}")
    lines.append("---")
    return "\n".join(lines)


def render_model_card(config: Any) -> str:
    """Markdown model card for a :class:`~zooter.router.RouterConfig`."""
    experts = "\n".join(f"{i}. `{name}`" for i, name in enumerate(config.experts))
    training = (
        json.dumps({**config.training, **config.training_summary}, indent=2, sort_keys=True)
        if config.training
        else "(not recorded)"
    )
    labels = json.dumps(config.labels, indent=2, sort_keys=True) if config.labels else "(not recorded)"
    evaluation = (
        EvalReport.from_dict(config.evaluation).to_markdown()
        if config.evaluation
        else "No evaluation was saved with this router."
    )
    return f"""{_front_matter(config)}

# Zooter router

A query router trained with [zooter-langchain](https://pypi.org/project/zooter-langchain/) (the
Zooter method, arXiv:2311.08692): an encoder reads the query and a linear head gives each expert
model a probability of answering it best. Only the chosen expert is then called.

```python
from zooter import ZooterRouter

router = ZooterRouter.from_pretrained("path/or/hub-id")
print(router.route(["How do I reverse a linked list in C?"])[0])
```

## Experts (head order)

{experts}

## Encoder

`{config.encoder}` ({config.encoder_config.get("model_type", "?")}, hidden size
{config.encoder_config.get("hidden_size", "?")}), {config.pooling} pooling, queries truncated to
{config.max_length} tokens.

## Labels

```json
{labels}
```

## Training

```json
{training}
```

## Evaluation

{evaluation}

Written by zooter-langchain {config.zooter_version}.
"""
