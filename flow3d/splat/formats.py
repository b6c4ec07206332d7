"""Gaussian splat files: the INRIA 3DGS ``.ply``, antimatter15's ``.splat`` and Niantic's ``.spz``.

    g = load_scene("scene.ply")           # any of .ply / .splat / .spz, by extension
    save_scene(g, "scene.spz")
    flow3d splat convert scene.ply scene.spz [--overwrite]

Conventions (all three keep the frame of the PLY, OpenCV-like "RDF": x right, y down, z forward):

* ``.ply`` (Kerbl et al. 2023, ``GaussianModel.save_ply``): one binary little-endian ``vertex``
  element with float32 properties ``x y z nx ny nz f_dc_0..2 f_rest_0..3(K-1)-1 opacity
  scale_0..2 rot_0..3``. Values are stored raw: opacity logits, log scales, quaternions w x y z.
  ``f_rest`` is grouped by colour channel (INRIA saves ``features_rest.transpose(1, 2)``): the
  red channel's K-1 higher coefficients, then green's, then blue's. A float32 round trip is
  bit-exact.
* ``.splat`` (antimatter15/splat ``convert.py``): 32 bytes per Gaussian, no header: position
  3 x float32, scales 3 x float32 (linear), RGBA uint8 (DC colour ``0.5 + C0 f_dc`` and
  ``sigmoid(opacity)``, times 255), quaternion uint8 ``q * 128 + 128`` (w x y z, normalised).
  Higher SH bands are lost. Written sorted by ``-exp(sum log scales) * sigmoid(opacity)`` as
  the original does, so web viewers that stream the file draw the large opaque splats first.
* ``.spz`` (nianticlabs/spz, legacy gzip container, versions 2 and 3): a gzip stream of a
  16-byte header (magic ``NGSP``, version, count, SH degree, fractional bits, flags, reserved)
  then, per attribute: positions (24-bit fixed point), alphas (uint8 sigmoid), colours
  (uint8, ``f_dc * 0.15 * 255 + 127.5``), scales (uint8, ``(log s + 10) * 16``), rotations
  (v2: x y z as uint8 with w >= 0 derived; v3: "smallest three", 2-bit index + 3 x 10 bits),
  SH (uint8, ``x * 128 + 128`` in buckets of 8 for band 1 and 16 for bands 2-3, colour
  channel fastest). SPZ stores RUB (OpenGL): y and z are flipped on the way in and out (with
  the matching quaternion and SH signs), so a round trip returns this module's frame and other
  SPZ tools see the scene the way they see the PLY it came from.
"""

from __future__ import annotations

import argparse
import gzip
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from flow3d.errors import DataError
from flow3d.io import atomic_write_bytes, check_output_file
from flow3d.options import add_overwrite_flag
from flow3d.splat import sh
from flow3d.splat.gaussians import Gaussians

SUFFIXES = (".ply", ".splat", ".spz")


# ---- shared helpers --------------------------------------------------------------------------
def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a splat file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    return path


def _as_numpy(g: Gaussians) -> dict[str, np.ndarray]:
    """float32 numpy arrays of the raw parameters (sh as [N, K, 3])."""
    g = g.detach().to("cpu")
    return {name: getattr(g, name).to(torch.float32).numpy()
            for name in ("means", "quats", "log_scales", "opacity_logits", "sh")}


def _gaussians(path: Path, means, quats, log_scales, opacity_logits, coeffs) -> Gaussians:
    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    g = Gaussians(t(means), t(quats), t(log_scales), t(opacity_logits), t(coeffs))
    return g.check_finite(str(path))


def _logit_u8(a: np.ndarray) -> np.ndarray:
    """Opacity logit from an 8-bit alpha; 0 and 255 are pulled half a step inwards so the
    logit stays finite (the file cannot tell 0 from 'below half a step')."""
    p = np.clip(a.astype(np.float64) / 255.0, 0.5 / 255.0, 1.0 - 0.5 / 255.0)
    return np.log(p / (1.0 - p)).astype(np.float32)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _unit(q: np.ndarray) -> np.ndarray:
    q = q.astype(np.float64)
    return q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)


# ---- INRIA PLY -------------------------------------------------------------------------------
_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2",
              "int16": "i2", "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4",
              "uint": "u4", "uint32": "u4", "float": "f4", "float32": "f4", "double": "f8",
              "float64": "f8"}
_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
             "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


class PlyHeader:
    """The parsed header of a PLY file: ``format``, ``elements`` (name -> count, in order),
    ``properties`` (element name -> [(name, numpy type or None for lists)]) and the byte
    offset where the body starts."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        if not head.startswith(b"ply\n") and not head.startswith(b"ply\r\n"):
            raise DataError(f"{path}: not a PLY file (it does not start with 'ply')")
        end = head.find(b"end_header")
        if end < 0:
            raise DataError(f"{path}: PLY header has no end_header line")
        newline = head.find(b"\n", end)
        if newline < 0:
            raise DataError(f"{path}: PLY header is truncated after end_header")
        self.body_offset = newline + 1
        self.format = ""
        self.elements: dict[str, int] = {}
        self.properties: dict[str, list[tuple[str, str | None]]] = {}
        try:
            lines = head[:end].decode("ascii").splitlines()[1:]
        except UnicodeDecodeError:
            raise DataError(f"{path}: PLY header is not ASCII text") from None
        for line in lines:
            words = line.split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "format" and len(words) >= 2:
                self.format = words[1]
            elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
                self.elements[words[1]] = int(words[2])
                self.properties[words[1]] = []
            elif words[0] == "property" and self.properties and len(words) >= 3:
                element = list(self.properties)[-1]
                if words[1] == "list":
                    self.properties[element].append((words[-1], None))
                elif words[1] in _PLY_TYPES:
                    self.properties[element].append((words[2], _PLY_TYPES[words[1]]))
                else:
                    raise DataError(f"{path}: PLY property {words[2]!r} has unknown type "
                                    f"{words[1]!r}")
            else:
                raise DataError(f"{path}: PLY header line {line.strip()!r} is not valid")
        if self.format not in ("binary_little_endian", "binary_big_endian", "ascii"):
            raise DataError(f"{path}: PLY format {self.format or '(missing)'!r} is not "
                            f"binary_little_endian, binary_big_endian or ascii")

    def names(self, element: str = "vertex") -> set[str]:
        return {name for name, _ in self.properties.get(element, [])}

    @property
    def kind(self) -> str:
        """``"splat"`` (3DGS Gaussians), ``"mesh"`` (has faces) or ``"points"``."""
        if {"opacity", "scale_0", "rot_0", "f_dc_0"} <= self.names():
            return "splat"
        if self.elements.get("face", 0) > 0:
            return "mesh"
        return "points"


def ply_kind(path: str | Path) -> str:
    """Whether a ``.ply`` holds Gaussian splats, a mesh or a point cloud (header only)."""
    return PlyHeader(_existing_file(path)).kind


def _sh_rest_count(path: Path, names: set[str]) -> int:
    rest = sum(1 for n in names if n.startswith("f_rest_"))
    if rest % 3 or rest // 3 + 1 not in (1, 4, 9, 16):
        raise DataError(f"{path}: {rest} f_rest properties; expected 0, 9, 24 or 45 "
                        f"(SH degree 0-3)")
    missing = [f"f_rest_{i}" for i in range(rest) if f"f_rest_{i}" not in names]
    if missing:
        raise DataError(f"{path}: f_rest properties are not numbered 0..{rest - 1} "
                        f"(missing {missing[0]})")
    return rest // 3 + 1


def read_ply(path: str | Path) -> Gaussians:
    """Gaussians from an INRIA 3DGS ``.ply`` (any PLY format; float32 values kept exactly)."""
    path = _existing_file(path)
    header = PlyHeader(path)
    if "vertex" not in header.elements:
        raise DataError(f"{path}: PLY has no vertex element")
    props = header.properties["vertex"]
    names = header.names()
    missing = [p for p in _REQUIRED if p not in names]
    if missing:
        what = "a mesh or point cloud, not Gaussian splats" if header.kind != "splat" else \
            "not a 3DGS splat file"
        raise DataError(f"{path}: PLY vertex element lacks {', '.join(missing[:4])}"
                        f"{' ...' if len(missing) > 4 else ''} ({what})")
    if any(t is None for _, t in props):
        raise DataError(f"{path}: PLY vertex element has list properties (not a splat file)")
    k = _sh_rest_count(path, names)
    n = header.elements["vertex"]
    if list(header.elements)[0] != "vertex":
        raise DataError(f"{path}: PLY vertex element must come first")
    v = _read_ply_vertices(path, header, props, n)

    def cols(*keys: str) -> np.ndarray:
        if not keys or not n:
            return np.zeros((n, len(keys)), np.float32)
        return np.stack([v[key].astype(np.float32) for key in keys], axis=-1)

    rest = cols(*(f"f_rest_{i}" for i in range(3 * (k - 1)))).reshape(n, 3, k - 1)
    coeffs = np.concatenate([cols("f_dc_0", "f_dc_1", "f_dc_2")[:, None, :],
                             rest.transpose(0, 2, 1)], axis=1)
    return _gaussians(path, cols("x", "y", "z"), cols("rot_0", "rot_1", "rot_2", "rot_3"),
                      cols("scale_0", "scale_1", "scale_2"), cols("opacity")[:, 0], coeffs)


def _read_ply_vertices(path: Path, header: PlyHeader, props, n: int) -> np.ndarray:
    if header.format == "ascii":
        dtype = np.dtype([(name, t) for name, t in props])
        with open(path, "rb") as f:
            f.seek(header.body_offset)
            lines = f.read().decode("ascii", errors="replace").split("\n")
        rows = [line.split() for line in lines[:n]]
        if len(rows) < n or any(len(r) != len(props) for r in rows):
            raise DataError(f"{path}: PLY body is truncated or malformed (expected {n} "
                            f"vertex lines of {len(props)} values)")
        try:
            return np.array([tuple(float(x) for x in r) for r in rows], dtype=dtype)
        except ValueError as e:
            raise DataError(f"{path}: PLY body has a value that is not a number ({e})") \
                from None
    order = "<" if header.format == "binary_little_endian" else ">"
    dtype = np.dtype([(name, order + t) for name, t in props])
    need = header.body_offset + n * dtype.itemsize
    size = path.stat().st_size
    if size < need:
        raise DataError(f"{path}: PLY is truncated ({size} bytes, the header promises {n} "
                        f"vertices = {need} bytes)")
    return np.fromfile(path, dtype=dtype, count=n, offset=header.body_offset)


def write_ply(gaussians: Gaussians, path: str | Path) -> Path:
    """Write the INRIA 3DGS ``.ply`` (binary little-endian float32; normals zero)."""
    a = _as_numpy(gaussians)
    n, k = a["sh"].shape[:2]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    rest = a["sh"][:, 1:, :].transpose(0, 2, 1).reshape(n, -1)  # channel-major, as INRIA
    body = np.concatenate([a["means"], np.zeros((n, 3), np.float32), a["sh"][:, 0, :], rest,
                           a["opacity_logits"][:, None], a["log_scales"], a["quats"]], axis=1)
    header = "ply\nformat binary_little_endian 1.0\n" f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    path = Path(path)
    atomic_write_bytes(path, header.encode("ascii") + body.astype("<f4").tobytes())
    return path


# ---- antimatter15 .splat ---------------------------------------------------------------------
_SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4),
                         ("rot", "u1", 4)])


def write_splat(gaussians: Gaussians, path: str | Path) -> Path:
    """Write antimatter15's ``.splat`` (DC colour only), most important Gaussians first."""
    a = _as_numpy(gaussians)
    n = len(a["means"])
    importance = np.exp(a["log_scales"].astype(np.float64).sum(-1)) * _sigmoid(
        a["opacity_logits"])
    order = np.argsort(-importance, kind="stable")
    rec = np.zeros(n, _SPLAT_DTYPE)
    rec["position"] = a["means"][order]
    rec["scale"] = np.exp(a["log_scales"][order].astype(np.float64))
    rgb = 0.5 + sh.C0 * a["sh"][order, 0, :].astype(np.float64)
    rec["rgba"] = _u8(np.concatenate([rgb, _sigmoid(a["opacity_logits"][order])[:, None]],
                                     axis=1) * 255.0)
    rec["rot"] = _u8(_unit(a["quats"][order]) * 128.0 + 128.0)
    path = Path(path)
    atomic_write_bytes(path, rec.tobytes())
    return path


def read_splat(path: str | Path) -> Gaussians:
    """Gaussians (SH degree 0) from antimatter15's ``.splat``."""
    path = _existing_file(path)
    size = path.stat().st_size
    if size % _SPLAT_DTYPE.itemsize:
        raise DataError(f"{path}: {size} bytes is not a whole number of 32-byte splats "
                        f"(truncated, or not a .splat file)")
    rec = np.fromfile(path, dtype=_SPLAT_DTYPE)
    scales = rec["scale"].astype(np.float64)
    if (scales <= 0).any() or not np.isfinite(scales).all():
        bad = int(np.nonzero(~(scales > 0).all(-1) | ~np.isfinite(scales).all(-1))[0][0])
        raise DataError(f"{path}: splat {bad} has a scale that is not a positive finite "
                        f"number")
    rgba = rec["rgba"].astype(np.float64) / 255.0
    coeffs = ((rgba[:, :3] - 0.5) / sh.C0)[:, None, :]
    quats = (rec["rot"].astype(np.float64) - 128.0) / 128.0
    return _gaussians(path, rec["position"], quats, np.log(scales), _logit_u8(rec["rgba"][:, 3]),
                      coeffs)


# ---- Niantic SPZ -----------------------------------------------------------------------------
SPZ_MAGIC = 0x5053474E  # "NGSP" little-endian
_SPZ_HEADER = struct.Struct("<IIIBBBB")
_SPZ_COLOR_SCALE = 0.15
_SQRT1_2 = float(np.sqrt(0.5))
# RDF <-> RUB is a half turn about x: y and z change sign; so do the quaternion's y and z and
# the SH basis functions odd in (y, z) (= diag of sh.sh_rotation(diag(1, -1, -1), 3)).
_FLIP_P = np.array([1.0, -1.0, -1.0])
_FLIP_Q_XYZ = np.array([1.0, -1.0, -1.0])
_FLIP_SH = np.array([1, -1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], np.float64)


def _spz_quantize_sh(x: np.ndarray, bits: int) -> np.ndarray:
    bucket = 1 << (8 - bits)
    q = np.round(x.astype(np.float64) * 128.0) + 128.0
    q = np.floor((q + bucket // 2) / bucket) * bucket
    return np.clip(q, 0, 255).astype(np.uint8)


def _pack_quats_first_three(q: np.ndarray) -> np.ndarray:  # q [N, 4] x y z w
    q = q * np.where(q[:, 3:] < 0, -127.5, 127.5) + 127.5
    return _u8(q[:, :3])


def _pack_quats_smallest_three(q: np.ndarray) -> np.ndarray:  # q [N, 4] x y z w -> [N, 4] u8
    n = len(q)
    largest = np.argmax(np.abs(q), axis=1)
    negate = q[np.arange(n), largest] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):
        keep = largest != i
        negbit = ((q[:, i] < 0) ^ negate).astype(np.uint32)
        mag = np.floor(511.0 * np.abs(q[:, i]) / _SQRT1_2 + 0.5).astype(np.uint32)
        comp = np.where(keep, (comp << 10) | (negbit << 9) | np.minimum(mag, 511), comp)
    return comp.astype("<u4").view(np.uint8).reshape(n, 4)


def _unpack_quats_first_three(r: np.ndarray) -> np.ndarray:
    xyz = r.astype(np.float64) / 127.5 - 1.0
    w = np.sqrt(np.maximum(0.0, 1.0 - (xyz * xyz).sum(-1, keepdims=True)))
    return np.concatenate([xyz, w], axis=1)


def _unpack_quats_smallest_three(r: np.ndarray) -> np.ndarray:
    comp = np.ascontiguousarray(r).view("<u4")[:, 0].astype(np.int64)
    largest = comp >> 30
    q = np.zeros((len(r), 4))
    for i in (3, 2, 1, 0):
        skip = largest == i
        mag = (comp & 511).astype(np.float64)
        sign = np.where((comp >> 9) & 1, -1.0, 1.0)
        q[:, i] = np.where(skip, 0.0, sign * _SQRT1_2 * mag / 511.0)
        comp = np.where(skip, comp, comp >> 10)
    rest = np.maximum(0.0, 1.0 - (q * q).sum(-1))
    q[np.arange(len(r)), largest] = np.sqrt(rest)
    return q


def write_spz(gaussians: Gaussians, path: str | Path, *, version: int = 3, sh1_bits: int = 5,
              sh_rest_bits: int = 4) -> Path:
    """Write Niantic's ``.spz`` (gzip container, version 2 or 3; 3 is the library default)."""
    if version not in (2, 3):
        raise ValueError(f"write_spz: version {version} (2 or 3)")
    a = _as_numpy(gaussians)
    n, k = a["sh"].shape[:2]
    means = a["means"].astype(np.float64) * _FLIP_P
    extent = float(np.abs(means).max()) if n else 0.0
    # 12 fractional bits (the reference's ~0.25 mm) unless the scene needs more range
    frac = 12
    while frac > 0 and round(extent * (1 << frac)) >= (1 << 23):
        frac -= 1
    if round(extent * (1 << frac)) >= (1 << 23):
        raise DataError(f"{path}: positions up to {extent:g} do not fit SPZ's 24-bit fixed "
                        f"point")
    fixed = np.round(means * (1 << frac)).astype(np.int32).astype("<i4")
    positions = fixed.view(np.uint8).reshape(n, 3, 4)[:, :, :3]
    alphas = _u8(_sigmoid(a["opacity_logits"]) * 255.0)
    colors = _u8(a["sh"][:, 0, :].astype(np.float64) * (_SPZ_COLOR_SCALE * 255.0) + 127.5)
    scales = _u8((a["log_scales"].astype(np.float64) + 10.0) * 16.0)
    q = _unit(a["quats"])[:, [1, 2, 3, 0]]  # x y z w
    q[:, :3] *= _FLIP_Q_XYZ
    rotations = _pack_quats_first_three(q) if version == 2 else _pack_quats_smallest_three(q)
    rest = a["sh"][:, 1:, :].astype(np.float64) * _FLIP_SH[1:k, None]
    bits = np.full(k - 1, sh_rest_bits)
    bits[:3] = sh1_bits
    coeffs = np.stack([_spz_quantize_sh(rest[:, j], int(bits[j])) for j in range(k - 1)],
                      axis=1) if k > 1 else np.zeros((n, 0, 3), np.uint8)
    header = _SPZ_HEADER.pack(SPZ_MAGIC, version, n, sh.degree_of(k), frac, 0, 0)
    raw = b"".join([header, positions.tobytes(), alphas.tobytes(), colors.tobytes(),
                    scales.tobytes(), rotations.tobytes(), coeffs.tobytes()])
    path = Path(path)
    atomic_write_bytes(path, gzip.compress(raw, compresslevel=6, mtime=0))
    return path


def read_spz(path: str | Path) -> Gaussians:
    """Gaussians from Niantic's ``.spz`` (gzip container, versions 2 and 3)."""
    path = _existing_file(path)
    data = path.read_bytes()
    if data[:4] == struct.pack("<I", SPZ_MAGIC):
        raise DataError(f"{path}: an uncompressed SPZ (version 4 container) is not supported; "
                        f"re-save it as SPZ version 2 or 3")
    if data[:2] != b"\x1f\x8b":
        raise DataError(f"{path}: not an SPZ file (not gzip-compressed)")
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: SPZ gzip stream is corrupt or truncated ({e})") from None
    if len(raw) < _SPZ_HEADER.size:
        raise DataError(f"{path}: SPZ is truncated ({len(raw)} bytes, header needs 16)")
    magic, version, n, degree, frac, flags, _ = _SPZ_HEADER.unpack_from(raw)
    if magic != SPZ_MAGIC:
        raise DataError(f"{path}: not an SPZ file (magic {magic:#010x}, expected NGSP)")
    if version not in (2, 3):
        raise DataError(f"{path}: SPZ version {version} is not supported (2 or 3)")
    if degree > sh.MAX_DEGREE:
        raise DataError(f"{path}: SPZ SH degree {degree} is not supported (0-{sh.MAX_DEGREE})")
    if flags & 0x2:
        raise DataError(f"{path}: SPZ extensions (flag 0x2) are not supported")
    k = sh.num_coeffs(degree)
    rot_bytes = 4 if version >= 3 else 3
    sizes = [9 * n, n, 3 * n, 3 * n, rot_bytes * n, 3 * (k - 1) * n]
    need = _SPZ_HEADER.size + sum(sizes)
    if len(raw) < need:
        raise DataError(f"{path}: SPZ is truncated ({len(raw)} bytes of data, the header "
                        f"promises {n} Gaussians = {need} bytes)")
    parts, offset = [], _SPZ_HEADER.size
    for size in sizes:
        parts.append(np.frombuffer(raw, np.uint8, size, offset))
        offset += size
    pos_b, alpha_b, color_b, scale_b, rot_b, sh_b = parts
    p = pos_b.reshape(n * 3, 3).astype(np.int32)
    fixed = p[:, 0] | (p[:, 1] << 8) | (p[:, 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = fixed.reshape(n, 3).astype(np.float64) / (1 << frac) * _FLIP_P
    unpack = _unpack_quats_smallest_three if version >= 3 else _unpack_quats_first_three
    q = unpack(rot_b.reshape(n, rot_bytes))
    q[:, :3] *= _FLIP_Q_XYZ
    dc = (color_b.reshape(n, 3).astype(np.float64) / 255.0 - 0.5) / _SPZ_COLOR_SCALE
    rest = (sh_b.reshape(n, k - 1, 3).astype(np.float64) - 128.0) / 128.0 * _FLIP_SH[1:k, None]
    coeffs = np.concatenate([dc[:, None, :], rest], axis=1)
    return _gaussians(path, means, q[:, [3, 0, 1, 2]],
                      scale_b.reshape(n, 3).astype(np.float64) / 16.0 - 10.0,
                      _logit_u8(alpha_b), coeffs)


# ---- dispatch --------------------------------------------------------------------------------
READERS: dict[str, Callable[[Path], Gaussians]] = {
    ".ply": read_ply, ".splat": read_splat, ".spz": read_spz}
WRITERS: dict[str, Callable[[Gaussians, Path], Path]] = {
    ".ply": write_ply, ".splat": write_splat, ".spz": write_spz}


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in READERS:
        raise DataError(f"{path}: unsupported extension {path.suffix or '(none)'!r} "
                        f"(use {', '.join(SUFFIXES)})")
    return suffix


def load_scene(path: str | Path) -> Gaussians:
    """Gaussians from a ``.ply``, ``.splat`` or ``.spz`` file, chosen by extension."""
    path = Path(path)
    return READERS[_suffix(path)](path)


def save_scene(gaussians: Gaussians, path: str | Path) -> Path:
    """Write ``gaussians`` as ``.ply`` (exact), ``.splat`` or ``.spz`` (quantised) by extension.
    Written atomically: a failure never leaves a partial file."""
    path = Path(path)
    return WRITERS[_suffix(path)](gaussians, path)


# ---- flow3d splat convert --------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN", help="splat file: .ply, .splat or .spz")
    parser.add_argument("output", metavar="OUT", help="splat file to write: .ply, .splat "
                                                      "or .spz (format by extension)")
    add_overwrite_flag(parser)


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.output, "OUT", overwrite=args.overwrite, suffixes=SUFFIXES)
    gaussians = load_scene(_existing_file(args.input))
    save_scene(gaussians, out)
    print(f"{out}: {len(gaussians)} Gaussians, SH degree "  # noqa: T201
          f"{gaussians.sh_degree if out.suffix.lower() != '.splat' else 0}")
    return 0
