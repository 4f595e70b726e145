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
    assert cmds[1] == 'pip install -e ".[dev]" && nbdev_test && pytest'
    assert 'eval "$cmd"' in (REPO/'.ci'/'run').read_text()
