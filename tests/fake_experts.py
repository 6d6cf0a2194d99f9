"""Fake experts for the collect and ranking tests: they record what they were sent and how many ran at once."""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from pydantic import Field

from zooter_langchain import FakeExpertChatModel


class Gauge:
    """Counts calls in progress across threads and remembers the most at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> Gauge:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        return self

    def __exit__(self, *exc: Any) -> None:
        with self.lock:
            self.now -= 1


class MeteredExpert(FakeExpertChatModel):
    """A :class:`FakeExpertChatModel` that records each message list it gets and counts calls in flight."""

    gauge: Any = Field(default=None, exclude=True)
    seen: list[list[BaseMessage]] = Field(default_factory=list, exclude=True)

    def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
        self.seen.append(list(messages))
        if self.gauge is None:
            return super()._answer(messages, **kwargs)
        with self.gauge:  # the fake's latency sleep happens inside, so overlapping calls overlap here
            return super()._answer(messages, **kwargs)
