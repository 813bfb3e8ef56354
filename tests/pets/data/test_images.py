"""Decoding odd files to RGB, reporting bad ones, and presizing with Resize."""
import numpy as np
import pytest
import torch

from pets.data.images import ImageLoadError, Resize, image_to_tensor, load_image, read_image, verify_images

from ..conftest import random_image


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
    assert x.dtype == torch.uint8 and x.shape == (3, 3, 5) and x.permute(1, 2, 0).is_contiguous()  # channels last

    assert torch.equal(x.permute(1, 2, 0), torch.from_numpy(np.array(image)))


def test_read_image_gives_load_images_pixels_as_a_tensor(odd_images, pet_folder):
    for path in [*odd_images.values(), pet_folder / 'beagle_0.jpg', pet_folder / 'beagle_2.jpg']:
        x = read_image(path)
        assert x.dtype == torch.uint8 and x.shape[0] == 3
        assert torch.equal(x, image_to_tensor(load_image(path))), path.name


def test_read_image_errors_name_the_file(bad_files):
    for path in bad_files.values():
        with pytest.raises(ImageLoadError, match=path.name):
            read_image(path)


def tensor_image(width, height, seed=0):
    return image_to_tensor(random_image(width, height, seed))


def test_resize_crop_validation_is_the_centre_square():
    x = tensor_image(300, 200, seed=1)
    out = Resize(100)(x, train=False)
    expected = Resize(100, method='squish')(x[:, :, 50:250], train=False)
    assert out.shape == (3, 100, 100) and out.dtype == torch.uint8
    assert torch.equal(out, expected)


def test_resize_crop_training_covers_the_full_height_at_a_random_position():
    columns = torch.arange(300, dtype=torch.uint8).expand(3, 200, 300)  # each pixel holds its column index
    lefts = set()
    for seed in range(20):
        out = Resize(200)(columns, train=True, generator=torch.Generator().manual_seed(seed))
        left = int(out[0, 0, 0])
        assert 0 <= left <= 100 and out.shape == (3, 200, 200)
        assert torch.equal(out[0, 0], torch.arange(left, left + 200, dtype=torch.uint8))  # one crop, no scaling
        lefts.add(left)
    assert len(lefts) > 10


@pytest.mark.parametrize('method', ['crop', 'pad', 'squish'])
@pytest.mark.parametrize('size', [64, (48, 80)])
def test_every_method_gives_the_asked_size(method, size):
    for width, height in [(300, 200), (200, 300), (500, 2), (1, 1)]:
        out = Resize(size, method=method)(tensor_image(width, height), train=True,
                                          generator=torch.Generator().manual_seed(0))
        expected = (size, size) if isinstance(size, int) else size
        assert out.shape == (3, *expected) and out.dtype == torch.uint8


def test_pad_keeps_the_whole_image_in_the_middle():
    white = torch.full((3, 100, 200), 255, dtype=torch.uint8)
    out = Resize(100, method='pad', pad_mode='zeros')(white)
    assert out[:, :25].max() == 0 and out[:, 75:].max() == 0 and out[:, 30:70].min() == 255
    ramp = torch.arange(200, dtype=torch.uint8).expand(3, 100, 200)
    reflected = Resize(100, method='pad')(ramp)
    assert torch.equal(reflected[:, 24], reflected[:, 26]) and torch.equal(reflected[:, 75], reflected[:, 73])


@pytest.mark.parametrize('read', [read_image, lambda path, draft: image_to_tensor(load_image(path, draft))],
                         ids=['read_image', 'load_image'])
def test_jpeg_draft_mode_decodes_large_images_at_reduced_scale(tmp_path, read):
    path = tmp_path / 'big.jpg'
    random_image(2000, 1500, seed=2).resize((250, 188)).resize((2000, 1500)).save(path, quality=95)
    resize = Resize(460)
    drafted = read(path, resize.draft_size)
    # libjpeg scales by k/8: Pillow's draft offers 1/2, 1/4, 1/8 (here 1/2), simplejpeg every k/8 (here 3/8);
    # each picks the smallest that keeps the short side >= 460.
    height, width = drafted.shape[1:]
    assert 460 <= height <= 750 and abs(width - height * 4 / 3) <= 1
    full, fast = resize(read(path, None)), resize(drafted)
    assert (full.float() - fast.float()).abs().mean() < 3  # grey levels: the same picture


def test_bad_resize_arguments():
    with pytest.raises(ValueError, match="method='stretch'"):
        Resize(64, method='stretch')
    with pytest.raises(ValueError, match="pad_mode='border'"):
        Resize(64, pad_mode='border')
