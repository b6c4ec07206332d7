"""The command-line contract every ``flow3d`` command keeps on bad input.

``assert_user_error(argv, mentions, watch)`` runs ``flow3d ARGV`` in-process and checks: exit
status 2, exactly one line on stderr starting ``flow3d: error:`` that mentions each of
``mentions`` (the file or option at fault), no traceback, and that nothing under the ``watch``
folders changed (no file created, removed or modified; temporaries included).
Head test modules import it (``from contract import assert_user_error``; tests/ is on the path
through conftest.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from flow3d import cli


def snapshot(folders: Iterable[Path]) -> dict[str, tuple[int, int]]:
    """Every path under ``folders`` with its size and mtime (folders included)."""
    state: dict[str, tuple[int, int]] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.exists():
            state[str(folder)] = (-1, -1)
            continue
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                p = Path(root) / name
                st = p.lstat()
                state[str(p)] = (st.st_size, st.st_mtime_ns)
    return state


def run(argv: Sequence[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own exits
        code = e.code if isinstance(e.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(argv: Sequence[str], capsys: pytest.CaptureFixture,
                      mentions: Sequence[str] = (), watch: Iterable[Path] = ()) -> str:
    """Run ``flow3d argv``; assert the bad-input contract; return the error line."""
    watch = [Path(w) for w in watch]
    before = snapshot(watch)
    code, _, err = run(argv, capsys)
    assert code == 2, f"flow3d {' '.join(map(str, argv))}: exit {code}, stderr {err!r}"
    assert "Traceback" not in err, err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("flow3d: error: "), err
    for m in mentions:
        assert str(m) in lines[0], f"{lines[0]!r} does not mention {m!r}"
    after = snapshot(watch)
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"
    return lines[0]
