"""Release a big model's components as soon as no node left in the run needs them.

The flow-matching edit models load component by component (models/flow_loader.py): the text
encoder when a prompt is encoded, the transformer when denoising, the VAE to encode and decode.
A node class says which components it uses through each Model input, as a plain class attribute:

    model_components = {"model": ("text_encoder", "tokenizer")}

From the run's order, ComponentPlan knows the last node that uses each component of each model;
after every node (run or served from the cache) it releases the loaded components no later node
will use. So a 24 B text encoder is gone before the transformer loads, and a run whose prompt
encodes all come from the cache never holds one. Opt-in (Executor(free_components=True)): in a
batch, where every row is a run of its own, releasing at each row's end would re-read weights
from disk for the next row.
"""

from __future__ import annotations

from typing import Any

Ref = tuple[str, str]


class ComponentPlan:
    def __init__(self, graph: Any, order: list[str]):
        # model output -> component -> index in `order` of the last node using it
        self.last: dict[Ref, dict[str, int]] = {}
        # A node that wraps its input model (model.lora: the same modules, adapters on top) makes
        # its output an alias of that model: uses of either count for both, so the base's
        # components stay while a LoRA variant still needs them.
        self.root: dict[Ref, Ref] = {}
        self.aliases: dict[Ref, list[Ref]] = {}
        for i, nid in enumerate(order):
            node = graph.nodes[nid]
            wrapped = node.inputs.get(node.cls.wraps_model) if node.cls.wraps_model else None
            if wrapped is not None:
                root = self.root.get(wrapped, wrapped)
                for out in node.cls.outputs:
                    self.root[(nid, out)] = root
                    self.aliases.setdefault(root, []).append((nid, out))
            for name, comps in getattr(node.cls, "model_components", {}).items():
                ref = node.inputs.get(name)
                if ref is None:
                    continue
                ref = self.root.get(ref, ref)
                uses = self.last.setdefault(ref, {})
                for comp in comps:
                    uses[comp] = i

    def after(self, index: int, values: dict[Ref, Any]) -> dict[Ref, list[str]]:
        """Release, in every model held in `values`, the components no node after `index` uses.
        Returns what was released, per model output."""
        released: dict[Ref, list[str]] = {}
        for ref, uses in self.last.items():
            model = values.get(ref)
            for alias in self.aliases.get(ref, ()) if model is None else ():
                model = values.get(alias)
                if model is not None:
                    break
            if model is None or not hasattr(model, "loaded_components") or not hasattr(model, "release"):
                continue
            wanted = {comp for comp, last in uses.items() if last > index}
            idle = [comp for comp in model.loaded_components() if comp not in wanted]
            if idle:
                released[ref] = model.release(*idle)
        return released
