"""Pictures of a workflow: text, Mermaid, Graphviz DOT, and a PNG drawn with Pillow.

Every node is labelled with its id and type and, given a run report's statuses, whether it ran or
came from the cache. Drawing works on the document alone (no node registry, no binding), so a
workflow with unknown types or unset params can still be looked at.
"""

from __future__ import annotations

import json
from typing import Any


from editgraph.graph import topology
from editgraph.graph.document import Workflow

STATUS_COLOURS = {"ran": "#c8f0c8", "cached": "#dcdcdc", "failed": "#f4b4b4", None: "#ffffff"}
_BORDER = {"ran": "#2e7d32", "cached": "#757575", "failed": "#c62828", None: "#37474f"}


def edges(workflow: Workflow) -> list[tuple[str, str, str, str | None]]:
    """(source node, target node, target input name, source output name or None for the primary)."""
    out = []
    for nid, spec in workflow.nodes.items():
        for name, ref in spec.inputs.items():
            src, _, output = ref.partition(".")
            out.append((src, nid, name, output or None))
    return out


def layers(workflow: Workflow) -> list[list[str]]:
    """Nodes by topological generation (sources first); a cyclic document falls back to one layer."""
    pairs = [(src, dst) for src, dst, _, _ in edges(workflow)]
    return topology.generations(workflow.nodes, pairs) or [list(workflow.nodes)]


def _order(workflow: Workflow) -> list[str]:
    return [n for layer in layers(workflow) for n in layer]


def _fmt_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# --- text ---------------------------------------------------------------------------------------


def to_text(workflow: Workflow, status: dict[str, str] | None = None) -> str:
    status = status or {}
    lines = [f"{workflow.name or '(unnamed workflow)'}" + (f": {workflow.description}" if workflow.description else "")]
    if workflow.params:
        lines.append("params:")
        for name, spec in workflow.params.items():
            default = f" = {_fmt_value(spec.default)}" if not spec.required else " (required)"
            lines.append(f"  {name}: {spec.type}{default}" + (f"  # {spec.description}" if spec.description else ""))
    consumers: dict[str, list[str]] = {n: [] for n in workflow.nodes}
    for src, dst, name, output in edges(workflow):
        consumers.setdefault(src, []).append(f"{dst}.{name}" + (f" (from {output})" if output else ""))
    lines.append(f"nodes ({len(workflow.nodes)}, each after its inputs):")
    width = max((len(n) for n in workflow.nodes), default=0)
    for nid in _order(workflow):
        spec = workflow.nodes[nid]
        mark = f"  [{status[nid]}]" if nid in status else ""
        lines.append(f"  {nid:<{width}}  {spec.type}{mark}")
        for name, ref in spec.inputs.items():
            lines.append(f"  {'':<{width}}    <- {name}: {ref}")
        for key, value in spec.params.items():
            lines.append(f"  {'':<{width}}    {key} = {_fmt_value(value)}")
        if consumers.get(nid):
            lines.append(f"  {'':<{width}}    -> {', '.join(consumers[nid])}")
    return "\n".join(lines) + "\n"


# --- Mermaid and DOT ----------------------------------------------------------------------------


def _safe_id(nid: str) -> str:
    return "n_" + nid.replace("-", "_")


def to_mermaid(workflow: Workflow, status: dict[str, str] | None = None) -> str:
    status = status or {}
    lines = ["flowchart TD"]
    for nid in _order(workflow):
        label = f"{nid}<br/><i>{workflow.nodes[nid].type}</i>" + (f"<br/>{status[nid]}" if nid in status else "")
        lines.append(f'  {_safe_id(nid)}["{label.replace(chr(34), "#quot;")}"]')
    for src, dst, name, output in edges(workflow):
        text = name if output is None else f"{output} → {name}"
        lines.append(f"  {_safe_id(src)} -->|{text}| {_safe_id(dst)}")
    for state in ("ran", "cached", "failed"):
        members = [_safe_id(n) for n in workflow.nodes if status.get(n) == state]
        if members:
            lines.append(f"  classDef {state} fill:{STATUS_COLOURS[state]},stroke:{_BORDER[state]}")
            lines.append(f"  class {','.join(members)} {state}")
    return "\n".join(lines) + "\n"


def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(workflow: Workflow, status: dict[str, str] | None = None) -> str:
    status = status or {}
    lines = [f"digraph {_dot_str(workflow.name or 'workflow')} {{", "  rankdir=TB;", '  node [shape=box, style="rounded,filled", fontname="Helvetica"];']
    for nid in _order(workflow):
        state = status.get(nid)
        label = f"{nid}\\n{workflow.nodes[nid].type}" + (f"\\n{state}" if state else "")
        lines.append(f'  {_dot_str(nid)} [label="{label}", fillcolor="{STATUS_COLOURS[state]}", color="{_BORDER[state]}"];')
    for src, dst, name, output in edges(workflow):
        text = name if output is None else f"{output} -> {name}"
        lines.append(f"  {_dot_str(src)} -> {_dot_str(dst)} [label={_dot_str(text)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- PNG ----------------------------------------------------------------------------------------


def to_png(workflow: Workflow, status: dict[str, str] | None = None) -> bytes:
    """A layered drawing: one row per topological generation, arrows from producer to consumer."""
    import io
    import math

    from PIL import Image, ImageDraw, ImageFont

    status = status or {}
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    rows = layers(workflow)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def label_lines(nid: str) -> list[tuple[str, Any]]:
        out = [(nid, font), (workflow.nodes[nid].type, small)]
        if nid in status:
            out.append((status[nid], small))
        return out

    # 1. box sizes from their text
    pad, line_h, gap_x, gap_y, margin = 10, 18, 40, 60, 30
    size = {}
    for nid in workflow.nodes:
        w = max(measure.textlength(t, font=f) for t, f in label_lines(nid))
        size[nid] = (int(w) + 2 * pad, len(label_lines(nid)) * line_h + 2 * pad)
    # 2. place each generation as a centred row
    row_w = [sum(size[n][0] for n in row) + gap_x * (len(row) - 1) for row in rows]
    row_h = [max(size[n][1] for n in row) for row in rows]
    width = int(max(row_w, default=100)) + 2 * margin
    height = int(sum(row_h) + gap_y * (len(rows) - 1)) + 2 * margin
    box = {}
    y = margin
    for row, rw, rh in zip(rows, row_w, row_h):
        x = margin + (width - 2 * margin - rw) / 2
        for nid in row:
            w, h = size[nid]
            box[nid] = (x, y + (rh - h) / 2, x + w, y + (rh - h) / 2 + h)
            x += w + gap_x
        y += rh + gap_y
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    # 3. arrows first, so boxes sit on top of their ends
    for src, dst, name, _ in edges(workflow):
        if src not in box or dst not in box:
            continue
        sx0, sy0, sx1, sy1 = box[src]
        dx0, dy0, dx1, dy1 = box[dst]
        start = ((sx0 + sx1) / 2, sy1)
        end = ((dx0 + dx1) / 2, dy0)
        if dy0 <= sy1:  # same or earlier row (only in a cyclic document): go side to side
            start, end = (sx1, (sy0 + sy1) / 2), (dx0, (dy0 + dy1) / 2)
        draw.line([start, end], fill="#455a64", width=2)
        angle = math.atan2(end[1] - start[1], end[0] - start[0])
        head = [end] + [(end[0] - 10 * math.cos(angle + s), end[1] - 10 * math.sin(angle + s)) for s in (0.4, -0.4)]
        draw.polygon(head, fill="#455a64")
        mid = ((start[0] + end[0]) / 2 + 4, (start[1] + end[1]) / 2 - 7)
        draw.text(mid, name, fill="#607d8b", font=small)
    # 4. boxes with id, type and run status
    for nid, (x0, y0, x1, y1) in box.items():
        state = status.get(nid)
        draw.rounded_rectangle((x0, y0, x1, y1), radius=6, fill=STATUS_COLOURS.get(state, "white"), outline=_BORDER.get(state, "#37474f"), width=2)
        ty = y0 + pad
        for text, f in label_lines(nid):
            tw = measure.textlength(text, font=f)
            draw.text(((x0 + x1 - tw) / 2, ty), text, fill="black", font=f)
            ty += line_h
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def statuses_from_report(report: dict[str, Any]) -> dict[str, str]:
    """{node id: "ran" | "cached" | "failed"} from `editgraph run --report` JSON (or one batch row)."""
    return {nid: rec["status"] for nid, rec in report.get("nodes", {}).items() if isinstance(rec, dict) and "status" in rec}
