"""Deployment: the openpi-wire policy server, the robot-side client, action-chunk scheduling, RTC.

This package imports neither torch nor mujoco at import time; only ``server`` (and what it alone
imports) and ``sim_robot`` may. Import submodules directly (``from robolearn.deploy import wire``).
"""
