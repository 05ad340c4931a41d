"""Pure tensor and pixel functions the nodes use (no node API, no graph)."""
