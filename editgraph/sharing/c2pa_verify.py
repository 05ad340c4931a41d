"""`editgraph verify IMAGE`: check an image's C2PA manifest store and say what it claims.

The c2pa-python Reader does the checking (claim signature, certificate, the hard binding of the
manifest to every other byte of the file, each ingredient's manifest). This module turns its
report into a summary a person can read and a script can parse: who signed and when, the
actions, the AI disclosure, the editgraph provenance assertion, and the ingredient tree, each
ingredient with the validation its manifest got.

"ok" means: the store validates (state Valid or Trusted) and nothing in the ingredient chain
failed. A signer missing from the trust anchors is reported (`trusted: false`) but is not a
failure unless the caller requires trust: with a self-made certificate that is the normal case.
"""

from __future__ import annotations

import io
import json
from typing import Any

from editgraph.sharing.c2pa import ASSERTION, _c2pa, mime_of, trust_anchors

_IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
# Not a validation failure: the signer is simply not among the anchors this verifier was given.
_TRUST_CODES = {"signingCredential.untrusted"}
_AI_TYPES = {"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia", "compositeSynthetic", "algorithmicallyEnhanced"}


def verify(data: bytes, *, label: str = "", trust: str | None = None, require_trust: bool = False) -> dict[str, Any]:
    """The verification summary of an image's bytes (see the module docstring for "ok")."""
    summary: dict[str, Any] = {"file": label, "signed": False, "state": "unsigned", "ok": False, "trusted": False, "failures": []}
    mime = mime_of(data)
    if mime is None:
        summary["failures"] = [{"code": "editgraph.unsupportedFormat", "explanation": "not a PNG, JPEG, WebP, TIFF or GIF file"}]
        return summary
    c2pa = _c2pa()
    trust = trust if trust is not None else trust_anchors()
    settings: dict[str, Any] = {"trust": {"trust_anchors": trust}} if trust else {}
    try:
        with c2pa.Context.from_dict(settings) as ctx:
            reader = c2pa.Reader.try_create(mime, io.BytesIO(data), None, ctx)
            if reader is None:
                return summary
            with reader:
                store = json.loads(reader.json())
                state = reader.get_validation_state() or "Invalid"
    except c2pa.C2paError as exc:  # a store too damaged to parse
        summary.update(signed=True, state="Invalid", failures=[{"code": "editgraph.unreadableManifest", "explanation": str(exc)}])
        return summary
    results = store.get("validation_results") or {}
    active = store.get("manifests", {}).get(store.get("active_manifest") or "", {})
    failures = [_code(f) for f in (results.get("activeManifest") or {}).get("failure", [])]
    summary.update(
        signed=True,
        state=state,
        trusted=state == "Trusted",
        failures=[f for f in failures if f["code"] not in _TRUST_CODES],
        manifest=store.get("active_manifest"),
        manifests_in_store=len(store.get("manifests", {})),
        **_manifest_summary(active),
    )
    deltas = {d.get("ingredientAssertionURI", "").rsplit("/", 1)[-1]: d.get("validationDeltas", {}).get("failure", []) for d in results.get("ingredientDeltas", [])}
    summary["ingredients"] = _ingredients(store, active, deltas, seen={summary["manifest"]})
    chain_failures = list(_chain_failures(summary["ingredients"]))
    summary["ok"] = state in ("Valid", "Trusted") and not summary["failures"] and not chain_failures and (summary["trusted"] or not require_trust)
    return summary


def _code(entry: dict[str, Any]) -> dict[str, str]:
    return {"code": entry.get("code", "?"), "explanation": entry.get("explanation", "")}


def _manifest_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    sig = manifest.get("signature_info") or {}
    titles = {i.get("label"): i.get("title") for i in manifest.get("ingredients", [])}
    actions, own = [], None
    for assertion in manifest.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            for a in assertion.get("data", {}).get("actions", []):
                agent = a.get("softwareAgent")
                if isinstance(agent, dict):
                    agent = " ".join(str(agent[k]) for k in ("name", "version") if agent.get(k))
                refs = (a.get("parameters") or {}).get("ingredients") or []
                used = [titles.get(r.get("url", "").rsplit("/", 1)[-1]) or r.get("url") for r in refs if isinstance(r, dict)]
                fields = {"action": a.get("action"), "digitalSourceType": a.get("digitalSourceType"), "softwareAgent": agent, "description": a.get("description"), "ingredients": used}
                actions.append({k: v for k, v in fields.items() if v})
        elif assertion.get("label") == ASSERTION:
            own = assertion.get("data")
    types = [a["digitalSourceType"] for a in actions if a.get("digitalSourceType")]
    generative = [t for t in types if t.removeprefix(_IPTC) in _AI_TYPES]
    gen = manifest.get("claim_generator_info") or [{}]
    return {
        "title": manifest.get("title"),
        "signer": {"common_name": sig.get("common_name"), "issuer": sig.get("issuer"), "alg": sig.get("alg"), "serial": sig.get("cert_serial_number")},
        # A trusted timestamp only with a TSA; otherwise the signer's own clock, inside the signed claim.
        "time": sig.get("time") or (own or {}).get("signed_at"),
        "time_source": "timestamp authority" if sig.get("time") else ("signer's clock" if (own or {}).get("signed_at") else None),
        "claim_generator": " ".join(str(gen[0][k]) for k in ("name", "version") if gen[0].get(k)),
        "actions": actions,
        "ai_generated": bool(generative),
        "digital_source_types": types,
        "editgraph": own,
    }


def _ingredients(store: dict[str, Any], manifest: dict[str, Any], deltas: dict[str, list], seen: set) -> list[dict[str, Any]]:
    out = []
    for ing in manifest.get("ingredients", []):
        label = ing.get("active_manifest")
        recorded = [_code(f) for f in ((ing.get("validation_results") or {}).get("activeManifest") or {}).get("failure", [])]
        now = [_code(f) for f in deltas.get(ing.get("label", ""), [])]
        entry: dict[str, Any] = {
            "title": ing.get("title"),
            "relationship": ing.get("relationship"),
            "format": ing.get("format"),
            "manifest": label,
            "failures": [f for f in recorded + now if f["code"] not in _TRUST_CODES],
        }
        if ing.get("description"):
            entry["description"] = ing["description"]
        parent = store.get("manifests", {}).get(label or "", None)
        if parent is not None and label not in seen:
            inner = _manifest_summary(parent)
            entry.update(signer=inner["signer"], time=inner["time"], actions=inner["actions"], ai_generated=inner["ai_generated"])
            entry["ingredients"] = _ingredients(store, parent, {}, seen | {label})
        out.append(entry)
    return out


def _chain_failures(ingredients: list[dict[str, Any]]):
    for ing in ingredients:
        yield from ing["failures"]
        yield from _chain_failures(ing.get("ingredients", []))


def generations(ingredients: list[dict[str, Any]]) -> int:
    """How many generations deep the ingredient tree goes (1: inputs without manifests of their own)."""
    return max((1 + generations(i.get("ingredients", [])) for i in ingredients), default=0)


# --- text ----------------------------------------------------------------------------------------


def describe(s: dict[str, Any]) -> str:
    """The summary as `editgraph verify` prints it."""
    if not s["signed"]:
        why = "; ".join(f["explanation"] for f in s["failures"]) or "no C2PA manifest (Content Credentials) in this file"
        return f"{s['file']}: NOT SIGNED ({why})\n"
    if s["state"] in ("Valid", "Trusted") and s["ok"]:
        head = "VALID, signer trusted" if s["trusted"] else "VALID (signature and pixels check out; the signer is not in your trust anchors)"
    elif s["state"] in ("Valid", "Trusted") and not s["failures"] and not list(_chain_failures(s.get("ingredients", []))):
        head = "VALID but the signer is not trusted (--trusted was asked for)"
    else:
        head = "INVALID"
    lines = [f"{s['file']}: C2PA manifest {head}"]
    sig = s.get("signer") or {}
    if sig.get("common_name") or sig.get("issuer"):
        lines.append(f"signed by: {sig.get('common_name') or '?'} (issuer {sig.get('issuer') or '?'}, {sig.get('alg') or '?'})")
    if s.get("time"):
        lines.append(f"when: {s['time']} ({s['time_source']}{'; no trusted timestamp' if s['time_source'] != 'timestamp authority' else ''})")
    if s.get("claim_generator"):
        lines.append(f"made with: {s['claim_generator']}")
    for a in s.get("actions", []):
        extra = [x for x in (a.get("digitalSourceType", "").removeprefix(_IPTC), a.get("description")) if x]
        used = ", ".join(map(str, a.get("ingredients", [])))
        used = f" {used}" if a["action"] == "c2pa.opened" and used else (f" with inputs {used}" if used else "")
        lines.append(f"action: {a['action']}{used}" + (f" ({'; '.join(extra)})" if extra else ""))
    kinds = ", ".join(t.removeprefix(_IPTC) for t in s.get("digital_source_types", [])) or "none"
    lines.append(f"AI disclosure: {'yes, generative AI: ' + kinds if s.get('ai_generated') else 'no generative AI claimed (digital source type: ' + kinds + ')'}")
    own = s.get("editgraph")
    if own:
        seeds = ", ".join(f"{k}={v}" for k, v in (own.get("seeds") or {}).items()) or "none"
        models = ", ".join(f"{m['name']} {m['content_hash'][:16]}" for m in own.get("models", [])) or "none"
        lines.append(f"editgraph: workflow {own.get('workflow_name') or '?'} sha256 {own.get('workflow_sha256', '?')[:16]}..., seeds {seeds}, models {models}")
    ings = s.get("ingredients", [])
    if ings:
        n = generations(ings)
        lines.append(f"ingredients ({n} generation{'s' if n != 1 else ''}):")
        lines += _ingredient_lines(ings, "  ")
    for f in s["failures"]:
        lines.append(f"FAILED {f['code']}: {f['explanation']}")
    return "\n".join(lines) + "\n"


def _ingredient_lines(ingredients: list[dict[str, Any]], indent: str) -> list[str]:
    lines = []
    for ing in ingredients:
        if ing.get("manifest"):
            status = "manifest verified" if not ing["failures"] else "manifest INVALID: " + ", ".join(f["code"] for f in ing["failures"])
            who = (ing.get("signer") or {}).get("common_name")
            status += f", signed by {who}" if who else ""
            status += ", generative AI" if ing.get("ai_generated") else ""
        else:
            status = "no manifest of its own"
        lines.append(f"{indent}{ing['relationship']:<12} {ing['title']}  ({status})")
        lines += _ingredient_lines(ing.get("ingredients", []), indent + "  ")
    return lines
