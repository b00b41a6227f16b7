import pytest
import torch

from netlens.datasets import SCENE_CLASSES, SCENE_CONCEPTS, Scenes, Split, scenes

GROUND = ("water", "sand", "grass", "road")


@pytest.fixture(scope="module")
def data() -> Scenes:
    return scenes(120, size=32, seed=3)


def test_shapes_types_and_range(data):
    assert data.images.shape == (120, 3, 32, 32) and data.images.dtype == torch.float32
    assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0
    assert data.labels.shape == (120,) and data.labels.dtype == torch.int64
    assert data.classes == list(SCENE_CLASSES)
    assert list(data.masks) == list(SCENE_CONCEPTS) == data.concepts
    for mask in data.masks.values():
        assert mask.shape == (120, 32, 32) and mask.dtype == torch.bool


def test_masks_partition_every_image_windows_inside_buildings(data):
    window, building = data.masks["window"], data.masks["building"]
    assert bool(window.any()) and bool((building | ~window).all())  # windows lie in buildings
    total = sum(mask.long() for mask in data.masks.values()) - window.long()
    assert bool((total == 1).all())
    seg = data.segmentation
    for i, (concept, mask) in enumerate(data.masks.items()):
        front = mask & ~window if concept == "building" else mask
        assert torch.equal(seg == i, front)
    assert sum(data.fractions().values()) - data.fractions()["window"] == pytest.approx(1.0)


def test_every_concept_and_class_occurs(data):
    shares = data.fractions()
    assert all(shares[c] > 0 for c in SCENE_CONCEPTS), shares
    assert torch.bincount(data.labels, minlength=6).tolist() == [20] * 6


def test_every_six_scenes_hold_each_class_once():
    labels = scenes(30, size=16, seed=5).labels.view(5, 6)
    for block in labels:
        assert sorted(block.tolist()) == list(range(len(SCENE_CLASSES)))


def test_same_seed_same_scenes_and_prefixes_agree():
    a, b = scenes(20, size=32, seed=7), scenes(20, size=32, seed=7)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    short = scenes(9, size=32, seed=7)
    assert torch.equal(short.images, a.images[:9])
    assert all(torch.equal(short.masks[c], a.masks[c][:9]) for c in SCENE_CONCEPTS)
    other = scenes(20, size=32, seed=8)
    assert not torch.equal(other.images, a.images)


def test_sets_longer_than_one_chunk_are_generated_whole():
    # 64 px scenes are painted 252 at a time; the second chunk must be filled too
    data = scenes(260, size=64, seed=0)
    tail = data.images[252:]
    assert tail.shape == (8, 3, 64, 64)
    assert float(tail.std()) > 0.05
    assert not torch.equal(tail[0], data.images[0])
    seg = data.segmentation[252:]
    assert bool((seg >= 0).all()) and bool(data.masks["sky"][252:].any())


def test_sky_is_always_above_the_ground(data):
    # in every column, the lowest sky pixel is above the highest ground pixel
    rows = torch.arange(32).view(1, 32, 1)
    ground = sum(data.masks[c].long() for c in GROUND).bool()
    lowest_sky = torch.where(data.masks["sky"], rows, -1).amax(1)
    highest_ground = torch.where(ground, rows, 99).amin(1)
    assert bool((lowest_sky < highest_ground).all())


def test_concept_colours_vary_between_scenes():
    data = scenes(240, size=32, seed=1)
    for concept in ("sky", "building", "grass"):
        mask = data.masks[concept][:, None].float()
        area = mask.sum((2, 3))
        shown = area[:, 0] > 10
        mean = (data.images * mask).sum((2, 3))[shown] / area[shown]
        # a concept's mean colour spreads widely over the set, in brightness and in hue
        assert float(mean.mean(1).std()) > 0.08, concept
        redness = mean[:, 0] - mean[:, 2]
        assert float(redness.max() - redness.min()) > 0.3, concept


def test_windows_sit_on_walls():
    # above every window pixel of a column, the next pixel that is neither window nor tree
    # is a building's wall or roof (windows are painted inside walls)
    data = scenes(36, size=64, seed=2)
    window, tree = data.masks["window"], data.masks["tree"]
    wall = data.masks["building"] & ~window
    images, rows, cols = torch.nonzero(window, as_tuple=True)
    assert len(images) > 50
    for n, r, c in zip(images.tolist(), rows.tolist(), cols.tolist(), strict=True):
        above = r - 1
        while above >= 0 and (window[n, above, c] or tree[n, above, c]):
            above -= 1
        assert above >= 0 and bool(wall[n, above, c]), (n, r, c)


def test_indexing_and_split(data):
    part = data[torch.tensor([3, 5])]
    assert torch.equal(part.images, data.images[[3, 5]])
    assert torch.equal(part.masks["sky"], data.masks["sky"][[3, 5]])
    one = data[4]
    assert len(one) == 1 and torch.equal(one.images[0], data.images[4])
    assert len(data[-1]) == 1 and torch.equal(data[-1].labels, data.labels[-1:])
    split = data.split()
    assert isinstance(split, Split) and split.images is data.images


def test_other_sizes():
    small = scenes(6, size=16)
    big = scenes(2, size=96)
    assert small.images.shape == (6, 3, 16, 16) and big.images.shape == (2, 3, 96, 96)
    windows = big.masks["window"].long()
    assert bool((sum(m.long() for m in big.masks.values()) - windows == 1).all())


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"n": 0}, ValueError),
        ({"n": 2.0}, TypeError),
        ({"n": 2, "size": 8}, ValueError),
        ({"n": 2, "seed": -1}, ValueError),
        ({"n": 2, "seed": 1.5}, ValueError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        scenes(**kwargs)
