"""What the commands share: exit codes, the options run and batch both take, loading a workflow,
the settings a command runs with, and the disk cache's notes."""

from __future__ import annotations

import argparse
import sys

from editgraph.settings import OFFLOAD_MODES

EXIT_OK, EXIT_USAGE, EXIT_INVALID, EXIT_NODE_FAILED, EXIT_ERROR, EXIT_CANCELLED = 0, 2, 3, 4, 5, 130


def err(text: str) -> None:
    print(text, file=sys.stderr)


def count_of(what: str):
    """An argparse type: a whole number of `what`, 1 or more (a usage error names `what`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected a whole number of {what}, 1 or more, got {text!r}")
        return value

    return parse


def executor_args(p: argparse.ArgumentParser) -> None:
    """The options run and batch share: where the cache is, torch's threads, the display."""
    p.add_argument("--cache-dir", help="cache root (default: $EDITGRAPH_CACHE_DIR or the user cache dir)")
    p.add_argument("--cache", dest="shared_cache", metavar="URL",
                   help="a cache tier shared by machines, behind the local ones: s3://BUCKET/PREFIX (endpoint from "
                        "$EDITGRAPH_S3_ENDPOINT or $AWS_ENDPOINT_URL) or a folder on a shared filesystem (default: $EDITGRAPH_SHARED_CACHE)")
    p.add_argument("--threads", type=count_of("threads"), help="torch CPU threads (results are bit-identical only at equal counts)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: the best available); results are bit-identical per device")
    p.add_argument("--offload", choices=OFFLOAD_MODES, default=None,
                   help="keep model weights on the CPU and move them to the device per node (model), per block (group) or per "
                        "layer (sequential), for models bigger than the device's memory; same bytes in every mode "
                        "(default: $EDITGRAPH_OFFLOAD, else none)")


def mismatch_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-model-mismatch", action="store_true", help="use a model whose files differ from the hash the workflow pins")


def name_value(item: str) -> str:
    """--set's argument type: a malformed one is a usage error (exit 2), found by argparse before
    any workflow is read, like any other malformed option."""
    name, eq, _ = item.partition("=")
    if not eq or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {item!r}")
    return item


def parse_sets(sets: list[str]) -> dict[str, str]:
    out = {}
    for item in sets:
        name, _, value = item.partition("=")
        out[name.strip()] = value
    return out


def load(ref: str, *, relocate: bool = False):
    """(Workflow, base dir, label): see editgraph.sharing.source.open_source."""
    from editgraph.sharing.source import open_source

    return open_source(ref, relocate=relocate, on_note=lambda note: err(f"note: {note}"))


def settings_for(args):
    """The environment's settings with this command's options."""
    from editgraph.settings import Settings

    settings = Settings.from_env()
    return settings.with_options(
        allow_model_mismatch=getattr(args, "allow_model_mismatch", False),
        offload=getattr(args, "offload", None) or settings.offload,
        shared_cache=getattr(args, "shared_cache", None) or settings.shared_cache,
    )


def open_cache(root, settings=None):
    from editgraph.executor.cache import Cache

    cache = Cache.default(root, settings)
    note_recovery(cache.disk)
    return cache


def note_recovery(store) -> None:
    if store is not None and store.recovered_from is not None:
        err(f"note: the cache index was damaged and has been set aside as {store.recovered_from}; starting a fresh one")


def note_problems(store) -> None:
    """Index errors met mid-run cost cached entries, never the run: say so once, at the end."""
    if store is None or not store.problems:
        return
    err(f"note: {store.problems[0]}" + (f" (and {len(store.problems) - 1} more)" if len(store.problems) > 1 else ""))
    note_recovery(store)


def load_to_run(args):
    """run and batch: pin torch's threads first (they change float rounding), then load the
    workflow, finding an image's moved inputs by name and hash."""
    if args.threads:
        from editgraph.executor.devices import set_threads

        set_threads(args.threads)  # now, or when a node first imports torch
    return load(args.workflow, relocate=True)


def warn_threads(ref: str) -> None:
    """Re-running an image's workflow reproduces its pixels bit for bit only at its thread count."""
    from editgraph.sharing.source import is_image

    if not is_image(ref):
        return
    from editgraph.executor.devices import torch_threads
    from editgraph.sharing.source import read_image_provenance

    made_with = read_image_provenance(ref).get("torch_threads")
    if made_with:  # None: no torch code made its pixels, any count will do
        now = torch_threads()
        if made_with != now:
            err(f"note: {ref} was made with {made_with} torch threads, this run uses {now}; add --threads {made_with} for identical pixels")

