"""Topics over real middleware: typed ROS-shaped messages and four interchangeable backends.

- :mod:`~robolearn.deploy.topics.messages`: JointState, Image, PoseStamped, JointTrajectory,
  Float64MultiArray, TFMessage (+ String), the :class:`Envelope` (seq, publish and source stamps)
  and the msgpack codec;
- :mod:`~robolearn.deploy.topics.base`: the :class:`Backend` interface (publish, subscribe with a
  bounded queue dropping the oldest, request/reply) and :class:`Subscription`;
- backends: ``inproc``, ``zmq`` (pyzmq), ``zenoh`` (eclipse-zenoh), ``ros1`` (Debian's rospy against a
  running rosmaster). :func:`make_backend` builds one by name; each imports its library lazily.

torch-free and mujoco-free: the robot PC runs this.
"""

from __future__ import annotations

from typing import Any

from robolearn.deploy.topics.base import Backend, BridgeError, Subscription
from robolearn.deploy.topics.messages import (
    Envelope,
    Float64MultiArray,
    Header,
    Image,
    JointState,
    JointTrajectory,
    JointTrajectoryPoint,
    PoseStamped,
    StringMsg,
    TFMessage,
    TransformStamped,
)

__all__ = [
    "Backend",
    "BridgeError",
    "Envelope",
    "Float64MultiArray",
    "Header",
    "Image",
    "JointState",
    "JointTrajectory",
    "JointTrajectoryPoint",
    "PoseStamped",
    "StringMsg",
    "Subscription",
    "TFMessage",
    "TransformStamped",
    "make_backend",
]


def make_backend(
    kind: str,
    *,
    role: str = "client",
    host: str = "127.0.0.1",
    port: int = 7447,
    namespace: str = "/robolearn",
    node_name: str = "robolearn",
    bus: str = "default",
) -> Backend:
    """A backend by name: ``inproc`` (``bus``), ``zmq`` / ``zenoh`` (``role`` robot binds/listens on
    ``host:port``, client connects), ``ros1`` (a node named ``node_name`` on the rosmaster at
    ``host:port``)."""
    if kind == "inproc":
        from robolearn.deploy.topics.inproc import InprocBackend

        return InprocBackend(bus)
    if kind == "zmq":
        from robolearn.deploy.topics.zmq_backend import ZmqBackend

        return ZmqBackend(host, port, role)
    if kind == "zenoh":
        from robolearn.deploy.topics.zenoh_backend import ZenohBackend

        return ZenohBackend(host, port, role, namespace)
    if kind == "ros1":
        from robolearn.deploy.topics.ros1 import Ros1Backend

        return Ros1Backend(f"http://{host}:{port}", node_name=node_name, host=host, namespace=namespace)
    raise ValueError(f"unknown bridge backend {kind!r}; known: inproc, zmq, zenoh, ros1")


def backend_kwargs(settings: Any, role: str) -> dict[str, Any]:
    """:func:`make_backend` keywords from a cell's :class:`~robolearn.deploy.cell.BridgeSettings`."""
    return {"role": role, "host": settings.host, "port": settings.port, "namespace": settings.namespace}
