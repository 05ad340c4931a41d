"""Sampler settings editgraph cannot reproduce are refused by name, never silently changed."""

from __future__ import annotations

import pytest

from editgraph.sharing.comfy import import_comfy

from .test_translate import base

WIRES = {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}


def _ksampler(**inputs):
    return {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 10, "cfg": 5, "sampler_name": "euler", "scheduler": "normal",
                                                  "denoise": 1.0, **WIRES, **inputs}}


def _advanced(**inputs):
    return {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "enable", "noise_seed": 1, "steps": 20, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal",
        "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable", **WIRES, **inputs}}


def _custom(add_noise=True):
    return {
        "3": {"class_type": "SamplerCustom", "inputs": {"add_noise": add_noise, "noise_seed": 5, "cfg": 4.0, "model": ["4", 0],
                                                         "positive": ["6", 0], "negative": ["7", 0], "sampler": ["10", 0],
                                                         "sigmas": ["11", 0], "latent_image": ["5", 0]}},
        "10": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "11": {"class_type": "BasicScheduler", "inputs": {"scheduler": "normal", "steps": 12, "denoise": 1.0, "model": ["4", 0]}},
    }


@pytest.mark.parametrize(
    "nodes, why",
    [
        ({"3": _ksampler(denoise=1.5)}, "denoise 1.5 is outside (0, 1]"),
        ({"3": _ksampler(seed=-1)}, "seed -1 is not a seed (an integer 0..2**64-1)"),
        ({"3": _advanced(return_with_leftover_noise="enable")}, "return_with_leftover_noise has no editgraph equivalent"),
        ({"3": _advanced(start_at_step=25)}, "start_at_step 25 must lie in 0..steps-1 (19)"),
        (_custom(add_noise=False), "add_noise off has no editgraph equivalent"),
    ],
    ids=["denoise", "seed", "leftover-noise", "start-step", "add-noise-off"],
)
def test_a_sampler_setting_without_an_equivalent_is_refused_by_name(nodes, why):
    result = import_comfy(base(**nodes))
    assert ("3", nodes["3"]["class_type"]) in [(i.node_id, i.class_type) for i in result.issues]
    assert why in [i.why for i in result.issues if i.node_id == "3"][0]
