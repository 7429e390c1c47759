"""Dataset registry. Adding a source: one module + one import line below."""

from modalscope.data.base import (
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

from modalscope.data import synthetic  # noqa: F401,E402
from modalscope.data import npz  # noqa: F401,E402
from modalscope.data import parquet  # noqa: F401,E402
from modalscope.data import mfeat  # noqa: F401,E402
from modalscope.data import audiovisual  # noqa: F401,E402
from modalscope.data import mmsa  # noqa: F401,E402

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
