"""Edit engines behind one contract: hosted providers (OpenAI GPT Image, Google Gemini image,
Black Forest Labs FLUX) over one robust HTTP client, local diffusion families, a dated price
table, a spend ledger, and the router that picks an engine per operation.

Nothing here touches the workflow document: credentials and endpoints come from the environment
or the user's config file (credentials.py), never from a node's params.
"""
