"""The flow-matching core: maths only, no parameters, no I/O.

Convention: ``t = 0`` is the source (noise), ``t = 1`` is data, a model predicts the velocity
``dx_t/dt``. Nouns, one module each:

- :mod:`~flow3d.core.schedulers`, :mod:`~flow3d.core.paths`: ``(x_0, x_1, t) -> (x_t, dx_t)``
- :mod:`~flow3d.core.time`: training-time samplers and inference grids
- :mod:`~flow3d.core.losses`, :mod:`~flow3d.core.couplings`: what training regresses, on what
- :mod:`~flow3d.core.so3`, :mod:`~flow3d.core.manifolds`: rotations and state spaces
- :mod:`~flow3d.core.solvers`: ``solve(velocity, x_init, method=...)``
- :mod:`~flow3d.core.conversions`: velocity <-> x1 / noise prediction, diffusers/SD3 sigmas
- :mod:`~flow3d.core.likelihood`: log-density by the instantaneous change of variables
- :mod:`~flow3d.core.guidance`, :mod:`~flow3d.core.editing`: training-free control
- :mod:`~flow3d.core.reflow`: rectification pairs on disk
- :mod:`~flow3d.core.analytic`: flows with closed-form velocity (ground truth for tests)

Every public name is importable from here; submodules load on first use (PEP 562), so
``import flow3d.core`` costs only torch, and scipy/safetensors load only for the features
that need them.
"""

from __future__ import annotations

import importlib

_EXPORTS: dict[str, tuple[str, ...]] = {
    "schedulers": (
        "SCHEDULERS", "CosineScheduler", "LinearScheduler", "Scheduler", "SchedulerOutput",
        "VPScheduler", "build_scheduler",
    ),
    "paths": ("AffinePath", "GeodesicPath", "PathSample", "expand_time"),
    "time": (
        "TIME_SAMPLERS", "LogitNormalTime", "ModeTime", "TimeSampler", "UShapedTime",
        "UniformTime", "build_time_sampler", "shift_time", "time_grid",
    ),
    "losses": ("time_weight", "velocity_loss"),
    "so3": (
        "axis_angle_to_rotmat", "quat_angle", "quat_apply", "quat_canonical", "quat_conj",
        "quat_exp", "quat_inv", "quat_log", "quat_mul", "quat_normalize", "quat_slerp",
        "quat_to_rotmat", "random_quat", "rotmat_to_axis_angle", "rotmat_to_quat", "hat",
        "so3_jr_inv",
    ),
    "manifolds": ("Euclidean", "Manifold", "Product", "SO3Matrix", "SO3Quaternion"),
    "solvers": (
        "METHOD_ORDER", "SOLVERS", "SolveOptionError", "SolveOptions", "SolveResult", "solve",
    ),
    "analytic": ("GaussianFlow", "GaussianMixtureFlow"),
    "couplings": ("COUPLINGS", "independent_coupling", "ot_coupling", "ot_permutation"),
    "conversions": (
        "PREDICTIONS", "as_velocity", "convert_prediction", "from_sigma_model", "to_sigma_model",
    ),
    "likelihood": (
        "LikelihoodResult", "divergence", "log_likelihood", "standard_normal_log_prob",
    ),
    "guidance": (
        "ClassifierFreeGuidance", "ClassifierGuidance", "FlowChef", "Inpainting",
        "OptimizerGuidance", "renoise",
    ),
    "editing": ("flowedit", "sdedit"),
    "reflow": ("ReflowPairs", "generate_pairs"),
}

_WHERE: dict[str, str] = {name: mod for mod, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'flow3d.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"flow3d.core.{mod}"), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
