"""The house's layout: a chapter imports only chapters above it in the README's table, and the numbers agree.

The README's chapter table (rendered from `nbs/index.ipynb`) is the reading order: foundations (00s), making
images (10s), judging them (20s), the command line (30). Every import of the library, in a chapter's cells
(hidden ones included) and in the exported modules (function-level imports included), must point to a chapter
listed before the importing one.
"""
import ast, json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, LIB = ROOT/'nbs', ROOT/'mri_diffusion_nb'


def table_order() -> list:
    "The chapter notebooks in the order the README's chapter table lists them."
    readme = (ROOT/'README.md').read_text()
    return [m for m in re.findall(r'^\| \[[^]]+\]\((?:[^)]*/)?(\d\d_\w+)\.(?:ipynb|html|md)\)', readme, re.M)]


def chapters() -> dict:
    "notebook stem -> its exported module (or None)."
    out = {}
    for p in sorted(NBS.glob('[0-9][0-9]_*.ipynb')):
        src = '\n'.join(''.join(c['source']) for c in json.loads(p.read_text())['cells'] if c['cell_type'] == 'code')
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', src, re.M)
        out[p.stem] = m.group(1) if m else None
    return out


def notebook_imports(stem: str, nb: dict | None = None) -> set:
    "Library modules a chapter's code cells import (any cell, hidden and flagged ones too)."
    mods = set()
    for c in (nb or json.loads((NBS/f'{stem}.ipynb').read_text()))['cells']:
        if c['cell_type'] != 'code': continue
        src = ''.join(c['source'])
        mods |= set(re.findall(r'\bmri_diffusion_nb\.(\w+)', src))
        for names in re.findall(r'from\s+mri_diffusion_nb\s+import\s+\(?([\w ,\n]+)', src):
            mods |= {n.split(' as ')[0].strip() for n in names.split(',') if n.strip()}
    return mods


def module_imports(mod: str, source: str | None = None) -> set:
    "Library modules a module imports, at any depth of its code."
    out = set()
    for n in ast.walk(ast.parse(source if source is not None else (LIB/f'{mod}.py').read_text())):
        if isinstance(n, ast.ImportFrom):
            if n.level == 1 and n.module: out.add(n.module.split('.')[0])
            elif n.module and n.module.startswith('mri_diffusion_nb.'): out.add(n.module.split('.')[1])
            elif n.module == 'mri_diffusion_nb' or (n.level == 1 and not n.module): out |= {a.name for a in n.names}
        elif isinstance(n, ast.Import):
            out |= {a.name.split('.')[1] for a in n.names if a.name.startswith('mri_diffusion_nb.')}
    return out


def test_table_lists_every_chapter_in_number_order():
    order, nbs = table_order(), chapters()
    assert sorted(order) == sorted(nbs), f"README table {order} vs chapters on disk {sorted(nbs)}"
    assert order == sorted(order), "the README's chapter table is not in chapter-number order"


def test_every_import_points_up_the_table():
    order, nbs = table_order(), chapters()
    rank = {m: order.index(stem) for stem, m in nbs.items() if m}
    wrong = []
    for stem in [s for s in order if s in nbs]:  # a listed chapter missing on disk fails the test above
        own = nbs[stem]
        for m in sorted(notebook_imports(stem) | (module_imports(own) if own else set())):
            if m in rank and m != own and rank[m] > order.index(stem):
                wrong.append(f"{stem} imports {m} ({order[rank[m]]})")
    assert not wrong, 'imports that point down the table:\n' + '\n'.join(wrong)


def test_floors_group_by_tens():
    "00s foundations, 10s making images, 20s judging them, 30s the command line: each floor imports no later floor."
    nbs = chapters()
    floor = {m: int(stem[0]) for stem, m in nbs.items() if m}
    for stem, m in nbs.items():
        later = {d for d in notebook_imports(stem) | (module_imports(m) if m else set()) if floor.get(d, 0) > int(stem[0])}
        assert not later, f"{stem} imports from a later floor: {sorted(later)}"


def test_the_parsers_find_each_form_of_import():
    "Each way of importing the library is seen, so an upward import cannot hide from the checks above."
    src = ("from .data import x\nfrom mri_diffusion_nb.store import y\nimport mri_diffusion_nb.unet\n"
           "def f():\n    from . import sampling\n    from mri_diffusion_nb import training as T\n")
    assert module_imports('m', src) == {'data', 'store', 'unet', 'sampling', 'training'}
    cells = ["from mri_diffusion_nb.report import evaluate", "#| hide\nimport mri_diffusion_nb.cli as C",
             "from mri_diffusion_nb import (adherence,\n    guidance as G)"]
    nb = {'cells': [dict(cell_type='code', source=c) for c in cells] + [dict(cell_type='markdown', source='mri_diffusion_nb.x')]}
    assert notebook_imports('x', nb) == {'report', 'cli', 'adherence', 'guidance'}
    assert table_order()[:2] == ['00_files', '01_runtime'] and table_order()[-1] == '30_cli'
