"""Where ``robolearn collect``'s episodes come from: the env's shipped expert or the user's
(``--expert``), run in this process or in worker processes, or the keyboard (``--teleop``)."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator

from robolearn.cli import UserError


def expert_policy(env, config, env_name: str, spec: str | None):
    """The user's policy for ``spec`` or the env's shipped expert; one-line UserErrors otherwise."""
    from robolearn.envs.expert_plugin import ExpertSpecError, build_policy
    from robolearn.envs.experts import NoExpertError, make_expert

    if spec:
        try:
            return build_policy(spec, env)
        except ExpertSpecError as exc:
            raise UserError(str(exc)) from None
    try:
        return make_expert(config)
    except NoExpertError as exc:
        raise UserError(
            f"{env_name}: {exc}; pass --expert package.module:callable with your own "
            "(see robolearn collect --help)"
        ) from None
    except ValueError as exc:
        raise UserError(f"{env_name}: {exc}") from None


# --------------------------------------------------------------------------- episode streams
_WORKER: dict = {}


def _worker_init(
    env_name: str, config, action_noise: float, spec: str | None, post_success: int, sim_state: bool = False
) -> None:
    """Build one worker's env and expert (in a process of :func:`robolearn.envs.workers.ordered_episodes`)."""
    from robolearn.envs import make_env

    env = with_sim_state(make_env(env_name, config), sim_state)
    _WORKER.update(
        env=env,
        expert=expert_policy(env, config, env_name, spec),
        action_noise=action_noise,
        post_success=post_success,
    )


def _worker_episode(seed: int):
    from robolearn.envs.recording import rollout

    expert = _WORKER["expert"]
    reset = getattr(expert, "reset", None)
    return rollout(_WORKER["env"], expert, seed, reset, _WORKER["action_noise"], _WORKER["post_success"])


def expert_stream(env, args: argparse.Namespace, config, first_seed: int) -> Iterator:
    from robolearn.envs.recording import rollout

    seeds = itertools.count(first_seed)
    if args.workers <= 1:
        expert = expert_policy(env, config, args.env, args.expert)
        for seed in seeds:
            reset = getattr(expert, "reset", None)
            yield rollout(env, expert, seed, reset, args.expert_noise, args.post_success_steps)
        return
    from robolearn.envs.workers import ordered_episodes

    init = (args.env, config, args.expert_noise, args.expert, args.post_success_steps, args.record_sim_state)
    yield from ordered_episodes(_worker_init, init, _worker_episode, first_seed, args.workers)


def teleop_stream(env, first_seed: int, fps: float) -> Iterator:
    from robolearn import types
    from robolearn.envs.recording import Episode, frame_from
    from robolearn.envs.teleop import KeyboardTeleop, print_help, stream_keys

    teleop = KeyboardTeleop()
    print_help()
    keys = stream_keys(sys.stdin, tick=1.0 / fps)
    for seed in itertools.count(first_seed):
        obs, _ = env.reset(seed=seed)
        teleop.reset()
        episode = Episode(seed=seed, task=str(obs[types.TASK]))
        print(f"episode seed {seed}: {episode.task}", file=sys.stderr)
        for ev in teleop.events(keys):
            if ev.command == "quit":
                return
            if ev.command in ("save", "discard"):
                if ev.command == "save" and episode.frames:
                    yield episode
                break
            nxt, reward, terminated, truncated, info = env.step(ev.action)
            done = terminated or truncated
            episode.frames.append(frame_from(obs, ev.action, reward, done, bool(info["is_success"])))
            episode.success = episode.success or bool(info["is_success"])
            obs = nxt
            if done:
                print(f"episode end: success={episode.success}", file=sys.stderr)
                yield episode
                break
        else:
            return  # keys ran out


def with_sim_state(env, record: bool):
    """``env``, wrapped to add ``observation.sim_state`` when ``record`` (UserError if it is no MuJoCo env)."""
    if not record:
        return env
    from robolearn.envs.sim_state import SimStateObservation

    try:
        return SimStateObservation(env)
    except ValueError as exc:
        env.close()
        raise UserError(f"--record-sim-state: {exc}") from None


def check_policy(env, config, args: argparse.Namespace) -> None:
    """Build the expert on a throwaway instance and check one action, before anything is written."""
    from robolearn.envs.expert_plugin import ExpertSpecError, check_action

    policy = expert_policy(env, config, args.env, args.expert)
    obs, _ = env.reset(seed=0)
    try:
        check_action(args.expert or "the shipped expert", policy, env, obs)
    except ExpertSpecError as exc:
        raise UserError(str(exc)) from None


__all__ = ["check_policy", "expert_policy", "expert_stream", "teleop_stream", "with_sim_state"]
