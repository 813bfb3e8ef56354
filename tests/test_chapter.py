"""The chapter's own code, as the user's notes give it, run with `from pets.all import *`.

Only the data set differs: the embedded sample (URLs.PETS_SAMPLE) stands in for the 811 MB download.
Later stages of the chapter (learner, interpretation) join this file as they land.
"""
import matplotlib

matplotlib.use('Agg')


def test_chapter_data_section(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('PETS_DATA', str(tmp_path))
    namespace = {}
    exec('from pets.all import *', namespace)
    exec('''
path = untar_data(URLs.PETS_SAMPLE)
listing = path.ls()
images = (path/"images").ls()
fname = (path/"images").ls()[0]
breed = re.findall(r'(.+)_\\d+.jpg$', fname.name)
pets = DataBlock(blocks = (ImageBlock, CategoryBlock),
                 get_items=get_image_files,
                 splitter=RandomSplitter(seed=42),
                 get_y=using_attr(RegexLabeller(r'(.+)_\\d+.jpg$'), 'name'),
                 item_tfms=Resize(460),
                 batch_tfms=aug_transforms(size=224, min_scale=0.75))
dls = pets.dataloaders(path/"images", num_workers=0)
figure = dls.show_batch(nrows=1, ncols=3)
x,y = dls.one_batch()
pets1 = DataBlock(blocks = (ImageBlock, CategoryBlock),
                 get_items=get_image_files,
                 splitter=RandomSplitter(seed=42),
                 get_y=using_attr(RegexLabeller(r'(.+)_\\d+.jpg$'), 'name'))
try:
    pets1.summary(path/"images")
except Exception as error:
    summary_error = error
''', namespace)
    assert repr(namespace['listing']).startswith('(#2) [') and 'images' in repr(namespace['listing'])
    assert repr(namespace['images']).startswith('(#370) [')
    assert namespace['breed'] == ['Abyssinian']
    assert namespace['x'].shape == (64, 3, 224, 224) and namespace['y'].shape == (64,)
    assert 'item_tfms=Resize' in str(namespace['summary_error'])
    assert 'Found 370 items' in capsys.readouterr().out
