"""The README's Python examples run as written (alphafold3-pytorch's tests/test_readme.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks() -> list[str]:
    if not README.is_file():
        return []
    return re.findall(r"^```python[^\n]*\n(.*?)^```", README.read_text(encoding="utf-8"),
                      flags=re.S | re.M)


BLOCKS = _blocks()


@pytest.mark.skipif(not README.is_file(), reason="README.md does not exist yet")
@pytest.mark.skipif(README.is_file() and not BLOCKS, reason="README.md has no ```python block")
@pytest.mark.parametrize("index", range(len(BLOCKS)) or [0])
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    import torch

    # run from a scratch copy of the project layout: examples use relative paths
    monkeypatch.chdir(tmp_path)
    for name in ("recipes", "checkpoints"):
        if (ROOT / name).exists():
            os.symlink(ROOT / name, tmp_path / name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = compile(BLOCKS[index], f"README.md[python block {index}]", "exec")
        exec(code, {"__name__": "__readme__"})
    finally:
        torch.set_num_threads(threads)
