"""Images: decode any file to 3-channel RGB, check a folder of them, and presize each one (Resize).

Presizing is step one of the chapter's two: every image is cropped to a square covering its full width
or height (a random one on the training set, the centre on the validation set) and resized to a size
well above the training size, e.g. 460. That gives the batch augmentation (pets.augment) room to rotate
and zoom without empty corners, and one size, so that images can be stacked into a batch.

Three things make it fast: JPEG draft mode (libjpeg decodes at 1/2, 1/4 or 1/8 scale when the image is at
least twice the size we need, skipping most of the work), cropping as a free slice of the uint8 tensor,
and a single resample of the crop straight to the output size with torch's uint8 kernel. Images leave as
uint8 tensors, a quarter of the bytes of floats.
"""
import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile, ImageOps


EXIF_ORIENTATION = 0x0112
# What Pillow raises for a file it cannot open or decode (DecompressionBombError: too many pixels).
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ImageLoadError(Exception):
    """An image that cannot be decoded; the message names the file and the reason."""


@contextlib.contextmanager
def _allow_truncated():
    # Pillow has only a module-wide switch for this; it is set for one decode and put back.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def describe_failure(path, error):
    """'file: reason' for an image that failed to decode; an empty file says so in plain words."""
    with contextlib.suppress(OSError):
        if Path(path).stat().st_size == 0:
            return f"{path}: the file is empty (0 bytes)"
    return f"{path}: {type(error).__name__}: {error}"


def load_image(path, draft=None):
    """Decodes an image file to an RGB PIL image, whatever its format, mode or orientation.

    - the format comes from the file's content, so a PNG or GIF named .jpg loads;
    - EXIF orientation is applied, so a phone photo stands the right way up;
    - greyscale, palette, RGBA (alpha dropped), CMYK and 16-bit images become 8-bit RGB;
    - a truncated JPEG loads what it has (the missing rows grey), as browsers show it.

    Args:
        path: the image file.
        draft: optional callable (width, height) -> (min_width, min_height), the smallest decoded size the
            caller needs; a JPEG is then decoded at the largest reduction (1/2, 1/4, 1/8) that keeps it.

    Raises:
        ImageLoadError naming the file and the reason (unreadable, not an image, too large, empty...).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if draft is not None and image.format == 'JPEG':
                image.draft('RGB', draft(*image.size))
            try:
                image.load()
            except OSError as error:
                if 'truncated' not in str(error):
                    raise
                with _allow_truncated():
                    image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except UNREADABLE as error:
        raise ImageLoadError(describe_failure(path, error)) from None


def read_image(path, draft=None):
    """Decodes an image file to a uint8 (3, H, W) RGB tensor: what the data loaders use.

    Plain JPEGs (RGB or greyscale, upright), the bulk of any photo set, go to simplejpeg: the same
    libjpeg-turbo as Pillow, the same pixels, but decoded straight into a numpy array we keep, about a
    third faster; it shrinks by 1/2, 1/4, 1/8 while decoding, as draft mode does. Every other format,
    mode or orientation, and any JPEG it refuses (a truncated one, say), goes through load_image.
    Same arguments and errors as load_image.
    """
    try:
        with Image.open(path) as image:  # reads the header only
            plain_jpeg = (image.format == 'JPEG' and image.mode in ('RGB', 'L')
                          and image.getexif().get(EXIF_ORIENTATION, 1) == 1)
            size = image.size
    except UNREADABLE as error:
        raise ImageLoadError(describe_failure(path, error)) from None
    if plain_jpeg:
        min_width, min_height = draft(*size) if draft is not None else (0, 0)
        try:
            pixels = simplejpeg.decode_jpeg(Path(path).read_bytes(), colorspace='RGB',
                                            min_width=min_width, min_height=min_height)
            return torch.from_numpy(pixels).permute(2, 0, 1)
        except ValueError:
            pass
    return image_to_tensor(load_image(path, draft))


def image_from(item, draft=None):
    """What an item of a data set or of predict may be, as a uint8 (3, H, W) RGB tensor, as fastai's
    PILImage.create takes them:
        a path (str or Path)      decoded by read_image (draft as there);
        a PIL image               converted to RGB;
        a uint8 tensor            (3, H, W) as read_image returns, or (H, W) greyscale;
        a uint8 numpy array       (H, W, 3) or (H, W), as Pillow and matplotlib hold pixels.
    Raises ImageLoadError for a file that cannot be decoded, TypeError for anything else.
    """
    if isinstance(item, (str, Path)):
        return read_image(item, draft)
    if isinstance(item, Image.Image):
        return image_to_tensor(_to_rgb(item))
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] != 3):
            raise TypeError(f"an image array must be uint8 of shape (H, W, 3) or (H, W); got {item.dtype} "
                            f"{item.shape}")
        return image_to_tensor(Image.fromarray(item).convert('RGB'))
    if isinstance(item, torch.Tensor):
        if item.dtype != torch.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[0] != 3):
            raise TypeError(f"an image tensor must be uint8 of shape (3, H, W) or (H, W); got {item.dtype} "
                            f"{tuple(item.shape)}")
        return item.cpu().expand(3, *item.shape[-2:]) if item.ndim == 2 else item.cpu()
    raise TypeError(f"{type(item).__name__} is not an image: give a file path, a PIL image, a uint8 tensor "
                    f"(3, H, W) or a uint8 array (H, W, 3)")


def _to_rgb(image):
    if image.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
        # 16-bit greyscale: keep the top 8 bits (convert('RGB') would clip everything above 255 to white).
        pixels = np.asarray(image, dtype=np.uint32) >> 8
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode='L')
    elif image.mode == 'F':
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), mode='L')
    elif image.mode == 'P' and 'transparency' in image.info:
        image = image.convert('RGBA')  # palette transparency must go through RGBA to convert cleanly
    return image if image.mode == 'RGB' else image.convert('RGB')


@dataclass(frozen=True)
class ImageFailure:
    """A file that is not a readable image, and why."""
    path: Path
    reason: str

    def __str__(self):
        return self.reason


def verify_images(files):
    """Decodes every file; returns an ImageFailure for each one that fails (empty when all are fine)."""
    failures = []
    for path in files:
        try:
            read_image(path)
        except ImageLoadError as error:
            failures.append(ImageFailure(Path(path), str(error)))
    return failures


def image_to_tensor(image):
    """A PIL RGB image as a uint8 tensor of shape (3, height, width).

    Its memory stays in the image's height-width-channel order (a channels-last view, no transposing
    copy): the resampling in Resize reads that layout fastest, and stacking items into a batch makes the
    batch contiguous anyway.
    """
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def resample(x, size):
    """Bilinear resize of a uint8 (3, H, W) tensor to size (height, width), antialiased when shrinking.

    torch's uint8 kernel for this (the one torchvision's Resize uses) is several times faster than
    Pillow's resize, and like it averages over the whole footprint of an output pixel when shrinking.
    """
    return F.interpolate(x[None], size=size, mode='bilinear', antialias=True, align_corners=False)[0]


class Resize:
    """Resize(size, method='crop'|'pad'|'squish'): the presizing item transform, on uint8 (3, H, W) tensors.

        crop    a box of the output's aspect ratio covering the image's full width or height (so a square,
                for a square size), at a random position when training and in the centre when validating,
                resampled to size in one step;
        pad     the whole image shrunk to fit inside size, the rest padded ('reflection' or 'zeros');
        squish  the whole image resampled to size, its aspect ratio not kept.

    Args:
        size: an int (a square) or (height, width).
        method: 'crop', 'pad' or 'squish'.
        pad_mode: for 'pad': 'reflection' (fastai's default) or 'zeros'.
    """

    METHODS = ('crop', 'pad', 'squish')

    def __init__(self, size, method='crop', pad_mode='reflection'):
        if method not in self.METHODS:
            raise ValueError(f"Resize method={method!r} is not one of {self.METHODS}")
        if pad_mode not in ('reflection', 'zeros'):
            raise ValueError(f"Resize pad_mode={pad_mode!r} is not 'reflection' or 'zeros'")
        self.height, self.width = (size, size) if isinstance(size, int) else tuple(size)
        self.method, self.pad_mode = method, pad_mode

    def __repr__(self):
        size = self.height if self.height == self.width else (self.height, self.width)
        return f"Resize({size}, method={self.method!r})"

    def draft_size(self, width, height):
        """The smallest decoded (width, height) from which this transform loses nothing."""
        if self.method == 'crop':
            box_width, box_height = self._crop_box_size(width, height)
            scale = max(self.width / box_width, self.height / box_height)
        elif self.method == 'pad':
            scale = min(self.width / width, self.height / height)
        else:
            scale = max(self.width / width, self.height / height)
        return math.ceil(width * scale), math.ceil(height * scale)

    def _crop_box_size(self, width, height):
        """The largest (width, height) of the output's aspect ratio that fits in the image, in whole pixels."""
        aspect = self.width / self.height
        if width / height > aspect:
            return min(width, max(1, round(height * aspect))), height
        return width, min(height, max(1, round(width / aspect)))

    def __call__(self, x, train=False, generator=None):
        """Resizes a uint8 (3, H, W) image; `train` picks a random crop position drawn from `generator`."""
        size = (self.height, self.width)
        if self.method == 'squish':
            return resample(x, size)
        if self.method == 'pad':
            return self._pad(x)
        _, height, width = x.shape
        box_width, box_height = self._crop_box_size(width, height)
        where = torch.rand(2, generator=generator).tolist() if train else [0.5, 0.5]
        left, top = round(where[0] * (width - box_width)), round(where[1] * (height - box_height))
        return resample(x[:, top:top + box_height, left:left + box_width], size)

    def _pad(self, x):
        _, height, width = x.shape
        scale = min(self.width / width, self.height / height)
        fitted_height, fitted_width = max(1, round(height * scale)), max(1, round(width * scale))
        x = resample(x, (fitted_height, fitted_width))
        top, left = (self.height - fitted_height) // 2, (self.width - fitted_width) // 2
        padding = (left, self.width - fitted_width - left, top, self.height - fitted_height - top)
        if self.pad_mode == 'zeros':
            return F.pad(x, padding)
        # Reflection needs each pad narrower than the image; a sliver of an image repeats its edge instead.
        reflectable = max(padding[:2]) < fitted_width and max(padding[2:]) < fitted_height
        return F.pad(x[None], padding, mode='reflect' if reflectable else 'replicate')[0]
