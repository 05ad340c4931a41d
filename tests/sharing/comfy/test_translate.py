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


def test_a_separate_vae_is_listed_and_partial_bypasses_it_while_the_lora_translates():
    prompt = base(**{
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 10, "cfg": 5, "sampler_name": "euler", "scheduler": "normal",
                                                    "denoise": 1, "model": ["20", 0], "positive": ["6", 0], "negative": ["7", 0],
                                                    "latent_image": ["5", 0]}},
        "20": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "style.safetensors", "strength_model": 0.8, "model": ["4", 0]}},
        "21": {"class_type": "VAELoader", "inputs": {"vae_name": "vae-ft-mse.safetensors"}},
    })
    prompt["8"]["inputs"]["vae"] = ["21", 0]
    strict = import_comfy(prompt)
    failed = {(i.node_id, i.class_type) for i in strict.issues}
    assert ("21", "VAELoader") in failed and not any(c.startswith("Lora") for _, c in failed)
    loose = import_comfy(prompt, partial=True)
    assert loose.document["nodes"]["lora_20"]["inputs"] == {"model": "model_4"}
    assert loose.document["nodes"]["denoise_3"]["inputs"]["model"] == "lora_20"
    # the one checkpoint's own VAE stands in for the separate file
    assert ("21", "VAELoader", "bypassed") in {(i.node_id, i.class_type, i.action) for i in loose.issues}
    assert loose.document["nodes"]["decode_8"]["inputs"] == {"model": "model_4", "latent": "denoise_3"}
    assert loose.document["nodes"]["save_9"]["inputs"] == {"image": "decode_8"}


def _with_loras(**loras):
    """The base graph with LoRA loaders between the checkpoint and the sampler / prompts."""
    last = max(loras, key=int)
    sampler = {"class_type": "KSampler", "inputs": {
        "seed": 1, "steps": 10, "cfg": 5, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
        "model": [last, 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}}
    return base(**{"3": sampler}, **loras)


def test_lora_loader_feeds_the_sampler_at_strength_model_and_the_prompts_at_strength_clip():
    prompt = _with_loras(**{"20": {"class_type": "LoraLoader", "inputs": {
        "lora_name": "styles/oil paint.safetensors", "strength_model": 0.8, "strength_clip": 0.6, "model": ["4", 0], "clip": ["4", 1]}}})
    prompt["6"]["inputs"]["clip"] = prompt["7"]["inputs"]["clip"] = ["20", 1]
    got = import_comfy(prompt)
    assert got.issues == []
    nodes = got.document["nodes"]
    assert nodes["lora_20"] == {"type": "model.lora", "version": nodes["lora_20"]["version"], "inputs": {"model": "model_4"},
                                "params": {"lora": "$lora", "scale": 0.8}}
    assert nodes["lora_clip_20"]["params"] == {"lora": "$lora", "scale": 0.6}
    assert nodes["text_3"]["inputs"] == {"model": "lora_clip_20"}
    assert nodes["denoise_3"]["inputs"]["model"] == "lora_20"
    # the VAE is the checkpoint's own: no LoRA on it
    assert nodes["decode_8"]["inputs"]["model"] == "model_4"
    assert got.document["params"]["lora"]["default"] == "oil paint"  # the file's stem: a registered name


def test_lora_loader_with_equal_strengths_is_one_node_and_strength_zero_is_none():
    prompt = _with_loras(**{"20": {"class_type": "LoraLoader", "inputs": {
        "lora_name": "a.safetensors", "strength_model": 0.7, "strength_clip": 0.7, "model": ["4", 0], "clip": ["4", 1]}}})
    prompt["6"]["inputs"]["clip"] = prompt["7"]["inputs"]["clip"] = ["20", 1]
    nodes = import_comfy(prompt).document["nodes"]
    assert [n for n, spec in nodes.items() if spec["type"] == "model.lora"] == ["lora_20"]
    assert nodes["text_3"]["inputs"] == {"model": "lora_20"} and nodes["denoise_3"]["inputs"]["model"] == "lora_20"
    prompt["20"]["inputs"].update(strength_model=0.0, strength_clip=0.0)
    nodes = import_comfy(prompt).document["nodes"]
    assert not [n for n in nodes.values() if n["type"] == "model.lora"]
    assert nodes["denoise_3"]["inputs"]["model"] == "model_4"


def test_lora_loader_model_only_leaves_the_prompt_encode_on_the_checkpoint():
    prompt = _with_loras(**{
        "20": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "a.safetensors", "strength_model": 1.0, "model": ["4", 0]}},
        "21": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "b.safetensors", "strength_model": -0.5, "model": ["20", 0]}},
    })
    got = import_comfy(prompt)
    nodes = got.document["nodes"]
    assert nodes["lora_21"]["inputs"] == {"model": "lora_20"} and nodes["lora_21"]["params"] == {"lora": "$lora_2", "scale": -0.5}
    assert nodes["denoise_3"]["inputs"]["model"] == "lora_21"
    assert nodes["text_3"]["inputs"] == {"model": "model_4"}
    assert [got.document["params"][p]["default"] for p in ("lora", "lora_2")] == ["a", "b"]


def test_a_lora_strength_beyond_the_node_range_is_listed():
    prompt = _with_loras(**{
        "20": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "a.safetensors", "strength_model": 25.0, "model": ["4", 0]}}})
    got = import_comfy(prompt)
    (lora,) = [i for i in got.issues if i.node_id == "20"]
    assert lora.class_type == "LoraLoaderModelOnly" and "strength 25.0 is outside" in lora.why and "-10.0..10.0" in lora.why
