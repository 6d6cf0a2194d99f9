"""What the ``zooter`` command gains from the LangChain adapter: ``zooter collect`` and ``--judge``.

The core command (:mod:`zooter.cli`) never imports this module: ``pyproject.toml`` registers its
pieces in two entry point groups the core reads, ``zooter.commands`` (a function that adds one
subcommand to the parser) and ``zooter.rewards.scorers`` (a function that makes a scorer from the parsed
arguments of ``zooter score``). Importing it loads no LangChain; each command imports what it
runs.

Example:
    >>> from zooter.cli import main
    >>> argv = ["collect", "queries.jsonl", "--expert", "coder=openai:gpt-4o-mini", "--output", "r.jsonl"]
    >>> main(argv)  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from zooter._io import check_writable, refuse_overwriting_inputs


def add_collect_command(subcommands: Any) -> None:
    """Add ``zooter collect`` to ``subcommands`` (the core parser's ``add_subparsers()`` action)."""
    p = subcommands.add_parser(
        "collect", help="ask every expert chat model every query; append the answers (resumable)"
    )
    p.add_argument("queries", help="query JSONL (id, query; rewards optional)")
    p.add_argument(
        "--expert",
        action="append",
        required=True,
        metavar="NAME=PROVIDER:MODEL",
        help="an expert and its LangChain chat model, e.g. coder=openai:gpt-4o-mini (repeat for each expert)",
    )
    p.add_argument("--output", required=True, help="responses JSONL to append to (a rerun resumes it)")
    p.add_argument("--failures", help="where failed pairs go (default: OUTPUT.failures.jsonl)")
    p.add_argument("--max-concurrency", type=int, default=8, help="calls in flight at once (default 8)")
    p.add_argument("--retries", type=int, default=3, help="retries of a call after a transient error (default 3)")
    p.add_argument("--temperature", type=float, help="sampling temperature of every expert (paper: 0.7)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_collect)


def cmd_collect(args: argparse.Namespace, *, model_factory: Any = None) -> int:
    """Ask every ``--expert`` every query; ``model_factory(spec, **kwargs)`` makes the chat models
    (default: LangChain's ``init_chat_model``; tests pass their own)."""
    from zooter_langchain.collect import collect_responses, default_failures_path, read_collected
    from zooter_langchain.models import chat_model_from_spec, parse_expert_specs

    failures = args.failures or default_failures_path(args.output)
    refuse_overwriting_inputs([args.output, failures], [args.queries])
    refuse_overwriting_inputs([failures], [args.output])
    check_writable(args.output)
    check_writable(failures)
    read_collected(args.output)  # an output that is not a responses file fails before any model is made
    specs = parse_expert_specs(args.expert)
    factory = model_factory or chat_model_from_spec
    model_kwargs = {} if args.temperature is None else {"temperature": args.temperature}
    experts = {name: factory(spec, **model_kwargs) for name, spec in specs.items()}
    report = collect_responses(
        args.queries,
        experts,
        args.output,
        max_concurrency=args.max_concurrency,
        max_retries=args.retries,
        failures_path=args.failures,
        show_progress=not args.quiet,
    )
    print(
        f"collected {report.collected} answers, {report.skipped} already in {report.output_path}, "
        f"{report.failed} failed, in {report.seconds:.0f}s"
    )
    if report.failures:
        first = report.failures[0]
        print(
            f"{report.failed} of {report.total} (id, model) pairs failed (first: {first.id} / {first.model}: "
            f"{first.error}); see {report.failures_path}; rerun the same command to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def judge_scorer(args: argparse.Namespace) -> Any:
    """The scorer of ``zooter score --judge PROVIDER:MODEL``: a chat model grading at temperature 0."""
    from zooter_langchain.judge import JudgeScorer

    return JudgeScorer.from_model_spec(
        args.judge, model_kwargs={"temperature": 0}, max_concurrency=args.max_concurrency
    )


__all__ = ["add_collect_command", "cmd_collect", "judge_scorer"]
