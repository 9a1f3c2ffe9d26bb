"""Stage boundaries: a stage imports only ``spikefold.core`` and the stages before it (train -> export -> sim ->
deploy), and ``spikefold train`` loads nothing beyond the training stage."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ("core", "train", "export", "sim", "deploy")  # each may import those to its left


def _imported_stages(path: Path, package: list[str]) -> set[str]:
    """The spikefold subpackages a file of ``package`` (say ["spikefold", "export"]) imports, at its top or inside
    a function, in any form: ``import spikefold.x``, ``from spikefold.x import``, ``from spikefold import x`` and
    relative imports (``from ..x import``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            modules = [f"{module}.{a.name}" for a in node.names] if module == "spikefold" else [module]
        else:
            continue
        for name in modules:
            parts = name.split(".")
            if parts[0] == "spikefold" and len(parts) > 1:
                found.add(parts[1])
    return found


def _package(path: Path, stage: str) -> list[str]:
    return ["spikefold", stage, *path.relative_to(ROOT / stage).parent.parts]


def test_the_import_scan_sees_every_form(tmp_path):
    """The scan below cannot miss a later stage imported by package name or relatively."""
    source = tmp_path / "sim" / "sub" / "m.py"
    source.parent.mkdir(parents=True)
    source.write_text("from spikefold import deploy\nfrom ... import pipeline\nfrom ...export import intnet\n"
                      "def f():\n    import spikefold.train.loop\n    from .sibling import g\n")
    assert _imported_stages(source, ["spikefold", "sim", "sub"]) == {"deploy", "pipeline", "export", "train", "sim"}


def test_no_stage_imports_a_later_stage_or_the_roof():
    wrong = []
    for rank, stage in enumerate(ORDER):
        allowed = set(ORDER[: rank + 1]) | {"hw_configs", "recipes"}  # data folders, not code
        for path in sorted((ROOT / stage).rglob("*.py")):
            for other in sorted(_imported_stages(path, _package(path, stage)) - allowed):
                wrong.append(f"{path.relative_to(ROOT)} imports spikefold.{other}")
    assert wrong == []


def test_spikefold_train_loads_only_the_training_stage(tmp_path):
    """A real one-epoch training run through the CLI, in a fresh interpreter; afterwards no module of export, sim,
    deploy or the pipeline has been imported."""
    code = ("import json, sys\nfrom spikefold.cli import main\n"
            f"code = main(['train', '--epochs', '1', '--hidden', '8', '--timesteps', '2', '--no-probes', "
            f"'--out', {str(tmp_path / 'run')!r}])\n"
            "print(json.dumps({'code': code, 'modules': sorted(m for m in sys.modules if m.startswith('spikefold'))}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0 and (tmp_path / "run" / "model.pt").is_file()
    assert "spikefold.train.loop" in result["modules"]  # the run itself went through the training stage
    beyond = [m for m in result["modules"]
              if m.split(".")[1:2] in (["export"], ["sim"], ["deploy"], ["pipeline"])]
    assert beyond == []
