"""The stale-output guard (`tools/check_outputs.py`, run by `.ci/run`): it passes on a freshly executed chapter and fails on one
whose source was edited after it ran, or whose displayed expression has no output."""
import json, subprocess, sys
from conftest import REPO

sys.path.insert(0, str(REPO/'tools'))
from check_outputs import check, displays, source_hash

def _nb(path, cells):
    path.write_text(json.dumps(dict(cells=cells, metadata={}, nbformat=4, nbformat_minor=5)))
    return path

def _code(src, outputs=(), stamp=True):
    md = {'source_hash': source_hash(src)} if stamp else {}
    return dict(cell_type='code', source=src, outputs=list(outputs), metadata=md, execution_count=1 if outputs else None)

OUT = [dict(output_type='execute_result', data={'text/plain': '3'}, metadata={}, execution_count=1)]

def test_a_freshly_executed_chapter_passes(tmp_path):
    assert check(_nb(tmp_path/'ok.ipynb', [_code('x = 1\nx + 2', OUT), _code('test_eq(x, 1)'), _code('y = 2')])) == []

def test_an_edited_cell_fails(tmp_path):
    cell = _code('x = 1\nx + 2', OUT)
    cell['source'] = 'x = 1\nx + 3'                                # edited after it ran: the stored "3" is stale
    found = check(_nb(tmp_path/'edited.ipynb', [cell]))
    assert len(found) == 1 and 'cell 0 was edited after it ran' in found[0]

def test_outputs_without_a_stamp_fail(tmp_path):
    found = check(_nb(tmp_path/'old.ipynb', [_code('1 + 2', OUT, stamp=False)]))
    assert len(found) == 1 and 'no source_hash' in found[0]

def test_a_displayed_expression_without_output_fails_unless_marked(tmp_path):
    found = check(_nb(tmp_path/'missing.ipynb', [_code('x = 1\nx + 2'), _code('#| slow\nx + 2'), _code('#| no_output\nx')]))
    assert len(found) == 1 and 'cell 0 ends in an expression but has no output' in found[0]

def test_what_displays():
    assert displays('a.shape') and displays('f(x)') and displays('x, y') and displays('fig')
    assert not displays('x = 1') and not displays('test_eq(a, b)') and not displays('plt.show()') and not displays('f(x);')
    assert not displays('print(1)') and not displays('%time f(x)')

def test_the_command_line_exit_status(tmp_path):
    good, bad = _nb(tmp_path/'good.ipynb', [_code('1 + 2', OUT)]), _nb(tmp_path/'bad.ipynb', [_code('1 + 2', OUT, stamp=False)])
    run = lambda f: subprocess.run([sys.executable, str(REPO/'tools'/'check_outputs.py'), str(f)], capture_output=True, text=True)
    assert run(good).returncode == 0
    r = run(bad)
    assert r.returncode == 1 and 'bad.ipynb: cell 0' in r.stdout
