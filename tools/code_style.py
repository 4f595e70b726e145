"""Count what makes library code hard to read: lines over 120 characters and `;`-joined statements.

    python tools/code_style.py            # a count per module, then the offending lines; exit 1 if any
    python tools/code_style.py --count    # the counts only

The library is generated from the notebooks' exported cells, so a finding is fixed in the notebook the
`# %% ../nbs/NN_x.ipynb` marker above it names, then `nbdev_export`. `_modidx.py` (nbdev's index) is not code,
and the lines nbdev writes itself (a module's docstring, the chapter's subtitle; `__all__`) are not counted.
"""
import ast, io, sys, tokenize
from pathlib import Path

LIB = Path(__file__).resolve().parents[1]/'mri_diffusion_nb'
MAX = 120


def findings(path: Path) -> list:
    "(line number, kind, text) of each long line and each `;` that joins two statements."
    src = path.read_text()
    lines = src.splitlines()
    tree = ast.parse(src)
    generated = set()
    if ast.get_docstring(tree) is not None: generated |= set(range(tree.body[0].lineno, tree.body[0].end_lineno + 1))
    for n in tree.body:
        if isinstance(n, ast.Assign) and any(getattr(t, 'id', None) == '__all__' for t in n.targets):
            generated |= set(range(n.lineno, n.end_lineno + 1))
    out = [(i, 'long', l) for i, l in enumerate(lines, 1) if len(l) > MAX and i not in generated]
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.OP and tok.string == ';': out.append((tok.start[0], 'semicolon', lines[tok.start[0] - 1]))
    return sorted(out)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    total = {'long': 0, 'semicolon': 0}
    report = []
    for p in sorted(LIB.glob('*.py')):
        if p.name == '_modidx.py': continue
        f = findings(p)
        for _, kind, _ in f: total[kind] += 1
        if f: report.append((p.name, f))
    for name, f in report:
        print(f"{name}: {sum(k == 'long' for _, k, _ in f)} long, {sum(k == 'semicolon' for _, k, _ in f)} ;")
        if '--count' not in argv:
            for n, kind, line in f: print(f"  {n:5d} {kind:9s} {line.strip()[:110]}")
    print(f"library: {total['long']} lines over {MAX} characters, {total['semicolon']} ;-joined statements")
    return 1 if any(total.values()) else 0


if __name__ == '__main__': sys.exit(main())
