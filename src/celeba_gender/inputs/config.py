"""The input's settings, importable without TensorFlow (the commands' flags are built from them): how a pipeline
reads a split (:class:`DataConfig`) and the augmentation's options (:class:`AugmentConfig`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from celeba_gender.core import options
from celeba_gender.core.options import option

DEFAULT_SHUFFLE_BUFFER = 4096  # examples
_FILL_MODES = ("nearest", "constant", "reflect", "wrap")
_INTERPOLATIONS = ("bilinear", "nearest")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; the defaults are the source study's ImageDataGenerator (see geometry.py for how
    its parameters are drawn and composed)."""

    rotation_deg: float = option(15.0, "Rotation range in degrees: theta ~ U(-r, r) (ImageDataGenerator's "
                                 "rotation_range).", lower=0)
    shear_deg: float = option(0.1, "Shear range in degrees (ImageDataGenerator's shear_range is in degrees, "
                              "not a Keras shear factor).", lower=0)
    zoom: float = option(0.2, "Zoom range: zx, zy ~ U(1 - z, 1 + z) independently (> 1 zooms out).", lower=0,
                         upper=0.99)
    width_shift: float = option(0.1, "Horizontal shift range, a fraction of the width (pixels when >= 1).", lower=0)
    height_shift: float = option(0.1, "Vertical shift range, a fraction of the height (pixels when >= 1).", lower=0)
    horizontal_flip: bool = option(True, "Flip left-right with probability 0.5, after the warp.")
    fill_mode: str = option("nearest", "How pixels outside the image are filled (the source's: nearest).",
                            choices=_FILL_MODES)
    interpolation: str = option("bilinear", "Resampling of the warp (the source's: bilinear).",
                                choices=_INTERPOLATIONS)
    idg_quirks: bool = option(False, "Reproduce ImageDataGenerator's off-centre rotation pivot and swapped shift "
                              "axes on non-square images (the source's exact pixels).")
    randaugment: bool = option(False, "Add RandAugment after the source's geometric augmentation.")
    random_erasing: float = option(0.0, "Probability of random erasing per image.", lower=0, upper=1)
    mixup: float = option(0.0, "MixUp Beta(alpha, alpha); 0 = off.", lower=0)
    cutmix: float = option(0.0, "CutMix Beta(alpha, alpha); 0 = off.", lower=0)

    def __post_init__(self):
        options.validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, for Keras ``get_config``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> AugmentConfig:
        """Inverse of :meth:`to_dict`; ignores unknown keys so older saved models still load."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in dict(values or {}).items() if k in names})


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How one input pipeline reads a split.

    ``batch`` is this pipeline's batch (under a strategy: the global batch divided by the workers).
    ``cache``: "none", "memory" or a file path prefix (the cache files are keyed by what they hold).
    ``deterministic``: fixed training order, whatever the parallelism (evaluation is always in shard order).
    Without it parallel reads and decodes may deliver a pass's examples a little out of its order.
    ``data_service``: a tf.data service dispatcher (grpc://host:port) whose workers read and decode the
    training data; files are handed out dynamically, each example once a pass.
    """

    data_dir: str
    image_size: tuple[int, int] | None = None  # None: the stored size
    batch: int = 128
    cache: str = "none"
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    seed: int | None = None
    deterministic: bool = False
    data_service: str = ""
    # What the labels are (a tasks.base.Task: it says which record fields they come from). None: the class label
    # the shards were converted for.
    task: Any = None
