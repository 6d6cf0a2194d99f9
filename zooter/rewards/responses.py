"""The responses file: one expert's answer to one query a line, as the collect stage writes it.

Each line is ``{"id", "model", "response"}`` (or ``{"id", "model", "error"}`` for a call the collect
stage gave up on). :func:`read_responses` keeps what is usable and says why it skipped the rest.

Example:
    >>> from zooter.rewards.responses import answering_models, read_responses
    >>> records, skipped = read_responses("responses.jsonl")  # doctest: +SKIP
    >>> answering_models(records, None, "responses.jsonl")  # doctest: +SKIP
    ['coder', 'writer']
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zooter._io import open_text, parse_json_line, torn_tail
from zooter.errors import DataError, name_list

logger = logging.getLogger(__name__)

#: Why a pair was not scored, by reason code (the codes are stable; the words are for people).
SKIP_REASONS = {
    "malformed": "malformed line",
    "collect_failure": "the collect stage recorded a failure",
    "empty_response": "empty response",
    "duplicate": "duplicate (id, model) pair",
    "unknown_id": "response id not among the queries",
    "unscored": "the scorer returned no score",
}


@dataclass(frozen=True)
class ResponseRecord:
    """One expert's answer to one query, as read from a responses file."""

    id: str
    model: str
    response: str
    line: int


@dataclass(frozen=True)
class SkippedPair:
    """A responses line or ``(id, model)`` pair that got no reward, and why (``reason`` is a SKIP_REASONS key)."""

    reason: str
    detail: str
    path: str | None = None
    line: int | None = None
    id: str | None = None
    model: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path if self.line is None else f"{self.path}:{self.line}")
        if self.id is not None:
            where.append(f"id {self.id!r}")
        if self.model is not None:
            where.append(f"model {self.model!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.detail}" if prefix else self.detail

    @classmethod
    def of(cls, reason: str, detail: str, path: str | Path, record: ResponseRecord) -> SkippedPair:
        """The skip of a record read from ``path``, for ``reason`` (a SKIP_REASONS key)."""
        return cls(reason, detail, str(path), record.line, record.id, record.model)


def read_responses(path: str | Path, *, strict: bool = False) -> tuple[list[ResponseRecord], list[SkippedPair]]:
    """Read a responses JSONL file (``{"id", "model", "response"}`` a line), keeping what is usable.

    Bad lines do not stop the read: each is returned as a :class:`SkippedPair` naming the file,
    line and field (``zooter score`` reports them). A line with an ``"error"`` and no
    ``"response"`` is a failure the collect stage recorded; it is reported only if no line holds an
    answer for the same pair (a retried pair has both). A repeated ``(id, model)`` pair keeps its
    first answer.

    Args:
        path: the file (``.jsonl`` or ``.jsonl.gz``).
        strict: refuse a malformed line instead of skipping it, for a caller that reports no skips
            (``zooter train --responses``). The one exception is a torn last line, one that lacks
            its newline, in a plain ``.jsonl`` file: what a collect run still appending to the
            file (or killed while writing) leaves. It is skipped with a warning, as the collect
            stage itself redoes it.

    Returns:
        ``(records, skipped)``, each in file order.

    Raises:
        DataError: the file is missing, a folder or unreadable, not one line of it is a usable
            answer, or (``strict``) a line other than a torn last one is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("is a folder; expected a responses JSONL file" if path.is_dir() else "no such file", path=path)
    records: list[ResponseRecord] = []
    skipped: list[SkippedPair] = []
    failures: list[SkippedPair] = []
    first_line: dict[tuple[str, str], int] = {}
    line_no = 0
    try:
        with open_text(path) as f:
            for line_no, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                item = _response_line(text, path, line_no)
                if isinstance(item, SkippedPair):
                    (failures if item.reason == "collect_failure" else skipped).append(item)
                    continue
                key = (item.id, item.model)
                if key in first_line:
                    skipped.append(
                        SkippedPair.of(
                            "duplicate", f"the pair was already answered on line {first_line[key]}", path, item
                        )
                    )
                    continue
                first_line[key] = line_no
                if not item.response.strip():
                    skipped.append(SkippedPair.of("empty_response", "the response is empty", path, item))
                    continue
                records.append(item)
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=path, line=line_no + 1) from None
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read the file ({type(e).__name__}: {e})", path=path) from None
    skipped += [f for f in failures if (f.id, f.model) not in first_line]
    skipped.sort(key=lambda s: s.line or 0)
    if strict:
        _refuse_malformed(path, skipped)
    if not records:
        first = f"; first problem: {skipped[0]}" if skipped else ""
        raise DataError(
            f"no usable answer in the file (expected {{'id', 'model', 'response'}} lines){first}", path=path
        )
    return records, skipped


def _refuse_malformed(path: Path, skipped: list[SkippedPair]) -> None:
    malformed = [pair for pair in skipped if pair.reason == "malformed"]
    if not malformed:
        return
    tail = torn_tail(path) if path.suffix != ".gz" else None
    if malformed[-1].line == (tail[0] if tail else None):
        logger.warning(
            "%s:%d: skipping the last line, which lacks its newline (a collect run still appending, or one "
            "killed while writing it)",
            path,
            malformed[-1].line,
        )
        malformed.pop()
    if malformed:
        raise DataError(str(malformed[0]))


def _response_line(text: str, path: Path, line_no: int) -> ResponseRecord | SkippedPair:
    def bad(detail: str, field_name: str | None = None, rid: str | None = None, model: str | None = None):
        return SkippedPair("malformed", detail, str(path), line_no, rid, model, field_name)

    try:
        row = parse_json_line(text, path, line_no)
    except DataError as e:
        return bad(str(e).split(": ", 1)[-1])
    raw_id = row.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
        return bad(f"expected a non-empty string id, got {raw_id!r:.80}", "id")
    rid = str(raw_id)
    model = row.get("model")
    if not isinstance(model, str) or not model:
        return bad(f"expected a non-empty string model name, got {model!r:.80}", "model", rid)
    if "response" not in row and row.get("error") is not None:
        return SkippedPair("collect_failure", f"{row['error']!s:.200}", str(path), line_no, rid, model, "error")
    response = row.get("response")
    if not isinstance(response, str):
        return bad(f"expected the answer as a string, got {response!r:.80}", "response", rid, model)
    return ResponseRecord(rid, model, response, line_no)


def answering_models(records: Sequence[ResponseRecord], experts: Sequence[str] | None, path: str | Path) -> list[str]:
    """The models that answer in ``records``, in order of appearance.

    Raises:
        DataError: an expert of ``experts`` has no answer in the file.
    """
    models = list(dict.fromkeys(r.model for r in records))
    unknown = [e for e in experts or () if e not in models]
    if unknown:
        raise DataError(
            f"no answers from experts {name_list(unknown)}; the file answers for {name_list(models)}",
            path=path,
            field="model",
        )
    return models


def answers_for(
    records: Sequence[ResponseRecord], experts: Sequence[str], path: str | Path | None = None
) -> list[ResponseRecord]:
    """The records that answer for one of ``experts`` (e.g. to learn their answer lengths).

    Raises:
        DataError: none does: the answers are another set of experts' (``path`` names the file).
    """
    kept = [record for record in records if record.model in set(experts)]
    if not kept:
        models = list(dict.fromkeys(record.model for record in records))
        raise DataError(
            f"no answer from any of the experts {name_list(experts)}; the answers are from {name_list(models)}",
            path=path if path is not None else "responses",
            field="model",
        )
    return kept


__all__ = ["SKIP_REASONS", "ResponseRecord", "SkippedPair", "answering_models", "answers_for", "read_responses"]
