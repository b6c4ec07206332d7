"""The shape library behind ``flow3d mesh retrieve``: silhouettes, search, files, the task.

Small real data: three CAPOD meshes of different classes (a dolphin, a guitar, a spider)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flow3d.errors import DataError
from flow3d.mesh.image_encoder import prepare_image, prepare_mask
from flow3d.mesh.library import (
    VIEW_AZIMUTHS,
    VIEW_ELEVATIONS,
    ShapeLibrary,
    build_library,
    silhouette,
)

trimesh = pytest.importorskip("trimesh")

ROOT = Path(__file__).resolve().parents[2]
CAPOD = ROOT / ".." / "shared" / "data" / "meshes" / "capod"
pytestmark = pytest.mark.skipif(not CAPOD.is_dir(), reason="no shared CAPOD meshes")


@pytest.fixture(scope="module")
def library() -> ShapeLibrary:
    files = [CAPOD / "class2" / "m13.obj", CAPOD / "class10" / "m109.obj",
             CAPOD / "class12" / "m133.obj"]
    return build_library(files, labels=[1, 9, 11], faces=800, progress=False)


def render(mesh, azimuth: float, elevation: float, *, tint=None, background=None) -> np.ndarray:
    """An RGB render of a normalised mesh, optionally with the object tinted and the white
    background replaced (a user's photo of another colour)."""
    from flow3d.mesh.render import render_views

    img, _ = render_views(mesh, 1, 96, elevations=[elevation], azimuths=[azimuth],
                          backend="numpy")
    img = img[0].astype(np.float32) / 255.0
    if tint is not None:
        bg = (img > 0.999).all(-1)
        img = img * np.asarray(tint, np.float32)
        img[bg] = background
    return img


def test_library_views_are_24_around_the_object():
    assert len(VIEW_AZIMUTHS) == len(VIEW_ELEVATIONS) == 24
    assert sorted(set(VIEW_AZIMUTHS)) == [float(a) for a in range(0, 360, 30)]
    assert set(VIEW_ELEVATIONS) == {10.0, 30.0}


def test_every_shape_finds_itself_from_every_library_view(library):
    for i in range(len(library)):
        mesh = library.mesh(i)
        for view in (0, 7, 13, 22):
            mask = prepare_mask(render(mesh, VIEW_AZIMUTHS[view], VIEW_ELEVATIONS[view]))
            best = library.search(mask, top=3)
            assert best[0].index == i and best[0].view == view, (i, view, best)
            assert best[0].iou == pytest.approx(1.0)
            assert [m.iou for m in best] == sorted((m.iou for m in best), reverse=True)


def test_search_between_views_and_colours(library):
    """A view between the library's and a coloured object on a coloured background: the
    silhouette is the same, so is the answer."""
    for i in range(len(library)):
        mesh = library.mesh(i)
        plain = prepare_mask(render(mesh, 45.0, 20.0))
        styled = prepare_mask(render(mesh, 45.0, 20.0, tint=(0.9, 0.3, 0.2),
                                     background=(0.2, 0.3, 0.6)))
        assert (plain ^ styled).float().mean() < 0.01
        best, second = library.search(styled, top=2)
        assert best.index == i and best.iou > second.iou + 0.05, (best, second)


def test_refine_finds_the_view_between_library_views(library):
    """A photo from between the library's views (azimuth 45, elevation 20: 15 and 10 degrees
    from the nearest) matches its shape imperfectly; the finer search finds that view exactly
    and the IoU becomes 1, while the other shapes' IoUs can only rise."""
    for i in range(len(library)):
        mask = prepare_mask(render(library.mesh(i), 45.0, 20.0))
        coarse = library.search(mask, top=len(library))
        assert coarse[0].azimuth % 30 == 0 and coarse[0].iou < 0.99
        refined = library.refine(mask, coarse)
        assert refined[0].index == i, (i, refined)
        assert refined[0].iou == pytest.approx(1.0)
        assert (refined[0].azimuth, refined[0].elevation) == (45.0, 20.0)
        assert refined[0].view == coarse[0].view  # the library view it was refined from
        before = {m.index: m.iou for m in coarse}
        assert all(m.iou >= before[m.index] - 1e-6 for m in refined)
        assert [m.iou for m in refined] == sorted((m.iou for m in refined), reverse=True)
    with pytest.raises(ValueError, match="mask is"):
        library.refine(torch.ones(32, 32, dtype=torch.bool), coarse)


def test_refine_keeps_a_library_view_that_fits(library):
    mask = prepare_mask(render(library.mesh(2), VIEW_AZIMUTHS[5], VIEW_ELEVATIONS[5]))
    best = library.refine(mask, library.search(mask, top=2))[0]
    assert best.index == 2 and best.iou == pytest.approx(1.0)
    assert (best.azimuth, best.elevation) == (VIEW_AZIMUTHS[5], VIEW_ELEVATIONS[5])


def test_grey_silhouette_of_a_prepared_image_matches_the_mask():
    """A grey render on white: the prepared image's grey mask and the colour mask agree (with
    a white margin around the render, so that the crop stays inside the photo)."""
    mesh = trimesh.creation.annulus(0.5, 1.0, 0.5)
    img = np.pad(render(mesh, 30.0, 10.0), ((16, 16), (16, 16), (0, 0)), constant_values=1.0)
    grey, mask = silhouette(prepare_image(img)), prepare_mask(img)
    # the same crop; they differ only on the outline (a resampled edge cut at 0.95 grey and
    # at 1% coverage)
    assert (mask & grey).sum() / (mask | grey).sum() > 0.9


def test_a_cluttered_photo_is_warned_about(library):
    from skimage import data as images

    from flow3d.mesh.image_encoder import background_warning

    assert "does not look plain" in background_warning(images.coffee())
    mesh = library.mesh(0)
    assert background_warning(render(mesh, 30.0, 10.0)) is None
    assert background_warning(render(mesh, 30.0, 10.0, tint=(0.9, 0.3, 0.2),
                                     background=(0.2, 0.3, 0.6))) is None


def test_search_refuses_empty_and_misshaped_masks(library):
    with pytest.raises(DataError, match="no object"):
        library.search(torch.zeros(64, 64, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask is"):
        library.search(torch.ones(32, 32, dtype=torch.bool))


def test_save_load_round_trip(library, tmp_path):
    library.save(tmp_path / "lib")
    back = ShapeLibrary.load(tmp_path / "lib")
    assert back.names == library.names and back.labels == library.labels
    assert torch.equal(back.masks, library.masks)
    for a, b, fa, fb in zip(back.vertices, library.vertices, back.faces, library.faces):
        np.testing.assert_allclose(a, b, atol=1e-3)  # float16 in [-1, 1]
        np.testing.assert_array_equal(fa, fb)
    library.save(tmp_path / "lib")  # an existing library is replaced whole
    assert sorted(p.name for p in (tmp_path / "lib").iterdir()) == ["library.json",
                                                                    "library.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_load_names_the_broken_folder(library, tmp_path):
    with pytest.raises(DataError, match="not a shape library"):
        ShapeLibrary.load(tmp_path)
    library.save(tmp_path / "lib")
    data = tmp_path / "lib" / "library.safetensors"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(DataError, match="lib: broken shape library"):
        ShapeLibrary.load(tmp_path / "lib")


def test_retrieve_task_raw_and_through_a_vae(library, tmp_path):
    from flow3d.mesh.pipeline import RetrieveSettings, retrieve

    mesh = library.mesh(1)
    img = render(mesh, 120.0, 30.0, tint=(0.3, 0.8, 0.3), background=(0.1, 0.1, 0.1))
    raw = retrieve(RetrieveSettings(raw=True, out=str(tmp_path / "raw.glb")), image=img,
                   library=library)
    assert raw["matches"][0].index == 1 and len(raw["matches"]) == 3
    assert raw["warning"] is None
    np.testing.assert_allclose(raw["mesh"].vertices, mesh.vertices)
    assert (tmp_path / "raw.glb").is_file()
    vae_ckpt = ROOT / "checkpoints" / "mesh" / "svae_cpu"
    if not vae_ckpt.is_dir():
        pytest.skip("no bundled sparse-voxel VAE")
    closed = retrieve(RetrieveSettings(vae=str(vae_ckpt), resolution=64), image=img,
                      library=library)["mesh"]
    assert closed.is_watertight
    from flow3d.mesh.metrics import mesh_metrics

    assert mesh_metrics(closed, mesh, n_points=5000, n_volume=0)["fscore@0.05"] > 0.8


def test_retrieve_refines_the_best_candidates_only(library):
    from flow3d.errors import ConfigError
    from flow3d.mesh.pipeline import RetrieveSettings, retrieve

    img = render(library.mesh(0), 75.0, 15.0)
    coarse = retrieve(RetrieveSettings(raw=True, candidates=0, top=3), image=img,
                      library=library)["matches"]
    assert [m.azimuth % 30 for m in coarse] == [0.0] * 3
    one = retrieve(RetrieveSettings(raw=True, candidates=1, top=3), image=img,
                   library=library)["matches"]
    assert one[0].index == 0 and (one[0].azimuth, one[0].elevation) == (75.0, 15.0)
    assert one[1:] == coarse[1:]  # the rest keep their library views
    with pytest.raises(ConfigError, match="--candidates"):
        RetrieveSettings(candidates=-1)
