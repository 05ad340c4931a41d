"""ComfyUI's UI format (what its editor saves: nodes, links, positional widget values) turned into
its API format (what its /prompt endpoint runs: {id: {class_type, inputs}}), as its frontend does
before queueing. The API form is what api.py translates, so both formats import alike.

Handled here, because the API format has none of them:
- widgets_values by position, named with the widget-order table (widgets.json);
- links as lists [id, origin, origin_slot, target, target_slot, type] or as objects;
- PrimitiveNode (a frontend node holding a value for a converted widget) becomes that value, and
  a seed whose control_after_generate is "randomize" becomes "random" (drawn at run time, recorded);
- Reroute nodes are followed to their source; muted nodes (mode 2) are dropped; bypassed nodes
  (mode 4) pass their input of the requested type through; Note / MarkdownNote are ignored;
- legacy group nodes ("workflow>name", definitions in extra.groupNodes) and subgraphs
  (definitions.subgraphs, instances typed by the subgraph's id) are expanded; their inner nodes get
  ids "instance:inner", as ComfyUI's own API export names them.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from editgraph.errors import EditgraphError

MUTED, BYPASSED = 2, 4
FRONTEND_ONLY = {"Note", "MarkdownNote", "PrimitiveNode", "Reroute"}
# Frontend widgets that are not inputs of the node on the server.
NOT_INPUTS = {"control_after_generate", "upload"}
SEED_INPUTS = {"seed", "noise_seed"}
SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = -10, -20


class ComfyFormatError(EditgraphError):
    """The file is not a ComfyUI workflow we can read (says where)."""


@cache
def widget_order() -> dict[str, tuple[str, ...]]:
    table = json.loads(resources.files("editgraph.sharing.comfy").joinpath("widgets.json").read_text(encoding="utf-8"))
    return {k: tuple(v) for k, v in table.items() if not k.startswith("_")}


def _links(raw: list[Any], where: str) -> dict[int, dict[str, Any]]:
    out = {}
    for link in raw or []:
        if isinstance(link, list) and len(link) >= 5:
            lid, origin, oslot, target, tslot = link[:5]
            out[int(lid)] = {"origin_id": origin, "origin_slot": oslot, "target_id": target, "target_slot": tslot,
                             "type": link[5] if len(link) > 5 else "*"}
        elif isinstance(link, dict) and "id" in link:
            out[int(link["id"])] = dict(link)
        else:
            raise ComfyFormatError(f"{where}: a link must be [id, origin, slot, target, slot, type] or an object, got {link!r}")
    return out


class _Graph:
    """One level of a UI document (the top level or a subgraph's body), flattened into `out`."""

    def __init__(self, conv: UiConverter, nodes: list[dict], links: dict[int, dict], prefix: str):
        self.conv = conv
        self.prefix = prefix
        self.nodes = {str(n["id"]): n for n in nodes}
        self.links = links
        # outer connections of a subgraph instance: its input slot -> source (filled by the caller)
        self.boundary_inputs: dict[int, Any] = {}
        self.group_outputs: list[Any] = []  # a legacy group node's outputs, in slot order

    def gid(self, node_id: Any) -> str:
        return f"{self.prefix}{node_id}"

    # --- following links to what produces a value ---------------------------------------------

    def source(self, link_id: int | None, want_type: str | None = None, depth: int = 0) -> Any:
        """[node id, slot] in the flat API graph, a literal value, or None (nothing connected)."""
        if link_id is None:
            return None
        if depth > 256:
            raise ComfyFormatError(f"links loop through reroutes or bypassed nodes (at link {link_id})")
        link = self.links.get(int(link_id))
        if link is None:
            raise ComfyFormatError(f"link {link_id} is referenced but not defined in 'links'")
        origin, slot = link["origin_id"], int(link["origin_slot"])
        if origin == SUBGRAPH_INPUT:
            return self.boundary_inputs.get(slot)
        node = self.nodes.get(str(origin))
        if node is None:
            raise ComfyFormatError(f"link {link_id} starts at node {origin}, which does not exist")
        kind = node.get("type")
        mode = node.get("mode", 0)
        if kind == "Reroute":
            return self.source(_input_link(node, 0), want_type, depth + 1)
        if kind == "PrimitiveNode":
            values = node.get("widgets_values") or [None]
            target_name = _widget_name_of_output(node)
            if target_name in SEED_INPUTS and len(values) > 1 and values[1] == "randomize":
                return {"literal": "random"}
            return {"literal": values[0]}
        if mode == MUTED:
            return None
        if mode == BYPASSED:
            out_type = _output_type(node, slot) or want_type
            for i, inp in enumerate(node.get("inputs") or []):
                if inp.get("link") is not None and (inp.get("type") == out_type or out_type in (None, "*")):
                    return self.source(inp["link"], out_type, depth + 1)
            return None
        sub = self.conv.subgraph_of(kind)
        if sub is not None or self.conv.group_of(kind) is not None:
            return self.conv.expanded_output(self, node, slot)
        return [self.gid(origin), slot]

    def source_of_slot(self, origin: Any, slot: int) -> Any:
        """What a consumer of output `slot` of node `origin` gets, following frontend-only and
        expanded nodes as a link would."""
        fake = -(10**9)
        self.links[fake] = {"origin_id": origin, "origin_slot": slot, "target_id": None, "target_slot": 0}
        try:
            return self.source(fake)
        finally:
            del self.links[fake]

    # --- emitting API nodes -------------------------------------------------------------------

    def emit_all(self) -> None:
        for nid, node in self.nodes.items():
            kind = node.get("type")
            if kind in FRONTEND_ONLY or node.get("mode", 0) in (MUTED, BYPASSED):
                continue
            if self.conv.subgraph_of(kind) is not None or self.conv.group_of(kind) is not None:
                self.conv.expand(self, node)
                continue
            self.conv.out[self.gid(nid)] = self.api_node(node)

    def api_node(self, node: dict, widget_values: list[Any] | None = None) -> dict[str, Any]:
        kind = node.get("type")
        inputs: dict[str, Any] = {}
        values = node.get("widgets_values") if widget_values is None else widget_values
        names = widget_order().get(kind)
        if isinstance(values, dict):  # some nodes save widgets by name
            inputs.update({k: v for k, v in values.items() if k not in NOT_INPUTS})
        elif names is not None and values:
            for name, value in zip(names, values):
                if name == "control_after_generate":
                    # "randomize": the seed before it is drawn again for every run
                    seed_name = names[names.index(name) - 1]
                    if value == "randomize" and seed_name in SEED_INPUTS:
                        inputs[seed_name] = "random"
                    continue
                if name not in NOT_INPUTS:
                    inputs[name] = value
        elif values:
            inputs["_widgets_values"] = list(values)  # unknown type: reported by the translator
        for slot, inp in enumerate(node.get("inputs") or []):
            name = inp.get("name")
            widget = (inp.get("widget") or {}).get("name")
            src = self.source(inp.get("link"), inp.get("type"))
            if src is None:
                continue
            key = widget or name
            if isinstance(src, dict):  # a literal from a PrimitiveNode or a boundary widget
                inputs[key] = src["literal"]
            else:
                inputs[key] = src
        meta = {"title": node["title"]} if node.get("title") else {}
        return {"class_type": kind, "inputs": inputs, **({"_meta": meta} if meta else {})}


def _input_link(node: dict, index: int) -> int | None:
    inputs = node.get("inputs") or []
    return inputs[index].get("link") if index < len(inputs) else None


def _output_type(node: dict, slot: int) -> str | None:
    outputs = node.get("outputs") or []
    return outputs[slot].get("type") if slot < len(outputs) else None


def _widget_name_of_output(node: dict) -> str | None:
    outputs = node.get("outputs") or []
    return (outputs[0].get("widget") or {}).get("name") if outputs else None


class UiConverter:
    def __init__(self, doc: dict[str, Any]):
        self.doc = doc
        self.out: dict[str, dict[str, Any]] = {}
        defs = (doc.get("definitions") or {}).get("subgraphs") or []
        self.subgraphs = {str(s["id"]): s for s in defs if isinstance(s, dict) and "id" in s}
        self.groups = ((doc.get("extra") or {}).get("groupNodes")) or {}
        self._expanded: dict[str, _Graph] = {}

    def subgraph_of(self, kind: Any) -> dict | None:
        return self.subgraphs.get(str(kind))

    def group_of(self, kind: Any) -> dict | None:
        if isinstance(kind, str):
            for sep in (">", "/"):
                head, _, name = kind.partition(sep)
                if head == "workflow" and name in self.groups:
                    return self.groups[name]
        return None

    def convert(self) -> dict[str, dict[str, Any]]:
        top = _Graph(self, self.doc.get("nodes") or [], _links(self.doc.get("links"), "links"), "")
        top.emit_all()
        return self.out

    # --- subgraphs and group nodes ------------------------------------------------------------

    def _inner(self, outer: _Graph, node: dict) -> _Graph:
        """The expanded body of a subgraph or group node instance, wired to its outer inputs."""
        key = outer.gid(node["id"])
        if key in self._expanded:
            return self._expanded[key]
        prefix = f"{key}:"
        sub = self.subgraph_of(node.get("type"))
        if sub is not None:
            inner = _Graph(self, sub.get("nodes") or [], _links(sub.get("links"), f"subgraph {sub.get('name') or sub['id']}"), prefix)
            # the instance's input slots are the subgraph's inputs, in order; an unconnected
            # widget-like input takes the instance's next widget value
            values = list(node.get("widgets_values") or []) if isinstance(node.get("widgets_values"), list) else []
            for i, _ in enumerate(sub.get("inputs") or []):
                inp = (node.get("inputs") or [])[i] if i < len(node.get("inputs") or []) else {}
                src = outer.source(inp.get("link"), inp.get("type"))
                if src is None and inp.get("widget") and values:
                    src = {"literal": values.pop(0)}
                inner.boundary_inputs[i] = src
        else:
            group = self.group_of(node.get("type"))
            inner = self._group_body(outer, node, group, prefix)
        self._expanded[key] = inner
        inner.emit_all()
        return inner

    def expand(self, outer: _Graph, node: dict) -> None:
        self._inner(outer, node)

    def expanded_output(self, outer: _Graph, node: dict, slot: int) -> Any:
        inner = self._inner(outer, node)
        sub = self.subgraph_of(node.get("type"))
        if sub is not None:
            outputs = sub.get("outputs") or []
            if slot >= len(outputs):
                raise ComfyFormatError(f"node {node['id']} uses output {slot} of subgraph {sub.get('name')}, which has {len(outputs)}")
            link_ids = outputs[slot].get("linkIds") or []
            return inner.source(link_ids[0], outputs[slot].get("type")) if link_ids else None
        return inner.group_outputs[slot] if slot < len(inner.group_outputs) else None

    def _group_body(self, outer: _Graph, node: dict, group: dict, prefix: str) -> _Graph:
        """A legacy group node: its inner nodes (by "index"), inner links [from, slot, to, slot, ...],
        and the instance's inputs, widgets and outputs laid out inner node by inner node."""
        inner_nodes = [dict(n, id=n.get("index", i)) for i, n in enumerate(group.get("nodes") or [])]
        links: dict[int, dict] = {}
        linked_in: set[tuple[int, int]] = set()
        linked_out: set[tuple[int, int]] = set()
        for k, raw in enumerate(group.get("links") or []):
            o, oslot, t, tslot = raw[:4]
            links[k] = {"origin_id": o, "origin_slot": oslot, "target_id": t, "target_slot": tslot, "type": raw[5] if len(raw) > 5 else "*"}
            linked_in.add((t, tslot))
            linked_out.add((o, oslot))
        external = {(e[0], e[1]) for e in group.get("external") or []}
        inner = _Graph(self, [], links, prefix)
        outer_inputs = list(node.get("inputs") or [])
        values = list(node.get("widgets_values") or [])
        group_outputs: list[Any] = []
        next_link = -1
        for n in inner_nodes:
            n = dict(n, inputs=[dict(i) for i in n.get("inputs") or []])
            # 1. inputs not fed inside the group are the instance's inputs, in order
            for tslot, inp in enumerate(n["inputs"]):
                if (n["id"], tslot) in linked_in:
                    continue
                outer_inp = outer_inputs.pop(0) if outer_inputs else {}
                src = outer.source(outer_inp.get("link"), outer_inp.get("type"))
                if src is not None:
                    # a pseudo link from a boundary slot carrying the outer source
                    inner.boundary_inputs[next_link] = src
                    links[next_link] = {"origin_id": SUBGRAPH_INPUT, "origin_slot": next_link, "target_id": n["id"], "target_slot": tslot}
                    inp["link"] = next_link
                    next_link -= 1
                else:
                    inp["link"] = None if (n["id"], tslot) not in linked_in else inp.get("link")
            # 2. widgets, in order, come from the instance's widgets_values when it has them
            names = widget_order().get(n.get("type"), ())
            converted = {(i.get("widget") or {}).get("name") for i in n["inputs"] if i.get("link") is not None}
            own = list(n.get("widgets_values") or [])
            taken = []
            for j, name in enumerate(names):
                if name in converted:
                    taken.append(own[j] if j < len(own) else None)
                    continue
                taken.append(values.pop(0) if values else (own[j] if j < len(own) else None))
            n["widgets_values"] = taken
            # 3. outputs not consumed inside the group (or marked external) are the instance's
            for oslot, _ in enumerate(n.get("outputs") or []):
                if (n["id"], oslot) not in linked_out or (n["id"], oslot) in external:
                    group_outputs.append((n["id"], oslot))
            inner.nodes[str(n["id"])] = n
        # group-internal links need their target inputs to point at them
        for lid, link in list(links.items()):
            if lid >= 0:
                tgt = inner.nodes.get(str(link["target_id"]))
                if tgt is not None and link["target_slot"] < len(tgt["inputs"]):
                    tgt["inputs"][link["target_slot"]]["link"] = lid
        inner.group_outputs = [inner.source_of_slot(o, s) for o, s in group_outputs]
        return inner


def ui_to_api(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The API-format prompt a UI-format document runs as."""
    if not isinstance(doc.get("nodes"), list):
        raise ComfyFormatError("a ComfyUI UI workflow has a 'nodes' list")
    return UiConverter(doc).convert()
