"""The package's boundaries: what `from pets.all import *` gives, and minigrad standing alone."""
import ast
import pathlib

import minigrad
import pets.all


def test_star_import_gives_the_chapter_its_names():
    namespace = {}
    exec('from pets.all import *', namespace)
    assert set(pets.all.__all__) <= namespace.keys()
    assert namespace['Adam'] is minigrad.optim.Adam


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
