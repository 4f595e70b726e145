"""Stale-output guard: stored chapter outputs must come from the source beside them.

`tools/run_nb.py` stamps every code cell it runs with `metadata.source_hash` (the hash of the cell's source when it ran;
`nbdev_clean` keeps the key, see `allowed_cell_metadata_keys` in settings.ini). This check fails when

- a code cell has outputs but no stamp, or a stamp that does not match its source (edited after it ran), or
- a code cell that ends in an expression which displays a value has no output (it was never run, or its output was cut),
  unless the cell says `#| no_output` (an expression the reader should not see run, e.g. a server call).

    python tools/check_outputs.py                 # every notebook in nbs/
    python tools/check_outputs.py nbs/18_sampling.ipynb
    python tools/run_nb.py nbs/18_sampling.ipynb  # the fix: re-execute the chapter it names

Exit status 1 with one line per finding; 0 when every stored output is current.
"""
import ast, hashlib, json, re, sys
from pathlib import Path

KEY = 'source_hash'
SKIP = 'no_output'
# Calls whose value is None: a cell ending in one has nothing to display.
QUIET = re.compile(r'^(test(_\w+)?|print|display|show_doc|nbdev_export|.*\.(show|savefig|close|update|append|extend|write_text|'
                   r'write_bytes|unlink|mkdir|touch|set_\w+|manual_seed|seed|backward|step|zero_grad|load_state_dict|eval|train|'
                   r'tight_layout|axis|imshow|plot|legend|title|xlabel|ylabel|text|hist|grid|subplots_adjust|suptitle|'
                   r'set_title|set_xlabel|set_ylabel|run_cell|patch|rmtree|kill|wait|join|start|put|sleep|copy_|fill_|'
                   r'require_grad_|requires_grad_)|plt\.\w+|shutil\.\w+|os\.\w+|time\.sleep|warnings\.\w+)$')

def source_hash(src:str)->str:
    "The stamp of one cell's code: 16 hex digits of the SHA-256 of its lines other than `#|` directives (a flag changes when it runs, not what)."
    code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|'))
    return hashlib.sha256(code.encode()).hexdigest()[:16]

def _directives(src:str)->set:
    return {l[3:].strip().split()[0] for l in src.splitlines() if l.startswith('#| ') and l[3:].strip()}

def _call_name(node)->str:
    f = node.func
    parts = []
    while isinstance(f, ast.Attribute): parts.append(f.attr); f = f.value
    if isinstance(f, ast.Name): parts.append(f.id)
    return '.'.join(reversed(parts))

def displays(src:str)->bool:
    "Whether the cell's last statement is an expression whose value the notebook would display."
    code = '\n'.join(re.sub(r'^(\s*)[%!].*$', r'\1pass', l) for l in src.splitlines())
    if code.rstrip().endswith(';'): return False
    try: tree = ast.parse(code)
    except SyntaxError: return False
    if not tree.body or not isinstance(tree.body[-1], ast.Expr): return False
    v = tree.body[-1].value
    if isinstance(v, ast.Constant) and (v.value is None or isinstance(v.value, str)): return False   # a docstring-like string, None
    if isinstance(v, ast.Await): v = v.value
    if isinstance(v, ast.Call): return not QUIET.match(_call_name(v))
    return True

def check(fn, flags=('notest', 'slow', 'cuda'))->list:
    "Findings for one notebook: one line each, naming the notebook, the cell index and the problem."
    nb = json.loads(Path(fn).read_text())
    out = []
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] != 'code': continue
        src = ''.join(c['source'])
        d = _directives(src)
        stamp = c.get('metadata', {}).get(KEY)
        if c.get('outputs'):
            if stamp is None: out.append(f'{fn}: cell {i} has outputs but no {KEY}: run tools/run_nb.py on it')
            elif stamp != source_hash(src): out.append(f'{fn}: cell {i} was edited after it ran: run tools/run_nb.py on it')
        elif SKIP not in d and not (d & {'hide', 'eval:', *flags, 'export', 'exporti'}) and 'nbdev_export' not in src and displays(src):
            out.append(f'{fn}: cell {i} ends in an expression but has no output: run tools/run_nb.py on it (or mark it #| {SKIP})')
    return out

def main(args)->int:
    files = [Path(a) for a in args] or sorted(Path(__file__).resolve().parents[1].joinpath('nbs').glob('*.ipynb'))
    found = [f for fn in files for f in check(fn)]
    for f in found: print(f)
    print(f'{len(files)} notebooks, {len(found)} stale or missing outputs', file=sys.stderr)
    return 1 if found else 0

if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
