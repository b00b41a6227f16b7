"""``netlens extract``: a folder of images' features on disk, in one process or under torchrun.

    netlens extract --arch resnet18 --images train/ --layers layer4 --out features/
    torchrun --nproc-per-node 4 -m netlens extract --arch resnet50 --images train/ \\
        --layers layer4 --reduce mean --out features/ --device cuda

Images are every picture file under ``--images`` (recursively, sorted by
path); when every file lies in a subfolder, the first-level subfolder names
(sorted) are the classes and each image's label is stored, as torchvision's
``ImageFolder`` reads such a tree. Each image is prepared as ``netlens
explain`` prepares one (resized, centre-cropped, normalised for the
architecture's weights).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from netlens.app.arguments import integer_at_least

__all__ = ["ImageFiles", "add_extract_parser", "extract_main"]

_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


class ImageFiles(Dataset):
    """The picture files under a folder as normalised tensors, with labels from subfolders."""

    def __init__(self, folder: Path, *, resize: int, crop: int | None, mean, std) -> None:
        self.files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _SUFFIXES)
        self.resize, self.crop = resize, crop
        self.mean = torch.tensor(mean)[:, None, None]
        self.std = torch.tensor(std)[:, None, None]
        nested = all(len(p.relative_to(folder).parts) > 1 for p in self.files)
        self.classes = (
            sorted({p.relative_to(folder).parts[0] for p in self.files}) if nested else []
        )
        index = {name: i for i, name in enumerate(self.classes)}
        self.labels = [index[p.relative_to(folder).parts[0]] for p in self.files] if nested else []

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from netlens.app.files import prepare_image, read_image, shown

        path = self.files[i]
        image = prepare_image(
            read_image(path), resize=self.resize, crop=self.crop, name=shown(path)
        )
        image = (image - self.mean) / self.std
        return (image, self.labels[i]) if self.labels else image


def add_extract_parser(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    """Add ``netlens extract`` to the command's subcommands."""
    extract = commands.add_parser(
        "extract",
        parents=[common],
        help="write the features of a folder of images to disk (also under torchrun)",
        description="Run every picture under --images through a torchvision network and write "
        "the outputs of --layers to --out as memory-mappable .npy shards with a manifest "
        "(netlens.load_features reads them). Images are prepared as for explain. When every "
        "file lies in a subfolder, the subfolder names are the classes and the labels are "
        "stored. Rerunning on the same --out resumes. Under torchrun (torchrun "
        "--nproc-per-node N -m netlens extract ...) the shards are dealt to the ranks.",
    )
    extract.add_argument("--arch", required=True, help="torchvision architecture, e.g. resnet18")
    extract.add_argument(
        "--weights",
        default="DEFAULT",
        help="DEFAULT (torchvision's pretrained weights), another weights name, or the path of "
        "a state dict or training checkpoint, as for explain (default: %(default)s)",
    )
    extract.add_argument("--images", required=True, type=Path, help="folder of pictures")
    extract.add_argument("--layers", required=True, nargs="+", help="layer names to write")
    extract.add_argument("--out", required=True, type=Path, help="folder to write (or resume)")
    extract.add_argument("--batch-size", type=integer_at_least(1), default=64, metavar="N")
    extract.add_argument("--reduce", choices=["none", "mean", "max"], default="none")
    extract.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    extract.add_argument("--num-workers", type=integer_at_least(0), default=0, metavar="N")
    extract.add_argument("--no-crop", action="store_true", help="keep the whole picture")
    extract.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: cpu")
    extract.set_defaults(run=extract_main, parser=extract, classes=None)


def extract_main(args: argparse.Namespace) -> int:
    """Run ``netlens extract`` with parsed arguments; the exit status."""
    import torch.distributed as dist

    from netlens.app import cli
    from netlens.app.files import shown
    from netlens.feature_store import extract_dataset

    if args.device == "cuda" and not torch.cuda.is_available():
        raise cli.CommandError("CUDA is not available on this machine; use --device cpu")
    if not args.images.is_dir():
        raise cli.CommandError(f"--images {shown(args.images)} is not a folder")
    resize, crop, mean, std = cli._preprocessing(args.arch)
    data = ImageFiles(args.images, resize=crop if args.no_crop else resize,
                      crop=None if args.no_crop else crop, mean=mean, std=std)  # fmt: skip
    if len(data) == 0:
        raise cli.CommandError(f"{shown(args.images)} holds no picture files")
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
        started = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    try:
        model, _, source = cli._model(args)
        model = model.to(device).eval()
        feats = extract_dataset(
            model, args.layers, data, args.out, batch_size=args.batch_size,
            reduce=None if args.reduce == "none" else args.reduce, dtype=args.dtype,
            num_workers=args.num_workers,
        )  # fmt: skip
    finally:
        if started:
            dist.destroy_process_group()
    if rank == 0:
        labels = f", labels of {len(data.classes)} classes" if data.classes else ""
        for name, array in feats.items():
            print(f"{name}: {tuple(array.shape)} {array.dtype}")
        print(f"{args.arch} ({source}), {len(data)} images{labels}")
        print(f"wrote {shown(args.out / 'manifest.json')}")
    return 0
