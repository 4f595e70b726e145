"""The reader study end to end: `reader-study make` on the shipped demo model's samples and the built-in slices, the page driven in
headless Chromium by keyboard (answers, resume after a reload, save), `reader-study score` on the saved files, and the report's
numbers checked against a hand computation on the same answers.

The browser tests need Debian's `chromium` and the `playwright` Python package (no browser download); they are skipped without them.
"""
import json, math, shutil
from pathlib import Path
import numpy as np
import pytest
from conftest import cli, needs_browser
N = 8

@pytest.fixture(scope='module')
def study(tmp_path_factory, demo_fake):
    "The session's demo samples (conftest: 4 steps, fast, not pretty) and an 8-image study made from them and the built-in slices."
    d = tmp_path_factory.mktemp('rs')
    shutil.copytree(demo_fake, d/'fake')
    r = cli('reader-study', 'make', '--real', 'mni152', '--fake', d/'fake', '--n', N, '--seed', 5, '--out', d/'study')
    assert r.returncode == 0, r.stderr
    assert 'study_KEY.json' in r.stdout
    return d

def _chunks(data:bytes)->list:
    out, i = [], 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], 'big'); out.append(data[i + 4:i + 8].decode('latin-1')); i += 12 + n
    return out

def test_study_is_blind_and_offline(study):
    s, key = study/'study', json.loads((study/'study_KEY.json').read_text())
    files = sorted(str(p.relative_to(s)) for p in s.rglob('*') if p.is_file())
    assert files == [f'img/{i:03d}.png' for i in range(1, N + 1)] + ['index.html', 'study.json']
    assert not any(p.name.endswith('KEY.json') for p in s.rglob('*'))
    page = (s/'index.html').read_text()
    for bad in ('http://', 'https://', '<link', '@import', 'src="//', 'fonts.'):
        assert bad not in page, bad
    pub = json.loads((s/'study.json').read_text())
    assert pub['images'] == [dict(id=f'{i:03d}', src=f'img/{i:03d}.png') for i in range(1, N + 1)]
    assert json.dumps(pub['images']) in page.replace('<\\/', '</') or all(i['src'] in page for i in pub['images'])
    truth = [i['truth'] for i in key['items']]
    assert truth.count('real') == truth.count('synthetic') == N//2
    for c in key['class_names']:  # balanced per class
        assert sum(1 for i in key['items'] if i['class_name'] == c and i['truth'] == 'real') == \
               sum(1 for i in key['items'] if i['class_name'] == c and i['truth'] == 'synthetic')
    from PIL import Image
    for i in key['items']:
        b = (s/'img'/f"{i['image']}.png").read_bytes()
        assert _chunks(b) == ['IHDR', 'IDAT', 'IEND']  # no text, time, gamma or pHYs chunk on either kind
        with Image.open(s/'img'/f"{i['image']}.png") as im: assert (im.mode, im.size) == ('L', (64, 64))
    assert key['seed'] == 5 and key['image_size'] == 64

def test_make_refuses_bad_input(study, tmp_path):
    before = sorted(p.name for p in (study/'study').rglob('*'))
    r = cli('reader-study', 'make', '--fake', study/'fake', '--n', N, '--out', study/'study')
    assert r.returncode == 2 and 'never replaced' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in (study/'study').rglob('*')) == before
    r = cli('reader-study', 'make', '--fake', study/'fake', '--n', 7, '--out', tmp_path/'odd')
    assert r.returncode == 2 and '--n must be an even' in r.stderr and not (tmp_path/'odd').exists()
    r = cli('reader-study', 'make', '--fake', study/'fake', '--n', 100, '--out', tmp_path/'big')
    assert r.returncode == 2 and 'the study needs 50' in r.stderr and not (tmp_path/'big').exists() and not (tmp_path/'big_KEY.json').exists()

def _plan(i:int, reader:str)->dict:
    "The answer a scripted reader gives to the i-th image (0-based)."
    if reader == 'AB': return dict(answer='synthetic' if i % 3 == 0 else 'real', confidence=1 + i % 5, plausibility=1 + (2*i) % 5)
    return dict(answer='synthetic' if i % 2 else 'real', confidence=5 - i % 5, plausibility=1 + (i + 1) % 5)

def _answer_by_keyboard(page, reader:str, start:int=0, stop:int=N):
    for i in range(start, stop):
        assert page.inner_text('#counter') == f'Image {i + 1} of {N}'
        a = _plan(i, reader)
        page.keyboard.press('s' if a['answer'] == 'synthetic' else 'r')
        page.keyboard.press(f"Digit{a['confidence']}")
        page.keyboard.press(f"Shift+Digit{a['plausibility']}")
        if i == 1:  # a note: N focuses the field, Escape leaves it
            page.keyboard.press('n'); page.keyboard.type('odd ventricles'); page.keyboard.press('Escape')
        page.keyboard.press('Enter')

def _take(browser, study_dir:Path, reader:str, out:Path, resume_check:bool=False)->Path:
    "One reader takes the study in a fresh browser profile; returns the saved answers file."
    ctx = browser.new_context(accept_downloads=True, viewport={'width': 1200, 'height': 900})
    remote = []
    ctx.route('**/*', lambda route: (route.continue_() if route.request.url.startswith('file:') else (remote.append(route.request.url), route.abort())))
    page = ctx.new_page()
    errors = []
    page.on('pageerror', lambda e: errors.append(str(e)))
    try:
        page.goto((study_dir/'index.html').as_uri())
        page.wait_for_function("document.getElementById('image').complete && document.getElementById('image').naturalWidth === 64")
        assert page.inner_text('#progress-text') == f'0 of {N} answered'
        if resume_check:
            _answer_by_keyboard(page, reader, 0, N//2)
            page.reload()  # answers and position come back from localStorage
            assert page.inner_text('#progress-text') == f'{N//2} of {N} answered'
            assert page.inner_text('#counter') == f'Image {N//2 + 1} of {N}'
            _answer_by_keyboard(page, reader, N//2, N)
        else: _answer_by_keyboard(page, reader)
        assert page.inner_text('#progress-text') == f'{N} of {N} answered'
        assert page.evaluate("document.getElementById('bar').value") == N
        page.click('#initials'); page.keyboard.type(reader.lower()); page.keyboard.press('Enter')
        with page.expect_download() as dl: page.click('#save')
        d = dl.value
        assert d.suggested_filename == f'answers_{reader}.json'
        path = out/d.suggested_filename
        d.save_as(path)
        assert 'all images answered' in page.inner_text('#status')
        page.screenshot(path=str(out/f'page_{reader}.png'))
    finally: ctx.close()
    assert not errors, errors
    assert not remote, f'the page tried to reach the network: {remote}'
    return path

def _wilson(k, n, z=1.959964):
    p = k/n
    return ((p + z*z/(2*n) - z*math.sqrt(p*(1 - p)/n + z*z/(4*n*n)))/(1 + z*z/n), (p + z*z/(2*n) + z*math.sqrt(p*(1 - p)/n + z*z/(4*n*n)))/(1 + z*z/n))

def _binom_two_sided(k, n):
    pmf = [math.comb(n, j)/2**n for j in range(n + 1)]
    return min(1.0, sum(p for p in pmf if p <= pmf[k]*(1 + 1e-7)))

def _hand(key, answers:dict)->dict:
    "The figures by hand from (reader -> image -> answer dict) and the key."
    truth = {i['image']: i['truth'] for i in key['items']}
    rows = [(truth[im], a) for per in answers.values() for im, a in per.items()]
    n, k = len(rows), sum(a['answer'] == t for t, a in rows)
    syn, real = [a for t, a in rows if t == 'synthetic'], [a for t, a in rows if t == 'real']
    sc = lambda a: a['confidence']*(1 if a['answer'] == 'synthetic' else -1)
    pairs = [(sc(s) > sc(r)) + 0.5*(sc(s) == sc(r)) for s in syn for r in real]
    return dict(n=n, correct=k, accuracy=k/n, ci=_wilson(k, n), p=_binom_two_sided(k, n), auc=sum(pairs)/len(pairs),
                sensitivity=sum(a['answer'] == 'synthetic' for a in syn)/len(syn), specificity=sum(a['answer'] == 'real' for a in real)/len(real),
                plaus_real=np.mean([a['plausibility'] for a in real]), plaus_syn=np.mean([a['plausibility'] for a in syn]))

def _check(rep, h):
    s = rep['pooled']
    assert (s['n'], s['correct'], s['unanswered']) == (h['n'], h['correct'], 0)
    assert s['accuracy'] == pytest.approx(h['accuracy'])
    assert s['accuracy_ci95'] == pytest.approx(h['ci'], abs=1e-9)
    assert s['p_binomial'] == pytest.approx(h['p'], rel=1e-6)
    assert s['auc'] == pytest.approx(h['auc'])
    assert (s['sensitivity'], s['specificity']) == pytest.approx((h['sensitivity'], h['specificity']))
    assert rep['plausibility']['real']['mean'] == pytest.approx(h['plaus_real'])
    assert rep['plausibility']['synthetic']['mean'] == pytest.approx(h['plaus_syn'])

def _browser_test(f):
    for m in needs_browser: f = m(f)
    return f

@_browser_test
def test_page_by_keyboard_then_score(study, browser, tmp_path):
    s, key = study/'study', json.loads((study/'study_KEY.json').read_text())
    f_ab = _take(browser, s, 'AB', tmp_path, resume_check=True)
    f_cd = _take(browser, s, 'CD', tmp_path)
    doc = json.loads(f_ab.read_text())
    assert (doc['study'], doc['reader'], doc['n_images']) == (key['study'], 'AB', N)
    got = {a['image']: a for a in doc['answers']}
    ids = [f'{i:03d}' for i in range(1, N + 1)]
    for i, im in enumerate(ids):  # what the keyboard typed is what the file holds
        assert {k: got[im][k] for k in ('answer', 'confidence', 'plausibility')} == _plan(i, 'AB')
    assert got['002']['note'] == 'odd ventricles'

    r = cli('reader-study', 'score', s, f_ab, '--out', tmp_path/'rep1')
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path/'rep1'/'report.json').read_text())
    _check(rep, _hand(key, {'AB': {im: _plan(i, 'AB') for i, im in enumerate(ids)}}))
    assert rep['agreement'] is None
    md = (tmp_path/'rep1'/'report.md').read_text()
    assert f"order seed {key['seed']}" in md and '64x64' in md and 'AB' in md
    assert sorted(p.name for p in (tmp_path/'rep1').iterdir()) == ['report.json', 'report.md', 'scores.png']

    r = cli('reader-study', 'score', s, f_ab, f_cd, '--out', tmp_path/'rep2')
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path/'rep2'/'report.json').read_text())
    plans = {q: {im: _plan(i, q) for i, im in enumerate(ids)} for q in ('AB', 'CD')}
    _check(rep, _hand(key, plans))
    a, b = [[plans[q][im]['answer'] for im in ids] for q in ('AB', 'CD')]
    po = np.mean([x == y for x, y in zip(a, b)])
    pe = sum(np.mean([x == c for x in a])*np.mean([y == c for y in b]) for c in ('real', 'synthetic'))
    assert rep['agreement']['method'] == "Cohen's kappa"
    assert rep['agreement']['kappa'] == pytest.approx((po - pe)/(1 - pe))

def test_score_three_readers_and_bad_answers(study, tmp_path):
    s, key = study/'study', json.loads((study/'study_KEY.json').read_text())
    ids = [i['image'] for i in key['items']]
    g = np.random.default_rng(0)
    plans = {q: {im: dict(answer=str(g.choice(['real', 'synthetic'])), confidence=int(g.integers(1, 6)), plausibility=int(g.integers(1, 6)))
                 for im in ids} for q in ('AB', 'CD', 'EF')}
    files = []
    for q, p in plans.items():
        f = tmp_path/f'answers_{q}.json'
        f.write_text(json.dumps(dict(format='mri_diffusion_nb.reader_answers/1', study=key['study'], reader=q, saved_at='x',
                                     answers=[dict(image=im, **a) for im, a in p.items()])))
        files.append(f)
    r = cli('reader-study', 'score', s, *files, '--out', tmp_path/'rep')
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path/'rep'/'report.json').read_text())
    _check(rep, _hand(key, plans))
    # Fleiss' kappa by hand: 3 ratings per image, 2 categories
    t = np.array([[sum(plans[q][im]['answer'] == c for q in plans) for c in ('real', 'synthetic')] for im in ids], float)
    pj = t.sum(0)/t.sum(); Pi = ((t*t).sum(1) - 3)/(3*2)
    assert rep['agreement']['method'] == "Fleiss' kappa"
    assert rep['agreement']['kappa'] == pytest.approx((Pi.mean() - (pj**2).sum())/(1 - (pj**2).sum()))
    per = rep['per_class']
    assert sum(v['n'] for v in per.values()) == 3*N
    # bad answers: another study, a value out of range, a duplicate reader; one line, status 2, no report
    bad = json.loads(files[0].read_text())
    for change, msg in ((dict(study='0000'), 'not to this study'),
                        (dict(answers=[dict(bad['answers'][0], confidence=9)]), 'confidence must be 1 to 5')):
        f = tmp_path/'bad.json'; f.write_text(json.dumps(dict(bad, **change)))
        r = cli('reader-study', 'score', s, f, '--out', tmp_path/'badrep')
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path/'badrep').exists()
    r = cli('reader-study', 'score', s, files[0], files[0], '--out', tmp_path/'badrep')
    assert r.returncode == 2 and 'same reader' in r.stderr and not (tmp_path/'badrep').exists()


def test_key_apart_and_killed_make_reruns(study, tmp_path):
    "Issue 29, kinds 1-2: a key inside the study is refused; a killed run's key and temp folder give way to the rerun."
    r = cli('reader-study', 'make', '--fake', study/'fake', '--n', N, '--out', tmp_path/'s', '--key', tmp_path/'s'/'KEY.json')
    assert r.returncode == 2 and 'kept apart' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path/'s').exists()
    import subprocess
    dead = subprocess.Popen(['true']); dead.wait()
    (tmp_path/'s_KEY.json').write_text(json.dumps(dict(format='mri_diffusion_nb.reader_key/1', folder=str(tmp_path/'s'))))
    (tmp_path/f'.tmp-s-{dead.pid}-abcdef'/'img').mkdir(parents=True)  # what a kill -9 during the folder write leaves
    r = cli('reader-study', 'make', '--fake', study/'fake', '--n', N, '--seed', 1, '--out', tmp_path/'s')
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['s', 's_KEY.json']
    assert json.loads((tmp_path/'s_KEY.json').read_text())['seed'] == 1
    r = cli('reader-study', 'make', '--fake', study/'fake', '--n', N, '--out', tmp_path/'t', '--key', tmp_path/'s_KEY.json')
    assert r.returncode == 2 and 'truth key already exists' in r.stderr  # a key of another study is never replaced


def test_classes_paired_by_name(study, tmp_path):
    "Kind 6: generated images whose class names differ from the real slices' are refused, not paired by index."
    shutil.copytree(study/'fake', tmp_path/'fake')
    man = tmp_path/'fake'/'manifest.csv'
    man.write_text(man.read_text().replace('axial 0-25%', 'tumour'))
    r = cli('reader-study', 'make', '--fake', tmp_path/'fake', '--n', N, '--out', tmp_path/'s')
    assert r.returncode == 2 and 'different classes' in r.stderr and 'manifest.csv' in r.stderr
    assert not (tmp_path/'s').exists() and not (tmp_path/'s_KEY.json').exists()


def test_tell_detector_refuses_then_warns(study, tmp_path):
    "Issue 26: 4-step samples are told from the template by image statistics: refused, or written with a warning."
    r = cli('reader-study', 'make', '--fake', study/'fake', '--n', 16, '--seed', 0, '--out', tmp_path/'s')
    assert r.returncode == 2 and 'a machine tells' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path/'s').exists() and not (tmp_path/'s_KEY.json').exists()
    r = cli('reader-study', 'make', '--fake', study/'fake', '--n', 16, '--seed', 0, '--out', tmp_path/'s', '--allow-tells')
    assert r.returncode == 0 and 'WARNING' in r.stdout, r.stderr
    t = json.loads((tmp_path/'s_KEY.json').read_text())['tell_check']
    assert t['tells'] and t['auc_ci95'][0] > 0.5 and (t['n_real'], t['n_synthetic']) == (8, 8)


def test_key_and_answers_checked(study, tmp_path):
    "Kind 7: a key with missing or mistyped fields and an infinite confidence are one-line errors, not tracebacks."
    key = json.loads((study/'study_KEY.json').read_text())
    for bad, word in ((dict(key, n='8'), "'n'"), (dict(key, items=[{**key['items'][0], 'truth': 'fake'}]), 'truth'),
                      (dict(key, items=[{'image': '001'}]), "'truth'"), ({**key, 'items': key['items'][:3]}, 'lists 3')):
        (tmp_path/'k.json').write_text(json.dumps(bad))
        r = cli('reader-study', 'score', study/'study', tmp_path/'a.json', '--key', tmp_path/'k.json', '--out', tmp_path/'r')
        assert r.returncode == 2 and word in r.stderr and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)
    ans = dict(format='mri_diffusion_nb.reader_answers/1', study=key['study'], reader='XY',
               answers=[dict(image=key['items'][0]['image'], answer='real', confidence=float('inf'))])
    (tmp_path/'a.json').write_text(json.dumps(ans))
    r = cli('reader-study', 'score', study/'study', tmp_path/'a.json', '--key', study/'study_KEY.json', '--out', tmp_path/'r')
    assert r.returncode == 2 and 'confidence must be 1 to 5' in r.stderr and not (tmp_path/'r').exists()
