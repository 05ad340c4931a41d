"""Each provider engine against the stand-in: the request it sends (as the stand-in received it),
what it makes of the answer, and every failure mode of the client."""

from __future__ import annotations

import pytest
import torch

from editgraph.engines.base import EditJob, Services
from editgraph.engines.client import _retry_after
from editgraph.engines.credentials import redact
from editgraph.engines.errors import MalformedResponse, NotConfigured, ProviderRefused, ProviderRejected, ProviderUnavailable
from editgraph.engines.registry import make_engine
from editgraph.engines.spend import Ledger
from editgraph.testing.standin import StandIn

from .conftest import KEYS


def _photo() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 48, 64, generator=g)
    mask = torch.zeros(1, 1, 48, 64)
    mask[..., 12:36, 16:48] = 1
    return image, mask


def test_openai_edit_sends_documented_multipart_and_bills_reported_tokens(standin):
    image, mask = _photo()
    ledger = Ledger()
    ref = torch.full((1, 3, 32, 32), 0.5)
    result = make_engine("openai:gpt-image-1").run(EditJob("a red apple", image, mask, (ref,), quality="low"), Services(ledger=ledger, node_id="e"))
    body = standin.bodies[-1]
    assert standin.requests == [("openai", "POST", "/openai/v1/images/edits")]
    assert body["images"] == 2 and body["mask"] is True  # image[] twice (source, reference), one mask
    assert body["fields"] == {"model": "gpt-image-1", "n": "1", "size": "1536x1024", "quality": "low"}  # 64x48 is landscape
    out = result.images[0]
    assert out.shape == image.shape  # resized back to the source
    keep = (mask < 0.5).expand_as(image)
    assert (out - image).abs()[keep].max() < 1 / 255 + 1e-6  # alpha-0 mask region only was painted
    assert (out - image).abs()[~keep].mean() > 0.05
    call = result.calls[0]
    # stand-in usage: text 2 tokens, 2 images x 323, output 1056 -> priced per million tokens
    expected = (2 * 5.00 + 646 * 10.00 + 1056 * 40.00) / 1e6
    assert call.cost_usd == pytest.approx(expected, abs=1e-6)
    assert call.request_id == "req-00001" and call.reproducible is False and call.seed is None
    assert ledger.spent == pytest.approx(expected, abs=1e-6)


def test_gemini_sends_inline_data_and_seed_and_reads_usage_metadata(standin):
    image, _ = _photo()
    result = make_engine("gemini:gemini-2.5-flash-image").run(EditJob("snow", image, seed=41, size="16:9"), Services())
    body = standin.bodies[-1]
    assert body["path"] == "/gemini/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert body["images"] == 1 and body["seed"] == 41
    assert body["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9"}
    assert body["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
    call = result.calls[0]
    assert call.usage == {"promptTokenCount": 267, "candidatesTokenCount": 1290, "totalTokenCount": 1557}
    assert call.cost_usd == pytest.approx((267 * 0.30 + 1290 * 30.0) / 1e6, abs=1e-6)
    assert call.request_id == "gem-00001" and call.seed == 41


def test_bfl_submits_polls_until_ready_and_downloads_without_the_key(standin):
    image, mask = _photo()
    result = make_engine("bfl:flux-pro-1.0-fill").run(EditJob("a plant", image, mask, seed=3), Services())
    paths = [p for _, _, p in standin.requests]
    assert paths[0] == "/bfl/v1/flux-pro-1.0-fill"
    assert paths[1:-1] == ["/bfl/v1/get_result"] * 3  # Pending, Pending, Ready
    assert paths[-1] == "/bfl/delivery/bfl-00001.png"
    assert standin.bodies[-1]["fields"] == ["image", "mask", "output_format", "prompt", "seed"]
    out = result.images[0]
    keep = (mask < 0.5).expand_as(image)
    assert (out - image).abs()[keep].max() < 1 / 255 + 1e-6  # white = inpaint, like our masks
    assert result.calls[0].cost_usd == 0.05 and result.calls[0].request_id == "bfl-00001"


def test_flux2_cost_is_the_credits_bfl_reports(standin):
    image, _ = _photo()
    result = make_engine("bfl:flux-2-pro").run(EditJob("dusk", image, seed=0), Services())
    assert result.calls[0].cost_usd == pytest.approx(0.045)  # 4.5 credits at $0.01
    assert standin.bodies[-1]["fields"] == ["height", "input_image", "output_format", "prompt", "seed", "width"]


def test_a_429_storm_recovers_honouring_retry_after(standin):
    image, _ = _photo()
    standin.fail_next("gemini", "429", times=3, retry_after=0.02)
    result = make_engine("gemini:gemini-2.5-flash-image").run(EditJob("snow", image), Services())
    assert standin.count("gemini") == 4
    assert result.images[0].shape == image.shape


def test_server_errors_and_dropped_connections_are_retried_then_give_up(standin):
    image, _ = _photo()
    standin.fail_next("openai", "500")
    standin.fail_next("openai", "drop")
    make_engine("openai:gpt-image-1").run(EditJob("x", image), Services())
    assert standin.count("openai") == 3
    standin.reset()
    standin.fail_next("openai", "500", times=10)
    with pytest.raises(ProviderUnavailable, match=r"gave up after 4 tries: HTTP 500: The server had an error"):
        make_engine("openai:gpt-image-1").run(EditJob("x", image), Services())
    assert standin.count("openai") == 4  # 1 + retries (3)


def test_a_refusal_is_not_retried_and_quotes_the_provider(standin):
    image, mask = _photo()
    ledger = Ledger()
    with pytest.raises(ProviderRefused, match="rejected as a result of our safety system.*moderation_blocked"):
        make_engine("openai:gpt-image-1").run(EditJob("x [refuse]", image, mask), Services(ledger=ledger))
    assert standin.count("openai") == 1
    assert ledger.spent == 0 and ledger.calls == []
    with pytest.raises(ProviderRefused, match="prompt blocked: PROHIBITED_CONTENT"):
        make_engine("gemini:gemini-2.5-flash-image").run(EditJob("x [refuse]", image), Services())
    with pytest.raises(ProviderRefused, match="Request Moderated.*Derivative Works Filter"):
        make_engine("bfl:flux-kontext-pro").run(EditJob("x [refuse]", image), Services())


def test_malformed_answers_are_errors(standin):
    image, _ = _photo()
    with pytest.raises(MalformedResponse, match="expected JSON, got '<html>gateway"):
        make_engine("openai:gpt-image-1").run(EditJob("[malformed]", image), Services())
    with pytest.raises(MalformedResponse, match="no image part.*I cannot draw today"):
        make_engine("gemini:gemini-2.5-flash-image").run(EditJob("[malformed]", image), Services())
    with pytest.raises(MalformedResponse, match="without a task id"):
        make_engine("bfl:flux-kontext-pro").run(EditJob("[malformed]", image), Services())
    standin.fail_next("openai", "malformed")
    with pytest.raises(MalformedResponse, match="expected JSON"):
        make_engine("openai:gpt-image-1").run(EditJob("x", image), Services())


def test_a_body_slower_than_the_timeouts_fails_as_unavailable(standin, tmp_path):
    from .conftest import engines_config

    cfg = engines_config(tmp_path)
    cfg["providers"]["openai"].update({"retries": 1, "read_timeout_s": 0.3})
    (tmp_path / "engines.json").write_text(__import__("json").dumps(cfg))
    standin.fail_next("openai", "slow", times=2)
    image, _ = _photo()
    with pytest.raises(ProviderUnavailable, match="timed out"):
        make_engine("openai:gpt-image-1").run(EditJob("x", image), Services())
    assert standin.count("openai") == 2


def test_a_bad_key_is_rejected_and_the_echoed_key_redacted(tmp_path, monkeypatch):
    with StandIn(key="sk-the-right-one") as s:
        monkeypatch.setenv("EDITGRAPH_OPENAI_BASE_URL", s.base_url("openai"))
        monkeypatch.setenv("EDITGRAPH_ENGINES_CONFIG", str(tmp_path / "none.json"))
        monkeypatch.setenv("OPENAI_API_KEY", KEYS["OPENAI_API_KEY"])
        image, _ = _photo()
        with pytest.raises(ProviderRejected) as info:
            make_engine("openai:gpt-image-1").run(EditJob("x", image), Services())
    text = str(info.value)
    assert "Incorrect API key provided" in text and "invalid_api_key" in text
    assert KEYS["OPENAI_API_KEY"][:8] not in text and KEYS["OPENAI_API_KEY"][-4:] not in text
    assert s.count() == 1  # a 401 is not retried


def test_no_key_is_not_configured_before_anything_is_sent(standin, monkeypatch):
    monkeypatch.delenv("BFL_API_KEY")
    image, _ = _photo()
    with pytest.raises(NotConfigured, match="BFL_API_KEY"):
        make_engine("bfl:flux-kontext-pro").run(EditJob("x", image), Services())
    assert standin.count() == 0


def test_redact_and_retry_after_parsing():
    secret = "sk-test-SECRET-0123456789abcdef"
    assert redact(f"bad key {secret}, or {secret[:8]}****{secret[-4:]}", [secret]) == "bad key ***, or ***"
    assert _retry_after("2.5") == 2.5
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: go now
    assert _retry_after("soon") is None


def test_an_engine_refuses_a_job_it_cannot_do_before_sending(standin):
    image, mask = _photo()
    with pytest.raises(Exception, match="cannot do a inpaint edit"):
        make_engine("gemini:gemini-2.5-flash-image").run(EditJob("x", image, mask), Services())
    assert standin.count() == 0
