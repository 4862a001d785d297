"""ComfyUI nodes (V3 schema): thin adapters from ComfyUI types to `mmpl_core`. One file per feature."""
from comfy_api.latest import ComfyExtension, io

from .keyframe_nodes import MMPLKeyframeEditor, MMPLKeyframePreview
from .keyframe_ui import register_routes
from .model_nodes import MMPLDemoTextEncode, MMPLDemoVAE, MMPLModelLoader, register_mmpl_folder
from .plan_io_nodes import MMPLLoadPlan, MMPLSavePlan
from .plan_nodes import MMPLMacroChain, MMPLMicroPlanner, MMPLSegmentPrompts
from .populate_nodes import MMPLContentPopulator, MMPLDecodeVideo, MMPLVAEBridge
from .schedule_nodes import MMPLMultiGPUScheduler

NODES = [
    MMPLModelLoader, MMPLDemoVAE, MMPLDemoTextEncode, MMPLSegmentPrompts, MMPLMicroPlanner, MMPLMacroChain,
    MMPLVAEBridge, MMPLMultiGPUScheduler, MMPLContentPopulator, MMPLDecodeVideo, MMPLKeyframePreview,
    MMPLKeyframeEditor, MMPLSavePlan, MMPLLoadPlan,
]


class MMPLExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_mmpl_folder()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> MMPLExtension:
    register_routes()  # here, not in on_load: ComfyUI 0.3.75 never calls on_load
    return MMPLExtension()
