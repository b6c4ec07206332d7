"""``flow3d view PATH...``: Gaussian splats, meshes and protein backbones in a web browser.

    flow3d view scene.ply mesh.glb design.pdb [--port 8080] [--host 127.0.0.1]
    flow3d view scene.spz --screenshot shot.png          # headless Chromium, then exit

Drawing is nerfstudio's viser (``pip install 'flow3d[splat]'``): its WebGL client renders
splats (``scene.add_gaussian_splats``, DC colour), GLB meshes (``add_mesh_trimesh``) and line
segments. Each file keeps its own coordinates; the camera starts framing them all. What a file
holds is decided from its extension, and for ``.ply`` from its header: 3DGS properties
(``opacity``, ``scale_0``, ``rot_0``, ``f_dc_0``) mean splats, a ``face`` element a mesh, else a
point cloud. PDB and mmCIF files are drawn as their C-alpha trace (first model, one polyline
per chain, broken where consecutive C-alphas are over 4.2 A apart), coloured N- to C-terminus.

Every file is read before the server starts, so a bad path is a one-line error (exit 2) and no
port is opened. ``--screenshot`` asks the browser for a frame (viser's ``get_render``) once
two consecutive frames agree, writes the PNG atomically and stops the server and the browser.
"""

from __future__ import annotations

import argparse
import colorsys
import contextlib
import io
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flow3d.errors import DataError, Flow3dError
from flow3d.io import atomic_path, check_output_file
from flow3d.options import add_overwrite_flag, float_range, int_range

SPLAT_SUFFIXES = (".splat", ".spz")
MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".stl", ".off")
CIF_SUFFIXES = (".cif", ".mmcif")
PDB_SUFFIXES = (".pdb", ".ent", *CIF_SUFFIXES)
SUFFIXES = (".ply", *SPLAT_SUFFIXES, *MESH_SUFFIXES, *PDB_SUFFIXES)
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CA_BREAK = 4.2  # angstrom: a longer CA-CA step is a chain break
UP = ("+y", "-y", "+z", "-z", "+x", "-x")


@dataclass
class Item:
    """One file ready to draw: ``kind`` is splat, mesh, points or backbone."""

    path: Path
    kind: str
    data: object
    points: np.ndarray  # [M, 3] samples for framing the camera


# ---- reading ---------------------------------------------------------------------------------
def _read_splats(path: Path) -> Item:
    from flow3d.splat.formats import load_scene

    g = load_scene(path)
    return Item(path, "splat", g, g.means.detach().double().numpy())


def _read_mesh(path: Path, kind: str = "mesh") -> Item:
    try:
        import trimesh
    except ImportError:
        raise DataError(f"{path}: reading meshes needs trimesh "
                        f"(pip install 'flow3d[mesh]')") from None
    glb = kind == "mesh" and path.suffix.lower() in (".glb", ".gltf")
    try:  # a glTF scene is read whole: merging it into one mesh would drop vertex colours
        loaded = trimesh.load(str(path), force=None if glb or kind != "mesh" else "mesh")
    except Exception as e:  # trimesh raises many types for malformed files
        raise DataError(f"{path}: cannot read as a mesh ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'malformed'})") from None
    if glb and isinstance(loaded, trimesh.Scene):
        loaded = _merge_scene(loaded)
    if isinstance(loaded, trimesh.PointCloud):
        if len(loaded.vertices) == 0:
            raise DataError(f"{path}: point cloud has no points")
        return Item(path, "points", loaded, np.asarray(loaded.vertices, np.float64))
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise DataError(f"{path}: mesh has no faces")
    return Item(path, "mesh", loaded, np.asarray(loaded.vertices, np.float64))


def _merge_scene(scene):
    """One mesh of a glTF scene, each geometry moved by its node; with the vertex colours
    (``COLOR_0``, as ``flow3d appearance transfer`` writes them) when every geometry has
    them, otherwise trimesh's own merge."""
    import trimesh

    from flow3d.mesh.data import gltf_vertex_colors, scene_geometries

    parts = []
    for g, transform in scene_geometries(scene):
        rgba = gltf_vertex_colors(g)
        if rgba is None:
            return scene.to_mesh()
        part = trimesh.Trimesh(trimesh.transform_points(g.vertices, transform), g.faces,
                               process=False)
        part.visual = trimesh.visual.ColorVisuals(part, vertex_colors=rgba)
        parts.append(part)
    return trimesh.util.concatenate(parts) if parts else scene.to_mesh()


def read_ca_trace(path: Path) -> list[np.ndarray]:
    """C-alpha coordinates of the first model of a PDB or mmCIF file: one ``[L, 3]`` array
    per unbroken chain segment."""
    try:
        text = path.read_text(encoding="ascii", errors="strict")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a structure file (not ASCII text)") from None
    records = _cif_ca(path, text) if path.suffix.lower() in CIF_SUFFIXES else _pdb_ca(path, text)
    chains: dict[str, list[tuple[float, float, float]]] = {}
    seen: set[tuple[str, str]] = set()
    for chain, residue, xyz, where in records:
        if (chain, residue) in seen:  # alternate locations: keep the first
            continue
        seen.add((chain, residue))
        try:
            xyz = tuple(float(v) for v in xyz)
        except ValueError:
            raise DataError(f"{path}: {where}: CA coordinates are not numbers") from None
        if not all(np.isfinite(xyz)):
            raise DataError(f"{path}: {where}: CA coordinates are not finite")
        chains.setdefault(chain, []).append(xyz)
    if not chains:
        raise DataError(f"{path}: no CA atoms (not a protein structure file)")
    segments = []
    for coords in chains.values():
        ca = np.asarray(coords, np.float64)
        breaks = np.nonzero(np.linalg.norm(np.diff(ca, axis=0), axis=1) > CA_BREAK)[0] + 1
        segments += [s for s in np.split(ca, breaks) if len(s)]
    return segments


def _pdb_ca(path: Path, text: str):
    """(chain, residue, (x, y, z) texts, where) for each CA of the first PDB model."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("ENDMDL"):
            break
        if line.startswith(("ATOM  ", "HETATM")) and line[12:16].strip() == "CA":
            yield line[21:22], line[22:27], (line[30:38], line[38:46], line[46:54]), \
                f"line {number}"


def _cif_ca(path: Path, text: str):
    """The same from an mmCIF ``_atom_site`` loop (first ``pdbx_PDB_model_num``)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "loop_" and i + 1 < len(lines) and \
                lines[i + 1].strip().startswith("_atom_site."):
            break
        i += 1
    else:
        return
    columns = []
    i += 1
    while i < len(lines) and lines[i].strip().startswith("_atom_site."):
        columns.append(lines[i].strip().split()[0][len("_atom_site."):])
        i += 1

    def column(*names: str) -> int:
        for name in names:
            if name in columns:
                return columns.index(name)
        raise DataError(f"{path}: mmCIF _atom_site has no {names[0]} column")

    atom, x = column("label_atom_id", "auth_atom_id"), column("Cartn_x")
    y, z = column("Cartn_y"), column("Cartn_z")
    chain = column("auth_asym_id", "label_asym_id")
    seq = column("auth_seq_id", "label_seq_id")
    model = columns.index("pdbx_PDB_model_num") if "pdbx_PDB_model_num" in columns else None
    first_model = None
    for number in range(i, len(lines)):
        line = lines[number].strip()
        if not line or line.startswith(("#", "loop_", "_", "data_")):
            break
        try:
            row = shlex.split(line)
        except ValueError:
            raise DataError(f"{path}: line {number + 1}: unbalanced quotes") from None
        if len(row) != len(columns):
            raise DataError(f"{path}: line {number + 1}: {len(row)} values for "
                            f"{len(columns)} _atom_site columns")
        if model is not None:
            first_model = row[model] if first_model is None else first_model
            if row[model] != first_model:
                break
        if row[atom].strip('"') == "CA":
            yield row[chain], row[seq], (row[x], row[y], row[z]), f"line {number + 1}"


def _read_backbone(path: Path) -> Item:
    segments = read_ca_trace(path)
    return Item(path, "backbone", segments, np.concatenate(segments))


def read_item(path: str | Path) -> Item:
    """Read one file for viewing; a one-line :class:`DataError` names it if it is unusable."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: cannot view {path.suffix or 'files without an extension'} "
                        f"(use {', '.join(SUFFIXES)})")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    if suffix in SPLAT_SUFFIXES:
        return _read_splats(path)
    if suffix in PDB_SUFFIXES:
        return _read_backbone(path)
    if suffix == ".ply":
        from flow3d.splat.formats import ply_kind

        kind = ply_kind(path)
        return _read_splats(path) if kind == "splat" else _read_mesh(path, kind)
    return _read_mesh(path)


# ---- drawing ---------------------------------------------------------------------------------
def _rainbow(n: int) -> np.ndarray:
    """``[n, 3]`` uint8 colours from blue (N-terminus) to red (C-terminus)."""
    hues = np.linspace(0.66, 0.0, max(n, 1))
    return (np.array([colorsys.hsv_to_rgb(h, 0.85, 0.95) for h in hues]) * 255).astype(np.uint8)


def add_item(scene, item: Item, index: int) -> None:
    """Add ``item`` to a viser scene under ``/<index>_<file name>``."""
    name = f"/{index}_{item.path.name.replace('/', '_')}"
    if item.kind == "splat":
        import torch

        g = item.data.detach().to("cpu", torch.float32)
        if len(g):
            scene.add_gaussian_splats(
                name, centers=g.means.numpy(), covariances=g.covariances().numpy(),
                rgbs=g.dc_colors.clamp(0, 1).numpy(), opacities=g.opacities[:, None].numpy())
    elif item.kind == "mesh":
        scene.add_mesh_trimesh(name, item.data)
    elif item.kind == "points":
        colors = getattr(item.data, "colors", None)
        colors = np.asarray(colors)[:, :3] if colors is not None and len(colors) else \
            (200, 200, 200)
        extent = float(np.ptp(item.points, axis=0).max()) if len(item.points) > 1 else 1.0
        scene.add_point_cloud(name, np.asarray(item.points, np.float32), colors,
                              point_size=max(extent, 1e-6) / 200)
    elif item.kind == "backbone":
        for j, ca in enumerate(item.data):
            if len(ca) > 1:
                colors = _rainbow(len(ca) - 1)
                scene.add_line_segments(
                    f"{name}/chain{j}", np.stack([ca[:-1], ca[1:]], axis=1).astype(np.float32),
                    np.stack([colors, colors], axis=1), thickness=0.8)
            scene.add_point_cloud(f"{name}/ca{j}", ca.astype(np.float32), _rainbow(len(ca)),
                                  point_size=1.2, point_shape="circle")


def _bounds(points: np.ndarray) -> np.ndarray:
    """``[2, 3]`` low and high corners; for many points the 1% and 99% quantiles, so a few
    splat floaters do not shrink the view."""
    if len(points) >= 100:
        return np.quantile(points, [0.01, 0.99], axis=0)
    return np.stack([points.min(0), points.max(0)])


def framing(items: list[Item], fov_deg: float = 50.0, up: str = "+y"):
    """Camera ``(position, look_at)`` that frames every item."""
    boxes = np.stack([_bounds(i.points) for i in items if len(i.points)] or [np.zeros((2, 3))])
    lo, hi = boxes[:, 0].min(0), boxes[:, 1].max(0)
    center = (lo + hi) / 2
    radius = max(float(np.linalg.norm(hi - lo)) / 2, 1e-3)
    axis = "xyz".index(up[1])
    sign = 1.0 if up[0] == "+" else -1.0
    direction = np.array([0.6, 0.6, 0.6])
    direction[axis] = 0.45 * sign
    direction[(axis + 1) % 3] = 0.5
    direction[(axis + 2) % 3] = 0.75
    direction /= np.linalg.norm(direction)
    distance = 1.15 * radius / np.sin(np.radians(fov_deg) / 2)
    return center + distance * direction, center


def start_server(items: list[Item], host: str = "127.0.0.1", port: int = 8080, up: str = "+y"):
    """A running viser server showing ``items``; the caller stops it."""
    try:
        import viser
    except ImportError:
        raise Flow3dError("flow3d view needs viser (pip install 'flow3d[splat]')") from None
    with contextlib.redirect_stdout(io.StringIO()):  # viser's banner: we print our own line
        server = viser.ViserServer(host=host, port=port, verbose=False)
    server.scene.set_up_direction(up)
    position, look_at = framing(items, up=up)
    server.initial_camera.position = tuple(position)
    server.initial_camera.look_at = tuple(look_at)
    server.initial_camera.fov = float(np.radians(50.0))
    try:
        for index, item in enumerate(items):
            add_item(server.scene, item, index)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server) -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # "(viser) Server stopped"
        server.stop()


# ---- headless screenshots --------------------------------------------------------------------
def find_browser(browser: str | None = None) -> str | None:
    """The Chromium executable: ``browser`` if given, else the first on PATH."""
    if browser:
        return shutil.which(browser)
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@contextlib.contextmanager
def headless_browser(browser: str, url: str, width: int, height: int):
    """Chromium in headless mode with software WebGL (SwiftShader) showing ``url``."""
    with tempfile.TemporaryDirectory(prefix="flow3d-chromium-") as profile:
        cmd = [browser, "--headless=new", "--no-sandbox", "--use-angle=swiftshader",
               "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist", "--no-first-run",
               "--no-default-browser-check", "--disable-extensions", "--mute-audio",
               f"--user-data-dir={profile}", f"--window-size={width},{height}",
               "--remote-debugging-port=0", url]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            yield proc
        finally:  # the browser and its renderer/GPU children: the session started above
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def capture(server, browser: str, width: int, height: int, timeout: float,
            settle: float = 1.0) -> np.ndarray:
    """An ``[H, W, 3]`` uint8 frame of ``server``'s scene rendered by headless Chromium,
    taken once two frames ``settle`` seconds apart agree (splats sorted, GLBs decoded)."""
    host = server.get_host()
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{host}:{server.get_port()}/"
    deadline = time.monotonic() + timeout
    # a browser that closes its spare sockets makes websockets log handshake tracebacks
    quiet = logging.getLogger("websockets")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return _capture(server, browser, url, width, height, deadline, timeout, settle)
    finally:
        quiet.setLevel(level)


def _capture(server, browser, url, width, height, deadline, timeout, settle) -> np.ndarray:
    with headless_browser(browser, url, width, height) as proc:
        while not server.get_clients():
            if proc.poll() is not None:
                raise Flow3dError(f"--screenshot: {browser} exited with status "
                                  f"{proc.returncode} before connecting")
            if time.monotonic() > deadline:
                raise Flow3dError(f"--screenshot: {browser} did not connect to {url} within "
                                  f"{timeout:g} s")
            time.sleep(0.1)
        client = next(iter(server.get_clients().values()))
        previous = None
        while True:
            time.sleep(settle)
            left = deadline - time.monotonic()
            if left <= 0:
                raise Flow3dError(f"--screenshot: no stable frame within {timeout:g} s")
            frame = _render(client, width, height, left)
            if previous is not None and np.abs(frame.astype(int) - previous).mean() < 0.25:
                return frame
            previous = frame.astype(int)


def _render(client, width: int, height: int, timeout: float) -> np.ndarray:
    """A ``[height, width, 3]`` frame. The render keeps the browser canvas's aspect ratio
    (headless Chromium's canvas is not the window size), so render at that aspect, covering
    the requested size, and crop the centre: never stretched."""
    aspect = float(client.camera.aspect) or width / height
    w, h = width, max(height, round(width / aspect))
    if h > round(width / aspect):  # the canvas is wider than asked: cover the height instead
        w, h = max(width, round(height * aspect)), height
    rgba = client.get_render(h, w, transport_format="png", timeout=timeout)
    top, left = (rgba.shape[0] - height) // 2, (rgba.shape[1] - width) // 2
    return _over_white(rgba[top:top + height, left:left + width])


def _over_white(rgba: np.ndarray) -> np.ndarray:
    if rgba.shape[-1] == 3:
        return rgba.astype(np.uint8)
    alpha = rgba[..., 3:].astype(np.float64) / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)


def write_png(image: np.ndarray, path: Path) -> Path:
    import matplotlib.image

    with atomic_path(path) as tmp:
        matplotlib.image.imsave(tmp, image, format="png")
    return path


# ---- command ---------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help=f"files to show: {', '.join(SUFFIXES)}")
    p.add_argument("--port", type=int_range(1, 65535), default=8080,
                   help="port to serve on (the next free one if taken)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0 exposes the viewer to the network)")
    p.add_argument("--up", choices=UP, default="+y",
                   help="the world's up axis (flow3d scenes and GLB meshes: +y)")
    p.add_argument("--screenshot", metavar="PNG",
                   help="render one frame in headless Chromium, write it here and exit")
    p.add_argument("--size", type=int_range(16, 4096), nargs=2, default=(800, 600),
                   metavar=("W", "H"), help="screenshot size in pixels")
    p.add_argument("--browser", help="Chromium executable for --screenshot; None: the first "
                                     f"of {', '.join(BROWSERS)} on PATH")
    p.add_argument("--timeout", type=float_range(1, 3600), default=120.0,
                   help="seconds --screenshot may take")
    add_overwrite_flag(p)


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "show splats, meshes and protein backbones in a web browser"
    p = subparsers.add_parser("view", help=help_text, description=help_text,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    browser = None
    if args.screenshot is not None:
        out = check_output_file(args.screenshot, "--screenshot", overwrite=args.overwrite,
                                suffixes=(".png",))
        browser = find_browser(args.browser)
        if browser is None:
            wanted = args.browser or " or ".join(BROWSERS)
            raise Flow3dError(f"--screenshot needs Chromium: {wanted} not found on PATH "
                              f"(apt-get install chromium)")
    items = [read_item(path) for path in args.paths]
    server = start_server(items, host=args.host, port=args.port, up=args.up)
    try:
        if browser is not None:
            width, height = args.size
            write_png(capture(server, browser, width, height, args.timeout), out)
            print(out)  # noqa: T201
            return 0
        host = "localhost" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
        # Ctrl-C is caught from before the address is printed: a user (or a test) may press it
        # as soon as the line appears, while the server's threads still hold the GIL
        with contextlib.suppress(KeyboardInterrupt):
            print(f"flow3d view: http://{host}:{server.get_port()}/ (Ctrl-C to stop)",  # noqa: T201
                  flush=True)
            while True:
                time.sleep(3600)
        return 0
    finally:
        stop_server(server)
