"""`flow3d mesh ...`: user errors are one line with a non-zero exit; bundled checkpoints run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flow3d.cli import main

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "checkpoints" / "mesh"
DEMO_IMAGE = ROOT / "examples" / "mesh" / "capod_heldout_view.png"


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("flow3d: error:"), err
    return lines[0]


def test_generate_missing_image(tmp_path, capsys):
    code, _, err = run(["mesh", "generate", "--image", str(tmp_path / "nope.png"),
                        "--out", str(tmp_path / "m.glb")], capsys)
    assert code != 0
    assert "nope.png" in one_line_error(err)
    assert not (tmp_path / "m.glb").exists()


def test_generate_bad_output_format_and_resolution(tmp_path, capsys):
    img = tmp_path / "a.png"
    img.write_bytes(b"")
    code, _, err = run(["mesh", "generate", "--image", str(img), "--out", str(tmp_path / "m.txt")],
                       capsys)
    assert code != 0 and "unsupported extension '.txt'" in one_line_error(err)
    code, _, err = run(["mesh", "generate", "--image", str(img), "--out", str(tmp_path / "m.glb"),
                        "--resolution", "100"], capsys)
    assert code != 0 and "--resolution" in one_line_error(err)


def test_generate_needs_image_or_class(tmp_path, capsys):
    code, _, err = run(["mesh", "generate", "--out", str(tmp_path / "m.glb")], capsys)
    assert code != 0 and "--image" in one_line_error(err)


def test_generate_unreadable_image(tmp_path, capsys):
    if not (CKPT / "flow_image").exists():
        pytest.skip("bundled checkpoints/mesh/flow_image not present")
    img = tmp_path / "broken.png"
    img.write_bytes(b"not a png at all")
    code, _, err = run(["mesh", "generate", "--image", str(img), "--out", str(tmp_path / "m.glb")],
                       capsys)
    assert code != 0 and "broken.png" in one_line_error(err)


@pytest.mark.parametrize("content", [b"", b"v 0 0 0\nv 1 0 0\n", b"f 1 2 3\n"])
def test_reconstruct_bad_mesh(tmp_path, capsys, content):
    bad = tmp_path / "bad.obj"
    bad.write_bytes(content)
    code, _, err = run(["mesh", "reconstruct", str(bad), "--out", str(tmp_path / "o.glb")], capsys)
    assert code != 0
    assert "bad.obj" in one_line_error(err)
    assert not (tmp_path / "o.glb").exists()


def test_reconstruct_empty_decode_names_the_input(tmp_path, capsys, monkeypatch):
    """A mesh the VAE decodes to nothing is reported against the user's file, not written."""
    trimesh = pytest.importorskip("trimesh")
    if not (CKPT / "vae_cpu").exists():
        pytest.skip("bundled checkpoints/mesh/vae_cpu not present")
    import flow3d.mesh.pipeline as pipeline
    from flow3d.errors import DataError

    def empty_decode(*args, **kwargs):
        raise DataError("the decoded SDF has no zero level set inside the box (empty mesh)")

    monkeypatch.setattr(pipeline, "sdf_to_mesh", empty_decode)
    path = tmp_path / "thin.ply"
    trimesh.creation.box((1.0, 1.0, 0.01)).export(path)
    code, _, err = run(["mesh", "reconstruct", str(path), "--out", str(tmp_path / "o.glb"),
                        "--vae", str(CKPT / "vae_cpu")], capsys)
    assert code != 0
    line = one_line_error(err)
    assert "thin.ply" in line and "empty mesh" in line
    assert not (tmp_path / "o.glb").exists()


def test_reconstruct_defaults_to_the_sparse_voxel_vae(tmp_path, capsys):
    """The bundled sparse-voxel VAE reconstructs a box closed, in its own coordinates; it has no
    --latents (one latent per active voxel), which is a one-line error."""
    trimesh = pytest.importorskip("trimesh")
    if not (CKPT / "svae_cpu").exists():
        pytest.skip("bundled checkpoints/mesh/svae_cpu not present")
    path = tmp_path / "box.ply"
    box = trimesh.creation.box((2.0, 1.0, 0.6))
    box.apply_translation((5.0, 0.0, 0.0))
    box.export(path)
    out = tmp_path / "o.glb"
    code, _, err = run(["mesh", "reconstruct", str(path), "--out", str(out)], capsys)
    assert code == 0, err
    recon = trimesh.load(out, force="mesh")
    assert recon.is_watertight
    np.testing.assert_allclose(recon.bounds, box.bounds, atol=0.06)
    code, _, err = run(["mesh", "reconstruct", str(path), "--out", str(tmp_path / "x.glb"),
                        "--latents", "16"], capsys)
    assert code == 2 and "--latents" in one_line_error(err)
    assert not (tmp_path / "x.glb").exists()


def test_eval_missing_mesh(tmp_path, capsys):
    code, _, err = run(["mesh", "eval", str(tmp_path / "p.obj"), str(tmp_path / "g.obj")], capsys)
    assert code != 0 and "p.obj" in one_line_error(err)


def test_eval_identical_meshes(tmp_path, capsys):
    trimesh = pytest.importorskip("trimesh")
    path = tmp_path / "box.obj"
    trimesh.creation.box((1.0, 2.0, 0.5)).export(path)
    code, out, _ = run(["mesh", "eval", str(path), str(path), "--points", "5000",
                        "--png", str(tmp_path / "t.png"), "--json", str(tmp_path / "m.json")],
                       capsys)
    assert code == 0
    assert "fscore@0.02 | 1.00000" in out
    assert (tmp_path / "t.png").stat().st_size > 0 and (tmp_path / "m.json").exists()


def test_reconstruct_keeps_input_coordinates(tmp_path, capsys):
    trimesh = pytest.importorskip("trimesh")
    if not (CKPT / "vae_cpu").exists():
        pytest.skip("bundled checkpoints/mesh/vae_cpu not present")
    src = trimesh.creation.box((4.0, 2.0, 2.0))
    src.apply_translation([10.0, -3.0, 1.0])
    moved = src.copy()  # the same shape, 3x larger, elsewhere
    moved.apply_scale(3.0)
    moved.apply_translation([-40.0, 5.0, 7.0])
    recs = []
    for name, mesh in (("box", src), ("moved", moved)):
        path = tmp_path / f"{name}.ply"
        mesh.export(path)
        out = tmp_path / f"{name}_recon.obj"
        code, _, err = run(["mesh", "reconstruct", str(path), "--out", str(out),
                            "--resolution", "64"], capsys)
        assert code == 0, err
        recs.append(trimesh.load(out, force="mesh", process=False))
    rec, rec_moved = recs
    # the pipeline works in the normalised frame, so the output follows the input exactly:
    # the moved input gives the same reconstruction, moved the same way
    assert len(rec.vertices) == len(rec_moved.vertices)
    np.testing.assert_allclose(rec_moved.vertices, rec.vertices * 3.0 + [-40.0, 5.0, 7.0],
                               atol=1e-3 * 12.0)
    # and it lies where the input is (within the model's error on a shape it never saw)
    np.testing.assert_allclose(rec.bounds.mean(0), src.bounds.mean(0), atol=1.0)


@pytest.mark.parametrize("generator", ["structure_image", "flow_image"])
def test_generate_with_bundled_checkpoint(generator, tmp_path, capsys):
    """The two-stage sparse-voxel and the vector-set generator both write a closed mesh within
    the face budget."""
    needed = ["structure_image", "slat"] if generator == "structure_image" else ["flow_image"]
    if not all((CKPT / n).exists() for n in needed) or not DEMO_IMAGE.exists():
        pytest.skip(f"bundled checkpoints {needed} or the example image not present")
    trimesh = pytest.importorskip("trimesh")
    out = tmp_path / "m.glb"
    extra = ["--ckpt", str(CKPT / generator)]
    code, stdout, err = run(["mesh", "generate", "--image", str(DEMO_IMAGE), "--out", str(out),
                             "--steps", "8", "--resolution", "64", "--faces", "3000", *extra],
                            capsys)
    assert code == 0, err
    mesh = trimesh.load(out, force="mesh")
    assert 0 < len(mesh.faces) <= 3000
    assert mesh.is_watertight


@pytest.mark.parametrize("command", ["generate", "reconstruct", "eval"])
def test_help_shows_defaults(command, capsys):
    with pytest.raises(SystemExit) as info:
        main(["mesh", command, "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    expected = {"generate": ["ODE solver steps (the latent stage takes half as many) (default: "
                             "50)", "default 3 two-stage, 5 vector-set", "(default: 256)",
                             "(default: 50000)", "(default: euler)"],
                "reconstruct": ["(default: 128)", "default: 8192 sparse-voxel"],
                "eval": ["(default: normalized)", "(default: 100000)"]}[command]
    for text in expected:
        assert text in out, text
