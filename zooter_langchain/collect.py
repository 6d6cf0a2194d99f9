"""The collect stage: ask every expert chat model every query and append the answers to a file.

The output is the responses file the score stage reads, one successful answer a line::

    {"id": "q1", "model": "coder", "response": "..."}

Each line is written and flushed as soon as its answer arrives, so a run that is killed loses at
most the answers in flight. Rerunning with the same output resumes: ``(id, model)`` pairs already
in the file are skipped, so the file never holds a pair twice (a line cut short by the kill is
dropped and its pair asked again). Calls that still fail after their retries go to a separate
failures file (``{"id", "model", "error", "attempts"}``, default ``<output>.failures.jsonl``); a
rerun retries them. Which errors are retried is described in :mod:`zooter_langchain._retry`.

Example:
    >>> from langchain.chat_models import init_chat_model
    >>> from zooter_langchain import collect_responses
    >>> experts = {  # doctest: +SKIP
    ...     "gpt-4o-mini": init_chat_model("openai:gpt-4o-mini", temperature=0.7),
    ...     "haiku": init_chat_model("anthropic:claude-3-5-haiku-latest", temperature=0.7),
    ... }
    >>> report = collect_responses("queries.jsonl", experts, "responses.jsonl", max_concurrency=16)  # doctest: +SKIP
    >>> report.collected, report.skipped, len(report.failures)  # doctest: +SKIP
    (598, 0, 2)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages

from zooter._io import drop_torn_tail, iter_jsonl, refuse_overwriting_inputs, torn_tail
from zooter.data import Query, RoutingExample, load_queries
from zooter.errors import ConfigError, DataError
from zooter_langchain._messages import message_text
from zooter_langchain._retry import RetriesExhausted, call_with_retries, describe, is_transient

logger = logging.getLogger(__name__)

QueriesInput = str | os.PathLike[str] | Sequence[RoutingExample] | Sequence[tuple[str, Query]]


class EmptyAnswerError(RuntimeError):
    """The expert answered with no text (e.g. only a refusal flag or tool calls); retried."""


@dataclass(frozen=True)
class CollectFailure:
    """One ``(id, model)`` pair that still failed after its retries."""

    id: str
    model: str
    error: str
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "error": self.error, "attempts": self.attempts}


@dataclass
class CollectReport:
    """What a collect run did.

    Attributes:
        output_path: the responses file.
        failures_path: the failures file (absent when nothing failed).
        total: ``(id, model)`` pairs asked for (queries x experts).
        collected: answers this run appended.
        skipped: pairs already in the responses file (resumed from an earlier run).
        failures: pairs that failed this run, with their last error.
        seconds: wall time of the run.
    """

    output_path: Path
    failures_path: Path
    total: int
    collected: int = 0
    skipped: int = 0
    failures: list[CollectFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def complete(self) -> bool:
        """Whether the responses file now holds every pair."""
        return self.collected + self.skipped == self.total

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_path": str(self.output_path),
            "failures_path": str(self.failures_path),
            "total": self.total,
            "collected": self.collected,
            "skipped": self.skipped,
            "failed": self.failed,
            "failures": [f.to_dict() for f in self.failures],
            "seconds": self.seconds,
        }


def default_failures_path(output_path: str | os.PathLike[str]) -> Path:
    """``<output>.failures.jsonl`` beside the responses file."""
    path = Path(output_path)
    return path.with_name(path.name + ".failures.jsonl")


def to_messages(query: Query) -> list[BaseMessage]:
    """The messages a query is sent as: a text becomes one human message; a chat is sent as is."""
    if isinstance(query, str):
        return [HumanMessage(query)]
    return convert_to_messages(query)


def _query_pairs(queries: QueriesInput) -> list[tuple[str, list[BaseMessage]]]:
    """``(id, messages)`` per query; ids must be unique."""
    if isinstance(queries, (str, os.PathLike)):
        rows: list[tuple[str, Query]] = [(ex.id, ex.query) for ex in load_queries(queries)]
        source = str(queries)
    else:
        rows = [(ex.id, ex.query) if isinstance(ex, RoutingExample) else tuple(ex) for ex in queries]  # type: ignore[misc]
        source = "queries"
    pairs: list[tuple[str, list[BaseMessage]]] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if len(row) != 2 or not isinstance(row[0], str) or not row[0]:
            raise DataError(f"expected a RoutingExample or an (id, query) pair, got {row!r}", path=source, line=i + 1)
        qid, query = row
        if qid in seen:
            raise DataError("duplicate id", path=source, record_id=qid, field="id")
        seen.add(qid)
        try:
            messages = to_messages(query)
        except (ValueError, TypeError, NotImplementedError) as e:
            raise DataError(f"cannot send the query as chat messages: {e}", path=source, record_id=qid) from e
        pairs.append((qid, messages))
    if not pairs:
        raise DataError("no queries to collect answers for", path=source)
    return pairs


def read_collected(path: str | os.PathLike[str]) -> set[tuple[str, str]]:
    """The ``(id, model)`` pairs a responses file already holds (empty when it does not exist).

    An incomplete last line (from a killed run) is removed from the file.

    Raises:
        DataError: a complete line is not a responses record.
    """
    path = Path(path)
    if not path.exists():
        return set()
    # every line is checked before the torn one is cut: a file given here by mistake stays whole
    tail = torn_tail(path)
    torn_line = tail[0] if tail is not None else None
    done: set[tuple[str, str]] = set()
    try:
        for line, row in iter_jsonl(path):
            for key in ("id", "model", "response"):
                if not isinstance(row.get(key), str):
                    raise DataError(
                        "expected a responses record {'id', 'model', 'response'} with string values",
                        path=path,
                        line=line,
                        field=key,
                        value=row.get(key),
                    )
            if line != torn_line:  # a whole record that lost its newline is asked again
                done.add((row["id"], row["model"]))
    except DataError as e:
        if e.line != torn_line or e.field is not None:  # not the record a kill cut short
            raise
    if tail is not None:
        drop_torn_tail(path)
    return done


def _write_line(f: IO[str], row: dict[str, Any]) -> None:
    # one write and a flush per record: a kill leaves whole lines and at most one torn last line
    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()


def _progress(total: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="collect", unit="answer")


async def acollect_responses(
    queries: QueriesInput,
    experts: Mapping[str, Any],
    output_path: str | os.PathLike[str],
    *,
    max_concurrency: int = 8,
    max_retries: int = 3,
    backoff: float = 1.0,
    failures_path: str | os.PathLike[str] | None = None,
    retry_if: Callable[[BaseException], bool] = is_transient,
    show_progress: bool = False,
) -> CollectReport:
    """Ask every expert every query (asynchronously) and append each answer to ``output_path``.

    Args:
        queries: a query file (JSONL with ``id`` and ``query``; rewards optional), or a sequence of
            :class:`~zooter.data.RoutingExample` or ``(id, query)`` pairs. A text query is sent as
            one human message, a chat (``[{"role", "content"}, ...]``) as its messages.
        experts: expert name -> chat model (any runnable taking messages and returning a message).
            The name is what the ``model`` field of the output records.
        output_path: the responses JSONL file; appended to, and resumed from when it exists.
        max_concurrency: at most this many calls in flight at once, over all experts.
        max_retries: retries per pair after a transient error (so ``max_retries + 1`` calls at most).
        backoff: seconds before the first retry; doubles for each further retry (with jitter).
        failures_path: where failed pairs go (default ``<output>.failures.jsonl``). It is rewritten
            by each run and removed when nothing failed.
        retry_if: which errors to retry (default :func:`zooter_langchain._retry.is_transient`).
        show_progress: show a progress bar.

    Returns:
        A :class:`CollectReport`.

    Raises:
        DataError: the queries are malformed, or the output file holds a line that is not a
            responses record.
        ConfigError: no experts, or a bad ``max_concurrency``/``max_retries``/``backoff``.
    """
    if not experts:
        raise ConfigError("no experts: pass at least one {name: chat_model}")
    if any(not isinstance(name, str) or not name for name in experts):
        raise ConfigError(f"expert names must be non-empty strings, got {list(experts)}")
    if max_concurrency < 1 or max_retries < 0 or backoff < 0:
        raise ConfigError(
            f"need max_concurrency >= 1, max_retries >= 0 and backoff >= 0; "
            f"got {max_concurrency}, {max_retries}, {backoff}"
        )
    output = Path(output_path)
    if output.suffix == ".gz":
        raise ConfigError(f"{output}: collect appends to a plain JSONL file; compress it once the run is complete")
    failures_file = Path(failures_path) if failures_path is not None else default_failures_path(output)
    refuse_overwriting_inputs([output, failures_file], [queries] if isinstance(queries, (str, os.PathLike)) else [])
    refuse_overwriting_inputs([failures_file], [output])
    pairs = _query_pairs(queries)
    started = time.perf_counter()
    done = read_collected(output)
    todo = [(qid, name, messages) for qid, messages in pairs for name in experts if (qid, name) not in done]
    report = CollectReport(output, failures_file, total=len(pairs) * len(experts))
    report.skipped = report.total - len(todo)
    if report.skipped:
        logger.info(
            "%s: %d of %d answers already collected; asking for the other %d",
            output,
            report.skipped,
            report.total,
            len(todo),
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    failures_file.parent.mkdir(parents=True, exist_ok=True)
    bar = _progress(len(todo), show_progress)
    work: Iterator[tuple[str, str, list[BaseMessage]]] = iter(todo)

    # A fixed pool of workers pulling from one iterator bounds both the calls in flight and the
    # memory (no task per pair up front, which matters for 100k-pair runs).
    async def worker(out: IO[str], failed: IO[str]) -> None:
        for qid, name, messages in work:
            try:
                answer, _ = await call_with_retries(
                    lambda name=name, messages=messages: _ask(experts[name], messages),
                    max_retries=max_retries,
                    backoff=backoff,
                    retry_if=retry_if,
                    what=f"expert {name!r} on {qid!r}",
                )
            except RetriesExhausted as e:
                failure = CollectFailure(qid, name, describe(e.error), e.attempts)
                logger.warning("expert %r failed on %r after %d call(s): %s", name, qid, e.attempts, failure.error)
                report.failures.append(failure)
                _write_line(failed, failure.to_dict())
            else:
                _write_line(out, {"id": qid, "model": name, "response": answer})
                report.collected += 1
            if bar is not None:
                bar.update(1)

    try:
        with open(output, "a", encoding="utf-8") as out, open(failures_file, "w", encoding="utf-8") as failed:
            workers = [
                asyncio.ensure_future(worker(out, failed)) for _ in range(min(max_concurrency, max(1, len(todo))))
            ]
            try:
                await asyncio.gather(*workers)
            finally:  # one worker's error (a full disk...) stops the others before the files close
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
            os.fsync(out.fileno())
    finally:
        if bar is not None:
            bar.close()
        report.seconds = time.perf_counter() - started
    if not report.failures:
        failures_file.unlink(missing_ok=True)
    return report


async def _ask(model: Any, messages: list[BaseMessage]) -> str:
    reply = await model.ainvoke(messages)
    text = message_text(reply) if isinstance(reply, BaseMessage) else reply if isinstance(reply, str) else None
    if text is None:
        raise TypeError(f"expected a chat message back, got {type(reply).__name__}")
    if not text.strip():
        raise EmptyAnswerError("the answer holds no text")
    return text


def collect_responses(
    queries: QueriesInput,
    experts: Mapping[str, Any],
    output_path: str | os.PathLike[str],
    **kwargs: Any,
) -> CollectReport:
    """Synchronous :func:`acollect_responses` (same arguments), for scripts and the CLI.

    Raises:
        RuntimeError: called while an event loop is running (a notebook, an async app): there,
            ``await acollect_responses(...)`` instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(acollect_responses(queries, experts, output_path, **kwargs))
    raise RuntimeError(
        "collect_responses() cannot run inside a running event loop (e.g. Jupyter or an async app); "
        "use `await acollect_responses(...)` there"
    )


__all__ = [
    "CollectFailure",
    "CollectReport",
    "acollect_responses",
    "collect_responses",
    "default_failures_path",
    "read_collected",
]
