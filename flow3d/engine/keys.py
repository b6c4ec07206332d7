"""Names chosen from a fixed set (recipe keys, heads, solvers): checks with one-line errors
that suggest the closest valid name."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from flow3d.core.solvers import SOLVERS
from flow3d.errors import ConfigError

__all__ = ["check_method", "suggest"]


def suggest(key: str, valid: Sequence[str], prefix: str = "") -> str:
    """`` (did you mean 'trainer.max_steps'?)``, or the valid names when none is close."""
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    if close:
        return f" (did you mean {prefix + close[0]!r}?)"
    return f" (choose from {', '.join(prefix + v for v in valid)})"


def check_method(method: str, name: str) -> str:
    """``method`` if it names a solver of :func:`flow3d.core.solvers.solve`, else a
    :class:`ConfigError` naming ``name`` (a recipe key or a command-line option)."""
    if method not in SOLVERS:
        raise ConfigError(f"{name} = {method!r}: not a solver"
                          + suggest(str(method), list(SOLVERS)))
    return method
