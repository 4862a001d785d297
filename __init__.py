"""ComfyUI entry point of the MMPL Long Video pack: registers the nodes (V3 API). The engine is `mmpl_core`."""
import importlib.util

WEB_DIRECTORY = "./web"

# ComfyUI always provides comfy_api. Outside ComfyUI (e.g. when pytest collects this folder as a package) there is
# nothing to register, and the engine stays importable on its own.
if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
