"""Hardware configurations (one YAML per target), shipped as package data. See ``spikefold.export.hw_config``."""
