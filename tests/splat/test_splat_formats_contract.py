"""The bad-input contract (exit 2, one stderr line naming the file or option, nothing written,
no server started) for `flow3d splat convert` and `flow3d view`."""

from __future__ import annotations

import gzip

import pytest
import torch
from contract import assert_user_error

from flow3d import view
from flow3d.splat import Gaussians
from flow3d.splat.formats import write_ply, write_spz


@pytest.fixture
def files(tmp_path):
    g = Gaussians.from_points(torch.rand(20, 3), torch.rand(20, 3))
    write_ply(g, tmp_path / "good.ply")
    write_spz(g, tmp_path / "good.spz")
    (tmp_path / "empty.ply").write_bytes(b"")
    (tmp_path / "text.ply").write_text("solid cube\nfacet normal 0 0 1\n")
    (tmp_path / "truncated.ply").write_bytes((tmp_path / "good.ply").read_bytes()[:-10])
    (tmp_path / "magic.spz").write_bytes(gzip.compress(b"XXXX" + bytes(40)))
    (tmp_path / "short.splat").write_bytes(bytes(33))
    (tmp_path / "nan.ply").write_bytes((tmp_path / "good.ply").read_bytes()[:-4]
                                       + b"\x00\x00\xc0\x7f")  # last rot_3 = NaN
    (tmp_path / "noca.pdb").write_text("HEADER    nothing\nEND\n")
    (tmp_path / "noca.cif").write_text("data_x\n#\n")
    (tmp_path / "broken.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "taken.spz").write_bytes(b"keep me")
    (tmp_path / "out" / "taken.png").write_bytes(b"keep me")
    return tmp_path


@pytest.mark.parametrize("name, mentions", [
    ("missing.ply", ["missing.ply", "no such file"]),
    ("empty.ply", ["empty.ply", "empty"]),
    ("text.ply", ["text.ply", "not a PLY"]),
    ("truncated.ply", ["truncated.ply", "truncated"]),
    ("nan.ply", ["nan.ply", "quats", "NaN"]),
    ("magic.spz", ["magic.spz", "magic"]),
    ("short.splat", ["short.splat", "32-byte"]),
    ("good.obj", ["good.obj", "unsupported extension"]),
])
def test_convert_bad_input(files, capsys, name, mentions):
    out = files / "out"
    assert_user_error(["splat", "convert", files / name, out / "new.ply"], capsys, mentions,
                      watch=[out])


@pytest.mark.parametrize("target, mentions", [
    ("taken.spz", ["OUT", "taken.spz", "--overwrite"]),
    ("new.glb", ["OUT", "new.glb", "unsupported extension"]),
    ("", ["OUT", "output path"]),
])
def test_convert_bad_output_is_refused_before_reading(files, capsys, target, mentions):
    out = files / "out"
    target = str(out / target) if target else ""
    # the input is missing: the output rule is applied first, before any reading
    assert_user_error(["splat", "convert", files / "missing.ply", target], capsys, mentions,
                      watch=[out])


@pytest.fixture
def no_server(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a server was started for bad input")

    monkeypatch.setattr(view, "start_server", refuse)


@pytest.mark.parametrize("argv, mentions", [
    (["missing.spz"], ["missing.spz", "no such file"]),
    (["good.ply", "missing.glb"], ["missing.glb", "no such file"]),
    (["notes.txt"], ["notes.txt", "cannot view"]),
    (["empty.ply"], ["empty.ply", "empty"]),
    (["truncated.ply"], ["truncated.ply", "truncated"]),
    (["noca.pdb"], ["noca.pdb", "no CA atoms"]),
    (["noca.cif"], ["noca.cif", "no CA atoms"]),
    (["broken.glb"], ["broken.glb", "cannot read as a mesh"]),
    (["out"], ["out", "folder"]),
    (["good.ply", "--port", "70000"], ["--port"]),
    (["good.ply", "--screenshot", "out/taken.png"], ["--screenshot", "taken.png",
                                                     "--overwrite"]),
    (["good.ply", "--screenshot", "out/shot.jpg"], ["--screenshot", "unsupported extension"]),
    (["good.ply", "--screenshot", "out/shot.png", "--browser", "no-such-browser-x"],
     ["--screenshot", "no-such-browser-x"]),
])
def test_view_bad_input_starts_no_server(files, capsys, no_server, monkeypatch, argv, mentions):
    monkeypatch.chdir(files)
    (files / "notes.txt").write_text("hello")
    assert_user_error(["view", *argv], capsys, mentions, watch=[files / "out"])
