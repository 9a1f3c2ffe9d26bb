"""lava-dl's netx for the tests, imported behind stand-ins for two modules it imports but netx never uses.

``import lava.lib.dl.netx`` imports ``lava.lib.dl.slayer``, whose ``object_detection`` subpackage imports
``cv2`` (OpenCV) and ``torchvision`` at import time. Neither is needed to build or run a netx network: OpenCV
is not installed here, and the only torchvision wheel for torch 2.13 is a CUDA build that fails to import with
the CPU torch ("operator torchvision::nms does not exist"). So, for the tests only, :func:`import_netx` puts
empty modules under those two names in ``sys.modules`` when the real ones cannot be imported, then imports
netx and SLAYER. Nothing in the ``spikefold`` package imports lava-dl. Tests that need it skip, saying why,
when lava-dl is not installed (``make test`` installs it: the ``lava-dl`` extra).
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest

from spikefold.deploy.lava_compat import ensure_lava

# Each module and the submodules slayer's object_detection imports from it by name (``from torchvision import
# ops, transforms``).
STAND_INS = {"cv2": (), "torchvision": ("ops", "transforms")}


def _stand_in(name: str, submodules: tuple[str, ...]) -> None:
    try:
        importlib.import_module(name)
    except Exception:  # missing, or the CUDA torchvision failing against the CPU torch
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        doc = f"empty stand-in installed by {__name__}: slayer imports it, netx never uses it"
        module = sys.modules[name] = types.ModuleType(name, doc)
        for sub in submodules:
            setattr(module, sub, types.ModuleType(f"{name}.{sub}", doc))
            sys.modules[f"{name}.{sub}"] = getattr(module, sub)


def import_netx():
    """(lava.lib.dl.netx, lava.lib.dl.slayer), or skip the calling test when lava-dl is not installed."""
    if importlib.util.find_spec("lava.lib.dl") is None:
        pytest.skip("lava-dl is not installed; `make test` installs it (pip install --no-deps "
                    "--ignore-requires-python lava-dl==0.6.0)")
    ensure_lava()
    for name, submodules in STAND_INS.items():
        _stand_in(name, submodules)
    netx = importlib.import_module("lava.lib.dl.netx")
    slayer = importlib.import_module("lava.lib.dl.slayer")
    return netx, slayer
