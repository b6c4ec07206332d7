"""``python -m flow3d.demo``: runs each head's demo, reports absent ones, fails on failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from flow3d import demo


def _module(tmp_path: Path, name: str, body: str) -> str:
    (tmp_path / f"{name}.py").write_text(body)
    return name


@pytest.fixture
def fake_demos(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    ok = _module(tmp_path, "_flow3d_ok_demo", (
        "from pathlib import Path\n"
        "def demo(out_dir: Path) -> None:\n"
        "    out_dir.mkdir(parents=True)\n"
        "    (out_dir / 'done.txt').write_text('ok')\n"))
    bad = _module(tmp_path, "_flow3d_bad_demo",
                  "def demo(out_dir):\n    raise RuntimeError('boom')\n")
    return {"ok": f"{ok}:demo", "bad": f"{bad}:demo", "absent": "_flow3d_absent_demo:demo",
            "noattr": f"{ok}:missing"}


def test_runs_reports_absent_and_fails_on_failure(fake_demos, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(demo, "DEMOS", fake_demos)
    code = demo.main(["--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 1
    assert (tmp_path / "out" / "ok" / "done.txt").read_text() == "ok"
    assert "ok: ran in" in out
    assert "absent: skipped, _flow3d_absent_demo is not present yet" in out
    assert "noattr: skipped, _flow3d_ok_demo has no missing() yet" in out
    assert "bad: FAILED: RuntimeError: boom" in out


def test_all_good_is_exit_zero_and_subset_selection(fake_demos, monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "DEMOS", fake_demos)
    assert demo.main(["--out", str(tmp_path), "--heads", "ok", "absent"]) == 0
    assert demo.main(["--out", str(tmp_path), "--heads", "nope"]) == 2


def test_real_import_errors_are_not_hidden(monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(tmp_path))
    _module(tmp_path, "_flow3d_broken_demo", "import _flow3d_missing_dependency\n")
    monkeypatch.setattr(demo, "DEMOS", {"broken": "_flow3d_broken_demo:demo"})
    assert demo.main(["--out", str(tmp_path)]) == 1
    assert "FAILED to import" in capsys.readouterr().out


def test_every_registered_demo_is_a_plain_target():
    for name, target in demo.DEMOS.items():
        module, _, attr = target.partition(":")
        assert module and attr, name
