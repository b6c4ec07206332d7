"""Every ``flow3d mesh`` command against the families of bad input: one line naming the option
or file, exit status 2, nothing written, and (for input and option errors) no model loaded.

Families: bad output paths (unwritable, a folder, the parent a file, empty, existing without
--overwrite), bad numbers (NaN, zero, negative, huge, not a number), bad input files (empty,
binary, truncated, point clouds, folders, images without an object or of absurd size), and
options that contradict each other or the checkpoint.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from contract import assert_user_error

trimesh = pytest.importorskip("trimesh")

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "checkpoints" / "mesh"
IMAGE = ROOT / "examples" / "mesh" / "capod_heldout_view.png"
EDGE = ROOT / ".." / "shared" / "data" / "meshes" / "trimesh_models" / "edge_cases"
needs_edge_cases = pytest.mark.skipif(not EDGE.is_dir(), reason="no shared edge-case meshes")
needs_checkpoints = pytest.mark.skipif(
    not all((CKPT / n).is_dir() for n in ("flow_image", "flow_class", "vae_cpu", "slat",
                                          "structure_image", "structure_class")),
    reason="bundled mesh checkpoints not present",
)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with almost no pixel data: a reader that
    decodes before checking the size would fail (or take gigabytes) instead of refusing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.fixture
def box(tmp_path) -> Path:
    path = tmp_path / "box.obj"
    trimesh.creation.box((1.0, 2.0, 0.5)).export(path)
    return path


@pytest.fixture
def no_models(monkeypatch):
    """Input and option errors must be found before any checkpoint is read."""
    import flow3d.mesh.pipeline as pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(pipeline, "load_model", refuse)


def _images(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the error must say)."""
    from PIL import Image

    out = {}
    for name, make, says in [
        ("blank.png", lambda p: Image.new("RGB", (64, 64), "white").save(p), "no object"),
        ("clear.png", lambda p: Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(p),
         "fully transparent"),
        ("dot.png", lambda p: Image.new("RGB", (1, 1), "red").save(p), "1x1 pixels"),
        ("huge.png", lambda p: p.write_bytes(png_claiming(20000, 20000)), "20000x20000"),
        ("cut.png", lambda p: p.write_bytes(IMAGE.read_bytes()[:300]), "cannot read image"),
        ("text.png", lambda p: p.write_text("not an image\n"), "not an image"),
        ("empty.png", lambda p: p.write_bytes(b""), "not an image"),
    ]:
        path = tmp_path / "in" / name
        path.parent.mkdir(exist_ok=True)
        make(path)
        out[name] = (path, says)
    return out


# ---- generate ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["blank.png", "clear.png", "dot.png", "huge.png", "cut.png",
                                  "text.png", "empty.png"])
def test_generate_bad_images(name, tmp_path, capsys, no_models):
    path, says = _images(tmp_path)[name]
    line = assert_user_error(["mesh", "generate", "--image", path, "--out", tmp_path / "m.glb"],
                             capsys, mentions=[name, says], watch=[tmp_path])
    assert "RGB" not in line


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--steps", "0", "--steps = 0: must be at least 1"),
    ("--steps", "-5", "--steps = -5: must be at least 1"),
    ("--steps", "1e9", "--steps"),
    ("--steps", "ten", "--steps"),
    ("--cfg", "nan", "--cfg = nan: must be a finite number"),
    ("--cfg", "inf", "--cfg = inf"),
    ("--cfg", "-1", "--cfg = -1"),
    ("--cfg", "1e38", "--cfg"),
    ("--faces", "0", "--faces = 0"),
    ("--faces", "-100", "--faces"),
    ("--resolution", "100", "--resolution = 100: must be a power of two"),
    ("--resolution", "0", "--resolution"),
    ("--resolution", "4096", "--resolution"),
    ("--seed", "-1", "--seed"),
    ("--method", "eulr", "did you mean 'euler'"),
    ("--class", "sofa", "--class 'sofa': not a CAPOD class"),
])
def test_generate_bad_numbers_and_names(flag, value, says, tmp_path, capsys, no_models):
    argv = ["mesh", "generate", "--out", tmp_path / "m.glb", flag, value]
    if flag != "--class":
        argv += ["--image", IMAGE]
    assert_user_error(argv, capsys, mentions=[says], watch=[tmp_path])


def test_generate_image_and_class_together_is_an_error(tmp_path, capsys, no_models):
    assert_user_error(["mesh", "generate", "--image", IMAGE, "--class", "chair",
                       "--out", tmp_path / "m.glb"], capsys,
                      mentions=["--image and --class cannot be combined"], watch=[tmp_path])


def test_generate_needs_a_condition(tmp_path, capsys, no_models):
    assert_user_error(["mesh", "generate", "--out", tmp_path / "m.glb"], capsys,
                      mentions=["--image"], watch=[tmp_path])


def test_generate_missing_image_or_a_folder(tmp_path, capsys, no_models):
    assert_user_error(["mesh", "generate", "--image", tmp_path / "nope.png", "--out",
                       tmp_path / "m.glb"], capsys, mentions=["nope.png", "not found"],
                      watch=[tmp_path])
    assert_user_error(["mesh", "generate", "--image", tmp_path, "--out", tmp_path / "m.glb"],
                      capsys, mentions=["--image", "is a folder"], watch=[tmp_path])


def _bad_outputs(tmp_path: Path, suffix: str) -> list[tuple[str, list[str]]]:
    (tmp_path / f"taken{suffix}").mkdir(exist_ok=True)
    (tmp_path / "file.txt").write_text("x")
    existing = tmp_path / f"existing{suffix}"
    existing.write_text("keep me")
    return [
        ("", ["an output path is required"]),
        (str(tmp_path / f"taken{suffix}"), ["is a folder"]),
        (str(tmp_path / "file.txt" / f"m{suffix}"), ["file.txt is a file"]),
        ("/proc/flow3d_contract" + suffix, ["cannot write"]),
        (str(existing), ["file exists; pass --overwrite"]),
        (str(tmp_path / "m.txt"), ["unsupported extension"]),
    ]


@pytest.mark.parametrize("case", range(6))
def test_generate_bad_outputs(case, tmp_path, capsys, no_models):
    out, says = _bad_outputs(tmp_path, ".glb")[case]
    assert_user_error(["mesh", "generate", "--image", IMAGE, "--out", out], capsys,
                      mentions=["--out", *says], watch=[tmp_path])
    png, says = _bad_outputs(tmp_path, ".png")[case]
    assert_user_error(["mesh", "generate", "--image", IMAGE, "--out", tmp_path / "new.glb",
                       "--png", png], capsys, mentions=["--png", *says], watch=[tmp_path])


@needs_checkpoints
@pytest.mark.parametrize(("argv", "says"), [
    (["--image", IMAGE, "--ckpt", CKPT / "vae_cpu"],
     "a 'mesh_vae' checkpoint, not a generator (mesh_structure or mesh_flow)"),
    (["--image", IMAGE, "--ckpt", CKPT / "structure_image", "--latent-ckpt", "no/such/slat"],
     "no/such/slat: latent-flow checkpoint not found"),
    (["--image", IMAGE, "--ckpt", CKPT / "flow_image", "--latent-ckpt", CKPT / "slat"],
     "--latent-ckpt"),
    (["--image", IMAGE, "--ckpt", CKPT / "flow_class"], "class-conditioned model: give --class"),
    (["--class", "chair", "--ckpt", CKPT / "flow_image"], "image-conditioned model"),
    (["--class", "99"], "--class 99: this model has classes 0 to 14"),
    (["--image", IMAGE, "--ckpt", "no/such/ckpt"], "no/such/ckpt: checkpoint not found"),
])
def test_generate_options_that_contradict_the_checkpoint(argv, says, tmp_path, capsys):
    assert_user_error(["mesh", "generate", "--out", tmp_path / "m.glb", *argv], capsys,
                      mentions=[says], watch=[tmp_path])


# ---- reconstruct -------------------------------------------------------------------------------
@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--latents", "0", "--latents = 0: must be at least 1"),
    ("--latents", "-3", "--latents"),
    ("--latents", "100000", "--latents = 100000: must be at most 4096"),
    ("--latents", "nan", "--latents"),
    ("--points", "0", "--points"),
    ("--resolution", "48", "--resolution = 48"),
    ("--seed", "-1", "--seed"),
])
def test_reconstruct_bad_numbers(flag, value, says, box, tmp_path, capsys, no_models):
    assert_user_error(["mesh", "reconstruct", box, "--out", tmp_path / "o.glb", flag, value],
                      capsys, mentions=[says], watch=[tmp_path])


@pytest.mark.parametrize("case", range(6))
def test_reconstruct_bad_outputs(case, box, tmp_path, capsys, no_models):
    out, says = _bad_outputs(tmp_path, ".glb")[case]
    assert_user_error(["mesh", "reconstruct", box, "--out", out], capsys,
                      mentions=["--out", *says], watch=[tmp_path])


def _bad_meshes(tmp_path: Path) -> dict[str, str]:
    """file name -> what the error must say (made here; the shared edge cases are below)."""
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in" / "empty.obj").write_bytes(b"")
    (tmp_path / "in" / "binary.obj").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "in" / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    (tmp_path / "in" / "faces_only.obj").write_text("f 1 2 3\n")
    good = trimesh.creation.icosphere(2).export(file_type="glb")
    (tmp_path / "in" / "cut.glb").write_bytes(good[: len(good) // 2])
    (tmp_path / "in" / "nan.obj").write_text("v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    return {"empty.obj": "empty file", "binary.obj": "binary.obj", "points.obj": "points.obj",
            "faces_only.obj": "faces_only.obj", "cut.glb": "cut.glb", "nan.obj": "NaN"}


@pytest.mark.parametrize("name", ["empty.obj", "binary.obj", "points.obj", "faces_only.obj",
                                  "cut.glb", "nan.obj"])
def test_reconstruct_bad_meshes(name, tmp_path, capsys, no_models):
    says = _bad_meshes(tmp_path)[name]
    assert_user_error(["mesh", "reconstruct", tmp_path / "in" / name, "--out",
                       tmp_path / "o.glb"], capsys, mentions=[name, says], watch=[tmp_path])


@needs_edge_cases
@pytest.mark.parametrize("name", ["empty.obj", "empty.ply", "empty.stl", "points_ascii.ply",
                                  "points_bin.ply"])
def test_reconstruct_shared_edge_cases(name, tmp_path, capsys, no_models):
    assert_user_error(["mesh", "reconstruct", EDGE / name, "--out", tmp_path / "o.glb"], capsys,
                      mentions=[name], watch=[tmp_path])


def test_reconstruct_a_folder_or_missing_mesh(tmp_path, capsys, no_models):
    assert_user_error(["mesh", "reconstruct", tmp_path, "--out", tmp_path / "o.glb"], capsys,
                      mentions=["is a folder"], watch=[tmp_path])
    assert_user_error(["mesh", "reconstruct", tmp_path / "gone.obj", "--out",
                       tmp_path / "o.glb"], capsys, mentions=["gone.obj", "not found"],
                      watch=[tmp_path])


@needs_checkpoints
def test_reconstruct_with_a_flow_checkpoint(box, tmp_path, capsys):
    assert_user_error(["mesh", "reconstruct", box, "--out", tmp_path / "o.glb", "--vae",
                       CKPT / "flow_image"], capsys,
                      mentions=["a 'mesh_flow' checkpoint, not an SDF-VAE"], watch=[tmp_path])


# ---- edit --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "says"), [
    ("0,0,0,1,1", "six numbers x0,y0,z0,x1,y1,z1 are needed, got 5"),
    ("a,b,c,d,e,f", "six comma-separated numbers"),
    ("nan,0,0,1,1,1", "finite"),
    ("0,0,0,0,1,1", "empty along x"),
    ("0,0.5,0,1,0.2,1", "inverted along y"),
    ("-2,0,0,1,1,1", "outside [-1, 1]"),
    ("-1,-1,-1,1,1,1.5", "outside [-1, 1]"),
])
def test_edit_bad_boxes(value, says, box, tmp_path, capsys, no_models):
    """Leading minus signs included: `--box -2,...` is read as the option's value."""
    assert_user_error(["mesh", "edit", box, "--box", value, "--class", "chair", "--out",
                       tmp_path / "o.glb"], capsys, mentions=["--box", says], watch=[tmp_path])


@pytest.mark.parametrize(("argv", "says"), [
    ([], "give --class NAME or --image PNG"),
    (["--class", "teapot"], "--class 'teapot': not a CAPOD class"),
    (["--class", "chair", "--image", IMAGE], "cannot be combined"),
    (["--class", "chair", "--steps", "0"], "--steps"),
    (["--class", "chair", "--cfg", "nan"], "--cfg"),
    (["--class", "chair", "--resolution", "100"], "--resolution"),
    (["--image", "no/such.png"], "no/such.png"),
])
def test_edit_bad_conditions_and_numbers(argv, says, box, tmp_path, capsys, no_models):
    assert_user_error(["mesh", "edit", box, "--box", "0,0,0,1,1,1", "--out", tmp_path / "o.glb",
                       *argv], capsys, mentions=[says], watch=[tmp_path])


@pytest.mark.parametrize("name", ["empty.obj", "points.obj", "nan.obj", "cut.glb"])
def test_edit_bad_meshes(name, tmp_path, capsys, no_models):
    says = _bad_meshes(tmp_path)[name]
    assert_user_error(["mesh", "edit", tmp_path / "in" / name, "--box", "0,0,0,1,1,1",
                       "--class", "chair", "--out", tmp_path / "o.glb"], capsys,
                      mentions=[name, says], watch=[tmp_path])


def test_edit_image_without_an_object(box, tmp_path, capsys, no_models):
    path, says = _images(tmp_path)["blank.png"]
    assert_user_error(["mesh", "edit", box, "--box", "0,0,0,1,1,1", "--image", path, "--out",
                       tmp_path / "o.glb"], capsys, mentions=["blank.png", says],
                      watch=[tmp_path])


@pytest.mark.parametrize("case", range(6))
def test_edit_bad_outputs(case, box, tmp_path, capsys, no_models):
    out, says = _bad_outputs(tmp_path, ".glb")[case]
    assert_user_error(["mesh", "edit", box, "--box", "0,0,0,1,1,1", "--class", "chair",
                       "--out", out], capsys, mentions=["--out", *says], watch=[tmp_path])


# ---- eval --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["empty.obj", "binary.obj", "points.obj", "cut.glb"])
def test_eval_bad_meshes(name, box, tmp_path, capsys):
    _bad_meshes(tmp_path)
    bad = tmp_path / "in" / name
    for argv in (["mesh", "eval", bad, box], ["mesh", "eval", box, bad]):
        assert_user_error(argv, capsys, mentions=[name], watch=[tmp_path])


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--points", "0", "--points = 0"),
    ("--points", "1e12", "--points"),
    ("--points", "many", "--points"),
    ("--frame", "world", "--frame"),
])
def test_eval_bad_options(flag, value, says, box, tmp_path, capsys):
    assert_user_error(["mesh", "eval", box, box, flag, value], capsys, mentions=[says],
                      watch=[tmp_path])


@pytest.mark.parametrize("case", range(6))
def test_eval_bad_outputs(case, box, tmp_path, capsys):
    out, says = _bad_outputs(tmp_path, ".json")[case]
    assert_user_error(["mesh", "eval", box, box, "--json", out], capsys,
                      mentions=["--json", *says], watch=[tmp_path])
    png, says = _bad_outputs(tmp_path, ".png")[case]
    assert_user_error(["mesh", "eval", box, box, "--png", png], capsys,
                      mentions=["--png", *says], watch=[tmp_path])


def test_eval_overwrite_replaces_and_reports_the_frame(box, tmp_path, capsys):
    import json

    from flow3d.cli import main

    report = tmp_path / "m.json"
    report.write_text("old")
    argv = ["mesh", "eval", str(box), str(box), "--points", "2000", "--json", str(report)]
    assert main([*argv, "--overwrite", "--frame", "each"]) == 0
    out = capsys.readouterr().out
    assert "frame: each" in out and "fscore@0.02 | 1.00000" in out
    saved = json.loads(report.read_text())
    assert saved["frame"] == "each" and saved["fscore@0.02"] == 1.0


# ---- retrieve ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["blank.png", "clear.png", "dot.png", "huge.png", "cut.png",
                                  "text.png", "empty.png"])
def test_retrieve_bad_images(name, tmp_path, capsys, no_models):
    path, says = _images(tmp_path)[name]
    assert_user_error(["mesh", "retrieve", "--image", path, "--out", tmp_path / "m.glb"],
                      capsys, mentions=[name, says], watch=[tmp_path])


@pytest.mark.parametrize(("argv", "says"), [
    (["--top", "0"], "--top"),
    (["--top", "nan"], "--top"),
    (["--resolution", "100"], "--resolution"),
    (["--resolution", "-32"], "--resolution"),
    (["--raw", "--vae", CKPT / "svae_r64"], "--raw"),
    (["--image", "no/such.png"], "no/such.png: image file not found"),
    (["--vae", "no/such/vae"], "--vae no/such/vae: folder not found"),
    (["--library", "no/such/lib"], "--library no/such/lib: folder not found"),
])
def test_retrieve_bad_options(argv, says, tmp_path, capsys, no_models):
    base = [] if "--image" in argv else ["--image", IMAGE]
    assert_user_error(["mesh", "retrieve", *base, "--out", tmp_path / "m.glb", *argv], capsys,
                      mentions=[says], watch=[tmp_path])


@pytest.mark.parametrize("case", range(6))
def test_retrieve_bad_outputs(case, tmp_path, capsys, no_models):
    out, says = _bad_outputs(tmp_path, ".glb")[case]
    assert_user_error(["mesh", "retrieve", "--image", IMAGE, "--out", out], capsys,
                      mentions=["--out", *says], watch=[tmp_path])
    png, says = _bad_outputs(tmp_path, ".png")[case]
    assert_user_error(["mesh", "retrieve", "--image", IMAGE, "--out", tmp_path / "new.glb",
                       "--png", png], capsys, mentions=["--png", *says], watch=[tmp_path])


def test_retrieve_broken_libraries(tmp_path, capsys, no_models):
    (tmp_path / "empty").mkdir()
    assert_user_error(["mesh", "retrieve", "--image", IMAGE, "--out", tmp_path / "m.glb",
                       "--library", tmp_path / "empty"], capsys,
                      mentions=["empty", "not a shape library"], watch=[tmp_path])
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "library.json").write_text('{"format": "flow3d-shape-library-1"}')
    (cut / "library.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    assert_user_error(["mesh", "retrieve", "--image", IMAGE, "--out", tmp_path / "m.glb",
                       "--library", cut], capsys, mentions=["cut", "broken shape library"],
                      watch=[tmp_path])


@needs_checkpoints
def test_retrieve_with_a_flow_checkpoint_as_vae(tmp_path, capsys):
    assert_user_error(["mesh", "retrieve", "--image", IMAGE, "--out", tmp_path / "m.glb",
                       "--vae", CKPT / "flow_image"], capsys,
                      mentions=["flow_image", "not a sparse-voxel SDF-VAE"], watch=[tmp_path])


@pytest.mark.parametrize(("argv", "says"), [
    (["--data", "no/such/dir"], "--data no/such/dir: not a folder"),
    (["--faces", "0"], "--faces"),
    (["--faces", "40000"], "--faces"),
    (["--holdout-per-class", "-1"], "--holdout-per-class"),
])
def test_library_bad_options(argv, says, tmp_path, capsys):
    base = [] if "--data" in argv else ["--data", tmp_path]
    assert_user_error(["mesh", "library", *base, "--out", tmp_path / "lib", *argv], capsys,
                      mentions=[says], watch=[tmp_path])


def test_library_bad_data_and_outputs(tmp_path, capsys):
    (tmp_path / "notcapod").mkdir()
    assert_user_error(["mesh", "library", "--data", tmp_path / "notcapod", "--out",
                       tmp_path / "lib"], capsys, mentions=["notcapod", "no CAPOD classN"],
                      watch=[tmp_path])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    (tmp_path / "file.txt").write_text("x")
    for out, says in [(tmp_path / "full", "folder is not empty"),
                      (tmp_path / "file.txt", "is a file"), ("", "an output path is required")]:
        assert_user_error(["mesh", "library", "--data", tmp_path / "notcapod", "--out", out],
                          capsys, mentions=["--out", says], watch=[tmp_path])
