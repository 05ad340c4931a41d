"""The widget-order table, one case per node type: a UI node's positional widgets_values become
the named inputs ComfyUI's API format gives the same node (written from ComfyUI's INPUT_TYPES,
independently of editgraph/comfy/widgets.json)."""

from __future__ import annotations

import pytest

from editgraph.sharing.comfy.ui import ui_to_api, widget_order

# type -> (widgets_values as ComfyUI's editor saves them, the API inputs they are)
CASES = {
    "CheckpointLoaderSimple": (["sd15.safetensors"], {"ckpt_name": "sd15.safetensors"}),
    "CheckpointLoader": (["v1-inference.yaml", "sd15.ckpt"], {"config_name": "v1-inference.yaml", "ckpt_name": "sd15.ckpt"}),
    "VAELoader": (["vae-ft-mse.safetensors"], {"vae_name": "vae-ft-mse.safetensors"}),
    "CLIPLoader": (["clip_l.safetensors", "stable_diffusion", "default"], {"clip_name": "clip_l.safetensors", "type": "stable_diffusion", "device": "default"}),
    "UNETLoader": (["flux1-dev.safetensors", "default"], {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}),
    "LoraLoader": (["detail.safetensors", 0.7, 0.4], {"lora_name": "detail.safetensors", "strength_model": 0.7, "strength_clip": 0.4}),
    "LoraLoaderModelOnly": (["detail.safetensors", 0.6], {"lora_name": "detail.safetensors", "strength_model": 0.6}),
    "CLIPSetLastLayer": ([-2], {"stop_at_clip_layer": -2}),
    "CLIPTextEncode": (["a red cup"], {"text": "a red cup"}),
    "KSampler": ([123, "fixed", 25, 6.5, "dpmpp_2m", "karras", 0.8],
                 {"seed": 123, "steps": 25, "cfg": 6.5, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 0.8}),
    "KSamplerAdvanced": (["enable", 9, "increment", 30, 7.0, "euler", "normal", 5, 10000, "disable"],
                         {"add_noise": "enable", "noise_seed": 9, "steps": 30, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
                          "start_at_step": 5, "end_at_step": 10000, "return_with_leftover_noise": "disable"}),
    "SamplerCustom": ([True, 77, "fixed", 4.5], {"add_noise": True, "noise_seed": 77, "cfg": 4.5}),
    "KSamplerSelect": (["euler_ancestral"], {"sampler_name": "euler_ancestral"}),
    "BasicScheduler": (["simple", 12, 0.6], {"scheduler": "simple", "steps": 12, "denoise": 0.6}),
    "EmptyLatentImage": ([768, 512, 2], {"width": 768, "height": 512, "batch_size": 2}),
    "VAEEncode": ([], {}),
    "VAEEncodeForInpaint": ([8], {"grow_mask_by": 8}),
    "InpaintModelConditioning": ([False], {"noise_mask": False}),
    "SetLatentNoiseMask": ([], {}),
    "VAEDecode": ([], {}),
    "LoadImage": (["photo.png", "image"], {"image": "photo.png"}),
    "LoadImageMask": (["mask.png", "red", "image"], {"image": "mask.png", "channel": "red"}),
    "ImagePadForOutpaint": ([8, 16, 24, 32, 40], {"left": 8, "top": 16, "right": 24, "bottom": 32, "feathering": 40}),
    "ImageScale": (["area", 640, 480, "center"], {"upscale_method": "area", "width": 640, "height": 480, "crop": "center"}),
    "ImageScaleBy": (["lanczos", 1.5], {"upscale_method": "lanczos", "scale_by": 1.5}),
    "ImageScaleToTotalPixels": (["area", 1.0, 16], {"upscale_method": "area", "megapixels": 1.0, "resolution_steps": 16}),
    "ImageCompositeMasked": ([4, 12, True], {"x": 4, "y": 12, "resize_source": True}),
    "InstructPixToPixConditioning": ([], {}),
    "SaveImage": (["renders/cup"], {"filename_prefix": "renders/cup"}),
    "PreviewImage": ([], {}),
    "PrimitiveInt": ([5, "fixed"], {"value": 5}),
    "PrimitiveFloat": ([0.25], {"value": 0.25}),
    "PrimitiveString": (["hello"], {"value": "hello"}),
    "PrimitiveStringMultiline": (["two\nlines"], {"value": "two\nlines"}),
    "PrimitiveBoolean": ([True], {"value": True}),
    "ReferenceLatent": ([], {}),
    "FluxKontextImageScale": ([], {}),
    "TextEncodeQwenImageEdit": (["make it blue"], {"prompt": "make it blue"}),
    "TextEncodeQwenImageEditPlus": (["put the cup from picture 2 on the table"], {"prompt": "put the cup from picture 2 on the table"}),
    "DualCLIPLoader": (["clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default"],
                       {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors", "type": "flux", "device": "default"}),
    "FluxGuidance": ([2.5], {"guidance": 2.5}),
    "ConditioningZeroOut": ([], {}),
    "EmptySD3LatentImage": ([1024, 768, 1], {"width": 1024, "height": 768, "batch_size": 1}),
    "CFGNorm": ([1.0], {"strength": 1.0}),
    "ModelSamplingAuraFlow": ([3.1], {"shift": 3.1}),
    "ModelSamplingSD3": ([3.0], {"shift": 3.0}),
    "ModelSamplingFlux": ([1.15, 0.5, 1024, 1024], {"max_shift": 1.15, "base_shift": 0.5, "width": 1024, "height": 1024}),
}


def test_every_table_entry_has_a_case():
    assert sorted(widget_order()) == sorted(CASES)


@pytest.mark.parametrize("node_type", sorted(CASES))
def test_widget_values_name_the_api_inputs(node_type):
    values, expected = CASES[node_type]
    doc = {"nodes": [{"id": 1, "type": node_type, "mode": 0, "inputs": [], "outputs": [], "widgets_values": values}], "links": []}
    assert ui_to_api(doc) == {"1": {"class_type": node_type, "inputs": expected}}


def test_a_randomized_seed_becomes_random():
    doc = {"nodes": [{"id": 3, "type": "KSampler", "widgets_values": [5, "randomize", 20, 8, "euler", "normal", 1]}], "links": []}
    assert ui_to_api(doc)["3"]["inputs"]["seed"] == "random"
