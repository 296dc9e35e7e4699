"""The robot-PC driver of a real Franka arm (``robolearn franka-driver``): numpy, pylibfranka, ruckig.

- :mod:`~robolearn.deploy.franka.arm`: the 1 kHz contract the driver needs from an arm, and its faults;
- :mod:`~robolearn.deploy.franka.libfranka`: that contract over pylibfranka (a real arm, franky-sim);
- :mod:`~robolearn.deploy.franka.interpolator`: ruckig's jerk-limited stream, kept inside the joint range;
- :mod:`~robolearn.deploy.franka.pipeline`: safety filter -> interpolator -> last check, per packet;
- :mod:`~robolearn.deploy.franka.driver`: the control thread, faults, e-stop, recovery on request;
- :mod:`~robolearn.deploy.franka.service`: the sim twin's topics and services over any bridge.

Nothing here imports torch or mujoco; pylibfranka is imported only when an arm is connected.
"""
