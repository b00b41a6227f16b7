"""extract_dataset / load_features: dataset order, ranks, resuming, corruption, bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from netlens import FeatureExtractor, extract_dataset, load_features
from netlens.errors import CorruptFeaturesError
from netlens.testing import tiny_cnn

N, BATCH, SHARD = 23, 4, 8  # 23 is no multiple of 2 ranks x 4 images, nor of a shard


class Pictures(Dataset):
    """Seeded random images with labels, made per item (nothing held)."""

    def __init__(self, n: int = N, side: int = 12, fail_at: int | None = None) -> None:
        self.n, self.side, self.fail_at, self.read = n, side, fail_at, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if i == self.fail_at:
            raise RuntimeError(f"item {i} cannot be read")
        self.read.append(i)
        g = torch.Generator().manual_seed(1000 + i)
        return torch.randn(3, self.side, self.side, generator=g), i % 5


def _all_images(data: Pictures) -> torch.Tensor:
    return torch.stack([data[i][0] for i in range(len(data))])


@pytest.mark.parametrize("reduce", [None, "mean"])
def test_features_on_disk_equal_the_extractor_in_dataset_order(tmp_path, reduce):
    model, data = tiny_cnn(), Pictures()
    feats = extract_dataset(
        model, ["features.2", "pool"], data, tmp_path / "f", batch_size=BATCH,
        shard_size=SHARD, reduce=reduce, dtype=torch.float32, progress=False,
    )  # fmt: skip
    expected = FeatureExtractor(model, ["features.2", "pool"]).extract(
        [(_all_images(data), None)], reduce=reduce, progress=False
    )
    for layer in ("features.2", "pool"):
        assert feats[layer].shape == tuple(expected[layer].shape)
        np.testing.assert_allclose(np.asarray(feats[layer]), expected[layer].numpy(), atol=1e-6)
    assert feats.labels.tolist() == [i % 5 for i in range(N)]
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert manifest["length"] == N and manifest["order"] == "dataset"
    assert [s["rows"] for s in manifest["shards"]] == [8, 8, 7]
    assert not list((tmp_path / "f").rglob("*.partial*"))


def test_float16_on_disk_is_the_rounded_float32(tmp_path):
    model, data = tiny_cnn(), Pictures()
    half = extract_dataset(model, "features", data, tmp_path / "h", batch_size=5, progress=False)
    full = extract_dataset(
        model, "features", data, tmp_path / "s", batch_size=5, dtype="float32", progress=False
    )
    assert half["features"].dtype == np.float16
    assert np.array_equal(
        np.asarray(half["features"]), np.asarray(full["features"]).astype(np.float16)
    )


RANK_SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[2])
    from test_feature_store import Pictures, BATCH, SHARD
    from netlens import extract_dataset
    from netlens.testing import tiny_cnn

    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # one rank of torchrun
    extract_dataset(tiny_cnn(), ["features", "pool"], Pictures(), sys.argv[1], batch_size=BATCH,
                    shard_size=SHARD, dtype=torch.float32, progress=False)
    dist.destroy_process_group()
    """
)


def _run(command: list[str], cwd: Path) -> None:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_two_ranks_under_torchrun_write_what_one_process_writes(tmp_path):
    script = tmp_path / "extract.py"
    script.write_text(RANK_SCRIPT)
    here = str(Path(__file__).resolve().parent)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    _run([*torchrun, "--master-port", "29631", str(script), str(tmp_path / "two"), here], tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs
    try:  # the single process is this one
        extract_dataset(tiny_cnn(), ["features", "pool"], Pictures(), tmp_path / "one",
                        batch_size=BATCH, shard_size=SHARD, dtype=torch.float32,
                        progress=False)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    one, two = load_features(tmp_path / "one", verify=True), load_features(tmp_path / "two")
    for layer in ("features", "pool"):
        assert np.asarray(one[layer]).tobytes() == np.asarray(two[layer]).tobytes()  # bitwise
    assert np.array_equal(one.labels, two.labels)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.npy"))
    assert files == sorted(
        p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.npy")
    )
    for file in files:
        assert (tmp_path / "one" / file).read_bytes() == (tmp_path / "two" / file).read_bytes()


def test_an_interrupted_run_resumes_without_redoing_finished_shards(tmp_path):
    model = tiny_cnn()
    kwargs = dict(batch_size=BATCH, shard_size=SHARD, dtype=torch.float32, progress=False)
    with pytest.raises(RuntimeError, match="item 17 cannot be read"):
        extract_dataset(model, "pool", Pictures(fail_at=17), tmp_path / "f", **kwargs)
    assert not (tmp_path / "f" / "manifest.json").exists()
    with pytest.raises(FileNotFoundError, match="no finished extraction"):
        load_features(tmp_path / "f")
    again = Pictures()
    resumed = extract_dataset(model, "pool", again, tmp_path / "f", **kwargs)
    # item 0 once for the shapes, then only the unfinished shard [16, 23)
    assert sorted(again.read) == [0, *range(16, N)]
    whole = extract_dataset(model, "pool", Pictures(), tmp_path / "g", **kwargs)
    assert np.array_equal(np.asarray(resumed["pool"]), np.asarray(whole["pool"]))


def test_another_extraction_into_the_same_folder_is_refused(tmp_path):
    model = tiny_cnn()
    extract_dataset(model, "pool", Pictures(), tmp_path / "f", batch_size=BATCH, progress=False)
    with pytest.raises(FileExistsError, match="another extraction .*layers"):
        extract_dataset(model, "features", Pictures(), tmp_path / "f", progress=False)
    other = tiny_cnn(seed=1)
    with pytest.raises(FileExistsError, match="model_fingerprint"):
        extract_dataset(other, "pool", Pictures(), tmp_path / "f", batch_size=BATCH, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        extract_dataset(model, "pool", Pictures(), tmp_path / "mine", progress=False)


def test_a_corrupt_shard_is_detected_by_the_manifest(tmp_path):
    extract_dataset(
        tiny_cnn(), "features", Pictures(), tmp_path / "f", shard_size=8, progress=False
    )
    shard = next((tmp_path / "f").glob("00-features/00001.npy"))
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # same size, other contents
    shard.write_bytes(bytes(data))
    load_features(tmp_path / "f")  # sizes and headers agree
    with pytest.raises(CorruptFeaturesError, match="differs from what was written"):
        load_features(tmp_path / "f", verify=True)
    shard.write_bytes(bytes(data[:-100]))
    with pytest.raises(CorruptFeaturesError, match="truncated"):
        load_features(tmp_path / "f")
    shard.unlink()
    with pytest.raises(CorruptFeaturesError, match="missing"):
        load_features(tmp_path / "f")


def test_a_feature_array_indexes_like_the_whole_array(tmp_path):
    feats = extract_dataset(tiny_cnn(), "features", Pictures(), tmp_path / "f", shard_size=8,
                            batch_size=3, progress=False)["features"]  # fmt: skip
    whole = np.asarray(feats)
    assert len(feats.shards) == 3 and isinstance(feats.shards[0], np.memmap)
    indices = [0, 7, 8, -1, slice(5, 19), slice(None, None, 3), slice(20, 5, -2)]
    indices += [np.array([22, 0, 8, 8, 15]), whole[:, 0, 0, 0] > 0, (slice(2, 12), 1)]
    for index in indices:
        np.testing.assert_array_equal(feats[index], whole[index])
    blocks = list(feats.blocks(5))
    assert [start for start, _ in blocks] == [0, 5, 10, 15, 20]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), whole)
    with pytest.raises(IndexError):
        feats[N]


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        extract_dataset(tiny_cnn(), "pool", Pictures(), tmp_path / "a", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="reduce"):
        extract_dataset(tiny_cnn(), "pool", Pictures(), tmp_path / "a", reduce="sum")
    with pytest.raises(TypeError, match="map-style"):
        extract_dataset(tiny_cnn(), "pool", iter([]), tmp_path / "a")
    assert not (tmp_path / "a").exists()


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from pathlib import Path
    from torch.utils.data import Dataset
    from netlens import extract_dataset

    class Noise(Dataset):
        def __len__(self):
            return 20000
        def __getitem__(self, i):
            return torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(i))

    def status_mib(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    # A network cheap to run with a wide layer: 32 x 8 x 8 = 2,048 features an image,
    # so the output is large while the forward passes take seconds.
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("conv", torch.nn.Conv2d(3, 32, 3, padding=1))
    model.add_module("relu", torch.nn.ReLU())
    model.add_module("pool", torch.nn.AdaptiveAvgPool2d(8))
    model.add_module("head", torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2048, 10)))
    model.eval()
    with torch.no_grad():
        model(torch.randn(64, 3, 16, 16))  # warm-up: the allocator's pools for a batch
    before = status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    feats = extract_dataset(model, "pool", Noise(), sys.argv[1], batch_size=64,
                            dtype=torch.float32, progress=False)
    peak = status_mib("VmHWM") - before
    size = sum(p.stat().st_size for p in Path(sys.argv[1]).rglob("*.npy")) / 2**20
    print(json.dumps({"peak_mib": peak, "output_mib": size, "shape": feats["pool"].shape}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_extracting_20000_images_keeps_memory_bounded_below_the_output(tmp_path):
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(tmp_path / "f")],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["shape"] == [20000, 32, 8, 8]
    assert measured["output_mib"] > 150  # 20,000 x 2,048 float32
    assert measured["peak_mib"] < measured["output_mib"] / 3, measured


# --- EmbeddingProbe over features on disk ------------------------------------------


@pytest.fixture
def disk_probe(tmp_path, monkeypatch):
    """A probe over 23 items on disk, and one over the same features in memory."""
    import netlens.embedding as embedding
    from netlens import EmbeddingProbe

    extract_dataset(tiny_cnn(), "features", Pictures(), tmp_path / "f", batch_size=BATCH,
                    shard_size=SHARD, dtype=torch.float32, progress=False)  # fmt: skip
    on_disk = EmbeddingProbe.from_features(tmp_path / "f")
    in_memory = EmbeddingProbe(tiny_cnn(), "features")
    in_memory.features = torch.from_numpy(np.asarray(on_disk.features)).flatten(1)
    in_memory.labels = on_disk.labels
    # Blocks of 5 rows of the bank and 3 queries: every query meets several blocks.
    dim = in_memory.features.shape[1]
    monkeypatch.setattr(embedding, "_BLOCK_ELEMENTS", 5 * dim)
    return on_disk, in_memory


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_knn_over_a_bank_on_disk_equals_it_in_memory(disk_probe, metric, exclude_self):
    on_disk, in_memory = disk_probe
    queries = in_memory.features if exclude_self else in_memory.features[[3, 9, 22, 0]] + 0.01
    got = on_disk.knn(queries, 6, metric=metric, exclude_self=exclude_self, batch_size=3)
    expected = in_memory.knn(queries, 6, metric=metric, exclude_self=exclude_self)
    assert torch.equal(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-6)


def test_knn_accuracy_over_a_bank_on_disk_equals_it_in_memory(disk_probe):
    on_disk, in_memory = disk_probe
    assert on_disk.labels.tolist() == [i % 5 for i in range(N)]
    assert on_disk.knn_accuracy(3) == in_memory.knn_accuracy(3)
    assert on_disk.knn_accuracy(3, metric="euclidean") == in_memory.knn_accuracy(
        3, metric="euclidean"
    )


def test_a_probe_from_disk_refuses_images_and_asks_for_a_layer(disk_probe, tmp_path):
    from netlens import EmbeddingProbe

    on_disk, _ = disk_probe
    with pytest.raises(TypeError, match="no model"):
        on_disk.fit(torch.randn(2, 3, 12, 12))
    with pytest.raises(TypeError, match="no model"):
        on_disk.knn(torch.randn(2, 3, 12, 12), 2)
    with pytest.raises(ValueError, match="features per row"):
        on_disk.knn(torch.randn(2, 7), 2)
    extract_dataset(tiny_cnn(), ["features", "pool"], Pictures(), tmp_path / "two", progress=False)
    with pytest.raises(ValueError, match="several layers"):
        EmbeddingProbe.from_features(tmp_path / "two")
    probe = EmbeddingProbe.from_features(tmp_path / "two", layer="pool", labels=torch.zeros(N))
    assert probe.labels.tolist() == [0] * N and "pool" in repr(probe)
