"""``FeedbackLog``: record how a ``ChatZooterRouter`` answer went, as rows ``zooter update`` reads.

In production only the answering expert's outcome is known: a thumbs up or down, a judge's grade,
whether the task succeeded. Every answer of a router carries a decision id in
``response_metadata["zooter"]["id"]``; give the router a log and it writes down, for each answer,
the query it routed and the expert that answered. Later, in this process or another one, record
the outcome against the answer or its id::

    log = FeedbackLog("feedback.jsonl")
    model = ChatZooterRouter.from_pretrained("my-router", experts=experts, feedback_log=log)
    reply = model.invoke("Prove that sqrt(2) is irrational")
    log.record(reply, 1.0)                                   # or the id alone, from anywhere:
    FeedbackLog("feedback.jsonl").record(reply.response_metadata["zooter"]["id"], 1.0)

Two append-only JSONL files:

- ``feedback.jsonl``: one row per outcome, in the dataset format with one expert per row,
  ``{"id", "query", "rewards": {expert: reward}, "time", "reason", "propensity"}``, so
  ``zooter update ROUTER feedback.jsonl`` merges it into the router's neighbour bank. ``id`` is
  the decision id; ``reason`` says why the expert answered (``"explore"`` for an exploring call,
  ``"fallback"`` when the chosen expert failed); ``propensity`` is the probability with which the
  router's policy picked that expert (None where it did not pick it), for inverse-propensity
  estimates; ``vector`` is the query's vector as the router computed it to route the query, so
  the update does not run the encoder on it again (``keep_vectors=False`` leaves it out).
- ``feedback.decisions.jsonl`` (beside it): one row per answer, ``{"id", "query", "expert",
  "reason", "propensity", "time", "vector"}``, what an id resolves to. The query is kept as the
  router read it (the last human message by default), so the log holds user text: keep it where
  such data may live, and rotate it (a new path) as it grows.

Both files take appends from several threads and processes at once (one ``write`` per row under a
file lock, see :class:`zooter._io.JsonlAppender`); a row cut short by a killed writer is dropped
before the next append, and readers never see half a row. Outcomes are flushed to disk before
:meth:`FeedbackLog.record` returns; decision rows are not (they survive the process, not a power
cut), so routing pays no disk flush.

Recording the same outcome again (a rerun of a grading script) changes nothing; a different reward
for an answer already recorded is refused, since a dataset holds one row per id.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zooter._io import JsonlAppender
from zooter.data import Query, QueryVector
from zooter.errors import DataError, ExpertMismatchError, name_list

logger = logging.getLogger(__name__)

DECISIONS_SUFFIX = ".decisions.jsonl"


def default_decisions_path(path: str | Path) -> Path:
    """Where a feedback log keeps its decisions: ``feedback.jsonl`` -> ``feedback.decisions.jsonl``."""
    path = Path(path)
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(stem + DECISIONS_SUFFIX)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class FeedbackLog:
    """Outcomes of a router's answers, appended as routing-dataset rows (see the module docs).

    Args:
        path: the feedback file (JSONL), created on the first outcome.
        decisions_path: where the router writes its decisions (default: beside ``path``, ending in
            ``.decisions.jsonl``).
        experts: the experts an outcome may name (default: any the router answered with).
        cache_size: decisions this process keeps in memory, to resolve recent ids without reading
            the decisions file.
        keep_vectors: write, with each decision and its outcome, the query vector the router
            computed to route it (:class:`~zooter.data.QueryVector`: about 1 KB a row for a
            384-wide encoder), so that ``zooter update`` adds the query to the bank without
            running the encoder on it again. False: rows hold the query alone, and the update
            embeds it.

    Example:
        >>> log = FeedbackLog(tmp_path / "feedback.jsonl")  # doctest: +SKIP
        >>> model = ChatZooterRouter(router=router, experts=experts, feedback_log=log)  # doctest: +SKIP
        >>> reply = model.invoke("Write a haiku about the sea")  # doctest: +SKIP
        >>> log.record(reply, 0.8)["rewards"]  # doctest: +SKIP
        {'writer': 0.8}
    """

    def __init__(
        self,
        path: str | Path,
        *,
        decisions_path: str | Path | None = None,
        experts: Sequence[str] | None = None,
        cache_size: int = 10_000,
        keep_vectors: bool = True,
    ) -> None:
        self.path = Path(path)
        self.decisions_path = Path(decisions_path) if decisions_path is not None else default_decisions_path(path)
        if self.decisions_path.resolve() == self.path.resolve():
            raise DataError("the decisions file must differ from the feedback file", path=self.path)
        self.experts = list(experts) if experts is not None else None
        self.cache_size = cache_size
        self.keep_vectors = keep_vectors
        self._feedback = JsonlAppender(self.path)
        self._decisions = JsonlAppender(self.decisions_path, sync=False)
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._offsets: dict[str, int] = {}  # decision id -> byte offset of its row in the decisions file
        self._recorded: dict[str, float] = {}  # decision id -> the reward recorded for it
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FeedbackLog({str(self.path)!r})"

    # -- what the router writes ------------------------------------------------------------------
    def log_decision(
        self,
        decision_id: str,
        query: Query,
        expert: str,
        *,
        reason: str,
        propensity: float | None = None,
        vector: QueryVector | None = None,
    ) -> None:
        """Write down one answer's decision: the routed query and the expert that answered.

        ``ChatZooterRouter(feedback_log=...)`` calls this for every answer, with the query's
        ``vector`` as the router computed it (kept when :attr:`keep_vectors`); call it yourself
        only for answers produced without the router.
        """
        row = {
            "id": decision_id,
            "query": query,
            "expert": expert,
            "reason": reason,
            "propensity": propensity,
            "time": _now(),
        }
        if vector is not None and self.keep_vectors:
            row["vector"] = vector.to_dict()
        self._decisions.append([row])
        with self._lock:
            self._recent[decision_id] = row
            while len(self._recent) > self.cache_size:
                self._recent.popitem(last=False)

    # -- what the user records -------------------------------------------------------------------
    def record(self, answer: Any, reward: float) -> dict[str, Any]:
        """Record ``reward`` as the outcome of one answer; returns the feedback row.

        Args:
            answer: the router's answer (an ``AIMessage``), its ``response_metadata``, the
                ``response_metadata["zooter"]`` dict, or the decision id (a string).
            reward: the outcome on the scale of the router's training rewards (e.g. 1.0 / 0.0
                for a thumbs up / down, a judge's grade).

        Raises:
            DataError: the reward is not a finite number; the decision id is unknown (the router
                was not given this log, or the decisions file was rotated); the answer names
                another expert than the one the decision logged, or one outside ``experts``; or a
                different reward was already recorded for this answer.
        """
        decision_id, named_expert = _decision_of(answer)
        value = _reward(reward, decision_id)
        decision = self._decision(decision_id)
        expert = decision["expert"]
        if named_expert is not None and named_expert != expert:
            raise ExpertMismatchError(
                f"decision {decision_id!r}: the answer names expert {named_expert!r} but "
                f"{self.decisions_path} logged {expert!r} as the one that answered",
                missing=[named_expert],
                extra=[],
            )
        if self.experts is not None and expert not in self.experts:
            raise ExpertMismatchError(
                f"decision {decision_id!r}: expert {expert!r} is not one of {name_list(self.experts)}",
                missing=[expert],
                extra=[],
            )
        row = {
            "id": decision_id,
            "query": decision["query"],
            "rewards": {expert: value},
            "time": _now(),
            "reason": decision.get("reason"),
            "propensity": decision.get("propensity"),
        }
        if decision.get("vector") is not None and self.keep_vectors:
            row["vector"] = decision["vector"]
        with self._feedback.locked():  # the check and the append as one step, against every writer
            self._read_recorded()
            earlier = self._recorded.get(decision_id)
            if earlier is not None:
                if earlier == value:
                    logger.debug("decision %s: reward %s already recorded", decision_id, value)
                    return row
                raise DataError(
                    f"already recorded reward {earlier:g} for this answer; an answer has one outcome "
                    f"(got {value:g} now)",
                    path=self.path,
                    record_id=decision_id,
                    field="rewards",
                )
            self._feedback.append([row])
            self._recorded[decision_id] = value
        return row

    def recover(self) -> None:
        """Cut a last line a killed writer left half-written, in both files (the next append does too).

        Safe while other processes write: the cut happens under the files' lock, where a line
        without its newline can only be a dead writer's. Run it before reading the feedback file
        with another tool (``zooter update``) when writers may have been killed.
        """
        for appender in (self._feedback, self._decisions):
            if appender.path.is_file():
                with appender.locked():
                    pass

    def rows(self) -> list[dict[str, Any]]:
        """Every feedback row recorded so far, by any process, in file order."""
        reader = JsonlAppender(self.path)
        return [row for _, row in reader.read_new()]

    # -- resolving ids ---------------------------------------------------------------------------
    def _decision(self, decision_id: str) -> dict[str, Any]:
        with self._lock:
            recent = self._recent.get(decision_id)
            if recent is not None:
                return recent
            for offset, row in self._decisions.read_new():
                if isinstance(row.get("id"), str):
                    self._offsets[row["id"]] = offset
            offset = self._offsets.get(decision_id)
        if offset is None:
            raise DataError(
                f"unknown decision id; {self.decisions_path} has no decision with it (give the router this log, "
                "ChatZooterRouter(feedback_log=...), so it writes down what it decides)",
                record_id=decision_id,
            )
        return self._decisions.read_at(offset)

    def _read_recorded(self) -> None:
        for _, row in self._feedback.read_new():
            rewards = row.get("rewards")
            if isinstance(row.get("id"), str) and isinstance(rewards, dict) and rewards:
                self._recorded[row["id"]] = next(iter(rewards.values()))


def _decision_of(answer: Any) -> tuple[str, str | None]:
    """The decision id an answer carries, and the expert it names (None for a bare id)."""
    if isinstance(answer, str):
        if not answer:
            raise DataError("expected a decision id, got an empty string")
        return answer, None
    metadata = getattr(answer, "response_metadata", answer)
    if isinstance(metadata, Mapping) and isinstance(metadata.get("zooter"), Mapping):
        metadata = metadata["zooter"]
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("id"), str):
        raise DataError(
            f"expected a router answer (an AIMessage whose response_metadata['zooter'] has an 'id'), "
            f"its metadata, or a decision id; got {type(answer).__name__}"
        )
    expert = metadata.get("expert")
    return metadata["id"], expert if isinstance(expert, str) else None


def _reward(reward: Any, decision_id: str) -> float:
    if isinstance(reward, bool) or not isinstance(reward, numbers.Real):
        raise DataError(
            f"a reward must be a number, got {reward!r:.80}", record_id=decision_id, field="reward", value=reward
        )
    value = float(reward)
    if not math.isfinite(value):
        raise DataError(f"a reward must be finite, got {value}", record_id=decision_id, field="reward", value=reward)
    return value


__all__ = ["DECISIONS_SUFFIX", "FeedbackLog", "default_decisions_path"]
