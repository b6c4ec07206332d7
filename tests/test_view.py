"""`flow3d view`: what each file is read as, the CA trace, and a headless-Chromium screenshot
that shows a splat and a mesh."""

from __future__ import annotations

import socket

import numpy as np
import plyfile
import pytest
import torch

from flow3d import cli, view
from flow3d.splat import Gaussians
from flow3d.splat.formats import write_ply, write_splat

MAGENTA = (1.0, 0.0, 1.0)


def helix_pdb(path, n=20, chain="A", gap_after=None, extra=""):
    lines = []
    for i in range(n):
        t = np.radians(100 * i)
        z = 1.5 * i + (20.0 if gap_after is not None and i > gap_after else 0.0)
        x, y = 2.3 * np.cos(t), 2.3 * np.sin(t)
        lines.append(f"ATOM  {i + 1:5d}  CA  ALA {chain}{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}"
                     "  1.00  0.00           C")
    path.write_text("\n".join(lines) + "\n" + extra + "END\n")
    return path


def splat_blob(n=1500, center=(-1.0, 0.0, 0.0), color=MAGENTA) -> Gaussians:
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(n, 3, generator=g) * 0.3 + torch.tensor(center)
    return Gaussians.from_points(pts, torch.tensor([color]).expand(n, 3), scale=0.05,
                                 opacity=0.9)


def test_files_are_read_by_kind(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    write_ply(splat_blob(50), tmp_path / "s.ply")
    write_splat(splat_blob(50), tmp_path / "s.splat")
    box = trimesh.creation.box()
    box.export(tmp_path / "m.ply")
    box.export(tmp_path / "m.glb")
    box.export(tmp_path / "m.obj")
    pts = np.zeros(4, [("x", "f4"), ("y", "f4"), ("z", "f4")])
    pts["x"] = np.arange(4)
    plyfile.PlyData([plyfile.PlyElement.describe(pts, "vertex")]).write(str(tmp_path / "p.ply"))
    helix_pdb(tmp_path / "b.pdb")
    kinds = {name: view.read_item(tmp_path / name).kind
             for name in ("s.ply", "s.splat", "m.ply", "m.glb", "m.obj", "p.ply", "b.pdb")}
    assert kinds == {"s.ply": "splat", "s.splat": "splat", "m.ply": "mesh", "m.glb": "mesh",
                     "m.obj": "mesh", "p.ply": "points", "b.pdb": "backbone"}


def test_vertex_coloured_glb_keeps_its_colours(tmp_path):
    """A GLB with vertex colours (COLOR_0, as `flow3d appearance transfer` writes) is shown
    coloured, in its node's placement."""
    trimesh = pytest.importorskip("trimesh")
    from flow3d.mesh.postprocess import export_mesh

    mesh = trimesh.creation.icosphere(1)
    rgba = np.tile(np.array([[200, 40, 10, 255]], np.uint8), (len(mesh.vertices), 1))
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=rgba)
    export_mesh(mesh, tmp_path / "c.glb")
    item = view.read_item(tmp_path / "c.glb")
    assert item.kind == "mesh" and item.data.visual.kind == "vertex"
    assert np.array_equal(np.asarray(item.data.visual.vertex_colors), rgba)
    np.testing.assert_allclose(item.data.bounds, mesh.bounds, atol=1e-6)


def test_ca_trace_breaks_chains_and_keeps_the_first_model(tmp_path):
    path = helix_pdb(tmp_path / "b.pdb", n=12, gap_after=4,
                     extra="ENDMDL\nMODEL        2\n" + "ATOM      1  CA  ALA B   1"
                           "       0.000   0.000   0.000  1.00  0.00           C\n")
    segments = view.read_ca_trace(path)
    assert [len(s) for s in segments] == [5, 7]
    steps = np.linalg.norm(np.diff(segments[0], axis=0), axis=1)
    assert np.all((steps > 3.7) & (steps < 3.9))


def test_ca_trace_of_pdb_and_mmcif_written_by_the_protein_head(tmp_path):
    pdbio = pytest.importorskip("protein.pdbio")
    g = torch.Generator().manual_seed(0)
    ca = torch.cumsum(torch.nn.functional.normalize(torch.randn(2, 15, 3, generator=g), dim=-1)
                      * 3.8, dim=1)
    atoms = ca[:, :, None, :] + torch.randn(2, 15, 4, 3, generator=g) * 0.5
    atoms[:, :, 1] = ca  # N, CA, C, O: CA exact; two models (a trajectory)
    for name in ("t.pdb", "t.cif"):
        pdbio.write_backbone(tmp_path / name, atoms)
        segments = view.read_ca_trace(tmp_path / name)
        assert len(segments) == 1
        np.testing.assert_allclose(segments[0], ca[0].numpy(), atol=1e-3)  # first model
    assert view.read_item(tmp_path / "t.cif").kind == "backbone"


def test_framing_sees_every_item(tmp_path):
    items = [view.Item(tmp_path, "splat", None, np.random.default_rng(0).normal(size=(5000, 3))),
             view.Item(tmp_path, "mesh", None, np.array([[10.0, 0, 0], [12.0, 1, 1]]))]
    position, look_at = view.framing(items)
    assert 4.0 < look_at[0] < 7.0  # between the blob at 0 and the mesh at 10-12
    assert np.linalg.norm(position - look_at) > 6.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_screenshot_in_headless_chromium_shows_the_splat_and_the_mesh(tmp_path, capsys):
    pytest.importorskip("viser", reason="flow3d view needs viser (pip install 'flow3d[splat]')")
    trimesh = pytest.importorskip("trimesh")
    if view.find_browser() is None:
        pytest.skip("headless screenshot needs Chromium (apt-get install chromium)")
    write_ply(splat_blob(), tmp_path / "blob.ply")
    box = trimesh.creation.box(extents=(0.8, 0.8, 0.8))
    box.apply_translation((1.0, 0.0, 0.0))
    box.visual.face_colors = [0, 200, 0, 255]
    box.export(tmp_path / "box.glb")
    shot = tmp_path / "shot.png"
    code = cli.main(["view", str(tmp_path / "blob.ply"), str(tmp_path / "box.glb"),
                     "--screenshot", str(shot), "--size", "320", "240", "--port",
                     str(_free_port()), "--timeout", "90"])
    assert code == 0, capsys.readouterr().err
    import matplotlib.image

    rgb = (matplotlib.image.imread(shot)[..., :3] * 255).astype(int)
    assert rgb.shape == (240, 320, 3)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    magenta = (r > 180) & (b > 180) & (g < 90)
    green = (g > 120) & (r < 130) & (b < 100)
    background = (r > 240) & (g > 240) & (b > 240)
    assert magenta.mean() > 0.02, f"splat not drawn: {magenta.mean():.4f} magenta"
    assert green.mean() > 0.02, f"mesh not drawn: {green.mean():.4f} green"
    assert background.mean() > 0.3  # the empty-scene background elsewhere
    # the splat is left of the mesh, as placed in the scene
    cols = np.arange(320)
    assert cols[magenta.any(0)].mean() < cols[green.any(0)].mean()


def test_viewer_serves_until_ctrl_c(tmp_path):
    """`flow3d view` serves the viser client on 127.0.0.1 and exits 0 on Ctrl-C."""
    pytest.importorskip("viser", reason="flow3d view needs viser (pip install 'flow3d[splat]')")
    import select
    import signal
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    write_ply(splat_blob(100), tmp_path / "blob.ply")
    port = _free_port()
    root = Path(view.__file__).resolve().parents[1]  # this checkout's flow3d
    # Ctrl-C's default action in the viewer even when this suite runs as a background job
    # (a shell starts those with SIGINT ignored, and a child inherits that)
    proc = subprocess.Popen([sys.executable, "-m", "flow3d", "view", str(tmp_path / "blob.ply"),
                             "--port", str(port)], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "flow3d view printed nothing in 60 s"
        line = proc.stdout.readline()  # printed once the scene is loaded and served
        assert f"http://localhost:{port}/" in line, proc.stderr.read()
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).status == 200
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and err == "", err
