"""`python -m mri_diffusion_nb ...` (and `accelerate launch -m mri_diffusion_nb ...`) runs the `mri-diffusion`
command line."""
# Hand-written, like __init__.py: nbdev cannot export a `__main__` module from a chapter.
# The command line itself is nbs/30_cli.ipynb.
import sys
from mri_diffusion_nb.cli import main

if __name__ == '__main__': sys.exit(main())
