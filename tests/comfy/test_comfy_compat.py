"""Newer ComfyUI versions: node schemas set their optional newer fields (has_intermediate_output on the nodes that show
a keyframe strip) only where the running ComfyUI's io.Schema knows them (nodes/types.py `node_schema`).

The check runs in its own process (importing ComfyUI parses arguments and sets up devices process-wide): the pack's
schemas on this ComfyUI (0.3.75: no such field, and no TypeError), then on a stand-in for a newer io.Schema (the same
dataclass with the newer fields added).
"""
from __future__ import annotations

import json
import subprocess

import pytest

from comfy_fixtures import COMFY_DIR, PYTHON, REPO

pytestmark = pytest.mark.comfy

STRIP_NODES = {"MMPL_MicroPlanner", "MMPL_MacroChain", "MMPL_KeyframeEditor"}

PROBE = r"""
import dataclasses, json, sys
comfy_dir, parent = sys.argv[1:3]
sys.path[0:0] = [comfy_dir, parent]
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options
comfy.options.enable_args_parsing()
from comfy_api.latest import io
import mmpl_long_video.nodes as pack
from mmpl_long_video.nodes.types import node_schema

def flags():
    return {node.define_schema().node_id: getattr(node.define_schema(), "has_intermediate_output", None)
            for node in pack.NODES}

result = {"fields": [f.name for f in dataclasses.fields(io.Schema)], "this": flags()}

@dataclasses.dataclass
class NewerSchema(io.Schema):
    has_intermediate_output: bool = False
    search_aliases: list = dataclasses.field(default_factory=list)

io.Schema = NewerSchema
result["newer"] = flags()
try:
    node_schema(node_id="x", display_name="x", category="x", has_intermediate_outptu=True)
    result["misspelt"] = "accepted"
except TypeError:
    result["misspelt"] = "TypeError"
print("RESULT " + json.dumps(result))
"""


def test_newer_schema_fields_only_where_supported(comfy_install, tmp_path):
    (tmp_path / "mmpl_long_video").symlink_to(REPO, target_is_directory=True)
    run = subprocess.run([str(PYTHON), "-c", PROBE, str(COMFY_DIR), str(tmp_path)], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])

    supported = "has_intermediate_output" in result["fields"]
    for node, flag in result["this"].items():
        assert flag == ((node in STRIP_NODES) if supported else None), (node, flag)
    assert len(result["newer"]) == 14
    for node, flag in result["newer"].items():
        assert flag is (node in STRIP_NODES), (node, flag)
    assert result["misspelt"] == "TypeError"  # only the known newer fields are left out, never a typo
