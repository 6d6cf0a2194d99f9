"""Retrying chat-model calls that fail for a passing reason (rate limits, time-outs, 5xx).

Which errors are transient (retried):
    * any error carrying an HTTP status (``status_code``, ``status`` or ``code`` attribute, or
      ``response.status_code``) of 408, 409, 425, 429 or 5xx;
    * connection and time-out errors (``ConnectionError``, ``TimeoutError``, ``OSError``) and any
      other error without a status, e.g. a provider SDK's ``APIConnectionError`` or a plain
      ``RuntimeError``.

Which are not (recorded at once, never retried):
    * any other HTTP 4xx status: bad request, authentication (401), permission (403), not found,
      context too long (400/413/422): the same request fails the same way again;
    * programming and input errors: ``ValueError`` (LangChain's output-parser errors included),
      ``TypeError``, ``KeyError``, ``AttributeError``, ``NotImplementedError``, ``ImportError``;
    * errors whose class name says authentication or permission (``AuthenticationError``,
      ``PermissionDeniedError``...), for SDKs that carry no status.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_RETRY_STATUSES = frozenset({408, 409, 425, 429})
_PERMANENT_TYPES = (ValueError, TypeError, KeyError, AttributeError, NotImplementedError, ImportError)
_PERMANENT_NAMES = ("authentication", "permission", "unauthorized", "forbidden", "badrequest", "notfound")
MAX_BACKOFF = 60.0


def _http_status(error: BaseException) -> int | None:
    candidates = [getattr(error, attr, None) for attr in ("status_code", "status", "code")]
    candidates.append(getattr(getattr(error, "response", None), "status_code", None))
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


def is_transient(error: BaseException) -> bool:
    """Whether retrying the call that raised ``error`` may succeed (see the module docstring)."""
    status = _http_status(error)
    if status is not None:
        return status in _RETRY_STATUSES or status >= 500
    if isinstance(error, _PERMANENT_TYPES):
        return False
    name = type(error).__name__.lower()
    return not any(word in name for word in _PERMANENT_NAMES)


def describe(error: BaseException) -> str:
    """``"TypeName: message"``, the form errors are recorded in."""
    return f"{type(error).__name__}: {error}"


def backoff_delay(attempt: int, initial: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): exponential, with jitter.

    The delay doubles with each attempt (capped at a minute) and is drawn uniformly from its upper
    half, so that many calls throttled at the same moment do not all come back at the same moment.
    """
    ceiling = min(MAX_BACKOFF, initial * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


class RetriesExhausted(Exception):
    """The call kept failing; ``error`` is the last error, ``attempts`` how many calls were made."""

    def __init__(self, error: Exception, attempts: int) -> None:
        super().__init__(describe(error))
        self.error = error
        self.attempts = attempts


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    backoff: float,
    retry_if: Callable[[BaseException], bool] = is_transient,
    what: str = "call",
) -> tuple[T, int]:
    """Await ``call()``, retrying transient errors; returns ``(result, attempts)``.

    Raises:
        RetriesExhausted: a non-transient error, or a transient one after ``max_retries`` retries.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call(), attempt
        except Exception as e:  # cancellation (a BaseException) is never caught: it stops the run
            if attempt > max_retries or not retry_if(e):
                raise RetriesExhausted(e, attempt) from e
            delay = backoff_delay(attempt, backoff)
            logger.info("%s failed (%s); retry %d/%d in %.1fs", what, describe(e), attempt, max_retries, delay)
            await asyncio.sleep(delay)
