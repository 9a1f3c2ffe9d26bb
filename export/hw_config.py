"""Hardware configurations: bit widths, ranges, energy and time per operation, each figure with its source.

A config is a YAML file in ``hw_configs/`` (shipped with the package) or any path the user gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.resources
import math
from pathlib import Path
from typing import Any

import yaml

from spikefold.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Figure:
    """One number of a hardware config, with where it comes from."""

    value: float
    unit: str = ""
    source: str = ""
    proxy: bool = False


@dataclasses.dataclass(frozen=True)
class HwConfig:
    name: str
    description: str
    raw: dict[str, Any]

    def _section(self, section: str) -> dict[str, Any]:
        try:
            return self.raw[section]
        except KeyError:
            raise ConfigError(f"hw_config '{self.name}' has no '{section}' section") from None

    def bits(self, key: str) -> int:
        """An integer bit width from the ``formats`` section (e.g. ``weight_bits``)."""
        entry = self._section("formats").get(key)
        if entry is None or "value" not in entry:
            raise ConfigError(f"hw_config '{self.name}': formats.{key}.value is missing")
        return int(entry["value"])

    def range(self, key: str) -> tuple[int, int]:
        """An inclusive integer range from the ``formats`` section (e.g. ``weight_exp``)."""
        entry = self._section("formats").get(key)
        if entry is None or "min" not in entry or "max" not in entry:
            raise ConfigError(f"hw_config '{self.name}': formats.{key} needs 'min' and 'max'")
        return int(entry["min"]), int(entry["max"])

    def figure(self, section: str, key: str) -> Figure:
        entry = self._section(section).get(key)
        if entry is None or "value" not in entry:
            raise ConfigError(f"hw_config '{self.name}': {section}.{key}.value is missing")
        return Figure(
            value=float(entry["value"]),
            unit=str(entry.get("unit", "")),
            source=str(entry.get("source", "")),
            proxy=bool(entry.get("proxy", False)),
        )


def available() -> list[str]:
    """Names of the hardware configs shipped with spikefold."""
    files = importlib.resources.files("spikefold.hw_configs")
    return sorted(p.name[: -len(".yaml")] for p in files.iterdir() if p.name.endswith(".yaml"))


def load(name_or_path: str | Path) -> HwConfig:
    """Load a shipped config by name (``loihi2``) or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"hw_config file {path} does not exist")
        text = path.read_text()
    else:
        resource = importlib.resources.files("spikefold.hw_configs") / f"{name_or_path}.yaml"
        if not resource.is_file():
            raise ConfigError(
                f"unknown hw_config '{name_or_path}'; shipped configs: {', '.join(available())}, "
                "or give the path of a .yaml file"
            )
        text = resource.read_text()
    try:
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml's: 10x faster
    except yaml.YAMLError as exc:
        raise ConfigError(f"hw_config {name_or_path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"hw_config {name_or_path} must be a mapping with a 'name' key")
    _check_figures(raw, str(name_or_path))
    return HwConfig(name=str(raw["name"]), description=str(raw.get("description", "")), raw=raw)


# What each section's numbers may be: energies and times are costs (>= 0), limits and formats are counts and
# bit widths (integers; limits > 0). A negative energy would report a negative total, a string would fail mid-run.
_FIGURE_RULES = {"energy": ("a number >= 0", lambda v: v >= 0), "timing": ("a number >= 0", lambda v: v >= 0),
                 "limits": ("a number > 0", lambda v: v > 0)}


def _check_figures(raw: dict[str, Any], source: str) -> None:
    """Every figure a config gives is a finite number in its section's range, so that a bad one is named at load
    and not met halfway through an estimate."""
    for section, entries in raw.items():
        if section not in (*_FIGURE_RULES, "formats"):
            continue
        if not isinstance(entries, dict):
            raise ConfigError(f"hw_config {source}: '{section}' must be a mapping of figures")
        for key, entry in entries.items():
            if not isinstance(entry, dict):
                raise ConfigError(f"hw_config {source}: {section}.{key} must be a mapping like "
                                  "{value: ..., unit: ...}")
            for field in ("value", "min", "max") if section == "formats" else ("value",):
                if field not in entry:
                    continue
                value = entry[field]
                if isinstance(value, str):  # PyYAML reads 1e-12 (no dot) as a string: take it if it is a number
                    with contextlib.suppress(ValueError):
                        value = float(value)
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if section == "formats":
                    if not isinstance(value, int) or isinstance(value, bool):
                        raise ConfigError(f"hw_config {source}: formats.{key}.{field} = {value!r} must be an integer")
                    continue
                rule, holds = _FIGURE_RULES[section]
                if not number or not math.isfinite(value) or not holds(value):
                    raise ConfigError(f"hw_config {source}: {section}.{key}.value = {value!r} must be {rule}; "
                                      "fix the figure in the YAML file")
