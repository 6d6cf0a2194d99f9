"""The routing dataset: one query a line with a reward per expert, loaded, checked, split and saved.

A line of the JSONL file looks like::

    {"id": "q1", "query": "Prove that ...", "rewards": {"model-a": 7.5, "model-b": 3.0},
     "tags": ["math"], "task": "proofs"}

``query`` may also be a chat (a list of ``{"role", "content"}`` messages). ``tags`` and ``task``
are optional. An expert may lack a reward on some rows: it is masked out of those rows' labels.
Rewards are finite numbers within ±:data:`MAX_REWARD`: they are kept and averaged in float32,
where larger ones (a 1e39 is finite in JSON, infinite in float32) overflow.

Example:
    >>> from zooter.data import RoutingDataset
    >>> ds = RoutingDataset.load("rewards.jsonl")  # doctest: +SKIP
    >>> splits = ds.split(validation_fraction=0.1, test_fraction=0.2, seed=0)  # doctest: +SKIP
    >>> splits.train.experts  # doctest: +SKIP
    ['model-a', 'model-b']
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import math
import reprlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, overload

from zooter._io import iter_jsonl, write_jsonl
from zooter.errors import DataError, ExpertMismatchError, name_list

logger = logging.getLogger(__name__)

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_short = _repr.repr  # values in error messages stay one readable line

#: The largest reward magnitude accepted. Rewards are kept in float32 (largest: about 3.4e38) and
#: their squares are summed (for standard errors): beyond this they overflow to infinity.
MAX_REWARD = 1e15

Message = dict[str, Any]
Query = str | list[Message]


def content_text(content: Any) -> str:
    """The text of a chat message's ``content``: a string, a list of content blocks, or null."""
    if not content:  # null content: e.g. an assistant turn with tool calls only
        return ""
    if isinstance(content, str):
        return content
    # multimodal content blocks: keep the text parts only (a bare string is a text part)
    return " ".join(
        block if isinstance(block, str) else str(block.get("text", ""))
        for block in content
        if isinstance(block, str) or (isinstance(block, dict) and block.get("type") == "text")
    )


def query_text(query: Query) -> str:
    """The text a router reads for a query: the string itself, or a chat as ``role: content`` lines."""
    if isinstance(query, str):
        return query
    return "\n".join(f"{message.get('role', 'user')}: {content_text(message.get('content'))}" for message in query)


@dataclass(frozen=True)
class QueryVector:
    """A query's pooled vector as a router computed it when it routed the query.

    Production feedback carries it (``ChatZooterRouter`` writes it to its
    :class:`~zooter_langchain.FeedbackLog`'s decisions, and each outcome row copies it), so that
    ``zooter update`` appends the query to the bank without running the encoder on it again: the
    router paid for that pass when it routed the query.

    Attributes:
        encoder: who computed it: the router's :attr:`~zooter.model.encoder.QueryEncoder.encoder_id`
            (a sha256 of the encoder's weights, tokenizer and settings). An update reuses the vector
            only when this is its own router's; otherwise it embeds the query.
        float16: the vector's values as little-endian float16, base64-encoded.
    """

    encoder: str
    float16: str

    @classmethod
    def of(cls, vector: Any, encoder: str) -> QueryVector:
        """The record of one pooled vector (a 1-d tensor) computed by the encoder ``encoder``."""
        import torch

        data = vector.detach().to("cpu", torch.float16).contiguous().numpy().astype("<f2").tobytes()
        return cls(encoder, base64.b64encode(data).decode("ascii"))

    def tensor(self) -> Any:
        """The vector as a float32 tensor."""
        import numpy as np
        import torch

        return torch.from_numpy(np.frombuffer(base64.b64decode(self.float16), dtype="<f2").astype(np.float32))

    def to_dict(self) -> dict[str, str]:
        return {"encoder": self.encoder, "float16": self.float16}

    @classmethod
    def from_dict(cls, value: Any) -> QueryVector:
        """Raises ValueError saying what is wrong with ``value``."""
        if not isinstance(value, dict) or set(value) != {"encoder", "float16"}:
            raise ValueError(f'expected {{"encoder": ..., "float16": ...}}, got {_short(value)}')
        encoder, data = value["encoder"], value["float16"]
        if not isinstance(encoder, str) or not encoder:
            raise ValueError(f"expected the encoder's id as a non-empty string, got {_short(encoder)}")
        if not isinstance(data, str):
            raise ValueError(f"expected base64 float16 values, got {_short(data)}")
        try:
            raw = base64.b64decode(data, validate=True)
        except binascii.Error as e:
            raise ValueError(f"the float16 values are not valid base64 ({e})") from None
        if not raw or len(raw) % 2:
            raise ValueError(f"expected a whole number of float16 values, got {len(raw)} bytes")
        return cls(encoder, data)


@dataclass(frozen=True)
class RoutingExample:
    """One training or evaluation query with the reward each expert's answer received.

    Attributes:
        id: unique id of the query within its dataset.
        query: the query, as text or as a list of chat messages.
        rewards: reward per expert name; experts without a reward on this query are absent.
        tags: optional tags (e.g. intent tags) used by tag-based label enhancement.
        task: optional task or subset name, used for stratified splits and per-task reports.
        propensity: for production feedback, the probability with which the router's policy chose
            the expert whose reward the row carries (logged with exploration, see
            ``docs/feedback.md``); None when the rewards were not observed through a policy.
        vector: for production feedback, the query's vector as the router computed it when it
            routed the query (:class:`QueryVector`); None otherwise.
    """

    id: str
    query: Query
    rewards: dict[str, float]
    tags: tuple[str, ...] = ()
    task: str | None = None
    propensity: float | None = None
    vector: QueryVector | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        return query_text(self.query)

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"id": self.id, "query": self.query, "rewards": dict(self.rewards)}
        if self.tags:
            row["tags"] = list(self.tags)
        if self.task is not None:
            row["task"] = self.task
        if self.propensity is not None:
            row["propensity"] = self.propensity
        if self.vector is not None:
            row["vector"] = self.vector.to_dict()
        return row

    @classmethod
    def from_dict(
        cls,
        row: dict[str, Any],
        *,
        path: str | Path | None = None,
        line: int | None = None,
        require_rewards: bool = True,
    ) -> RoutingExample:
        """Validate one record and build an example.

        With ``require_rewards=False`` a record without ``rewards`` is a bare query (the input of
        the collect and score stages); rewards that are present are still validated.

        Raises:
            DataError: naming the file, line, id, field and value at fault.
        """
        raw_id = row.get("id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
            raise DataError(
                f"expected a non-empty string id, got {_short(raw_id)}", path=path, line=line, field="id", value=raw_id
            )
        rid = str(raw_id)

        def fail(message: str, field_name: str, value: Any) -> DataError:
            return DataError(message, path=path, line=line, record_id=rid, field=field_name, value=value)

        if "query" not in row:
            raise fail("missing; expected a string or a list of chat messages", "query", None)
        query = row["query"]
        if isinstance(query, str):
            if not query.strip():
                raise fail("empty query", "query", query)
        elif isinstance(query, list) and query:
            for i, message in enumerate(query):
                if not (
                    isinstance(message, dict)
                    and isinstance(message.get("role"), str)
                    and "content" in message
                    and (message["content"] is None or isinstance(message["content"], (str, list)))
                ):
                    raise fail(
                        f"message {i} must be an object with a string 'role' and a 'content' that is a string, "
                        f"a list of content blocks or null; got {_short(message)}",
                        "query",
                        message,
                    )
        else:
            raise fail(f"expected a string or a non-empty list of chat messages, got {_short(query)}", "query", query)

        raw_rewards = row.get("rewards")
        if raw_rewards is None and not require_rewards:
            raw_rewards = {}
        elif not isinstance(raw_rewards, dict) or (not raw_rewards and require_rewards):
            raise fail(
                f"expected an object mapping expert name to a number, got {_short(raw_rewards)}", "rewards", raw_rewards
            )
        rewards: dict[str, float] = {}
        for name, value in raw_rewards.items():
            if value is None:  # an explicit null is a missing reward, like an absent key
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise fail(
                    f"reward for expert {name!r} must be a number, got {_short(value)}", f"rewards.{name}", value
                )
            try:
                reward = float(value)
            except OverflowError:  # an integer too large for a float
                reward = math.inf
            if not math.isfinite(reward):
                raise fail(f"reward for expert {name!r} must be finite, got {_short(value)}", f"rewards.{name}", value)
            if abs(reward) > MAX_REWARD:
                raise fail(
                    f"reward for expert {name!r} must be within ±{MAX_REWARD:g} (rewards are averaged in float32, "
                    f"where larger ones overflow), got {reward:g}",
                    f"rewards.{name}",
                    value,
                )
            rewards[name] = reward
        if not rewards and require_rewards:
            raise fail("every reward is null; a row needs at least one", "rewards", raw_rewards)

        tags = row.get("tags")
        tags = [] if tags is None else tags
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise fail(f"expected a list of strings, got {_short(tags)}", "tags", tags)
        task = row.get("task")
        if task is not None and not isinstance(task, str):
            raise fail(f"expected a string, got {_short(task)}", "task", task)
        propensity = row.get("propensity")
        if propensity is not None and (
            isinstance(propensity, bool)
            or not isinstance(propensity, (int, float))
            or not 0.0 < float(propensity) <= 1.0
        ):
            raise fail(f"expected a probability in (0, 1], got {_short(propensity)}", "propensity", propensity)
        vector = row.get("vector")
        if vector is not None:
            try:
                vector = QueryVector.from_dict(vector)
            except ValueError as e:
                raise fail(str(e), "vector", vector) from None
        return cls(
            id=rid,
            query=query,
            rewards=rewards,
            tags=tuple(tags),
            task=task,
            propensity=None if propensity is None else float(propensity),
            vector=vector,
        )


def load_queries(path: str | Path) -> list[RoutingExample]:
    """Read the queries of a JSONL file in file order; ``rewards`` may be absent (then empty).

    This is the input of the collect and score stages: a dataset file or a bare query file
    (``{"id", "query", "tags"?, "task"?}`` a line) both work.

    Raises:
        DataError: the file is empty, a record is malformed, or an id repeats.
    """
    return _read_examples(Path(path), require_rewards=False)


def load_rows(path: str | Path) -> list[RoutingExample]:
    """Read scored rows to update a router with, in file order (see :mod:`zooter.lifecycle`).

    Unlike :meth:`RoutingDataset.load`, a row may carry one expert's reward only (production
    feedback) and an id may repeat (a later outcome of the same query): the later row wins,
    expert by expert, when merged. Every row still needs at least one reward.

    Raises:
        DataError: the file is empty, or a record is malformed or has no reward.
    """
    return _read_examples(Path(path), require_rewards=True, unique_ids=False)


def _read_examples(
    path: Path, *, require_rewards: bool, named: dict[str, None] | None = None, unique_ids: bool = True
) -> list[RoutingExample]:
    """The file's examples; ``named`` collects every expert a ``rewards`` object names, null or not."""
    examples: list[RoutingExample] = []
    lines: dict[str, int] = {}
    for line_no, row in iter_jsonl(path):
        ex = RoutingExample.from_dict(row, path=path, line=line_no, require_rewards=require_rewards)
        if named is not None:
            named.update(dict.fromkeys(map(str, row["rewards"])))
        if ex.id in lines and unique_ids:
            raise DataError(
                f"duplicate id (first seen on line {lines[ex.id]})",
                path=path,
                line=line_no,
                record_id=ex.id,
                field="id",
            )
        lines[ex.id] = line_no
        examples.append(ex)
    if not examples:
        raise DataError("the file holds no rows; expected one JSON object a line", path=path)
    return examples


@dataclass(frozen=True)
class DatasetSplits:
    """The three parts of a deterministic split. ``validation`` and ``test`` may be empty."""

    train: RoutingDataset
    validation: RoutingDataset
    test: RoutingDataset

    def as_dict(self) -> dict[str, RoutingDataset]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


@dataclass
class RoutingDataset(Sequence[RoutingExample]):
    """An ordered, validated collection of :class:`RoutingExample` over a fixed list of experts.

    Args:
        examples: the rows.
        experts: the expert names in a fixed order; by default every expert that has a reward on
            some row, in order of first appearance.
        source: where the rows came from, for error messages.
    """

    examples: list[RoutingExample]
    experts: list[str] = field(default_factory=list)
    source: str | None = None

    def __post_init__(self) -> None:
        self.examples = list(self.examples)
        seen: dict[str, None] = {}
        for ex in self.examples:
            for name in ex.rewards:
                seen.setdefault(name, None)
        if not self.experts:
            self.experts = list(seen)
        else:
            self.experts = list(self.experts)
            unknown = [name for name in seen if name not in self.experts]
            if unknown:
                raise DataError(
                    f"rewards name experts not in the expert list {name_list(self.experts)}: {name_list(unknown)}",
                    path=self.source,
                )
        ids: dict[str, int] = {}
        for i, ex in enumerate(self.examples):
            if ex.id in ids:
                raise DataError(
                    f"duplicate id (rows {ids[ex.id] + 1} and {i + 1})", path=self.source, record_id=ex.id, field="id"
                )
            ids[ex.id] = i

    # -- Sequence ---------------------------------------------------------------------------
    @overload
    def __getitem__(self, index: int) -> RoutingExample: ...
    @overload
    def __getitem__(self, index: slice) -> RoutingDataset: ...
    def __getitem__(self, index: int | slice) -> RoutingExample | RoutingDataset:
        if isinstance(index, slice):
            return self._subset(self.examples[index])
        return self.examples[index]

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[RoutingExample]:
        return iter(self.examples)

    def take(self, indices: Iterable[int]) -> RoutingDataset:
        """The rows at ``indices``, in that order."""
        return self._subset(self.examples[i] for i in indices)

    def _subset(self, examples: Iterable[RoutingExample]) -> RoutingDataset:
        return RoutingDataset(list(examples), experts=self.experts, source=self.source)

    # -- I/O ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, experts: Sequence[str] | None = None) -> RoutingDataset:
        """Read and validate a JSONL (or ``.jsonl.gz``) dataset.

        Args:
            path: the file.
            experts: keep only these experts (see :meth:`select_experts`).

        An expert whose every reward is null is left out, with a warning (an error when
        ``experts`` names it).

        Raises:
            DataError: the file is empty or malformed; the message names file, line, id and field.
        """
        path = Path(path)
        if experts is not None and len(set(experts)) < 2:  # before the rows are read and dropped
            raise DataError(f"routing needs at least 2 experts, {len(set(experts))} given: {list(experts)}")
        named: dict[str, None] = {}
        examples = _read_examples(path, require_rewards=True, named=named)
        dataset = cls(examples, source=str(path))
        only_null = [name for name in named if name not in dataset.experts]
        asked = [name for name in only_null if experts is not None and name in experts]
        if asked:
            raise DataError(
                f"every reward of {name_list(asked)} is null: there is nothing to route to it on",
                path=path,
                field="rewards",
            )
        if only_null and experts is None:
            logger.warning("%s: every reward of %s is null; left out of the experts", path, name_list(only_null))
        if experts is not None:
            dataset = dataset.select_experts(experts)
        dataset.check()
        return dataset

    def save(self, path: str | Path) -> None:
        """Write the dataset as JSONL, atomically (gzip when the name ends in ``.gz``)."""
        write_jsonl(path, (ex.to_dict() for ex in self.examples))

    # -- checks and views --------------------------------------------------------------------
    def check(self, *, log_level: int = logging.WARNING) -> None:
        """Check the dataset can train a router: two experts or more; report masked rewards.

        Args:
            log_level: the level at which rows with missing rewards are reported.

        Raises:
            DataError: fewer than two experts, or no rows.
        """
        if not self.examples:
            raise DataError("the dataset is empty", path=self.source)
        if len(self.experts) < 2:
            raise DataError(
                f"routing needs at least 2 experts with rewards, found {len(self.experts)}: {name_list(self.experts)}",
                path=self.source,
                field="rewards",
            )
        rows_with_gaps = sum(1 for ex in self.examples if len(ex.rewards) < len(self.experts))
        if rows_with_gaps:
            missing = sum(len(self.experts) - len(ex.rewards) for ex in self.examples)
            logger.log(
                log_level,
                "%s: %d of %d rows lack a reward for some expert (%d rewards missing in all); "
                "those experts are masked out of those rows",
                self.source or "dataset",
                rows_with_gaps,
                len(self.examples),
                missing,
            )

    def check_experts(self, router_experts: Sequence[str], *, allow_subset: bool = False) -> None:
        """Raise :class:`ExpertMismatchError` unless this dataset's experts match ``router_experts``.

        Args:
            router_experts: the experts a router was trained on.
            allow_subset: accept a dataset that covers only some of the router's experts.
        """
        missing = [name for name in router_experts if name not in self.experts]
        extra = [name for name in self.experts if name not in router_experts]
        if extra or (missing and not allow_subset):
            parts = []
            if missing:
                parts.append(f"the data lacks router experts {name_list(missing)}")
            if extra:
                parts.append(f"the router lacks data experts {name_list(extra)}")
            raise ExpertMismatchError(
                f"{self.source or 'dataset'}: experts differ: " + "; ".join(parts), missing=missing, extra=extra
            )

    def select_experts(self, names: Sequence[str]) -> RoutingDataset:
        """Keep only the rewards of ``names`` (in that order); rows left with no reward are dropped.

        Raises:
            ExpertMismatchError: a name has no reward anywhere in the dataset.
        """
        names = list(dict.fromkeys(names))
        unknown = [n for n in names if n not in self.experts]
        if unknown:
            raise ExpertMismatchError(
                f"{self.source or 'dataset'}: no rewards for experts {name_list(unknown)}; "
                f"the data has {name_list(self.experts)}",
                missing=unknown,
                extra=[],
            )
        kept = []
        for ex in self.examples:
            rewards = {n: ex.rewards[n] for n in names if n in ex.rewards}
            if rewards:
                kept.append(replace(ex, rewards=rewards))
        dropped = len(self.examples) - len(kept)
        if dropped:
            logger.warning("%d rows have no reward for any of %s and were dropped", dropped, names)
        return RoutingDataset(kept, experts=names, source=self.source)

    def complete(self) -> RoutingDataset:
        """The rows that have a reward for every expert."""
        return self._subset(ex for ex in self.examples if len(ex.rewards) == len(self.experts))

    @property
    def texts(self) -> list[str]:
        return [ex.text for ex in self.examples]

    @property
    def tasks(self) -> list[str | None]:
        return [ex.task for ex in self.examples]

    def reward_matrix(self) -> list[list[float]]:
        """Rewards as rows x experts (in :attr:`experts` order), ``nan`` where missing."""
        return [[ex.rewards.get(name, math.nan) for name in self.experts] for ex in self.examples]

    # -- splitting ---------------------------------------------------------------------------
    def _hash_order(self, seed: int, stratify_by_task: bool) -> list[int]:
        """Row indices ordered by ``sha256(seed:id)``, interleaved by task with ``stratify_by_task``."""

        def key(i: int) -> bytes:
            return hashlib.sha256(f"{seed}:{self.examples[i].id}".encode()).digest()

        keys = [key(i) for i in range(len(self.examples))]
        if not stratify_by_task:
            return sorted(range(len(keys)), key=keys.__getitem__)
        # Systematic sampling: each row's position within its task (in hash order) as a fraction,
        # then one global order by that fraction. Cutting that order anywhere takes the same share
        # of every task, and the part sizes still add up exactly.
        groups: dict[str | None, list[int]] = {}
        for i, ex in enumerate(self.examples):
            groups.setdefault(ex.task, []).append(i)
        position = [0.0] * len(keys)
        for group in groups.values():
            for rank, i in enumerate(sorted(group, key=keys.__getitem__)):
                position[i] = (rank + 0.5) / len(group)
        return sorted(range(len(keys)), key=lambda i: (position[i], keys[i]))

    def sample(self, size: int, *, seed: int = 0) -> list[int]:
        """The indices (ascending) of a deterministic sample of at most ``size`` rows.

        Stratified by ``task`` when rows have one (every task keeps its share, up to one row),
        otherwise a seeded random sample; all rows when there are no more than ``size``.
        """
        if size >= len(self.examples):
            return list(range(len(self.examples)))
        stratify = any(ex.task is not None for ex in self.examples)
        return sorted(self._hash_order(seed, stratify)[: max(0, size)])

    def split(
        self,
        *,
        validation_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
        stratify_by_task: bool = False,
    ) -> DatasetSplits:
        """Split deterministically by a hash of each id (and ``seed``), optionally per ``task``.

        Rows are ordered by ``sha256(seed:id)``; the first ``round(n * test_fraction)`` go to test,
        the next ``round(n * validation_fraction)`` to validation, the rest to train. The same ids and
        seed always give the same split, whatever the file order. With ``stratify_by_task`` the rows
        are interleaved by their hash rank within their task first, so every task keeps its share
        in each part (up to one row).

        Raises:
            DataError: a fraction is out of range, or the split would leave no training rows.
        """
        for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise DataError(f"{name} must be in [0, 1), got {value}")
        if validation_fraction + test_fraction >= 1.0:
            raise DataError(
                f"validation_fraction + test_fraction must be < 1, got {validation_fraction} + {test_fraction}"
            )

        ordered = [self.examples[i] for i in self._hash_order(seed, stratify_by_task)]
        n_test = round(len(ordered) * test_fraction)
        n_val = round(len(ordered) * validation_fraction)
        if n_test + n_val >= len(ordered):
            raise DataError(
                f"a split of {len(ordered)} rows with validation_fraction={validation_fraction} and "
                f"test_fraction={test_fraction} leaves no training rows",
                path=self.source,
            )
        parts = {
            "test": {ex.id for ex in ordered[:n_test]},
            "validation": {ex.id for ex in ordered[n_test : n_test + n_val]},
            "train": {ex.id for ex in ordered[n_test + n_val :]},
        }
        # keep file order inside each part
        return DatasetSplits(
            **{name: self._subset(ex for ex in self.examples if ex.id in ids) for name, ids in parts.items()}
        )


__all__ = [
    "MAX_REWARD",
    "DatasetSplits",
    "Message",
    "Query",
    "QueryVector",
    "RoutingDataset",
    "RoutingExample",
    "content_text",
    "load_queries",
    "load_rows",
    "query_text",
]
