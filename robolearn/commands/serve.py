"""``robolearn serve``: serve a checkpoint to robots over openpi's websocket protocol.

Any openpi client works unchanged (``openpi_client.websocket_client_policy.WebsocketClientPolicy``),
as does ``robolearn run``. The wire, the metadata and the optional fields are described in
:mod:`robolearn.deploy.protocol`; the site config (``--site``, default ``deploy/franka_sim.yaml``)
maps openpi's keys to the policy's features. It binds 127.0.0.1 unless told otherwise; give
``--api-key`` before exposing it on a network. Ctrl-C or SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from robolearn.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", required=True, type=Path, help="checkpoint folder (a RUN or RUN/checkpoints/STEP)"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: a free one; default 8000)")
    p.add_argument(
        "--site", type=Path, help="site config: wire key map, fps, batching (default deploy/franka_sim.yaml)"
    )
    p.add_argument("--api-key", help="require the header 'Authorization: Api-Key KEY' from clients")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="torch device for the policy (default cpu)")
    p.add_argument("--quiet", action="store_true", help="do not log connections")
    p.add_argument("--critic", type=Path, metavar="C",
                   help="steer the policy with this critic (V-GPS; RTC requests then are not offered)")  # fmt: skip
    p.add_argument(
        "--samples", type=int, metavar="K", help="chunks sampled per request with --critic (default 10)"
    )


def _fps(checkpoint: Path, site_fps: float | None) -> float | None:
    """The site's fps, else the control rate of the env the checkpoint was trained on (None if unknown)."""
    if site_fps is not None:
        return site_fps
    from robolearn.envs import ENVS, env_config
    from robolearn.policies import CheckpointError, checkpoint_env

    try:
        env = checkpoint_env(checkpoint)
    except CheckpointError:
        return None
    if env is None or env not in ENVS:
        return None
    hz = getattr(env_config(env), "control_hz", None)
    return float(hz) if hz else None


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def run(args: argparse.Namespace) -> int:
    import torch

    from robolearn.config import ConfigError
    from robolearn.deploy.keymap import KeyMap, load_site
    from robolearn.deploy.server import PolicyServer
    from robolearn.policies import CheckpointError, load_policy

    if args.threads < 1:
        raise UserError(f"--threads must be >= 1, found {args.threads}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in [0, 65535], found {args.port}")
    torch.set_num_threads(args.threads)
    try:
        site = load_site(args.site)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    try:
        policy = load_policy(args.checkpoint, device=args.device)
    except (CheckpointError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
    except RuntimeError as exc:  # e.g. a device torch does not have
        raise UserError(f"--device {args.device}: {exc}") from None
    if args.critic is not None:
        from robolearn.commands.steer import steered

        policy = steered(policy, args.critic, 10 if args.samples is None else args.samples)
    elif args.samples is not None:
        raise UserError("--samples steers with a critic: pass --critic C")
    server = PolicyServer(
        policy,
        KeyMap(site.keys),
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        batch_window_ms=site.batch_window_ms,
        max_batch=site.max_batch,
        fps=_fps(args.checkpoint, site.fps),
        site=site.name,
    )
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        warm = server.warm_up()
    except RuntimeError as exc:
        raise UserError(f"--checkpoint {args.checkpoint}: {exc}") from None
    try:
        server.start()
    except OSError as exc:
        raise UserError(
            f"--host {args.host} --port {args.port}: cannot listen: {exc.strerror or exc}"
        ) from None
    # SIGTERM (a supervisor, `kill PID`) stops as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    spec = server.spec
    keys = ", ".join(f.key for f in spec.features)
    print(
        f"robolearn serve: {spec.policy_type} policy from {args.checkpoint}: H={spec.action_horizon} "
        f"Da={spec.action_dim} To={spec.n_obs_steps} rtc={'yes' if spec.supports_rtc else 'no'}; keys: {keys}; "
        f"warm-up {', '.join(f'{k} {v:.0f} ms' for k, v in warm.items())}"
    )
    health = server.url.replace("ws://", "http://") + "/healthz"
    print(f"robolearn serve: listening on {server.url} (health: {health}); Ctrl-C stops", flush=True)
    try:
        while not server.wait(timeout=0.5):
            pass
    finally:
        server.stop()
    return 0
