"""Content Credentials: a signed C2PA manifest in every image a run saves, when an identity is set.

Each PNG, JPEG or WebP file the executor writes gets, after the editgraph metadata is spliced in
(provenance.embed) and before it reaches the disk, a manifest store made by the official
c2pa-python bindings. The store is inserted into the container; the encoded pixels are not
touched. It holds:

- actions: `c2pa.opened` for the photo the output was edited from (its parentOf ingredient; C2PA
  allows exactly one), then `c2pa.edited` (or `c2pa.created` when no photo went in) naming
  `editgraph <version>` as the software agent. Every other input file (masks, references,
  backgrounds, and the image whose workflow a `run IMAGE.png` replayed) is an inputTo ingredient
  of that action: it went into the edit, with no claim that its pixels are in the result.
- the digital source type, decided from the node types upstream of the save: any node whose class
  says `generative` (its output comes from a trained model: denoise, refine, instruct, vae.decode)
  makes it compositeWithTrainedAlgorithmicMedia when a photo went in, trainedAlgorithmicMedia when
  none did. Grades, crops and masks alone claim no AI: `c2pa.edited` without a source type (or
  `c2pa.created` as algorithmicMedia for a picture drawn from nothing).
- ingredients: each input image file upstream, re-read at signing time and checked against the
  hash the run keyed on. A file carrying its own manifest brings it along, so a parent's
  credentials stay verifiable inside the child's, generation after generation.
- `org.editgraph.provenance`: the sha256 of the resolved workflow, model content hashes, seeds,
  input file hashes, the save node's content key, and the time by the signer's clock.

The signature's hard binding covers every byte of the file but the manifest: pixels and embedded
workflow alike. Signing is the last step of writing a file: cached artifacts are unsigned and
nothing about signing enters a content key. Two signed runs of one workflow give the same pixels
and provenance but not the same bytes (each manifest gets a fresh id and ECDSA signature).

The identity never comes from a workflow. It comes from the environment or the user config file
(see `identity()`); the private key file is read when a file is signed, handed to the native
signer, and written nowhere. A signer command keeps the key out of this process altogether.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from editgraph.errors import EditgraphError
from editgraph.settings import Settings
from editgraph.sharing.metadata import container
from editgraph.version import __version__

# The environment variables (read by settings.py), named here for messages and tests.
ENV_CERT = "EDITGRAPH_C2PA_CERT"  # PEM certificate chain, signing certificate first
ENV_KEY = "EDITGRAPH_C2PA_KEY"  # PEM private key file
ENV_COMMAND = "EDITGRAPH_C2PA_SIGN_COMMAND"  # signs stdin, writes the signature to stdout
ENV_ALG = "EDITGRAPH_C2PA_ALG"
ENV_TSA = "EDITGRAPH_C2PA_TSA_URL"
ENV_TRUST = "EDITGRAPH_C2PA_TRUST_ANCHORS"  # PEM roots that `verify` (and ingredient checks) trust
ENV_CONFIG = "EDITGRAPH_C2PA_CONFIG"  # another config file than ~/.config/editgraph/c2pa.toml
CONFIG_KEYS = ("cert_chain", "private_key", "sign_command", "alg", "tsa_url", "trust_anchors")
ALGS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")
ASSERTION = "org.editgraph.provenance"
SIGN_COMMAND_TIMEOUT_S = 60

_IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
COMPOSITE_AI = _IPTC + "compositeWithTrainedAlgorithmicMedia"
TRAINED_AI = _IPTC + "trainedAlgorithmicMedia"
ALGORITHMIC = _IPTC + "algorithmicMedia"


class SigningError(EditgraphError):
    """The identity is misconfigured, or signing a file failed."""


# --- the identity ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Where the signing credentials are (paths, never their contents) and how to use them."""

    cert_chain: Path
    private_key: Path | None
    sign_command: tuple[str, ...] | None
    alg: str
    tsa_url: str | None
    origin: str  # where it was configured, for messages: "environment" or the config file

    def describe(self) -> str:
        how = f"key file {self.private_key}" if self.private_key else f"signer command {self.sign_command[0]!r}"
        return f"{self.alg.upper()} with {how}, certificate chain {self.cert_chain} (from {self.origin})"


def _config(settings: Settings) -> tuple[dict[str, Any], Path]:
    path = settings.c2pa_config_file
    if not path.is_file():
        return {}, path
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SigningError(f"{path}: cannot read the C2PA signing config: {exc}") from None
    unknown = sorted(set(table) - set(CONFIG_KEYS))
    if unknown:
        raise SigningError(f"{path}: unknown key(s) {unknown}; allowed: {list(CONFIG_KEYS)}")
    for key, value in table.items():
        if key == "sign_command":
            ok = isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value))
        else:
            ok = isinstance(value, str)
        if not ok:
            raise SigningError(f"{path}: {key} must be a string{' or a list of strings' if key == 'sign_command' else ''}, got {value!r}")
    return table, path


def identity(settings: Settings | None = None) -> Identity | None:
    """The configured signing identity, or None (unsigned mode).

    From the environment when any of EDITGRAPH_C2PA_CERT / _KEY / _SIGN_COMMAND is set, else from
    the config file (keys cert_chain, private_key or sign_command, alg, tsa_url; relative paths
    are relative to the file). Only paths are read here: a missing file is an error now, before
    any node runs, naming where it was configured."""
    s = settings or Settings.from_env()
    if s.c2pa_cert or s.c2pa_key or s.c2pa_sign_command:
        raw = {"cert_chain": s.c2pa_cert, "private_key": s.c2pa_key, "sign_command": s.c2pa_sign_command, "alg": s.c2pa_alg, "tsa_url": s.c2pa_tsa_url}
        names = {"cert_chain": ENV_CERT, "private_key": ENV_KEY, "sign_command": ENV_COMMAND, "alg": ENV_ALG}
        origin, base = "environment", Path.cwd()
    else:
        raw, path = _config(s)
        if not any(raw.get(k) for k in ("cert_chain", "private_key", "sign_command")):
            return None
        names = {k: f"{k} in {path}" for k in CONFIG_KEYS}
        origin, base = str(path), path.parent
    if not raw.get("cert_chain"):
        raise SigningError(f"a C2PA signing identity needs a certificate chain: set {names['cert_chain']} (a PEM file, signing certificate first)")
    if bool(raw.get("private_key")) == bool(raw.get("sign_command")):
        raise SigningError(f"a C2PA signing identity needs exactly one of {names['private_key']} (a PEM key file) or {names['sign_command']}")
    alg = (raw.get("alg") or "es256").lower()
    if alg not in ALGS:
        raise SigningError(f"{names['alg']}: unknown signing algorithm {alg!r}; allowed: {list(ALGS)}")
    tsa = raw.get("tsa_url") or None
    if tsa is not None and not tsa.startswith(("http://", "https://")):
        raise SigningError(f"tsa_url must be an http(s) URL of an RFC 3161 timestamp authority, got {tsa!r}")

    def existing(field: str) -> Path:
        if "-----BEGIN" in raw[field] or "\n" in raw[field]:  # the PEM itself: never echo it back
            raise SigningError(f"{names[field]} must name a PEM file, not hold its contents")
        p = Path(raw[field]).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise SigningError(f"{names[field]} names {p}, which is not a file")
        return p

    command = raw.get("sign_command")
    if isinstance(command, str):
        command = shlex.split(command)
    if command and shutil.which(command[0]) is None:
        raise SigningError(f"{names['sign_command']}: no executable {command[0]!r} (on PATH, or as a path)")
    return Identity(existing("cert_chain"), existing("private_key") if raw.get("private_key") else None, tuple(command) if command else None, alg, tsa, origin)


def trust_anchors(settings: Settings | None = None) -> str | None:
    """PEM text of the root certificates a verifier trusts (EDITGRAPH_C2PA_TRUST_ANCHORS, else
    trust_anchors in the config file), or None: signatures are then checked, signers not trusted."""
    s = settings or Settings.from_env()
    value, where = s.c2pa_trust_anchors, ENV_TRUST
    base = Path.cwd()
    if not value:
        table, path = _config(s)
        value, where, base = table.get("trust_anchors"), f"trust_anchors in {path}", path.parent
    if not value:
        return None
    p = Path(value).expanduser()
    p = p if p.is_absolute() else base / p
    try:
        return p.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningError(f"{where} names {p}, which cannot be read as PEM text: {exc}") from None


def _c2pa():
    try:
        import c2pa
    except ImportError:
        raise SigningError("a C2PA signing identity is configured but c2pa-python is not installed: pip install 'editgraph[c2pa]'") from None
    return c2pa


def check(ident: Identity) -> None:
    """Sign a 1x1 PNG and read it back, so a bad identity fails before a run starts: an unreadable
    chain or key, a failing signer command, or a key that is not the certificate's (the bindings
    sign with it anyway, and every file of the run would carry an invalid manifest)."""
    from PIL import Image

    c2pa = _c2pa()
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    pixel = buf.getvalue()
    probe = Plan("check", True, ALGORITHMIC, (), (), {"workflow_name": "identity check"})
    signed = sign("check.png", pixel, probe, ident)
    with c2pa.Context.from_dict({}) as ctx, c2pa.Reader("image/png", io.BytesIO(signed), None, ctx) as reader:
        failed = [f.get("code", "?") for f in ((reader.get_validation_results() or {}).get("activeManifest") or {}).get("failure", [])]
    failed = [code for code in failed if code != "signingCredential.untrusted"]
    if failed:
        hint = " (the key does not belong to the signing certificate, the first in the chain)" if "claimSignature.mismatch" in failed else ""
        raise SigningError(f"the C2PA signing identity ({ident.describe()}) makes manifests that do not validate: {', '.join(failed)}{hint}")


def _signer(c2pa, ident: Identity, errors: list[str]):
    alg = getattr(c2pa.C2paSigningAlg, ident.alg.upper())
    chain = ident.cert_chain.read_bytes()
    try:
        if ident.private_key is not None:
            return c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg, chain, ident.private_key.read_bytes(), ident.tsa_url))
        return c2pa.Signer.from_callback(_command_callback(ident.sign_command, errors), alg, chain.decode("ascii"), ident.tsa_url)
    except (c2pa.C2paError, ValueError, UnicodeDecodeError) as exc:
        # The native message names the problem (bad PEM, unsupported key); it never echoes the key.
        raise SigningError(f"cannot use the C2PA signing identity ({ident.describe()}): {exc}") from None


def _command_callback(argv: tuple[str, ...], errors: list[str]):
    """The bytes to sign go to the command's stdin; its stdout is the signature. The bindings turn
    a failing callback into a generic error, so the reason is kept in `errors` for the message."""

    def sign(data: bytes) -> bytes:
        try:
            done = subprocess.run(list(argv), input=data, capture_output=True, timeout=SIGN_COMMAND_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"signer command {argv[0]!r} could not run: {exc}")
            raise
        if done.returncode != 0 or not done.stdout:
            tail = done.stderr.decode("utf-8", "replace").strip()[-300:]
            errors.append(f"signer command {argv[0]!r} exited {done.returncode}{' with no signature' if not done.stdout else ''}: {tail}")
            raise RuntimeError(errors[-1])
        return done.stdout

    return sign


# --- what a manifest says ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ingredient:
    node: str  # the node that read the file ("" for a replayed image)
    path: str
    relationship: str  # parentOf | inputTo
    token: str | None  # the file hash the run keyed on; None: not read by a node


@dataclass(frozen=True)
class Plan:
    """The manifest of one saved output, decided from the graph; signing only adds the bytes."""

    node: str
    created: bool  # no photo went in: c2pa.created rather than c2pa.edited
    source_type: str | None
    generative: tuple[str, ...]  # generative node ids upstream
    ingredients: tuple[Ingredient, ...]
    assertion: dict[str, Any]


def source_type(graph, node_id: str) -> str | None:
    """The IPTC digital source type an output of `node_id` honestly carries, or None (no AI)."""
    return _classify(graph, node_id)[1]


def _classify(graph, node_id: str) -> tuple[bool, str | None, list[str], list[tuple[str, str]]]:
    """(created, source type, generative nodes, [(node, relationship)] for input files)."""
    from editgraph.nodes.registry import INPUT_PATH, field_marks

    before = graph.upstream([node_id])
    consumed: dict[str, set[str]] = {}
    for nid in [*before, node_id]:
        for src, out in graph.nodes[nid].inputs.values():
            consumed.setdefault(src, set()).add(out)
    files: list[tuple[str, str]] = []
    for nid in before:
        node = graph.nodes[nid]
        if node.inputs or not field_marks(node.cls.Params, INPUT_PATH):
            continue  # not a source reading a file (a grade's .cube LUT is a param, not an ingredient)
        sockets = {node.cls.outputs[o].name for o in consumed.get(nid, ()) if o in node.cls.outputs}
        if not sockets & {"Image", "Mask"}:
            continue  # a model: its content hash is in the editgraph assertion
        # The first photo is what was opened and edited. Every other file (a mask, a reference
        # whose palette was borrowed, a background) was an input to the edit: "inputTo" claims
        # no more than that, where componentOf/c2pa.placed would claim its pixels were placed.
        parent = "Image" in sockets and not any(r == "parentOf" for _, r in files)
        files.append((nid, "parentOf" if parent else "inputTo"))
    generative = [nid for nid in [*before, node_id] if getattr(graph.nodes[nid].cls, "generative", False)]
    created = not any(r == "parentOf" for _, r in files)
    if generative:
        kind = TRAINED_AI if created else COMPOSITE_AI
    else:
        kind = ALGORITHMIC if created else None
    return created, kind, generative, files


def plan(graph, node_id: str, info: dict[str, Any], replayed_from: str | None = None) -> Plan:
    """What the manifest of the files node `node_id` saves will say."""
    from editgraph.nodes.registry import INPUT_PATH, SEED, field_marks

    created, kind, generative, files = _classify(graph, node_id)
    # Every seed upstream, as the run used it (fixed or drawn), so a verifier can replay.
    seeds = {f"{nid}.{f}": getattr(graph.nodes[nid].params, f) for nid in [*graph.upstream([node_id]), node_id] for f in field_marks(graph.nodes[nid].cls.Params, SEED)}
    tokens = {(rec["node"], rec["field"]): rec.get("source_token") for rec in info.get("inputs", [])}
    ingredients: list[Ingredient] = []
    for nid, relationship in files:
        node = graph.nodes[nid]
        for field in field_marks(node.cls.Params, INPUT_PATH):
            path = getattr(node.params, field, None)
            if isinstance(path, str) and path and all(Path(i.path) != Path(path) for i in ingredients):
                ingredients.append(Ingredient(nid, path, relationship, tokens.get((nid, field))))
    if replayed_from is not None:
        ingredients.append(Ingredient("", str(replayed_from), "inputTo", None))
    workflow = json.dumps(info.get("workflow"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assertion = {
        "editgraph": __version__,
        "workflow_name": (info.get("workflow") or {}).get("name"),
        "workflow_sha256": hashlib.sha256(workflow.encode()).hexdigest(),
        "node": node_id,
        "key": info.get("keys", {}).get(node_id),
        "seeds": seeds,
        "models": [{"node": m["node"], "name": m["name"], "content_hash": m["content_hash"]} for m in info.get("models", [])],
        "inputs": [{"node": i.node, "file": Path(i.path).name, "relationship": i.relationship, "blake3": i.token} for i in ingredients],
        "generative_nodes": generative,
        "digital_source_type": kind,
    }
    if replayed_from is not None:
        assertion["replayed_from"] = Path(replayed_from).name
    return Plan(node_id, created, kind, tuple(generative), tuple(ingredients), assertion)


# --- signing -------------------------------------------------------------------------------------


def mime_of(data: bytes) -> str | None:
    """The media type of an image by its magic bytes (the formats C2PA embeds into here)."""
    kind = container(data)
    if kind is not None:
        return f"image/{kind}"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def _settings(trust: str | None) -> dict[str, Any]:
    # No thumbnails: they would cost a decode and an encode per file and add ~100 KB. Trust anchors
    # (when configured) make an ingredient's recorded validation say whether its signer is trusted.
    settings: dict[str, Any] = {"builder": {"thumbnail": {"enabled": False}}, "verify": {"verify_after_sign": False}}
    if trust:
        settings["trust"] = {"trust_anchors": trust}
    return settings


def sign(name: str, data: bytes, plan: Plan, ident: Identity, *, trust: str | None = None) -> bytes:
    """`data` with a signed C2PA manifest store inserted; other than PNG/JPEG/WebP: unchanged."""
    mime = mime_of(data)
    if mime not in ("image/png", "image/jpeg", "image/webp"):
        return data
    c2pa = _c2pa()
    agent = {"name": "editgraph", "version": __version__}
    actions: list[dict[str, Any]] = []
    blobs: list[tuple[dict[str, Any], str, bytes]] = []
    steered: list[str] = []
    for i, ing in enumerate(plan.ingredients):
        blob = _ingredient_bytes(ing)
        iid = f"editgraph:ingredient:{i}"
        entry = {"title": Path(ing.path).name, "relationship": ing.relationship, "instance_id": iid}
        if ing.node == "":
            entry["description"] = "the image whose embedded workflow this run replayed"
        blobs.append((entry, mime_of(blob) or "application/octet-stream", blob))
        if ing.relationship == "parentOf":
            actions.append({"action": "c2pa.opened", "parameters": {"ingredientIds": [iid]}})
        else:
            steered.append(iid)
    main: dict[str, Any] = {"action": "c2pa.created" if plan.created else "c2pa.edited", "softwareAgent": agent}
    if plan.source_type is not None:
        main["digitalSourceType"] = plan.source_type
    made = f"generative nodes {', '.join(plan.generative)}" if plan.generative else "no generative node"
    main["description"] = f"editgraph workflow '{plan.assertion.get('workflow_name') or 'unnamed'}': {made}"
    if steered:
        main["parameters"] = {"ingredientIds": steered}
    actions.append(main)
    stamp = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    manifest = {
        "claim_generator_info": [agent],
        "title": Path(name).name,
        "format": mime,
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": actions}},
            {"label": ASSERTION, "data": {**plan.assertion, "signed_at": stamp}},
        ],
    }
    errors: list[str] = []
    try:
        with c2pa.Context.from_dict(_settings(trust)) as ctx, _signer(c2pa, ident, errors) as signer, c2pa.Builder(manifest, ctx) as builder:
            for entry, fmt, blob in blobs:
                builder.add_ingredient(entry, fmt, io.BytesIO(blob))
            out = io.BytesIO()
            builder.sign(signer, mime, io.BytesIO(data), out)
    except c2pa.C2paError as exc:
        why = errors[-1] if errors else str(exc)
        raise SigningError(f"{name}: C2PA signing failed: {why}") from None
    return out.getvalue()


def _ingredient_bytes(ing: Ingredient) -> bytes:
    """The input file as the run read it: a file changed since must not be cited as the source."""
    try:
        blob = Path(ing.path).read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read input {ing.path} again to cite it as a C2PA ingredient: {exc.strerror}") from None
    if ing.token is not None:
        import blake3

        if blake3.blake3(blob).hexdigest() != ing.token:
            raise SigningError(f"input {ing.path} (node '{ing.node}') changed while the run used it; not signing a manifest that would cite other bytes")
    return blob
