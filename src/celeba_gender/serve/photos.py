"""Users' image files for predict.py: checked from the header before any decoding, then turned into the model's
input exactly as training, evaluation and the SavedModel's JPEG signature turn theirs
(:mod:`celeba_gender.inputs.decode`).

What happens to each kind of file (every refusal is a reason reported for that file, never an exception):

- **Size first.** Pillow reads the header only; an image (every frame of an animated GIF, which TensorFlow decodes
  whole) with more pixels than ``max_pixels`` is refused before a byte of it is decoded, so a decompression bomb
  or a 20000x20000 photo costs nothing.
- **JPEG, PNG, BMP, GIF without an EXIF rotation:** the file's bytes go to :func:`decode.decode_image` (libjpeg's
  DCT scaling when the stored size is 2, 4 or 8 times the model's, else full decode + centre crop + antialiased
  resize): the pixels training saw for the same file. Grayscale becomes RGB, a CMYK JPEG is converted as Pillow
  converts it (the same values on flat CMYK patches), 16-bit PNG is reduced to 8 bits (the high byte), a palette
  is expanded, an alpha channel is dropped (the colour channels are used as stored), an animated GIF gives its
  first frame.
- **EXIF orientation 2-8:** decoded in full, turned upright (what Pillow's ``exif_transpose`` does), then
  :func:`decode.fit_to_size`.
- **Other formats Pillow reads** (WebP, TIFF...): Pillow's RGB conversion, then :func:`decode.fit_to_size`;
  16-bit and floating-point ones are refused (Pillow would clip them to white).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import re
import warnings

import numpy as np

DEFAULT_MAX_PIXELS = 40_000_000  # about 200 CelebA images (218 x 178 = 38,804 pixels); a 40-megapixel photo
# Formats TensorFlow decodes itself (tf.io.decode_image), exactly as the training pipeline decodes.
TF_FORMATS = ("JPEG", "PNG", "BMP", "GIF")
_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> how to turn the decoded pixels upright (Pillow's exif_transpose, in numpy).
_ORIENT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}
_HIGH_DEPTH_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N", "RGB;16", "RGBA;16")


class UnreadableImage(ValueError):
    """A file that cannot be predicted; the message is the reason shown for it."""


@dataclasses.dataclass(frozen=True)
class Photo:
    """An image file read and checked, not yet decoded."""

    path: str
    data: bytes
    format: str  # Pillow's name: JPEG, PNG, ...
    mode: str  # Pillow's mode: RGB, L, CMYK, RGBA, P, I;16...
    height: int
    width: int
    orientation: int = 1  # EXIF orientation; 1 = stored upright
    frames: int = 1

    @property
    def by_tensorflow(self) -> bool:
        """Whether TensorFlow decodes it (as training does); else Pillow does."""
        if self.format == "BMP":
            return self.mode in ("RGB", "RGBA")  # TensorFlow's BMP decoder reads 24 and 32 bits only
        return self.format in TF_FORMATS

    @property
    def note(self) -> str | None:
        """What was done to the file beyond decoding it, for the user to know."""
        notes = []
        if self.orientation != 1:
            notes.append(f"turned upright (EXIF orientation {self.orientation})")
        if self.frames > 1:
            notes.append(f"first of {self.frames} frames")
        return "; ".join(notes) or None


@contextlib.contextmanager
def _own_pixel_limit():
    # Pillow refuses, at open, images over twice its own global limit (about 179 megapixels) and warns above
    # it. Our --max_pixels, checked right after open and before any decoding, is the limit that counts here.
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def open_photo(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Reads a file and its image header; :class:`UnreadableImage` with the reason when it cannot be used."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            with _own_pixel_limit(), Image.open(f) as im:
                fmt, mode, (width, height) = im.format, im.mode, im.size
                frames = int(getattr(im, "n_frames", 1) or 1) if fmt == "GIF" else 1
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1)  # Pillow warns on corrupt EXIF, not raises
            pixels = width * height * frames
            if pixels > max_pixels:
                what = f"{width}x{height}" + (f" x {frames} frames" if frames > 1 else "")
                raise UnreadableImage(f"too large: {what} = {pixels:,} pixels, over --max_pixels={max_pixels:,} "
                                      "(checked from the header, nothing decoded; raise --max_pixels to read it)")
            f.seek(0)
            data = f.read()
    except FileNotFoundError:
        raise UnreadableImage("no such file") from None
    except IsADirectoryError:
        raise UnreadableImage("a folder, not a file") from None
    except UnidentifiedImageError:
        raise UnreadableImage("not an image (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, UnreadableImage):
            raise
        raise UnreadableImage(f"unreadable file ({getattr(e, 'strerror', None) or e})") from None
    if mode in _HIGH_DEPTH_MODES and fmt not in TF_FORMATS:
        raise UnreadableImage(f"a {mode} (16-bit or floating-point) {fmt} image: save it as 8-bit, or as PNG")
    upright = orientation if isinstance(orientation, int) and orientation in _ORIENT else 1
    return Photo(path=path, data=data, format=fmt, mode=mode, height=height, width=width, orientation=upright,
                 frames=frames)


def _reason(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    # TensorFlow wraps its op errors in "{{function_node ...}} ... [Op:DecodeImage]": keep the reason only.
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*|\s*\[\[\{\{node .*", "",
                     message.strip().splitlines()[0])
    return f"unreadable or corrupt image ({message[:120]})"


@functools.cache
def _decoder(size: tuple[int, int]):
    import tensorflow as tf

    from celeba_gender.inputs.decode import decode_image

    return tf.function(lambda encoded: decode_image(encoded, size),
                       input_signature=[tf.TensorSpec([], tf.string)], reduce_retracing=True)


def full_image(photo: Photo) -> np.ndarray:
    """The whole image, RGB uint8 [H, W, 3], upright; UnreadableImage when its data is corrupt."""
    import tensorflow as tf
    from PIL import Image

    try:
        if photo.by_tensorflow:
            image = tf.io.decode_image(photo.data, channels=3, expand_animations=False).numpy()
        else:
            with _own_pixel_limit(), Image.open(io.BytesIO(photo.data)) as im:
                image = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError, tf.errors.InvalidArgumentError) as e:
        raise UnreadableImage(_reason(e)) from None
    return np.ascontiguousarray(_ORIENT.get(photo.orientation, lambda a: a)(image))


def model_input(photo: Photo, size: tuple[int, int]) -> np.ndarray:
    """The model's input for the whole photo, uint8 [height, width, 3]: training's decoding rule whenever
    TensorFlow decodes the file as stored (see the module's docstring)."""
    import tensorflow as tf

    from celeba_gender.inputs.decode import fit_to_size

    size = tuple(int(s) for s in size)
    if photo.by_tensorflow and photo.orientation == 1:
        try:
            return _decoder(size)(tf.constant(photo.data)).numpy()
        except tf.errors.InvalidArgumentError as e:
            raise UnreadableImage(_reason(e)) from None
    return fit_to_size(tf.constant(full_image(photo)), size).numpy()


def read_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 [H, W, 3] of any image Pillow can identify, upright; UnreadableImage (a ValueError) with the
    reason otherwise."""
    return full_image(open_photo(path, max_pixels))
