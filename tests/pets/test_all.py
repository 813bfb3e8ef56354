"""The package's boundaries: what `from pets.all import *` gives, and minigrad standing alone."""
import ast
import pathlib

import minigrad
import minigrad.functional
import minigrad.optim
import pets.all
import pets.augment


def test_star_import_gives_the_chapter_its_names():
    """The names the chapter's code calls, each the thing it must be: the losses and Adam are minigrad's own,
    F is torch's (for side-by-side comparisons), the rest pets' or torch's."""
    import torch
    import torch.nn.functional
    namespace = {}
    exec('from pets.all import *', namespace)
    assert namespace['F'] is torch.nn.functional and namespace['nn'] is torch.nn and namespace['torch'] is torch
    for name in ('softmax', 'log_softmax', 'nll_loss', 'cross_entropy'):
        assert namespace[name] is getattr(minigrad.functional, name)
    assert namespace['Adam'] is minigrad.optim.Adam and namespace['SGD'] is minigrad.optim.SGD
    chapter = ['untar_data', 'URLs', 'get_image_files', 'DataBlock', 'ImageBlock', 'CategoryBlock', 'RandomSplitter',
               'using_attr', 'RegexLabeller', 'Resize', 'aug_transforms', 'cnn_learner', 'vision_learner', 'resnet34',
               'resnet50', 'error_rate', 'minimum', 'steep', 'valley', 'ClassificationInterpretation', 'load_learner',
               'tensor', 're', 'Path']
    assert all(callable(namespace[name]) or name in ('URLs', 're') for name in chapter)
    assert namespace['tensor'] is torch.tensor and namespace['aug_transforms'] is pets.augment.aug_transforms
    # Only what __all__ lists: no helper leaks into the user's namespace.
    assert {name for name in namespace if not name.startswith('__')} == set(pets.all.__all__)


def test_minigrad_never_imports_pets_or_torch_nn_functional():
    for path in pathlib.Path(minigrad.__file__).parent.glob('*.py'):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            assert not (isinstance(node, ast.Attribute) and node.attr == 'functional'), \
                f"{path.name} line {node.lineno} uses torch.nn.functional"
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or '']
            else:
                continue
            for name in names:
                assert not name.startswith('pets'), f"{path.name} imports {name}: minigrad must not depend on pets"
                assert name != 'torch.nn.functional', f"{path.name} imports torch.nn.functional"
