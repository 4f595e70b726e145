"""Synthetic brain MRI with class-conditional diffusion and classifier-free guidance."""
__version__ = "0.1.0"
