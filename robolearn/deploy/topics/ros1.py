"""The ROS 1 backend: Debian's rospy against a running ``rosmaster`` (``rosmaster --core -p PORT``).

Messages go on the wire as the standard types, so any ROS 1 node sees them: ``sensor_msgs/JointState``,
``sensor_msgs/Image``, ``geometry_msgs/PoseStamped``, ``trajectory_msgs/JointTrajectory``,
``std_msgs/Float64MultiArray``, ``tf2_msgs/TFMessage``, ``std_msgs/String``. The source time rides in
``header.stamp``; the sequence number is ``header.seq``, which rospy numbers itself per publisher
(messages without a header are numbered on receipt); ROS 1 has no publish stamp, so it equals the
source stamp.
Subscribers ask for ``tcp_nodelay`` (Nagle's algorithm cost ~7 ms per JointState here).

Request/reply is a pair of ``std_msgs/String`` topics, ``<namespace>/srv/<service>/{request,reply}``,
carrying JSON with a request id (custom ``.srv`` types would need code generation): the requester
resends until a reply with its id comes, and the server answers a repeated id from its cache.

rospy allows one node per process: every :class:`Ros1Backend` in a process shares it (the first
one's master and name). The venv reaches Debian's rospy through a ``.pth`` file holding
``/usr/lib/python3/dist-packages`` (``./bootstrap dev`` writes it).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import uuid
from typing import Any

import numpy as np

from robolearn.deploy.topics import messages as m
from robolearn.deploy.topics.base import Backend, BridgeError, Handler, Subscription
from robolearn.deploy.topics.messages import Envelope

__all__ = ["Ros1Backend", "from_ros", "to_ros"]

_NODE_LOCK = threading.Lock()
_NODE: dict[str, Any] = {}


def _ros_types() -> dict[type, Any]:
    import geometry_msgs.msg as gm
    import sensor_msgs.msg as sm
    import std_msgs.msg as stdm
    import tf2_msgs.msg as tfm
    import trajectory_msgs.msg as tm

    return {
        m.JointState: sm.JointState,
        m.Image: sm.Image,
        m.PoseStamped: gm.PoseStamped,
        m.JointTrajectory: tm.JointTrajectory,
        m.Float64MultiArray: stdm.Float64MultiArray,
        m.TFMessage: tfm.TFMessage,
        m.StringMsg: stdm.String,
    }


def _header(h: m.Header, seq: int) -> Any:
    import rospy
    import std_msgs.msg as stdm

    return stdm.Header(seq=seq, stamp=rospy.Time.from_sec(h.stamp), frame_id=h.frame_id)


def _vec3(cls: Any, v: np.ndarray) -> Any:
    return cls(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def _quat(cls: Any, q: np.ndarray) -> Any:
    return cls(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))


def to_ros(msg: Any, seq: int) -> Any:
    """A robolearn message as its standard ROS 1 message (header seq ``seq``)."""
    import geometry_msgs.msg as gm
    import std_msgs.msg as stdm

    ros = _ros_types()[type(msg)]
    if isinstance(msg, m.JointState):
        return ros(
            header=_header(msg.header, seq),
            name=list(msg.name),
            position=msg.position.tolist(),
            velocity=msg.velocity.tolist(),
            effort=msg.effort.tolist(),
        )
    if isinstance(msg, m.Image):
        return ros(
            header=_header(msg.header, seq),
            height=msg.height,
            width=msg.width,
            encoding=msg.encoding,
            is_bigendian=msg.is_bigendian,
            step=msg.step,
            data=bytes(msg.data),
        )
    if isinstance(msg, m.PoseStamped):
        pose = gm.Pose(
            position=_vec3(gm.Point, msg.position), orientation=_quat(gm.Quaternion, msg.orientation)
        )
        return ros(header=_header(msg.header, seq), pose=pose)
    if isinstance(msg, m.JointTrajectory):
        import rospy
        import trajectory_msgs.msg as tm

        points = [
            tm.JointTrajectoryPoint(
                positions=p.positions.tolist(),
                velocities=p.velocities.tolist(),
                accelerations=p.accelerations.tolist(),
                effort=p.effort.tolist(),
                time_from_start=rospy.Duration.from_sec(p.time_from_start),
            )
            for p in msg.points
        ]
        return ros(header=_header(msg.header, seq), joint_names=list(msg.joint_names), points=points)
    if isinstance(msg, m.Float64MultiArray):
        dim = stdm.MultiArrayDimension(label=msg.label, size=len(msg.data), stride=len(msg.data))
        return ros(layout=stdm.MultiArrayLayout(dim=[dim], data_offset=0), data=msg.data.tolist())
    if isinstance(msg, m.TFMessage):
        tfs = [
            gm.TransformStamped(
                header=_header(t.header, seq),
                child_frame_id=t.child_frame_id,
                transform=gm.Transform(
                    translation=_vec3(gm.Vector3, t.translation), rotation=_quat(gm.Quaternion, t.rotation)
                ),
            )
            for t in msg.transforms
        ]
        return ros(transforms=tfs)
    return ros(data=msg.data)


def _from_header(h: Any) -> m.Header:
    return m.Header(stamp=h.stamp.to_sec(), frame_id=h.frame_id)


def from_ros(ros: Any, msg_type: type) -> Any:
    """A standard ROS 1 message as the robolearn ``msg_type``."""
    if msg_type is m.JointState:
        return m.JointState(
            _from_header(ros.header),
            list(ros.name),
            np.asarray(ros.position, float),
            np.asarray(ros.velocity, float),
            np.asarray(ros.effort, float),
        )
    if msg_type is m.Image:
        data = ros.data if isinstance(ros.data, bytes) else bytes(ros.data)
        return m.Image(
            _from_header(ros.header), ros.height, ros.width, ros.encoding, ros.is_bigendian, ros.step, data
        )
    if msg_type is m.PoseStamped:
        p, q = ros.pose.position, ros.pose.orientation
        return m.PoseStamped(
            _from_header(ros.header), np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])
        )
    if msg_type is m.JointTrajectory:
        points = [
            m.JointTrajectoryPoint(
                np.asarray(p.positions, float),
                np.asarray(p.velocities, float),
                np.asarray(p.accelerations, float),
                np.asarray(p.effort, float),
                p.time_from_start.to_sec(),
            )
            for p in ros.points
        ]
        return m.JointTrajectory(_from_header(ros.header), list(ros.joint_names), points)
    if msg_type is m.Float64MultiArray:
        label = ros.layout.dim[0].label if ros.layout.dim else ""
        return m.Float64MultiArray(np.asarray(ros.data, float), label)
    if msg_type is m.TFMessage:
        out = []
        for t in ros.transforms:
            tr, rot = t.transform.translation, t.transform.rotation
            out.append(
                m.TransformStamped(
                    _from_header(t.header),
                    t.child_frame_id,
                    np.array([tr.x, tr.y, tr.z]),
                    np.array([rot.x, rot.y, rot.z, rot.w]),
                )
            )
        return m.TFMessage(out)
    return m.StringMsg(ros.data)


def _init_node(master_uri: str, host: str, node_name: str, timeout: float = 5.0) -> None:
    with _NODE_LOCK:
        if _NODE:
            if _NODE["master"] != master_uri:  # rospy would wait for the old master forever
                raise BridgeError(
                    f"ros1: this process's ROS node is registered with {_NODE['master']}, not {master_uri}; "
                    "rospy allows one master per process"
                )
            return
        os.environ["ROS_MASTER_URI"] = master_uri
        os.environ["ROS_IP"] = host
        import rosgraph
        import rospy

        deadline = time.monotonic() + timeout
        while not rosgraph.is_master_online(master_uri):
            if time.monotonic() > deadline:
                raise BridgeError(f"ros1: no rosmaster at {master_uri} (start one: rosmaster --core -p PORT)")
            time.sleep(0.1)
        rospy.init_node(node_name, anonymous=True, disable_signals=True, disable_rosout=True)
        _NODE.update(master=master_uri, name=rospy.get_name())


class Ros1Backend(Backend):
    """ROS 1 topics through rospy; see the module docstring."""

    name = "ros1"

    def __init__(
        self,
        master_uri: str = "http://127.0.0.1:11311",
        *,
        node_name: str = "robolearn",
        host: str = "127.0.0.1",
        namespace: str = "/robolearn",
    ):
        super().__init__()
        _init_node(master_uri, host, node_name)
        import rospy

        self._rospy, self.namespace = rospy, namespace.rstrip("/")
        self._types = _ros_types()
        self._pubs: dict[str, Any] = {}
        self._subs: list[Any] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._me = uuid.uuid4().hex[:8]
        self._pending: dict[str, Any] = {}
        self._reply_subs: dict[str, Any] = {}

    def _publisher(self, topic: str, ros_type: Any) -> Any:
        with self._lock:
            pub = self._pubs.get(topic)
            if pub is None:
                pub = self._pubs[topic] = self._rospy.Publisher(
                    topic, ros_type, queue_size=10, tcp_nodelay=True
                )
            return pub

    def _send(self, topic: str, env: Envelope) -> None:
        self._publisher(topic, self._types[type(env.msg)]).publish(to_ros(env.msg, env.seq))

    def _subscribe(self, topic: str, msg_type: type, sub: Subscription) -> None:
        counter = itertools.count(1)

        def on_msg(ros: Any) -> None:
            received = time.time()
            msg = from_ros(ros, msg_type)
            header = getattr(ros, "header", None)
            seq = int(header.seq) if header is not None and header.seq else next(counter)
            stamp = msg.header.stamp if hasattr(msg, "header") else received
            sub.deliver(Envelope(msg, seq, stamp, stamp, received))

        self._subs.append(
            self._rospy.Subscriber(topic, self._types[msg_type], on_msg, queue_size=1, tcp_nodelay=True)
        )

    # ------------------------------------------------------------------ request/reply over topics
    def _srv(self, service: str) -> str:
        return f"{self.namespace}/srv/{service}"

    def serve(self, service: str, handler: Handler) -> None:
        import std_msgs.msg as stdm

        reply_pub = self._publisher(self._srv(service) + "/reply", stdm.String)
        cache: dict[str, str] = {}

        def on_request(ros: Any) -> None:
            req = json.loads(ros.data)
            rid = str(req.get("id"))
            if rid not in cache:
                raw = self._answer(handler, json.dumps(req.get("payload", {})).encode()).decode()
                cache[rid] = json.dumps({"id": rid, "reply": json.loads(raw)})
                while len(cache) > 64:
                    cache.pop(next(iter(cache)))
            reply_pub.publish(stdm.String(data=cache[rid]))

        self._subs.append(
            self._rospy.Subscriber(self._srv(service) + "/request", stdm.String, on_request, tcp_nodelay=True)
        )

    def request(self, service: str, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        import std_msgs.msg as stdm

        topic = self._srv(service)
        with self._lock:
            if service not in self._reply_subs:

                def on_reply(ros: Any) -> None:
                    got = json.loads(ros.data)
                    slot = self._pending.get(got.get("id"))
                    if slot is not None:
                        slot["reply"] = got["reply"]
                        slot["event"].set()

                self._reply_subs[service] = self._rospy.Subscriber(
                    topic + "/reply", stdm.String, on_reply, tcp_nodelay=True
                )
        pub = self._publisher(topic + "/request", stdm.String)
        rid = f"{self._me}-{next(self._ids)}"
        slot = {"event": threading.Event(), "reply": None}
        self._pending[rid] = slot
        text = json.dumps({"id": rid, "payload": payload})
        deadline = time.monotonic() + timeout
        try:
            # Subscriptions connect asynchronously: resend until the server has answered this id.
            while time.monotonic() < deadline:
                if pub.get_num_connections() > 0:
                    pub.publish(stdm.String(data=text))
                if slot["event"].wait(0.2):
                    return slot["reply"]
        finally:
            self._pending.pop(rid, None)
        raise BridgeError(f"ros1: no reply to {service!r} within {timeout:g} s")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for s in [*self._subs, *self._reply_subs.values()]:
            s.unregister()
        for p in self._pubs.values():
            p.unregister()
