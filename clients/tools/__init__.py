"""labelprob's command-line tools over the client: `classify`, `eval`, `loadtest`, `bench`.

Loaded only when one of these commands runs: neither the client library nor `labelprob
serve` imports this package, and its dependencies (hdrhistogram, tqdm, matplotlib, aiohttp,
psutil) come with the `tools` extra.
"""
