"""Translation of the ComfyUI node types the shipped workflows do not use: what each becomes."""

from __future__ import annotations

from editgraph.sharing.comfy import import_comfy


def base(**extra):
    """A text-to-image prompt: checkpoint, two prompts, an empty latent, decode, save."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "models/SD1.5/dreamshaper_8.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 768, "height": 512, "batch_size": 2}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cup", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blur", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "../../etc/renders/cup", "images": ["8", 0]}},
        **extra,
    }


def test_ksampler_advanced_from_a_later_step_is_a_partial_denoise_over_an_empty_latent():
    doc = import_comfy(base(**{"3": {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "enable", "noise_seed": 99, "steps": 20, "cfg": 6.0, "sampler_name": "uni_pc", "scheduler": "sgm_uniform",
        "start_at_step": 5, "end_at_step": 10000, "return_with_leftover_noise": "disable",
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}})).document
    assert doc["params"]["model"]["default"] == "dreamshaper_8"
    assert doc["nodes"]["latent_3"] == {"type": "latent.empty", "version": "1.0.1", "inputs": {"model": "model_4"},
                                        "params": {"width": 768, "height": 512, "batch": 2}}
    # 15 of 20 steps from step 5: strength 0.75, and int(20 * 0.75) = 15 steps run
    assert doc["nodes"]["denoise_3"]["params"] == {"steps": 20, "cfg": 6.0, "seed": 99, "scheduler": "unipc", "strength": 0.75}
    assert doc["nodes"]["save_9"]["params"] == {"path": "etc/renders/cup.png"}  # no way out of the output folder


def test_a_two_stage_advanced_sampler_split_is_listed():
    result = import_comfy(base(**{"3": {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "enable", "noise_seed": 1, "steps": 20, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal",
        "start_at_step": 0, "end_at_step": 12, "return_with_leftover_noise": "enable",
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}}))
    assert [(i.node_id, i.class_type) for i in result.issues][:1] == [("3", "KSamplerAdvanced")]
    assert "split across samplers" in result.issues[0].why


def test_sampler_custom_with_select_and_basic_scheduler():
    doc = import_comfy(base(**{
        "3": {"class_type": "SamplerCustom", "inputs": {"add_noise": True, "noise_seed": 5, "cfg": 4.0, "model": ["4", 0],
                                                         "positive": ["6", 0], "negative": ["7", 0], "sampler": ["10", 0],
                                                         "sigmas": ["11", 0], "latent_image": ["5", 0]}},
        "10": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler_ancestral"}},
        "11": {"class_type": "BasicScheduler", "inputs": {"scheduler": "normal", "steps": 12, "denoise": 1.0, "model": ["4", 0]}},
    })).document
    assert doc["nodes"]["denoise_3"]["params"] == {"steps": 12, "cfg": 4.0, "seed": 5, "scheduler": "euler_a", "strength": 1.0}


def test_clip_set_last_layer_is_clip_skip_and_primitives_are_values():
    doc = import_comfy(base(**{
        "3": {"class_type": "KSampler", "inputs": {"seed": ["12", 0], "steps": 10, "cfg": 5, "sampler_name": "ddim",
                                                    "scheduler": "normal", "denoise": 1, "model": ["4", 0],
                                                    "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": ["13", 0], "clip": ["10", 0]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["10", 0]}},
        "10": {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2, "clip": ["4", 1]}},
        "12": {"class_type": "PrimitiveInt", "inputs": {"value": 1234}},
        "13": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a cup\nof coffee"}},
    })).document
    assert doc["nodes"]["text_3"]["params"] == {"prompt": "a cup\nof coffee", "negative_prompt": "", "clip_skip": 1}
    assert doc["nodes"]["denoise_3"]["params"]["seed"] == 1234


def test_inpaint_model_conditioning_and_load_image_mask():
    doc = import_comfy({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15-inpaint.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a table", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "photo.png [input]"}},
        "11": {"class_type": "LoadImageMask", "inputs": {"image": "mask.png", "channel": "alpha"}},
        "12": {"class_type": "InpaintModelConditioning", "inputs": {"positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2],
                                                                    "pixels": ["10", 0], "mask": ["11", 0], "noise_mask": True}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 10, "cfg": 5, "sampler_name": "euler", "scheduler": "normal",
                                                    "denoise": 1, "model": ["4", 0], "positive": ["12", 0], "negative": ["12", 1],
                                                    "latent_image": ["12", 2]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }).document
    # ComfyUI inverts an alpha-channel mask (transparent = repaint)
    assert doc["nodes"]["mask_11"]["params"] == {"path": "$mask", "channel": "alpha", "invert": True}
    assert doc["params"]["mask"]["default"] == "mask.png"
    assert doc["params"]["image"]["default"] == "photo.png"  # ComfyUI's " [input]" folder tag dropped
    assert doc["nodes"]["denoise_3"]["inputs"] == {"model": "model_4", "cond": "text_3", "latent": "encode_3", "mask": "mask_11", "image": "image_10"}
    assert doc["nodes"]["save_9"]["params"] == {"path": "preview-9.png"}


def test_a_separate_vae_or_lora_is_listed_and_partial_bypasses_both():
    prompt = base(**{
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 10, "cfg": 5, "sampler_name": "euler", "scheduler": "normal",
                                                    "denoise": 1, "model": ["20", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                    "latent_image": ["5", 0]}},
        "20": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "style.safetensors", "strength_model": 0.8, "model": ["4", 0]}},
        "21": {"class_type": "VAELoader", "inputs": {"vae_name": "vae-ft-mse.safetensors"}},
    })
    prompt["8"]["inputs"]["vae"] = ["21", 0]
    strict = import_comfy(prompt)
    assert {(i.node_id, i.class_type) for i in strict.issues} >= {("20", "LoraLoaderModelOnly"), ("21", "VAELoader")}
    loose = import_comfy(prompt, partial=True)
    assert ("20", "LoraLoaderModelOnly", "bypassed") in {(i.node_id, i.class_type, i.action) for i in loose.issues}
    # the one checkpoint's own VAE stands in for the separate file
    assert ("21", "VAELoader", "bypassed") in {(i.node_id, i.class_type, i.action) for i in loose.issues}
    assert loose.document["nodes"]["decode_8"]["inputs"] == {"model": "model_4", "latent": "denoise_3"}
    assert loose.document["nodes"]["save_9"]["inputs"] == {"image": "decode_8"}
