"""`editgraph models ...`: the models this machine can resolve, building tiny ones, hashing files."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(models: argparse.ArgumentParser) -> None:
    """`models`' actions and options (cli/main.py's COMMANDS holds its help line)."""
    action = models.add_subparsers(dest="models_action", required=True)
    action.add_parser("list", help="built-in tiny models and every registered name (EDITGRAPH_MODELS, models.json)").set_defaults(func=cmd_list)
    make = action.add_parser("make-tiny", help="build the tiny models and the tiny IP-Adapter (deterministic, seeded) into DIR in diffusers layout")
    make.add_argument("dir")
    make.add_argument("--name", action="append", help="only these (default: all)")
    make.set_defaults(func=cmd_make_tiny)
    hsh = action.add_parser("hash", help="the content hash a workflow can pin in model.load's `hash` param")
    hsh.add_argument("model", help="a name or a path")
    hsh.set_defaults(func=cmd_hash)


def cmd_list(args: argparse.Namespace) -> int:
    from editgraph.models import names
    from editgraph.models.loader import models_root, tiny_is_built
    from editgraph.models.tiny import TINY_NAMES

    for name in TINY_NAMES:
        target = models_root() / name
        built = tiny_is_built(target)
        print(f"{name:<20} built in: {target if built else '(made on first use)'}")
        if built:
            _print_memory(target)
    transformers = names.registered_transformers()
    for name, path in sorted(names.registered().items()):
        state = "" if Path(path).exists() else "   MISSING: nothing at this path"
        print(f"{name:<20} {path}{state}")
        if name in transformers:
            gone = "" if transformers[name].is_file() else "   MISSING: nothing at this path"
            print(f"{'':<20} transformer from {transformers[name]}{gone}")
        if not state:
            _print_memory(Path(path))
    print(f"\nregister models with EDITGRAPH_MODELS=/folder/of/models or in {names.config_file()}")
    print("memory: weight bytes per component from the safetensors headers (nothing loaded); "
          "model.load's dtype param picks float32 (its default) or bf16/fp16")
    return 0


def _print_memory(path: Path) -> None:
    """The model's weight memory per component, or why it cannot be measured."""
    from editgraph.models.errors import ModelError
    from editgraph.models.footprint import footprint, table, unmeasured

    try:
        components = footprint(path)
    except ModelError as exc:
        print(f"    memory: not measured ({exc})")
        return
    others = unmeasured(path)
    if not components and not others:
        print("    memory: not measured (no .safetensors weights found)")
        return
    if components:
        for row in table(components):
            print(row)
    if others:
        print(f"    not measured (weights not in .safetensors): {', '.join(others)}")


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from editgraph.models.tiny import TINY_NAMES, make_tiny_all
    from editgraph.models.tiny_ip_adapter import TINY_ADAPTERS

    for path in make_tiny_all(args.dir, args.name or (*TINY_NAMES, *TINY_ADAPTERS)):  # an unknown name is an EditgraphError
        print(path)
    return 0


def cmd_hash(args: argparse.Namespace) -> int:
    from editgraph.models.loader import model_hash, resolve

    path = resolve(args.model)
    print(f"{model_hash(path)}  {path}")
    return 0
