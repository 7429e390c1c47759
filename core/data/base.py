"""One dataset interface for every source (synthetic, npz/parquet features, real layouts).

Every dataset yields dict samples ``{"<modality>": tensor, ..., "label": y, "idx": int}``
where ``idx`` is the sample's position in its split (so per-sample diagnostics such as the
modality gap can be keyed by it). A :class:`DatasetBundle` carries the splits plus what the
engine needs to build a model (modality names, kinds and shapes, task, class names) and
what the dashboard shows as reference (e.g. the synthetic presets' Bayes ceilings).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from modalscope.errors import ConfigError

SPLITS = ("train", "valid", "test")


class DatasetParams(BaseModel):
    """Base for a dataset's config block; subclasses declare ``name: Literal["..."]``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MultimodalDataset(torch.utils.data.Dataset):
    """Map-style dataset of dict samples; subclasses implement ``__len__`` and ``get``."""

    modalities: list[str]

    def get(self, i: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict:
        item = self.get(int(i))
        item["idx"] = int(i)
        return item


class TensorMultimodalDataset(MultimodalDataset):
    """In-memory dataset: one tensor per modality + labels. Batches are sliced, not collated."""

    def __init__(self, tensors: dict[str, torch.Tensor], labels: torch.Tensor):
        n = len(labels)
        for m, t in tensors.items():
            if len(t) != n:
                raise ValueError(f"modality {m!r} has {len(t)} rows, labels have {n}")
        self.tensors = tensors
        self.labels = labels
        self.modalities = list(tensors)

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, i: int) -> dict:
        out = {m: t[i] for m, t in self.tensors.items()}
        out["label"] = self.labels[i]
        return out

    def batch(self, idx: torch.Tensor) -> dict:
        out = {m: t[idx] for m, t in self.tensors.items()}
        out["label"] = self.labels[idx]
        out["idx"] = idx
        return out


@dataclass
class DatasetBundle:
    splits: dict[str, MultimodalDataset]
    modalities: list[str]
    kinds: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    task: str = "classification"
    class_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names) if self.task == "classification" else 1

    def split(self, name: str) -> MultimodalDataset | None:
        return self.splits.get(name)

    def select_modalities(self, keep: list[str]) -> "DatasetBundle":
        """View of the bundle restricted to ``keep`` (batches still carry every tensor)."""
        return DatasetBundle(
            splits=self.splits,
            modalities=[m for m in self.modalities if m in keep],
            kinds={m: k for m, k in self.kinds.items() if m in keep},
            shapes={m: s for m, s in self.shapes.items() if m in keep},
            task=self.task,
            class_names=self.class_names,
            info=self.info,
        )


class BatchLoader:
    """Iterates a split in batches of dict tensors.

    In-memory datasets are sliced directly (no per-item collate, which dominates small-model
    step time); other datasets go through a ``torch.utils.data.DataLoader``. Shuffling uses
    a generator seeded per epoch, so data order is a pure function of (seed, epoch) and a
    resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(
        self,
        dataset: MultimodalDataset,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        indices: np.ndarray | None = None,
        drop_last: bool = False,
        num_workers: int = 0,
    ):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.indices = None if indices is None else torch.as_tensor(np.asarray(indices), dtype=torch.long)
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        base = self.indices if self.indices is not None else torch.arange(len(self.dataset))
        if not self.shuffle:
            return base
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return base[torch.randperm(len(base), generator=g)]

    def __len__(self) -> int:
        n = len(self.indices) if self.indices is not None else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        order = self._order()
        n = len(order)
        stop = n - n % self.batch_size if self.drop_last else n
        if isinstance(self.dataset, TensorMultimodalDataset):
            for s in range(0, stop, self.batch_size):
                yield self.dataset.batch(order[s : s + self.batch_size])
            return
        subset = torch.utils.data.Subset(self.dataset, order[:stop].tolist())
        loader = torch.utils.data.DataLoader(
            subset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers, collate_fn=_collate
        )
        yield from loader


def _collate(items: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        if isinstance(vals[0], torch.Tensor):
            out[k] = torch.stack(vals)
        else:
            out[k] = torch.as_tensor(vals)
    return out


def move_batch(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


class DatasetSource:
    """A registered data source: ``Params`` + ``build(params) -> DatasetBundle``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[DatasetParams]] = DatasetParams

    @classmethod
    def modalities(cls, params: DatasetParams) -> list[str] | None:
        """Modality names known from the config alone (None when only the files tell)."""
        return None

    @classmethod
    def build(cls, params: DatasetParams) -> DatasetBundle:
        raise NotImplementedError


_REGISTRY: dict[str, type[DatasetSource]] = {}


def register_dataset(name: str) -> Callable[[type[DatasetSource]], type[DatasetSource]]:
    def deco(cls: type[DatasetSource]) -> type[DatasetSource]:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} registered twice")
        f = cls.Params.model_fields.get("name")
        if f is None or f.default != name:
            raise ValueError(f"{cls.__name__}.Params must declare name: Literal[{name!r}] = {name!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def get_dataset(name: str) -> type[DatasetSource]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def list_datasets(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))
