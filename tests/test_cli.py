"""The flow3d command: help lists everything, user errors are one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flow3d import cli

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "toy" / "eight_gaussians.yaml"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "sample", "eval"):
        assert command in out
    for head in cli.HEAD_COMMANDS:  # a head whose cli module exists is listed
        module = cli.HEAD_COMMANDS[head].partition(":")[0]
        if (ROOT / (module.replace(".", "/") + ".py")).is_file():
            assert head in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "missing.yaml"], "missing.yaml: recipe file not found"),
        (["train", str(RECIPE), "trainer.max_step=3"], "did you mean 'trainer.max_steps'"),
        (["train", str(RECIPE), "trainer.lr=fast"], "trainer.lr = 'fast' must be a number"),
        (["sample", "no/such/ckpt", "--num", "3", "--out", "x"], "no/such/ckpt: checkpoint"),
        (["eval", "no/such/ckpt"], "no/such/ckpt: checkpoint not found"),
    ],
)
def test_user_errors_are_one_line_exit_2(argv, expected, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("flow3d: error: ") and expected in err


def test_debug_shows_the_traceback():
    with pytest.raises(FileNotFoundError):
        cli.main(["--debug", "eval", "no/such/ckpt"])


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "usage: flow3d" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "flow3d", "train", "missing.yaml"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "flow3d: error: missing.yaml: recipe file not found\n"


def test_absent_head_module_is_skipped_but_broken_one_is_reported(
    monkeypatch, capsys, tmp_path
):
    # a head cli module that exists but needs a dependency that is not installed
    (tmp_path / "_flow3d_broken_cli.py").write_text("import _flow3d_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "HEAD_COMMANDS", {
        "ghost": "_flow3d_no_such_head_cli:register",
        "broken": "_flow3d_broken_cli:register",
    })
    help_text = cli.build_parser().format_help()
    assert "ghost" not in help_text
    assert "broken" in help_text and "unavailable" in help_text
    assert cli.main(["broken", "x"]) == 2
    err = capsys.readouterr().err
    assert "flow3d broken is unavailable" in err and "_flow3d_missing_dependency" in err


def test_head_register_adds_commands(monkeypatch, tmp_path, capsys):
    (tmp_path / "_flow3d_demo_cli.py").write_text(
        "def register(sub):\n"
        "    p = sub.add_parser('demohead', help='a head command')\n"
        "    p.set_defaults(func=lambda args: print('ran demohead') or 0)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "HEAD_COMMANDS", {"demohead": "_flow3d_demo_cli:register"})
    assert cli.main(["demohead"]) == 0
    assert capsys.readouterr().out == "ran demohead\n"


@pytest.mark.parametrize(("command", "expected"), [
    ("sample", "--seed SEED noise seed (default: 0)"),
    ("eval", "--device DEVICE torch device (default: cpu)"),
    ("train", "--overwrite"),
])
def test_help_shows_defaults(command, expected, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    assert expected in " ".join(capsys.readouterr().out.split())
