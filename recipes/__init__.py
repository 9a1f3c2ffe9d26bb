"""Training recipes (YAML), shipped with the package so that `spikefold train --recipe NAME` works outside a clone."""
