"""Keeping a router current without retraining: adding a model, and learning from traffic.

On ``llmrouter_9model`` (9 open models; train 5,608 rows, test 500), with the default
``neighbours`` router on the bundled MiniLM. Every choice (the number of neighbours, the decision
margin) is made on the training rows' leave-one-out estimates, as ``train_router`` makes it; the
test split is only ever routed and scored.

*Adding a model.* For each of the three experts the full router routes most test queries to, a
router is built without it, then the expert is added from ``--sizes`` of its training rows
(subset seeds ``--seeds``): its reward column is filled on those rows only, the rest ``nan``, and
the decision is recalibrated, as ``router.add_expert`` does. Reported: routed test reward without
it, after each add, and with a full retrain on every row, and the seconds of each add against a
full retrain's (embedding every training query, then choosing k and calibrating).

*Learning from traffic.* A router is trained on 10 % of the training rows (seeded); the other
90 % arrive as traffic in 9 rounds. Each round every query is routed (with exploration rate ε: a
share ε of the queries goes to another expert, uniformly or weighted by the estimates' standard
errors), only the chosen expert's reward is revealed, the revealed rows are added to the bank and
the decision is recalibrated (``router.update``; each revealed reward carries its logged
propensity, which the doubly robust admission of thin experts weighs it by), then the router is
scored on test. Compared: no updates, bandit updates (ε = 0, 0.05, 0.1; the explored expert drawn
uniformly, and for ε = 0.1 also weighted by uncertainty: by the chance that it beats the rule's
choice given both estimates' standard errors), full-information updates (every reward revealed)
and the router trained on 100 %. The neighbour search of each round is done on a similarity
matrix computed once (the same neighbours as the bank's exact search). An update round's time is
the encoder time of the round's new queries (at the encoder pass's seconds per query) plus what the
update does besides, timed on the last round of the first seed for every arm, on the bank's own
search: the fastest of 3 runs, so that other work on a shared machine does not count (a full
retrain's fit is timed the same way). Each round's queries were routed, so production feedback
carries the vectors the router computed for them (``FeedbackLog`` keeps them) and an update need
not embed them again: the round is also timed that way, reading the rows and their vectors (the
fastest of 3) and hashing the encoder's weights once, instead of the encoder time. The load
average is recorded at the start and the end.

``--estimator`` chooses how the bank estimates an expert's reward from partial rows (``plain``:
the neighbour average; ``shrunk``: shrunk towards the additive prior by ``--shrinkage``
pseudo-neighbours) and ``--calibration`` which rows the decision is calibrated on (``complete``:
rows with every reward; ``filled``: every row, missing rewards filled by the additive model).
Either way experts with rewards on too few rows are thin and admitted by a doubly robust estimate
(:func:`zooter.decide.policy.calibrate_decision`).

Embeddings of both splits are cached in ``--cache`` (one encoder pass; the bank needs nothing
else). The encoder's seconds are not taken from the cache: the pass over every training query is
timed again in each run (the fastest of ``--encoder-repeats``), so a cache written on a busier
machine does not inflate the retrain that every timing is compared with. Prints one JSON object,
then a markdown table.

Usage::

    python benchmarks/lifecycle.py --part add
    python benchmarks/lifecycle.py --part replay --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _common import SHARED_DATA, best_of, encoder_pass_seconds, machine, minilm_vectors

from zooter.data import QueryVector, RoutingDataset, RoutingExample
from zooter.decide.policy import DecisionRule, calibrate_decision, choose
from zooter.labels.targets import reward_tensor, soft_targets
from zooter.model.neighbours import MAX_DEPTH_FACTOR, Estimates, NeighbourBank

NEIGHBOURS = (50, 100, 200, 400)  # TrainingConfig's default sweep
ADDED = ("llama-3.1-nemotron-51b-instruct", "llama-3.3-nemotron-super-49b-v1", "gemma-2-9b-it")


def data_folder(path: str | None) -> Path:
    if path:
        return Path(path)
    for candidate in (SHARED_DATA / "llmrouter_9model", Path("/work/shared/data/llmrouter_9model")):
        if candidate.is_dir():
            return candidate
    raise SystemExit("llmrouter_9model not found: pass --data")


def cached_embeddings(dataset: RoutingDataset, name: str, cache: Path) -> tuple[torch.Tensor, float]:
    """The pretrained MiniLM's vectors of llmrouter_9model's ``name`` split, from ``cache`` (see
    :func:`_common.minilm_vectors`)."""
    return minilm_vectors(cache / f"llmrouter_9model-minilm-{name}.pt", dataset)


class Neighbours:
    """One row set's neighbour search, done once: every row's leave-one-out neighbours and the test
    queries' neighbours, deep enough for a partial bank (see ``NeighbourBank.depth``; the nearest of
    them serve every smaller k and every reward matrix)."""

    def __init__(
        self, embeddings: torch.Tensor, test: torch.Tensor, k: int = max(NEIGHBOURS) * MAX_DEPTH_FACTOR
    ) -> None:
        bank = NeighbourBank(embeddings, torch.zeros(len(embeddings), 1), torch.ones(len(embeddings), 1), k=k)
        self.embeddings = embeddings
        self.loo = bank.search(embeddings, leave_out=torch.arange(len(embeddings)))
        self.test = bank.search(test)

    def held_out(self, bank: NeighbourBank) -> Estimates:
        return bank.average(*self.loo)

    def on_test(self, bank: NeighbourBank) -> Estimates:
        return bank.average(*self.test)


class Method:
    """How a bank estimates from partial rows, and which rows calibrate the decision (as
    ``train_router`` and ``router.update`` calibrate it: leave-one-out, with standard errors)."""

    def __init__(self, estimator: str, shrinkage: float, calibration: str, min_z: float = 2.0) -> None:
        self.shrinkage = shrinkage if estimator == "shrunk" else 0.0
        self.calibration = calibration
        self.min_z = min_z

    def bank(self, embeddings: torch.Tensor, rewards: torch.Tensor, k: int, propensities=None) -> NeighbourBank:
        return NeighbourBank(
            embeddings, rewards, soft_targets(rewards), k=k, shrinkage=self.shrinkage, propensities=propensities
        )

    def calibrate(self, bank: NeighbourBank, held_out: Estimates, experts: list[str]) -> DecisionRule:
        filled = bank.filled_rewards() if self.calibration == "filled" else None
        return calibrate_decision(
            held_out.scores,
            bank.rewards,
            experts,
            filled=filled,
            propensities=bank.propensities,
            min_z=self.min_z,
            source="leave-one-out",
            stderr=held_out.stderr,
        )

    def fit(self, near: Neighbours, rewards: torch.Tensor, experts: list[str], ks=NEIGHBOURS):
        """The bank and rule train_router keeps: the k whose leave-one-out estimates route best."""
        best = None
        for k in ks:
            bank = self.bank(near.embeddings, rewards, k)
            rule = self.calibrate(bank, near.held_out(bank), experts)
            gain = rule.calibration.get("best_margin_gain", rule.calibration.get("gain", 0.0))
            if best is None or gain > best[0]:
                best = (gain, bank, rule)
        return best[1], best[2]


def decided(estimates: Estimates, experts, rule: DecisionRule) -> torch.Tensor:
    return choose(estimates.scores, experts, rule, stderr=estimates.stderr)


def routed(
    near: Neighbours, bank: NeighbourBank, rule: DecisionRule, rewards: torch.Tensor, experts, method: Method
) -> float:
    picks = decided(near.on_test(bank), experts, rule)
    return float(rewards.gather(1, picks.unsqueeze(1)).mean())


def retrained(method: Method, emb, test_emb, rewards, experts, embed_seconds):
    """A full retrain on every row: (neighbours, bank, rule, seconds), the seconds the encoder pass
    over every training query (timed in this run, see ``--encoder-repeats``) plus the fastest of 3 fits."""
    fitted: list[Any] = []

    def fit() -> None:
        near = Neighbours(emb, test_emb)
        fitted[:] = [near, *method.fit(near, rewards, experts)]

    seconds = best_of(3, fit)
    return (*fitted, embed_seconds + seconds)


def run_add(args, method: Method, train, test, emb, test_emb, embed_seconds) -> dict[str, Any]:
    experts = train.experts
    rewards, test_rewards = reward_tensor(train), reward_tensor(test)
    near, full_bank, full_rule, retrain_seconds = retrained(method, emb, test_emb, rewards, experts, embed_seconds)
    full = routed(near, full_bank, full_rule, test_rewards, experts, method)
    picks = decided(near.on_test(full_bank), experts, full_rule).tolist()
    out: dict[str, Any] = {
        "full_retrain": full,
        "full_k": full_bank.k,
        "full_rule": {"default": full_rule.default_expert, "margin": full_rule.margin},
        "full_shares": {name: picks.count(i) / len(picks) for i, name in enumerate(experts)},
        "retrain_seconds": retrain_seconds,
        "experts": {},
    }
    for name in args.added:
        j = experts.index(name)
        others = [e for e in experts if e != name]
        keep = [i for i in range(len(experts)) if i != j]
        bank, rule = method.fit(near, rewards[:, keep], others)
        without = routed(near, bank, rule, test_rewards[:, keep], others, method)
        entry: dict[str, Any] = {"without": without, "k": bank.k, "sizes": {}}
        for n in args.sizes:
            scores, seconds, margins, admitted = [], [], [], []
            for seed in args.seeds:
                partial = rewards.clone()
                rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
                column = torch.full((len(train),), math.nan)
                column[rows] = rewards[rows, j]
                partial[:, j] = column
                started = time.perf_counter()
                # what add_expert does: the same queries (none is new), a new column, a recalibration
                # on leave-one-out; timed in full on the first seed, the search reused on the others
                added_bank = method.bank(emb, partial, bank.k)
                if not seconds:
                    held_out = added_bank.leave_one_out()
                    added_rule = method.calibrate(added_bank, held_out, experts)
                    seconds.append(time.perf_counter() - started)
                else:
                    added_rule = method.calibrate(added_bank, near.held_out(added_bank), experts)
                scores.append(routed(near, added_bank, added_rule, test_rewards, experts, method))
                margins.append(added_rule.margin)
                admitted.append(added_rule.thin_experts.get(name) is not None)
            entry["sizes"][str(n)] = {
                "mean": statistics.mean(scores),
                "per_seed": scores,
                "margins": margins,
                "admitted": admitted,
                "seconds": statistics.mean(seconds),
            }
        out["experts"][name] = entry
    return out


def explore(
    picks: torch.Tensor, estimates: Estimates, epsilon: float, mode: str, rng: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Send a share ``epsilon`` of the queries to another expert, and each answer's propensity.

    ``uniform``: the other expert uniformly (as :class:`zooter.decide.explore.Explorer` does);
    ``uncertainty``: in proportion to the chance that it beats the rule's choice, given both
    estimates and their standard errors (normal approximation), so the tries go to the experts
    that might be better rather than to the ones known to be worse.
    """
    rows, experts = estimates.scores.shape
    index = torch.arange(rows)
    if mode == "uncertainty" and estimates.stderr is not None:
        mean, error = estimates.scores, estimates.stderr
        gap = mean - mean.gather(1, picks.unsqueeze(1))
        spread = (error.square() + error.gather(1, picks.unsqueeze(1)).square()).sqrt().clamp_min(1e-6)
        weights = torch.distributions.Normal(0.0, 1.0).cdf(gap / spread).nan_to_num(0.0).clamp_min(1e-6)
    else:
        weights = torch.ones(rows, experts)
    weights[index, picks] = 0.0
    chances = epsilon * weights / weights.sum(dim=1, keepdim=True)
    chances[index, picks] = 1.0 - epsilon
    chosen = torch.multinomial(chances, 1, generator=rng).squeeze(1)
    return chosen, chances[index, chosen]


class Similarities:
    """Every training row's similarity to every other and to each test query, computed once; the
    neighbours of a bank made of some training rows are the top of its rows' columns."""

    def __init__(self, embeddings: torch.Tensor, test: torch.Tensor) -> None:
        unit = torch.nn.functional.normalize(embeddings.float(), dim=-1)
        self.train = unit @ unit.T
        self.train.fill_diagonal_(-math.inf)  # leave-one-out: a row is never its own neighbour
        self.test = torch.nn.functional.normalize(test.float(), dim=-1) @ unit.T

    def estimates(self, bank: NeighbourBank, rows: torch.Tensor, queries: torch.Tensor | None = None) -> Estimates:
        """The estimates of a bank made of the training rows ``rows``: of the training rows
        ``queries`` (``queries`` = ``rows``: leave-one-out), or of the test queries (None)."""
        matrix = (self.train if queries is not None else self.test)[:, rows]
        if queries is not None:
            matrix = matrix[queries]
        top, index = matrix.topk(min(bank.depth(), len(rows) - 1), dim=1)
        return bank.average(top, index)


def kept_vectors(train: RoutingDataset, emb: torch.Tensor, batch: torch.Tensor, encoder_id: str) -> list[str]:
    """The round's feedback rows, as JSON lines, each with the vector the router computed when it
    routed the query (as :class:`zooter_langchain.FeedbackLog` keeps it) and one expert's reward."""
    lines = []
    for i in batch.tolist():
        ex = train[i]
        name, value = next(iter(ex.rewards.items()))
        row = RoutingExample(ex.id, ex.query, {name: value}, vector=QueryVector.of(emb[i], encoder_id))
        lines.append(json.dumps(row.to_dict()))
    return lines


def read_kept_vectors(lines: list[str]) -> torch.Tensor:
    """What an update does with such rows instead of embedding their queries: parse them, decode the vectors."""
    rows = [RoutingExample.from_dict(json.loads(line)) for line in lines]
    return torch.stack([row.vector.tensor() for row in rows])


def run_replay(args, method: Method, train, test, emb, test_emb, embed_seconds, encoder_id: str) -> dict[str, Any]:
    experts = train.experts
    rewards, test_rewards = reward_tensor(train), reward_tensor(test)
    per_query_embed = embed_seconds / len(train)
    near, full_bank, full_rule, retrain_seconds = retrained(method, emb, test_emb, rewards, experts, embed_seconds)
    full = routed(near, full_bank, full_rule, test_rewards, experts, method)
    single = test_rewards.mean(0)
    out: dict[str, Any] = {
        "full_router": full,
        "best_single": {"expert": experts[int(single.argmax())], "reward": float(single.max())},
        "retrain_seconds": retrain_seconds,
        "seeds": {},
    }
    sims = Similarities(emb, test_emb)
    arms = [("no updates", None, "uniform"), ("full information", None, "uniform")]
    arms += [(f"bandit eps={eps:g}", eps, "uniform") for eps in args.epsilons]
    arms += [(f"bandit eps={eps:g} uncertainty", eps, "uncertainty") for eps in args.epsilons if eps >= 0.1]
    for seed in args.seeds:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        start_rows = order[: len(train) // 10]
        traffic = order[len(train) // 10 :].tensor_split(9)
        start_near = Neighbours(emb[start_rows], test_emb)
        base_bank, base_rule = method.fit(start_near, rewards[start_rows], experts)
        k = base_bank.k
        start = routed(start_near, base_bank, base_rule, test_rewards, experts, method)
        curves: dict[str, Any] = {}
        for arm, eps, mode in arms:
            bank, rule = base_bank, base_rule
            rows, logged = start_rows, rewards[start_rows]
            chances = torch.full_like(logged, math.nan)  # the start rows were scored, not logged
            curve, explored, traffic_reward, timed = [start], 0, [], {}
            rng = torch.Generator().manual_seed(1000 + seed)
            for r, batch in enumerate(traffic):
                if arm == "no updates":
                    curve.append(start)
                    continue
                revealed, chance = rewards[batch], torch.full_like(rewards[batch], math.nan)
                if eps is not None:
                    estimates = sims.estimates(bank, rows, batch)
                    picks, propensity = explore(decided(estimates, experts, rule), estimates, eps, mode, rng)
                    mask = torch.zeros_like(revealed, dtype=torch.bool)
                    mask[torch.arange(len(batch)), picks] = True
                    traffic_reward.append(float(revealed[mask].mean()))
                    revealed = torch.where(mask, revealed, torch.nan)
                    chance = torch.where(mask, propensity.unsqueeze(1).expand_as(chance), math.nan)
                    explored += int((propensity < 1.0 - eps - 1e-9).sum()) if eps > 0 else 0
                rows = torch.cat([rows, batch])
                logged = torch.cat([logged, revealed])
                chances = torch.cat([chances, chance])
                if r == len(traffic) - 1 and seed == args.seeds[0]:
                    # what update does besides embedding the round's new queries, timed on the bank's
                    # own search (the fastest of 3: the least disturbed by other work on the machine):
                    # the grown bank, leave-one-out over it, the recalibration
                    def one_round(rows=rows, logged=logged, chances=chances, k=k) -> None:
                        grown = method.bank(emb[rows], logged, k, propensities=chances)
                        method.calibrate(grown, grown.leave_one_out(), experts)

                    compute = best_of(3, one_round)
                    # with production feedback the round's queries carry the vectors they were routed
                    # with: reading them (and hashing the encoder once per process) replaces the encoder
                    kept = best_of(3, read_kept_vectors, kept_vectors(train, emb, batch, encoder_id))
                    timed = {
                        "compute": compute,
                        "embed": per_query_embed * len(batch),
                        "kept_vectors": kept,
                        "new_queries": len(batch),
                    }
                bank = method.bank(emb[rows], logged, k, propensities=chances)
                rule = method.calibrate(bank, sims.estimates(bank, rows, rows), experts)
                picks = decided(sims.estimates(bank, rows), experts, rule)
                curve.append(float(test_rewards.gather(1, picks.unsqueeze(1)).mean()))
            curves[arm] = {
                "curve": curve,
                "round_seconds": timed,
                "margin": rule.margin,
                "thin_experts": rule.thin_experts,
                "support": torch.isfinite(logged).sum(0).tolist(),
                "explored": explored,
                "traffic_reward": statistics.mean(traffic_reward) if traffic_reward else None,
            }
        out["seeds"][str(seed)] = {"start": start, "k": k, "arms": curves}
    return out


def summarise(result: dict[str, Any]) -> list[str]:
    lines = []
    if "add" in result:
        add = result["add"]
        sizes = list(next(iter(add["experts"].values()))["sizes"])
        lines += [
            "| added expert | without it | " + " | ".join(f"+{int(n):,} rows" for n in sizes) + " | full retrain |",
            "|---|---:|" + "---:|" * len(sizes) + "---:|",
        ]
        for name, entry in add["experts"].items():
            cells = [f"{entry['sizes'][n]['mean']:.4f}" for n in sizes]
            lines.append(
                f"| {name} | {entry['without']:.4f} | " + " | ".join(cells) + f" | {add['full_retrain']:.4f} |"
            )
        seconds = statistics.mean(e["sizes"][n]["seconds"] for e in add["experts"].values() for n in sizes)
        lines.append(
            f"\nAn add took {seconds:.2f} s on average; a full retrain {add['retrain_seconds']:.1f} s "
            f"({100 * seconds / add['retrain_seconds']:.1f} %)."
        )
    if "replay" in result:
        replay = result["replay"]
        seeds = list(replay["seeds"].values())
        arms = list(seeds[0]["arms"])
        rounds = len(seeds[0]["arms"][arms[0]]["curve"])
        lines += [
            "",
            "| arm | " + " | ".join(f"round {r}" for r in range(rounds)) + " | traffic served |",
            "|---|" + "---:|" * rounds + "---:|",
        ]
        for arm in arms:
            curve = [statistics.mean(s["arms"][arm]["curve"][r] for s in seeds) for r in range(rounds)]
            served = [s["arms"][arm]["traffic_reward"] for s in seeds if s["arms"][arm]["traffic_reward"] is not None]
            cell = f"{statistics.mean(served):.4f}" if served else "-"
            lines.append(f"| {arm} | " + " | ".join(f"{v:.4f}" for v in curve) + f" | {cell} |")
        retrain = replay["retrain_seconds"]
        for arm in arms[1:]:
            timed = next((s["arms"][arm]["round_seconds"] for s in seeds if s["arms"][arm]["round_seconds"]), None)
            if timed:
                total = timed["compute"] + timed["embed"]
                kept = timed["compute"] + timed["kept_vectors"] + result["encoder_id_seconds"]
                lines.append(
                    f"\nAn update round ({arm}, the last, on the bank's own search): {total:.2f} s, "
                    f"{100 * total / retrain:.2f} % of a full retrain: embedding its {timed['new_queries']} new "
                    f"queries {timed['embed']:.2f} s ({100 * timed['embed'] / retrain:.2f} %), the rest "
                    f"{timed['compute']:.2f} s. With the vectors the router kept when it routed them: {kept:.2f} s "
                    f"({100 * kept / retrain:.2f} %; reading them {timed['kept_vectors']:.3f} s, hashing the "
                    f"encoder's weights {result['encoder_id_seconds']:.2f} s)."
                )
        lines.append(f"\nLoad average at the start and the end: {result['load']} / {os.getloadavg()[:3]}.")
        lines.append(
            f"\nRouter on 100 %: {replay['full_router']:.4f}; best single model on test: "
            f"{replay['best_single']['expert']} {replay['best_single']['reward']:.4f}; "
            f"full retrain {replay['retrain_seconds']:.1f} s (embedding {result['embed_seconds']:.1f} s)."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="the llmrouter_9model folder")
    parser.add_argument("--cache", default=os.environ.get("ZOOTER_CACHE", "/work/cache"))
    parser.add_argument("--part", choices=("add", "replay", "both"), default="both")
    parser.add_argument("--estimator", choices=("plain", "shrunk"), default="shrunk")
    parser.add_argument("--shrinkage", type=float, default=3.0)
    parser.add_argument("--calibration", choices=("complete", "filled"), default="filled")
    parser.add_argument("--added", nargs="+", default=list(ADDED))
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 300, 1000])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epsilons", nargs="+", type=float, default=[0.0, 0.05, 0.1])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--encoder-repeats",
        type=int,
        default=2,
        help="time the encoder pass over the training queries now, the fastest of this many "
        "(0: the seconds the vector cache recorded when it was written)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(0)
    folder = data_folder(args.data)
    train = RoutingDataset.load(folder / "train.jsonl.gz")
    test = RoutingDataset.load(folder / "test.jsonl.gz", experts=train.experts)
    cache = Path(args.cache)
    emb, cached_seconds = cached_embeddings(train, "train", cache)
    test_emb, _ = cached_embeddings(test, "test", cache)
    # the vectors come from the cache; the encoder's time is taken now, not as the cache recorded it
    embed_seconds, hash_seconds, encoder_id = encoder_pass_seconds(train, args.encoder_repeats)
    embed_seconds = cached_seconds if embed_seconds is None else embed_seconds
    method = Method(args.estimator, args.shrinkage, args.calibration)
    result: dict[str, Any] = {
        "data": str(folder),
        "method": {
            "estimator": args.estimator,
            "shrinkage": method.shrinkage,
            "calibration": args.calibration,
        },
        "embed_seconds": embed_seconds,
        "embed_seconds_timed": bool(args.encoder_repeats),
        "encoder_id_seconds": hash_seconds,
        "machine": machine(),
        "load": os.getloadavg()[:3],
    }
    if args.part in ("add", "both"):
        result["add"] = run_add(args, method, train, test, emb, test_emb, embed_seconds)
    if args.part in ("replay", "both"):
        result["replay"] = run_replay(args, method, train, test, emb, test_emb, embed_seconds, encoder_id)
    print(json.dumps(result))
    print("\n".join(summarise(result)))


if __name__ == "__main__":
    main()
