"""Bring ComfyUI workflows in: `editgraph import comfy WORKFLOW.json` writes an editgraph/1 document.

Reads ComfyUI's API format (the /prompt body, or its "prompt" field), its UI format (what the
editor saves), and a PNG ComfyUI wrote (its "prompt" text chunk, else its "workflow" chunk). UI
documents are first turned into the API form (ui.py), so both forms of a workflow import to the
same document; api.py translates that. Anything that cannot be translated is listed (node id,
class_type, why): the import fails, or with partial=True leaves it out and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editgraph.sharing.comfy.api import Issue, Translator
from editgraph.sharing.comfy.ui import ComfyFormatError, ui_to_api
from editgraph.sharing.metadata import container
from editgraph.errors import EditgraphError

__all__ = ["ComfyFormatError", "ImportResult", "Issue", "NothingImported", "import_comfy", "read_comfy"]


class NothingImported(EditgraphError):
    """Everything in the workflow was left out."""


@dataclass
class ImportResult:
    document: dict[str, Any]
    issues: list[Issue] = field(default_factory=list)
    source_format: str = ""  # "api" or "ui"

    @property
    def left_out(self) -> list[Issue]:
        return [i for i in self.issues if i.action != "approximated"]


def read_comfy(path: str | Path) -> Any:
    """The JSON a ComfyUI file holds: a .json file, or a PNG's "prompt" (else "workflow") chunk."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if container(head) == "png":
        from PIL import Image

        with Image.open(path) as im:
            text = getattr(im, "text", None) or im.info
            raw = text.get("prompt") or text.get("workflow")
        if not raw:
            raise ComfyFormatError(f"{path}: this PNG carries no ComfyUI 'prompt' or 'workflow' text chunk")
    else:
        raw = path.read_text(encoding="utf-8-sig")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ComfyFormatError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _api_form(data: Any) -> tuple[dict[str, dict[str, Any]], str]:
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        return ui_to_api(data), "ui"
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):  # a /prompt request body
        data = data["prompt"]
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return {str(k): v for k, v in data.items()}, "api"
    raise ComfyFormatError(
        "not a ComfyUI workflow: expected the UI format (an object with a 'nodes' list) or the API format "
        "(an object of node ids, each with 'class_type' and 'inputs')"
    )


def import_comfy(data: Any, *, name: str = "comfy-import", partial: bool = False) -> ImportResult:
    """Translate a ComfyUI workflow (parsed JSON) into an editgraph/1 document. Raises
    ComfyFormatError for a file that is not one; returns the issues found (fail on them unless
    partial, see the CLI)."""
    from editgraph.nodes.registry import load_builtin_nodes

    try:
        prompt, fmt = _api_form(data)
        t = Translator(prompt, partial)
        t.translate()
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        # a field of the wrong shape somewhere in a hand-edited or damaged file
        raise ComfyFormatError(f"malformed ComfyUI workflow: {type(exc).__name__}: {exc}") from None
    except RecursionError:
        raise ComfyFormatError("malformed ComfyUI workflow: its links nest too deeply (a chain of thousands of nodes?)") from None
    registry = load_builtin_nodes()
    nodes = {}
    for nid, spec in t.nodes.items():
        nodes[nid] = {"type": spec["type"], "version": registry[spec["type"]].version, **{k: v for k, v in spec.items() if k != "type"}}
    doc = {
        "format": "editgraph/1",
        "name": name,
        "description": f"Imported from the ComfyUI workflow {name}.",
        "params": dict(sorted(t.params.items())),
        "nodes": nodes,
    }
    return ImportResult(doc, t.issues, fmt)
