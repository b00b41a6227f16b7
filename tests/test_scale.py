"""Streaming a large dataset keeps memory bounded (measured, not timed)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, resource, torch
    from torch.utils.data import DataLoader, Dataset
    from netlens import FeatureExtractor
    from netlens.data import SmallResNet

    torch.set_num_threads(1)

    class Generated(Dataset):
        # Images made on demand, so the dataset itself takes no memory.
        def __len__(self):
            return 20_000
        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return torch.rand(1, 16, 16, generator=g), i % 10

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    torch.manual_seed(0)
    model = SmallResNet(width=16).eval()
    loader = DataLoader(Generated(), batch_size=500)
    fx = FeatureExtractor(model, ["layer1", "layer4"])
    fx(torch.rand(500, 1, 16, 16))  # warm up allocator and kernels
    start = peak_mb()
    out = fx.extract(loader, reduce="mean", progress=False)
    full_mb = 20_000 * 16 * 16 * 16 * 4 / 2**20  # layer1 maps without reduction
    print(json.dumps({
        "growth_mb": peak_mb() - start,
        "full_mb": full_mb,
        "shapes": {k: list(v.shape) for k, v in out.items()},
    }))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units differ off Linux")
def test_extract_with_mean_reduction_keeps_peak_memory_bounded():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["shapes"] == {"layer1": [20000, 16], "layer4": [20000, 128]}
    # Full layer1 maps would need ~312 MB; reduced features are ~11 MB in all.
    assert result["growth_mb"] < 0.25 * result["full_mb"], result
