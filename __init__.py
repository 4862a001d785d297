"""ComfyUI entry point of the MMPL Long Video pack: registers the nodes (V3 API). The engine is `mmpl_core`."""
from .nodes import comfy_entrypoint

WEB_DIRECTORY = "./web"

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
