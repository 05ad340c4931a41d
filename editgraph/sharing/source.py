"""Where a workflow comes from: a JSON file, a bundled name, a document in memory, or an image
editgraph wrote (its workflow travels inside it)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from editgraph.errors import Issue, WorkflowInvalid

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def is_image(ref: str | Path) -> bool:
    return Path(ref).suffix.lower() in IMAGE_SUFFIXES


def read_image_provenance(ref: str | Path) -> dict[str, Any]:
    """The provenance an editgraph image carries; WorkflowInvalid if it carries none."""
    from editgraph.sharing.provenance import read

    try:
        info = read(Path(ref).read_bytes())
    except (ValueError, OSError) as exc:  # zlib / JSON damage, unreadable file
        raise WorkflowInvalid([Issue("", f"cannot read the editgraph provenance: {exc}")], str(ref)) from None
    if info is None or not isinstance(info.get("workflow"), dict):
        raise WorkflowInvalid(
            [Issue("", "this image carries no editgraph workflow (it was not written by editgraph, or its metadata was stripped)")],
            str(ref),
        )
    return info


def open_source(ref: str | Path, *, relocate: bool = False, on_note: Callable[[str], None] | None = None):
    """(Workflow, base dir for relative paths, label) from a path, a bundled name, or an image
    editgraph wrote. relocate: input files missing at their recorded paths are looked for (same
    bytes) beside the image and in the working directory; each move is reported to on_note."""
    from editgraph import workflows
    from editgraph.graph.document import load_workflow

    ref = str(ref)
    path = Path(ref)
    if is_image(path) and path.is_file():
        info = read_image_provenance(ref)
        doc = info["workflow"]
        if relocate:
            from editgraph.sharing.preflight import relocate_inputs

            doc, notes = relocate_inputs(info, [path.resolve().parent, Path.cwd()])
            for note in notes:
                if on_note is not None:
                    on_note(note)
        return load_workflow(doc), Path.cwd(), ref
    if path.is_file():
        return load_workflow(path), path.resolve().parent, ref
    bundled = workflows.find(ref)
    if bundled is not None:
        return load_workflow(bundled), bundled.parent, ref
    names = ", ".join(workflows.names()) or "(none)"
    raise WorkflowInvalid([Issue("", f"no workflow file {ref!r}, and no bundled workflow by that name; bundled: {names}")], ref)
