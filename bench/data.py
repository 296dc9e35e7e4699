"""``robolearn bench data``: windowed-sample throughput and memory of the dataset loader vs its peers.

On one franka-lift dataset (two 96x96 AV1 cameras, 20 fps, cached under ``/tmp/robolearn-bench-data``)
with a 2-frame observation history and a 16-step action chunk, it measures samples/s of:

* robolearn's :class:`~robolearn.data.sampler.WindowedDataset` in one process and under a
  ``DataLoader`` with 2 workers;
* lerobot's ``LeRobotDataset`` (same files, same windows, torchcodec decoding), when importable in
  this Python or in the one named by ``$ROBOLEARN_LEROBOT_PYTHON`` (default ``/tmp/lerobot-venv``).
  Such a venv: ``torch==2.13.0``, ``lerobot==0.4.4 --no-deps``, ``torchcodec==0.13.0``, ``datasets<5``,
  ``huggingface-hub<0.36``, pandas, pyarrow, ``av<16``, pillow, einops, jsonlines, ``draccus==0.10.0``,
  deepdiff, termcolor, accelerate; torchcodec needs a system FFmpeg (Debian: ``libavcodec59
  libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8``). lerobot imports
  torchvision at module level without using it on the torchcodec path, and torchvision does not
  import beside this torch, so the stage puts an empty stand-in module in its place. A few samples
  from both loaders are compared (numeric windows, pad masks, pixels) to show they agree;
* the raw floor: plain PyAV seek + decode of exactly the frames one sample needs, nothing else.

Then a memory test: a state-only dataset of 1M frames (written once with the writer, cached),
random windows for a while, peak RSS against the dataset's size on disk. Every measurement runs in
its own fresh process (``python bench/data.py --stage NAME``) so that each RSS high-water mark
(``resource.getrusage``) is its own. Torch runs one thread per process.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH_ROOT = Path("/tmp/robolearn-bench-data")
CAMERAS = ("front", "wrist")
OBS_HORIZON, ACTION_HORIZON = 2, 16
CHECK_INDICES = (0, 1, 17, 333, 901)
_LEROBOT_VENV = Path("/tmp/lerobot-venv/bin/python")


def _rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux reports KiB


def _proc_status_mb(field: str) -> float | None:
    """A memory field of ``/proc/self/status`` (``RssAnon``, ``RssFile``, ``VmHWM``) in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


# --------------------------------------------------------------------------- datasets (cached)
def ensure_image_dataset(episodes: int = 50) -> Path:
    """franka-lift with two 96x96 cameras; collected once by ``robolearn collect``, then reused."""
    root = BENCH_ROOT / f"franka-lift-2cam96-{episodes}ep"
    if (root / "meta" / "info.json").exists():
        return root
    tmp = root.with_name(root.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"collecting {episodes} franka-lift episodes with cameras {','.join(CAMERAS)} into {root} ...",
        flush=True,
    )
    code = "import sys; from robolearn.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "collect", "--env", "franka-lift", "--episodes", str(episodes),
           "--out", str(tmp), "--cameras", ",".join(CAMERAS), "--workers", "2"]  # fmt: skip
    subprocess.run(cmd, check=True, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})
    shutil.rmtree(tmp / ".robolearn_tmp", ignore_errors=True)
    os.replace(tmp, root)
    return root


def make_state_dataset(root: str, frames: int, episode_len: int) -> dict:
    """Stage: a state-only dataset (22-D state, 7-D env state, 7-D action) of ``frames`` frames."""
    import numpy as np

    from robolearn.data.writer import LeRobotWriter
    from robolearn.types import FeatureSpec

    feats = {"observation.state": FeatureSpec("float32", (22,)),
             "observation.environment_state": FeatureSpec("float32", (7,)),
             "action": FeatureSpec("float32", (7,))}  # fmt: skip
    final = Path(root)
    tmp = final.with_name(final.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    with LeRobotWriter(tmp, fps=20, features=feats, use_videos=False, commit_every=50) as w:
        done = 0
        while done < frames:
            n = min(episode_len, frames - done)
            walk = np.cumsum(rng.normal(scale=0.01, size=(n, 36)), axis=0).astype(np.float32)
            for f in range(n):
                w.add_frame({"observation.state": walk[f, :22], "observation.environment_state": walk[f, 22:29],
                             "action": walk[f, 29:]}, task="lift the cube")  # fmt: skip
            w.save_episode()
            done += n
    shutil.rmtree(tmp / ".robolearn_tmp", ignore_errors=True)
    os.replace(tmp, final)
    return {"seconds": time.perf_counter() - start}


def ensure_state_dataset(frames: int = 1_000_000, episode_len: int = 2000) -> Path:
    root = BENCH_ROOT / f"state-only-{frames}"
    if not (root / "meta" / "info.json").exists():
        BENCH_ROOT.mkdir(parents=True, exist_ok=True)
        print(
            f"writing a state-only dataset of {frames} frames into {root} (once; about a minute) ...",
            flush=True,
        )
        _stage(sys.executable, "make_state", root=str(root), frames=frames, episode_len=episode_len)
    return root


# --------------------------------------------------------------------------- stages (own process each)
def _time_samples(get, n_items: int, seconds: float, seed: int = 0) -> tuple[int, float]:
    import numpy as np

    rng = np.random.default_rng(seed)
    for i in rng.integers(0, n_items, 3):  # warm-up: open files and decoders
        get(int(i))
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in rng.integers(0, n_items, 16):
            get(int(i))
        count += 16
    return count, time.perf_counter() - start


def _time_loader(ds, seconds: float, workers: int, batch_size: int) -> tuple[int, float]:
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    sampler = RandomSampler(
        ds, replacement=True, num_samples=10**8, generator=torch.Generator().manual_seed(0)
    )
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers)
    it = iter(loader)
    next(it)  # workers started and warm
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += len(next(it)["index"])
    elapsed = time.perf_counter() - start
    del it  # shut the workers down so their peak RSS lands in RUSAGE_CHILDREN
    return count, elapsed


def _dump_check(ds, path: str | None) -> None:
    """Save the samples CHECK_INDICES (numeric windows, masks, images) for the cross-check."""
    if not path:
        return
    import numpy as np

    out = {}
    for i in CHECK_INDICES:
        if i < len(ds):
            for key, value in ds[i].items():
                if hasattr(value, "numpy"):
                    out[f"{i}/{key}"] = value.numpy()
    np.savez(path, **out)


def stage_ours(root: str, seconds: float, workers: int, batch_size: int, check: str | None = None) -> dict:
    import torch

    from robolearn.data.sampler import WindowedDataset

    torch.set_num_threads(1)
    ds = WindowedDataset(root, obs_horizon=OBS_HORIZON, action_horizon=ACTION_HORIZON)
    _dump_check(ds, check)
    if workers:
        n, dt = _time_loader(ds, seconds, workers, batch_size)
    else:
        n, dt = _time_samples(ds.__getitem__, len(ds), seconds)
    return {"samples_per_s": n / dt, "samples": n, "peak_rss_mb": _rss_mb(),
            "worker_peak_rss_mb": _rss_mb(resource.RUSAGE_CHILDREN) if workers else None}  # fmt: skip


def _stub_torchvision() -> None:
    """lerobot 0.4.4 imports torchvision at module level but its torchcodec path never calls it;
    torchvision does not import beside this torch, so an empty stand-in that fails on use is enough."""
    import importlib.machinery
    import types

    def unavailable(*_a, **_k):
        raise RuntimeError("torchvision is not installed (benchmark stand-in)")

    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.v2 = types.ModuleType("torchvision.transforms.v2")
    tv.set_video_backend = unavailable
    for mod in (tv, tv.transforms, tv.transforms.v2):
        mod.__spec__ = importlib.machinery.ModuleSpec(mod.__name__, None)
        sys.modules[mod.__name__] = mod


def stage_lerobot(root: str, seconds: float, workers: int, batch_size: int, check: str | None = None) -> dict:
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import torch

        torch.set_num_threads(1)
        try:
            import torchvision  # noqa: F401
        except Exception:  # noqa: BLE001 - absent, or present but broken beside this torch
            for name in [m for m in sys.modules if m.startswith("torchvision")]:
                del sys.modules[name]
            _stub_torchvision()
        import lerobot
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except Exception as exc:  # noqa: BLE001 - report why the peer is missing
        return {"error": f"lerobot is not importable in {sys.executable}: {type(exc).__name__}: {exc}"}
    info = json.loads((Path(root) / "meta" / "info.json").read_text())
    fps = info["fps"]
    obs = [k for k in info["features"] if k.startswith("observation.")]
    first = 1 - OBS_HORIZON
    dts = {k: [d / fps for d in range(first, 1)] for k in obs}
    dts["action"] = [d / fps for d in range(first, first + ACTION_HORIZON)]
    ds = LeRobotDataset("local/bench", root=root, delta_timestamps=dts, video_backend="torchcodec")
    _dump_check(ds, check)
    if workers:
        n, dt = _time_loader(ds, seconds, workers, batch_size)
    else:
        n, dt = _time_samples(ds.__getitem__, len(ds), seconds)
    return {"samples_per_s": n / dt, "samples": n, "peak_rss_mb": _rss_mb(), "version": lerobot.__version__,
            "worker_peak_rss_mb": _rss_mb(resource.RUSAGE_CHILDREN) if workers else None}  # fmt: skip


def stage_raw(root: str, seconds: float) -> dict:
    """PyAV only: per sample, per camera, seek once and decode the window's frames to RGB."""
    import av
    import numpy as np

    from robolearn.data.reader import LeRobotReader

    reader = LeRobotReader(root)
    keys = reader.video_keys
    lengths = reader.episode_lengths
    t0 = {k: np.array([reader.episode_meta(e)[f"videos/{k}/from_timestamp"] for e in range(reader.num_episodes)])
          for k in keys}  # fmt: skip
    opened = {}
    for k in keys:
        c = av.open(str(reader.video_path(0, k)))
        c.streams.video[0].codec_context.thread_count = 1  # frame threading only delays output after a seek
        opened[k] = (c, c.streams.video[0])
    fps, tol = reader.fps, 0.5 / reader.fps

    def sample(i: int) -> None:
        ep = int(np.searchsorted(reader.episode_to, i, side="right"))
        t = i - int(reader.episode_from[ep])
        frames = np.clip(np.arange(t + 1 - OBS_HORIZON, t + 1), 0, lengths[ep] - 1)
        for k in keys:
            c, s = opened[k]
            lo, hi = t0[k][ep] + frames[0] / fps, t0[k][ep] + frames[-1] / fps
            c.seek(max(0, int((lo - tol) / s.time_base)), stream=s, backward=True)
            for frame in c.decode(s):
                ts = float(frame.pts * frame.time_base)
                if ts >= lo - tol:
                    frame.to_ndarray(format="rgb24")
                if ts >= hi - tol:
                    break

    n, dt = _time_samples(sample, reader.num_frames, seconds)
    return {"samples_per_s": n / dt, "samples": n, "peak_rss_mb": _rss_mb()}


def stage_memory(root: str, seconds: float, cache_mb: float = 256.0) -> dict:
    import numpy as np
    import torch

    from robolearn.data.sampler import WindowedDataset

    torch.set_num_threads(1)
    baseline = _rss_mb()
    ds = WindowedDataset(root, obs_horizon=OBS_HORIZON, action_horizon=ACTION_HORIZON, cache_mb=cache_mb)
    opened = _rss_mb()
    n, dt = _time_samples(ds.__getitem__, len(ds), seconds)
    item = ds[int(np.random.default_rng(1).integers(len(ds)))]
    assert item["action"].shape == (ACTION_HORIZON, 7)
    return {"frames": len(ds), "episodes": ds.num_episodes, "samples": n, "samples_per_s": n / dt,
            "baseline_rss_mb": baseline, "after_open_rss_mb": opened, "peak_rss_mb": _rss_mb(),
            "end_rss_anon_mb": _proc_status_mb("RssAnon"), "end_rss_file_mb": _proc_status_mb("RssFile"),
            "on_disk_mb": _dir_mb(Path(root)), "cache_mb": cache_mb}  # fmt: skip


STAGES = {"ours": stage_ours, "lerobot": stage_lerobot, "raw": stage_raw, "memory": stage_memory,
          "make_state": make_state_dataset}  # fmt: skip


def _stage(python: str, name: str, **kwargs) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--stage", name, json.dumps(kwargs)],
                          capture_output=True, text=True, env=env)  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"stage {name} failed (exit {proc.returncode}): {' | '.join(tail)}"}
    return json.loads(lines[-1])


def _lerobot_python() -> str | None:
    import importlib.util

    if importlib.util.find_spec("lerobot") is not None:
        return sys.executable
    named = os.environ.get("ROBOLEARN_LEROBOT_PYTHON")
    if named:
        return named
    return str(_LEROBOT_VENV) if _LEROBOT_VENV.exists() else None


# --------------------------------------------------------------------------- the run
def _compare(ours_npz: Path, theirs_npz: Path) -> dict:
    """Largest differences between our samples and lerobot's on CHECK_INDICES."""
    import numpy as np

    a, b = np.load(ours_npz), np.load(theirs_npz)
    numeric, image, masks_equal, compared = 0.0, 0.0, True, 0
    for name in a.files:
        if name not in b.files:
            continue
        x, y = a[name], b[name]
        if x.shape != y.shape:
            return {"error": f"{name}: shape {x.shape} (robolearn) vs {y.shape} (lerobot)"}
        compared += 1
        if name.endswith("_is_pad"):
            masks_equal &= bool(np.array_equal(x, y))
        elif "images" in name:
            image = max(image, float(np.abs(x.astype(np.float64) - y).max()) * 255)
        else:
            numeric = max(numeric, float(np.abs(x.astype(np.float64) - y).max()))
    return {"arrays_compared": compared, "numeric_max_abs_diff": numeric, "image_max_abs_diff_levels": image,
            "pad_masks_equal": masks_equal}  # fmt: skip


def run(json_out: str | None = None, episodes: int = 50, seconds: float = 8.0, workers: int = 2,
        batch_size: int = 32, memory_frames: int = 1_000_000, memory_seconds: float = 15.0) -> dict:  # fmt: skip
    """Build or reuse the datasets, measure every loader in its own process, print figures and ratios."""
    root = ensure_image_dataset(episodes)
    py = sys.executable
    check_dir = BENCH_ROOT / "check"
    check_dir.mkdir(parents=True, exist_ok=True)
    common = {"root": str(root), "seconds": seconds, "batch_size": batch_size}
    report: dict = {"dataset": str(root), "dataset_mb": _dir_mb(root), "torch_threads": 1,
                    "load_average": list(os.getloadavg()), "window": {"obs": OBS_HORIZON, "action": ACTION_HORIZON}}  # fmt: skip
    report["ours_1proc"] = _stage(py, "ours", workers=0, check=str(check_dir / "ours.npz"), **common)
    report[f"ours_{workers}workers"] = _stage(py, "ours", workers=workers, **common)
    report["raw_pyav_floor"] = _stage(py, "raw", root=str(root), seconds=seconds)
    lr_py = _lerobot_python()
    if lr_py is None:
        report["lerobot_1proc"] = {
            "error": "lerobot is not installed here and $ROBOLEARN_LEROBOT_PYTHON names no venv with it "
            "(the peer needs lerobot==0.4.4 in a side venv: see bench/data.py's docstring)"
        }
    else:
        report["lerobot_1proc"] = _stage(
            lr_py, "lerobot", workers=0, check=str(check_dir / "lerobot.npz"), **common
        )
        if "error" not in report["lerobot_1proc"]:
            report[f"lerobot_{workers}workers"] = _stage(lr_py, "lerobot", workers=workers, **common)
            report["agreement"] = _compare(check_dir / "ours.npz", check_dir / "lerobot.npz")
    state_root = ensure_state_dataset(memory_frames)
    report["memory_1M"] = _stage(py, "memory", root=str(state_root), seconds=memory_seconds)
    report["memory_1M_small_cache"] = _stage(
        py, "memory", root=str(state_root), seconds=memory_seconds, cache_mb=32
    )
    _ratios(report, workers)
    _print(report, workers)
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2))
    return report


def _rate(report: dict, key: str) -> float | None:
    entry = report.get(key) or {}
    return entry.get("samples_per_s")


def _ratios(report: dict, workers: int) -> None:
    r: dict = {}
    pairs = {"ours_vs_lerobot_1proc": ("ours_1proc", "lerobot_1proc"),
             f"ours_vs_lerobot_{workers}workers": (f"ours_{workers}workers", f"lerobot_{workers}workers"),
             "ours_1proc_vs_raw_floor": ("ours_1proc", "raw_pyav_floor")}  # fmt: skip
    for name, (a, b) in pairs.items():
        x, y = _rate(report, a), _rate(report, b)
        if x and y:
            r[name] = x / y
    for key in ("memory_1M", "memory_1M_small_cache"):
        mem = report.get(key) or {}
        if "peak_rss_mb" in mem:
            mem["peak_rss_vs_disk"] = mem["peak_rss_mb"] / mem["on_disk_mb"]
            mem["rss_growth_vs_disk"] = (mem["peak_rss_mb"] - mem["baseline_rss_mb"]) / mem["on_disk_mb"]
    report["ratios"] = r


def _print(report: dict, workers: int) -> None:
    w = report["window"]
    print(f"robolearn bench data  (torch threads: 1; obs history {w['obs']} frames, action chunk {w['action']};"
          f" load average {report['load_average'][0]:.1f})")  # fmt: skip
    print(f"  dataset {report['dataset']} ({report['dataset_mb']:.1f} MB, 2 cameras 96x96 AV1)")
    rows = [("robolearn WindowedDataset, 1 process", "ours_1proc"),
            (f"robolearn WindowedDataset, {workers} workers", f"ours_{workers}workers"),
            ("lerobot LeRobotDataset, 1 process", "lerobot_1proc"),
            (f"lerobot LeRobotDataset, {workers} workers", f"lerobot_{workers}workers"),
            ("raw floor: PyAV seek+decode only", "raw_pyav_floor")]  # fmt: skip
    for label, key in rows:
        e = report.get(key)
        if e is None:
            continue
        if "error" in e:
            print(f"  {label:<44} n/a: {e['error']}")
            continue
        extra = f", workers peak {e['worker_peak_rss_mb']:.0f} MB" if e.get("worker_peak_rss_mb") else ""
        print(
            f"  {label:<44} {e['samples_per_s']:8.1f} samples/s   peak RSS {e['peak_rss_mb']:6.0f} MB{extra}"
        )
    r = report["ratios"]
    for name in (k for k in r if not k.startswith("memory")):
        print(f"  {name:<44} {r[name]:8.2f}x")
    if "agreement" in report:
        a = report["agreement"]
        print(f"  agreement with lerobot on {len(CHECK_INDICES)} samples: {a}")
    for key in ("memory_1M", "memory_1M_small_cache"):
        _print_memory(report[key])


def _print_memory(m: dict) -> None:
    if "error" in m:
        print(f"  memory test: {m['error']}")
        return
    print(
        f"  state-only memory test, row-group cache {m['cache_mb']:.0f} MB: {m['frames']} frames in "
        f"{m['episodes']} episodes, {m['on_disk_mb']:.0f} MB on disk, {m['samples_per_s']:.0f} random windows/s"
    )
    print(
        f"    peak RSS {m['peak_rss_mb']:.0f} MB (interpreter+torch baseline {m['baseline_rss_mb']:.0f} MB) -> "
        f"{m['peak_rss_vs_disk']:.2f}x the on-disk size; growth over baseline {m['rss_growth_vs_disk']:.2f}x (goal < 2x)"
    )
    if m.get("end_rss_anon_mb") is not None:
        print(
            f"    at the end: {m['end_rss_anon_mb']:.0f} MB anonymous (heap + decoded row groups) + "
            f"{m['end_rss_file_mb']:.0f} MB file-backed (memory-mapped parquet and libraries, reclaimable)"
        )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--stage":
        print(json.dumps(STAGES[sys.argv[2]](**json.loads(sys.argv[3]))))
    else:
        run(json_out=sys.argv[1] if len(sys.argv) > 1 else None)
