"""The chapters' sliders in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by Playwright.

For each chapter a copy of the notebook, trimmed to the cells the widget cell needs (the chapter's own cells, in order),
is written to a temporary folder, opened in JupyterLab and run; then the slider is moved with the keyboard and the
displayed image must change (screenshots before and after, compared pixel by pixel). The repo's notebooks are never
opened by the server, so autosave cannot touch them. JupyterLab, its kernels and the browser are stopped at the end,
whatever happened.

Screenshots go to $MRI_DIFFUSION_SCREENSHOTS (default: the test's tmp_path).
Needs Debian's `chromium` and the `playwright` Python package (no browser download); skipped without them.
"""
import ast, builtins, json, os, re, secrets, signal, subprocess, symtable, sys, time
import urllib.error, urllib.request
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
NBS = REPO/'nbs'
from conftest import free_port, needs_browser

RUN_TIMEOUT = 360    # s for the cells up to the widget (the sampling chapter may train a tiny model first)
CHANGE_TIMEOUT = 180 # s for the widget to re-render after the slider moved

# ---------------------------------------------------------------- notebook trimming

_BUILTINS = set(dir(builtins)) | {'get_ipython', '__file__', '__name__'}

def _python(src:str)->str:
    "Cell source as plain Python: IPython magics and shell escapes become `pass`."
    return '\n'.join(re.sub(r'^(\s*)[%!].*$', r'\1pass', l) for l in src.splitlines())

def _names(src:str)->tuple:
    "(names the cell binds at top level, global names it reads, whether it star-imports)."
    code = _python(src)
    top = symtable.symtable(code, '<cell>', 'exec')
    binds = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}
    reads = {s.get_name() for s in top.get_symbols() if s.is_referenced()}
    todo = list(top.get_children())
    while todo:  # free names of functions, classes, comprehensions that resolve to module globals
        t = todo.pop()
        reads |= {s.get_name() for s in t.get_symbols() if s.is_referenced() and s.is_global()}
        todo += t.get_children()
    star = any(isinstance(n, ast.ImportFrom) and any(a.name == '*' for a in n.names) for n in ast.walk(ast.parse(code)))
    return binds, reads - _BUILTINS, star

def trim_notebook(src:Path, dst:Path, marker:str)->list:
    """Copy the chapter `src` to `dst` keeping the first code cell containing `marker` and, in order, the earlier code cells
    it depends on (cells binding a name it reads, transitively; star imports and `@patch` methods always). Outputs are cleared. Returns the kept sources."""
    nb = json.loads(src.read_text())
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    srcs = [''.join(c['source']) for c in code]
    idx = next((i for i, s in enumerate(srcs) if marker in s), None)
    assert idx is not None, f'{src.name}: no code cell contains {marker!r}'
    info = [_names(s) for s in srcs[:idx + 1]]
    need = info[idx][1] - info[idx][0]
    keep = {idx}
    for i in range(idx - 1, -1, -1):
        s = srcs[i]
        if 'nbdev_export' in s or s.lstrip().startswith('#| slow'): continue
        binds, reads, star = info[i]
        patches = re.search(r'^@patch', s, re.M) is not None  # fastcore @patch adds methods: nothing reads its name, the class needs it
        if star or patches or binds & need:
            keep.add(i); need |= reads - binds
    cells = []
    for i in sorted(keep):
        c = dict(code[i], outputs=[], execution_count=None)
        cells.append(c)
    dst.write_text(json.dumps(dict(nb, cells=cells), indent=1))
    return [srcs[i] for i in sorted(keep)]

# ---------------------------------------------------------------- JupyterLab server

def _api(base, token, path, method='GET', timeout=10):
    req = urllib.request.Request(f'{base}{path}', method=method, headers={'Authorization': f'token {token}'})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
        return json.loads(body) if body else None

def _write_settings(settings_dir:Path):
    "Lab user settings: no news/update toasts, every cell in the DOM (no windowing), and autosave off."
    s = {'@jupyterlab/apputils-extension/notification': {'checkForUpdates': False, 'fetchNews': 'false'},
         '@jupyterlab/notebook-extension/tracker': {'windowingMode': 'none'},
         '@jupyterlab/docmanager-extension/plugin': {'autosave': False}}
    for k, v in s.items():
        f = settings_dir/f'{k}.jupyterlab-settings'
        f.parent.mkdir(parents=True, exist_ok=True); f.write_text(json.dumps(v))

def _kill_kernels(runtime:Path):
    "Kill any kernel still running with a connection file in our private runtime dir (processes this test started)."
    for d in Path('/proc').iterdir():
        if not d.name.isdigit(): continue
        try: cmd = (d/'cmdline').read_bytes().decode(errors='replace')
        except OSError: continue
        if str(runtime) in cmd:
            try: os.kill(int(d.name), signal.SIGKILL)
            except OSError: pass

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "JupyterLab on 127.0.0.1 with a random token, serving a temporary folder; stopped with its kernels at the end."
    tmp = tmp_path_factory.mktemp('lab')
    root, runtime, cfg = tmp/'root', tmp/'runtime', tmp/'config'
    for d in (root, runtime, cfg, tmp/'tmp'): d.mkdir()
    _write_settings(tmp/'settings')
    token, port = secrets.token_hex(24), free_port()
    base = f'http://127.0.0.1:{port}'
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONWARNINGS='ignore', JUPYTER_CONFIG_DIR=str(cfg),
               JUPYTER_RUNTIME_DIR=str(runtime), JUPYTERLAB_SETTINGS_DIR=str(tmp/'settings'),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp/'workspaces'), IPYTHONDIR=str(tmp/'ipython'), MPLBACKEND='agg',
               TMPDIR=str(tmp/'tmp'))  # the kernels' temporary files (the tiny model the chapter may train) stay in pytest's tmp
    cmd = [sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
           '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}',
           f'--LabApp.user_settings_dir={tmp/"settings"}', f'--LabApp.workspaces_dir={tmp/"workspaces"}',
           '--LabApp.expose_app_in_browser=True', '--LabApp.news_url=None',
           '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'] + (['--allow-root'] if os.geteuid() == 0 else [])
    log = open(tmp/'server.log', 'wb')
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None: pytest.fail(f'JupyterLab exited ({proc.returncode}):\n{(tmp/"server.log").read_text()[-3000:]}')
            try:
                _api(base, token, '/api/status', timeout=2); break
            except (urllib.error.URLError, ConnectionError, OSError): pass
            if time.time() - t0 > 90: pytest.fail(f'JupyterLab did not answer in 90 s:\n{(tmp/"server.log").read_text()[-3000:]}')
            time.sleep(0.5)
        print(f'\nJupyterLab answered after {time.time() - t0:.1f} s on {base} (log: {tmp/"server.log"})')
        yield dict(base=base, token=token, root=root, log=tmp/'server.log', runtime=runtime)
    finally:
        try:
            for k in _api(base, token, '/api/kernels'): _api(base, token, f'/api/kernels/{k["id"]}', 'DELETE', timeout=20)
        except Exception: pass
        try: _api(base, token, '/api/shutdown', 'POST', timeout=10)
        except Exception: pass
        try: proc.wait(15)
        except subprocess.TimeoutExpired:
            try: os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError: pass
            try: proc.wait(10)
            except subprocess.TimeoutExpired:
                try: os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError: pass
                proc.wait(10)
        _kill_kernels(runtime)
        log.close()

@pytest.fixture
def shots(tmp_path):
    d = Path(os.environ.get('MRI_DIFFUSION_SCREENSHOTS') or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d

# ---------------------------------------------------------------- driving the page

_STATE_JS = """() => {
  const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!p || !p.content || !p.sessionContext) return {ready: false};
  const k = p.sessionContext.session && p.sessionContext.session.kernel;
  const cells = p.content.model ? Array.from(p.content.model.cells) : [];
  let error = null;
  cells.forEach((c, i) => {
    if (c.type !== 'code') return;
    for (const o of c.outputs.toJSON()) if (o.output_type === 'error') error = `cell ${i}: ${o.ename}: ${o.evalue}\\n` + (o.traceback || []).join('\\n').replace(/\\x1b\\[[0-9;]*m/g, '');
  });
  const started = cells.some(c => c.type === 'code' && (c.executionCount || c.executionState === 'running'));
  return {ready: true, id: p.id, kernel: k ? k.status : null, ncells: cells.length, error, started};
}"""

def _open_and_run(page, lab, name):
    "Open the notebook, get past a kernel dialog if one shows, wait for the kernel, run all cells."
    # ?reset: start from an empty workspace, so a notebook opened by an earlier test is not restored beside this one
    page.goto(f'{lab["base"]}/lab/tree/{name}?reset&token={lab["token"]}', wait_until='domcontentloaded')
    page.wait_for_selector('.jp-NotebookPanel .jp-Cell', timeout=90_000)
    t0 = time.time()
    while True:
        dlg = page.locator('.jp-Dialog .jp-Dialog-button.jp-mod-accept')
        if dlg.count() and dlg.first.is_visible(): dlg.first.click()
        st = page.evaluate(_STATE_JS)
        if st.get('ready') and st.get('kernel') == 'idle': break
        if time.time() - t0 > 90: pytest.fail(f'kernel not idle after 90 s: {st}\n{lab["log"].read_text()[-2000:]}')
        time.sleep(0.5)
    for attempt in range(3):  # Run All; again if nothing started (the command acts on the notebook that has focus)
        page.evaluate('''() => { const app = window.jupyterapp; app.shell.activateById(app.shell.currentWidget.id);
                                 app.commands.execute('notebook:run-all-cells'); }''')  # not awaited: cells run for minutes
        t1 = time.time()
        while time.time() - t1 < 20:
            st = page.evaluate(_STATE_JS)
            if st.get('started') or st.get('kernel') == 'busy': return st['id'], st['ncells']
            time.sleep(0.5)
    pytest.fail(f'Run All did not start any cell: {st}')

def _wait_widget(page, panel_id, ncells, image_sel):
    "Wait until the last cell's output (in the notebook panel `panel_id`) shows the widget with a loaded image; fail fast on a Python error."
    last = page.locator(f'[id="{panel_id}"] .jp-Notebook .jp-CodeCell').nth(ncells - 1)
    img = last.locator(f'.jp-OutputArea-output {image_sel}').first
    t0 = time.time()
    while not (img.count() and img.is_visible() and img.evaluate('e => e.complete && e.naturalWidth > 0')):
        st = page.evaluate(_STATE_JS)
        if st.get('error'): pytest.fail(f'the notebook raised:\n{st["error"]}')
        if time.time() - t0 > RUN_TIMEOUT: pytest.fail(f'no widget image after {RUN_TIMEOUT} s: {st}')
        time.sleep(1)
    print(f'widget rendered {time.time() - t0:.1f} s after Run All')
    return last.locator('.jp-OutputArea-output .widget-vbox').first, img

def _slider(widget, page, label):
    s = widget.locator('.widget-slider', has=page.locator('.widget-label', has_text=re.compile(f'^{re.escape(label)}$')))
    assert s.count() == 1, f'expected one slider labelled {label!r}, found {s.count()}'
    return s, s.locator('.noUi-handle').first, s.locator('.widget-readout').first

def _move(page, handle, readout, key):
    "Move a slider with the keyboard (focus the handle, press `key`); fall back to dragging it to the far end."
    before = readout.inner_text().strip()
    handle.focus(); handle.press(key)
    for _ in range(20):
        if readout.inner_text().strip() != before: return before, readout.inner_text().strip()
        time.sleep(0.1)
    box, track = handle.bounding_box(), handle.locator('xpath=ancestor::*[contains(@class,"noUi-base")]').bounding_box()
    x = track['x'] + 1 if key in ('Home', 'PageDown', 'ArrowLeft', 'ArrowDown') else track['x'] + track['width'] - 1
    page.mouse.move(box['x'] + box['width']/2, box['y'] + box['height']/2); page.mouse.down()
    page.mouse.move(x, box['y'] + box['height']/2, steps=10); page.mouse.up()
    return before, readout.inner_text().strip()

def _pick(widget, label, value):
    "Choose `value` in the widget's dropdown labelled `label` (a real <select>, as a reader would); returns (before, after)."
    sel = widget.locator('.widget-dropdown').filter(has_text=label).locator('select').first
    before = sel.evaluate('e => e.options[e.selectedIndex].text')
    sel.select_option(label=value)
    return before, sel.evaluate('e => e.options[e.selectedIndex].text')

def _diff(a:Path, b:Path)->tuple:
    "(pixels that differ by more than 24 grey levels in some channel, total pixels) of two PNGs (the overlap if sizes differ)."
    import numpy as np
    from PIL import Image
    x, y = (np.asarray(Image.open(p).convert('RGB')).astype(int) for p in (a, b))
    h, w = min(x.shape[0], y.shape[0]), min(x.shape[1], y.shape[1])
    d = np.abs(x[:h, :w] - y[:h, :w]).max(-1) > 24
    return int(d.sum()), h*w

def _wait_loaded(img, old_src, timeout):
    """Wait for the image to show a new src, fully loaded, and stay on it for a moment (a widget may first show a
    preview, then its final image). Returns the seconds until the first new image was on screen: the response time."""
    t0, src, first = time.time(), old_src, None
    while True:
        src = img.get_attribute('src')
        if src != old_src and img.evaluate('e => e.complete && e.naturalWidth > 0'):
            first = first or time.time() - t0
            time.sleep(1.0)
            if img.get_attribute('src') == src: return first
        if time.time() - t0 > timeout: pytest.fail(f'the image did not change within {timeout} s of moving the slider')
        time.sleep(0.05)

def _slider_changes_image(browser, lab, shots, chapter, marker, label, key, image_sel, tag, min_frac, expect, pick:str|None=None):
    "Run the chapter's cells up to the widget, move its slider `label` with `key` (or choose `pick` in its dropdown `label`), check the image changes."
    kept = trim_notebook(NBS/chapter, lab['root']/chapter, marker)
    print(f'{chapter}: running {len(kept)} of its code cells (those the widget cell needs)')
    ctx = browser.new_context(viewport={'width': 1400, 'height': 1000})
    page = ctx.new_page()
    try:
        t0 = time.time()
        panel_id, ncells = _open_and_run(page, lab, chapter)
        assert ncells == len(kept)
        widget, img = _wait_widget(page, panel_id, ncells, image_sel)
        widget.scroll_into_view_if_needed()
        if pick is None: _, handle, readout = _slider(widget, page, label)
        time.sleep(1.0)  # let the first render settle
        src0 = img.get_attribute('src')
        files = {k: shots/f'{tag}_{k}.png' for k in ('before', 'after', 'before_image', 'after_image')}
        widget.screenshot(path=files['before']); img.screenshot(path=files['before_image'])
        v0, v1 = _pick(widget, label, pick) if pick else _move(page, handle, readout, key)
        assert v0 != v1, f'the {label} control did not change (it stayed {v0})'
        dt = _wait_loaded(img, src0, CHANGE_TIMEOUT)
        assert expect in widget.inner_text(), f'the widget does not say {expect!r} after the move:\n{widget.inner_text()}'
        widget.screenshot(path=files['after']); img.screenshot(path=files['after_image'])
        n, tot = _diff(files['before_image'], files['after_image'])
        print(f'{tag}: {label} {v0} -> {v1}; first new image on screen {dt:.2f} s after the move (goal: 2 s on a 2-core CPU); '
              f'{n} of {tot} image pixels changed ({n/tot:.0%}); total {time.time() - t0:.0f} s')
        print(f'RESPONSE {chapter} {label}: {dt:.2f} s')
        for k, f in files.items(): print(f'  {k}: {f}')
        assert n >= min_frac*tot, f'only {n} of {tot} pixels changed after moving {label} ({v0} -> {v1})'
    except BaseException:
        try:
            page.screenshot(path=shots/f'{tag}_failure.png', full_page=True); print(f'page at failure: {shots/f"{tag}_failure.png"}')
        except Exception: pass
        raise
    finally:
        ctx.close()
        try:  # stop this chapter's kernel now, so the next chapter has the CPU
            for s in _api(lab['base'], lab['token'], '/api/sessions'):
                _api(lab['base'], lab['token'], f'/api/sessions/{s["id"]}', 'DELETE', timeout=20)
        except Exception: pass

# ---------------------------------------------------------------- the tests

def _browser(f):
    "Slow tier, and only where chromium and playwright are installed (the trimming test below needs neither)."
    for m in needs_browser: f = m(f)
    return f


def test_trim_keeps_what_the_widget_needs(tmp_path):
    "The trimmed copies keep the chapter's own cells, in order, ending with the widget cell, and skip the expensive demos."
    s = trim_notebook(NBS/'18_sampling.ipynb', tmp_path/'s.ipynb', 'sampling_widget(dm)')
    assert 'sampling_widget(dm)' in s[-1] and any("load_model('demo'" in c for c in s)
    assert any('def sampling_widget' in c for c in s) and not any('compare_samplers(dm' in c for c in s)
    t = trim_notebook(NBS/'13_schedule.ipynb', tmp_path/'t.ipynb', 'timestep_widget(x0)')
    assert 'timestep_widget(x0)' in t[-1] and any('x0 =' in c for c in t) and any('def timestep_widget' in c for c in t)
    allsrc = [''.join(c['source']) for c in json.loads((NBS/'18_sampling.ipynb').read_text())['cells']]
    assert [allsrc.index(c) for c in s] == sorted(allsrc.index(c) for c in s)

@_browser
def test_schedule_timestep_slider(browser, lab, shots):
    "Chapter 13: moving the t slider from 800 (noise) to 0 brings the clean slice back."
    _slider_changes_image(browser, lab, shots, '13_schedule.ipynb', 'timestep_widget(x0)', 't', 'Home', 'img.widget-image',
                          'schedule_t', min_frac=0.2, expect='t = 0:')

@_browser
def test_sampling_guidance_slider(browser, lab, shots):
    """Chapter 18: Home moves the guidance slider from 7 to 0, a setting the kernel has not sampled yet: the grid is resampled without the class.
    (A small move, 7 to 4.5, changes too little to test: the shipped model keeps the class at both.)"""
    _slider_changes_image(browser, lab, shots, '18_sampling.ipynb', 'sampling_widget(dm)', 'guidance', 'Home', 'img.widget-image',
                          'sampling_guidance', min_frac=0.05, expect='w = 0,')

@_browser
def test_guidance_method_picker(browser, lab, shots):
    """Chapter 18: choosing plain CFG in the method picker (the widget opens on APG) resamples the same seeds under the other method,
    a setting the kernel has not sampled yet: at w = 7 the two give visibly different slices."""
    _slider_changes_image(browser, lab, shots, '18_sampling.ipynb', "sampling_widget(dm, guidance_method='apg')", 'method', None, 'img.widget-image',
                          'guidance_method', min_frac=0.05, expect=', cfg, ', pick='cfg')

@_browser
def test_data_slice_browser(browser, lab, shots):
    "Chapter 10: End moves the slice slider from the middle of the template to its last slice, above the head."
    _slider_changes_image(browser, lab, shots, '10_data.ipynb', "slice_browser({'MNI152 2009 T1': mni})", 'slice', 'End',
                          'img.widget-image', 'data_slice', min_frac=0.05, expect='slice ')

@_browser
def test_trajectory_scrubber(browser, lab, shots):
    "Chapter 18: End moves the step slider from the starting noise to the last step: the sample appears."
    _slider_changes_image(browser, lab, shots, '18_sampling.ipynb', 'trajectory_widget(torch.cat(', 'step', 'End',
                          'img.widget-image', 'trajectory_step', min_frac=0.2, expect='')
