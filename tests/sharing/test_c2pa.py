"""Content Credentials (issue 17): signed C2PA manifests in saved images, and `editgraph verify`.

Every test makes its own throwaway ES256 chain (a self-signed root and a signer it issues); the
root is the verifier's trust anchor, so a valid signature reads "Trusted".
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from editgraph.version import __version__
from editgraph.sharing import c2pa as signing
from editgraph.sharing import metadata, provenance
from editgraph.testing.c2pa_identity import make_test_identity

from .conftest import pixels


COMPOSITE_AI = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"


@pytest.fixture(scope="session")
def identity(tmp_path_factory):
    return make_test_identity(tmp_path_factory.mktemp("c2pa-identity"))


@pytest.fixture
def signed_runs(monkeypatch, identity):
    """A signing identity configured through the environment, its root trusted by `verify`."""
    monkeypatch.setenv(signing.ENV_CERT, str(identity.chain))
    monkeypatch.setenv(signing.ENV_KEY, str(identity.key))
    monkeypatch.setenv(signing.ENV_TRUST, str(identity.root))
    return identity


def grade_workflow(path: Path, name: str = "brighten") -> Path:
    """load -> grade -> save: no model anywhere."""
    doc = {
        "name": name,
        "params": {"image": {"type": "path"}},
        "nodes": {
            "photo": {"type": "image.load", "params": {"path": "$image"}},
            "small": {"type": "image.resize", "inputs": {"image": "photo"}, "params": {"width": 96}},
            "graded": {"type": "grade", "inputs": {"image": "small"}, "params": {"exposure": 0.25}},
            "save": {"type": "image.save", "inputs": {"image": "graded"}, "params": {"path": "edit.png"}},
        },
    }
    path.write_text(json.dumps(doc))
    return path


def edit(cli, tmp_path, source: Path, out: str) -> Path:
    wf = grade_workflow(tmp_path / "grade.json")
    code, _, err = cli("run", wf, "--set", f"image={source}", "--out", tmp_path / out, "-q")
    assert code == 0, err
    return tmp_path / out / "edit.png"


def verify(cli, path, *flags) -> tuple[int, dict]:
    code, out, err = cli("verify", path, "--json", *flags)
    return code, json.loads(out)


def flip_last_pixel_byte(png: bytes) -> bytes:
    """The PNG with one byte of its last pixel changed (a valid PNG: IDAT re-deflated, CRCs
    right); every other chunk, the manifest store included, byte for byte as it was. The last
    filtered byte has no later byte predicted from it, so exactly one channel of one pixel moves."""
    chunks = list(metadata.png_chunks(png))
    raw = bytearray(zlib.decompress(b"".join(body for ctype, body in chunks if ctype == b"IDAT")))
    raw[-1] ^= 0x01
    out, placed = [metadata.PNG_SIGNATURE], False
    for ctype, body in chunks:
        if ctype == b"IDAT":
            if not placed:
                out.append(metadata.png_chunk(b"IDAT", zlib.compress(bytes(raw), 9)))
                placed = True
            continue
        out.append(metadata.png_chunk(ctype, body))
    return b"".join(out)


# --- fast: grade-only edits -------------------------------------------------------------------------


def test_grade_only_output_is_signed_trusted_and_not_labelled_generative(tmp_path, cli, signed_runs, photo_path):
    out = edit(cli, tmp_path, photo_path, "one")
    code, s = verify(cli, out)
    assert code == 0 and s["ok"] and s["state"] == "Trusted"
    assert s["signer"]["common_name"] == "editgraph test signer"
    assert [a["action"] for a in s["actions"]] == ["c2pa.opened", "c2pa.edited"]
    assert s["actions"][0]["ingredients"] == ["coffee.png"]
    edited = s["actions"][1]
    assert edited["softwareAgent"] == f"editgraph {__version__}"
    assert "digitalSourceType" not in edited and s["ai_generated"] is False  # a grade is not generative AI
    assert [(i["title"], i["relationship"], i["manifest"]) for i in s["ingredients"]] == [("coffee.png", "parentOf", None)]
    # The same honesty in the unsigned labels: no AI source type in XMP, none in the provenance.
    data = out.read_bytes()
    assert b"TrainedAlgorithmicMedia" not in metadata.read_xmp(data)
    info = provenance.read(data)
    assert info["digital_source_type"] == {"save": None}
    # The editgraph assertion is bound to the embedded workflow by its hash.
    canonical = json.dumps(info["workflow"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert s["editgraph"]["workflow_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert s["editgraph"]["key"] == info["keys"]["save"]
    code, text, _ = cli("show", out)
    assert code == 0 and "C2PA: signed manifest present" in text


def test_png_jpeg_and_webp_outputs_are_signed_once_and_keep_their_provenance(tmp_path, cli, signed_runs, photo_path):
    doc = json.loads(grade_workflow(tmp_path / "g.json").read_text())
    for ext in ("jpg", "webp"):
        doc["nodes"][f"save_{ext}"] = {"type": "image.save", "inputs": {"image": "graded"}, "params": {"path": f"edit.{ext}"}}
    (tmp_path / "g.json").write_text(json.dumps(doc))
    assert cli("run", tmp_path / "g.json", "--set", f"image={photo_path}", "--out", tmp_path / "out", "-q")[0] == 0
    for ext in ("png", "jpg", "webp"):
        out = tmp_path / "out" / f"edit.{ext}"
        data = out.read_bytes()
        code, s = verify(cli, out)
        assert code == 0 and s["state"] == "Trusted" and s["title"] == f"edit.{ext}", ext
        assert provenance.read(data)["workflow"]["name"] == "brighten", ext  # replayable as before
        assert s["manifests_in_store"] == 1, ext  # signed once (the photo had no manifest)
        # A changed byte in the middle of the compressed image data breaks the hard binding.
        broken = bytearray(data)
        broken[len(data) // 2] ^= 0x01
        (tmp_path / f"broken.{ext}").write_bytes(bytes(broken))
        code, s = verify(cli, tmp_path / f"broken.{ext}")
        assert code == 1 and "assertion.dataHash.mismatch" in {f["code"] for f in s["failures"]}, ext


def test_verify_without_the_root_still_checks_the_signature_but_not_trust(tmp_path, cli, signed_runs, photo_path, monkeypatch):
    out = edit(cli, tmp_path, photo_path, "one")
    monkeypatch.delenv(signing.ENV_TRUST)
    code, s = verify(cli, out)
    assert code == 0 and s["state"] == "Valid" and s["trusted"] is False and s["ok"]
    code, s = verify(cli, out, "--trusted")
    assert code == 1 and not s["ok"]
    code, text, _ = cli("verify", out)
    assert code == 0 and "not in your trust anchors" in text


def test_unsigned_mode_keeps_todays_metadata_and_show_says_not_signed(tmp_path, cli, photo_path):
    out = edit(cli, tmp_path, photo_path, "one")
    data = out.read_bytes()
    assert metadata.c2pa_manifest(data) is None and provenance.read(data)["workflow"]["name"] == "brighten"
    code, text, _ = cli("show", out)
    assert code == 0 and "C2PA: not signed" in text
    code, s = verify(cli, out)
    assert code == 1 and s["signed"] is False and s["state"] == "unsigned"
    code, text, _ = cli("verify", out)
    assert code == 1 and "NOT SIGNED" in text


def test_signed_input_is_a_verified_ingredient_and_three_edits_make_three_generations(tmp_path, cli, signed_runs, photo_path):
    first = edit(cli, tmp_path, photo_path, "g1")
    second = edit(cli, tmp_path, first, "g2")
    third = edit(cli, tmp_path, second, "g3")

    code, s = verify(cli, second)
    assert code == 0 and s["ok"]
    parent = s["ingredients"][0]
    assert parent["relationship"] == "parentOf" and parent["manifest"] is not None
    assert parent["failures"] == [] and parent["signer"]["common_name"] == "editgraph test signer"  # verified

    code, s = verify(cli, third)
    assert code == 0 and s["ok"]
    chain, level = [], s["ingredients"]
    while level:
        chain.append((level[0]["title"], level[0]["manifest"] is not None, level[0]["failures"]))
        level = level[0].get("ingredients", [])
    assert chain == [("edit.png", True, []), ("edit.png", True, []), ("coffee.png", False, [])]
    assert len({s["manifest"], s["ingredients"][0]["manifest"], s["ingredients"][0]["ingredients"][0]["manifest"]}) == 3
    code, text, _ = cli("verify", third)
    assert "ingredients (3 generations)" in text


def test_a_parent_whose_credentials_broke_is_carried_and_reported(tmp_path, cli, signed_runs, photo_path):
    first = edit(cli, tmp_path, photo_path, "g1")
    broken = tmp_path / "broken.png"
    broken.write_bytes(flip_last_pixel_byte(first.read_bytes()))
    second = edit(cli, tmp_path, broken, "g2")
    code, s = verify(cli, second)
    assert s["state"] in ("Valid", "Trusted") and s["failures"] == []  # the new manifest itself is sound ...
    parent = s["ingredients"][0]
    assert parent["manifest"] is not None  # ... the parent's credentials are kept, not dropped ...
    assert "assertion.dataHash.mismatch" in {f["code"] for f in parent["failures"]}
    assert code == 1 and not s["ok"]  # ... and the chain does not verify


def test_signing_is_outside_every_cache_key(tmp_path, cli, signed_runs, photo_path, monkeypatch):
    wf = grade_workflow(tmp_path / "grade.json")
    args = ["run", wf, "--set", f"image={photo_path}", "-q"]
    assert cli(*args, "--out", tmp_path / "a", "--report", tmp_path / "a.json")[0] == 0
    for var in (signing.ENV_CERT, signing.ENV_KEY):
        monkeypatch.delenv(var)
    assert cli(*args, "--out", tmp_path / "b", "--report", tmp_path / "b.json")[0] == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert {n["status"] for n in report["nodes"].values()} == {"cached"}
    first, second = (tmp_path / d / "edit.png" for d in "ab")
    assert metadata.c2pa_manifest(first.read_bytes()) is not None and metadata.c2pa_manifest(second.read_bytes()) is None
    np.testing.assert_array_equal(pixels(first), pixels(second))


def test_identity_from_the_config_file_with_a_signer_command(tmp_path, cli, identity, photo_path, monkeypatch):
    # The key stays with the command (an HSM or KMS wrapper in real life): editgraph never reads it.
    signer = tmp_path / "sign.py"
    signer.write_text(
        "import sys\n"
        "from cryptography.hazmat.primitives import hashes, serialization\n"
        "from cryptography.hazmat.primitives.asymmetric import ec\n"
        "key = serialization.load_pem_private_key(open(sys.argv[1], 'rb').read(), None)\n"
        "sys.stdout.buffer.write(key.sign(sys.stdin.buffer.read(), ec.ECDSA(hashes.SHA256())))\n"
    )
    (tmp_path / "ids").mkdir()
    (tmp_path / "ids" / "chain.pem").write_bytes(identity.chain.read_bytes())
    config = tmp_path / "c2pa.toml"
    config.write_text(
        'cert_chain = "ids/chain.pem"\n'
        f"sign_command = {json.dumps([sys.executable, str(signer), str(identity.key)])}\n"
        f'trust_anchors = "{identity.root}"\n'
    )
    monkeypatch.setenv(signing.ENV_CONFIG, str(config))
    out = edit(cli, tmp_path, photo_path, "one")
    code, s = verify(cli, out)
    assert code == 0 and s["state"] == "Trusted"


@pytest.mark.parametrize(
    "env, message",
    [
        ({signing.ENV_CERT: "chain"}, "exactly one of EDITGRAPH_C2PA_KEY"),
        ({signing.ENV_CERT: "chain", signing.ENV_KEY: "missing"}, "EDITGRAPH_C2PA_KEY names"),
        ({signing.ENV_CERT: "chain", signing.ENV_KEY: "key", signing.ENV_ALG: "rot13"}, "unknown signing algorithm 'rot13'"),
        ({signing.ENV_CERT: "root", signing.ENV_KEY: "garbage"}, "cannot use the C2PA signing identity"),
        ({signing.ENV_CERT: "chain", signing.ENV_KEY: "other"}, "the key does not belong to the signing certificate"),
        ({signing.ENV_CERT: "chain", signing.ENV_COMMAND: "no-such-signer --key x"}, "no executable 'no-such-signer'"),
        ({signing.ENV_CERT: "chain", signing.ENV_KEY: "inline"}, "EDITGRAPH_C2PA_KEY must name a PEM file, not hold its contents"),
    ],
)
def test_a_misconfigured_identity_fails_before_anything_runs(tmp_path, cli, identity, photo_path, monkeypatch, env, message):
    (tmp_path / "garbage").write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    other = make_test_identity(tmp_path / "other").key  # a valid key, but not the certificate's
    files = {"chain": identity.chain, "key": identity.key, "root": identity.root, "missing": tmp_path / "nope.pem", "garbage": tmp_path / "garbage", "other": other}
    files["inline"] = identity.key.read_text()  # the key pasted where its path belongs
    for var, value in env.items():
        monkeypatch.setenv(var, str(files.get(value, value)))
    wf = grade_workflow(tmp_path / "grade.json")
    code, _, err = cli("run", wf, "--set", f"image={photo_path}", "--out", tmp_path / "out", "-q", "--report", tmp_path / "r.json")
    assert code == 5 and message in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "r.json").exists()
    assert "PRIVATE KEY" not in err and identity.key.read_text().splitlines()[1] not in err


# --- slow: the inpaint workflow with a tiny model ---------------------------------------------------


FAST = ["--set", "steps=2", "--set", "working_size=64", "-q"]


@pytest.mark.slow
def test_signed_inpaint_verifies_fails_on_one_pixel_byte_replays_and_never_leaks_the_key(tmp_path, cli, signed_runs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("run", "inpaint", "--out", "out", "--report", "report.json", *FAST)
    assert code == 0, err
    out = tmp_path / "out" / "inpaint.png"
    info = provenance.read(out.read_bytes())

    code, s = verify(cli, out)
    assert code == 0 and s["ok"] and s["state"] == "Trusted"
    assert [(a["action"], a.get("digitalSourceType")) for a in s["actions"]] == [("c2pa.opened", None), ("c2pa.edited", COMPOSITE_AI)]
    assert s["ai_generated"] is True and info["digital_source_type"] == {"save": COMPOSITE_AI}
    assert [(i["title"], i["relationship"]) for i in s["ingredients"]] == [("coffee.png", "parentOf"), ("coffee-spoon-mask.png", "inputTo")]
    own = s["editgraph"]
    assert own["seeds"] == {"denoise.seed": info["params"]["seed"]} == {"denoise.seed": 0}
    assert own["generative_nodes"] == ["denoise", "pixels"]
    assert [m["content_hash"] for m in own["models"]] == [m["content_hash"] for m in info["models"]]

    # Hard binding: one byte of one pixel changed, and the manifest no longer matches the file.
    tampered = tmp_path / "tampered.png"
    tampered.write_bytes(flip_last_pixel_byte(out.read_bytes()))
    assert int((pixels(tampered) != pixels(out)).sum()) == 1
    code, s = verify(cli, tampered)
    assert code == 1 and s["state"] == "Invalid" and "assertion.dataHash.mismatch" in {f["code"] for f in s["failures"]}

    # Replay: the manifest disturbs neither provenance nor pixels, and the new file is signed
    # again, citing the image whose workflow it replayed.
    code, _, err = cli("run", out, "--out", "again", "-q")
    assert code == 0, err
    again = tmp_path / "again" / "inpaint.png"
    np.testing.assert_array_equal(pixels(again), pixels(out))
    code, s = verify(cli, again)
    assert code == 0 and s["ok"]
    replayed = [i for i in s["ingredients"] if i["title"] == "inpaint.png"]
    assert len(replayed) == 1 and replayed[0]["relationship"] == "inputTo" and replayed[0]["manifest"] is not None
    assert replayed[0]["failures"] == [] and "replayed" in replayed[0]["description"]
    assert s["editgraph"]["replayed_from"] == "inpaint.png"

    # The key file's contents appear nowhere the run wrote: outputs, report, cache.
    from cryptography.hazmat.primitives import serialization

    pem = signed_runs.key.read_bytes()
    scalar = serialization.load_pem_private_key(pem, None).private_numbers().private_value.to_bytes(32, "big")
    secrets = [scalar, pem] + [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    cache_root = Path(__import__("os").environ["EDITGRAPH_CACHE_DIR"])
    written = [p for root in (tmp_path / "out", tmp_path / "again", cache_root) for p in root.rglob("*") if p.is_file()]
    written.append(tmp_path / "report.json")
    assert len(written) > 4
    for path in written:
        data = path.read_bytes()
        assert not any(secret in data for secret in secrets), path


def test_the_generative_flag_is_on_the_nodes_whose_output_a_trained_model_makes(cli):
    from editgraph.nodes.registry import load_builtin_nodes

    flagged = {name for name, cls in load_builtin_nodes().items() if cls.generative}
    assert {"denoise", "instruct", "refine", "vae.decode"} <= flagged
    assert not [n for n in flagged if n.split(".")[0] in ("image", "mask", "grade", "outpaint", "prompt", "latent", "model")] + [n for n in flagged if n == "vae.encode"]
    assert "generative" in cli("nodes", "denoise")[1] and "generative" not in cli("nodes", "grade")[1]
