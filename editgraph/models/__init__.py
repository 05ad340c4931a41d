"""Diffusion models, offline: loading (loader.load_model), the tiny models the project builds
(tiny.make_tiny), the in-process model cache (cache), content hashes (hashing), single-file
checkpoints (single_file) and the config folders they load with (family_configs).

Nothing is imported here: `import editgraph.models` must stay cheap (diffusers takes seconds).
"""
