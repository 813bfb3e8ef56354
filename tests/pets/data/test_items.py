"""Listing, labelling, splitting and encoding items."""
import pytest
import torch

from pets.data.items import (Categorize, GrandparentSplitter, RandomSplitter, RegexLabeller, get_image_files,
                             parent_label, using_attr)


def test_get_image_files_is_sorted_skips_hidden_and_filters_by_extension(tmp_path):
    for name in ['b.jpg', 'a.JPG', 'c.png', 'notes.txt', '.hidden.jpg', 'sub/d.jpeg', '.git/e.jpg', 'other/f.gif']:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b'')
    names = [p.relative_to(tmp_path).as_posix() for p in get_image_files(tmp_path)]
    assert names == ['a.JPG', 'b.jpg', 'c.png', 'other/f.gif', 'sub/d.jpeg']
    assert [p.name for p in get_image_files(tmp_path, recurse=False)] == ['a.JPG', 'b.jpg', 'c.png']
    assert [p.name for p in get_image_files(tmp_path, folders=['sub'])] == ['d.jpeg']


def test_get_image_files_of_a_missing_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere is not a folder"):
        get_image_files(tmp_path / 'nowhere')


def test_get_image_files_survives_a_symlink_loop(tmp_path):
    (tmp_path / 'a.jpg').write_bytes(b'')
    (tmp_path / 'loop').symlink_to(tmp_path, target_is_directory=True)
    assert [p.name for p in get_image_files(tmp_path)] == ['a.jpg']


def test_regex_labeller_with_using_attr(tmp_path):
    label = using_attr(RegexLabeller(r'(.+)_\d+.jpg$'), 'name')
    assert label(tmp_path / 'great_pyrenees_173.jpg') == 'great_pyrenees'
    assert label(tmp_path / 'Ragdoll_262.jpg') == 'Ragdoll'
    with pytest.raises(ValueError, match=r"'cat.jpg' does not match the pattern '\(\.\+\)_\\\\d\+\.jpg\$'.*file: .*cat\.jpg"):
        label(tmp_path / 'cat.jpg')


def test_random_splitter_is_fastais_rule_and_leaves_the_global_rng_alone():
    items = list(range(37))
    train, valid = RandomSplitter(valid_pct=0.2, seed=42)(items)
    torch.manual_seed(42)
    expected = torch.randperm(37).tolist()
    assert valid == expected[:7] and train == expected[7:]
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    RandomSplitter(seed=1)(items)
    assert torch.equal(torch.rand(1), before)
    torch.manual_seed(5)  # without a seed, torch's global generator decides: torch.manual_seed repeats it
    first = RandomSplitter()(items)
    torch.manual_seed(5)
    assert RandomSplitter()(items) == first and RandomSplitter()(items) != first
    with pytest.raises(ValueError, match="valid_pct=1.5"):
        RandomSplitter(valid_pct=1.5)


def test_categorize_sorted_vocabulary_round_trip():
    vocab = Categorize().setup(['pug', 'Bengal', 'beagle', 'pug'])
    assert vocab.vocab == ['Bengal', 'beagle', 'pug']
    assert [vocab.encode(x) for x in ['pug', 'Bengal']] == [2, 0]
    assert vocab.decode(torch.tensor(1)) == 'beagle'
    with pytest.raises(KeyError, match="'boxer' is not in the vocabulary"):
        vocab.encode('boxer')


def test_parent_label_and_grandparent_splitter(class_folders):
    files = get_image_files(class_folders)
    assert parent_label(files[0]) == 'cat' and {parent_label(f) for f in files} == {'cat', 'dog', 'rabbit'}
    train, valid = GrandparentSplitter()(files)
    assert len(train) == 18 and len(valid) == 6 and not set(train) & set(valid)
    assert all(files[i].parent.parent.name == 'train' for i in train)
    assert all(files[i].parent.parent.name == 'valid' for i in valid)
    with pytest.raises(ValueError, match="GrandparentSplitter found 18 items under a 'train' folder and 0 under a "
                                         "'validation' folder"):
        GrandparentSplitter(valid_name='validation')(files)
