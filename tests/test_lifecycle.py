"""Keeping a router current: merging rows by id, new queries, adding and removing experts, thin support."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import keyword_rows

from zooter.data import QueryVector, RoutingDataset, RoutingExample, load_rows
from zooter.decide.policy import DecisionRule, choose
from zooter.errors import ConfigError, DataError, ExpertMismatchError
from zooter.model.neighbours import NeighbourBank
from zooter.model.router import ZooterRouter
from zooter.training import TrainingConfig, train_router

ROWS = keyword_rows(48, seed=5)


@pytest.fixture(scope="module")
def trained(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = RoutingDataset([RoutingExample.from_dict(r) for r in ROWS[:40]])
    config = TrainingConfig(encoder=tiny_encoder, max_length=32, device="cpu", show_progress=False, neighbours=[10])
    folder = tmp_path_factory.mktemp("lifecycle") / "router"
    train_router(data, config).save_pretrained(folder)
    return folder


@pytest.fixture
def router(trained: Path) -> ZooterRouter:
    return ZooterRouter.from_pretrained(trained, device="cpu")


def example(rid: str, query: str, **rewards: float) -> RoutingExample:
    return RoutingExample.from_dict({"id": rid, "query": query, "rewards": rewards})


def test_a_known_id_merges_its_rewards_expert_by_expert(router: ZooterRouter) -> None:
    i = router.bank.ids.index("q3")
    before = router.bank.rewards.clone()
    report = router.update([example("q3", "whatever text", coder=-7.0)])
    after = router.bank.rewards
    assert (report.merged, report.appended, len(router.bank)) == (1, 0, 40)
    assert after[i, router.experts.index("coder")] == -7.0  # the newer reward wins
    others = [j for j, name in enumerate(router.experts) if name != "coder"]
    assert torch.equal(after[i, others], before[i, others])  # the row's other rewards stay
    rest = [j for j in range(40) if j != i]
    assert torch.equal(after[rest], before[rest])


def test_new_ids_are_embedded_and_appended_and_only_they_are_embedded(
    router: ZooterRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded: list = []
    real = router.embed_queries
    monkeypatch.setattr(router, "embed_queries", lambda queries, **kw: embedded.extend(queries) or real(queries, **kw))
    old = router.bank.embeddings.clone()
    new = [
        example("n1", ROWS[40]["query"], poet=4.0),
        example("q1", "known", poet=1.0),
        example("n1", "again", coder=2.0),
    ]
    report = router.update(new)
    assert embedded == [ROWS[40]["query"]]  # one new query, embedded once; the repeated id merges into it
    assert (report.appended, report.merged, len(router.bank)) == (1, 1, 41)
    assert router.bank.ids[-1] == "n1"
    assert torch.equal(router.bank.embeddings[:40], old)
    last = dict(zip(router.experts, router.bank.rewards[-1].tolist()))
    assert last["poet"] == 4.0 and last["coder"] == 2.0 and math.isnan(last["mathbot"])
    assert router.route([ROWS[40]["query"]])[0].expert in router.experts


def test_remove_expert_leaves_the_bank_the_decision_and_the_prices(router: ZooterRouter, tmp_path: Path) -> None:
    router.set_costs({name: {"cost_per_call": 0.01} for name in router.experts})
    router.remove_expert("poet")
    assert router.experts == ["mathbot", "coder"]
    assert router.bank.rewards.shape == (40, 2) and router.head.out_features == 2
    assert router.decision.default_expert != "poet"
    assert set(router.costs.costs) == {"mathbot", "coder"}
    router.save_pretrained(tmp_path / "r")
    loaded = ZooterRouter.from_pretrained(tmp_path / "r", device="cpu")
    assert loaded.experts == ["mathbot", "coder"]
    assert {d.expert for d in loaded.route([r["query"] for r in ROWS])} <= {"mathbot", "coder"}
    with pytest.raises(ConfigError, match="at least 2 experts"):
        loaded.remove_expert("coder")


def test_add_expert_from_partial_rows(router: ZooterRouter, tmp_path: Path, write_jsonl) -> None:
    router.remove_expert("poet")
    scored = [{"id": r["id"], "query": r["query"], "rewards": {"poet": r["rewards"]["poet"]}} for r in ROWS[:12]]
    scored.append({"id": "fresh", "query": ROWS[45]["query"], "rewards": {"poet": 9.0}})
    path = write_jsonl(scored, "poet.jsonl")
    report = router.add_expert("poet", load_rows(path), source=path)
    assert router.experts == ["mathbot", "coder", "poet"] and router.head.out_features == 3
    assert (report.merged, report.appended) == (12, 1)
    assert report.after.support["poet"] == 13 and report.after.support["coder"] == 40
    # 13 of 41 rows: too few to calibrate with the others; the report says whether it was admitted
    assert list(report.after.thin_experts) == ["poet"]
    assert any(line.startswith("thin experts") and "poet (" in line for line in report.lines())
    column = router.bank.rewards[:, 2]
    assert int(torch.isfinite(column).sum()) == 13  # unknown on the rows it was not scored on
    estimates = router.estimate([r["query"] for r in ROWS])
    assert estimates.support is not None and bool((estimates.support[:, 2] <= estimates.support[:, 0]).all())
    router.save_pretrained(tmp_path / "r")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["neighbours"]["updates"] == 2
    last = config["neighbours"]["sources"][-1]
    assert last["path"] == str(path) and last["rows"] == 13
    assert last["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ZooterRouter.from_pretrained(tmp_path / "r", device="cpu").experts == router.experts


def test_feedback_propensities_ride_into_the_bank_and_its_folder(
    router: ZooterRouter, tmp_path: Path, write_jsonl
) -> None:
    feedback = [
        {"id": "f1", "query": ROWS[41]["query"], "rewards": {"coder": 1.0}, "reason": "explore", "propensity": 0.05},
        {"id": "q2", "query": "known", "rewards": {"poet": 0.0}, "reason": "routed", "propensity": 0.9},
        {"id": "f2", "query": ROWS[42]["query"], "rewards": {"mathbot": 1.0}, "reason": "fallback", "propensity": None},
    ]
    router.update(load_rows(write_jsonl(feedback, "feedback.jsonl")))
    chances = router.bank.propensities
    coder, poet = router.experts.index("coder"), router.experts.index("poet")
    assert chances[router.bank.ids.index("f1"), coder] == pytest.approx(0.05)
    assert chances[router.bank.ids.index("q2"), poet] == pytest.approx(0.9)
    assert int(torch.isfinite(chances).sum()) == 2  # scored rewards and the fallback have none
    router.save_pretrained(tmp_path / "r")
    loaded = ZooterRouter.from_pretrained(tmp_path / "r", device="cpu")
    assert torch.equal(loaded.bank.propensities.isnan(), chances.isnan())
    loaded.remove_expert("poet")  # columns follow the experts
    assert loaded.bank.propensities.shape == loaded.bank.rewards.shape
    with pytest.raises(DataError, match="propensity"):
        RoutingExample.from_dict({"id": "x", "query": "q", "rewards": {"coder": 1.0}, "propensity": 1.5})


def test_feedback_on_routed_answers_reaches_the_bank_without_embedding_the_queries_again(
    router: ZooterRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zooter_langchain import ChatZooterRouter, FakeExpertChatModel, FeedbackLog

    experts = {name: FakeExpertChatModel(name=name) for name in router.experts}
    log = FeedbackLog(tmp_path / "feedback.jsonl")
    model = ChatZooterRouter(router=router, experts=experts, feedback_log=log)
    queries = [r["query"] for r in ROWS[40:46]]
    for i, reply in enumerate(model.batch(queries)):
        log.record(reply, float(i % 2))
    rows = load_rows(log.path)
    assert all(row.vector is not None and row.vector.encoder == router.encoder_id for row in rows)
    # a decision holds its query's vector only when asked (a router with a log that keeps them asks)
    assert router.route(queries[:1])[0].vector is None
    assert router.route(queries[:1], keep_vectors=True)[0].vector.shape == router.bank.embeddings.shape[1:]
    # a row whose vector another encoder computed is embedded; so is one without a vector
    foreign = RoutingExample(
        "other", ROWS[46]["query"], {"coder": 1.0}, vector=replace(rows[0].vector, encoder="sha256:" + "0" * 64)
    )
    embedded: list = []
    real = router.embed_queries
    monkeypatch.setattr(router, "embed_queries", lambda qs, **kw: embedded.extend(qs) or real(qs, **kw))
    report = router.update([*rows, foreign, example("plain", ROWS[47]["query"], poet=1.0)])
    assert embedded == [ROWS[46]["query"], ROWS[47]["query"]]  # the six routed queries were not embedded again
    assert (report.appended, report.reused_vectors) == (8, 6)
    assert any("6 kept the vector they were routed with" in line for line in report.lines())
    # the kept vectors are the ones embedding the queries gives, to the bank's float16 rounding
    again = torch.nn.functional.normalize(real(queries).float(), dim=-1)
    kept = router.bank.embeddings[[router.bank.ids.index(row.id) for row in rows]].float()
    assert torch.allclose(kept, again, atol=2e-3)


def test_an_edit_that_embeds_no_query_never_reads_a_deferred_encoder(trained: Path, tmp_path: Path) -> None:
    eager = ZooterRouter.from_pretrained(trained, device="cpu")
    queries = [r["query"] for r in ROWS[40:44]]
    vectors = eager.estimate(queries).vectors
    routed = [
        RoutingExample(f"f{i}", q, {"coder": 1.0}, vector=QueryVector.of(v, eager.encoder_id))
        for i, (q, v) in enumerate(zip(queries, vectors))
    ]
    lazy = ZooterRouter.from_pretrained(trained, device="cpu", lazy_encoder=True)
    for router in (eager, lazy):
        router.update([*routed, example("q1", "known", poet=0.0)])
        router.remove_expert("mathbot")
    assert lazy.encoder_deferred  # the feedback carried its vectors; merging and retiring embed nothing
    assert torch.equal(lazy.bank.embeddings, eager.bank.embeddings)
    assert lazy.config.decision == eager.config.decision
    saved = ZooterRouter.from_pretrained(lazy.save_pretrained(tmp_path / "r"), device="cpu")
    assert saved.encoder_id == eager.encoder_id and saved.experts == ["coder", "poet"]
    torch.testing.assert_close(saved.estimate(queries).expected_rewards, eager.estimate(queries).expected_rewards)
    lazy.update([example("plain", ROWS[47]["query"], coder=1.0)])  # a query without its vector is embedded
    assert not lazy.encoder_deferred and len(lazy.bank) == len(eager.bank) + 1


def test_a_serving_router_picks_up_an_update_saved_over_its_folder_sharing_its_encoder(
    trained: Path, tmp_path: Path, tiny_encoder: str
) -> None:
    folder = Path(shutil.copytree(trained, tmp_path / "router"))
    serving = ZooterRouter.from_pretrained(folder, device="cpu")
    queries = [r["query"] for r in ROWS[40:46]]
    serving.route(queries)
    assert serving.reloaded() is serving  # nothing saved since
    updater = ZooterRouter.from_pretrained(folder, device="cpu", lazy_encoder=True)
    updater.update([example("n1", ROWS[45]["query"], poet=9.0), example("q1", "known", coder=-3.0)])
    updater.save_pretrained(folder)  # as `zooter update` does, in place
    fresh = serving.reloaded()
    assert fresh is not serving and len(fresh.bank) == len(serving.bank) + 1
    assert fresh.encoder is serving.encoder and fresh.tokenizer is serving.tokenizer  # shared, not read again
    expected = ZooterRouter.from_pretrained(folder, device="cpu")
    torch.testing.assert_close(fresh.estimate(queries).expected_rewards, expected.estimate(queries).expected_rewards)
    assert [d.expert for d in fresh.route(queries)] == [d.expert for d in expected.route(queries)]
    assert fresh.reloaded() is fresh and len(serving.bank) == 40  # the old router routes as it did

    with torch.no_grad():  # a save of another encoder: read, not shared
        next(expected.encoder.parameters()).add_(0.5)
    expected.save_pretrained(folder)
    changed = fresh.reloaded()
    assert changed.encoder is not fresh.encoder and not changed.encoder_deferred
    assert changed.encoder_id == expected.encoder_id != fresh.encoder_id
    changed.save_pretrained(folder)  # its own save over its folder is what it holds already
    assert changed.reloaded() is changed
    with pytest.raises(ConfigError, match="not loaded from a local folder"):
        ZooterRouter.from_encoder(tiny_encoder, experts=["a", "b"], device="cpu").reloaded()


def test_chat_zooter_router_reloads_an_update_and_refuses_a_router_of_other_experts(
    trained: Path, tmp_path: Path
) -> None:
    from zooter_langchain import ChatZooterRouter, FakeExpertChatModel

    folder = Path(shutil.copytree(trained, tmp_path / "router"))
    experts = {name: FakeExpertChatModel(name=name) for name in ["mathbot", "coder", "poet"]}
    model = ChatZooterRouter.from_pretrained(folder, experts=experts, device="cpu")
    assert model.reload_router() is False
    updater = ZooterRouter.from_pretrained(folder, device="cpu", lazy_encoder=True)
    updater.update([example("q1", "known", coder=-3.0)])
    updater.save_pretrained(folder)
    before = model.router
    assert model.reload_router() is True
    assert model.router is not before and model.router.encoder is before.encoder
    assert model.invoke(ROWS[40]["query"]).response_metadata["zooter"]["expert"] in experts
    updater.remove_expert("poet")
    updater.save_pretrained(folder)
    current = model.router
    with pytest.raises(ExpertMismatchError, match="poet"):
        model.reload_router()
    assert model.router is current


def test_a_routed_vector_that_does_not_fit_is_refused_and_the_router_is_unchanged(router: ZooterRouter) -> None:
    before = len(router.bank)
    width = router.bank.embeddings.shape[1]
    for values in (torch.ones(7), torch.full((width,), math.inf), torch.zeros(width)):
        wrong = QueryVector.of(values, router.encoder_id)  # the router's id: the wrong width, inf, zeros
        with pytest.raises(DataError, match=rf"id 'bad'.*vector.*{width} finite values.*got {len(values)} values"):
            router.update(
                [RoutingExample("n1", "q", {"coder": 1.0}), RoutingExample("bad", "q", {"coder": 1.0}, vector=wrong)]
            )
        assert len(router.bank) == before


def test_the_encoder_id_names_the_weights_as_they_are(router: ZooterRouter, trained: Path) -> None:
    same = ZooterRouter.from_pretrained(trained, device="cpu")
    assert router.encoder_id == same.encoder_id and router.encoder_id.startswith("sha256:")
    with torch.no_grad():
        next(same.encoder.parameters())[0].add_(1.0)  # a fine-tuning step, say
    assert same.encoder_id != router.encoder_id


def test_bad_rows_are_refused_and_the_router_is_unchanged(router: ZooterRouter) -> None:
    before = (router.experts, router.bank.rewards.clone(), router.config.decision)
    with pytest.raises(DataError, match="experts the router lacks"):
        router.update([example("q1", "x", coder=1.0), example("q2", "y", stranger=1.0)])
    with pytest.raises(DataError, match="another router"):
        router.update([example("z1", "x", gpt=1.0), example("z2", "y", claude=1.0)])
    with pytest.raises(DataError, match="no reward"):
        router.update([RoutingExample(id="q1", query="x", rewards={})])
    with pytest.raises(ConfigError, match="already"):
        router.add_expert("coder", [example("q1", "x", coder=1.0)])
    with pytest.raises(DataError, match="no row has a reward for the new expert"):
        router.add_expert("newbie", [example("q1", "x", coder=1.0)])
    router.set_costs({name: {"cost_per_call": 0.01} for name in router.experts})
    with pytest.raises(ConfigError, match="price"):
        router.add_expert("newbie", [example("q1", "x", newbie=1.0)])
    assert router.experts == before[0] and router.config.decision == before[2]
    assert torch.allclose(router.bank.rewards.nan_to_num(-99), before[1].nan_to_num(-99))


def two_clusters(rows: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries in two clusters; expert 0 (the default) is good everywhere, expert 1 middling."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    embeddings = centres[torch.arange(rows) % 2] + 0.05 * torch.randn(rows, 3, generator=generator)
    rewards = torch.stack([torch.full((rows,), 0.7), torch.full((rows,), 0.5), torch.full((rows,), math.nan)], 1)
    return embeddings, rewards


@pytest.mark.parametrize("shrinkage", [1.0, 3.0, 10.0])
def test_an_expert_with_thin_support_is_never_chosen_on_no_evidence(shrinkage: float) -> None:
    embeddings, rewards = two_clusters()
    rewards[0, 2] = 1.0  # the new expert's one lucky reward, in the first cluster
    rule = DecisionRule(default_expert="a", margin=0.0)
    queries = torch.tensor([[0.0, 1.0, 0.0], [0.02, 0.98, 0.0]])  # the second cluster: no evidence there
    # the plain average: one far neighbour's reward is the whole estimate, and it wins
    plain = NeighbourBank(embeddings, rewards, torch.full_like(rewards, 1 / 3), k=60)
    assert choose(plain.estimate(queries).scores, ["a", "b", "c"], rule).tolist() == [2, 2]
    bank = NeighbourBank(embeddings, rewards, torch.full_like(rewards, 1 / 3), k=60, shrinkage=shrinkage)
    estimates = bank.estimate(queries)
    assert bool((estimates.support[:, 2] < 1e-3).all()) and bool((estimates.support[:, 0] > 10).all())
    assert choose(estimates.scores, ["a", "b", "c"], rule).tolist() == [0, 0]
    # where one neighbour is all the evidence, its reward is pulled towards the prior
    near = bank.estimate(embeddings[:1] + 0.01)
    assert 0.5 < near.support[0, 2] < 2.0
    assert near.expected_rewards[0, 2] < 1.0 - 0.5 * shrinkage / (shrinkage + 2.0) * 0.3


def test_support_and_standard_error_follow_the_evidence() -> None:
    embeddings, rewards = two_clusters()
    rewards[:, 2] = torch.where(torch.arange(60) < 30, 0.9, math.nan)  # the new expert on half the rows
    bank = NeighbourBank(embeddings, rewards, torch.full_like(rewards, 1 / 3), k=20, shrinkage=3.0)
    estimates = bank.leave_one_out()
    thin = estimates.support[:, 2] < estimates.support[:, 0]
    assert bool(thin.all())
    assert bool((estimates.stderr[:, 2] >= estimates.stderr[:, 0] - 1e-6).all())
    # where the evidence is plenty the estimate is near the neighbours' own mean
    assert torch.allclose(estimates.expected_rewards[:, 0], torch.full((60,), 0.7), atol=5e-3)


def test_a_complete_bank_estimates_each_expert_from_the_k_nearest_rows() -> None:
    generator = torch.Generator().manual_seed(3)
    embeddings, rewards = torch.randn(80, 8, generator=generator), torch.rand(80, 3, generator=generator)
    queries = torch.randn(5, 8, generator=generator)
    for shrinkage in (0.0, 3.0):
        bank = NeighbourBank(embeddings, rewards, torch.full_like(rewards, 1 / 3), k=10, shrinkage=shrinkage)
        assert bank.depth() == 10  # every row has every reward: the k nearest rows, nothing deeper
        top, index = bank.search(queries)
        w = torch.exp((top - top[:, :1]) / bank.temperature).unsqueeze(-1)
        mean = (w * rewards[index]).sum(1) / w.sum(1)
        kish = (w.sum(1).square() / w.square().sum(1)).expand_as(mean)
        prior = (w.squeeze(-1) * bank.difficulty[index]).sum(1, keepdim=True) / w.sum(1) + bank.offsets
        expected = (kish * mean + shrinkage * prior) / (kish + shrinkage)
        estimates = bank.estimate(queries)
        assert torch.allclose(estimates.support, kish) and torch.allclose(estimates.expected_rewards, expected)


def test_rows_without_an_experts_reward_do_not_crowd_out_its_evidence() -> None:
    # near the query, 20 rows of feedback carry only the default expert's reward (0.5); a little
    # farther, 20 scored rows carry both, and there expert b (0.9) beats the default; 20 more rows of
    # feedback lie far away
    generator = torch.Generator().manual_seed(2)
    direction = torch.nn.functional.normalize(torch.tensor([1.0, 0.3, 0.0]), dim=0)
    crowd = torch.tensor([1.0, 0.0, 0.0]) + 0.01 * torch.randn(20, 3, generator=generator)
    scored = direction + 0.01 * torch.randn(20, 3, generator=generator)
    far = torch.tensor([0.0, 0.0, 1.0]) + 0.01 * torch.randn(20, 3, generator=generator)
    embeddings = torch.cat([crowd, scored, far])
    default_only, both = torch.tensor([[0.5, math.nan]]).expand(20, 2), torch.tensor([[0.5, 0.9]]).expand(20, 2)
    rewards = torch.cat([default_only, both, default_only])
    bank = NeighbourBank(embeddings, rewards, torch.full_like(rewards, 0.5), k=20, shrinkage=3.0)
    # b's reward is on a third of the rows: a search 3 times its 10 (k / 2) own neighbours deep finds them
    assert (bank.own_neighbours(), bank.depth()) == (10, 30)
    estimates = bank.estimate(torch.tensor([[1.0, 0.0, 0.0]]))
    # b is estimated from its 10 nearest rows with a reward, though none of the 20 nearest rows has
    # one; they are farther than the query's nearest rows, so they count for less than the default's
    assert estimates.expected_rewards[0, 1] > 0.8 and 1.0 < estimates.support[0, 1] < estimates.support[0, 0]
    assert choose(estimates.scores, ["a", "b"], DecisionRule(default_expert="a", margin=0.1)).tolist() == [1]
    # leave-one-out still leaves the row itself out: b's only reward, on row 0, is not its own evidence
    rewards[:, 1] = math.nan
    rewards[0, 1] = 0.9
    alone = NeighbourBank(embeddings, rewards, torch.full_like(rewards, 0.5), k=20, shrinkage=0.0)
    assert math.isnan(alone.leave_one_out(torch.tensor([0])).expected_rewards[0, 1].item())
    assert alone.leave_one_out(torch.tensor([1])).expected_rewards[0, 1].item() == pytest.approx(0.9)


def test_calibration_counts_incomplete_rows_through_stand_ins() -> None:
    from zooter.decide.policy import calibrate_decision

    generator = torch.Generator().manual_seed(1)
    rewards = torch.stack([torch.rand(400, generator=generator), torch.rand(400, generator=generator)], 1)
    scores = rewards + 0.05 * torch.randn(400, 2, generator=generator)  # estimates that know the winner
    partial = rewards.clone()
    partial[torch.arange(400) % 5 < 2, 1] = math.nan  # expert b scored on 60 % of the rows
    complete_only = calibrate_decision(scores, partial, ["a", "b"], default_expert="a")
    assert complete_only.calibration["rows"] == 240
    filled = torch.where(torch.isfinite(partial), partial, torch.full_like(partial, 0.5))
    with_stand_ins = calibrate_decision(scores, partial, ["a", "b"], default_expert="a", filled=filled)
    assert with_stand_ins.calibration["rows"] == 400 and with_stand_ins.calibration["complete_rows"] == 240


def _thin_rows(seed: int, rows: int = 400, scored: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Three experts' rewards, the last scored on a random ``scored`` of the rows only."""
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.rand(rows, 3, generator=generator)
    partial = rewards.clone()
    hidden = torch.randperm(rows, generator=generator)[scored:]
    partial[hidden, 2] = math.nan
    return rewards, partial


def test_a_thin_expert_is_admitted_only_where_its_own_rows_show_it_pays() -> None:
    from zooter.decide.policy import calibrate_decision, choose

    experts = ["a", "b", "new"]
    rewards, partial = _thin_rows(0)
    knowing = rewards + 0.05 * torch.randn(rewards.shape, generator=torch.Generator().manual_seed(5))
    rule = calibrate_decision(knowing, partial, experts, default_expert="a")
    # b is calibrated on every row; "new" (scored on 100 of 400 rows) is thin, and its rows show it pays
    assert rule.routes and rule.thin_experts["new"] is not None
    assert rule.calibration["thin_experts"]["admitted"] and rule.calibration["thin_experts"]["rows"] == {"new": 100}
    picks = choose(knowing, experts, rule)
    without = choose(knowing[:, :2], experts[:2], rule.model_copy(update={"thin_experts": {}}))
    assert rewards.gather(1, picks[:, None]).mean() > rewards.gather(1, without[:, None]).mean()
    # a worse "new" expert whose estimates know nothing (its prior says it is the best everywhere): not admitted
    partial[:, 2] *= 0.3
    blind = knowing.clone()
    blind[:, 2] = 0.9 + 0.01 * torch.rand(400, generator=torch.Generator().manual_seed(6))
    rule = calibrate_decision(blind, partial, experts, default_expert="a")
    assert rule.thin_experts == {"new": None}
    assert choose(blind, experts, rule).tolist() == choose(blind[:, :2], experts[:2], rule).tolist()


def test_feedback_rows_do_not_make_an_expert_thin_nor_calibrate_the_margin_on_stand_ins() -> None:
    from zooter.decide.policy import calibrate_decision

    experts = ["a", "b"]
    generator = torch.Generator().manual_seed(4)
    scored = torch.rand(200, 2, generator=generator)
    logged = torch.full((600, 2), math.nan)
    logged[:, 0] = torch.rand(600, generator=generator)  # the router answered with its default, a
    rewards = torch.cat([scored, logged])
    propensities = torch.where(torch.isfinite(rewards), 0.9, math.nan)
    propensities[:200] = math.nan  # the scored rows were not observed through the policy
    scores = rewards.nan_to_num(0.5) + 0.05 * torch.randn(800, 2, generator=generator)
    rule = calibrate_decision(scores, rewards, experts, default_expert="a", propensities=propensities)
    c = rule.calibration
    assert rule.thin_experts == {} and (c["scored_rows"], c["logged_rows"]) == (200, 600)
    assert c["rows"] == 200 and rule.routes  # b wins where the scored rows say so


def test_doubly_robust_values_are_unbiased_on_a_logged_set() -> None:
    """Bandit feedback: one expert's reward per row, drawn by a logging policy with known propensities;
    the doubly robust mean of another policy's picks matches its true mean, even with a biased direct model."""
    from zooter.decide.policy import doubly_robust_values

    generator = torch.Generator().manual_seed(3)
    rows, experts = 20000, 3
    truth = torch.rand(rows, experts, generator=generator)
    logging = torch.tensor([0.7, 0.2, 0.1]).expand(rows, experts)
    logged = torch.multinomial(logging, 1, generator=generator).squeeze(1)
    rewards = torch.full((rows, experts), math.nan)
    rewards[torch.arange(rows), logged] = truth[torch.arange(rows), logged]
    propensities = torch.where(torch.isfinite(rewards), logging, torch.full_like(logging, math.nan))
    direct = truth + 0.3  # a direct model that is off by 0.3 everywhere
    values = doubly_robust_values(rewards, direct, propensities)
    policy = (truth[:, 2] > 0.5).long() * 2  # picks expert 2 where it is good, else expert 0
    estimate = values.gather(1, policy[:, None]).mean()
    true = truth.gather(1, policy[:, None]).mean()
    assert abs(float(estimate - true)) < 0.03
    assert abs(float(direct.gather(1, policy[:, None]).mean() - true)) > 0.25  # the direct model alone is not


def test_an_update_calibrates_the_cost_weight_again_on_the_bank(tiny_encoder: str, tmp_path: Path) -> None:
    from zooter.decide.costs import CostTable, CostTarget

    prices = CostTable.from_dict(
        {
            "mathbot": {"input_price_per_mtok": 0.5, "output_price_per_mtok": 1.0, "expected_output_tokens": 100},
            "coder": {"input_price_per_mtok": 20.0, "output_price_per_mtok": 20.0, "expected_output_tokens": 200},
            "poet": {"cost_per_call": 0.0001},
        }
    )
    data = RoutingDataset([RoutingExample.from_dict(r) for r in ROWS[:40]])
    config = TrainingConfig(encoder=tiny_encoder, max_length=32, device="cpu", show_progress=False, neighbours=[10])
    router = train_router(data, config, costs=prices, cost_target=CostTarget(share=0.2, share_experts=["coder"]))
    assert router.config.costs.calibration.rows == 40
    router.save_pretrained(tmp_path / "r")
    router = ZooterRouter.from_pretrained(tmp_path / "r", device="cpu")
    assert router.bank.tokens is not None  # the bank prices its rows, saved with it
    # eight new queries on which coder is by far the best: calibrated again, on the grown bank
    new = [
        {**row, "id": f"n{i}", "rewards": {"mathbot": 0.0, "coder": 10.0, "poet": 0.0}}
        for i, row in enumerate(ROWS[40:])
    ]
    router.update([RoutingExample.from_dict(r) for r in new])
    calibration = router.config.costs.calibration
    assert calibration.rows == 48 and calibration.source == "leave-one-out"
    assert calibration.target["share"] == 0.2
    assert router.bank.tokens[-1] == router.count_tokens([ROWS[47]["query"]])[0]
