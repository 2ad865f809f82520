"""MNIST IDX reader: the real files (when present), the npz layout, and clear errors on bad files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnxprune.errors import CalibrationError
from onnxprune.models import mnist
from onnxprune.models.paths import MNIST_ENV_VAR, shared_mnist_dir

TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def mnist_dir() -> Path:
    found = shared_mnist_dir()
    if found is None:
        pytest.skip(f"full MNIST not found (../shared/data/mnist next to the repo, or ${MNIST_ENV_VAR})")
    return found


@pytest.fixture(scope="module")
def test_split(mnist_dir):
    return mnist.load_split(mnist_dir, "test")


def idx_bytes(magic: int, dims: tuple[int, ...], data: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + data


def write_gz(path: Path, payload: bytes) -> Path:
    path.write_bytes(gzip.compress(payload))
    return path


# --- the real files -------------------------------------------------------------------------------

def test_test_split_shapes_dtypes_and_range(test_split):
    images, labels = test_split
    assert images.shape == (10_000, 1, 28, 28) and images.dtype == np.float32
    assert labels.shape == (10_000,) and labels.dtype == np.int64
    assert images.min() == 0.0 and images.max() == 1.0


def test_test_split_class_counts_are_the_official_ones(test_split):
    assert np.bincount(test_split[1], minlength=10).tolist() == TEST_COUNTS


def test_train_split_size_and_class_counts(mnist_dir):
    images, labels = mnist.load_split(mnist_dir, "train")
    assert images.shape == (60_000, 1, 28, 28) and images.dtype == np.float32
    assert np.bincount(labels, minlength=10).tolist() == TRAIN_COUNTS
    assert labels[:2].tolist() == [5, 0]


def test_read_idx_headers_of_the_real_files(mnist_dir):
    pixels = mnist.read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", mnist.IMAGES_MAGIC)
    labels = mnist.read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz", mnist.LABELS_MAGIC)
    assert pixels.shape == (10_000, 28, 28) and pixels.dtype == np.uint8
    assert labels.shape == (10_000,)
    with pytest.raises(CalibrationError, match="magic number 2051, expected 2049"):
        mnist.read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", mnist.LABELS_MAGIC)


def test_normalisation_is_pixels_over_255(mnist_dir, test_split):
    pixels = mnist.read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz", mnist.IMAGES_MAGIC)
    np.testing.assert_array_equal(test_split[0][:, 0], pixels.astype(np.float32) / np.float32(255))


def test_write_slice_keeps_the_first_images(mnist_dir, test_split, tmp_path):
    path = mnist.write_slice(mnist_dir, tmp_path / "s.npz", count=50)
    images, labels = mnist.load_npz(path)
    np.testing.assert_array_equal(images, test_split[0][:50])
    np.testing.assert_array_equal(labels, test_split[1][:50])


def test_cli_writes_train_and_test_npz_with_input_and_labels(mnist_dir, tmp_path):
    result = CliRunner().invoke(mnist.main, ["--mnist", str(mnist_dir), "--out", str(tmp_path), "--test-slice", "20"])
    assert result.exit_code == 0, result.output
    for name, n in [("train.npz", 60_000), ("test.npz", 10_000), ("mnist_test_20.npz", 20)]:
        with np.load(tmp_path / name) as data:
            assert sorted(data.files) == ["input", "labels"]
            assert data["input"].shape == (n, 1, 28, 28) and data["input"].dtype == np.float32
            assert data["labels"].shape == (n,) and data["labels"].dtype == np.int64


# --- synthetic files: layout and errors ----------------------------------------------------------

def test_write_npz_and_load_npz_round_trip(tmp_path):
    images = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    path = mnist.write_npz(tmp_path / "x.npz", images, np.array([1, 2, 3]))
    with np.load(path) as data:
        assert sorted(data.files) == ["input", "labels"] and data["labels"].dtype == np.int64
    got_images, got_labels = mnist.load_npz(path)
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.tolist() == [1, 2, 3]


def test_load_npz_names_missing_arrays(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros(2))
    with pytest.raises(CalibrationError, match=r"bad\.npz.*\['input', 'labels'\]"):
        mnist.load_npz(tmp_path / "bad.npz")


def test_read_idx_reads_gzipped_and_plain_files(tmp_path):
    payload = idx_bytes(mnist.LABELS_MAGIC, (4,), bytes([3, 1, 4, 1]))
    (tmp_path / "plain").write_bytes(payload)
    for path in (write_gz(tmp_path / "l.gz", payload), tmp_path / "plain"):
        assert mnist.read_idx(path, mnist.LABELS_MAGIC).tolist() == [3, 1, 4, 1]


def test_wrong_magic_is_a_clear_error(tmp_path):
    path = write_gz(tmp_path / "x.gz", idx_bytes(0x0D03, (1, 28, 28), bytes(784)))
    with pytest.raises(CalibrationError, match=r"x\.gz' has magic number 3331, expected 2051"):
        mnist.read_idx(path, mnist.IMAGES_MAGIC)


def test_truncated_idx_data_is_a_clear_error(tmp_path):
    path = write_gz(tmp_path / "x.gz", idx_bytes(mnist.IMAGES_MAGIC, (2, 28, 28), bytes(784 + 100)))
    with pytest.raises(CalibrationError, match=r"x\.gz' is truncated: header \(2, 28, 28\) needs 1584 bytes, found 900"):
        mnist.read_idx(path, mnist.IMAGES_MAGIC)


def test_idx_file_shorter_than_a_header_is_a_clear_error(tmp_path):
    path = write_gz(tmp_path / "x.gz", b"\x00\x00")
    with pytest.raises(CalibrationError, match="truncated"):
        mnist.read_idx(path, mnist.LABELS_MAGIC)


def test_truncated_gzip_stream_is_a_clear_error(tmp_path):
    blob = gzip.compress(idx_bytes(mnist.LABELS_MAGIC, (1000,), bytes(range(10)) * 100))
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CalibrationError, match=r"cut\.gz'.*truncated or corrupted"):
        mnist.read_idx(path, mnist.LABELS_MAGIC)


def test_gz_file_that_is_not_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.gz"
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(CalibrationError, match=r"junk\.gz'.*truncated or corrupted"):
        mnist.read_idx(path, mnist.LABELS_MAGIC)


def test_missing_file_and_wrong_sizes_are_clear_errors(tmp_path):
    with pytest.raises(CalibrationError, match="t10k-images-idx3-ubyte.gz' not found"):
        mnist.load_split(tmp_path, "test")
    write_gz(tmp_path / "t10k-images-idx3-ubyte.gz", idx_bytes(mnist.IMAGES_MAGIC, (2, 28, 28), bytes(2 * 784)))
    write_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(mnist.LABELS_MAGIC, (3,), bytes(3)))
    with pytest.raises(CalibrationError, match=r"\(3,\) labels for 2 images"):
        mnist.load_split(tmp_path, "test")
    write_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(mnist.LABELS_MAGIC, (2,), bytes(2)))
    with pytest.raises(CalibrationError, match="holds 2 images; the MNIST test set has 10000"):
        mnist.load_split(tmp_path, "test")


def test_cli_reports_a_bad_folder_without_traceback(tmp_path):
    result = CliRunner().invoke(mnist.main, ["--mnist", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "Error:" in result.output and "not found" in result.output and "Traceback" not in result.output


def test_shared_mnist_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(MNIST_ENV_VAR, str(tmp_path))
    assert shared_mnist_dir() is None
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    assert shared_mnist_dir() == tmp_path
