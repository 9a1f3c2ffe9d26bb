"""spikefold's foundation: what every stage may import, and which imports no stage. The named errors
(:mod:`~spikefold.core.errors`), the one atomic file writer (:mod:`~spikefold.core.files`) and the one device
resolver (:mod:`~spikefold.core.devices`). The stages (train -> export -> sim -> deploy) build on it; the CLI, the
pipeline and the reports (:mod:`spikefold.cli`, :mod:`spikefold.pipeline`) are the roof over all of them."""
