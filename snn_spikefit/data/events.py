"""Event-camera data sets from a local folder, with tonic, never downloaded.

:func:`load_events` opens one of tonic's own dataset classes (``tonic.datasets.NMNIST``,
``DVSGesture``, ``POKERDVS``; more with :func:`register_event_dataset`) on a folder you
already hold, frames every sample with ``tonic.transforms.ToFrame`` into ``n_time_bins``
frames ``[T, P, H, W]`` (event counts, float32), and returns ``(train, test)``.
:func:`time_major` batches them time-major ``[T, B, P, H, W]`` for
``run(model, x, num_steps=None)``.

Nothing is downloaded: the dataset classes are used through a subclass whose
``download`` raises an error naming the folder and the layout it expects, and
that accepts any number of extracted sample files (tonic itself wants the full
archive present and extracted, or it downloads).

No recorded event data ships offline. For tests and trials, :func:`saccade_events`
emulates a camera sweeping over a still image (N-MNIST's three saccades) and
:func:`write_nmnist` writes the events in N-MNIST's binary format; these are
**emulated** events, not recordings.

>>> import numpy as np
>>> ev = saccade_events(np.eye(8, dtype=np.float32)[None])[0]
>>> ev.dtype.names, bool(len(ev) > 0), int(ev["x"].max()) < 34
(('x', 'y', 't', 'p'), True, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from ..errors import SpikeFitTypeError, SpikeFitValueError, refuse_duplicate

__all__ = [
    "EventDatasetSpec", "EVENT_DATASETS", "register_event_dataset", "event_dataset", "load_events",
    "time_major", "TimeMajor", "saccade_events", "write_nmnist", "write_emulated_nmnist", "NMNIST_DTYPE",
]

#: N-MNIST's event layout (tonic.datasets.NMNIST.dtype).
NMNIST_DTYPE = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])


@dataclass(frozen=True)
class EventDatasetSpec:
    """How to open one tonic dataset class from a local folder."""

    name: str                      # class name in tonic.datasets (also the folder under the root)
    suffix: str                    # file type of one extracted sample (".bin", ".npy")
    layout: str                    # where the files go below <root>/<name>/, for error messages
    splits: tuple[Any, Any] = (True, False)   # values of the split argument for (train, test)
    split_arg: str = "train"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpikeFitValueError(f"EventDatasetSpec name={self.name!r} is not allowed; use a tonic class name")


EVENT_DATASETS: dict[str, EventDatasetSpec] = {
    "NMNIST": EventDatasetSpec("NMNIST", ".bin", "Train/<digit>/*.bin and Test/<digit>/*.bin"),
    "DVSGesture": EventDatasetSpec("DVSGesture", ".npy", "ibmGestureTrain/<user>/<class>.npy and "
                                                         "ibmGestureTest/<user>/<class>.npy"),
    "POKERDVS": EventDatasetSpec("POKERDVS", ".npy", "pips_train/<suit>/*.npy and pips_test/<suit>/*.npy"),
}


def register_event_dataset(spec: EventDatasetSpec, *, replace: bool = False) -> EventDatasetSpec:
    """Make another tonic dataset class usable by :func:`load_events` (and ``--data tonic:NAME``)."""
    if not isinstance(spec, EventDatasetSpec):
        raise SpikeFitTypeError(f"spec must be an EventDatasetSpec, got {type(spec).__name__}")
    refuse_duplicate("an event data set named", spec.name, EVENT_DATASETS, replace=replace)
    EVENT_DATASETS[spec.name] = spec
    return spec


def _offline_class(spec: EventDatasetSpec, root: Path):
    try:
        import tonic.datasets
    except ImportError:
        raise SpikeFitValueError("event data needs tonic: pip install 'snn-spikefit[tonic]'") from None
    base = getattr(tonic.datasets, spec.name, None)
    if not isinstance(base, type):
        raise SpikeFitValueError(f"tonic.datasets has no class {spec.name!r} (tonic {tonic.__version__})")

    def refuse(self, *args, **kwargs):
        raise SpikeFitValueError(
            f"no {spec.name} files ({spec.suffix}) in {self.location_on_system!r}: put the extracted data set "
            f"there ({spec.layout}); nothing is downloaded")

    def exists(self) -> bool:  # any extracted sample is enough; tonic wants the full archive
        folder = Path(self.location_on_system, self.folder_name)
        return folder.is_dir() and next(folder.glob(f"**/*{spec.suffix}"), None) is not None

    # same class name: tonic puts the data in <root>/<class name>
    return type(base.__name__, (base,), {"download": refuse, "_copy_and_extract_local_data": refuse,
                                         "_check_exists": exists, "__module__": __name__})


class _Framed(Dataset):
    """A tonic dataset whose samples are framed to float32 tensors ``[T, P, H, W]``."""

    def __init__(self, events, n_time_bins: int) -> None:
        from tonic.transforms import ToFrame

        self.events = events
        self.to_frame = ToFrame(sensor_size=events.sensor_size, n_time_bins=n_time_bins)
        self.targets = list(events.targets)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        ev, label = self.events[index]
        return torch.from_numpy(np.asarray(self.to_frame(ev), dtype=np.float32)), int(label)


def event_dataset(name: str, root: str | os.PathLike, *, train: bool = True, n_time_bins: int = 10) -> Dataset:
    """One split of event data set ``name`` read from ``root``, framed to ``[T, P, H, W]`` float32."""
    if name not in EVENT_DATASETS:
        raise SpikeFitValueError(f"event data set {name!r} is not known; use one of {sorted(EVENT_DATASETS)} "
                                 f"(or register_event_dataset)")
    if isinstance(n_time_bins, bool) or not isinstance(n_time_bins, int) or n_time_bins < 1:
        raise SpikeFitValueError(f"n_time_bins={n_time_bins!r} is not allowed; use an int >= 1")
    root = Path(root)
    if not root.is_dir():
        raise SpikeFitValueError(f"event data folder {str(root)!r} does not exist; it must hold "
                                 f"{name}/{EVENT_DATASETS[name].layout}")
    spec = EVENT_DATASETS[name]
    cls = _offline_class(spec, root)
    split = spec.splits[0] if train else spec.splits[1]
    events = cls(str(root), **{spec.split_arg: split})
    if len(events) == 0:
        raise SpikeFitValueError(f"no {name} samples found in {events.location_on_system!r} "
                                 f"({'train' if train else 'test'} split; expected {spec.layout})")
    return _Framed(events, n_time_bins)


def load_events(name: str, root: str | os.PathLike, *, n_time_bins: int = 10, limit_train: int | None = None,
                limit_test: int | None = None) -> tuple[Dataset, Dataset]:
    """``(train, test)`` of event data set ``name`` from ``root``; ``limit_*`` keep the first N samples."""
    out = []
    for train, limit in ((True, limit_train), (False, limit_test)):
        ds = event_dataset(name, root, train=train, n_time_bins=n_time_bins)
        out.append(Subset(ds, range(min(limit, len(ds)))) if limit is not None else ds)
    return out[0], out[1]


class TimeMajor:
    """Re-iterable view of a loader of ``(x [B, T, ...], y)`` that yields ``(x [T, B, ...], y)``."""

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.loader:
            yield x.transpose(0, 1), y

    def __len__(self) -> int:
        return len(self.loader)


def time_major(loader: Iterable) -> TimeMajor:
    """Batches of framed events time-major, for ``run(model, x, num_steps=None)``, ``fit(num_steps=None)``."""
    return TimeMajor(loader)


# -- emulated events (tests, trials; not recordings) --------------------------------------------------

def _saccade_path(steps_per_saccade: int, amplitude: float) -> np.ndarray:
    """Camera offsets (dx, dy) along N-MNIST's three saccades: a triangle, back to the start."""
    corners = np.array([[0.0, 0.0], [amplitude / 2, amplitude], [amplitude, 0.0], [0.0, 0.0]])
    f = np.linspace(0.0, 1.0, steps_per_saccade, endpoint=False)[:, None]
    legs = [a + f * (b - a) for a, b in zip(corners[:-1], corners[1:])]
    return np.concatenate(legs + [corners[-1:]])


def saccade_events(images: np.ndarray, *, sensor_size: tuple[int, int] = (34, 34), scale: int | None = None,
                   amplitude: float = 6.0, steps_per_saccade: int = 10, threshold: float = 0.15,
                   saccade_us: int = 100_000) -> list[np.ndarray]:
    """Emulated DVS events of still images seen by a camera making three saccades (as N-MNIST was made).

    ``images``: ``[N, H, W]`` (or ``[N, 1, H, W]``) intensities in ``[0, 1]``, enlarged ``scale`` times
    (default: to fill the sensor less the saccade amplitude). At each of the ``3 * steps_per_saccade``
    camera positions the shifted image is compared with the previous one; a pixel whose intensity
    changed by more than ``threshold`` emits an event, polarity 1 for brighter. Returns one structured
    array (:data:`NMNIST_DTYPE`: x, y, t in microseconds, p) per image, sorted by time. Emulated, not
    recorded: use it to exercise pipelines, not to report event-data accuracy.
    """
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        imgs = imgs[:, 0]
    if imgs.ndim != 3:
        raise SpikeFitValueError(f"images must be [N, H, W] or [N, 1, H, W], got shape {imgs.shape}")
    width, height = sensor_size
    margin = int(np.ceil(amplitude)) + 1
    if scale is None:
        scale = max(1, min((width - margin) // imgs.shape[2], (height - margin) // imgs.shape[1]))
    big = imgs.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = big.shape[1:]
    if h + margin > height or w + margin > width:
        raise SpikeFitValueError(f"images of {imgs.shape[1:]} x scale {scale} plus the saccade amplitude "
                                 f"{amplitude} do not fit the sensor {sensor_size}")
    path = np.round(_saccade_path(steps_per_saccade, amplitude)).astype(int)       # [S, 2]
    frames = np.zeros((len(imgs), len(path), height, width), dtype=np.float32)
    for s, (dx, dy) in enumerate(path):  # a few camera positions; pixels are vectorised
        frames[:, s, dy:dy + h, dx:dx + w] = big
    diff = frames[:, 1:] - frames[:, :-1]                                         # [N, S-1, H, W]
    step_us = saccade_us / steps_per_saccade
    out = []
    for d in diff:
        s, y, x = np.nonzero(np.abs(d) > threshold)
        ev = np.zeros(len(s), dtype=NMNIST_DTYPE)
        ev["x"], ev["y"], ev["t"] = x, y, np.round((s + 1) * step_us).astype(int)
        ev["p"] = (d[s, y, x] > 0).astype(int)
        out.append(ev[np.argsort(ev["t"], kind="stable")])
    return out


def write_nmnist(events: np.ndarray, path: str | os.PathLike) -> None:
    """Write events in N-MNIST's binary format (5 bytes per event), as ``tonic.io.read_mnist_file`` reads it."""
    t = np.asarray(events["t"], dtype=np.int64)
    x, y, p = (np.asarray(events[k], dtype=np.int64) for k in ("x", "y", "p"))
    if len(t) and (t.min() < 0 or t.max() >= 2**23 or x.min() < 0 or x.max() > 255 or y.min() < 0
                   or y.max() > 239 or not np.isin(p, (0, 1)).all()):
        raise SpikeFitValueError("N-MNIST events need 0 <= t < 2**23 us, 0 <= x <= 255, 0 <= y <= 239, p in {0, 1}")
    raw = np.stack([x, y, (p << 7) | ((t >> 16) & 127), (t >> 8) & 255, t & 255], axis=1).astype(np.uint8)
    Path(path).write_bytes(raw.tobytes())


def write_emulated_nmnist(root: str | os.PathLike, images: np.ndarray, labels: Iterable[int], *,
                          train: bool = True, **saccade_kwargs) -> Path:
    """Write emulated events of ``images`` as an N-MNIST folder tree ``<root>/NMNIST/{Train,Test}/<label>/``.

    The files read with ``tonic.datasets.NMNIST`` (and :func:`load_events`). Emulated, not recorded.
    """
    folder = Path(root, "NMNIST", "Train" if train else "Test")
    for i, (ev, label) in enumerate(zip(saccade_events(images, **saccade_kwargs), labels)):
        (folder / str(int(label))).mkdir(parents=True, exist_ok=True)
        write_nmnist(ev, folder / str(int(label)) / f"{i:05d}.bin")
    return folder
