"""The weighted model-rewrite proxy: rules compiled for lookup, weighted picks, the aiohttp reverse proxy."""
