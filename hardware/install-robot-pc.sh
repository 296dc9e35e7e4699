#!/usr/bin/env bash
# Install the robot-PC side of robolearn: the Franka driver and the bridges, without torch or mujoco.
#   hardware/install-robot-pc.sh [VENV] [--zenoh] [--ros1]
# VENV (default ~/robolearn-robot): a venv with numpy, msgpack, websockets, pyyaml, pyzmq, pylibfranka,
# ruckig, and this checkout installed editable with --no-deps (the driver reads hardware/ and deploy/
# from the checkout, so keep it where it is).
# --zenoh adds eclipse-zenoh; --ros1 makes Debian's rospy visible to the venv (install it first:
#   sudo apt-get install python3-rospy python3-rosmaster python3-sensor-msgs python3-std-msgs
#        python3-geometry-msgs python3-trajectory-msgs python3-tf2-msgs).
# Then: VENV/bin/robolearn franka-driver --robot-ip 172.16.0.2 --bridge zmq --cell deploy/cells/<cell>.yaml
# Safe to re-run: it refreshes the checkout and skips what is installed.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$HOME/robolearn-robot"
extra=()
ros1=0
for arg in "$@"; do
  case "$arg" in
    --zenoh) extra+=("eclipse-zenoh>=1.0") ;;
    --ros1) ros1=1 ;;
    -*) echo "install-robot-pc: unknown option $arg" >&2; exit 2 ;;
    *) venv="$arg" ;;
  esac
done
PY="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" numpy msgpack "websockets>=15" pyyaml pyzmq "pylibfranka>=0.21" "ruckig>=0.14" "setuptools>=68" "${extra[@]}"
if [ "$ros1" = 1 ]; then
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo /usr/lib/python3/dist-packages > "$site/zz-debian-ros1.pth"  # appended last: the venv's own win
fi
"${pip[@]}" --no-deps --no-build-isolation -e "$repo"
"$venv/bin/python" - <<'EOF'
import importlib.util, sys
for heavy in ("torch", "mujoco"):
    if importlib.util.find_spec(heavy) is not None:
        print(f"install-robot-pc: note: {heavy} is importable in this venv; the driver never imports it")
import robolearn.deploy.franka.driver, robolearn.deploy.franka.libfranka, robolearn.deploy.franka.service  # noqa
print(f"install-robot-pc: ready: {sys.prefix}/bin/robolearn franka-driver --robot-ip IP --bridge zmq|zenoh|ros1")
EOF
