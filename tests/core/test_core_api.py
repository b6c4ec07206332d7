"""The public core API: every exported name resolves, and importing the package stays light."""

import importlib
import subprocess
import sys

import flow3d.core as core


def test_every_exported_name_resolves_to_its_module():
    for name in core.__all__:
        obj = getattr(core, name)
        mod = importlib.import_module(f"flow3d.core.{core._WHERE[name]}")
        assert obj is getattr(mod, name), name
        assert name in getattr(mod, "__all__", [name]), f"{name} not in {mod.__name__}.__all__"
    assert "solve" in dir(core)


def test_import_is_light_and_unknown_names_raise():
    code = (
        "import sys, flow3d.core as c; "
        "heavy = [m for m in ('scipy', 'safetensors', 'flow3d.core.reflow', "
        "'flow3d.core.solvers') if m in sys.modules]; "
        "assert not heavy, heavy; c.AffinePath; assert 'scipy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    try:
        core.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("unknown attribute did not raise")
