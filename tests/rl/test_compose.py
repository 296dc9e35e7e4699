"""GPC-style composition: the end weights reproduce each policy exactly, the half weight follows the
average velocity, mismatched policies are refused by field, and the weight search on toy-reach1d
finds the good policy of a good/bad pair."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from toy_tasks import tiny_diffusion_policy, tiny_flow_policy

from robolearn.policies.common.config import DenoiserConfig
from robolearn.policies.diffusion.model import DiffusionPolicy
from robolearn.policies.flow.config import FlowConfig
from robolearn.policies.flow.model import FlowPolicy
from robolearn.rl.compose import ComposedPolicy, search_weights

torch.set_num_threads(1)
FEATURES = {"observation.state": (2,), "action": (1,)}


def obs(b: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"observation.state": torch.rand(b, 1, 2, generator=g) * 2 - 1}


def pair(kind: str, scheduler: str = "ddim"):
    if kind == "flow":
        return tiny_flow_policy(seed=0).eval(), tiny_flow_policy(seed=1).eval()
    return tiny_diffusion_policy(scheduler=scheduler, seed=0).eval(), tiny_diffusion_policy(
        scheduler=scheduler, seed=1
    ).eval()


@pytest.mark.parametrize("kind,scheduler", [("flow", None), ("diffusion", "ddim"), ("diffusion", "ddpm")])
def test_end_weights_reproduce_each_policy_bit_for_bit(kind, scheduler):
    a, b = pair(kind, scheduler)
    o = obs()
    noise = torch.randn(3, 4, 2, 1)
    for w, ref in ((1.0, a), (0.0, b)):
        composed = ComposedPolicy(a, b, w)
        # The same noise (and, for DDPM, the same generator stream) as the policy alone.
        got = composed.predict_action_chunk(
            o, noise=noise, num_samples=4, generator=torch.Generator().manual_seed(3)
        )
        want = ref.predict_action_chunk(
            o, noise=noise, num_samples=4, generator=torch.Generator().manual_seed(3)
        )
        assert got.shape == (3, 4, 2, 1) and torch.equal(got, want)
    # Noise drawn by the wrapper's own generator equals the policy's own draw from that seed.
    composed = ComposedPolicy(a, b, 1.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(
        composed.predict_action_chunk(o),
        a.predict_action_chunk(o, generator=torch.Generator().manual_seed(7)),
    )
    assert not torch.equal(
        a.predict_action_chunk(o, noise=noise[:, 0]), b.predict_action_chunk(o, noise=noise[:, 0])
    )


def test_half_weight_integrates_the_average_velocity():
    a, b = pair("flow")
    o, x0 = obs(4), torch.randn(4, 2, 1)
    composed = ComposedPolicy(a, b, 0.5)
    got = composed.predict_action_chunk(o, noise=x0)
    # One Euler chain computed here: x += (1/K)·(v_A + v_B)/2 on t_k = k/K, then the clip to [-1, 1].
    ca, cb = a.encode_obs(o), b.encode_obs(o)
    k = a.config.num_inference_steps
    x = x0.clone()
    with torch.no_grad():
        for i in range(k):
            t = torch.full((4,), i / k)
            v = (a.velocity(x, t, ca) + b.velocity(x, t, cb)) / 2
            assert torch.allclose(composed.velocity(x, t, ca, cb, 1 / k), v, atol=1e-6)
            x = x + v / k
    torch.testing.assert_close(got, x.clamp(-1, 1), atol=1e-6, rtol=0)
    assert not torch.allclose(got, a.predict_action_chunk(o, noise=x0), atol=1e-3)
    assert not torch.allclose(got, b.predict_action_chunk(o, noise=x0), atol=1e-3)


@pytest.mark.parametrize("kind", ["flow", "diffusion"])
def test_a_policy_composed_with_itself_is_itself_at_any_weight(kind):
    a, _ = pair(kind)
    o, noise = obs(), torch.randn(3, 2, 1)
    for w in (0.3, 0.77):
        got = ComposedPolicy(a, a, w).predict_action_chunk(o, noise=noise)
        torch.testing.assert_close(got, a.predict_action_chunk(o, noise=noise), atol=1e-6, rtol=0)


def test_diffusion_mixes_a_sample_and_an_epsilon_predictor_in_one_space():
    a = tiny_diffusion_policy(seed=0).eval()  # prediction_type: sample
    torch.manual_seed(1)
    b = DiffusionPolicy(dataclasses.replace(a.config, prediction_type="epsilon")).eval()
    o, noise = obs(), torch.randn(3, 2, 1)
    assert torch.equal(ComposedPolicy(a, b, 1.0).predict_action_chunk(o, noise=noise),
                       a.predict_action_chunk(o, noise=noise))  # fmt: skip
    # B's ε turned into a clean chunk and back through the scheduler: equal to float rounding.
    torch.testing.assert_close(ComposedPolicy(a, b, 0.0).predict_action_chunk(o, noise=noise),
                               b.predict_action_chunk(o, noise=noise), atol=1e-4, rtol=0)  # fmt: skip


def _flow(**changes):
    torch.manual_seed(0)
    cfg = FlowConfig(n_obs_steps=1, horizon=2, n_action_steps=2, num_inference_steps=3,
                     denoiser=DenoiserConfig(kind="mlp", mlp_dims=(16,), time_embed_dim=8))  # fmt: skip
    stats = changes.pop("stats", None)
    return FlowPolicy(dataclasses.replace(cfg, **changes), features=FEATURES, stats=stats).eval()


def test_mismatched_policies_are_refused_naming_the_field():
    from robolearn.policies import MLPConfig
    from robolearn.registry import POLICIES

    a = _flow()
    stats = {"observation.state": {"min": [-1, -1], "max": [1, 1]}, "action": {"min": [-1.0], "max": [1.0]}}
    cases = [
        (_flow(horizon=4), "config.horizon: A has 2, B has 4"),
        (_flow(num_inference_steps=5), "config.num_inference_steps"),
        (_flow(n_action_steps=1), "config.n_action_steps"),
        (_flow(clip_range=2.0), "config.clip_range"),
        (tiny_diffusion_policy(), "type: A is 'flow', B is 'diffusion'"),
        (
            POLICIES.build(
                "mlp",
                MLPConfig(n_obs_steps=1, horizon=2, n_action_steps=2, hidden_dims=(8,)),
                features=FEATURES,
            ),
            "policy B: type 'mlp' cannot be composed",
        ),  # fmt: skip
        (_flow(stats={**stats, "action": {"min": [-2.0], "max": [2.0]}}), "norm_stats 'action' dim 0"),
    ]
    for b, message in cases:
        with pytest.raises(ValueError, match=message):
            ComposedPolicy(a, b, 0.5)
    # Identical stats written differently (min/max giving the identity map) compose.
    ComposedPolicy(a, _flow(stats=stats), 0.5)
    d1, d2 = tiny_diffusion_policy(), tiny_diffusion_policy(scheduler="ddpm")
    with pytest.raises(ValueError, match="config.inference_scheduler"):
        ComposedPolicy(d1, d2, 0.5)
    for w in (-0.1, 1.5):
        with pytest.raises(ValueError, match="weight: expected in"):
            ComposedPolicy(a, _flow(), w)


def test_select_action_and_interface():
    a, b = pair("flow")
    composed = ComposedPolicy(a, b, 0.25)
    composed.reset()
    actions = [composed.select_action({"observation.state": torch.zeros(2, 2)}) for _ in range(5)]
    assert all(x.shape == (2, 1) for x in actions)
    assert composed.config.horizon == 2 and composed.config.exec_start == 0
    assert composed.input_features == {"observation.state": (2,)} and composed.name == "composed-flow"


# ------------------------------------------------------------------------------ the weight search
def _expert_batch(n: int, g: torch.Generator, sign: float) -> dict[str, torch.Tensor]:
    """toy-reach1d's optimal 2-action chunks (``sign=-1``: the same actions reversed, a bad policy)."""
    x, goal = torch.rand(n, generator=g) * 2 - 1, torch.rand(n, generator=g) * 2 - 1
    a1 = ((goal - x) / 0.4).clamp(-1, 1)
    a2 = ((goal - (x + 0.4 * a1)) / 0.4).clamp(-1, 1)
    return {"observation.state": torch.stack([x, goal], 1)[:, None],
            "action": sign * torch.stack([a1, a2], 1)[..., None]}  # fmt: skip


def _fit(sign: float, seed: int, steps: int = 300) -> FlowPolicy:
    torch.manual_seed(seed)
    cfg = FlowConfig(n_obs_steps=1, horizon=2, n_action_steps=2, num_inference_steps=3, prediction="sample",
                     denoiser=DenoiserConfig(kind="mlp", mlp_dims=(64, 64), time_embed_dim=16))  # fmt: skip
    policy = FlowPolicy(cfg, features=FEATURES)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        loss, _ = policy.compute_loss(_expert_batch(256, g, sign))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) < 0.3 * sum(losses[:20])  # it learned
    return policy.eval()


@pytest.fixture(scope="module")
def good_and_bad():
    return _fit(1.0, seed=0), _fit(-1.0, seed=1)


def test_weight_search_picks_the_good_policy(good_and_bad):
    good, bad = good_and_bad
    found = search_weights(good, bad, "toy-reach1d", episodes=40, hold_steps=2, num_envs=8, progress=False)
    first = dict(zip(found.weights, (r.success_rate for r in found.results), strict=True))
    assert found.weights == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(r.episodes == 40 and r.hold_steps == 2 for r in found.results)
    # The same seeds for every weight; the reversed policy rarely reaches, the expert-like one nearly always.
    assert len({tuple(e.seed for e in r.per_episode) for r in found.results}) == 1
    assert first[1.0] >= 0.9 and first[0.0] <= 0.3 and first[1.0] > first[0.5] > first[0.0]
    assert found.best_weight >= 0.75
    best = found.results[found.best]
    assert best.held_success_rate == max(r.held_success_rate for r in found.results)
    data = found.to_json()
    assert data["best_weight"] == found.best_weight and len(data["runs"]) == 5


def test_compose_command(good_and_bad, tmp_path, capsys):
    from robolearn.cli import main

    good, bad = good_and_bad
    good.save_pretrained(tmp_path / "good")
    bad.save_pretrained(tmp_path / "bad")
    _flow(horizon=4, n_action_steps=2).save_pretrained(tmp_path / "long")
    tiny_diffusion_policy().save_pretrained(tmp_path / "diff")
    base = ["compose", "--checkpoint", str(tmp_path / "good"), "--env", "toy-reach1d", "--episodes", "12",
            "--hold-steps", "2"]  # fmt: skip
    js = tmp_path / "c.json"
    assert main([*base, "--checkpoint", str(tmp_path / "bad"), "--weights", "0,1", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "first success" in out and "held 2 steps" in out and "best: w = 1" in out
    data = json.loads(js.read_text())
    assert data["best_weight"] == 1.0 and [r["weight"] for r in data["runs"]] == [0.0, 1.0]
    assert data["runs"][1]["success_rate"] > data["runs"][0]["success_rate"] and data["kind"] == "flow"
    for extra, message in [
        (
            ["--checkpoint", str(tmp_path / "bad"), "--weights", "0,1.5"],
            "--weights: each weight must be in [0, 1]",
        ),
        (["--checkpoint", str(tmp_path / "long")], f"{tmp_path / 'long'} does not compose with"),
        (["--checkpoint", str(tmp_path / "long")], "config.horizon: A has 2, B has 4"),
        (["--checkpoint", str(tmp_path / "diff")], "type: A is 'flow', B is 'diffusion'"),
        ([], "give exactly two"),
    ]:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
