"""The public surface: every module declares ``__all__`` and every listed name exists."""

import importlib
import pkgutil

import pytest

import fedlearn

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(fedlearn.__path__, "fedlearn.")
    if ".pb" not in m.name and not m.name.endswith("__main__") and ".migrations" not in m.name
)


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_all_and_every_listed_name_exists(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists undefined names {missing}"


def test_top_level_api_is_pinned():
    assert fedlearn.__all__ == ["__version__"]
    assert fedlearn.__version__ == "0.1.0"
