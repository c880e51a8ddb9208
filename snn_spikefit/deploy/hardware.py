"""Neuromorphic chip profiles: limits and energy figures, each with its source.

A :class:`HardwareProfile` is a frozen dataclass. The built-in ones are read
from ``snn_spikefit/deploy/profiles/*.json``, where every value carries a source and
values that are secondary or unconfirmed are listed in ``uncertain``. A value
that is not published is ``None`` and shown as unknown: nothing is invented.
Users add their own with :func:`register_profile`.

>>> p = get_profile("truenorth")
>>> p.distinct_weights_per_neuron, p.fan_in, p.e_ac_pj
(4, 256, 26.0)
>>> p.wrap_arguments(m=None, bits=None, granularity=None)
(4, 8, 'channel')
>>> "generic-45nm" in list_profiles()
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any, Mapping

from ..errors import SpikeFitTypeError, SpikeFitValueError, refuse_duplicate
from ..table import Table

__all__ = ["HardwareProfile", "list_profiles", "get_profile", "register_profile", "as_profile",
           "WRAP_MAX_BITS", "SYNAPSE_MEMORY"]

#: Widest codebook integers :func:`snn_spikefit.wrap` makes (its ``bits`` is 2..8).
WRAP_MAX_BITS = 8
#: Values of :attr:`HardwareProfile.synapse_memory`.
SYNAPSE_MEMORY = ("nonzero", "dense", None)

_LIMITS = ("weight_bits", "distinct_weights_per_neuron", "distinct_weights_per_layer", "neurons_per_core",
           "fan_in", "cores", "max_neurons", "max_synapses", "max_inputs", "max_kernel_size",
           "membrane_bits", "current_bits", "threshold_bits", "decay_bits", "bias_bits")
#: Decay arithmetics a profile can name (see snn_spikefit.neurons.state.StateFormat).
_DECAYS = ("fraction", "shift")


@dataclass(frozen=True)
class HardwareProfile:
    """What a chip can hold and what an operation costs on it. ``None`` = not published / no limit."""

    name: str                                      # key for get_profile / wrap(hardware=...)
    title: str = ""                                # human-readable chip name
    weight_bits: int | None = None                 # signed integer bits of one synaptic weight
    distinct_weights_per_neuron: int | None = None  # distinct non-zero weights one neuron may use
    distinct_weights_per_layer: int | None = None  # distinct non-zero weights per layer (per core on chip)
    neurons_per_core: int | None = None
    fan_in: int | None = None                      # inputs (synapses) into one neuron
    cores: int | None = None
    max_neurons: int | None = None                 # neurons per chip
    max_synapses: int | None = None                # synapses per chip
    max_inputs: int | None = None                  # input channels of the chip
    max_kernel_size: int | None = None             # largest conv kernel side
    layer_fits_one_core: bool = False              # each layer must be mapped onto a single core
    conv: bool | None = None                       # native convolution; None = unknown
    neuron_models: tuple[str, ...] | None = None   # allowed ("IF", "LIF", "CUBA-LIF", "AdEx"); None = any
    e_mac_pj: float | None = None                  # energy of a multiply-accumulate, pJ
    e_ac_pj: float | None = None                   # energy of an accumulate (synaptic op), pJ
    e_neuron_pj: float | None = None               # energy of one neuron update, pJ (optional term)
    #: what the synapse budget counts: "nonzero" (a zero weight frees its synapse: sparse encodings),
    #: "dense" (whole crossbars / blocks are allocated, zeros included); None = unknown (check counts non-zero)
    synapse_memory: str | None = None
    graded_spikes: bool | None = None              # a spike carries a value (multi-level neurons); None = unknown
    e_graded_pj: float | None = None               # energy of one graded-spike synaptic op, pJ (None: e_ac_pj)
    # neuron state (snn_spikefit.neurons.state): what chip-precision state simulates and check reports
    membrane_bits: int | None = None               # signed bits of the membrane potential
    current_bits: int | None = None                # signed bits of the synaptic current
    threshold_bits: int | None = None              # magnitude bits of a positive threshold (weight units)
    decay: str | None = None                       # "fraction" (x * c >> decay_bits) or "shift" (x - x >> k)
    decay_bits: int | None = None                  # fraction bits of c, or the largest shift k
    state_fraction_bits: int | None = None         # state LSBs per weight LSB = 2**this (inputs shifted left)
    current_overflow: str | None = None            # "saturate" or "wrap"
    state_order: str | None = None                 # "xylo": the chip's own update order (neurons/xylo_state.py)
    bias_bits: int | None = None                   # signed bits of a bias held as integer weight LSBs
    chip_rules: tuple[str, ...] = ()               # chip-specific check rules this chip obeys (deploy/chip_rules.py)
    uncertain: tuple[str, ...] = ()                # fields whose value is secondary or unconfirmed
    sources: Mapping[str, str] = field(default_factory=dict)  # field -> where the value comes from
    notes: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpikeFitValueError(f"HardwareProfile name={self.name!r} is not allowed; use a non-empty str")
        for f in _LIMITS:
            v = getattr(self, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise SpikeFitValueError(f"profile {self.name!r}: {f}={v!r} is not allowed; use an int >= 1 or None")
        if self.graded_spikes is not None and not isinstance(self.graded_spikes, bool):
            raise SpikeFitValueError(f"profile {self.name!r}: graded_spikes={self.graded_spikes!r} is not allowed; "
                                     f"use True, False or None")
        for f in ("e_mac_pj", "e_ac_pj", "e_neuron_pj", "e_graded_pj"):
            v = getattr(self, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise SpikeFitValueError(f"profile {self.name!r}: {f}={v!r} is not allowed; use a number >= 0 or None")
        if self.synapse_memory not in SYNAPSE_MEMORY:
            raise SpikeFitValueError(f"profile {self.name!r}: synapse_memory={self.synapse_memory!r} is not allowed; "
                                     f"use one of {SYNAPSE_MEMORY}")
        if self.decay not in (None, *_DECAYS) or self.current_overflow not in (None, "saturate", "wrap"):
            raise SpikeFitValueError(f"profile {self.name!r}: decay={self.decay!r} / current_overflow="
                                     f"{self.current_overflow!r} is not allowed; use one of {_DECAYS} / "
                                     f"'saturate', 'wrap' (or None)")
        if self.state_order not in (None, "framework", "xylo"):
            raise SpikeFitValueError(f"profile {self.name!r}: state_order={self.state_order!r} is not allowed; "
                                     f"use 'framework', 'xylo' or None")
        v = self.state_fraction_bits
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise SpikeFitValueError(f"profile {self.name!r}: state_fraction_bits={v!r} is not allowed; "
                                     f"use an int >= 0 or None")
        if self.neuron_models is not None:
            object.__setattr__(self, "neuron_models", tuple(self.neuron_models))
        object.__setattr__(self, "uncertain", tuple(self.uncertain))
        object.__setattr__(self, "chip_rules", tuple(self.chip_rules))
        if not all(isinstance(r, str) for r in self.chip_rules):
            raise SpikeFitValueError(f"profile {self.name!r}: chip_rules={self.chip_rules!r} is not allowed; "
                                     f"use a tuple of rule names such as ('speck_memory',)")
        known = {f.name for f in fields(self)}
        bad = [u for u in (*self.uncertain, *self.sources) if u not in known]
        if bad:
            raise SpikeFitValueError(f"profile {self.name!r}: uncertain/sources name unknown fields {bad}; "
                                     f"fields: {sorted(known)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "HardwareProfile":
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            raise SpikeFitValueError(f"unknown HardwareProfile fields {extra}; allowed: {sorted(known)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["neuron_models"] = list(self.neuron_models) if self.neuron_models is not None else None
        out["uncertain"], out["sources"] = list(self.uncertain), dict(self.sources)
        return out

    @property
    def unknown(self) -> list[str]:
        """Fields that are not published for this chip (``None``)."""
        return [f.name for f in fields(self) if getattr(self, f.name) is None]

    def describe(self) -> Table:
        """Every value with its status (known / uncertain / unknown) and source."""
        table = Table(["field", "value", "status", "source"], title=f"{self.name}: {self.title}")
        for f in fields(self):
            if f.name in ("name", "title", "uncertain", "sources", "notes"):
                continue
            v = getattr(self, f.name)
            status = "unknown" if v is None else "uncertain" if f.name in self.uncertain else "known"
            table.add_row([f.name, v, status, self.sources.get(f.name, "")])
        return table

    def __str__(self) -> str:
        return str(self.describe())

    # -- wrap(model, hardware=...) ----------------------------------------------------------
    def wrap_arguments(self, *, m: int | None, bits: int | None, granularity: str | None
                       ) -> tuple[int | None, int | None, str | None]:
        """``(m, bits, granularity)`` for :func:`snn_spikefit.wrap`: the user's values, the rest from the chip.

        * A chip with a per-neuron weight table (TrueNorth: 4 per neuron) gives
          ``m`` = that size and ``granularity="channel"``.
        * A chip with a per-layer/per-core table (DYNAP-SE2: 16) gives ``m`` and
          ``granularity="layer"``.
        * ``bits`` = the chip's weight bits, capped at 8 (wrap's widest codebook):
          8-bit codebook integers are exactly representable on a wider chip
          (TrueNorth's and Loihi's 9-bit signed weights); with only a few values
          per neuron, fewer bits would lose precision for nothing.
        * A chip with per-synapse weights (Loihi, Speck, Xylo...) has no codebook
          limit: ``m = 2**bits - 1`` with ``granularity="layer"``, i.e. plain
          ``bits``-bit quantization through one codebook per layer. With no
          weight bits known either, wrap's own defaults apply.

        Raises :class:`~snn_spikefit.errors.SpikeFitValueError` when an explicit
        value breaks a limit of the chip.
        """
        per_neuron, per_layer = self.distinct_weights_per_neuron, self.distinct_weights_per_layer
        chip_bits = None if self.weight_bits is None else min(self.weight_bits, WRAP_MAX_BITS)
        if bits is not None and self.weight_bits is not None and not isinstance(bits, bool) \
                and isinstance(bits, int) and bits > self.weight_bits:
            raise SpikeFitValueError(
                f"bits={bits} is not allowed on {self.name}: its weights have {self.weight_bits} bits "
                f"(use bits in 2..{min(self.weight_bits, WRAP_MAX_BITS)}: wrap quantizes codebooks to at "
                f"most {WRAP_MAX_BITS}-bit integers)")
        if granularity is None:
            granularity = "channel" if per_neuron is not None else "layer"
        if granularity == "channel" and per_layer is not None:
            raise SpikeFitValueError(
                f"granularity='channel' is not allowed on {self.name}: it holds {per_layer} distinct weights "
                f"per layer/core, which per-channel codebooks would exceed (use granularity='layer')")
        limit = per_neuron if per_neuron is not None else per_layer
        if bits is None:
            bits = chip_bits
        if isinstance(m, int) and not isinstance(m, bool) and limit is not None and m > limit:
            where = "neuron" if per_neuron is not None else "layer"
            raise SpikeFitValueError(
                f"m={m} is not allowed on {self.name}: it holds at most {limit} distinct weights per {where} "
                f"(use m <= {limit})")
        if m is None:
            if limit is not None:
                m = limit
            elif isinstance(bits, int) and not isinstance(bits, bool):
                m = 2**bits - 1
        return m, bits, granularity


_REGISTRY: dict[str, HardwareProfile] = {}
_LOADED = False


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for entry in sorted(resources.files("snn_spikefit.deploy").joinpath("profiles").iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text())
        for item in data.get("profiles", []):
            profile = HardwareProfile.from_dict(item)
            _REGISTRY.setdefault(profile.name, profile)


def list_profiles() -> list[str]:
    """Names of every known profile (built-in and registered)."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_profile(name: str) -> HardwareProfile:
    """The profile called ``name``; unknown names raise an error listing the known ones."""
    _load_builtin()
    if not isinstance(name, str):
        raise SpikeFitTypeError(f"profile name must be a str, got {name!r} ({type(name).__name__})")
    if name not in _REGISTRY:
        raise SpikeFitValueError(f"unknown hardware profile {name!r}; known profiles: {list_profiles()}")
    return _REGISTRY[name]


def register_profile(profile: HardwareProfile, *, replace: bool = False) -> HardwareProfile:
    """Make ``profile`` known by its name (to :func:`get_profile`, ``wrap``, ``evaluate``, ``check``)."""
    _load_builtin()
    if not isinstance(profile, HardwareProfile):
        raise SpikeFitTypeError(f"profile must be a HardwareProfile, got {type(profile).__name__}")
    refuse_duplicate("a profile named", profile.name, _REGISTRY, replace=replace)
    _REGISTRY[profile.name] = profile
    return profile


def as_profile(profile: str | HardwareProfile) -> HardwareProfile:
    """A profile from its name, or the profile itself."""
    if isinstance(profile, HardwareProfile):
        return profile
    return get_profile(profile)
