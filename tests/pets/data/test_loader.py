"""The loader's decoded-image cache: decode once, the same items every epoch, used only where it fits."""
import pytest
import torch

from pets.data import loader as L
from pets.data.block import DataBlock
from pets.data.images import Resize, read_image
from pets.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr


def block():
    return DataBlock(get_items=get_image_files, splitter=RandomSplitter(seed=0),
                     get_y=using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name'), item_tfms=Resize(32))


def test_a_cached_dataset_decodes_each_file_once_and_gives_what_decoding_afresh_gives(pet_folder, monkeypatch):
    files = get_image_files(pet_folder)[:4]
    seeds = [[10 * epoch + index for index in range(len(files))] for epoch in range(3)]  # new crops each epoch
    expected = [[L.load_item(f, [Resize(32)], train=True, seed=s) for f, s in zip(files, row)] for row in seeds]
    decoded = []
    decode = L.decode_item
    monkeypatch.setattr(L, 'decode_item', lambda path, tfms=(): decoded.append(path) or decode(path, tfms))
    dataset = L.ItemDataset(files, [0, 1, 0, 1], ['a', 'b'], [Resize(32)], train=True, cache=True)
    for row, images in zip(seeds, expected):
        for index, (seed, image) in enumerate(zip(row, images)):
            assert torch.equal(dataset[index, seed][0], image)
    assert sorted(decoded) == sorted(files)  # once each
    assert all(dataset.cache[f].shape[0] == 3 for f in files)


def test_dataloaders_keep_small_data_sets_in_memory_and_decode_here(pet_folder):
    dls = block().dataloaders(pet_folder, bs=4, device='cpu')
    assert dls.train_ds.cache is not None and dls.valid_ds.cache is not None and dls.train.num_workers == 0
    list(dls.train)
    assert len(dls.train_ds.cache) == len(dls.train_ds)


@pytest.mark.parametrize('options', [dict(num_workers=2), dict(cache=False)])
def test_with_workers_or_when_asked_not_to_they_decode_every_time(pet_folder, options):
    dls = block().dataloaders(pet_folder, bs=4, device='cpu', **options)
    assert dls.train_ds.cache is None


def test_data_too_large_for_the_budget_is_not_cached(pet_folder, monkeypatch):
    monkeypatch.setattr('pets.data.block.memory_cache_budget', lambda: 1000)
    dls = block().dataloaders(pet_folder, bs=4, device='cpu')
    assert dls.train_ds.cache is None and dls.train.num_workers == L.default_num_workers()


def test_the_estimate_reads_headers_and_bounds_the_decoded_size(pet_folder, tmp_path):
    files = get_image_files(pet_folder)
    exact = sum(read_image(f).numel() for f in files)
    assert L.estimated_decoded_bytes(files, sample=len(files)) == pytest.approx(exact)
    assert L.estimated_decoded_bytes(files, sample=5) == pytest.approx(exact, rel=0.5)
    (tmp_path / 'bad.jpg').write_bytes(b'not an image')
    assert L.estimated_decoded_bytes([tmp_path / 'bad.jpg']) == 0 and L.estimated_decoded_bytes([]) == 0
