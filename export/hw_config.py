"""Hardware configurations: bit widths, ranges, energy and time per operation, each figure with its source.

A config is a YAML file in ``hw_configs/`` (shipped with the package) or any path the user gives.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
from pathlib import Path
from typing import Any

import yaml

from spikefold.errors import ConfigError


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
        if not isinstance(entry, dict) or "value" not in entry:
            raise ConfigError(f"hw_config '{self.name}': {section}.{key}.value is missing; give the figure with "
                              "its unit and source")
        value = entry["value"]
        # bool is an int to Python, but 'yes' is no energy.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"hw_config '{self.name}': {section}.{key}.value is {value!r}; it must be a finite "
                              "number >= 0 (write 23.6e-12, not '23.6 pJ')")
        return Figure(
            value=float(value),
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
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"hw_config {name_or_path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"hw_config {name_or_path} must be a mapping with a 'name' key")
    return HwConfig(name=str(raw["name"]), description=str(raw.get("description", "")), raw=raw)
