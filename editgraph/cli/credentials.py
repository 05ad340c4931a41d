"""`editgraph verify IMAGE`: check an image's Content Credentials (C2PA).

Prints who signed, when, the actions, the AI disclosure and the ingredient tree. Exit 0 when the
manifest store validates (signature, certificate, the hard binding to the file's bytes, every
ingredient's manifest), 1 when it does not or the file carries none; --trusted also requires the
signer to chain to one of your trust anchors (EDITGRAPH_C2PA_TRUST_ANCHORS or trust_anchors in
the C2PA config file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXIT_NOT_VERIFIED = 1


def configure(verify) -> None:
    """`verify`'s options (cli/main.py's COMMANDS holds its help line)."""
    verify.add_argument("image")
    verify.add_argument("--json", action="store_true", help="the summary as JSON, for scripts")
    verify.add_argument("--trusted", action="store_true", help="also fail unless the signer chains to one of your trust anchors")
    verify.set_defaults(func=cmd_verify)


def cmd_verify(args) -> int:
    from editgraph.sharing.c2pa_verify import describe, verify

    data = Path(args.image).read_bytes()
    summary = verify(data, label=args.image, require_trust=args.trusted)
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(describe(summary))
    return 0 if summary["ok"] else EXIT_NOT_VERIFIED

