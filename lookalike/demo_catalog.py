"""The default demo catalog: Fashion-MNIST (Zalando article images) as product listings.

Images come from the Debian package ``dataset-fashion-mnist`` (installed on demand where apt
exists, else Keras' downloader). Categories are the 10 class names. Prices are SYNTHETIC
(drawn per class from a fixed seed) and every listing says so in ``attributes.price_source``.
A tenth of the articles are listed a second time by another seller at another price, so that
price comparison has real duplicates to find.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = (
    "T-shirt & Top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle Boot",
)
_PRICE_RANGE = {  # synthetic, per class: (low, high) in EUR
    0: (8, 30), 1: (20, 90), 2: (25, 80), 3: (30, 150), 4: (60, 250),
    5: (15, 70), 6: (15, 60), 7: (40, 160), 8: (20, 300), 9: (50, 200),
}


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 test images (uint8 28x28) and labels."""
    images = DEBIAN_DIR / "t10k-images-idx3-ubyte.gz"
    if not images.exists() and shutil.which("apt-get"):
        log.info("installing the Debian package dataset-fashion-mnist")
        subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], check=False,
                       stdout=subprocess.DEVNULL)
    if images.exists():
        return _read_idx(images), _read_idx(DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz")
    # fallback where apt is absent: Keras downloads the same files
    from embedding.runtime import import_keras

    import_keras()
    import keras

    (_, _), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    return np.asarray(x_test), np.asarray(y_test)


def write_fashion_mnist_catalog(out_dir: Path, n_products: int = 1000, seed: int = 7) -> Path:
    """Write ``n_products`` articles (+10% re-listings) as PNGs and a catalog.jsonl."""
    catalog = out_dir / "catalog.jsonl"
    marker = out_dir / f".complete-{n_products}-{seed}"
    if marker.exists():
        return catalog
    images, labels = load_fashion_mnist_test()
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(images), size=min(n_products, len(images)), replace=False)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in picked.tolist():
        label = int(labels[index])
        name = f"images/fmnist-{index:05d}.png"
        # Dark article on white, like a studio catalog photo.
        Image.fromarray(255 - images[index]).save(out_dir / name)
        low, high = _PRICE_RANGE[label]
        base = dict(category=CLASS_NAMES[label], currency="EUR", images=[name],
                    price_source="synthetic", fmnist_index=str(index))
        lines.append(dict(base, product_id=f"fmnist-{index:05d}", seller_id="zalando-demo",
                          title=f"{CLASS_NAMES[label]} #{index}",
                          price=round(float(rng.uniform(low, high)), 2)))
        if rng.random() < 0.1:
            lines.append(dict(base, product_id=f"fmnist-{index:05d}-resale",
                              seller_id="second-shop",
                              title=f"{CLASS_NAMES[label]} #{index} (second shop)",
                              price=round(float(rng.uniform(low, high)), 2)))
    with open(catalog, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line) + "\n")
    marker.touch()
    return catalog
