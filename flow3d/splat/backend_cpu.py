"""The fast CPU rasterizer: tile binning, per-tile depth order, front-to-back compositing with
early stop, and a hand-written backward pass, in C++ with OpenMP over tiles.

Same maths and outputs as the dense reference ``render.rasterize_dense`` (its slow twin, see
that module's docstring), to float tolerance. The kernel (``csrc/raster_cpu.cpp``) is a plain
C ABI called through ctypes, so it needs only a C++ compiler (``$CXX`` or ``c++``), no torch
headers and no ninja: it is compiled on first use (a few seconds) into
``$FLOW3D_CACHE/splat`` (default ``~/.cache/flow3d/splat``), keyed by a hash of the source and
flags. Without a compiler the backend warns once, in one line, and composites with the dense
reference instead.

Binning uses the exact extent where ``opacity * exp(-power)`` can reach ``alpha_min`` (not the
3-sigma radii, which only decide which Gaussians are kept, as in the reference), so the image
does not depend on the tile size. The backward pass is gsplat's ``rasterize_to_pixels``
backward: per pixel, walk the contributing fragments back to front from the stored final
transmittance and count; per-Gaussian gradients are summed from per-fragment buffers, not atomics.
Threads: ``torch.get_num_threads()``. On a machine whose cores are shared with other jobs, set
``OMP_WAIT_POLICY=PASSIVE``: spinning OpenMP waiters (torch's and this kernel's) otherwise take
the core their partner thread needs (see docs/benchmarks.md, "Splat rasterizer").
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

from flow3d.splat.backend_torch import rasterize_dense
from flow3d.splat.cameras import Cameras
from flow3d.splat.project import Projected
from flow3d.splat.settings import RenderSettings

SOURCE = Path(__file__).with_name("csrc") / "raster_cpu.cpp"
CXXFLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-fno-fast-math"]
ABI_VERSION = 2

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None


def cache_dir() -> Path:
    root = os.environ.get("FLOW3D_CACHE") or Path.home() / ".cache" / "flow3d"
    return Path(root) / "splat"


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def build_library(verbose: bool = False) -> Path:
    """Compile the kernel if the cache lacks it; returns the shared library's path.
    Raises ``RuntimeError`` (with the compiler's message) when it cannot be built."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
    src = SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join([cxx, *CXXFLAGS]).encode()).hexdigest()[:16]
    out = cache_dir() / f"raster_cpu-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-raster_cpu-", suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        cmd = [cxx, *CXXFLAGS, str(SOURCE), "-o", tmp]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            lines = res.stderr.strip().splitlines() or ["unknown error"]
            msg = next((ln for ln in lines if "error" in ln), lines[0])
            raise RuntimeError(f"{' '.join(cmd)} failed: {msg}")
        if verbose:
            print(" ".join(cmd))  # noqa: T201
        os.replace(tmp, out)  # atomic: concurrent builders race harmlessly
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _declare(lib: ctypes.CDLL) -> None:
    i64, f64, i32, ptr = ctypes.c_int64, ctypes.c_double, ctypes.c_int, ctypes.c_void_p
    head = [i64, i64, i64, i64, i64, f64, f64, f64, i32]
    lib.flow3d_raster_abi_version.restype = ctypes.c_int
    lib.flow3d_bin_fill.argtypes = head + [ptr] * 4
    for s in ("f32", "f64"):
        getattr(lib, f"flow3d_bin_rects_{s}").argtypes = head + [ptr] * 6
        getattr(lib, f"flow3d_forward_{s}").argtypes = head + [ptr] * 14
        getattr(lib, f"flow3d_backward_{s}").argtypes = head + [ptr] * 22
        for f in ("bin_rects", "forward", "backward"):
            getattr(lib, f"flow3d_{f}_{s}").restype = None
    lib.flow3d_bin_fill.restype = None


def load_library() -> ctypes.CDLL | None:
    """The compiled kernel, or None (after one one-line warning) when it cannot be built."""
    global _lib, _failed
    with _lock:
        if _lib is None and _failed is None:
            try:
                lib = ctypes.CDLL(str(build_library()))
                _declare(lib)
                if lib.flow3d_raster_abi_version() != ABI_VERSION:
                    raise RuntimeError("stale kernel in the cache")
                _lib = lib
            except (OSError, RuntimeError) as e:
                _failed = str(e).replace("\n", " ")
                warnings.warn(f"flow3d.splat: cpu rasterizer not compiled ({_failed}); "
                              "using the slow dense torch reference", RuntimeWarning, stacklevel=3)
        return _lib


def _p(t: Tensor) -> int:
    return t.data_ptr()


class _Grid:
    """The integer and float scalars every kernel call starts with."""

    def __init__(self, n_cams: int, n: int, cameras: Cameras, settings: RenderSettings):
        self.ts = int(settings.tile_size)
        if self.ts < 1:
            raise ValueError(f"tile_size must be >= 1, got {settings.tile_size}")
        self.w, self.h = int(cameras.width), int(cameras.height)
        self.tiles = -(-self.w // self.ts) * -(-self.h // self.ts)
        self.head = (n_cams, n, self.w, self.h, self.ts, float(settings.alpha_min),
                     float(settings.alpha_max), float(settings.transmittance_min),
                     max(1, torch.get_num_threads()))


def bin_tiles(lib, grid: _Grid, means2d, conics, opacities, depths, radii):
    """Per camera, the Gaussians touching each tile, sorted by (depth, index):
    ``offsets [C*T+1]`` (int64) into ``ids [F]`` (int32 Gaussian indices), and each Gaussian's
    pixel rectangle ``rects [C, N, 4]`` (x0, x1, y0, y1 inclusive; empty when x0 > x1)."""
    n_cams, n = opacities.shape
    sfx = "f64" if means2d.dtype == torch.float64 else "f32"
    rects = torch.empty(n_cams, n, 4, dtype=torch.int32)
    counts = torch.zeros(n_cams * grid.tiles, dtype=torch.int64)
    getattr(lib, f"flow3d_bin_rects_{sfx}")(*grid.head, _p(means2d), _p(conics), _p(opacities),
                                             _p(radii), _p(rects), _p(counts))
    offsets = torch.zeros(n_cams * grid.tiles + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=offsets[1:])
    ids = torch.empty(int(offsets[-1]), dtype=torch.int32)
    order = torch.argsort(depths, dim=1, stable=True).contiguous()  # int64 [C, N]
    lib.flow3d_bin_fill(*grid.head, _p(rects), _p(order), _p(offsets), _p(ids))
    return offsets, ids, rects


class RasterizeTiles(torch.autograd.Function):
    """``(means2d, conics, colors, opacities, depths) -> (rgb, alpha, depth)``; ``radii`` and
    the rest are constants. Inputs are ``[C, N, ...]`` of one float dtype."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, depths, radii, cameras, settings, lib):
        dtype = means2d.dtype
        means2d, conics, colors, opacities, depths = (
            t.detach().to(dtype).contiguous() for t in (means2d, conics, colors, opacities, depths))
        radii = radii.to(torch.int32).contiguous()
        n_cams, n = opacities.shape
        grid = _Grid(n_cams, n, cameras, settings)
        sfx = "f64" if dtype == torch.float64 else "f32"
        bg = torch.tensor(settings.background, dtype=dtype)
        offsets, ids, rects = bin_tiles(lib, grid, means2d, conics, opacities, depths, radii)
        rgb = torch.empty(n_cams, grid.h, grid.w, 3, dtype=dtype)
        alpha = torch.empty(n_cams, grid.h, grid.w, 1, dtype=dtype)
        depth = torch.empty_like(alpha)
        t_final = torch.empty_like(alpha)
        n_last = torch.empty(n_cams, grid.h, grid.w, dtype=torch.int32)
        getattr(lib, f"flow3d_forward_{sfx}")(
            *grid.head, _p(offsets), _p(ids), _p(rects), _p(means2d), _p(conics), _p(colors),
            _p(opacities), _p(depths), _p(bg), _p(rgb), _p(alpha), _p(depth), _p(t_final),
            _p(n_last))
        ctx.save_for_backward(means2d, conics, colors, opacities, depths, bg, alpha, depth,
                              t_final, n_last, offsets, ids, rects)
        ctx.grid, ctx.lib, ctx.sfx = grid, lib, sfx
        return rgb, alpha, depth

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_rgb, g_alpha, g_depth):
        (means2d, conics, colors, opacities, depths, bg, alpha, depth, t_final, n_last, offsets,
         ids, rects) = ctx.saved_tensors
        grads_in = [torch.zeros(*alpha.shape[:3], k, dtype=alpha.dtype) if g is None
                    else g.to(alpha.dtype).contiguous()
                    for g, k in ((g_rgb, 3), (g_alpha, 1), (g_depth, 1))]
        frag_grad = torch.empty(ids.numel(), 10, dtype=means2d.dtype)
        outs = [torch.zeros_like(t) for t in (means2d, conics, colors, opacities, depths)]
        getattr(ctx.lib, f"flow3d_backward_{ctx.sfx}")(
            *ctx.grid.head, _p(offsets), _p(ids), _p(rects), _p(means2d), _p(conics), _p(colors),
            _p(opacities), _p(depths), _p(bg), _p(alpha), _p(depth), _p(t_final), _p(n_last),
            *(_p(g) for g in grads_in), _p(frag_grad), *(_p(o) for o in outs))
        return (*outs, None, None, None, None)


def rasterize_tiles(projected: Projected, cameras: Cameras,
                    settings: RenderSettings) -> tuple[Tensor, Tensor, Tensor]:
    """``rgb [C,H,W,3], alpha [C,H,W,1], depth [C,H,W,1]``, as ``rasterize_dense`` computes them,
    differentiable w.r.t. means2d, conics, colors, opacities and depths."""
    lib = load_library()
    dtype = projected.means2d.dtype
    if lib is None or dtype not in (torch.float32, torch.float64):
        return rasterize_dense(projected, cameras, settings)
    n_cams, n = projected.means2d.shape[:2]
    assert projected.radii.shape == (n_cams, n, 2), projected.radii.shape
    assert len(cameras) == n_cams, (len(cameras), n_cams)
    return RasterizeTiles.apply(projected.means2d, projected.conics, projected.colors,
                                projected.opacities, projected.depths, projected.radii, cameras,
                                settings, lib)
