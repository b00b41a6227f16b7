"""EmbeddingProbe: a network's feature space as a point cloud (t-SNE maps, kNN retrieval).

A probe streams a dataset through a model once and keeps one feature vector
per image: by default the input of the classifier ``nn.Linear`` (the
penultimate features, what a linear read-out sees). The point cloud is then
looked at in two ways that the literature uses to judge a representation:

* a t-SNE map (van der Maaten & Hinton, 2008), which keeps local
  neighbourhoods of the high-dimensional features in two dimensions;
* k-nearest-neighbour retrieval (Krizhevsky et al., 2012, section 6.1): images
  whose features are close should look alike to a person, and a leave-one-out
  kNN classifier on the features measures how well classes are separated
  without training anything.

:func:`compare` puts two networks side by side on the same images.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from netlens._checks import (
    check_images,
    check_labels,
    check_positive_int,
    model_device,
    split_batch,
)
from netlens._repr import ShortRepr
from netlens.errors import NotFittedError
from netlens.feature_store import FeatureArray
from netlens.hooks import HookSession, OutputFn, Tap, eval_mode, run_forward
from netlens.layers import LayerLike, find_classifier, resolve_layer

__all__ = ["Comparison", "EmbeddingProbe", "compare", "majority_vote"]

Metric = Literal["cosine", "euclidean"]
_METRICS = ("cosine", "euclidean")

# Bounds the (queries x bank) block of distances held at once to 64 MiB of float32.
_BLOCK_ELEMENTS = 2**24


class EmbeddingProbe:
    """Features of a dataset at one layer, with t-SNE maps and nearest neighbours.

    Parameters
    ----------
    model
        Any ``nn.Module`` taking ``(N, C, H, W)`` images.
    layer
        ``None`` (default): the input of the classifier ``nn.Linear`` (the
        layer whose output is the logits), found at the first :meth:`fit`;
        the forward pass stops before the classifier runs. Otherwise a layer
        name or module whose output, flattened to ``(N, D)``, is the feature.
    output
        For a model whose output is not a tensor of logits, a tuple or list
        with the logits first, a mapping with ``"logits"`` or an object with
        a ``logits`` tensor: a function from the output to the logits
        (``output=lambda out: out["scores"]``). Only used to find the
        classifier when ``layer`` is ``None``.

    Attributes
    ----------
    features : Tensor or None
        ``(N, D)`` float features on the CPU, in dataset order, after :meth:`fit`.
    labels : Tensor or None
        ``(N,)`` integer labels when :meth:`fit` was given any.
    layer : str or None
        Name of the layer read; with ``layer=None`` it is the classifier whose
        *input* is read, known after the first :meth:`fit`.
    output : callable or None
        The ``output=`` function given, if any.

    Notes
    -----
    :meth:`fit` runs the model in eval mode without gradients and restores
    every module's ``training`` flag, so BatchNorm statistics never change and
    no hook outlives the call, also when the data loader raises.

    Examples
    --------
    >>> import torch, torchvision
    >>> probe = EmbeddingProbe(torchvision.models.resnet18())
    >>> probe.fit(torch.randn(12, 3, 32, 32), progress=False).features.shape
    torch.Size([12, 512])
    >>> probe.layer
    'fc'
    >>> indices, distances = probe.knn(probe.features[:2], k=3)
    >>> indices[:, 0].tolist()
    [0, 1]
    """

    def __init__(
        self, model: nn.Module, layer: LayerLike | None = None, *, output: OutputFn | None = None
    ) -> None:
        if output is not None and not callable(output):
            raise TypeError(
                f"output must be a function from the model's output to the logits, "
                f"not {type(output).__name__}"
            )
        self.model = model
        self.output = output
        self._where: Literal["input", "output"] = "input"
        self.layer: str | None = None
        self._module: nn.Module | None = None
        if layer is not None:
            self.layer, self._module = resolve_layer(model, layer)
            self._where = "output"
        self.features: Tensor | None = None
        self.labels: Tensor | None = None

    def __repr__(self) -> str:
        where = "input of" if self._where == "input" else "output of"
        layer = self.layer if self.layer is not None else "<classifier, found at fit>"
        size = "unfitted" if self.features is None else f"{tuple(self.features.shape)} features"
        return f"EmbeddingProbe({type(self.model).__name__}, {where} {layer!r}, {size})"

    @classmethod
    def from_features(
        cls,
        out_dir: str | os.PathLike[str],
        labels: Tensor | Iterable[int] | None = None,
        *,
        layer: str | None = None,
    ) -> EmbeddingProbe:
        """A probe over features that :func:`netlens.extract_dataset` wrote to disk.

        The bank stays on disk (memory-mapped): :meth:`knn` and
        :meth:`knn_accuracy` read it in blocks of at most 64 MiB, so it may be
        larger than memory; :meth:`tsne` loads it (use a sample). Features of
        more than one dimension per item are flattened. The probe has no
        model: queries are features, not images.

        Parameters
        ----------
        out_dir
            The folder :func:`~netlens.extract_dataset` wrote.
        labels
            ``(N,)`` labels; default: those stored with the features, if any.
        layer
            Which layer's features; may be left out when the folder holds one.

        Examples
        --------
        >>> import tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> from netlens import extract_dataset
        >>> from netlens.models import SmallResNet
        >>> data = TensorDataset(torch.rand(12, 1, 16, 16), torch.arange(12) % 2)
        >>> folder = tempfile.mkdtemp()
        >>> _ = extract_dataset(SmallResNet(width=4), "avgpool", data, folder, progress=False)
        >>> probe = EmbeddingProbe.from_features(folder)
        >>> probe.features.shape, probe.labels[:4].tolist()
        ((12, 32, 1, 1), [0, 1, 0, 1])
        >>> probe.knn(probe.features[:2].reshape(2, -1), k=1)[0].flatten().tolist()
        [0, 1]
        """
        from netlens.feature_store import load_features

        stored = load_features(out_dir)
        if layer is None:
            if len(stored) != 1:
                raise ValueError(f"{out_dir} holds several layers {list(stored)}; pick one: layer=")
            layer = next(iter(stored))
        probe = cls.__new__(cls)
        probe.model, probe.output, probe._where = None, None, "output"  # type: ignore[assignment]
        probe.layer, probe._module = layer, None
        probe.features = stored[layer]  # type: ignore[assignment]
        if labels is not None:
            probe.labels = check_labels(labels).cpu()
        elif stored.labels is not None:
            probe.labels = torch.from_numpy(np.asarray(stored.labels))
        else:
            probe.labels = None
        if probe.labels is not None and len(probe.labels) != len(probe.features):
            raise ValueError(f"got {len(probe.labels)} labels for {len(probe.features)} features")
        return probe

    # features ----------------------------------------------------------------

    def fit(
        self,
        data: Tensor | Iterable[object],
        labels: Tensor | Iterable[int] | None = None,
        *,
        batch_size: int = 256,
        progress: bool = True,
    ) -> EmbeddingProbe:
        """Compute and keep the features of every image in ``data``.

        Parameters
        ----------
        data
            A tensor ``(N, C, H, W)`` (run in chunks of ``batch_size``) or an
            iterable of batches (a ``DataLoader``) yielding images or
            ``(images, labels, ...)`` (items after the labels are ignored; a
            dict batch is refused). Batches are moved to the model's device.
        labels
            ``(N,)`` integer class labels (whole-number floats are accepted).
            Leave out when the loader yields labels.
        batch_size
            Chunk size when ``data`` is a tensor.
        progress
            Show a tqdm progress bar.

        Returns
        -------
        EmbeddingProbe
            ``self``, with :attr:`features` and :attr:`labels` set.

        Examples
        --------
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from netlens.models import SmallResNet
        >>> data = TensorDataset(torch.rand(10, 1, 16, 16), torch.arange(10) % 2)
        >>> probe = EmbeddingProbe(SmallResNet(width=4))
        >>> probe = probe.fit(DataLoader(data, batch_size=4), progress=False)
        >>> probe.features.shape, probe.labels.tolist()
        (torch.Size([10, 32]), [0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
        """
        self._needs_model("fit")
        if isinstance(data, Tensor):
            check_images(data)
            batch_size = check_positive_int(batch_size, "batch_size")
            batches: Iterable[object] = data.split(batch_size)
            total: int | None = -(-len(data) // batch_size)
        else:
            batches = data
            total = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
        given = None if labels is None else check_labels(labels).cpu()
        if given is not None and isinstance(data, Tensor) and len(given) != len(data):
            raise ValueError(f"got {len(given)} labels for {len(data)} images")

        device = model_device(self.model)
        chunks: list[Tensor] = []
        label_chunks: list[Tensor] = []
        bar = tqdm(batches, total=total, desc="embedding", unit="batch", disable=not progress)
        try:
            with eval_mode(self.model), torch.no_grad():
                for batch in bar:
                    images, batch_labels = split_batch(batch)
                    x = images.to(device, non_blocking=True)
                    chunks.append(self._features_of(x).cpu())
                    if batch_labels is not None:
                        label_chunks.append(check_labels(batch_labels).cpu())
        finally:
            bar.close()
        if not chunks:
            raise ValueError("the data yielded no batches")
        features = torch.cat(chunks)
        self.labels = _merge_labels(given, label_chunks, len(features))
        self.features = features
        return self

    def _features_of(self, x: Tensor) -> Tensor:
        if self._module is None:
            self.layer = find_classifier(self.model, x, output=self.output)
            _, self._module = resolve_layer(self.model, self.layer)
        assert self.layer is not None
        tap = Tap(self.layer, self._module, "copy", where=self._where, stop=True)
        session = HookSession(self.model, [tap], stop_early=True)
        _, results = run_forward(self.model, x, session, output=self.output)
        return results[self.layer].flatten(1)

    def transform(self, images: Tensor, *, batch_size: int = 256) -> Tensor:
        """Features of new images at the probe's layer, ``(N, D)`` on the CPU.

        Examples
        --------
        >>> import torch
        >>> from netlens.models import SmallResNet
        >>> probe = EmbeddingProbe(SmallResNet(width=4))
        >>> probe = probe.fit(torch.rand(4, 1, 16, 16), progress=False)
        >>> probe.transform(torch.rand(3, 1, 16, 16)).shape
        torch.Size([3, 32])
        """
        self._needs_model("transform")
        check_images(images)
        batch_size = check_positive_int(batch_size, "batch_size")
        device = model_device(self.model)
        with eval_mode(self.model), torch.no_grad():
            parts = [self._features_of(x.to(device)).cpu() for x in images.split(batch_size)]
        return torch.cat(parts)

    def _needs_model(self, what: str) -> None:
        if self.model is None:
            raise TypeError(
                f"this probe was made from features on disk and has no model to {what} "
                "images with; pass features, or build EmbeddingProbe(model)"
            )

    def _bank(self) -> Tensor:
        if self.features is None:
            raise NotFittedError(
                "this EmbeddingProbe has no features yet; call probe.fit(images_or_loader) first."
            )
        return self.features

    # views ---------------------------------------------------------------------

    def tsne(self, *, perplexity: float = 30.0, seed: int = 0, **kwargs: object) -> np.ndarray:
        """A 2-D t-SNE map of the fitted features (scikit-learn ``TSNE``).

        Parameters
        ----------
        perplexity
            Roughly the number of neighbours each point keeps close. Clipped to
            ``(N - 1) / 3`` for small ``N`` (scikit-learn needs it below ``N``,
            and a third keeps the map meaningful).
        seed
            ``random_state`` of the optimisation: the same seed gives the same map.
        **kwargs
            Passed on to ``sklearn.manifold.TSNE`` (``max_iter``, ``metric``,
            ``early_exaggeration``, ...). Defaults: ``init="pca"``,
            ``learning_rate="auto"``.

        Returns
        -------
        numpy.ndarray
            ``(N, 2)`` float coordinates, one row per fitted image.

        Examples
        --------
        >>> import torch, torchvision
        >>> probe = EmbeddingProbe(torchvision.models.resnet18())
        >>> probe.fit(torch.randn(20, 3, 32, 32), progress=False).tsne(max_iter=250).shape
        (20, 2)
        """
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        features = self._bank()
        n = len(features)
        if n < 4:
            raise ValueError(f"t-SNE needs at least 4 points, the probe holds {n}")
        if perplexity <= 0:
            raise ValueError(f"perplexity must be positive, got {perplexity}")
        options: dict[str, object] = {"init": "pca", "learning_rate": "auto"}
        options.update(kwargs)
        tsne = TSNE(
            n_components=2,
            perplexity=min(float(perplexity), (n - 1) / 3),
            random_state=seed,
            **options,
        )
        # PyTorch and scikit-learn each bring an OpenMP runtime; after a forward pass
        # their idle threads spin against each other and t-SNE runs 10-20x slower.
        with threadpool_limits(limits=1, user_api="openmp"):
            points = tsne.fit_transform(_as_matrix(features).astype(np.float64))
        return points.astype(np.float32)

    def knn(
        self,
        queries: Tensor,
        k: int = 10,
        *,
        metric: Metric = "cosine",
        exclude_self: bool = False,
        batch_size: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The ``k`` fitted images nearest to each query, nearest first.

        Parameters
        ----------
        queries
            Feature vectors ``(Q, D)`` (a tensor, a numpy array, or a
            :class:`~netlens.FeatureArray`) or images ``(Q, C, H, W)``, which
            are run through the model first.
        k
            Number of neighbours: any integer (``int``, ``numpy.int64``, ...)
            of at least 1.
        metric
            ``"cosine"`` (distance ``1 - cos(q, x)``) or ``"euclidean"`` (the
            L2 distance, not squared).
        exclude_self
            The queries are the fitted bank itself, in order (leave-one-out):
            query ``i`` never gets ``i`` as a neighbour.
        batch_size
            Queries handled at once; each step holds a ``batch_size x N``
            block of distances. Default: as many as fit in 64 MiB.

        Returns
        -------
        indices : Tensor
            ``(Q, k)`` int64 rows into :attr:`features`.
        distances : Tensor
            ``(Q, k)`` distances, ascending along each row.

        Examples
        --------
        >>> import torch
        >>> from netlens.models import SmallResNet
        >>> probe = EmbeddingProbe(SmallResNet(width=4))
        >>> probe = probe.fit(torch.rand(8, 1, 16, 16), progress=False)
        >>> idx, dist = probe.knn(probe.features, k=2, exclude_self=True, metric="euclidean")
        >>> idx.shape, bool((idx != torch.arange(8)[:, None]).all())
        (torch.Size([8, 2]), True)
        """
        if metric not in _METRICS:
            raise ValueError(f"unknown metric {metric!r}; use 'cosine' or 'euclidean'")
        bank = self._bank()
        on_disk = isinstance(bank, FeatureArray)
        dim = int(np.prod(bank.shape[1:]))
        if isinstance(queries, np.ndarray):
            queries = torch.from_numpy(np.ascontiguousarray(queries))
        if not isinstance(queries, (Tensor, FeatureArray)):
            raise TypeError(
                f"queries must be a tensor of features (Q, D) or images (Q, C, H, W), "
                f"not {type(queries).__name__}"
            )
        available = len(bank) - (1 if exclude_self else 0)
        k = check_positive_int(k, "k")
        if k > available:
            extra = " (minus the query itself, exclude_self=True)" if exclude_self else ""
            raise ValueError(f"k={k} exceeds the {available} fitted points{extra}")
        if isinstance(queries, Tensor):
            if queries.dim() == 4:
                queries = self.transform(queries)
            elif queries.dim() != 2:
                hint = " Add a batch dimension with q.unsqueeze(0)." if queries.dim() == 1 else ""
                raise ValueError(
                    "queries must be features (Q, D) or images (Q, C, H, W), got shape "
                    f"{tuple(queries.shape)}.{hint}"
                )
        width = int(np.prod(queries.shape[1:]))
        if width != dim:
            raise ValueError(
                f"queries have {width} features per row, the fitted bank has "
                f"{dim}; pass features of the probe's layer, or images."
            )
        if exclude_self and len(queries) != len(bank):
            raise ValueError(
                f"exclude_self=True means the queries are the fitted bank ({len(bank)} rows), "
                f"but {len(queries)} queries were given"
            )
        if on_disk:
            rows = max(1, _BLOCK_ELEMENTS // dim)  # a block of the bank: at most 64 MiB
            if batch_size is None:
                batch_size = max(1, _BLOCK_ELEMENTS // min(rows, len(bank)))
            else:
                batch_size = check_positive_int(batch_size, "batch_size")
            return _knn_on_disk(queries, bank, k, metric, exclude_self, batch_size, rows)
        if batch_size is None:
            batch_size = max(1, _BLOCK_ELEMENTS // len(bank))
        else:
            batch_size = check_positive_int(batch_size, "batch_size")
        if isinstance(queries, FeatureArray):
            queries = torch.from_numpy(_as_matrix(queries))
        return _knn(queries.to(bank), bank, k, metric, exclude_self, batch_size)

    def knn_accuracy(self, k: int = 10, *, metric: Metric = "cosine") -> float:
        """Leave-one-out kNN classification accuracy on the fitted, labelled bank.

        Each point is classified by a majority vote of its ``k`` nearest other
        points; a tie goes to the tied class with the nearest neighbour.

        Examples
        --------
        >>> import torch
        >>> from netlens.models import SmallResNet
        >>> images = torch.rand(10, 1, 16, 16)
        >>> probe = EmbeddingProbe(SmallResNet(width=4))
        >>> probe = probe.fit(images, torch.zeros(10), progress=False)
        >>> probe.knn_accuracy(k=3)
        1.0
        """
        bank = self._bank()
        if self.labels is None:
            raise ValueError("knn_accuracy needs labels: fit(data, labels) or a labelled loader")
        indices, _ = self.knn(bank, k, metric=metric, exclude_self=True)
        predicted = majority_vote(self.labels[indices.cpu()])
        return int((predicted == self.labels).sum()) / len(self.labels)


def majority_vote(neighbour_labels: Tensor) -> Tensor:
    """Most frequent label per row of ``(Q, k)`` labels ordered nearest first.

    Ties go to the tied label that appears first in the row (the nearest).

    Examples
    --------
    >>> majority_vote(torch.tensor([[1, 2, 2], [3, 1, 1], [4, 5, 6]])).tolist()
    [2, 1, 4]
    """
    if neighbour_labels.dim() != 2:
        raise ValueError(f"expected (Q, k) labels, got shape {tuple(neighbour_labels.shape)}")
    neighbour_labels = neighbour_labels.long()
    classes = int(neighbour_labels.max()) + 1
    counts = F.one_hot(neighbour_labels, classes).sum(1)
    tied = counts == counts.amax(1, keepdim=True)
    first = tied.gather(1, neighbour_labels).int().argmax(1)
    return neighbour_labels.gather(1, first[:, None]).squeeze(1)


def _knn(
    queries: Tensor, bank: Tensor, k: int, metric: Metric, exclude_self: bool, batch_size: int
) -> tuple[Tensor, Tensor]:
    # Norms instead of a normalised or squared copy: no extra bank-sized tensor.
    bank_norm = torch.linalg.vector_norm(bank, dim=1)
    all_idx, all_dist = [], []
    for start, q in _chunks(queries, batch_size):
        score = _scores(q, bank, bank_norm, metric)
        if exclude_self:
            rows = torch.arange(len(q), device=q.device)
            score[rows, rows + start] = -torch.inf
        idx = score.topk(k, dim=1).indices
        if metric == "cosine":
            dist = 1 - score.gather(1, idx)
        else:
            # Recomputed directly for the k winners: the expansion above loses digits.
            dist = (q[:, None, :] - bank[idx]).norm(dim=2)
        all_idx.append(idx)
        all_dist.append(dist)
    return torch.cat(all_idx), torch.cat(all_dist)


def _scores(q: Tensor, bank: Tensor, bank_norm: Tensor, metric: Metric) -> Tensor:
    """``(Q, N)`` scores, higher is nearer: cosine similarity or the negated squared distance."""
    if metric == "cosine":
        # Ranking by similarity avoids the cancellation in 1 - s for near-duplicates.
        score = F.normalize(q, dim=1) @ bank.T
        score /= bank_norm.clamp_min(1e-12)
    else:
        # Negated squared distance via the dot-product expansion: one matmul, no (q, N, D).
        score = q @ bank.T
        score.mul_(2).sub_(bank_norm.square()).sub_(q.square().sum(1, keepdim=True))
    return score


def _as_matrix(features: FeatureArray | np.ndarray) -> np.ndarray:
    """Features ``(N, ...)`` as a float32 ``(N, D)`` array in memory."""
    array = np.asarray(features)
    return array.reshape(len(array), -1).astype(np.float32, copy=False)


def _knn_on_disk(
    queries: Tensor | FeatureArray,
    bank: FeatureArray,
    k: int,
    metric: Metric,
    exclude_self: bool,
    batch_size: int,
    rows: int,
) -> tuple[Tensor, Tensor]:
    """:func:`_knn` over a bank read in blocks of ``rows``: a running top-k per query."""
    if isinstance(queries, FeatureArray):
        chunks: Iterable[tuple[int, Tensor]] = (
            (start, torch.from_numpy(_as_matrix(block)))
            for start, block in queries.blocks(batch_size)
        )
    else:
        chunks = _chunks(queries.reshape(len(queries), -1).float(), batch_size)
    all_idx, all_dist = [], []
    for start, q in chunks:
        best = torch.full((len(q), 0), -torch.inf)
        best_idx = torch.zeros((len(q), 0), dtype=torch.long)
        for first, block in bank.blocks(rows):
            b = torch.from_numpy(_as_matrix(block))
            score = _scores(q, b, torch.linalg.vector_norm(b, dim=1), metric)
            if exclude_self:
                own = torch.arange(start, start + len(q)) - first
                inside = (own >= 0) & (own < len(b))
                score[inside.nonzero().flatten(), own[inside]] = -torch.inf
            top = score.topk(min(k, len(b)), dim=1)
            merged = torch.cat([best, top.values], 1)
            merged_idx = torch.cat([best_idx, top.indices + first], 1)
            keep = merged.topk(min(k, merged.shape[1]), dim=1).indices
            best, best_idx = merged.gather(1, keep), merged_idx.gather(1, keep)
        if metric == "cosine":
            dist = 1 - best
        else:
            found = torch.from_numpy(_as_matrix(bank[best_idx.flatten().numpy()]))
            dist = (q[:, None, :] - found.reshape(len(q), k, -1)).norm(dim=2)
        all_idx.append(best_idx)
        all_dist.append(dist)
    return torch.cat(all_idx), torch.cat(all_dist)


def _chunks(x: Tensor, size: int) -> Iterator[tuple[int, Tensor]]:
    for start in range(0, len(x), size):
        yield start, x[start : start + size]


@dataclass(repr=False)
class Comparison(ShortRepr):
    """Two networks' feature spaces on the same images (see :func:`compare`).

    Attributes
    ----------
    knn_accuracy_a, knn_accuracy_b
        Leave-one-out kNN accuracy of each network's features.
    overlap
        Mean over images of ``|N_a(i) & N_b(i)| / k``: the share of an image's
        ``k`` nearest neighbours that both networks agree on (1 = same
        neighbourhoods, about ``k / N`` for unrelated ones).
    overlap_per_image
        ``(N,)`` the same share for each image, to find where they disagree.
    k
        Number of neighbours used.

    Examples
    --------
    >>> import torch
    >>> images, labels = torch.rand(20, 1, 8, 8), torch.arange(20) % 2
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    >>> probe = EmbeddingProbe(net).fit(images, labels, progress=False)
    >>> same = compare(probe, probe, k=3)
    >>> same.overlap, same.knn_accuracy_a == same.knn_accuracy_b
    (1.0, True)
    """

    knn_accuracy_a: float | None
    knn_accuracy_b: float | None
    overlap: float
    overlap_per_image: Tensor
    k: int


def compare(
    probe_a: EmbeddingProbe, probe_b: EmbeddingProbe, k: int = 10, *, metric: Metric = "cosine"
) -> Comparison:
    """Compare two probes fitted on the same images, in the same order.

    Accuracies are ``None`` when the probes hold no labels.

    Examples
    --------
    >>> import torch
    >>> from netlens.models import SmallResNet
    >>> images, labels = torch.rand(12, 1, 16, 16), torch.arange(12) % 3
    >>> a = EmbeddingProbe(SmallResNet(width=4)).fit(images, labels, progress=False)
    >>> compare(a, a, k=3).overlap
    1.0
    """
    k = check_positive_int(k, "k")
    bank_a, bank_b = probe_a._bank(), probe_b._bank()
    if len(bank_a) != len(bank_b):
        raise ValueError(
            f"the probes hold {len(bank_a)} and {len(bank_b)} images; fit both on the same data"
        )
    labels_a, labels_b = probe_a.labels, probe_b.labels
    if labels_a is not None and labels_b is not None and not torch.equal(labels_a, labels_b):
        raise ValueError("the probes' labels differ; fit both on the same data in the same order")
    idx_a, _ = probe_a.knn(bank_a, k, metric=metric, exclude_self=True)
    idx_b, _ = probe_b.knn(bank_b, k, metric=metric, exclude_self=True)
    shared = (idx_a.cpu()[:, :, None] == idx_b.cpu()[:, None, :]).any(2).sum(1)
    per_image = shared.double() / k
    return Comparison(
        knn_accuracy_a=None if labels_a is None else probe_a.knn_accuracy(k, metric=metric),
        knn_accuracy_b=None if labels_b is None else probe_b.knn_accuracy(k, metric=metric),
        overlap=float(per_image.mean()),
        overlap_per_image=per_image,
        k=k,
    )


def _merge_labels(given: Tensor | None, from_data: list[Tensor], n: int) -> Tensor | None:
    if given is not None and from_data:
        raise ValueError(
            "labels were given both as an argument and by the data loader; pass only one"
        )
    labels = given if given is not None else (torch.cat(from_data) if from_data else None)
    if labels is not None and len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} images")
    return labels
