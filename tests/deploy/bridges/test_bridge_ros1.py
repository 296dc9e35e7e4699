"""ROS 1 interop: a plain Debian-Python rospy node (``/usr/bin/python3``, not our venv) sees the twin's
``sensor_msgs/JointState`` and ``sensor_msgs/Image``, and its own JointState reaches our backend."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time

import numpy as np

from robolearn.deploy.topics import JointState, make_backend

LISTENER = textwrap.dedent(
    """
    import json, sys, rospy
    from sensor_msgs.msg import JointState, Image
    got = {}
    def on_js(m):
        got.setdefault("js", {"name": list(m.name), "position": list(m.position), "stamp": m.header.stamp.to_sec()})
    def on_img(m):
        got.setdefault("img", {"h": m.height, "w": m.width, "encoding": m.encoding, "n": len(m.data)})
    rospy.init_node("debian_listener", anonymous=True, disable_signals=True)
    rospy.Subscriber("/robolearn/joint_states", JointState, on_js, tcp_nodelay=True)
    rospy.Subscriber("/robolearn/cameras/front/image_raw", Image, on_img, tcp_nodelay=True)
    end = rospy.get_time() + 60
    while len(got) < 2 and rospy.get_time() < end:
        rospy.sleep(0.05)
    print(json.dumps(got), flush=True)
    """
)

TALKER = textwrap.dedent(
    """
    import rospy
    from sensor_msgs.msg import JointState
    rospy.init_node("debian_talker", anonymous=True, disable_signals=True)
    pub = rospy.Publisher("/debian/joint_states", JointState, queue_size=10)
    for i in range(400):
        pub.publish(JointState(name=["a", "b"], position=[float(i), 2.0]))
        rospy.sleep(0.02)
    """
)


def _debian_python(code: str, master, **kw) -> subprocess.Popen:
    # A clean environment: Debian's interpreter with Debian's rospy, nothing from our venv.
    env = {
        "PATH": "/usr/bin:/bin",
        "ROS_MASTER_URI": master.uri,
        "ROS_IP": "127.0.0.1",
        "HOME": os.environ["HOME"],
    }
    return subprocess.Popen(["/usr/bin/python3", "-c", code], env=env, text=True, **kw)


def test_debian_rospy_node_sees_standard_joint_state_and_image(rosmaster, sim_robot_process):
    sim_robot_process("ros1", rosmaster.port, "--cameras", "front").start()
    listener = _debian_python(LISTENER, rosmaster, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = listener.communicate(timeout=120)
    got = json.loads(out.strip().splitlines()[-1])
    assert got["js"]["name"][:7] == [f"fr3_joint{i}" for i in range(1, 8)], err
    assert len(got["js"]["position"]) == 9 and abs(got["js"]["stamp"] - time.time()) < 120
    assert got["img"] == {"h": 96, "w": 96, "encoding": "rgb8", "n": 96 * 96 * 3}


def test_our_backend_hears_a_debian_rospy_talker(rosmaster):
    bus = make_backend("ros1", port=rosmaster.port)
    sub = bus.subscribe("/debian/joint_states", JointState, queue_size=1)
    talker = _debian_python(TALKER, rosmaster, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert sub.wait_for(3, timeout=60), "nothing heard from the Debian talker"
        msg = sub.latest().msg
        assert msg.name == ["a", "b"] and msg.position[1] == 2.0 and msg.position[0] >= 0
        np.testing.assert_array_equal(msg.velocity, np.zeros(0))
    finally:
        os.kill(talker.pid, 15)
        talker.wait(timeout=20)
        bus.close()
