"""`editgraph import comfy WORKFLOW [-o out.json] [--partial]`: a ComfyUI workflow as an editgraph/1 document."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def configure(imp: argparse.ArgumentParser) -> None:
    """`import`'s kinds and options (cli/main.py's COMMANDS holds its help line)."""
    kind = imp.add_subparsers(dest="import_kind", required=True)
    comfy = kind.add_parser(
        "comfy", help="a ComfyUI workflow: API format (/prompt body), UI format (what its editor saves), or a PNG ComfyUI wrote"
    )
    comfy.add_argument("workflow", help="a .json file, or a PNG carrying ComfyUI's 'prompt' text chunk")
    comfy.add_argument("-o", "--output", help="document to write (default: stdout)")
    comfy.add_argument("--partial", action="store_true", help="leave out what cannot be translated (listed on stderr) instead of failing")
    comfy.add_argument("--name", help="the document's name (default: the file's name without extensions)")
    comfy.set_defaults(func=cmd_import_comfy)


def cmd_import_comfy(args: argparse.Namespace) -> int:
    from editgraph.sharing.comfy import import_comfy, read_comfy
    from editgraph.errors import Issue, WorkflowInvalid
    from editgraph.graph.document import load_workflow
    from editgraph.graph.validate import bind

    source = Path(args.workflow)
    name = args.name or source.name.split(".")[0]
    result = import_comfy(read_comfy(source), name=name, partial=args.partial)
    left = result.left_out
    if left and not args.partial:
        issues = [Issue(i.node_id, f"{i.why} (import with --partial to leave it out)", i.node_id, i.class_type) for i in left]
        raise WorkflowInvalid(issues, f"{source} (ComfyUI {result.source_format} format)")
    if not result.document["nodes"]:
        raise WorkflowInvalid([Issue("", "nothing could be translated")], str(source))
    # the translation must give a valid document: the params a run must set are checked at run time
    bind(load_workflow(result.document), base_dir=source.resolve().parent, require_values=False, source=name)
    text = json.dumps(result.document, indent=2, ensure_ascii=False) + "\n"
    if args.output:
        from editgraph.atomic import write_atomic

        write_atomic(Path(args.output), text.encode())
    else:
        sys.stdout.write(text)
    for issue in result.issues:
        print(f"{issue.action}: node {issue.node_id} ({issue.class_type}): {issue.why}", file=sys.stderr)
    where = args.output or "stdout"
    n = len(result.document["nodes"])
    print(f"imported {source} (ComfyUI {result.source_format} format) as {n} editgraph nodes to {where}"
          + (f"; {len(left)} ComfyUI nodes left out" if left else ""), file=sys.stderr)
    return 0
