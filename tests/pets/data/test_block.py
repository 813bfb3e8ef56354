"""The DataBlock of the chapter, its loaders, show_batch, test_dl and summary."""
import re
import warnings

import matplotlib
import pytest
import torch

from pets.data.block import CategoryBlock, DataBlock, ImageBlock
from pets.data.loader import UnreadableImageWarning
from pets.data.download import URLs, untar_data
from pets.data.images import Resize
from pets.data.items import RandomSplitter, RegexLabeller, get_image_files, using_attr
from pets.data.summary import SummaryError

from ..conftest import BREEDS

matplotlib.use('Agg')
PATTERN = r'(.+)_\d+.jpg$'


def chapter_block(**kwargs):
    options = dict(splitter=RandomSplitter(seed=42)) | kwargs
    return DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                     get_y=using_attr(RegexLabeller(PATTERN), 'name'), **options)


def label_of(path):
    return re.match(PATTERN, path.name).group(1)


def test_the_chapters_datablock_on_the_embedded_sample(tmp_path, monkeypatch):
    monkeypatch.setenv('PETS_DATA', str(tmp_path))
    path = untar_data(URLs.PETS_SAMPLE)
    dls = chapter_block(item_tfms=Resize(460)).dataloaders(path / 'images', bs=16, num_workers=0, device='cpu')
    assert dls.c == 37 and dls.vocab[:2] == ['Abyssinian', 'Bengal'] and dls.vocab == sorted(dls.vocab)
    assert (len(dls.train_ds), len(dls.valid_ds)) == (296, 74)
    assert set(dls.train_ds.items).isdisjoint(dls.valid_ds.items)
    x, y = dls.valid.one_batch()
    assert x.shape == (16, 3, 460, 460) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert [dls.vocab[i] for i in y] == [label_of(p) for p in dls.valid_ds.items[:16]]
    x, y = dls.one_batch()
    assert x.shape == (16, 3, 460, 460) and y.dtype == torch.int64
    assert len(dls.train) == 296 // 16 and len(dls.valid) == -(-74 // 16)  # training drops the partial batch


def test_batches_are_the_same_whatever_the_number_of_workers(pet_folder):
    block = chapter_block(item_tfms=Resize(64))
    batches = {}
    for workers in (0, 2):
        dls = block.dataloaders(pet_folder, bs=8, num_workers=workers, device='cpu', seed=7)
        batches[workers] = [(x.clone(), y.clone()) for x, y in dls.train]
    for (x0, y0), (x2, y2) in zip(batches[0], batches[2]):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_a_seed_repeats_an_epoch_and_epochs_differ(pet_folder):
    block = chapter_block(item_tfms=Resize(64))
    first = [x for x, _ in block.dataloaders(pet_folder, bs=8, num_workers=0, seed=3).train]
    dls = block.dataloaders(pet_folder, bs=8, num_workers=0, seed=3)
    again, next_epoch = [x for x, _ in dls.train], [x for x, _ in dls.train]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(again, next_epoch))


def test_unreadable_files_are_left_out_and_reported_once(pet_folder):
    (pet_folder / 'beagle_98.jpg').write_bytes(b'')
    (pet_folder / 'beagle_99.jpg').write_text('not an image')
    dls = chapter_block(item_tfms=Resize(64), splitter=RandomSplitter(valid_pct=0.0, seed=0)) \
        .dataloaders(pet_folder, bs=26, num_workers=0)
    with pytest.warns(UnreadableImageWarning) as caught:
        (x, y), = list(dls.train)
    assert len(x) == 24 and len(caught) == 2
    assert sorted(p.name for p in dls.skipped) == ['beagle_98.jpg', 'beagle_99.jpg']
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        list(dls.train)  # reported once: no second warning


def test_batch_tfms_run_on_the_uint8_batch_with_the_split(pet_folder):
    calls = []

    def record(x, train):
        calls.append((x.dtype, train))
        return x

    dls = chapter_block(item_tfms=Resize(32), batch_tfms=record).dataloaders(pet_folder, bs=4, num_workers=0)
    dls.train.one_batch(), dls.valid.one_batch()
    assert calls == [(torch.uint8, True), (torch.uint8, False)]


def test_show_batch_draws_labelled_images(pet_folder, tmp_path):
    dls = chapter_block(item_tfms=Resize(32)).dataloaders(pet_folder, bs=8, num_workers=0)
    figure = dls.show_batch(nrows=1, ncols=3)
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert len(titles) == 3 and set(titles) <= set(BREEDS)
    figure.savefig(tmp_path / 'batch.png')
    assert (tmp_path / 'batch.png').stat().st_size > 1000


def test_test_dl_transforms_new_files_as_validation(pet_folder):
    dls = chapter_block(item_tfms=Resize(32)).dataloaders(pet_folder, bs=8, num_workers=0)
    files = get_image_files(pet_folder)[:5]
    (x,) = list(dls.test_dl(files))
    assert x.shape == (5, 3, 32, 32)
    assert torch.equal(x[0], next(iter(dls.test_dl(files[:1])))[0])  # centre crop: no randomness


def test_summary_traces_and_stops_at_collation_without_resize(pet_folder, capsys):
    with pytest.raises(SummaryError, match=r"(?s)stack.*different sizes.*item_tfms=Resize"):
        chapter_block().summary(pet_folder)
    out = capsys.readouterr().out
    assert 'Found 24 items' in out and '2 datasets of sizes 20,4' in out
    assert 'applying load_image gives' in out and 'Error!' in out
    x, y = chapter_block(item_tfms=Resize(32)).summary(pet_folder)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32


def test_summary_names_a_file_the_pattern_does_not_match(pet_folder, capsys):
    (pet_folder / 'cat.jpg').write_bytes((pet_folder / 'beagle_0.jpg').read_bytes())
    with pytest.raises(SummaryError, match=r"(?s)get_y.*'cat.jpg' does not match.*fix"):
        chapter_block(item_tfms=Resize(32)).summary(pet_folder)


def test_datablock_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="get_items"):
        DataBlock(get_y=lambda x: x)
    with pytest.raises(ValueError, match="no items"):
        chapter_block().datasets(tmp_path)
