"""ComfyUI nodes (V3 schema): thin adapters from ComfyUI types to `mmpl_core`. One file per feature."""
from comfy_api.latest import ComfyExtension, io


class MMPLExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # The node files arrive with the node-pack work; the extension is registered now so the pack loads cleanly.
        return []


async def comfy_entrypoint() -> MMPLExtension:
    return MMPLExtension()
