"""Splat files: the INRIA .ply (bit-exact), antimatter15 .splat and Niantic .spz (within their
quantisation), checked against independent readers and hand-packed bytes, and one-line errors
for malformed files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import plyfile
import pytest
import torch

from flow3d import cli
from flow3d.errors import DataError
from flow3d.splat import Gaussians, sh
from flow3d.splat import formats as F

FIELDS = ("means", "quats", "log_scales", "opacity_logits", "sh")


def scene(n: int = 200, degree: int = 3, seed: int = 0) -> Gaussians:
    """Random Gaussians inside every format's range (SPZ: |sh| <= 1, dc within +-3.3)."""
    g = torch.Generator().manual_seed(seed)
    return Gaussians(torch.rand(n, 3, generator=g) * 4 - 2, torch.randn(n, 4, generator=g),
                     torch.rand(n, 3, generator=g) * 4 - 6, torch.randn(n, generator=g) * 2,
                     (torch.rand(n, sh.num_coeffs(degree), 3, generator=g) * 2 - 1) * 0.9)


def angle_between(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """Rotation angle (radians) between unit quaternions, sign-insensitive."""
    dot = (torch.nn.functional.normalize(q1.double(), dim=-1)
           * torch.nn.functional.normalize(q2.double(), dim=-1)).sum(-1).abs().clamp(max=1)
    return 2 * torch.acos(dot)


# ---- PLY -------------------------------------------------------------------------------------
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_round_trip_is_bit_exact(tmp_path, degree):
    g = scene(degree=degree)
    back = F.load_scene(F.save_scene(g, tmp_path / "s.ply"))
    for name in FIELDS:
        assert torch.equal(getattr(g, name), getattr(back, name)), name


def test_ply_layout_matches_inria(tmp_path):
    """Property order and the channel-major f_rest of GaussianModel.save_ply, read back with
    plyfile (an independent reader)."""
    g = scene(n=5, degree=2)
    F.write_ply(g, tmp_path / "s.ply")
    v = plyfile.PlyData.read(str(tmp_path / "s.ply"))["vertex"]
    names = [p.name for p in v.properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:33] == [f"f_rest_{i}" for i in range(24)]
    assert names[33:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2",
                          "rot_3"]
    assert all(p.val_dtype in ("f4", "float32") for p in v.properties)
    # f_rest_0..7 are red's bands 1-2, then green's, then blue's
    for channel in range(3):
        for j in range(8):
            np.testing.assert_array_equal(v[f"f_rest_{channel * 8 + j}"],
                                          g.sh[:, 1 + j, channel].numpy())
    np.testing.assert_array_equal(v["rot_0"], g.quats[:, 0].numpy())  # w first
    np.testing.assert_array_equal(v["opacity"], g.opacity_logits.numpy())  # logits, raw


def test_ply_reads_other_layouts(tmp_path):
    """Extra properties in any order, doubles, ascii and big-endian files (as plyfile
    writes them) give the same Gaussians."""
    g = scene(n=7, degree=1)
    names = (["rot_3", "rot_2", "rot_1", "rot_0", "opacity", "x", "y", "z", "red"]
             + [f"f_dc_{i}" for i in range(3)] + [f"f_rest_{i}" for i in range(9)]
             + [f"scale_{i}" for i in range(3)])
    values = {"x": g.means[:, 0], "y": g.means[:, 1], "z": g.means[:, 2],
              "opacity": g.opacity_logits, "red": torch.zeros(7)}
    values.update({f"rot_{i}": g.quats[:, i] for i in range(4)})
    values.update({f"scale_{i}": g.log_scales[:, i] for i in range(3)})
    values.update({f"f_dc_{i}": g.sh[:, 0, i] for i in range(3)})
    values.update({f"f_rest_{c * 3 + j}": g.sh[:, 1 + j, c] for c in range(3) for j in range(3)})
    rec = np.zeros(7, [(n, "u1" if n == "red" else "f8") for n in names])
    for n in names:
        rec[n] = values[n].double().numpy()
    for text, byte_order in ((False, "<"), (True, "="), (False, ">")):
        path = tmp_path / f"other_{text}_{byte_order == '>'}.ply"
        el = plyfile.PlyElement.describe(rec, "vertex")
        plyfile.PlyData([el], text=text, byte_order=byte_order).write(str(path))
        back = F.read_ply(path)
        for name in FIELDS:
            torch.testing.assert_close(getattr(back, name), getattr(g, name), atol=1e-6,
                                       rtol=0)


def test_ply_kind_tells_splats_from_meshes(tmp_path):
    F.write_ply(scene(n=3), tmp_path / "s.ply")
    assert F.ply_kind(tmp_path / "s.ply") == "splat"
    verts = np.zeros(3, [("x", "f4"), ("y", "f4"), ("z", "f4")])
    faces = np.array([([0, 1, 2],)], [("vertex_indices", "i4", (3,))])
    plyfile.PlyData([plyfile.PlyElement.describe(verts, "vertex"),
                     plyfile.PlyElement.describe(faces, "face")]).write(str(tmp_path / "m.ply"))
    assert F.ply_kind(tmp_path / "m.ply") == "mesh"


# ---- .splat ----------------------------------------------------------------------------------
def test_splat_round_trip_within_8_bits(tmp_path):
    """Tolerances: position and scale exact in float32 (scale through exp/log: 1e-6
    relative), colour and opacity half an 8-bit step, rotation one 1/128 step per component
    (under 0.03 rad). Higher SH bands are dropped; rows come back sorted by importance."""
    g = scene(n=300, degree=1)
    g = Gaussians(g.means, g.quats, g.log_scales, g.opacity_logits,
                  g.sh * 0.5)  # colours 0.5 + C0 dc in [0, 1]
    path = F.save_scene(g, tmp_path / "s.splat")
    assert path.stat().st_size == 32 * len(g)
    back = F.load_scene(path)
    importance = g.log_scales.sum(-1).exp() * g.opacities
    order = torch.argsort(-importance.double(), stable=True)
    ref = g[order]
    assert back.sh_degree == 0
    assert torch.equal(back.means, ref.means)
    torch.testing.assert_close(back.log_scales, ref.log_scales, atol=1e-6, rtol=0)
    assert (back.dc_colors - ref.dc_colors).abs().max() <= 0.5 / 255 + 1e-6
    assert (back.opacities - ref.opacities).abs().max() <= 0.5 / 255 + 1e-6
    assert angle_between(back.quats, ref.quats).max() < 0.03


def test_splat_bytes_follow_antimatter15(tmp_path):
    g = Gaussians(torch.tensor([[1.0, -2.0, 3.0]]), torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
                  torch.log(torch.tensor([[0.1, 0.2, 0.3]])), torch.tensor([0.0]),
                  sh.rgb_to_sh0(torch.tensor([[1.0, 0.5, 0.0]]))[:, None])
    data = F.write_splat(g, tmp_path / "one.splat").read_bytes()
    pos_scale = struct.unpack("<6f", data[:24])
    np.testing.assert_allclose(pos_scale, [1, -2, 3, 0.1, 0.2, 0.3], rtol=1e-6)
    assert list(data[24:28]) == [255, 128, 0, 128]  # RGBA, alpha = sigmoid(0) * 255
    assert list(data[28:32]) == [255, 128, 128, 128]  # w x y z: 1 * 128 + 128 clamps


# ---- SPZ -------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("degree", [0, 1, 3])
def test_spz_round_trip_within_quantisation(tmp_path, version, degree):
    """Tolerances (in-range values): position 2^-13 (12 fractional bits), log-scale 1/32,
    opacity and colour half an 8-bit step (dc: 0.5 / (0.15 * 255)), SH band 1 4.5/128 and
    bands 2-3 8.5/128 (5- and 4-bit buckets), rotation 0.005 rad (v3, 9-bit smallest three)
    or 0.05 rad (v2, 8-bit x y z, for |w| >= 0.3: w is derived)."""
    g = scene(n=400, degree=degree, seed=degree)
    if version == 2:
        q = torch.nn.functional.normalize(g.quats, dim=-1)
        g = g[q[:, 0].abs() >= 0.3]
    back = F.read_spz(F.write_spz(g, tmp_path / "s.spz", version=version))
    assert back.sh_degree == degree and len(back) == len(g)
    assert (back.means - g.means).abs().max() <= 2.0**-13 + 1e-6
    assert (back.log_scales - g.log_scales).abs().max() <= 1 / 32 + 1e-5
    assert (back.opacities - g.opacities).abs().max() <= 0.5 / 255 + 1e-6
    assert (back.sh[:, 0] - g.sh[:, 0]).abs().max() <= 0.5 / (0.15 * 255) + 1e-5
    if degree:
        assert (back.sh[:, 1:4] - g.sh[:, 1:4]).abs().max() <= 4.5 / 128 + 1e-6
        if degree > 1:
            assert (back.sh[:, 4:] - g.sh[:, 4:]).abs().max() <= 8.5 / 128 + 1e-6
    assert angle_between(back.quats, g.quats).max() < (0.005 if version == 3 else 0.05)


def test_spz_flips_match_the_sh_rotation():
    half_turn = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    diag = torch.diagonal(sh.sh_rotation(half_turn, 3))
    np.testing.assert_allclose(diag.numpy(), F._FLIP_SH, atol=1e-9)


def test_spz_reads_hand_packed_bytes(tmp_path):
    """One Gaussian packed by hand from the spec (v2, RUB): position (1, 2, -0.5) RUB is
    (1, -2, 0.5) here; identity rotation; scale e^-2; alpha 128/255."""
    header = struct.pack("<IIIBBBB", 0x5053474E, 2, 1, 0, 12, 0, 0)

    def fixed(v):
        return int(round(v * 4096)).to_bytes(4, "little", signed=True)[:3]

    body = b"".join([fixed(1.0), fixed(2.0), fixed(-0.5), bytes([128]),
                     bytes([128, 153, 77]), bytes([128, 128, 128]), bytes([128, 128, 128])])
    path = tmp_path / "hand.spz"
    path.write_bytes(gzip.compress(header + body))
    g = F.read_spz(path)
    torch.testing.assert_close(g.means, torch.tensor([[1.0, -2.0, 0.5]]))
    torch.testing.assert_close(g.log_scales, torch.full((1, 3), -2.0))
    assert angle_between(g.quats, torch.tensor([[1.0, 0, 0, 0]])).item() < 0.02
    torch.testing.assert_close(g.opacities, torch.tensor([128 / 255]), atol=1e-6, rtol=0)
    expected_dc = (torch.tensor([128, 153, 77]) / 255 - 0.5) / 0.15
    torch.testing.assert_close(g.sh[0, 0], expected_dc)
    # and our writer puts the same bytes there (positions flipped to RUB)
    raw = gzip.decompress(F.write_spz(g, tmp_path / "again.spz", version=2).read_bytes())
    assert raw[16:25] == body[:9] and raw[25:26] == body[9:10]


def test_spz_keeps_far_positions_by_using_fewer_fractional_bits(tmp_path):
    g = scene(n=4)
    g = Gaussians(g.means * 2000, g.quats, g.log_scales, g.opacity_logits, g.sh)
    back = F.read_spz(F.write_spz(g, tmp_path / "far.spz"))
    assert (back.means - g.means).abs().max() < 2e-3


# ---- malformed files -------------------------------------------------------------------------
def _bad_files(tmp_path):
    good = scene(n=10, degree=1)
    F.write_ply(good, tmp_path / "good.ply")
    ply = (tmp_path / "good.ply").read_bytes()
    nan = Gaussians(good.means.clone(), good.quats, good.log_scales, good.opacity_logits,
                    good.sh)
    nan.means[3, 1] = float("nan")
    F.write_ply(nan, tmp_path / "nan.ply")
    F.write_spz(good, tmp_path / "good.spz")
    spz = (tmp_path / "good.spz").read_bytes()
    files = {
        "empty.ply": (b"", "empty"),
        "empty.splat": (b"", "empty"),
        "empty.spz": (b"", "empty"),
        "text.ply": (b"hello, this is not a ply\n", "not a PLY file"),
        "truncated.ply": (ply[:-7], "truncated"),
        "nan.ply": ((tmp_path / "nan.ply").read_bytes(), "NaN"),
        "mesh.ply": (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n"
                     b"property float y\nproperty float z\nend_header\n0 0 0\n", "lacks"),
        "rest.ply": (ply.replace(b"property float f_rest_8\n", b""), "f_rest"),
        "noend.ply": (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n", "end_header"),
        "short.splat": (b"\0" * 40, "32-byte"),
        "zero_scale.splat": (b"\0" * 32, "scale"),
        "plain.spz": (b"just some bytes", "not gzip"),
        "v4.spz": (b"NGSP" + bytes(28), "version 4"),
        "magic.spz": (gzip.compress(b"ABCD" + b"\0" * 60), "magic"),
        "version.spz": (gzip.compress(struct.pack("<IIIBBBB", 0x5053474E, 9, 0, 0, 12, 0, 0)),
                        "version 9"),
        "truncated.spz": (gzip.compress(gzip.decompress(spz)[:-5]), "truncated"),
        "cut.spz": (spz[: len(spz) // 2], "corrupt or truncated"),
        "scene.obj": (b"v 0 0 0\n", "unsupported extension"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: why for name, (_, why) in files.items()}


def test_malformed_files_give_one_line_errors(tmp_path):
    for name, why in _bad_files(tmp_path).items():
        with pytest.raises(DataError) as e:
            F.load_scene(tmp_path / name)
        message = str(e.value)
        assert name in message and why in message and "\n" not in message, (name, message)


# ---- flow3d splat convert --------------------------------------------------------------------
def test_convert_chains_formats(tmp_path, capsys):
    g = scene(n=50, degree=3)
    F.write_ply(g, tmp_path / "a.ply")
    assert cli.main(["splat", "convert", str(tmp_path / "a.ply"), str(tmp_path / "b.spz")]) == 0
    assert cli.main(["splat", "convert", str(tmp_path / "b.spz"), str(tmp_path / "c.ply")]) == 0
    assert cli.main(["splat", "convert", str(tmp_path / "c.ply"), str(tmp_path / "d.splat")]) == 0
    out = capsys.readouterr().out
    assert "50 Gaussians, SH degree 3" in out and "SH degree 0" in out
    back = F.load_scene(tmp_path / "c.ply")
    assert back.sh_degree == 3
    assert (back.means - g.means).abs().max() <= 2.0**-13 + 1e-6
    # --overwrite replaces; the same file in and out is read before it is replaced
    assert cli.main(["splat", "convert", str(tmp_path / "c.ply"), str(tmp_path / "c.ply"),
                     "--overwrite"]) == 0
    assert torch.equal(F.load_scene(tmp_path / "c.ply").sh, back.sh)
