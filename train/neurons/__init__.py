"""Spiking neuron types. A model config names one (``kind``) and its options; :func:`build` validates them and
makes the layer. Each type's module states its dynamics once, as a ``RecurrenceForm`` (see ``base``); training,
the fused kernels and export all derive from it.

    lif           LIF / PLIF, reset to zero or by subtraction, fixed threshold, four surrogate shapes
    atgo          DS-ATGO: adaptive per-timestep threshold + threshold-driven surrogate width
    agl           MPD-AGL: surrogate width from the preceding BatchNorm's gamma
    mpinit_trsg   MP-Init learned initial potential + threshold-robust surrogate, learnable tau and Vthr
    psg_pda       PSG learnable surrogate width + PDA regulariser (reconstructions)

One name means one thing in every type: ``beta`` is the decay factor per step (H = beta U + I), ``tau`` a time
constant (decay 1 - 1/tau), ``reset`` is "zero" or "subtract" (the integer network's and Lava's words, too).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spikefold.core.errors import ConfigError
from spikefold.train import surrogates
from spikefold.train.neurons.agl import AGL, AGLOptions
from spikefold.train.neurons.atgo import ATGO, TGO_VARIANTS, ATGOOptions
from spikefold.train.neurons.base import RESETS, SpikingNeuron
from spikefold.train.neurons.lif import LIF, LIFOptions
from spikefold.train.neurons.mpinit_trsg import MPInitTrSG, MPInitTrSGOptions
from spikefold.train.neurons.psg_pda import PSGPDA, PSGPDAOptions

NEURONS = {
    "lif": (LIF, LIFOptions),
    "atgo": (ATGO, ATGOOptions),
    "agl": (AGL, AGLOptions),
    "mpinit_trsg": (MPInitTrSG, MPInitTrSGOptions),
    "psg_pda": (PSGPDA, PSGPDAOptions),
}

__all__ = ["NEURONS", "NeuronConfig", "SpikingNeuron", "build"]

# Names that changed when every type came to say one thing one way (config and checkpoint format 1 used them):
# a config that still says one gets a named error with the new name; a checkpoint is mapped (old_names_mapped).
_DECAY_RENAMED = {"tau": "beta", "learn_tau": "learn_beta"}  # tau was the decay factor in these two
RENAMED_OPTIONS = {"atgo": _DECAY_RENAMED, "agl": _DECAY_RENAMED}
RENAMED_PARAMETERS = {"atgo": {"tau_logit": "beta_logit"}, "agl": {"tau_logit": "beta_logit"}}
RENAMED_RESETS = {"hard": "zero", "soft": "subtract"}


@dataclasses.dataclass
class NeuronConfig:
    kind: str = "lif"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "options": dict(self.options)}

    @classmethod
    def from_dict(cls, d: dict) -> "NeuronConfig":
        unknown = set(d) - {"kind", "options"}
        if unknown:
            raise ConfigError(f"neuron config: unknown keys {sorted(unknown)}; valid: kind, options")
        return cls(kind=str(d.get("kind", "lif")), options=dict(d.get("options", {})))


def _choice(kind: str, name: str, value: str, valid) -> None:
    if value not in valid:
        raise ConfigError(f"neuron '{kind}': {name} = '{value}' is not valid; choose one of: {', '.join(valid)}")


def options_for(cfg: NeuronConfig, timesteps: int):
    """The validated options dataclass of ``cfg``; a named error lists what is valid when something is not."""
    if cfg.kind not in NEURONS:
        raise ConfigError(f"unknown neuron type '{cfg.kind}'; valid: {', '.join(NEURONS)}")
    _, options_type = NEURONS[cfg.kind]
    fields = {f.name for f in dataclasses.fields(options_type)}
    given = dict(cfg.options)
    for old, new in RENAMED_OPTIONS.get(cfg.kind, {}).items():
        if old in given:
            raise ConfigError(f"neuron '{cfg.kind}': option '{old}' is now called '{new}' ('beta' is the decay "
                              f"factor per step in every type, 'tau' a time constant); write {new}={given[old]}")
    if given.get("reset") in RENAMED_RESETS:
        raise ConfigError(f"neuron '{cfg.kind}': reset '{given['reset']}' is now called "
                          f"'{RENAMED_RESETS[given['reset']]}' (the integer network's and Lava's word); write "
                          f"reset={RENAMED_RESETS[given['reset']]}")
    if "timesteps" in fields:
        given.setdefault("timesteps", timesteps)
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ConfigError(f"neuron '{cfg.kind}' has no option(s) {unknown}; valid options: "
                          f"{', '.join(sorted(fields - {'timesteps'}))}")
    opts = options_type(**given)
    k = cfg.kind
    if hasattr(opts, "reset"):
        _choice(k, "reset", opts.reset, RESETS)
    if hasattr(opts, "surrogate"):
        valid = ("sigmoid", "arctan") if k == "psg_pda" else surrogates.SHAPES
        _choice(k, "surrogate", opts.surrogate, valid)
    if k == "atgo":
        _choice(k, "tgo", opts.tgo, TGO_VARIANTS)
        if opts.timesteps != timesteps:
            raise ConfigError(f"neuron 'atgo': its threshold schedule has {opts.timesteps} timesteps but the "
                              f"model runs {timesteps}; leave 'timesteps' out of its options")
    for name in ("width", "vth", "vthr", "k0"):
        if hasattr(opts, name) and getattr(opts, name) <= 0:
            raise ConfigError(f"neuron '{k}': {name} must be > 0, got {getattr(opts, name)}")
    if hasattr(opts, "momentum") and not 0 < opts.momentum <= 1:
        raise ConfigError(f"neuron '{k}': momentum must be in (0, 1], got {opts.momentum}")
    return opts


def old_names_mapped(kind: str, options: dict, state_dict: dict) -> tuple[dict, dict]:
    """A neuron's options and a model's state dict written before the renames above, in today's names."""
    options = {RENAMED_OPTIONS.get(kind, {}).get(k, k): v for k, v in options.items()}
    if "reset" in options:
        options["reset"] = RENAMED_RESETS.get(options["reset"], options["reset"])
    renamed = RENAMED_PARAMETERS.get(kind, {})

    def key_now(key: str) -> str:
        module, dot, name = key.rpartition(".")
        return module + dot + renamed.get(name, name)

    return options, {key_now(key): value for key, value in state_dict.items()}


def build(cfg: NeuronConfig, timesteps: int) -> SpikingNeuron:
    neuron_type, _ = NEURONS[cfg.kind] if cfg.kind in NEURONS else (None, None)
    opts = options_for(cfg, timesteps)
    try:
        return neuron_type(opts)
    except ValueError as exc:
        raise ConfigError(f"neuron '{cfg.kind}': {exc}") from None
