"""Generated images for the data tests: a small labelled folder, and files of every odd kind."""
import io

import numpy as np
import pytest
from PIL import Image

BREEDS = ['Abyssinian', 'beagle', 'great_pyrenees']


def random_image(width, height, seed=0, mode='RGB'):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


@pytest.fixture
def pet_folder(tmp_path):
    """images/<breed>_<n>.jpg: 3 breeds x 8 images of assorted sizes and aspect ratios."""
    folder = tmp_path / 'images'
    folder.mkdir()
    sizes = [(120, 90), (90, 120), (100, 100), (160, 80), (75, 130), (110, 95), (96, 128), (140, 100)]
    for b, breed in enumerate(BREEDS):
        for n, (w, h) in enumerate(sizes):
            random_image(w, h, seed=10 * b + n).save(folder / f'{breed}_{n}.jpg', quality=90)
    return folder


def jpeg_bytes(image, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format='JPEG', **kwargs)
    return buffer.getvalue()


@pytest.fixture
def odd_images(tmp_path):
    """name -> path for images that are valid but unusual, each named .jpg whatever it holds."""
    folder = tmp_path / 'odd'
    folder.mkdir()
    base = random_image(64, 48, seed=3)
    paths = {}

    def save(name, image, fmt, **kwargs):
        paths[name] = folder / f'{name}.jpg'
        image.save(paths[name], format=fmt, **kwargs)

    save('greyscale', base.convert('L'), 'JPEG')
    save('palette_png', base.convert('P'), 'PNG')
    rgba = base.convert('RGBA')
    rgba.putalpha(128)
    save('rgba_png', rgba, 'PNG')
    save('cmyk', base.convert('CMYK'), 'JPEG')
    save('gif', base.convert('P'), 'GIF')
    sixteen = Image.fromarray(np.full((48, 64), 65535, dtype=np.uint16))
    save('sixteen_bit_png', sixteen, 'PNG')
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    save('exif_rotated', base, 'JPEG', exif=exif)
    paths['truncated'] = folder / 'truncated.jpg'
    paths['truncated'].write_bytes(jpeg_bytes(random_image(64, 48, seed=4))[:1500])
    return paths


@pytest.fixture
def bad_files(tmp_path):
    """name -> path for files that are not readable images."""
    folder = tmp_path / 'bad'
    folder.mkdir()
    paths = {'empty': folder / 'empty.jpg', 'text': folder / 'text.jpg'}
    paths['empty'].write_bytes(b'')
    paths['text'].write_text('this is not an image\n')
    return paths
