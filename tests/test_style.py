"""Library code reads as prose: no line over 120 characters and no `;`-joined statements (tools/code_style.py)."""
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_library_lines_and_semicolons():
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'code_style.py')], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]


def test_the_counter_finds_both(tmp_path, monkeypatch):
    "The counter is not blind: a long line and a `;` in a module are both reported."
    sys.path.insert(0, str(ROOT/'tools'))
    import code_style
    p = tmp_path/'m.py'
    p.write_text('"doc"\n__all__ = ["' + 'x'*130 + '"]\na = 1; b = 2\ns = "' + 'y'*130 + '"\nt = "a;b"\n')
    kinds = [(n, k) for n, k, _ in code_style.findings(p)]
    assert kinds == [(3, 'semicolon'), (4, 'long')]
