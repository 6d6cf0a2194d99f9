"""The ``zooter`` command: collect, score, split, train, eval, route, update, and a self-contained demo.

Exit codes: 0 on success, 2 on bad input (one line on stderr, no traceback), 1 on anything else.

What needs LangChain (``zooter collect``, ``zooter score --judge``) is not here: installed packages
add commands and scorers through two entry point groups, :data:`COMMANDS_GROUP` and
:data:`SCORERS_GROUP`, and ``zooter_langchain`` registers those two (see its ``cli`` module). The
core never imports the adapter; when what a command line asks for is not registered, it says which
extra to install.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, NoReturn

from zooter import __version__
from zooter._io import check_writable, refuse_overwriting_inputs
from zooter.errors import ConfigError, MissingDependencyError, ZooterError

logger = logging.getLogger("zooter.cli")

#: Entry points named after a subcommand, each a function that adds it to the parser's subcommands.
COMMANDS_GROUP = "zooter.commands"
#: Entry points named after a ``zooter score`` scorer option, each a function of the parsed arguments.
SCORERS_GROUP = "zooter.scorers"
#: What the LangChain adapter registers, and how to get it.
ADAPTER_COMMANDS = {"collect": "ask every expert chat model every query; append the answers (resumable)"}
ADAPTER_INSTALL = 'pip install "zooter-langchain[agents]"'


def registered(group: str) -> dict[str, EntryPoint]:
    """The entry points of ``group`` by name; the first of two that share a name wins."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=group):
        if point.name in found:
            logger.warning("two %s entry points are named %r; using %s", group, point.name, found[point.name].value)
            continue
        found[point.name] = point
    return found


def load_registered(points: dict[str, EntryPoint], name: str, needs: str) -> Callable[..., Any]:
    """The function registered as ``name`` among ``points``.

    Raises:
        MissingDependencyError: none is registered, or its module cannot be imported; the message
            says what ``needs`` it and which extra to install.
    """
    reason = ""
    point = points.get(name)
    if point is not None:
        try:
            return point.load()
        except MissingDependencyError:
            raise
        except ImportError as e:
            reason = f" ({point.value} cannot be imported: {e})"
    raise MissingDependencyError(f"{needs}: {ADAPTER_INSTALL}{reason}")


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


# -- commands ---------------------------------------------------------------------------------
def _scorer_factory(args: argparse.Namespace) -> Callable[[argparse.Namespace], Any]:
    """What makes the scorer ``zooter score`` runs: a Hugging Face reward model, or a registered one
    (``--judge``: the LangChain adapter's chat model as judge)."""
    if args.judge:
        return load_registered(registered(SCORERS_GROUP), "judge", "--judge grades with a LangChain chat model")
    if not args.reward_model:
        raise ZooterError("no scorer: pass --reward-model ID_OR_PATH or --judge PROVIDER:MODEL")
    return _reward_model_scorer


def _reward_model_scorer(args: argparse.Namespace) -> Any:
    from zooter.rewards.scorers import RewardModelScorer

    if args.engine == "ray":  # each Ray worker loads the model from this recipe, on its own device
        if args.device is not None:
            raise ZooterError("--device does not apply to --engine ray: each worker uses its GPU when it has one")
        return RewardModelScorer.loader(
            args.reward_model, revision=args.revision, batch_size=args.batch_size, max_length=args.max_length
        )
    return RewardModelScorer.from_pretrained(
        args.reward_model,
        revision=args.revision,
        device=args.device,
        batch_size=args.batch_size,
        max_length=args.max_length,
    )


def cmd_score(args: argparse.Namespace) -> int:
    from zooter.data import load_queries
    from zooter.rewards.responses import answering_models, read_responses
    from zooter.rewards.scoring import score_responses, scored_pairs_path

    if args.batch_size < 1:
        raise ZooterError(f"--batch-size must be >= 1, got {args.batch_size}")
    experts = _csv(args.experts) if args.experts else None
    make_scorer = _scorer_factory(args)
    if args.judge and args.engine != "local":
        raise ZooterError("--judge runs its grader calls concurrently in this process; use --engine local")
    engine = _engine(args)
    # fail on unusable inputs before loading a reward model of several gigabytes
    refuse_overwriting_inputs([args.output, scored_pairs_path(args.output)], [args.responses, args.queries])
    check_writable(args.output)
    check_writable(scored_pairs_path(args.output))
    load_queries(args.queries)
    answering_models(read_responses(args.responses)[0], experts, args.responses)
    scorer = make_scorer(args)
    # a judge's calls run concurrently within one scorer call: a smaller chunk would cap them
    batch_size = max(args.batch_size, args.max_concurrency) if args.judge else args.batch_size
    report = score_responses(
        args.responses,
        args.queries,
        scorer,
        args.output,
        experts=experts,
        batch_size=batch_size,
        show_progress=not args.quiet,
        engine=engine,
    )
    print(report.format_summary())
    if getattr(scorer, "pairs_truncated", 0):
        print(
            f"{scorer.pairs_truncated} pairs were longer than {scorer.max_length} tokens: their responses were cut "
            f"(in {scorer.queries_truncated} of them the query alone was too long and lost its beginning)"
        )
    return finish(
        args, f"{report.scored} pairs scored ({report.resumed} resumed), {report.rows} queries -> {report.output}"
    )


def _engine(args: argparse.Namespace) -> Any:
    """The engine ``--engine`` names, with ``--ray-address`` and ``--workers``."""
    from zooter.engines import make_engine

    if args.engine == "local":
        if args.ray_address is not None or args.workers is not None:
            raise ZooterError("--ray-address and --workers need --engine ray")
        return make_engine("local")
    from zooter.engines.ray import import_ray

    import_ray()  # a missing extra fails here, before any data is read or model loaded
    return make_engine(args.engine, address=args.ray_address, workers=args.workers)


def _add_engine_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help=f"where {what} runs: this process (default) or Ray Data workers (needs the ray extra)",
    )
    p.add_argument("--ray-address", help="the Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--workers", type=int, help="Ray workers, each loading the model once (default: one per GPU/CPU)")


def _add_backend_option(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument(
        "--backend",
        choices=["torch", "torch-bf16", "onnx", "onnx-int8", "onnx-openvino"],
        help="what runs the encoder: PyTorch, PyTorch computing in bf16 on CPU (fast where the CPU has AMX or "
        "AVX512-BF16), or ONNX Runtime on CPU (needs the onnx extra; onnx-openvino: its OpenVINO execution "
        f"provider, in bf16 where the CPU has it, needs the openvino extra); default: {default_help}",
    )


def cmd_split(args: argparse.Namespace) -> int:
    from zooter.data import RoutingDataset

    out = Path(args.output_dir)
    outputs = [out / f"{name}.jsonl" for name in ("train", "validation", "test")]
    refuse_overwriting_inputs(outputs, [args.data])
    check_writable(out, folder=True)
    for path in outputs:
        check_writable(path)
    data = RoutingDataset.load(args.data)
    splits = data.split(
        validation_fraction=args.validation_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        stratify_by_task=args.stratify,
    )
    for name, part in splits.as_dict().items():
        part.save(out / f"{name}.jsonl")
        print(f"{name}: {len(part)} rows -> {out / f'{name}.jsonl'}")
    return finish(args, f"{len(data)} rows split into {out}")


def _training_config(args: argparse.Namespace) -> Any:
    from zooter.labels.targets import LabelConfig
    from zooter.training import TrainingConfig

    given = {
        "method": args.method,
        "neighbours": [int(k) for k in _csv(args.neighbours)] if args.neighbours else None,
        "min_z": args.min_z,
        "index": args.index,
        "index_factory": args.index_factory,
        "calibration_rows": args.calibration_rows,
        "encoder": args.encoder,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "max_length": args.max_length,
        "seed": args.seed,
        "validation_fraction": args.validation_fraction,
        "device": args.device,
        "backend": args.backend,
    }
    config = TrainingConfig(**{k: v for k, v in given.items() if v is not None}, show_progress=not args.quiet)
    labels = {"temperature": args.temperature, "beta": args.beta, "tags": args.tags, "hard": args.hard_labels or None}
    labels = {k: v for k, v in labels.items() if v is not None}
    if "beta" in labels and labels.get("tags", "none") == "none":
        raise ConfigError("--beta mixes in tag averages, so it needs --tags (data, task, cluster or cluster:K)")
    if labels:
        config.labels = LabelConfig(**labels)
    return config


def cmd_train(args: argparse.Namespace) -> int:
    from zooter.data import RoutingDataset
    from zooter.model.persistence import check_save_directory
    from zooter.training import train_router

    refuse_overwriting_inputs([args.output], [args.data, args.validation, args.costs, args.responses])
    check_save_directory(args.output)
    config = _training_config(args)
    engine = _engine(args)
    experts = _csv(args.experts) if args.experts is not None else None
    data = RoutingDataset.load(args.data, experts=experts)
    validation = RoutingDataset.load(args.validation, experts=experts) if args.validation else None
    costs, target, responses = _cost_options(args, data.experts)
    router = train_router(
        data,
        config,
        validation=validation,
        costs=costs,
        cost_weight=args.cost_weight or 0.0,
        cost_target=target,
        responses=responses,
        engine=engine,
    )
    router.save_pretrained(args.output)
    print(f"{describe_training(router)}; saved to {args.output}")
    print(describe_decision(router))
    if router.costs is not None:
        print(describe_costs(router))
    return finish(args, f"router over {len(router.experts)} experts saved to {args.output}")


def _cost_options(args: argparse.Namespace, experts: list[str]) -> tuple[Any, Any, Any]:
    """The price table, the cost target and the responses records that ``zooter train`` was given."""
    from zooter.decide.costs import CostTable, CostTarget, check_cost_weight

    wants = {
        "--cost-weight": args.cost_weight,
        "--target-cost": args.target_cost,
        "--target-share": args.target_share,
        "--target-quality": args.target_quality,
        "--responses": args.responses,
        "--output-tokens": args.output_tokens,
    }
    if args.costs is None:
        given = [flag for flag, value in wants.items() if value is not None]
        if given:
            raise ConfigError(f"{given[0]} needs the experts' prices: add --costs experts.json")
        return None, None, None
    costs = CostTable.load(args.costs)
    costs.check_experts(experts)
    if args.output_tokens is not None:
        if args.output_tokens < 0:
            raise ConfigError(f"--output-tokens must be >= 0, got {args.output_tokens:g}")
        unknown = [name for name in experts if costs.costs[name].expected_output_tokens is None]
        costs = costs.with_output_tokens(dict.fromkeys(unknown, args.output_tokens))
    responses = None
    if args.responses is not None:
        from zooter.rewards.responses import answers_for, read_responses

        responses, _ = read_responses(args.responses, strict=True)
        answers_for(responses, experts, args.responses)
    target = None
    if args.target_cost is not None:
        target = CostTarget(mean_cost=args.target_cost)
    elif args.target_quality is not None:
        target = CostTarget(quality_fraction=args.target_quality)
    elif args.target_share is not None:
        names, _, fraction = args.target_share.rpartition("=")
        try:
            share = float(fraction)
        except ValueError:
            share = math.nan
        if not names or not math.isfinite(share):
            raise ConfigError(f"--target-share takes EXPERTS=FRACTION (e.g. gpt-4=0.5), got {args.target_share!r}")
        target = CostTarget(share=share, share_experts=_csv(names))
    if args.cost_weight is not None:
        check_cost_weight(args.cost_weight, what="--cost-weight")
    return costs, target, responses


def describe_costs(router: Any) -> str:
    """One line on the cost-aware decision: λ, and what its calibration measured."""
    c = None if router.config.costs is None else router.config.costs.calibration
    if c is None:
        return f"cost weight λ = {router.cost_weight:.4g} (set, not calibrated)"
    best = c.best_single
    met = "meets" if c.met else "does NOT meet (closest kept)"
    return (
        f"cost weight λ = {c.cost_weight:.4g} {met} the target on {c.rows} {c.source} rows: mean reward "
        f"{c.reward:.4g} at {1000 * c.cost:.4g} USD per 1k queries, against {best['reward']:.4g} at "
        f"{1000 * best['cost']:.4g} for {best['expert']} alone"
    )


def describe_training(router: Any) -> str:
    """One line on what training did: rows, time, method and what it kept."""
    summary = router.config.training_summary
    kept = []
    if "best_epoch" in summary:
        kept.append(f"kept epoch {summary['best_epoch']}")
    if "neighbours" in summary:
        kept.append(f"{summary['neighbours']} neighbours")
    return (
        f"trained a router over {len(router.experts)} experts on {summary['train_rows']} queries "
        f"in {summary['train_seconds']:.0f}s ({', '.join([summary.get('method', 'distill'), *kept])})"
    )


def describe_decision(router: Any) -> str:
    """One line on the calibrated decision: does routing pay, and how much leaves the default expert."""
    from zooter.decide.policy import describe_decision as describe

    return describe(router.decision)


def cmd_eval(args: argparse.Namespace) -> int:
    from zooter.data import RoutingDataset
    from zooter.evaluation import evaluate
    from zooter.model.router import ZooterRouter

    if args.plot:
        from zooter.evaluation import check_plotting

        refuse_overwriting_inputs([args.plot], [args.data, args.costs])
        check_writable(args.plot)
        check_plotting(args.plot)
    router = ZooterRouter.from_pretrained(args.router, device=args.device, backend=args.backend)
    data = RoutingDataset.load(args.data)
    if args.drop_extra_experts:
        data = data.select_experts(router.experts)  # still fails if the data lacks a router expert
    costs = None
    if args.costs is not None:
        from zooter.decide.costs import CostTable

        costs = CostTable.load(args.costs)
        costs.check_experts(router.experts)
    elif args.plot and router.costs is None:
        raise ConfigError("--plot draws the cost-quality frontier, which needs prices: add --costs experts.json")
    priced = costs is not None or router.costs is not None
    # one encoder pass over the data serves both reports
    data.check_experts(router.experts)
    data = data.select_experts(router.experts)
    estimates = router.estimate([ex.query for ex in data], batch_size=args.batch_size, show_progress=not args.quiet)
    report = evaluate(router, data, estimates=estimates)
    cost_report = None
    if priced:
        from zooter.evaluation import evaluate_costs

        cost_report = evaluate_costs(router, data, costs, estimates=estimates)
    if args.json:
        print(_json({**report.to_dict(), **({"costs": cost_report.to_dict()} if cost_report else {})}))
    else:
        print(report.format_table())
        if cost_report is not None:
            print("\ncost-quality trade-off:")
            print(cost_report.format_table())
    if cost_report is not None and args.plot:
        cost_report.plot(args.plot)
        if not args.json:
            print(f"\nfrontier drawn to {args.plot}")
    return finish(
        args,
        f"{report.n} queries: routed {report.routed:.4g} vs best single {report.best_single['score']:.4g} "
        f"({report.best_single['expert']})",
    )


def cmd_route(args: argparse.Namespace) -> int:
    from zooter.decide.costs import check_cost_weight
    from zooter.decide.policy import check_max_cost
    from zooter.model.router import ZooterRouter

    check_max_cost(args.max_cost, what="--max-cost")  # before loading: a bad limit fails at once
    if args.cost_weight is not None:
        check_cost_weight(args.cost_weight, what="--cost-weight")
    router = ZooterRouter.from_pretrained(args.router, device=args.device, backend=args.backend)
    queries = list(args.queries)
    if isinstance(args.explain, str):  # `zooter route ROUTER --explain QUERY`
        queries.append(args.explain)
    if not queries or queries == ["-"]:
        queries = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not queries:
        raise ZooterError("no query given: pass queries as arguments or one a line on stdin with '-'")
    decisions = router.route(
        queries,
        allowed=_csv(args.allowed) if args.allowed else None,
        cost_weight=args.cost_weight,
        max_cost=args.max_cost,
    )
    if args.json:
        for query, decision in zip(queries, decisions):
            print(_json({"query": query, **decision.to_dict()}))
        return finish(args, f"{len(queries)} queries routed")
    for query, decision in zip(queries, decisions):
        print(_format_decision(query, decision))
        if args.explain:
            print(textwrap.indent(decision.explain(), "     "))
    return finish(args, f"{len(queries)} queries routed")


def _updated_router(args: argparse.Namespace, inputs: list[str | None]) -> tuple[Any, Path]:
    """The router an update command edits, and the folder it is saved to (in place by default)."""
    from zooter.model.persistence import check_save_directory
    from zooter.model.router import ZooterRouter

    output = Path(args.output or args.router)
    if args.output is None and not Path(args.router).is_dir():
        raise ConfigError(f"{args.router} is not a local router folder: pass --output DIR to save the updated router")
    refuse_overwriting_inputs([output], inputs)
    check_save_directory(output)
    # an edit that embeds no query (rows with their vectors, a retired expert) never reads the encoder
    return ZooterRouter.from_pretrained(args.router, device=args.device, lazy_encoder=True), output


def _print_update(report: Any, output: Path) -> None:
    for line in report.lines():
        print(line)
    print(f"saved to {output}")


def cmd_update(args: argparse.Namespace) -> int:
    from zooter.data import load_rows

    if args.index == "ann":
        from zooter.model.index import import_faiss

        import_faiss()  # a missing extra fails before any work
    engine = _engine(args)
    rows = load_rows(args.data)  # read and checked before the router is touched
    router, output = _updated_router(args, [args.data])
    report = router.update(rows, source=args.data, index=args.index, engine=engine, show_progress=not args.quiet)
    router.save_pretrained(output)
    _print_update(report, output)
    return finish(args, f"router saved to {output}")


def cmd_add_expert(args: argparse.Namespace) -> int:
    from zooter.data import load_rows

    rows = load_rows(args.data)
    router, output = _updated_router(args, [args.data, args.costs])
    report = router.add_expert(args.name, rows, costs=args.costs, source=args.data, show_progress=not args.quiet)
    router.save_pretrained(output)
    _print_update(report, output)
    return finish(args, f"router saved to {output}")


def cmd_remove_expert(args: argparse.Namespace) -> int:
    router, output = _updated_router(args, [])
    report = router.remove_expert(args.name)
    router.save_pretrained(output)
    _print_update(report, output)
    return finish(args, f"router saved to {output}")


def _json(obj: Any) -> str:
    """One line of strict JSON: a NaN or an infinity (which JSON lacks) is written as null."""

    def finite(value: Any) -> Any:
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite(obj), allow_nan=False)


def _format_decision(query: str, decision: Any) -> str:
    """The query, the chosen expert and what the rule compared: expected rewards when the router
    estimates them (a distilled head: probabilities), best first."""
    short = query if len(query) <= 70 else query[:67] + "..."
    if decision.expected_rewards is not None:
        known = {name: value for name, value in decision.expected_rewards.items() if value is not None}
        ranked = sorted(known.items(), key=lambda kv: -kv[1])
        shown = "expected reward " + ", ".join(f"{name} {value:.3g}" for name, value in ranked)
    else:
        ranked = sorted(decision.probabilities.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{name} {p:.2f}" for name, p in ranked)
    cost = "" if decision.expected_cost is None else f", expected cost {decision.expected_cost:.3g} USD"
    return f"{short}\n  -> {decision.expert}{cost}   ({shown})"


def cmd_demo(args: argparse.Namespace) -> int:
    from zooter.demo import run_demo
    from zooter.model.persistence import check_save_directory

    if args.output:
        check_save_directory(args.output)
    if args.plot:
        from zooter.evaluation import check_plotting

        if args.data != "llmrouter":
            raise ConfigError(f"--plot draws the cost-quality frontier, which needs prices; {args.data} has none")
        check_writable(args.plot)
        check_plotting()
    report = run_demo(args.data, encoder=args.encoder, seed=args.seed, epochs=args.epochs, show_progress=not args.quiet)
    if args.output:
        report.router.save_pretrained(args.output, evaluation=report.evaluation)
    if args.plot:
        report.costs.plot(args.plot)
    if args.json:
        print(_json(report.to_dict()))
    else:
        print(report.format_text())
        if args.output:
            print(f"\nsaved the router to {args.output}")
        if args.plot:
            print(f"frontier drawn to {args.plot}")
    e = report.evaluation
    reach = report.costs.cost_to_reach.get("100%") if report.costs is not None else None
    cost = ""
    if reach is not None and reach["relative_cost"] is not None:
        cost = f"; the best single model's quality at {reach['relative_cost']:.0%} of its cost"
    return finish(
        args,
        f"routed {e.routed:.3f} vs best single {e.best_single['score']:.3f} on {e.n} test queries{cost}",
    )


# -- parser -----------------------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line and exit 2, like every other zooter error.

    Its subcommands' parsers are of the same class (argparse makes them so), including the ones
    installed packages register.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (usage: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="zooter", description="Train and run Zooter routers: send each query to the LLM likely to answer it best."
    )
    parser.add_argument("--version", action="version", version=f"zooter-langchain {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("score", help="score each expert's answers with a reward model into a training dataset")
    p.add_argument("responses", help="answers JSONL (id, model, response), e.g. from `zooter collect`")
    p.add_argument(
        "--queries", required=True, help="queries JSONL (id, query, [tags], [task]); rewards in it are ignored"
    )
    scorer = p.add_mutually_exclusive_group()
    scorer.add_argument("--reward-model", help="Hugging Face reward model id or folder (one output logit)")
    scorer.add_argument(
        "--judge",
        metavar="PROVIDER:MODEL",
        help="grade 1-10 with a chat model instead (MT-Bench prompt, temperature 0; needs the agents extra)",
    )
    p.add_argument("--max-concurrency", type=int, default=8, help="grader calls in flight at once (--judge)")
    p.add_argument("--revision", help="Hub revision of the reward model (branch, tag or commit)")
    p.add_argument(
        "--output", required=True, help="dataset JSONL to write; pairs scored so far go to OUTPUT.scored.jsonl"
    )
    p.add_argument("--experts", help="comma-separated models whose answers to score (default: all in the file)")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per reward-model pass (and per saved batch)")
    p.add_argument("--max-length", type=int, help="tokens per (query, response) pair (default: what the model reads)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when present)")
    _add_engine_options(p, "the reward model")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("split", help="split a dataset deterministically into train/validation/test files")
    p.add_argument("data", help="dataset JSONL (id, query, rewards, [tags], [task])")
    p.add_argument("--output-dir", required=True, help="folder for train.jsonl, validation.jsonl, test.jsonl")
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stratify", action="store_true", help="keep each task's share in every part")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("train", help="train a router on a dataset and save it")
    p.add_argument("data", help="training dataset JSONL")
    p.add_argument("--output", required=True, help="router folder to write")
    p.add_argument("--validation", help="dataset JSONL to pick the best epoch on (else --validation-fraction)")
    p.add_argument(
        "--method",
        choices=["neighbours", "distill", "distill+neighbours"],
        help="neighbours: estimate rewards from the nearest training queries (default, one encoder pass); "
        "distill: fine-tune encoder and head on the soft labels (the paper's); distill+neighbours: fine-tune "
        "the encoder so, then estimate from the nearest training queries as it embeds them (epoch chosen on "
        "--validation, else on 10%% of the rows held out)",
    )
    p.add_argument("--neighbours", help="comma-separated numbers of neighbours to try (default 50,100,200,400)")
    p.add_argument(
        "--index",
        choices=["exact", "ann", "auto"],
        help="how the bank finds neighbours: exact search, a faiss ANN index (extra zooter-langchain[ann]), "
        "or auto (default: ANN from 50,000 rows when faiss is installed)",
    )
    p.add_argument(
        "--index-factory",
        metavar="FACTORY",
        help="the faiss index_factory string of an ANN index, e.g. IVF4096_HNSW32,SQ6 "
        "(default: picked by the bank's size)",
    )
    p.add_argument(
        "--calibration-rows",
        type=int,
        help="calibrate on the leave-one-out estimates of at most this many rows, stratified by task (default 20000)",
    )
    p.add_argument(
        "--min-z", type=float, help="keep routing only if it beats the default expert by this many standard errors"
    )
    p.add_argument("--encoder", help="Hugging Face encoder id or folder (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--experts", help="comma-separated experts to route among (default: all in the data)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate of the encoder")
    p.add_argument("--temperature", type=float, help="softmax temperature of the soft targets (paper: 1)")
    p.add_argument("--hard-labels", action="store_true", help="train on the argmax expert (cross-entropy)")
    p.add_argument(
        "--tags",
        help="tag-based label enhancement from: none (default), data (the rows' tags), task, data+task, "
        "cluster or cluster:K (k-means of the encoder's embeddings of the training queries)",
    )
    p.add_argument("--beta", type=float, help="weight of a query's own target against its tags' average (paper: 0.3)")
    p.add_argument("--max-length", type=int, help="tokens kept per query")
    p.add_argument("--seed", type=int)
    p.add_argument("--validation-fraction", type=float)
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when present)")
    p.add_argument(
        "--costs",
        help="JSON of each expert's prices (input/output_price_per_mtok, expected_output_tokens, cost_per_call)",
    )
    p.add_argument("--responses", help="answers JSONL (id, model, response): learn each expert's answer length")
    p.add_argument(
        "--output-tokens", type=float, help="answer length in tokens for experts with no expected_output_tokens"
    )
    trade = p.add_mutually_exclusive_group()
    trade.add_argument("--cost-weight", type=float, help="λ: route by expected reward - λ * cost (USD per query)")
    trade.add_argument("--target-cost", type=float, help="calibrate λ: the best routing at this mean USD per query")
    trade.add_argument(
        "--target-share", metavar="EXPERTS=FRACTION", help="calibrate λ: at most FRACTION of calls to EXPERTS (a,b)"
    )
    trade.add_argument(
        "--target-quality",
        type=float,
        metavar="FRACTION",
        help="calibrate λ: the cheapest routing with FRACTION (e.g. 0.95) of the best single expert's mean reward",
    )
    _add_engine_options(p, "embedding the training queries")
    _add_backend_option(p, "torch; the saved router routes on the same one")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a router on a labelled dataset")
    p.add_argument("router", help="router folder or Hub id")
    p.add_argument("data", help="dataset JSONL with rewards for the router's experts")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--drop-extra-experts", action="store_true", help="ignore data experts the router lacks")
    p.add_argument("--batch-size", type=int, help="queries per encoder forward (default: 8 on CPU, 64 on GPU)")
    p.add_argument(
        "--costs", help="JSON of each expert's prices: also report the cost-quality frontier (default: the router's)"
    )
    p.add_argument("--plot", help="draw the cost-quality frontier to this image file (needs the plot extra)")
    p.add_argument("--device")
    _add_backend_option(p, "the one the router was trained on")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("route", help="route queries with a trained router")
    p.add_argument("router", help="router folder or Hub id")
    p.add_argument(
        "queries", nargs="*", help="queries to route ('-' or none: read one a line from stdin, blank lines skipped)"
    )
    p.add_argument("--allowed", help="comma-separated experts to choose among")
    p.add_argument("--cost-weight", type=float, help="λ for these queries (default: the router's own)")
    p.add_argument("--max-cost", type=float, help="leave out experts expected to cost more than this (USD)")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.add_argument(
        "--explain",
        nargs="?",
        const=True,
        default=False,
        metavar="QUERY",
        help="after each decision, every expert's estimate, cost and score, and why the chosen one won "
        "(`--explain QUERY` explains that query)",
    )
    p.add_argument("--device")
    _add_backend_option(p, "the one the router was trained on")
    p.set_defaults(func=cmd_route)

    p = _add_edit_command(
        sub,
        "update",
        "merge scored rows or feedback into a router's bank and recalibrate it",
        cmd_update,
        ("data", "rows in the dataset format, any subset of the experts' rewards each"),
    )
    p.add_argument(
        "--index",
        choices=["exact", "ann", "auto"],
        help="how the updated bank finds neighbours: exact search, a faiss ANN index (grown, or rebuilt when "
        "the bank grew by over a tenth), or auto (ANN from 50,000 rows); default: as the router was trained",
    )
    _add_engine_options(p, "embedding the new queries")
    _add_edit_command(
        sub,
        "add-expert",
        "add an expert to a router from its rewards on some queries",
        cmd_add_expert,
        ("name", "the new expert"),
        ("data", "rows with the new expert's rewards (ids the router knows, or new queries)"),
        costs_help="JSON of prices naming the new expert (needed when the router has prices)",
    )
    _add_edit_command(
        sub,
        "remove-expert",
        "retire an expert from a router's bank, decision and prices",
        cmd_remove_expert,
        ("name", "the expert to remove"),
        progress=False,
    )

    add_registered_commands(sub)

    p = sub.add_parser(
        "demo", help="train on bundled real data and show what routing is worth: quality, costs, examples (offline)"
    )
    p.add_argument(
        "--data",
        choices=["llmrouter", "arena"],
        default="llmrouter",
        help="llmrouter: 9 open LLMs on 14 tasks, with prices (default); arena: arena-bench-v1, six chat models",
    )
    p.add_argument("--output", help="also save the trained router here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", help="draw the cost-quality frontier to this image file (needs the plot extra)")
    p.add_argument("--encoder", help="Hugging Face encoder id or folder (default: bundled all-MiniLM-L6-v2)")
    p.add_argument("--epochs", type=int, help=argparse.SUPPRESS)  # --method distill only; kept for old scripts
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    add_common_options(sub)
    return parser


def add_common_options(sub: Any) -> None:
    """Give every subcommand the options all share (``--quiet``), including commands added later."""
    for p in dict.fromkeys(sub.choices.values()):
        if "-" not in p.prefix_chars:
            continue  # a stand-in for a missing command, which takes no options
        with contextlib.suppress(argparse.ArgumentError):  # the command has its own (one a package registered)
            p.add_argument("--quiet", action="store_true", help="no progress bar and no closing summary line")


def finish(args: argparse.Namespace, summary: str) -> int:
    """End a command with one line on stderr (stdout stays the command's data): what it did, how long it took."""
    if not getattr(args, "quiet", False):
        seconds = time.perf_counter() - getattr(args, "started", time.perf_counter())
        print(f"zooter {args.command}: {summary} ({_duration(seconds)})", file=sys.stderr)
    return 0


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def add_registered_commands(sub: Any) -> None:
    """Add the subcommands installed packages register (see :data:`COMMANDS_GROUP`).

    An adapter command that is not registered, or whose module cannot be imported, still parses,
    and says what to install when run: a one-line error, not argparse's "invalid choice".
    """
    points = registered(COMMANDS_GROUP)
    for name in dict.fromkeys([*points, *ADAPTER_COMMANDS]):
        try:
            add_command = load_registered(points, name, f"`zooter {name}` runs LangChain chat models")
        except MissingDependencyError as e:
            _add_missing_command(sub, name, ADAPTER_COMMANDS.get(name, "a registered command"), e)
        else:
            add_command(sub)


def _add_edit_command(
    sub: Any,
    name: str,
    help_text: str,
    func: Callable[[argparse.Namespace], Any],
    *positionals: tuple[str, str],
    costs_help: str | None = None,
    progress: bool = True,
) -> argparse.ArgumentParser:
    """A command that edits a saved router: the folder, ``positionals``, then --output and --device."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("router", help="router folder (updated in place unless --output)")
    for arg, arg_help in positionals:
        p.add_argument(arg, help=arg_help)
    if costs_help is not None:
        p.add_argument("--costs", help=costs_help)
    p.add_argument("--output", help="save the updated router here instead")
    p.add_argument("--device")
    if progress:
        p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=func)
    return p


def _add_missing_command(sub: Any, name: str, help_text: str, error: MissingDependencyError) -> None:
    # A NUL option prefix makes every word after the command a plain argument, so no usage error
    # about options this stand-in does not know hides the one that matters.
    p = sub.add_parser(name, help=f"{help_text} (needs LangChain)", add_help=False, prefix_chars="\0")
    p.add_argument("given", nargs="*", help=argparse.SUPPRESS)

    def missing(args: argparse.Namespace) -> int:
        raise error

    p.set_defaults(func=missing)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, value in vars(args).items():  # every float option, present and future
        if isinstance(value, float) and not math.isfinite(value):
            print(
                f"zooter {args.command}: error: --{name.replace('_', '-')} must be a finite number, got {value}",
                file=sys.stderr,
            )
            return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar is noise on every command
    except ImportError:
        pass
    args.started = time.perf_counter()
    try:
        return int(args.func(args) or 0)
    except ZooterError as e:
        print(f"zooter {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a permission denied while writing: still one line
        print(f"zooter {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
