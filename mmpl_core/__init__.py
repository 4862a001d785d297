"""MMPL Long Video engine: Macro-from-Micro Planning over Wan2.1. Imports nothing from ComfyUI."""
__version__ = "0.1.0"
