"""MNIST from the standard IDX files, as the arrays our models take.

IDX layout (big-endian): two zero bytes, a type code (0x08 = uint8), the number of
dimensions, one uint32 per dimension, then the raw data. Images have magic 2051 and
shape [n, 28, 28]; labels have magic 2049 and shape [n].

Normalisation, written once: `input = pixels / 255` as float32, shape [N, 1, 28, 28];
`labels` are int64. Both reference LeNets take this `input`.

    python -m onnxprune.models.mnist --mnist /work/shared/data/mnist --out out/mnist [--test-slice 1000]
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import click
import numpy as np

from onnxprune.errors import CalibrationError

log = logging.getLogger(__name__)

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
ROWS = COLS = 28
NUM_CLASSES = 10
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
INPUT_NAME = "input"
LABELS_NAME = "labels"


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise CalibrationError(
            f"Cannot read IDX file '{path}': {exc}. The file is truncated or corrupted; "
            "download it again."
        ) from exc


def read_idx(path: str | Path, expected_magic: int) -> np.ndarray:
    """Read one IDX file (gzipped when its name ends in .gz) into a uint8 array."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 8:
        raise CalibrationError(f"IDX file '{path}' is truncated: {len(raw)} bytes, not even a header.")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise CalibrationError(
            f"IDX file '{path}' has magic number {magic}, expected {expected_magic} "
            f"({'images' if expected_magic == IMAGES_MAGIC else 'labels'}); wrong or corrupted file."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CalibrationError(f"IDX file '{path}' is truncated inside its header.")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise CalibrationError(
            f"IDX file '{path}' is {what}: header {dims} needs {expected} bytes, found {len(raw)}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(mnist_dir: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (mnist_dir / name).is_file():
            return mnist_dir / name
    raise CalibrationError(f"MNIST file '{stem}.gz' not found in '{mnist_dir}'.")


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> float32 [N, 1, 28, 28] in [0, 1]."""
    return (pixels.astype(np.float32) / np.float32(255.0))[:, None, :, :]


def load_split(mnist_dir: str | Path, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Images (float32 [N,1,28,28]) and labels (int64 [N]) of the 'train' or 'test' split."""
    if split not in SPLITS:
        raise CalibrationError(f"Unknown MNIST split '{split}'; choose one of {sorted(SPLITS)}.")
    mnist_dir = Path(mnist_dir)
    images_stem, labels_stem, count = SPLITS[split]
    images_path, labels_path = _find(mnist_dir, images_stem), _find(mnist_dir, labels_stem)
    pixels = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if pixels.ndim != 3 or pixels.shape[1:] != (ROWS, COLS):
        raise CalibrationError(f"'{images_path}' holds images of shape {pixels.shape[1:]}, expected (28, 28).")
    if labels.ndim != 1 or len(labels) != len(pixels):
        raise CalibrationError(
            f"'{labels_path}' holds {labels.shape} labels for {len(pixels)} images in '{images_path}'."
        )
    if len(pixels) != count:
        raise CalibrationError(f"'{images_path}' holds {len(pixels)} images; the MNIST {split} set has {count}.")
    if labels.max(initial=0) >= NUM_CLASSES:
        raise CalibrationError(f"'{labels_path}' holds label {labels.max()}, outside 0..9.")
    log.debug("read MNIST %s: %d images from %s", split, len(pixels), mnist_dir)
    return normalize(pixels), labels.astype(np.int64)


def write_npz(path: str | Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write a compressed .npz with arrays `input` and `labels`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{INPUT_NAME: images.astype(np.float32), LABELS_NAME: labels.astype(np.int64)})
    return path


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an .npz written by `write_npz`: (input, labels)."""
    path = Path(path)
    with np.load(path) as data:
        missing = {INPUT_NAME, LABELS_NAME} - set(data.files)
        if missing:
            raise CalibrationError(f"'{path}' lacks arrays {sorted(missing)}; it has {data.files}.")
        return data[INPUT_NAME], data[LABELS_NAME]


def write_slice(
    mnist_dir: str | Path, out_path: str | Path, *, split: str = "test", start: int = 0, count: int = 1000
) -> Path:
    """Write images [start, start+count) of a split to a compressed .npz (no stratification)."""
    images, labels = load_split(mnist_dir, split)
    if start < 0 or count <= 0 or start + count > len(images):
        raise CalibrationError(f"Slice [{start}, {start + count}) is outside the {len(images)} {split} images.")
    return write_npz(out_path, images[start : start + count], labels[start : start + count])


@click.command(name="python -m onnxprune.models.mnist")
@click.option("--mnist", "mnist_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder with the four MNIST IDX files.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for train.npz and test.npz.")
@click.option("--test-slice", type=click.IntRange(min=1), default=None,
              help="Also write the first N test images to mnist_test_N.npz.")
def main(mnist_dir: Path, out_dir: Path, test_slice: int | None) -> None:
    """Convert MNIST IDX files to train.npz / test.npz (arrays `input`, `labels`)."""
    try:
        for split in SPLITS:
            images, labels = load_split(mnist_dir, split)
            path = write_npz(out_dir / f"{split}.npz", images, labels)
            click.echo(f"{path}: {len(labels)} images")
        if test_slice:
            path = write_slice(mnist_dir, out_dir / f"mnist_test_{test_slice}.npz", count=test_slice)
            click.echo(f"{path}: {test_slice} images")
    except CalibrationError as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    main()
