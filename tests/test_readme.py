"""README.md is the rendering of nbs/index.ipynb, and its commands are the ones CI runs."""
import subprocess, sys
from conftest import REPO

def test_readme_matches_index():
    r = subprocess.run([sys.executable, str(REPO/'tools'/'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def test_readme_has_exactly_two_commands():
    text = (REPO/'README.md').read_text()
    cmds = [l for l in text.splitlines() if l.startswith('pip install')]
    assert len(cmds) == 2, cmds
    assert cmds[1] == 'pip install -e ".[dev]" && nbdev_test --timing && pytest'
    ci = (REPO/'.ci'/'run').read_text()
    assert 'eval "$install"' in ci and 'eval "$tests"' in ci       # .ci/run runs the README's command, split into install and tests

def test_readme_relative_links_exist():
    "Chapter and file links in README.md resolve from the repository root (GitHub), not only from the site's nbs/."
    import re
    text = (REPO/'README.md').read_text()
    links = [l for l in re.findall(r'\]\(([^)#\s]+)\)', text) if not re.match(r'[a-z]+:', l)]
    assert any(l.startswith('nbs/') for l in links), links
    missing = [l for l in links if not (REPO/l).exists()]
    assert not missing, missing
