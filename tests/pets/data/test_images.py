"""Decoding odd files to RGB, reporting bad ones, and presizing with Resize."""
import numpy as np
import pytest
import torch
from PIL import Image

from pets.data.images import ImageLoadError, Resize, image_to_tensor, load_image, verify_images

from .conftest import random_image


def test_odd_images_all_load_as_rgb(odd_images):
    for name, path in odd_images.items():
        image = load_image(path)
        assert image.mode == 'RGB', name
        expected = (48, 64) if name == 'exif_rotated' else (64, 48)
        assert image.size == expected, name


def test_sixteen_bit_keeps_its_brightness_and_exif_rotation_is_applied(odd_images):
    assert np.asarray(load_image(odd_images['sixteen_bit_png'])).min() == 255  # 65535 is white, not clipped
    assert load_image(odd_images['exif_rotated']).size == (48, 64)


def test_a_truncated_jpeg_loads_what_it_has(odd_images):
    pixels = np.asarray(load_image(odd_images['truncated']))
    assert pixels.shape == (48, 64, 3)


def test_unreadable_files_raise_an_error_naming_them(bad_files):
    for path in bad_files.values():
        with pytest.raises(ImageLoadError, match=path.name):
            load_image(path)
    with pytest.raises(ImageLoadError, match="missing.jpg"):
        load_image(path.parent / 'missing.jpg')


def test_verify_images_lists_the_failures(bad_files, odd_images):
    failures = verify_images([*odd_images.values(), *bad_files.values()])
    assert sorted(f.path.name for f in failures) == ['empty.jpg', 'text.jpg']
    assert all(f.path.name in f.reason for f in failures)


def test_image_to_tensor_is_uint8_channels_first():
    image = random_image(5, 3)
    x = image_to_tensor(image)
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 5)
    assert torch.equal(x.permute(1, 2, 0), torch.from_numpy(np.asarray(image)))


def test_resize_crop_validation_is_the_centre_square():
    image = random_image(300, 200, seed=1)
    out = Resize(100)(image, train=False)
    expected = image.crop((50, 0, 250, 200)).resize((100, 100), Image.BILINEAR)
    assert out.size == (100, 100)
    # Inside; at the edges resizing with box= also reads the pixels just outside the crop, as it should.
    difference = np.asarray(out, dtype=int)[1:-1, 1:-1] - np.asarray(expected, dtype=int)[1:-1, 1:-1]
    assert np.abs(difference).max() <= 1


def test_resize_crop_training_covers_the_full_height_at_a_random_position():
    image = Image.fromarray(np.repeat(np.arange(300, dtype=np.uint8)[None, :, None], 200, 0).repeat(3, 2))
    lefts = set()
    for seed in range(20):
        out = np.asarray(Resize(200)(image, train=True, generator=torch.Generator().manual_seed(seed)))
        left = int(out[0, 0, 0])  # the column index of the crop's left edge, encoded in the pixel values
        assert 0 <= left <= 100 and out.shape == (200, 200, 3)
        lefts.add(left)
    assert len(lefts) > 10


@pytest.mark.parametrize('method', ['crop', 'pad', 'squish'])
@pytest.mark.parametrize('size', [64, (48, 80)])
def test_every_method_gives_the_asked_size(method, size):
    for width, height in [(300, 200), (200, 300), (5000 // 10, 20), (1, 1)]:
        out = Resize(size, method=method)(random_image(width, height), train=True,
                                          generator=torch.Generator().manual_seed(0))
        expected = (size, size) if isinstance(size, int) else (size[1], size[0])
        assert out.size == expected and out.mode == 'RGB'


def test_pad_with_zeros_keeps_the_whole_image_in_the_middle():
    image = Image.new('RGB', (200, 100), (255, 255, 255))
    out = np.asarray(Resize(100, method='pad', pad_mode='zeros')(image))
    assert out[:25].max() == 0 and out[75:].max() == 0 and out[30:70].min() == 255


def test_jpeg_draft_mode_decodes_large_images_at_reduced_scale(tmp_path):
    path = tmp_path / 'big.jpg'
    random_image(2000, 1500, seed=2).resize((250, 188)).resize((2000, 1500)).save(path, quality=95)
    resize = Resize(460)
    drafted = load_image(path, draft=resize.draft_size)
    assert drafted.size == (1000, 750)  # 1/2 scale: the smallest that keeps the short side >= 460
    full, fast = resize(load_image(path)), resize(drafted)
    difference = np.abs(np.asarray(full, dtype=float) - np.asarray(fast, dtype=float)).mean()
    assert difference < 3  # grey levels: the same picture


def test_bad_resize_arguments():
    with pytest.raises(ValueError, match="method='stretch'"):
        Resize(64, method='stretch')
    with pytest.raises(ValueError, match="pad_mode='border'"):
        Resize(64, pad_mode='border')
