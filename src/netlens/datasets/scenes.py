"""Synthetic outdoor scenes with a scene label and an exact mask for every concept.

:func:`scenes` paints cities, mountains, coasts, forests, fields and highways
from simple shapes (discs, ellipses, ridges, rectangles, window grids,
perspective roads, trees) in back-to-front order, so it knows for every pixel
which concept it shows: the masks are exact and respect occlusion (a building
in front of a mountain owns its pixels). Colours, time of day, textures and
geometry vary from scene to scene, so that telling the scenes apart takes the
concepts themselves rather than one colour. Everything is vectorised with
torch: thousands of 64 px scenes per second on a CPU, the same scenes for the
same seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from netlens._checks import check_positive_int
from netlens.datasets.digits import Split

__all__ = ["SCENE_CLASSES", "SCENE_CONCEPTS", "Scenes", "scenes"]

#: The scene classes, in label order.
SCENE_CLASSES: tuple[str, ...] = ("city", "mountain", "coast", "forest", "field", "highway")
#: The concepts that have a mask, in the order of :attr:`Scenes.segmentation`.
SCENE_CONCEPTS: tuple[str, ...] = (
    "sky",
    "cloud",
    "sun",
    "mountain",
    "water",
    "sand",
    "grass",
    "road",
    "building",
    "window",
    "tree",
)

_C = {name: i for i, name in enumerate(SCENE_CONCEPTS)}
_CITY, _MOUNTAIN, _COAST, _FOREST, _FIELD, _HIGHWAY = range(len(SCENE_CLASSES))
_DAY, _OVERCAST, _SUNSET, _NIGHT = range(4)

# Object slots of one scene, painted in this order (later slots cover earlier ones).
_CLOUDS, _BLOBS = 3, 4
_RANGES = 2
_ZONES = 2
_BUILDINGS = 8
_TREES = 12
_SKY = 0
_SUN = 1
_CLOUD0 = 2
_RANGE0 = _CLOUD0 + _CLOUDS
_SNOW0 = _RANGE0 + _RANGES
_ZONE0 = _SNOW0 + _RANGES
_ROAD = _ZONE0 + _ZONES
_MARK = _ROAD + 1
_BUILDING0 = _MARK + 1
_ROOF0 = _BUILDING0 + _BUILDINGS
_WINDOW0 = _ROOF0 + _BUILDINGS
_TRUNK0 = _WINDOW0 + _BUILDINGS
_CROWN0 = _TRUNK0 + _TREES
_SLOTS = _CROWN0 + _TREES

_SLOT_CONCEPT = np.zeros(_SLOTS, dtype=np.int64)
_SLOT_CONCEPT[_SKY] = _C["sky"]
_SLOT_CONCEPT[_SUN] = _C["sun"]
_SLOT_CONCEPT[_CLOUD0 : _CLOUD0 + _CLOUDS] = _C["cloud"]
_SLOT_CONCEPT[_RANGE0:_ZONE0] = _C["mountain"]  # ranges and their snow
_SLOT_CONCEPT[_ROAD:_BUILDING0] = _C["road"]  # the road and its lane marks
_SLOT_CONCEPT[_BUILDING0:_WINDOW0] = _C["building"]  # walls and roofs
_SLOT_CONCEPT[_WINDOW0:_TRUNK0] = _C["window"]
_SLOT_CONCEPT[_TRUNK0:] = _C["tree"]  # trunks and crowns

# Texture strength of each concept in four noise fields: fine grain, vertical
# streaks (grass blades), horizontal streaks (waves), blotches (foliage, rock).
_TEXTURE = torch.zeros(4, len(SCENE_CONCEPTS))
for _concept, _strengths in {
    "sky": (0.03, 0.0, 0.0, 0.12),
    "cloud": (0.02, 0.0, 0.0, 0.10),
    "mountain": (0.05, 0.0, 0.0, 0.22),
    "water": (0.03, 0.0, 0.30, 0.0),
    "sand": (0.10, 0.0, 0.04, 0.06),
    "grass": (0.08, 0.30, 0.0, 0.10),
    "road": (0.07, 0.0, 0.0, 0.03),
    "building": (0.03, 0.0, 0.0, 0.04),
    "tree": (0.10, 0.0, 0.0, 0.35),
}.items():
    _TEXTURE[:, _C[_concept]] = torch.tensor(_strengths)

# Time of day: how often, the sky's zenith and horizon colours, and the light on the ground.
_TIME_P = (0.5, 0.2, 0.18, 0.12)
_ZENITH = np.array([[0.22, 0.42, 0.85], [0.6, 0.63, 0.68], [0.3, 0.28, 0.55], [0.03, 0.05, 0.16]])
_HORIZON = np.array([[0.66, 0.8, 0.96], [0.78, 0.8, 0.82], [0.98, 0.6, 0.3], [0.13, 0.14, 0.3]])
_LIGHT = np.array([[1.0, 1.0, 1.0], [0.85, 0.87, 0.9], [0.9, 0.72, 0.58], [0.3, 0.33, 0.48]])
_CLOUD_COLOUR = np.array(
    [[0.97, 0.97, 0.98], [0.72, 0.73, 0.76], [0.95, 0.7, 0.6], [0.2, 0.2, 0.26]]
)
_BUILDING_COLOURS = np.array(
    [
        [0.55, 0.55, 0.57],  # concrete
        [0.72, 0.66, 0.55],  # sandstone
        [0.6, 0.3, 0.22],  # brick
        [0.35, 0.45, 0.58],  # glass
        [0.88, 0.87, 0.83],  # white
        [0.45, 0.38, 0.32],  # brown
    ]
)


@dataclass
class Scenes:
    """Scene images, their class labels and one exact mask per concept.

    Each pixel shows exactly one object, the front-most there, and belongs to
    its concept's mask. Windows are parts of their building, as in Broden's
    object and part labels: a window pixel is in both the ``"window"`` and the
    ``"building"`` mask. Every other pair of masks is disjoint.

    Attributes
    ----------
    images : Tensor
        ``(N, 3, H, W)`` float32 in [0, 1].
    labels : Tensor
        ``(N,)`` int64 indices into :attr:`classes`.
    classes : list[str]
        The scene class names (:data:`SCENE_CLASSES`).
    masks : dict[str, Tensor]
        ``{concept: (N, H, W) bool}``, one entry per name of
        :data:`SCENE_CONCEPTS`: the pixels where the concept is visible (a
        building's windows included).

    Examples
    --------
    >>> data = scenes(6, size=32)
    >>> len(data), data.images.shape, data.classes[int(data.labels[0])] in SCENE_CLASSES
    (6, torch.Size([6, 3, 32, 32]), True)
    >>> total = sum(mask.long() for mask in data.masks.values()) - data.masks["window"].long()
    >>> bool((total == 1).all())  # every pixel is in one mask, windows also in "building"
    True
    >>> data[:2].masks["sky"].shape
    torch.Size([2, 32, 32])
    >>> data
    Scenes(6 images of 32x32, 11 concepts)
    """

    images: Tensor
    labels: Tensor
    classes: list[str]
    masks: dict[str, Tensor]

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        size = tuple(self.images.shape[2:])
        return f"Scenes({len(self)} images of {size[0]}x{size[1]}, {len(self.masks)} concepts)"

    def __getitem__(self, index: int | slice | Sequence[int] | Tensor) -> Scenes:
        """The scenes at ``index`` (an int keeps a batch of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Scenes(
            self.images[index],
            self.labels[index],
            list(self.classes),
            {name: mask[index] for name, mask in self.masks.items()},
        )

    @property
    def concepts(self) -> list[str]:
        """The names of the masks, in :data:`SCENE_CONCEPTS` order."""
        return list(self.masks)

    @property
    def segmentation(self) -> Tensor:
        """``(N, H, W)`` int64: the index into :attr:`concepts` of each pixel's
        front-most concept (``"window"``, not ``"building"``, on a window)."""
        out = torch.zeros(self.masks[self.concepts[0]].shape, dtype=torch.int64)
        for i, mask in enumerate(self.masks.values()):
            out[mask] = i
        return out

    def fractions(self) -> dict[str, float]:
        """The share of all pixels each concept covers, over the whole set.

        Examples
        --------
        >>> shares = scenes(12, size=32).fractions()
        >>> round(sum(shares.values()) - shares["window"], 6), shares["sky"] > 0.1
        (1.0, True)
        """
        return {name: float(mask.float().mean()) for name, mask in self.masks.items()}

    def split(self) -> Split:
        """Images and labels as a :class:`~netlens.datasets.Split`, for training.

        Examples
        --------
        >>> split = scenes(4, size=32).split()
        >>> len(split), split.images.shape[1]
        (4, 3)
        """
        return Split(self.images, self.labels)


def scenes(n: int, size: int = 64, seed: int = 0) -> Scenes:
    """Paint ``n`` synthetic outdoor scenes with labels and exact concept masks.

    Each scene belongs to one of :data:`SCENE_CLASSES`: every six scenes in a
    row hold each class once, in shuffled order, so each class has ``n / 6``
    scenes give or take one
    and is made of objects painted back to front: a sky with a gradient and a
    time of day (day, overcast, sunset, night), maybe a sun and clouds,
    mountain ridges (some with snow), two ground zones (grass, sand, water or
    pavement), maybe a perspective road with lane marks, buildings with window
    grids and flat or gabled roofs, and trees (conifers and broad-leaved ones,
    nearer ones larger and in front). Which objects appear, how many, how big
    and in what colour depends on the class, with much overlap: every class
    has a sky, mountains appear behind cities and fields too, a city street
    is also a road. Textures (grain, grass blades, waves, foliage), the light
    of the time of day and a gamma jitter make a concept's colour vary a lot
    between scenes.

    Parameters
    ----------
    n
        Number of scenes.
    size
        Side of the square images in pixels (at least 16).
    seed
        Seed of everything random. The same ``(seed, size)`` gives the same
        scenes on every machine, and a longer set starts with the shorter one:
        ``scenes(10)[:4]`` equals ``scenes(4)``.

    Returns
    -------
    Scenes
        ``images (n, 3, size, size)``, ``labels (n,)``, ``classes`` and
        ``masks {concept: (n, size, size) bool}`` for every concept of
        :data:`SCENE_CONCEPTS` (a concept absent from a scene has an empty
        mask there).

    Examples
    --------
    >>> data = scenes(12, size=32, seed=1)
    >>> data.images.dtype, float(data.images.min()) >= 0.0, float(data.images.max()) <= 1.0
    (torch.float32, True, True)
    >>> sorted(set(data.labels.tolist())) == list(range(len(SCENE_CLASSES)))
    True
    >>> bool(torch.equal(scenes(5, size=32, seed=1).images, data.images[:5]))
    True
    """
    n = check_positive_int(n, "n")
    size = check_positive_int(size, "size")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, not {size}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    chunk = _chunk(size)
    images = torch.empty(n, 3, size, size)
    segmentation = torch.empty(n, size, size, dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    for index, start in enumerate(range(0, n, chunk)):
        count = min(chunk, n - start)
        rng = np.random.default_rng([int(seed), index])
        params = _draw(rng, chunk)
        noise = torch.Generator().manual_seed(int(rng.integers(2**62)))
        image, concept = _render({k: v[:count] for k, v in params.items()}, size, noise, chunk)
        images[start : start + count] = image
        segmentation[start : start + count] = concept
        labels[start : start + count] = torch.from_numpy(params["label"][:count])
    masks = {name: segmentation == i for i, name in enumerate(SCENE_CONCEPTS)}
    masks["building"] |= masks["window"]  # a window is part of its building
    return Scenes(images, labels, list(SCENE_CLASSES), masks)


def _chunk(size: int) -> int:
    """Scenes drawn and painted together: 252 at 64 px, fewer for larger images.

    A multiple of the number of classes, so that every run of six scenes from
    the start holds each class once.
    """
    classes = len(SCENE_CLASSES)
    return classes * int(min(42, max(2, 2**20 // (size * size) // classes)))


# -- parameters ---------------------------------------------------------------


def _draw(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Every random choice of ``n`` scenes, as arrays with the scene first."""
    u = rng.uniform
    classes = len(SCENE_CLASSES)
    label = rng.permuted(np.tile(np.arange(classes), (n // classes, 1)), axis=1).reshape(-1)
    is_ = {c: label == c for c in range(len(SCENE_CLASSES))}
    time = rng.choice(4, size=n, p=_TIME_P)
    p: dict[str, np.ndarray] = {"label": label, "time": time}

    def by_class(values: dict[int, tuple[float, float]], shape: tuple[int, ...] = ()) -> np.ndarray:
        classes = range(len(SCENE_CLASSES))
        low = np.array([values[c][0] for c in classes])[label]
        high = np.array([values[c][1] for c in classes])[label]
        draw = u(size=(n, *shape))
        return low.reshape(n, *[1] * len(shape)) + (high - low).reshape(n, *[1] * len(shape)) * draw

    def chance(values: dict[int, float], shape: tuple[int, ...] = ()) -> np.ndarray:
        table = np.array([values.get(c, 0.0) for c in range(len(SCENE_CLASSES))])
        prob = table[label].reshape(n, *[1] * len(shape))
        return u(size=(n, *shape)) < prob

    horizon = by_class(
        {
            _CITY: (0.62, 0.82),
            _MOUNTAIN: (0.55, 0.78),
            _COAST: (0.35, 0.58),
            _FOREST: (0.42, 0.65),
            _FIELD: (0.35, 0.6),
            _HIGHWAY: (0.36, 0.52),
        }
    )
    p["horizon"] = horizon

    # sky: zenith and horizon colours by time of day, jittered; lighting of everything else
    jitter = u(-0.08, 0.08, size=(n, 2, 3))
    p["zenith"] = np.clip(_ZENITH[time] + jitter[:, 0], 0, 1)
    p["sky_horizon"] = np.clip(_HORIZON[time] + jitter[:, 1], 0, 1)
    light = _LIGHT[time] * u(0.85, 1.12, size=(n, 1))
    p["light"] = light

    # sun (none when overcast), low at sunset
    sun_p = np.array([0.4, 0.0, 0.7, 0.0])[time]
    p["sun"] = u(size=n) < sun_p
    p["sun_r"] = u(0.035, 0.07, size=n)
    low = time == _SUNSET
    top = p["sun_r"] + 0.03
    p["sun_y"] = np.where(
        low, horizon - u(0.04, 0.14, size=n), top + (horizon - 0.18 - top).clip(0) * u(size=n)
    )
    p["sun_x"] = u(0.1, 0.9, size=n)
    p["sun_colour"] = np.where(low[:, None], [1.0, 0.72, 0.4], [1.0, 0.97, 0.82])
    p["glow"] = u(0.1, 0.3, size=n) * p["sun"]

    # clouds: each a union of blobs
    clouds = np.array([[1, 4], [3, 4], [0, 3], [0, 2]])[time]
    count = rng.integers(clouds[:, 0], clouds[:, 1])
    p["cloud"] = np.arange(_CLOUDS)[None] < count[:, None]
    p["cloud_x"] = u(-0.05, 1.05, size=(n, _CLOUDS))
    p["cloud_y"] = u(0.06, 1.0, size=(n, _CLOUDS)) * (horizon[:, None] - 0.12).clip(0.08)
    width = u(0.12, 0.32, size=(n, _CLOUDS))
    offsets = (np.arange(_BLOBS) / (_BLOBS - 1) - 0.5)[None, None] + u(
        -0.1, 0.1, (n, _CLOUDS, _BLOBS)
    )
    p["blob_x"] = p["cloud_x"][..., None] + width[..., None] * offsets
    p["blob_rx"] = width[..., None] * u(0.22, 0.4, size=(n, _CLOUDS, _BLOBS))
    p["blob_ry"] = p["blob_rx"] * u(0.45, 0.8, size=(n, _CLOUDS, _BLOBS))
    p["blob_y"] = p["cloud_y"][..., None] - p["blob_ry"] * u(0.0, 0.6, (n, _CLOUDS, _BLOBS))
    cloud_colour = _CLOUD_COLOUR[time][:, None] * u(0.88, 1.05, size=(n, _CLOUDS, 1))
    p["cloud_colour"] = np.clip(cloud_colour, 0, 1)

    # mountain ranges: far one first; a range is the area below max of triangular peaks
    ranges = np.where(is_[_MOUNTAIN], rng.integers(1, _RANGES + 1, size=n), 1) * chance(
        {_CITY: 0.25, _MOUNTAIN: 1.0, _COAST: 0.3, _FOREST: 0.15, _FIELD: 0.35, _HIGHWAY: 0.4}
    )
    p["range"] = np.arange(_RANGES)[None] < ranges[:, None]
    tall = np.where(is_[_MOUNTAIN], u(0.25, 0.62, n), u(0.06, 0.22, n)) * horizon / 0.6
    p["peak_x"] = u(-0.2, 1.2, size=(n, _RANGES, 3))
    p["peak_h"] = tall[:, None, None] * u(0.45, 1.0, size=(n, _RANGES, 3))
    p["peak_h"][:, 1] *= 0.6  # the near range is lower
    p["peak_w"] = u(0.15, 0.5, size=(n, _RANGES, 3))
    p["ridge_phase"] = u(0, 2 * np.pi, size=(n, _RANGES))
    p["ridge_freq"] = u(8, 20, size=(n, _RANGES))
    rock = np.stack([u(0.3, 0.55, n), u(0.3, 0.5, n), u(0.3, 0.6, n)], 1)
    rock = rock[:, None] * u(0.7, 1.1, size=(n, _RANGES, 1))
    haze = np.array([0.45, 0.1])[None, :, None]
    p["rock"] = (1 - haze) * rock * light[:, None] + haze * p["sky_horizon"][:, None]
    p["rock_dark"] = p["rock"] * u(0.6, 0.85, size=(n, _RANGES, 1))
    p["snow"] = chance(
        {_MOUNTAIN: 0.5, _CITY: 0.1, _COAST: 0.1, _FOREST: 0.1, _FIELD: 0.2, _HIGHWAY: 0.2},
        (_RANGES,),
    )
    p["snow_depth"] = u(0.03, 0.08, size=(n, _RANGES))
    p["lit_side"] = rng.choice([-1.0, 1.0], size=(n, _RANGES))

    # ground: a far zone from the horizon to a wavy boundary, a near zone below it
    grass, sand, water, pavement = 0, 1, 2, 3
    far = np.select(
        [is_[_CITY], is_[_MOUNTAIN], is_[_COAST], is_[_HIGHWAY]],
        [
            np.where(u(size=n) < 0.6, pavement, grass),
            np.where(u(size=n) < 0.4, water, grass),
            np.full(n, water),
            np.where(u(size=n) < 0.4, sand, grass),
        ],
        default=grass,
    )
    near = np.select(
        [is_[_CITY], is_[_MOUNTAIN], is_[_COAST], is_[_HIGHWAY]],
        [
            np.full(n, pavement),
            np.where(u(size=n) < 0.2, sand, grass),
            np.where(u(size=n) < 0.8, sand, grass),
            far,
        ],
        default=grass,
    )
    p["zone_kind"] = np.stack([far, near], 1)
    p["boundary"] = horizon + (1 - horizon) * by_class(
        {c: (0.2, 0.6) for c in range(len(SCENE_CLASSES))} | {_COAST: (0.25, 0.75)}
    )
    p["boundary_amp"] = np.where(is_[_COAST], u(0.02, 0.08, n), u(0.0, 0.03, n))
    p["boundary_freq"] = u(3, 12, size=n)
    p["boundary_phase"] = u(0, 2 * np.pi, size=n)
    green = np.stack([u(0.15, 0.4, n), u(0.4, 0.72, n), u(0.08, 0.28, n)], 1)
    dry = np.stack([u(0.55, 0.7, n), u(0.52, 0.65, n), u(0.22, 0.35, n)], 1)
    kinds = np.stack(
        [
            np.where((u(size=n) < 0.2)[:, None], dry, green),
            np.stack([u(0.72, 0.9, n), u(0.62, 0.78, n), u(0.42, 0.58, n)], 1),
            0.45 * p["sky_horizon"]
            + 0.55 * np.stack([u(0.02, 0.15, n), u(0.18, 0.4, n), u(0.35, 0.6, n)], 1),
            np.repeat(u(0.28, 0.5, (n, 1)), 3, 1) * [1.0, 0.98, 0.95],
        ],
        1,
    )  # (n, kind, 3)
    zone = np.take_along_axis(kinds, p["zone_kind"][..., None], 1) * u(0.8, 1.1, (n, _ZONES, 1))
    zone[:, 1] *= np.where(is_[_FIELD], u(0.7, 1.2, n), 1.0)[:, None]  # field patchwork
    lit = np.where((p["zone_kind"] == water)[..., None], 1.0, light[:, None])
    p["zone_far"] = zone * lit * 1.08
    p["zone_near"] = zone * lit * 0.85

    # road: a trapezoid from the bottom edge to a vanishing point on the horizon
    p["road"] = chance(
        {_CITY: 0.3, _MOUNTAIN: 0.15, _COAST: 0.1, _FOREST: 0.25, _FIELD: 0.35, _HIGHWAY: 1.0}
    )
    p["road_top_x"] = u(0.3, 0.7, n)
    p["road_bottom_x"] = u(0.2, 0.8, n)
    p["road_width"] = np.where(is_[_HIGHWAY], u(0.3, 0.6, n), u(0.12, 0.3, n))
    dirt = is_[_FOREST] | is_[_FIELD]
    asphalt = np.repeat(u(0.22, 0.42, (n, 1)), 3, 1)
    earth = np.stack([u(0.45, 0.6, n), u(0.35, 0.45, n), u(0.22, 0.3, n)], 1)
    p["road_colour"] = np.where(dirt[:, None] & (u(size=n) < 0.6)[:, None], earth, asphalt) * light
    p["marks"] = p["road"] & ~dirt
    p["mark_colour"] = np.where((u(size=n) < 0.5)[:, None], [0.92, 0.92, 0.9], [0.95, 0.8, 0.2])
    p["mark_colour"] = p["mark_colour"] * light
    p["dash_freq"] = u(6, 12, n)

    # buildings
    buildings = np.select(
        [is_[_CITY], is_[_COAST], is_[_FIELD], is_[_HIGHWAY], is_[_MOUNTAIN]],
        [
            rng.integers(4, _BUILDINGS + 1, n),
            rng.integers(1, 3, n) * chance({_COAST: 0.3}),
            rng.integers(1, 3, n) * chance({_FIELD: 0.25}),
            rng.integers(1, 4, n) * chance({_HIGHWAY: 0.3}),
            rng.integers(1, 2, n) * chance({_MOUNTAIN: 0.1}),
        ],
        default=0,
    )
    city = is_[_CITY][:, None]
    shape = (n, _BUILDINGS)
    p["building"] = np.arange(_BUILDINGS)[None] < buildings[:, None]
    bottom = horizon[:, None] + np.where(city, u(0.0, 0.03, shape), u(0.0, 0.12, shape)) * (
        1 - horizon[:, None]
    )
    order = np.argsort(bottom, axis=1)  # farther buildings first
    p["building_bottom"] = np.take_along_axis(bottom, order, 1)
    p["building_w"] = np.where(city, u(0.09, 0.26, shape), u(0.07, 0.15, shape))
    p["building_x"] = u(-0.1, 1.0, shape)
    height = np.where(city, u(0.15, 0.8, shape), u(0.05, 0.14, shape))
    p["building_top"] = np.maximum(p["building_bottom"] - height, 0.0)
    p["gable"] = u(size=shape) < np.where(city, 0.1, 0.6)
    p["gable_h"] = p["building_w"] * u(0.25, 0.5, shape)
    wall = _BUILDING_COLOURS[rng.integers(0, len(_BUILDING_COLOURS), shape)]
    wall = np.clip(wall * u(0.8, 1.15, (*shape, 1)), 0, 1) * light[:, None]
    p["wall"] = wall
    p["roof_colour"] = (
        np.where((u(size=shape) < 0.5)[..., None], [0.55, 0.22, 0.15], [0.3, 0.3, 0.32])
        * light[:, None]
    )
    p["windows"] = u(size=shape) < 0.85
    p["window_cols"] = rng.integers(2, 7, shape)
    p["window_fx"] = u(0.4, 0.7, shape)
    p["window_rows"] = u(0.035, 0.07, shape)
    p["window_fy"] = u(0.4, 0.65, shape)
    dark = np.stack([u(0.12, 0.3, shape), u(0.15, 0.35, shape), u(0.25, 0.45, shape)], -1)
    reflect = 0.7 * p["sky_horizon"][:, None] + 0.1
    p["window_dark"] = np.where((u(size=shape) < 0.4)[..., None], reflect, dark) * light[:, None]
    p["window_lit"] = np.where(time == _NIGHT, 0.65, np.where(time == _SUNSET, 0.25, 0.0))
    p["window_seed"] = u(0, 100, shape)

    # trees, farther ones first; nearer ones are larger
    trees = np.select(
        [is_[_FOREST], is_[_FIELD], is_[_MOUNTAIN], is_[_CITY], is_[_COAST], is_[_HIGHWAY]],
        [
            rng.integers(8, _TREES + 1, n),
            rng.integers(0, 5, n),
            rng.integers(0, 6, n),
            rng.integers(0, 4, n) * chance({_CITY: 0.5}),
            rng.integers(0, 3, n),
            rng.integers(0, 5, n),
        ],
    )
    shape = (n, _TREES)
    forest = is_[_FOREST][:, None]
    p["tree"] = np.arange(_TREES)[None] < trees[:, None]
    base = horizon[:, None] + (1.12 - horizon[:, None]) * u(size=shape) ** np.where(
        forest, 1.0, 1.5
    )
    base = np.sort(base, axis=1)
    p["tree_base"] = base
    p["tree_x"] = u(-0.05, 1.05, shape)
    depth = (base - horizon[:, None]) / (1 - horizon[:, None])
    scale = np.where(forest, u(0.3, 0.65, shape), u(0.1, 0.25, shape))
    p["tree_size"] = scale * (0.35 + 0.9 * depth)
    conifer_p = np.select([is_[_MOUNTAIN], is_[_FOREST]], [0.8, 0.5], default=0.3)[:, None]
    p["conifer"] = u(size=shape) < conifer_p
    leaves = np.stack([u(0.08, 0.3, shape), u(0.28, 0.55, shape), u(0.05, 0.2, shape)], -1)
    autumn = np.stack([u(0.6, 0.8, shape), u(0.3, 0.5, shape), u(0.05, 0.15, shape)], -1)
    fall = (u(size=shape) < 0.15) & ~p["conifer"]
    leaves = np.where(fall[..., None], autumn, leaves)
    leaves = np.where(p["conifer"][..., None], leaves * 0.75, leaves)
    p["leaves"] = leaves * light[:, None]
    p["trunk_colour"] = np.array([0.33, 0.22, 0.12]) * u(0.7, 1.2, (*shape, 1)) * light[:, None]
    p["lobe"] = u(-1, 1, (*shape, 2))

    p["gamma"] = u(0.8, 1.25, n)
    p["texture"] = u(0.4, 1.6, n)  # some scenes smooth all over, some rough
    return p


# -- painting -----------------------------------------------------------------


class _Canvas:
    """Object ids per pixel plus, per object, a colour at its top and at its bottom."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size
        coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
        self.y = coords.view(1, size, 1)
        self.x = coords.view(1, 1, size)
        self.ids = torch.zeros(n, size, size, dtype=torch.uint8)
        self.top = torch.zeros(n, _SLOTS, 3)
        self.bottom = torch.zeros(n, _SLOTS, 3)
        self.y0 = torch.zeros(n, _SLOTS)
        self.y1 = torch.ones(n, _SLOTS)

    def paint(self, slot: int, present: np.ndarray, region) -> None:
        """Give ``slot`` the pixels where ``region(idx)`` holds, for the scenes ``present``.

        Slots are painted in increasing order, so a later slot covering a pixel
        is the larger id there: painting is an elementwise maximum.
        """
        idx = np.flatnonzero(present)
        if len(idx) == 0:
            return
        if len(idx) == self.n:
            value = region(slice(None)).to(torch.uint8).mul_(slot)
            torch.maximum(self.ids, value, out=self.ids)
            return
        rows = torch.from_numpy(idx)
        value = region(idx).to(torch.uint8).mul_(slot)
        self.ids.index_copy_(0, rows, torch.maximum(self.ids[rows], value))

    def colour(self, slot: int, top, bottom=None, y0=None, y1=None) -> None:
        """Colour ``slot``: ``top`` at height ``y0`` fading to ``bottom`` at ``y1``."""
        self.top[:, slot] = _t(top)
        self.bottom[:, slot] = _t(top if bottom is None else bottom)
        if y0 is not None:
            self.y0[:, slot] = _t(y0)
            self.y1[:, slot] = _t(y1)


def _t(values) -> Tensor:
    return torch.as_tensor(np.asarray(values), dtype=torch.float32)


def _col(values: np.ndarray, idx) -> Tensor:
    """Per-scene values as ``(n, 1, 1)`` for broadcasting against pixels."""
    return _t(values[idx]).view(-1, 1, 1)


def _render(p: dict[str, np.ndarray], size: int, noise: torch.Generator, chunk: int):
    n = len(p["label"])
    c = _Canvas(n, size)
    y, x = c.y, c.x
    horizon = p["horizon"]

    def ellipse(cx, cy, rx, ry):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1

    # sky and sun
    c.colour(_SKY, p["zenith"], p["sky_horizon"], np.zeros(n), horizon)
    c.colour(_SUN, p["sun_colour"])
    c.paint(
        _SUN,
        p["sun"],
        lambda i: (
            (x - _col(p["sun_x"], i)) ** 2 + (y - _col(p["sun_y"], i)) ** 2
            < _col(p["sun_r"], i) ** 2
        ),
    )

    # clouds
    for k in range(_CLOUDS):
        slot = _CLOUD0 + k
        colour = p["cloud_colour"][:, k]
        rim = p["blob_y"][:, k].min(1) - p["blob_ry"][:, k].max(1)
        c.colour(slot, colour * 1.02, colour * 0.82, rim, p["cloud_y"][:, k] + 0.02)

        def cloud(i, k=k):
            inside = None
            for b in range(_BLOBS):
                blob = ellipse(
                    _col(p["blob_x"][:, k, b], i),
                    _col(p["blob_y"][:, k, b], i),
                    _col(p["blob_rx"][:, k, b], i),
                    _col(p["blob_ry"][:, k, b], i),
                )
                inside = blob if inside is None else inside | blob
            return inside

        c.paint(slot, p["cloud"][:, k], cloud)

    # mountain ranges: ridge height per column, snow below the ridge of the high ones
    xs = x.view(1, size).numpy().astype(np.float64)
    sides: list[Tensor] = []  # mountain shading by the slope of the ridge
    for r in range(_RANGES):
        peaks = p["peak_h"][:, r, :, None] * np.clip(
            1 - np.abs(xs[:, None] - p["peak_x"][:, r, :, None]) / p["peak_w"][:, r, :, None],
            0,
            None,
        )  # (n, 3, W)
        rough = 0.012 * np.sin(p["ridge_freq"][:, r, None] * xs + p["ridge_phase"][:, r, None])
        height = peaks.max(1) + rough + 0.015
        ridge = horizon[:, None] - height  # (n, W)
        ridge_t = _t(ridge).view(n, 1, size)
        slope = np.gradient(ridge, axis=1) * size * p["lit_side"][:, r, None]
        c.colour(_RANGE0 + r, p["rock"][:, r], p["rock_dark"][:, r], ridge.min(1), horizon)
        c.paint(_RANGE0 + r, p["range"][:, r], lambda i, rt=ridge_t: y > rt[i])
        high = ridge < horizon[:, None] - 0.18
        snowline = _t(np.where(high, ridge + p["snow_depth"][:, r, None], -1.0)).view(n, 1, size)
        snow = np.array([0.93, 0.94, 0.97]) * p["light"] ** 0.5
        c.colour(_SNOW0 + r, snow, snow * 0.85, ridge.min(1), ridge.min(1) + 0.1)
        c.paint(
            _SNOW0 + r,
            p["range"][:, r] & p["snow"][:, r],
            lambda i, rt=ridge_t, st=snowline: (y > rt[i]) & (y < st[i]),
        )
        sides.append(_t(0.18 * np.tanh(slope)).view(n, 1, size))

    # ground zones
    wave = p["boundary_amp"][:, None] * np.sin(
        p["boundary_freq"][:, None] * xs + p["boundary_phase"][:, None]
    )
    boundary = _t(p["boundary"][:, None] + wave).view(n, 1, size)
    for z in range(_ZONES):
        far = p["zone_far"][:, z]
        near = p["zone_near"][:, z]
        c.colour(_ZONE0 + z, far, near, horizon, np.ones(n))
        if z == 0:
            c.paint(_ZONE0, np.ones(n, bool), lambda i: y >= _col(horizon, i))
        else:
            c.paint(_ZONE0 + 1, np.ones(n, bool), lambda i: y >= boundary[i])

    # road and lane marks
    def road_geometry(i):
        h = _col(horizon, i)
        t = ((y - h) / (1 - h)).clamp(min=0)
        centre = (
            _col(p["road_top_x"], i) + (_col(p["road_bottom_x"], i) - _col(p["road_top_x"], i)) * t
        )
        half = 0.008 + _col(p["road_width"], i) * t
        return y >= h, t, (x - centre).abs(), half

    def road(i):
        below, _, off, half = road_geometry(i)
        return below & (off < half)

    def marks(i):
        below, t, off, half = road_geometry(i)
        dashes = torch.sin(_col(p["dash_freq"], i) * torch.log(t + 0.05)) > 0
        return below & (off < 0.05 * half + 0.3 / size) & dashes & (t > 0.05)

    c.colour(_ROAD, p["road_colour"] * 0.9, p["road_colour"] * 1.05, horizon, np.ones(n))
    c.paint(_ROAD, p["road"], road)
    c.colour(_MARK, p["mark_colour"])
    c.paint(_MARK, p["marks"], marks)

    # buildings, roofs and windows
    hashes: list[tuple[int, Tensor, Tensor]] = []
    for b in range(_BUILDINGS):
        left, width = p["building_x"][:, b], p["building_w"][:, b]
        top, bottom = p["building_top"][:, b], p["building_bottom"][:, b]
        c.colour(_BUILDING0 + b, p["wall"][:, b] * 1.05, p["wall"][:, b] * 0.85, top, bottom)
        c.colour(_ROOF0 + b, p["roof_colour"][:, b])

        def wall(i, left=left, width=width, top=top, bottom=bottom):
            x0 = _col(left, i)
            return (
                (x >= x0) & (x < x0 + _col(width, i)) & (y >= _col(top, i)) & (y < _col(bottom, i))
            )

        def roof(i, left=left, width=width, top=top, b=b):
            half = _col(width, i) / 2
            centre = _col(left, i) + half
            peak = _col(p["gable_h"][:, b], i)
            rise = _col(top, i) - peak * (1 - (x - centre).abs() / half).clamp(min=0)
            return (y >= rise) & (y < _col(top, i)) & ((x - centre).abs() < half)

        def cells(i, left=left, width=width, top=top, bottom=bottom, b=b):
            margin = 0.12 * _col(width, i)
            x0 = _col(left, i) + margin
            inner = _col(width, i) - 2 * margin
            cell_w = inner / _col(p["window_cols"][:, b], i)
            cell_h = _col(p["window_rows"][:, b], i)
            u = (x - x0) / cell_w
            v = (y - _col(top, i) - 0.6 * cell_h) / cell_h
            inside = (u >= 0) & (x < x0 + inner) & (v >= 0) & (y < _col(bottom, i) - cell_h)
            inside &= (u.frac() < _col(p["window_fx"][:, b], i)) & (
                v.frac() < _col(p["window_fy"][:, b], i)
            )
            return inside, u.floor() + 17.0 * v.floor()

        c.paint(_BUILDING0 + b, p["building"][:, b], wall)
        c.paint(_ROOF0 + b, p["building"][:, b] & p["gable"][:, b], roof)
        lit = p["window_lit"] > 0  # some windows lit after dark
        c.colour(
            _WINDOW0 + b,
            p["window_dark"][:, b],
            np.where(lit[:, None], [1.0, 0.86, 0.45], p["window_dark"][:, b]),
        )
        present = p["building"][:, b] & p["windows"][:, b]
        c.paint(_WINDOW0 + b, present, lambda i, cells=cells: cells(i)[0])
        idx = np.flatnonzero(present & lit)
        if len(idx):
            rows = torch.from_numpy(idx)
            cell = cells(idx)[1]
            value = torch.sin(cell * 12.9898 + _col(p["window_seed"][:, b], idx)) * 43758.5453
            hashes.append((b, rows, value.frac().abs()))

    # trees: trunk, then crown (a cone or three ellipses)
    for k in range(_TREES):
        base, tx, s = p["tree_base"][:, k], p["tree_x"][:, k], p["tree_size"][:, k]
        crown_bottom = base - 0.2 * s
        c.colour(_TRUNK0 + k, p["trunk_colour"][:, k])
        c.colour(
            _CROWN0 + k, p["leaves"][:, k] * 1.15, p["leaves"][:, k] * 0.75, base - s, crown_bottom
        )

        def trunk(i, base=base, tx=tx, s=s):
            half = (0.035 * _col(s, i)).clamp(min=0.55 / size)
            return (
                ((x - _col(tx, i)).abs() < half)
                & (y < _col(base, i))
                & (y >= _col(base - 0.3 * s, i))
            )

        def cone(i, base=base, tx=tx, s=s):
            top, bottom = _col(base - s, i), _col(base - 0.2 * s, i)
            depth = ((y - top) / (bottom - top)).clamp(0, 1)
            return (y >= top) & (y < bottom) & ((x - _col(tx, i)).abs() < 0.32 * _col(s, i) * depth)

        def leafy(i, base=base, tx=tx, s=s, k=k):
            cx, size_ = _col(tx, i), _col(s, i)
            cy = _col(base - 0.6 * s, i)
            lobe = _t(p["lobe"][i, k]).view(-1, 2, 1, 1)
            crown = ellipse(cx, cy, 0.3 * size_, 0.36 * size_)
            for j, side in ((0, -1), (1, 1)):
                crown |= ellipse(
                    cx + side * 0.2 * size_,
                    cy + 0.1 * size_ * lobe[:, j],
                    0.2 * size_,
                    0.22 * size_,
                )
            return crown

        c.paint(_TRUNK0 + k, p["tree"][:, k], trunk)
        c.paint(_CROWN0 + k, p["tree"][:, k] & p["conifer"][:, k], cone)
        c.paint(_CROWN0 + k, p["tree"][:, k] & ~p["conifer"][:, k], leafy)

    # colours: each object's gradient per image row, gamma, lit windows, sun glow,
    # shading of the ridges, textures
    concepts = np.tile(_SLOT_CONCEPT, (n, 1))
    kind_concept = np.array([_C["grass"], _C["sand"], _C["water"], _C["road"]])
    concepts[:, _ZONE0 : _ZONE0 + _ZONES] = kind_concept[p["zone_kind"]]
    slots = c.ids.int() + (torch.arange(n, dtype=torch.int32) * _SLOTS).view(n, 1, 1)
    concept = (
        torch.from_numpy(concepts).view(-1).to(torch.uint8)[slots.view(-1)].view(n, size, size)
    )
    gamma = _t(p["gamma"]).view(n, 1, 1, 1)
    rows = c.y.view(1, 1, size, 1)
    t = ((rows - c.y0[..., None, None]) / (c.y1 - c.y0).clamp(min=1e-3)[..., None, None]).clamp(
        0, 1
    )
    table = (c.top[:, :, None] + (c.bottom - c.top)[:, :, None] * t).clamp(0, 1) ** gamma
    row = torch.arange(size, dtype=torch.int32).view(1, size, 1)
    where = (slots * size + row).long()
    table = table.permute(3, 0, 1, 2).reshape(3, -1)
    image = torch.stack([table[ch].take(where) for ch in range(3)], 1)  # (n, 3, H, W)
    lit_colour = torch.tensor([1.0, 0.86, 0.45])
    for b, rows_, value in hashes:
        on = (c.ids[rows_] == _WINDOW0 + b) & (value < _col(p["window_lit"], rows_.numpy()))
        image.index_add_(0, rows_, on[:, None] * (lit_colour.view(1, 3, 1, 1) - image[rows_]))
    every = slice(None)
    glow = _col(p["glow"], every) * torch.exp(
        -((x - _col(p["sun_x"], every)) ** 2 + (y - _col(p["sun_y"], every)) ** 2) / 0.02
    )
    image += ((concept == _C["sky"]) * glow)[:, None] * torch.tensor([1.0, 0.9, 0.6]).view(3, 1, 1)
    shade = torch.ones(n, size, size)
    for r, side in enumerate(sides):
        shade += ((c.ids == _RANGE0 + r) | (c.ids == _SNOW0 + r)) * side
    fields = [field[:n] for field in _noise(noise, chunk, size)]
    index = concept.long()
    gain = _col(p["texture"], every)
    for field, strength in zip(fields, _TEXTURE, strict=True):
        shade += field * strength.take(index) * gain
    image *= shade[:, None]
    return image.clamp_(0, 1), concept


def _noise(generator: torch.Generator, n: int, size: int) -> tuple[Tensor, ...]:
    """Four zero-mean noise fields ``(n, size, size)``: grain, vertical and horizontal
    streaks, blotches (drawn for the whole chunk, so a prefix of scenes gets the same)."""

    def smooth(h: int, w: int) -> Tensor:
        low = torch.randn(n, h, w, generator=generator)
        return _stretch(h, size) @ low @ _stretch(w, size).T

    grain = torch.rand(n, size, size, generator=generator).sub_(0.5).mul_(12**0.5)  # variance 1
    vertical = smooth(max(2, size // 6), size).clamp_(-2.5, 2.5)
    horizontal = smooth(size, max(2, size // 10)).clamp_(-2.5, 2.5)
    blotch = smooth(max(2, size // 5), max(2, size // 5)).mul_(1.6).clamp_(-2.5, 2.5)
    return grain, vertical, horizontal, blotch


def _stretch(low: int, high: int) -> Tensor:
    """The ``(high, low)`` matrix of bilinear (1-D linear) upsampling from ``low`` to ``high``."""
    if low == high:
        return torch.eye(high)
    eye = torch.eye(low).view(low, 1, low)
    return F.interpolate(eye, size=high, mode="linear", align_corners=False)[:, 0].T.contiguous()
