"""Execute a chapter in place as nbdev_test does (skipping cells flagged with tst_flags and `eval: false`), keeping its outputs for the docs.
Each cell it runs is stamped with the hash of its source (`tools/check_outputs.py` fails when they drift apart); cells it
skips keep their stored outputs and stamps.

    OMP_NUM_THREADS=1 python tools/run_nb.py nbs/18_sampling.ipynb && nbdev_clean --fname nbs/18_sampling.ipynb
    python tools/run_nb.py nbs/17_guidance.ipynb --with slow   # also run (and keep the outputs of) cells flagged slow, as `nbdev_test --flags slow` does
"""
import json, os, sys, time
from pathlib import Path
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.processors import NBProcessor
from nbdev.frontmatter import FrontmatterProc
sys.path.insert(0, str(Path(__file__).parent))
from check_outputs import KEY, source_hash

def run(fn, include=()):
    fn = Path(fn).resolve()
    os.environ['IN_TEST'] = '1'
    flags = set(get_config().tst_flags.split()) - set(include)
    nb = NBProcessor(fn, procs=FrontmatterProc, process=True).nb
    def _no_eval(cell):
        if cell.cell_type != 'code': return True
        if 'nbdev_export' + '(' in cell.source: return True
        d = getattr(cell, 'directives_', {}) or {}
        if d.get('eval:', [''])[0].lower() == 'false': return True
        return flags & d.keys()
    k = CaptureShell(fn)
    k.run_cell("from matplotlib_inline.backend_inline import set_matplotlib_formats; set_matplotlib_formats('png')")
    t0 = time.time()
    with working_directory(fn.parent):
        try: k.run_all(nb, exc_stop=True, preproc=_no_eval)
        except Exception:
            sys.stderr.write(k.prettytb(fname=fn) + '\n'); sys.exit(1)
    raw = json.loads(fn.read_text())
    assert len(nb.cells) == len(raw['cells']), 'the processed notebook lost or gained cells'  # so cells pair up by position (directives are stripped from nb's sources)
    for c, pc in zip(raw['cells'], nb.cells):
        if c['cell_type'] != 'code': continue
        src = ''.join(c['source'])
        if _no_eval_raw(src, flags): continue          # not run here: its stored outputs and stamp stay as they were
        c['outputs'] = [dict(x) for x in pc.get('outputs', [])]
        c['execution_count'] = pc.get('execution_count')
        c.setdefault('metadata', {})[KEY] = source_hash(src)   # what tools/check_outputs.py compares with the source
    fn.write_text(json.dumps(raw, indent=1, ensure_ascii=False) + '\n')
    print(f"{fn.name}: ran in {time.time() - t0:.0f}s", file=sys.stderr)

def _no_eval_raw(src, flags):
    heads = [l[3:].strip() for l in src.splitlines() if l.startswith('#| ')]
    return any(h.split()[0] in flags for h in heads if h) or any(h.replace(' ', '') == 'eval:false' for h in heads)

if __name__ == '__main__':
    args = sys.argv[1:]
    inc = args[args.index('--with') + 1].split(',') if '--with' in args else []
    run(args[0], include=inc)
