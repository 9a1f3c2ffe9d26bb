"""Errors a user can act on. The CLI prints their message (no traceback) and exits with status 2.

Each message names the thing at fault (a file, a node, a layer, a parameter) and what to change.
"""


class SpikefoldError(Exception):
    """Base class for every error spikefold reports to a user."""


class CheckpointError(SpikefoldError):
    """A checkpoint is missing, unreadable or not a spikefold checkpoint."""


class NIRFileError(SpikefoldError):
    """A NIR file is missing, unreadable, or holds a graph spikefold cannot map."""


class HardwareRangeError(SpikefoldError):
    """A parameter does not fit the integer range the hardware config allows."""


class StateRangeError(SpikefoldError):
    """Neuron state would wrap or saturate its 24-bit register on calibration data."""


class TargetError(SpikefoldError):
    """An unknown deployment target, or one that cannot be reached on this machine."""


class ConfigError(SpikefoldError):
    """A hardware config or option is malformed or out of range."""


class DataError(SpikefoldError):
    """Input data of the wrong shape or range for the model."""


class MappingError(SpikefoldError):
    """A layer does not fit the per-core limits (neurons, synapses, axons) of a hardware config."""


class SanaFeError(SpikefoldError):
    """SANA-FE (the optional second energy engine) is missing or cannot represent the network exactly."""


class NetxFileError(SpikefoldError):
    """A lava-dl netx HDF5 file is missing, unreadable, or holds layers spikefold cannot map."""


class ExportFormatError(SpikefoldError):
    """The integer network uses a feature the chosen exchange format (netx, ONNX) cannot express."""
