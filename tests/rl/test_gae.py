"""GAE against a hand-computed case, and the running reward scaler against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from robolearn.rl.gae import RunningRewardScaler, compute_gae


def test_gae_matches_hand_computation():
    # env 0 succeeds (terminates) at t = 2; env 1 hits its step cap at t = 1 and bootstraps V = 2.
    rewards = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    values = np.array([[0.5, 1.0], [0.6, 1.0], [0.7, 1.0]])
    next_values = np.array([[0.6, 1.0], [0.7, 2.0], [123.0, 1.0]])  # 123: after a termination, unused
    terminated = np.array([[0, 0], [0, 0], [1, 0]], bool)
    done = np.array([[0, 0], [0, 1], [1, 0]], bool)
    adv, ret = compute_gae(rewards, values, next_values, terminated, done, gamma=0.9, lam=0.8)
    # env 0: d2 = 1 - 0.7; d1 = 0.9*0.7 - 0.6; d0 = 0.9*0.6 - 0.5; A_t = d_t + 0.72 A_{t+1}
    a2 = 0.3
    a1 = 0.03 + 0.72 * a2
    a0 = 0.04 + 0.72 * a1
    # env 1: d2 = 0.9 - 1; d1 = 0.9*2 - 1 (the recursion stops at the cap); d0 = 0.9 - 1 + 0.72 d1
    b2, b1 = -0.1, 0.8
    b0 = -0.1 + 0.72 * b1
    np.testing.assert_allclose(adv, [[a0, b0], [a1, b1], [a2, b2]], atol=1e-6)
    np.testing.assert_allclose(ret, adv + values, atol=1e-6)


def test_gae_lambda_one_is_the_discounted_return_minus_value():
    rewards = np.array([[1.0], [2.0], [3.0]])
    values = np.zeros((3, 1))
    none = np.zeros((3, 1), bool)
    adv, _ = compute_gae(rewards, values, np.zeros((3, 1)), none, none, gamma=0.5, lam=1.0)
    np.testing.assert_allclose(adv[:, 0], [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3])


def test_reward_scaler_divides_by_the_std_of_discounted_returns():
    rng = np.random.default_rng(0)
    scaler = RunningRewardScaler(num_envs=2, gamma=0.9)
    rets, ret = [], np.zeros(2)
    for t in range(200):
        r = rng.normal(size=2)
        done = np.array([t % 7 == 6, t % 11 == 10])
        ret = ret * 0.9 + r
        rets.extend(ret)
        out = scaler(r, done)
        ret[done] = 0.0
    np.testing.assert_allclose(scaler.var, np.var(rets), rtol=1e-9)
    np.testing.assert_allclose(out, r / np.sqrt(np.var(rets) + 1e-8), rtol=1e-5)
    other = RunningRewardScaler(2, 0.9)
    other.load_state_dict(scaler.state_dict())
    assert other.var == pytest.approx(scaler.var) and np.array_equal(other.ret, scaler.ret)
