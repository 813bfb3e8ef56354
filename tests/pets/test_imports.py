"""The package's shape: data flows one way, so no module of pets imports, at any depth, one that imports it back."""
import ast
import pathlib

import pets

ROOT = pathlib.Path(pets.__file__).parent


def module_name(path):
    return '.'.join(('pets', *path.relative_to(ROOT).with_suffix('').parts)).removesuffix('.__init__')


def imports_of(path):
    """The pets modules a file imports anywhere in it, inside functions too (a lazy import is still a cycle)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
            [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
        found |= {name for name in names if name.startswith('pets.') and name != 'pets.all'}
    return found


def test_no_import_cycle_in_pets():
    graph = {module_name(path): imports_of(path) for path in ROOT.rglob('*.py')}
    done, path = set(), []

    def visit(module):
        if module in path:
            raise AssertionError('import cycle: ' + ' -> '.join(path[path.index(module):] + [module]))
        if module in done or module not in graph:
            return
        path.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert len(graph) > 20 and 'pets.data.loader' in graph['pets.data.block']
