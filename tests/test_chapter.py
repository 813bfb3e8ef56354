"""The chapter's own code, as the user's notes give it, run with `from pets.all import *`: the data section,
the cross-entropy section (with the book's numbers), and the training and interpretation calls.

Only the data differ: the embedded sample (URLs.PETS_SAMPLE) stands in for the 811 MB download, and generated
images for training (no pretrained weights can be downloaded in CI).
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


def test_chapter_cross_entropy_section():
    """The notes' code for softmax, the pick, nll_loss and cross-entropy, with the numbers the book prints;
    then minigrad's functions of the same names (pets.all gives them) on the same activations."""
    namespace = {}
    exec('from pets.all import *', namespace)
    exec('''
torch.random.manual_seed(42);
acts = torch.randn((6,2))*2
sm_acts = torch.softmax(acts, dim=1)
targ = tensor([0,1,0,1,1,0])
idx = range(6)
picked = sm_acts[idx, targ]
nll = F.nll_loss(sm_acts, targ, reduction='none')
loss_func = nn.CrossEntropyLoss()
loss = loss_func(acts, targ)
functional = F.cross_entropy(acts, targ)
per_item = nn.CrossEntropyLoss(reduction='none')(acts, targ)
ours = (cross_entropy(acts, targ), cross_entropy(acts, targ, reduction='none'),
        nll_loss(softmax(acts, dim=1), targ, reduction='none'))
''', namespace)
    book = {'picked': [0.6025, 0.4979, 0.1332, 0.0034, 0.4041, 0.3661],
            'nll': [-0.6025, -0.4979, -0.1332, -0.0034, -0.4041, -0.3661],
            'per_item': [0.5067, 0.6973, 2.0160, 5.6958, 0.9062, 1.0048]}
    for name, values in book.items():
        assert [round(v, 4) for v in namespace[name].tolist()] == values
    assert round(float(namespace['loss']), 4) == round(float(namespace['functional']), 4) == 1.8045
    mean, per_item, nll = namespace['ours']
    assert round(float(mean), 4) == 1.8045 and [round(v, 4) for v in per_item.tolist()] == book['per_item']
    assert [round(v, 4) for v in nll.tolist()] == book['nll']


def test_chapter_learner_section(tmp_path):
    """The chapter's training calls, on generated images (pretrained=False: no weights download here)."""
    import numpy as np
    from PIL import Image
    folder = tmp_path / 'images'
    folder.mkdir()
    for b, breed in enumerate(['Abyssinian', 'beagle', 'pug']):
        for n in range(8):
            pixels = np.random.default_rng(10 * b + n).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f'{breed}_{n}.jpg')
    namespace = {'folder': folder}
    exec('from pets.all import *', namespace)
    exec('''
pets = DataBlock(blocks = (ImageBlock, CategoryBlock),
                 get_items=get_image_files,
                 splitter=RandomSplitter(seed=42),
                 get_y=using_attr(RegexLabeller(r'(.+)_\\d+.jpg$'), 'name'),
                 item_tfms=Resize(48),
                 batch_tfms=aug_transforms(size=32, min_scale=0.75))
dls = pets.dataloaders(folder, bs=8, num_workers=0)
x,y = dls.one_batch()
learn = cnn_learner(dls, resnet34, metrics=error_rate, pretrained=False, progress=False)
preds,_ = learn.get_preds(dl=[(x,y)])
total = preds[0].sum()
lr_min,lr_steep = learn.lr_find(suggest_funcs=(minimum, steep), num_it=20, show_plot=False)
sweep_rates = learn.recorder.lr_find.lrs
learn.fine_tune(1, base_lr=3e-3)
learn = cnn_learner(dls, resnet34, metrics=error_rate, pretrained=False, progress=False)
learn.fit_one_cycle(1, 3e-3)
learn.unfreeze()
learn.fit_one_cycle(1, lr_max=slice(1e-6,1e-4))
figure = learn.recorder.plot_loss()
learn = cnn_learner(dls, resnet50, metrics=error_rate, pretrained=False, progress=False).to_fp16()
learn.fine_tune(1, freeze_epochs=1)
interp = ClassificationInterpretation.from_learner(learn)
confused = interp.most_confused(min_val=1)
''', namespace)
    assert abs(float(namespace['total']) - 1) < 1e-5
    # lr_find's suggestions come from its sweep: a tenth of one swept rate, and a swept rate.
    rates = namespace['sweep_rates']
    assert any(abs(namespace['lr_min'] * 10 / rate - 1) < 1e-9 for rate in rates)
    assert any(abs(namespace['lr_steep'] / rate - 1) < 1e-9 for rate in rates)
    # most_confused: the confusion matrix's off-diagonal cells of at least min_val, largest first.
    interp, confused = namespace['interp'], namespace['confused']
    matrix, vocab = interp.confusion_matrix(), list(interp.vocab)
    cells = {(vocab[a], vocab[p]): int(matrix[a, p]) for a in range(len(vocab)) for p in range(len(vocab))
             if a != p and matrix[a, p] >= 1}
    assert {(a, p): n for a, p, n in confused} == cells
    assert [n for _, _, n in confused] == sorted(cells.values(), reverse=True)
