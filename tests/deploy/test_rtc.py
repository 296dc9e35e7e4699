"""Real-time chunking: the paper's mask and guidance weight, and guided sampling on a bimodal task.

The tiny flow policies are trained (a few hundred steps) on chunks whose offset is +z or -z at
random for the same observation, so an unguided sample picks a mode by chance, and RTC must pick
the mode of the frozen actions and keep following it after the delay.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robolearn.policies.flow.rtc import guidance_weight, guided_chunk, prefix_weights, rtc_mask
from robolearn.types import ACTION, OBS_STATE, FeatureSpec

torch.set_num_threads(1)
DS, DA, TO, H = 4, 3, 2, 16
START = TO - 1
"""Chunk step of the observation's time: prev_actions[0] aligns with it."""


def _chunks(n: int, g: torch.Generator, mode: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """States (n, To, Ds) and chunks (n, H, Da): a function of the state plus a ±1 mode ramp."""
    state = torch.rand(n, TO, DS, generator=g) * 2 - 1
    if mode is None:
        z = torch.randint(0, 2, (n, 1, 1), generator=g).float() * 2 - 1
    else:
        z = torch.full((n, 1, 1), float(mode))
    steps = torch.arange(H, dtype=torch.float32)[None, :, None]
    return state, 0.3 * torch.tanh(state[:, -1:, :DA]) + z * (0.4 + 0.03 * steps)


def _trained_flow(prediction: str, steps: int = 400):
    import robolearn.policies  # noqa: F401  (registers the policies)
    from robolearn.policies.common.config import DenoiserConfig
    from robolearn.registry import POLICIES

    torch.manual_seed(0)
    state, action = _chunks(4096, torch.Generator().manual_seed(0))
    flat = action.reshape(-1, DA)
    stats = {
        OBS_STATE: {"min": -np.ones(DS), "max": np.ones(DS), "mean": np.zeros(DS), "std": np.ones(DS)},
        ACTION: {"min": flat.min(0).values.numpy(), "max": flat.max(0).values.numpy(),
                 "mean": flat.mean(0).numpy(), "std": flat.std(0).numpy()},
    }  # fmt: skip
    cfg = POLICIES.get("flow").default_config(
        horizon=H, n_obs_steps=TO, n_action_steps=8, num_inference_steps=5, prediction=prediction,
        denoiser=DenoiserConfig(kind="mlp", mlp_dims=(128, 128)),
    )  # fmt: skip
    features = {OBS_STATE: FeatureSpec("float32", (DS,)), ACTION: FeatureSpec("float32", (DA,))}
    policy = POLICIES.build("flow", cfg, features=features, stats=stats)
    opt = torch.optim.Adam(policy.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, len(state), (128,), generator=g)
        loss, _ = policy.compute_loss({OBS_STATE: state[idx], ACTION: action[idx]})
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy.eval()


@pytest.fixture(scope="module", params=["velocity", "sample"])
def flow(request):
    return _trained_flow(request.param)


def _action_range(policy) -> tuple[torch.Tensor, torch.Tensor]:
    stats = policy.stats[ACTION]
    return torch.as_tensor(stats["min"]).float(), torch.as_tensor(stats["max"]).float()


# ------------------------------------------------------------------------------------------ mask


def test_mask_is_the_papers_formula():
    h, s, d = 10, 4, 2
    w = prefix_weights(d, h - s, h)
    c = [(h - s - i) / (h - s - d + 1) for i in range(h)]
    expected = [
        1.0 if i < d else (c[i] * (math.exp(c[i]) - 1) / (math.e - 1) if i < h - s else 0.0) for i in range(h)
    ]
    assert w.shape == (h,) and w.dtype == np.float32
    np.testing.assert_allclose(w, expected, rtol=1e-6)
    assert (np.diff(w) <= 0).all() and w[d - 1] == 1.0 and 0 < w[d] < 1 and w[h - s] == 0.0
    np.testing.assert_allclose(prefix_weights(2, 6, 10, "linear")[:7], [1, 1, 0.8, 0.6, 0.4, 0.2, 0])
    np.testing.assert_array_equal(prefix_weights(2, 6, 10, "zeros"), [1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(prefix_weights(2, 6, 10, "ones"), [1] * 6 + [0] * 4)
    # the end of the previous chunk bounds the frozen prefix too
    np.testing.assert_array_equal(prefix_weights(5, 3, 6), [1, 1, 1, 0, 0, 0])
    with pytest.raises(ValueError, match="schedule"):
        prefix_weights(1, 2, 3, "cosine")


def test_chunk_mask_is_aligned_at_the_observation_step_and_bounded_by_the_leftover():
    mask = rtc_mask(H, START, prev_lengths=[15, 5], delays=[3, 3], execution_horizon=8)
    assert mask.shape == (2, H)
    assert (mask[:, :START] == 0).all()  # the window's past never executes
    np.testing.assert_allclose(mask[0, START:], prefix_weights(3, H - START - 8, H - START))
    np.testing.assert_allclose(mask[1, START:], prefix_weights(3, 5, H - START))
    assert (mask[1, START + 5 :] == 0).all()


def test_guidance_weight_is_clipped_at_beta():
    assert guidance_weight(0.0, 5.0) == 5.0  # infinite before clipping
    assert guidance_weight(0.5, 5.0) == pytest.approx(2.0)  # (1-τ)/(τ r²) = (τ²+(1-τ)²)/(τ(1-τ))
    assert guidance_weight(0.5, 1.5) == 1.5
    tau = 0.9
    r2 = (1 - tau) ** 2 / (tau**2 + (1 - tau) ** 2)
    assert guidance_weight(tau, 100.0) == pytest.approx((1 - tau) / (tau * r2))
    assert guidance_weight(tau, 5.0) == 5.0
    with pytest.raises(ValueError, match="beta"):
        guidance_weight(0.5, -1.0)


# ------------------------------------------------------------------------------------------ sampling


def test_frozen_actions_are_followed_and_the_tail_keeps_their_mode(flow):
    state, truth = _chunks(32, torch.Generator().manual_seed(2), mode=1.0)
    obs = {OBS_STATE: state}
    d, leftover = 3, truth[:, START : START + 10]
    noise = torch.randn(32, H, DA, generator=torch.Generator().manual_seed(3))
    plain = flow.predict_action_chunk(obs, noise=noise)
    guided = guided_chunk(flow, obs, leftover, d, noise=noise)
    assert guided.shape == (32, H, DA)
    err_guided = (guided[:, START : START + d] - leftover[:, :d]).abs().mean()
    err_plain = (plain[:, START : START + d] - leftover[:, :d]).abs().mean()
    assert err_guided < 0.25 * err_plain and err_guided < 0.15
    # the free tail is a valid sample of the same mode (the offset sign of the frozen actions)
    lo, hi = _action_range(flow)
    assert (guided >= lo - 1e-4).all() and (guided <= hi + 1e-4).all()
    tail = guided[:, START + 10 :] - 0.3 * torch.tanh(state[:, -1:, :DA])
    assert (tail.mean(dim=(1, 2)) > 0).float().mean() > 0.9
    plain_tail = plain[:, START + 10 :] - 0.3 * torch.tanh(state[:, -1:, :DA])
    assert (plain_tail.mean(dim=(1, 2)) > 0).float().mean() < 0.9  # unguided: modes by chance


def test_per_sample_delays_and_leftovers_in_one_batch(flow):
    state = torch.cat([_chunks(4, torch.Generator().manual_seed(4), mode=m)[0] for m in (1.0, -1.0)])
    truth = torch.cat([_chunks(4, torch.Generator().manual_seed(4), mode=m)[1] for m in (1.0, -1.0)])
    leftovers = [truth[i, START : START + n].numpy() for i, n in enumerate([10, 8, 6, 12, 10, 8, 6, 12])]
    delays = [1, 2, 3, 4, 1, 2, 3, 4]
    noise = torch.randn(8, H, DA, generator=torch.Generator().manual_seed(10))
    with torch.inference_mode():  # the server samples under inference mode
        guided = guided_chunk(flow, {OBS_STATE: state}, leftovers, delays, execution_horizon=5, noise=noise)
        plain = flow.predict_action_chunk({OBS_STATE: state}, noise=noise)
    assert guided.shape == (8, H, DA)
    errors, plain_errors = [], []
    for i, (left, d) in enumerate(zip(leftovers, delays, strict=True)):
        errors.append(np.abs(guided[i, START : START + d].numpy() - left[:d]).max())
        plain_errors.append(np.abs(plain[i, START : START + d].numpy() - left[:d]).max())
    assert max(errors) < 0.35 and np.mean(errors) < 0.2 < np.mean(plain_errors)
    offsets = (guided[:, START:] - 0.3 * torch.tanh(state[:, -1:, :DA])).mean(dim=(1, 2))
    assert (offsets[:4] > 0).all() and (offsets[4:] < 0).all()


def test_zero_delay_and_no_overlap_is_the_unguided_sample(flow):
    state, truth = _chunks(8, torch.Generator().manual_seed(5), mode=-1.0)
    obs = {OBS_STATE: state}
    noise = torch.randn(8, H, DA, generator=torch.Generator().manual_seed(6))
    plain = flow.predict_action_chunk(obs, noise=noise)
    # d = 0 and s = H - (To - 1): the mask is all zeros, nothing is guided
    free = guided_chunk(flow, obs, truth[:, START:], 0, execution_horizon=H - START, noise=noise)
    torch.testing.assert_close(free, plain, atol=1e-5, rtol=0)
    # d = 0 with the left-over sampled from the same noise: the soft overlap keeps the guided
    # sample much closer to it than an independent sample is
    own = guided_chunk(flow, obs, plain[:, START:], 0, noise=noise)
    other = flow.predict_action_chunk(
        obs, noise=torch.randn(8, H, DA, generator=torch.Generator().manual_seed(7))
    )
    assert (own - plain).abs().mean() < 0.75 * (other - plain).abs().mean()
    # beta = 0 switches guidance off whatever the mask
    off = guided_chunk(flow, obs, truth[:, START:], 4, beta=0.0, noise=noise)
    torch.testing.assert_close(off, plain, atol=1e-5, rtol=0)


def test_a_larger_beta_follows_the_frozen_actions_more_closely(flow):
    state, truth = _chunks(16, torch.Generator().manual_seed(7), mode=1.0)
    obs, d = {OBS_STATE: state}, 4
    noise = torch.randn(16, H, DA, generator=torch.Generator().manual_seed(8))

    def prefix_error(beta: float) -> float:
        out = guided_chunk(flow, obs, truth[:, START:], d, beta=beta, noise=noise)
        return float((out[:, START : START + d] - truth[:, START : START + d]).abs().mean())

    errors = [prefix_error(b) for b in (0.0, 0.5, 5.0)]
    assert errors[0] > errors[1] > errors[2]


def test_bad_inputs_name_the_argument(flow):
    state, truth = _chunks(2, torch.Generator().manual_seed(9))
    obs = {OBS_STATE: state}
    with pytest.raises(ValueError, match="prev_actions"):
        guided_chunk(flow, obs, truth[:, :, :2], 1)
    with pytest.raises(ValueError, match="inference_delay"):
        guided_chunk(flow, obs, truth, [1, 2, 3])
    with pytest.raises(ValueError, match="inference_delay"):
        guided_chunk(flow, obs, truth, -1)
    with pytest.raises(TypeError, match="flow policy"):
        guided_chunk(torch.nn.Linear(1, 1), obs, truth, 1)


def test_shortcut_models_take_their_step_size():
    """A shortcut flow conditions on the step size: with nothing to guide, RTC is its plain sample."""
    import robolearn.policies  # noqa: F401
    from robolearn.policies.common.config import DenoiserConfig
    from robolearn.registry import POLICIES

    torch.manual_seed(0)
    cfg = POLICIES.get("flow").default_config(
        horizon=H, n_obs_steps=TO, n_action_steps=8, num_inference_steps=2, shortcut=True,
        shortcut_max_steps=8, denoiser=DenoiserConfig(kind="mlp", mlp_dims=(16,)),
    )  # fmt: skip
    features = {OBS_STATE: FeatureSpec("float32", (DS,)), ACTION: FeatureSpec("float32", (DA,))}
    policy = POLICIES.build("flow", cfg, features=features).eval()
    state, truth = _chunks(2, torch.Generator().manual_seed(11))
    noise = torch.randn(2, H, DA, generator=torch.Generator().manual_seed(12))
    plain = policy.predict_action_chunk({OBS_STATE: state}, noise=noise)
    free = guided_chunk(
        policy, {OBS_STATE: state}, truth[:, START:], 0, execution_horizon=H - START, noise=noise
    )
    torch.testing.assert_close(free, plain, atol=1e-5, rtol=0)
    guided = guided_chunk(policy, {OBS_STATE: state}, truth[:, START:], 3, noise=noise)
    assert guided.shape == (2, H, DA) and not torch.allclose(guided, plain)
