"""The documentation site, built and looked at: `nbdev_docs` (Quarto) on a scratch copy, pages opened in headless Chromium.

Checks that the lessons show the source they teach (cells exported with `#| exports`), and that every figure on the
chapter pages loads. Screenshots of the pages go to $MRI_DIFFUSION_SCREENSHOTS (default: the test's tmp_path).
Skipped where Quarto, Chromium or Playwright is absent; CI installs all three.
"""
import functools, html.parser, http.server, os, re, shutil, subprocess, threading
from pathlib import Path
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, _pw

REPO = Path(__file__).resolve().parents[1]
QUARTO = shutil.which('quarto')
pytestmark = [
    pytest.mark.browser, pytest.mark.slow,
    pytest.mark.skipif(QUARTO is None, reason='Quarto is not installed (see the README; CI installs it)'),
    pytest.mark.skipif(CHROMIUM is None or _pw is None, reason='no chromium browser or playwright package'),
]

# page -> source the reader must see on it
MUST_SHOW = {
    'schedule.html': ['def q_sample', 'def pred_x0', 'def make_betas'],
    'reverse.html': ['def posterior', 'def ddpm_step', 'def ddim_step', 'def dpmpp_2m_step'],
    'training.html': ['def diffusion_loss', 'def ema_update_'],
    'sampling.html': ['def guide', 'def guided_pair', 'def make_scheduler', 'def _denoise', 'def sample'],
    'guidance.html': ['def step_scale', 'def rescale_cfg', 'def apg_cfg', 'def cfgpp_inputs', 'def threshold_settings', 'def combine'],
    'frechet.html': ['def frechet_distance', 'def gaussian_stats'],
    'paired.html': ['def ssim', 'def ms_ssim', 'def psnr'],
    'memorization.html': ['def diversity', 'def sample_pairs', 'def top_correlations', 'def memorization_audit'],
    'adherence.html': ['def class_adherence'],
}
PAGES = ['index.html', 'data.html', 'unet.html', 'schedule.html', 'reverse.html', 'training.html', 'sampling.html', 'guidance.html',
         'features.html', 'frechet.html', 'paired.html', 'memorization.html', 'adherence.html', 'report.html', 'runtime.html', 'generate.html']

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Build the site from a copy of the working tree (nbdev_docs rewrites README.md and index_files/)."
    root = tmp_path_factory.mktemp('site')/'repo'
    ignore = shutil.ignore_patterns('.git', '.ci-venv', '.ci-quarto', '_docs', '_proc', '__pycache__', '*.egg-info', '.ipynb_checkpoints')
    shutil.copytree(REPO, root, ignore=ignore, symlinks=True)
    subprocess.run(['git', 'init', '-q'], cwd=root, check=True)
    r = subprocess.run(['nbdev_docs'], cwd=root, capture_output=True, text=True, timeout=1200,
                       env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    docs = root/'_docs'
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(docs)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield docs, f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass

def test_pages_built(site):
    docs, _ = site
    missing = [p for p in PAGES if not (docs/p).exists()]
    assert not missing, sorted(p.name for p in docs.glob('*.html'))

class _Links(html.parser.HTMLParser):
    "Relative links inside <main>."
    def __init__(self): super().__init__(); self.depth, self.links = 0, []
    def handle_starttag(self, tag, attrs):
        if tag == 'main': self.depth += 1
        href = dict(attrs).get('href')
        if self.depth and tag == 'a' and href and not re.match(r'[a-z]+:|#|//', href): self.links.append(href.split('#')[0])
    def handle_endtag(self, tag):
        if tag == 'main': self.depth -= 1

def test_links_resolve(site):
    "Every relative link on the chapter pages (the README's chapter table on index.html first) opens a page of the built site."
    docs, _ = site
    broken = {}
    for name in PAGES:
        parser = _Links(); parser.feed((docs/name).read_text())
        assert name != 'index.html' or len(parser.links) >= 15, parser.links  # the chapter table
        bad = [l for l in parser.links if l and not (docs/name).parent.joinpath(l).exists()]
        if bad: broken[name] = bad
    assert not broken, broken

def test_lessons_show_their_source_and_figures_load(site, tmp_path):
    docs, url = site
    shots = Path(os.environ.get('MRI_DIFFUSION_SCREENSHOTS', tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with _pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = b.new_page(viewport=dict(width=1280, height=900))
            for name in PAGES:
                page.goto(f'{url}/{name}', wait_until='load')
                code = page.eval_on_selector_all('pre code', 'els => els.filter(e => e.offsetParent !== null).map(e => e.innerText)')
                text = '\n'.join(code)
                for s in MUST_SHOW.get(name, []): assert s in text, f'{name}: the source of {s!r} is not shown'
                imgs = page.eval_on_selector_all('main img', 'els => els.map(e => [e.getAttribute("src"), e.complete && e.naturalWidth > 0])')
                broken = [src for src, ok in imgs if not ok and not (src or '').startswith('http')]
                assert not broken, f'{name}: figures that do not load: {broken}'
                page.screenshot(path=str(shots/f'{name}.png'), full_page=False)
                if name in MUST_SHOW:  # the first exported definition, scrolled into view
                    page.locator('pre code', has_text=MUST_SHOW[name][0]).first.scroll_into_view_if_needed()
                    page.screenshot(path=str(shots/f'{name}-source.png'))
        finally: b.close()
