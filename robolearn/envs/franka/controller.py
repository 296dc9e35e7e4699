"""Control-step solvers: delta end-effector pose -> joint targets (damped least squares), and limits.

Runs once per control step; MuJoCo position servos track the result over the physics substeps,
so no Python runs inside the substep loop.
"""

from __future__ import annotations

import mujoco
import numpy as np

from robolearn.envs.franka.description import ArmDescription


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> rotation vector (3,)."""
    w = q[0]
    if w < 0:
        q = -q
        w = -w
    s = np.sqrt(max(1.0 - w * w, 0.0))
    if s < 1e-9:
        return 2.0 * q[1:]
    return q[1:] * (2.0 * np.arctan2(s, w) / s)


class DiffIKController:
    """One damped-least-squares step with a null-space pull toward a rest posture.

    ``solve(twist)`` maps a desired world-frame displacement of the TCP ``[dp (3), drot (3)]`` to a
    joint target, rate-limited to the arm's joint velocity limits over one control period and clipped
    to its position limits.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        arm: ArmDescription,
        site_id: int,
        control_dt: float,
        damping: float = 0.05,
        posture_gain: float = 0.2,
    ):
        self.model, self.data, self.site_id = model, data, site_id
        self._jac = np.zeros((6, model.nv))
        self._jac_arm = self._jac[:, :7]
        self._lambda = damping**2 * np.eye(6)
        self._gram = np.zeros((6, 6))
        self._sol_task = np.zeros(6)
        self._sol_posture = np.zeros(6)
        self.posture_gain = posture_gain
        self.rest = arm.q_home.copy()
        margin = 0.02
        self.q_low, self.q_high = arm.q_min + margin, arm.q_max - margin
        self.dq_step = 0.95 * arm.dq_max * control_dt

    def solve(self, twist: np.ndarray) -> np.ndarray:
        """twist (6,) world-frame [dp, drot] -> joint position target (7,)."""
        mujoco.mj_jacSite(self.model, self.data, self._jac[:3], self._jac[3:], self.site_id)
        jac = self._jac_arm
        q = self.data.qpos[:7]
        posture = self.posture_gain * (self.rest - q)
        # (J J^T + λ²I) is symmetric positive definite: one Cholesky factorization in MuJoCo's C
        # routines serves both right-hand sides (the task twist and the posture pull's task part),
        # at a fraction of numpy.linalg.solve's per-call overhead.
        gram = self._gram
        np.matmul(jac, jac.T, out=gram)
        gram += self._lambda
        mujoco.mju_cholFactor(gram, 0.0)
        mujoco.mju_cholSolve(self._sol_task, gram, twist)
        mujoco.mju_cholSolve(self._sol_posture, gram, jac @ posture)
        dq = jac.T @ (self._sol_task - self._sol_posture) + posture
        return self.limit(q, dq)

    def limit(self, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        """Scale ``dq`` uniformly into the per-step velocity limit, then clip ``q + dq`` to the joint range."""
        scale = (np.abs(dq) / self.dq_step).max()
        if scale > 1.0:
            dq = dq / scale
        return np.minimum(np.maximum(q + dq, self.q_low), self.q_high)
