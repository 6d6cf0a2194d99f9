"""Chat messages to the text a router reads, or the query a scorer reads.

One place for what every adapter module needs: the router runnable, the tool selector, the
decision model, reward ranking, collecting and judging all turn LangChain messages into text here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from langchain_core.messages import BaseMessage, HumanMessage

from zooter.data import Query, content_text, query_text
from zooter.errors import ConfigError

RouteOn = Literal["last_human", "conversation"] | Callable[[list[BaseMessage]], str]
"""What a chat is routed on: the last human message, the whole conversation, or a function of the messages."""

_ROLES = {"human": "user", "ai": "assistant"}


def message_text(message: BaseMessage) -> str:
    """The text of a message; non-text content blocks (images, audio, tool calls) are skipped."""
    return content_text(message.content)


def last_human_text(messages: Sequence[BaseMessage]) -> str:
    """The text of the last human message (empty when there is none)."""
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message_text(message)
    return ""


def check_route_on(route_on: RouteOn) -> None:
    """Refuse a ``route_on`` that is neither one of the two names nor a function."""
    if not callable(route_on) and route_on not in ("last_human", "conversation"):
        raise ConfigError(f"route_on must be 'last_human', 'conversation' or a function, got {route_on!r}")


def route_query(messages: Sequence[BaseMessage], route_on: RouteOn = "last_human") -> Query:
    """The query a router reads for a chat, as ``route_on`` says, in the core's own form.

    ``"last_human"``: the last human message's text; ``"conversation"``: the chat as the core's
    role/content list (see :func:`messages_to_query`), which :func:`zooter.data.query_text` renders
    exactly as it renders a chat in the training data; a function: the text it returns.
    """
    if callable(route_on):
        return route_on(list(messages))
    if route_on == "conversation":
        return messages_to_query(messages)
    return last_human_text(messages)


def route_text(messages: Sequence[BaseMessage], route_on: RouteOn = "last_human") -> str:
    """The text the router's encoder reads for a chat: :func:`route_query`, rendered by the core."""
    return query_text(route_query(messages, route_on))


def messages_to_query(messages: Sequence[BaseMessage]) -> Query:
    """A chat as the core's query: the text of a lone human message, else role/content messages.

    LangChain's message types map to the core's roles (``human`` -> ``user``, ``ai`` ->
    ``assistant``; ``system`` and ``tool`` keep theirs), so a chat reads as a chat in the dataset does.
    """
    if len(messages) == 1 and isinstance(messages[0], HumanMessage):
        return message_text(messages[0])
    return [{"role": _ROLES.get(m.type, m.type), "content": message_text(m)} for m in messages]
