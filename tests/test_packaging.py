"""The distribution ships every subpackage: pyproject lists packages explicitly (the stage folders are mapped to
``spikefold.*`` names), and an editable install hides a missing entry that `pip install .` would drop."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_on_disk_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    assert set(cfg["package-dir"]) == listed
    on_disk = set()
    for name, folder in cfg["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            on_disk.add(".".join((name, *relative.parts)))
    assert on_disk - listed == set(), "subpackages pip install would leave out"
