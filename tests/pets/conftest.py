"""Generated images for the data tests: a small labelled folder, and files of every odd kind."""
import io
import os
import sys

import numpy as np
import pytest
from PIL import Image

# The tests here import their shared helpers (small_learners.py) from this folder.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

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


@pytest.fixture
def class_folders(tmp_path):
    """torchvision's ImageFolder layout with fastai's train/valid split: {train,valid}/<class>/IMG_<n>.jpg,
    3 classes x (6 training + 2 validation) images; every file name alike, so only folders tell the class."""
    root = tmp_path / 'my_pets'
    for c, name in enumerate(['cat', 'dog', 'rabbit']):
        for split, count in (('train', 6), ('valid', 2)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for n in range(count):
                random_image(64, 48, seed=100 * c + 10 * (split == 'valid') + n).save(folder / f'IMG_{n}.jpg')
    return root


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


def png_claiming_size(width, height):
    """A PNG whose header claims width x height pixels (the pixel data is a stub): enough for Pillow's
    decompression-bomb check, which reads the header, without making a file of that size."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b'\0' * 16)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', pixels) + chunk(b'IEND', b'')


@pytest.fixture
def bad_input_corpus(tmp_path):
    """A folder of two breeds, 8 good images each, plus one file of every awkward kind, named as the
    breeds are. Returns (folder, {file name: 'loads' or 'left out'}) for the awkward files."""
    folder = tmp_path / 'corpus'
    folder.mkdir()
    for b, breed in enumerate(['beagle', 'pug']):
        for n in range(8):
            random_image(60 + 7 * n, 50 + 5 * b, seed=20 * b + n).save(folder / f'{breed}_{n}.jpg')
    base = random_image(64, 48, seed=5)
    expected = {}

    def add(name, outcome, image=None, fmt=None, data=None, **kwargs):
        path = folder / name
        if data is not None:
            path.write_bytes(data)
        else:
            image.save(path, format=fmt, **kwargs)
        expected[name] = outcome
        return path

    add('beagle_100.jpg', 'left out', data=b'')                                       # zero bytes
    add('beagle_101.jpg', 'loads', data=jpeg_bytes(random_image(64, 48, seed=6))[:1500])  # truncated JPEG
    add('beagle_102.jpg', 'loads', base, 'PNG')                                       # PNG named .jpg
    add('beagle_103.jpg', 'loads', base.convert('P'), 'GIF')                          # GIF named .jpg
    add('beagle_104.jpg', 'loads', base.convert('CMYK'), 'JPEG')                      # CMYK JPEG
    add('pug_100.png', 'loads', Image.fromarray(np.full((48, 64), 40000, dtype=np.uint16)), 'PNG')  # 16-bit
    add('pug_101.png', 'loads', base.convert('RGBA'), 'PNG')                          # RGBA
    add('pug_102.png', 'loads', base.convert('P'), 'PNG')                             # palette
    add('pug_103.jpg', 'loads', base.convert('L'), 'JPEG')                            # greyscale
    add('pug_104.png', 'loads', random_image(1, 1, seed=7), 'PNG')                    # 1 x 1
    add('pug_105.jpg', 'loads', random_image(5000, 20, seed=8), 'JPEG')               # 5000 x 20
    add('pug_106.png', 'left out', data=png_claiming_size(20000, 20000))              # decompression bomb
    add('pug_107.jpg', 'left out', data=b'this is a text file, not a JPEG\n')         # text named .jpg
    unreadable = add('pug_108.jpg', 'left out', base, 'JPEG')                         # no read permission
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads whatever the permissions say
        expected['pug_108.jpg'] = 'loads'
    (folder / 'loop').symlink_to(folder, target_is_directory=True)                   # a folder loop
    (folder / 'beagle_105.jpg').symlink_to(folder / 'beagle_105.jpg')                 # a file loop
    expected['beagle_105.jpg'] = 'left out'
    add('holiday.jpg', 'left out', base, 'JPEG')                                      # the regex does not match
    return folder, expected
