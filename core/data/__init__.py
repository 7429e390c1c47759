"""Dataset registry. Adding a source: one module + one import line below."""

from core.data.base import (
    BatchLoader,
    DatasetBundle,
    DatasetParams,
    DatasetSource,
    MultimodalDataset,
    TensorMultimodalDataset,
    get_dataset,
    list_datasets,
    move_batch,
    register_dataset,
)

from core.data import synthetic  # noqa: F401,E402
from core.data import npz  # noqa: F401,E402
from core.data import parquet  # noqa: F401,E402
from core.data import mfeat  # noqa: F401,E402
from core.data import audiovisual  # noqa: F401,E402
from core.data import mmsa  # noqa: F401,E402

__all__ = [
    "BatchLoader",
    "DatasetBundle",
    "DatasetParams",
    "DatasetSource",
    "MultimodalDataset",
    "TensorMultimodalDataset",
    "get_dataset",
    "list_datasets",
    "move_batch",
    "register_dataset",
]
