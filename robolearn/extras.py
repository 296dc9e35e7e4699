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
    "pylibfranka": "franka",
    "franky": "franka",
}
"""Top-level module -> the extra in pyproject.toml that installs it."""

INSTALL_NOTES: dict[str, str] = {
    "robosuite": "./bootstrap dev installs it; by hand: pip install 'robolearn[robosuite]' "
    "then pip install --no-deps robosuite==1.5.2 mink==0.0.5",
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
