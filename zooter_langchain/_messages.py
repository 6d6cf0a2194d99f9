"""Chat messages to the text a router reads, or the query a scorer reads.

One place for what every adapter module needs: the router runnable, the tool selector, the
decision model, reward ranking, collecting and judging all turn LangChain messages into text here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from langchain_core.messages import BaseMessage, HumanMessage

from zooter.data import Query
from zooter.errors import ConfigError

RouteOn = Literal["last_human", "conversation"] | Callable[[list[BaseMessage]], str]
"""What a chat is routed on: the last human message, the whole conversation, or a function of the messages."""

_ROLES = {"human": "user", "ai": "assistant"}


def message_text(message: BaseMessage) -> str:
    """The text of a message; non-text content blocks (images, audio, tool calls) are skipped."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return " ".join(parts)


def last_human_text(messages: Sequence[BaseMessage]) -> str:
    """The text of the last human message (empty when there is none)."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message_text(message)
    return ""


def conversation_text(messages: Sequence[BaseMessage]) -> str:
    """The whole conversation as ``role: text`` lines (tool results and system prompts included)."""
    return "\n".join(f"{m.type}: {message_text(m)}" for m in messages if message_text(m))


def check_route_on(route_on: RouteOn) -> None:
    """Refuse a ``route_on`` that is neither one of the two names nor a function."""
    if not callable(route_on) and route_on not in ("last_human", "conversation"):
        raise ConfigError(f"route_on must be 'last_human', 'conversation' or a function, got {route_on!r}")


def route_text(messages: Sequence[BaseMessage], route_on: RouteOn = "last_human") -> str:
    """The text a router reads for a chat, as ``route_on`` says."""
    if callable(route_on):
        return route_on(list(messages))
    if route_on == "conversation":
        return conversation_text(messages)
    return last_human_text(messages)


def messages_to_query(messages: Sequence[BaseMessage]) -> Query:
    """The query a scorer reads for a call: the text of a lone human message, else the chat."""
    if len(messages) == 1 and isinstance(messages[0], HumanMessage):
        return message_text(messages[0])
    return [{"role": _ROLES.get(m.type, m.type), "content": message_text(m)} for m in messages]
