"""Features of a whole dataset on disk: written in shards, sharded over ranks, read memory-mapped.

:func:`extract_dataset` streams a dataset through :class:`~netlens.FeatureExtractor`
and writes every layer's features as ``.npy`` shards plus a manifest;
:func:`load_features` reads them back in dataset order without loading them.

Layout of ``out_dir``::

    plan.json                what is extracted (model, layers, shapes, shard size)
    shards/00003.json        one record per finished shard (sizes, SHA-256)
    <layer>/00003.npy        rows [3 * shard_size, 4 * shard_size) of that layer
    labels/00003.npy         the dataset's labels, when its items carry them
    manifest.json            written last: everything above, checked

A shard is a contiguous block of dataset indices. Under an initialised
``torch.distributed`` process group the shards are dealt to the ranks with a
``DistributedSampler`` over the shards (no shard twice: the sampler's padding
is dropped), each rank writes its own files, and rank 0 writes the manifest
after a barrier. Contiguous shards keep the output independent of the number
of ranks: one process and two write the same files, and a run interrupted
under one world size resumes under another.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from netlens._checks import check_labels, check_positive_int, model_device, split_batch
from netlens.errors import CorruptFeaturesError
from netlens.extract import FeatureExtractor, Reduce, _reduce
from netlens.hooks import eval_mode
from netlens.layers import LayerLike, channel_axis

__all__ = ["FeatureArray", "Features", "CorruptFeaturesError", "extract_dataset", "load_features"]

FORMAT = 1
_DTYPES = {"float16": np.float16, "float32": np.float32}
#: Default shard size: about this many bytes of features per shard (all layers).
_SHARD_BYTES = 256 * 2**20
#: The key of the labels among a shard's files (no module name has a colon first).
_LABELS = ":labels"


# --- writing --------------------------------------------------------------------


def extract_dataset(
    model: nn.Module,
    layers: LayerLike | Sequence[LayerLike],
    dataset: Dataset,
    out_dir: str | os.PathLike[str],
    *,
    batch_size: int = 64,
    reduce: Reduce = None,
    dtype: torch.dtype | str = torch.float16,
    num_workers: int = 0,
    shard_size: int | None = None,
    progress: bool = True,
) -> Features:
    """Write the features of every item of ``dataset`` at ``layers`` to ``out_dir``.

    Parameters
    ----------
    model
        Any ``nn.Module``; run in eval mode without gradients, on its device.
    layers
        One layer or several (names or modules), as for :class:`FeatureExtractor`.
    dataset
        A map-style dataset (``len`` and ``[i]``) whose items are images
        ``(C, H, W)`` or ``(image, label, ...)`` tuples; labels are kept.
    out_dir
        Folder to write; created if missing. A folder that holds part of the
        same extraction is resumed: finished shards are not computed again.
        One that holds a different extraction is refused.
    batch_size
        Images per forward pass. Batches never span two shards.
    reduce
        ``None`` (full maps), ``"mean"`` or ``"max"`` over every dimension
        but the channel one.
    dtype
        ``torch.float16`` (default) or ``torch.float32`` on disk.
    num_workers
        ``DataLoader`` worker processes.
    shard_size
        Images per shard; default: about 256 MiB of features per shard, a
        multiple of ``batch_size``.
    progress
        A progress bar (on rank 0 only).

    Returns
    -------
    Features
        :func:`load_features` of ``out_dir`` (on every rank, after all ranks finished).

    Examples
    --------
    >>> import tempfile, torch, torchvision
    >>> from torch.utils.data import TensorDataset
    >>> data = TensorDataset(torch.randn(10, 3, 32, 32), torch.arange(10) % 3)
    >>> folder = tempfile.mkdtemp()
    >>> feats = extract_dataset(torchvision.models.resnet18(), ["layer3", "avgpool"], data,
    ...                         folder, batch_size=4, progress=False)
    >>> feats["layer3"].shape, feats["avgpool"].dtype, feats.labels.tolist()[:4]
    ((10, 256, 2, 2), dtype('float16'), [0, 1, 2, 0])
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    if reduce not in (None, "mean", "max"):
        raise ValueError(f"reduce must be None, 'mean' or 'max', not {reduce!r}")
    storage = _storage_dtype(dtype)
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError("dataset must be a map-style dataset (with len() and [i])")
    n = len(dataset)
    if n == 0:
        raise ValueError("the dataset is empty")
    out = Path(out_dir)
    rank, world = _rank_and_world()
    extractor = FeatureExtractor(model, layers, stop_early=True)
    device = model_device(model)

    # Every rank runs the first item once: the per-item shapes of every layer.
    first_images, first_label = split_batch(torch.utils.data.default_collate([dataset[0]]))
    shapes = {
        name: tuple(v.shape[1:])
        for name, v in _features(extractor, first_images, device, reduce).items()
    }
    row_bytes = sum(int(np.prod(s)) for s in shapes.values()) * np.dtype(storage).itemsize
    if shard_size is None:
        shard_size = max(batch_size, (_SHARD_BYTES // max(row_bytes, 1)) // batch_size * batch_size)
    shard_size = check_positive_int(shard_size, "shard_size")
    plan = {
        "format": FORMAT,
        "model": type(model).__name__,
        "model_fingerprint": _fingerprint(model),
        "layers": {
            name: {"dir": _dir_name(i, name), "shape": list(shapes[name])}
            for i, name in enumerate(shapes)
        },
        "reduce": reduce,
        "dtype": np.dtype(storage).name,
        "length": n,
        "order": "dataset",
        "shard_size": shard_size,
        "labels": first_label is not None,
        "dataset": type(dataset).__name__,
    }
    if rank == 0:
        _write_plan(out, plan)
    _barrier()
    if rank != 0:
        _check_plan(out, plan)

    starts = list(range(0, n, shard_size))
    mine = _my_shards(len(starts), rank, world)
    todo = [k for k in mine if not _finished(out, plan, k)]
    batches = [
        list(range(b, min(b + batch_size, s + shard_size, n)))
        for k in todo
        for s in [starts[k]]
        for b in range(s, min(s + shard_size, n), batch_size)
    ]
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    bar = tqdm(
        total=sum(len(b) for b in batches),
        desc=f"extracting{f' (rank {rank} of {world})' if world > 1 else ''}",
        unit="image",
        disable=not progress or rank != 0,
    )
    writers: _ShardWriters | None = None
    try:
        position = 0
        for batch in loader:
            images, labels = split_batch(batch)
            index = batches[position]
            shard = index[0] // shard_size
            if writers is None:
                writers = _ShardWriters(out, plan, shard, starts, storage)
            writers.write(_features(extractor, images, device, reduce), labels)
            if writers.written == writers.rows:  # finished: recorded at once
                writers.finish(out)
                writers = None
            bar.update(len(index))
            position += 1
    finally:
        bar.close()
        if writers is not None:
            writers.abandon()
    _barrier()
    if rank == 0:
        _write_manifest(out, plan, len(starts))
    _barrier()
    return load_features(out)


def _features(
    extractor: FeatureExtractor, images: Tensor, device: torch.device, reduce: Reduce
) -> dict[str, Tensor]:
    with eval_mode(extractor.model), torch.no_grad():
        values = extractor(images.to(device, non_blocking=True))
    return {
        name: _reduce(v, reduce, channel_axis(extractor.model, name, v.dim())).cpu()
        for name, v in values.items()
    }


class _ShardWriters:
    """The ``.npy`` files of one shard, written batch by batch with plain writes.

    Plain ``write`` calls rather than a memory map: written pages belong to the
    page cache, not to the process, so its resident memory stays one batch.
    """

    def __init__(self, out: Path, plan: dict, shard: int, starts: list[int], storage: type) -> None:
        self.shard = shard
        self.rows = min(plan["shard_size"], plan["length"] - starts[shard])
        self.storage = np.dtype(storage)
        self.files: dict[str, tuple[Path, Any, Any]] = {}
        streams = {
            name: (info["dir"], tuple(info["shape"]), self.storage)
            for name, info in plan["layers"].items()
        }
        if plan["labels"]:
            streams[_LABELS] = ("labels", (), np.dtype(np.int64))
        for name, (folder, shape, kind) in streams.items():
            path = out / folder / f"{shard:05d}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".npy.partial")
            handle = open(partial, "wb")
            digest = hashlib.sha256()
            header = {
                "descr": np.lib.format.dtype_to_descr(kind),
                "fortran_order": False,
                "shape": (self.rows, *shape),
            }
            _HashingFile(handle, digest).write_header(header)
            self.files[name] = (path, handle, digest)
        self.written = 0

    def write(self, values: dict[str, Tensor], labels: Tensor | None) -> None:
        for name, value in values.items():
            _, handle, digest = self.files[name]
            data = np.ascontiguousarray(value.numpy().astype(self.storage, copy=False))
            raw = data.tobytes()  # one copy, written and hashed
            handle.write(raw)
            digest.update(raw)
            rows = len(data)
        if _LABELS in self.files:
            if labels is None:
                raise ValueError("some items of the dataset carry a label and some do not")
            _, handle, digest = self.files[_LABELS]
            data = check_labels(labels).cpu().numpy().astype(np.int64).tobytes()
            handle.write(data)
            digest.update(data)
        self.written += rows

    def finish(self, out: Path) -> None:
        if self.written != self.rows:
            raise RuntimeError(f"shard {self.shard}: wrote {self.written} rows of {self.rows}")
        record = {"shard": self.shard, "rows": self.rows, "files": {}}
        for name, (path, handle, digest) in self.files.items():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(path.with_suffix(".npy.partial"), path)
            record["files"][name] = {
                "path": str(path.relative_to(out)),
                "bytes": path.stat().st_size,
                "sha256": digest.hexdigest(),
            }
        _write_json(out / "shards" / f"{self.shard:05d}.json", record)
        self.files = {}

    def abandon(self) -> None:
        for path, handle, _ in self.files.values():
            handle.close()
            path.with_suffix(".npy.partial").unlink(missing_ok=True)
        self.files = {}


@dataclass
class _HashingFile:
    handle: Any
    digest: Any

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.digest.update(data)

    def write_header(self, header: dict) -> None:
        np.lib.format.write_array_header_1_0(self, header)


def _storage_dtype(dtype: torch.dtype | str) -> type:
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"dtype must be torch.float16 or torch.float32, not {dtype!r}")
    return _DTYPES[name]


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _my_shards(count: int, rank: int, world: int) -> list[int]:
    """This rank's shards: a ``DistributedSampler`` over the shards, its padding dropped."""
    if world == 1:
        return list(range(count))
    sampler = DistributedSampler(range(count), num_replicas=world, rank=rank, shuffle=False)
    # Unshuffled, the sampler deals position i to rank i % world and pads the
    # list with its first entries; positions past ``count`` are that padding.
    return [
        k
        for position, k in zip(range(rank, len(sampler) * world, world), sampler, strict=True)
        if position < count
    ]


def _fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's parameter and buffer names, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in list(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        digest.update(raw.numpy().tobytes())
    return digest.hexdigest()


def _dir_name(index: int, layer: str) -> str:
    return f"{index:02d}-" + (re.sub(r"[^A-Za-z0-9_.-]", "_", layer) or "layer")


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".partial-{os.getpid()}")
    partial.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _write_plan(out: Path, plan: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if (out / "plan.json").exists():
        _check_plan(out, plan)
        return
    if any(p.name != "plan.json" for p in out.iterdir()):
        raise FileExistsError(
            f"{out} is not empty and holds no netlens features; give an empty folder"
        )
    _write_json(out / "plan.json", plan)


def _check_plan(out: Path, plan: dict) -> None:
    found = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    differs = [key for key in plan if found.get(key) != plan[key]]
    if differs:
        raise FileExistsError(
            f"{out} holds features of another extraction ({', '.join(differs)} differ); "
            "give another folder or delete this one"
        )


def _finished(out: Path, plan: dict, shard: int) -> bool:
    """Whether the shard's record exists and its files have the recorded sizes."""
    path = out / "shards" / f"{shard:05d}.json"
    if not path.exists():
        return False
    record = json.loads(path.read_text(encoding="utf-8"))
    return all(
        (out / f["path"]).is_file() and (out / f["path"]).stat().st_size == f["bytes"]
        for f in record["files"].values()
    )


def _write_manifest(out: Path, plan: dict, count: int) -> None:
    records = []
    for k in range(count):
        path = out / "shards" / f"{k:05d}.json"
        if not path.exists():
            raise RuntimeError(f"shard {k} of {count} has no record: a rank did not finish")
        records.append(json.loads(path.read_text(encoding="utf-8")))
    _write_json(out / "manifest.json", {**plan, "shards": records})


# --- reading --------------------------------------------------------------------


class FeatureArray:
    """One layer's features over the dataset, in dataset order, memory-mapped shard by shard.

    Behaves like a read-only array of shape ``(N, *per_item_shape)``:
    ``len``, ``shape``, ``dtype``, ``features[i]``, ``features[a:b]``,
    ``features[index_array]`` (each reads only the rows it needs) and
    ``numpy.asarray(features)`` (reads everything). :meth:`blocks` walks it in
    bounded blocks.

    Examples
    --------
    >>> import tempfile, torch
    >>> from netlens.testing import tiny_cnn
    >>> images = torch.randn(10, 3, 16, 16)
    >>> feats = extract_dataset(tiny_cnn(), "pool", images, tempfile.mkdtemp(),
    ...                         shard_size=4, batch_size=4, progress=False)["pool"]
    >>> feats
    FeatureArray(shape=(10, 16, 1, 1), dtype=float16, shards=3)
    >>> feats[2:6].shape, feats[[9, 0]].shape, [start for start, _ in feats.blocks(5)]
    ((4, 16, 1, 1), (2, 16, 1, 1), [0, 5])
    """

    def __init__(self, shards: list[np.ndarray]) -> None:
        self.shards = shards
        sizes = [len(s) for s in shards]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        first = shards[0]
        self.shape: tuple[int, ...] = (int(self._starts[-1]), *first.shape[1:])
        self.dtype = first.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"FeatureArray(shape={self.shape}, dtype={self.dtype}, shards={len(self.shards)})"

    def __array__(self, dtype: object = None, copy: object = None) -> np.ndarray:
        whole = np.concatenate([np.asarray(s) for s in self.shards])
        return whole if dtype is None else whole.astype(dtype)

    def __getitem__(self, index: object) -> np.ndarray:
        rest: tuple = ()
        if isinstance(index, tuple):
            index, rest = index[0], index[1:]
        if isinstance(index, (int, np.integer)):
            i = int(index) + (len(self) if index < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"index {index} is out of range for {len(self)} rows")
            k = int(np.searchsorted(self._starts, i, side="right") - 1)
            row = np.asarray(self.shards[k][i - self._starts[k]])
            return row[rest] if rest else row
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                rows = self._range(start, stop)
            else:
                rows = self._take(np.arange(start, stop, step))
        else:
            rows = self._take(np.asarray(index))
        return rows[(slice(None), *rest)] if rest else rows

    def _range(self, start: int, stop: int) -> np.ndarray:
        parts = []
        for k, shard in enumerate(self.shards):
            lo, hi = max(start, self._starts[k]), min(stop, self._starts[k + 1])
            if lo < hi:
                parts.append(np.asarray(shard[lo - self._starts[k] : hi - self._starts[k]]))
        if not parts:
            return np.empty((0, *self.shape[1:]), self.dtype)
        return np.concatenate(parts)

    def _take(self, index: np.ndarray) -> np.ndarray:
        if index.dtype == bool:
            index = np.flatnonzero(index)
        flat = index.reshape(-1).astype(np.int64)
        flat = np.where(flat < 0, flat + len(self), flat)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"an index is out of range for {len(self)} rows")
        out = np.empty((flat.size, *self.shape[1:]), self.dtype)
        shard_of = np.searchsorted(self._starts, flat, side="right") - 1
        for k in np.unique(shard_of):
            where = np.flatnonzero(shard_of == k)
            out[where] = self.shards[k][flat[where] - self._starts[k]]
        return out.reshape(*index.shape, *self.shape[1:])

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, block)`` pairs of at most ``rows`` rows each, in order, read one at a time."""
        rows = check_positive_int(rows, "rows")
        for start in range(0, len(self), rows):
            yield start, self._range(start, min(start + rows, len(self)))


class Features(Mapping[str, FeatureArray]):
    """``{layer name: FeatureArray}`` of a feature folder, with its labels and manifest.

    Attributes
    ----------
    labels : numpy.ndarray or None
        ``(N,)`` int64 labels in dataset order, when the dataset's items carried them.
    manifest : dict
        What was extracted: model, layers and their per-item shapes, dtype,
        reduction, dataset length, shard size, and per shard its files' sizes
        and SHA-256.

    Examples
    --------
    >>> import tempfile, torch
    >>> from torch.utils.data import TensorDataset
    >>> from netlens.testing import tiny_cnn
    >>> data = TensorDataset(torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 1, 0, 2, 2]))
    >>> folder = tempfile.mkdtemp()
    >>> _ = extract_dataset(tiny_cnn(), ["features", "pool"], data, folder, progress=False)
    >>> feats = load_features(folder)
    >>> list(feats), feats.labels.tolist(), feats.manifest["length"]
    (['features', 'pool'], [0, 1, 1, 0, 2, 2], 6)
    """

    def __init__(
        self, arrays: dict[str, FeatureArray], labels: np.ndarray | None, manifest: dict
    ) -> None:
        self._arrays = arrays
        self.labels = labels
        self.manifest = manifest

    def __getitem__(self, layer: str) -> FeatureArray:
        if layer not in self._arrays:
            raise KeyError(f"no layer {layer!r} here; the layers are {list(self._arrays)}")
        return self._arrays[layer]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        layers = ", ".join(f"{k!r}: {tuple(v.shape)}" for k, v in self._arrays.items())
        return (
            f"Features({layers}; {self.manifest['dtype']}, {len(self.manifest['shards'])} shards)"
        )


def load_features(out_dir: str | os.PathLike[str], *, verify: bool = False) -> Features:
    """The features :func:`extract_dataset` wrote, memory-mapped, in dataset order.

    Every shard's size and ``.npy`` header are checked against the manifest;
    ``verify=True`` also checks every shard's SHA-256 (reads all of it).

    Raises
    ------
    CorruptFeaturesError
        A shard is missing, truncated, has another shape, or (``verify=True``)
        other contents than were written.
    FileNotFoundError
        The folder has no manifest (the extraction has not finished).

    Examples
    --------
    >>> import tempfile, numpy as np, torch
    >>> from netlens.testing import tiny_cnn
    >>> folder = tempfile.mkdtemp()
    >>> _ = extract_dataset(tiny_cnn(), "pool", torch.randn(5, 3, 16, 16), folder,
    ...                     progress=False)
    >>> np.asarray(load_features(folder, verify=True)["pool"]).shape
    (5, 16, 1, 1)
    """
    out = Path(out_dir)
    path = out / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{out} has no manifest.json: no finished extraction there "
            "(rerun extract_dataset with the same arguments to finish it)"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    streams: dict[str, list[np.ndarray]] = {name: [] for name in manifest["layers"]}
    labels: list[np.ndarray] = []
    for record in manifest["shards"]:
        for name, entry in record["files"].items():
            file = out / entry["path"]
            if not file.is_file():
                raise CorruptFeaturesError(f"shard file {entry['path']} is missing")
            if file.stat().st_size != entry["bytes"]:
                raise CorruptFeaturesError(
                    f"shard file {entry['path']} has {file.stat().st_size} bytes, "
                    f"the manifest says {entry['bytes']}: it was truncated or changed"
                )
            if verify and _sha256(file) != entry["sha256"]:
                raise CorruptFeaturesError(
                    f"shard file {entry['path']} differs from what was written"
                )
            try:
                array = np.load(file, mmap_mode="r")
            except ValueError as error:
                raise CorruptFeaturesError(
                    f"shard file {entry['path']} is unreadable: {error}"
                ) from None
            is_labels = name == _LABELS
            shape = (record["rows"], *(() if is_labels else manifest["layers"][name]["shape"]))
            if array.shape != shape:
                raise CorruptFeaturesError(
                    f"shard file {entry['path']} has shape {array.shape}, not {shape}"
                )
            (labels if is_labels else streams[name]).append(array)
    arrays = {name: FeatureArray(parts) for name, parts in streams.items()}
    joined = np.concatenate([np.asarray(p) for p in labels]) if labels else None
    return Features(arrays, joined, manifest)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**22), b""):
            digest.update(chunk)
    return digest.hexdigest()
