"""Measurements that run in their own interpreter (`--worker`), so their memory and threads
go away after."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from labelprob.server.labels import Read
from labelprob.tools.bench.cpu import cpu_meter
from labelprob.tools.bench.settings import engine_args


def spec_reads(spec: dict[str, Any]) -> list[Read]:
    return [Read(tuple(prefix), tuple(candidates)) for prefix, candidates in spec["reads"]]


def offline_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """vLLM's LLM class on the same reads: all texts per call, roots first, then deeper reads."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=spec["model_path"], **(engine_args() | spec.get("engine_override", {})))
    reads = spec_reads(spec)
    stages = [[r for r in reads if not r.prefix], [r for r in reads if r.prefix]]

    def batches(prompts: list[list[int]]) -> list[tuple[list, list]]:
        out = []
        for stage in filter(None, stages):
            pairs = [(p, r) for p in prompts for r in stage]
            inputs = [TokensPrompt(prompt_token_ids=[*p, *r.prefix]) for p, r in pairs]
            params = [
                SamplingParams(
                    max_tokens=1,
                    temperature=0.0,
                    detokenize=False,
                    logprob_token_ids=list(r.candidates),
                )
                for _, r in pairs
            ]
            out.append((inputs, params))
        return out

    def run(prepared: list[tuple[list, list]]) -> None:
        for inputs, params in prepared:
            outputs = llm.generate(inputs, params, use_tqdm=False)
            if not all(o.outputs and o.outputs[0].logprobs for o in outputs):
                raise RuntimeError("a read returned no logprobs")

    run(batches(spec["warmup"]))
    Path(spec["spec_path"]).with_suffix(".ready").touch()
    rounds = 0
    for line in sys.stdin:  # one round per line: the path of its prompts
        path = Path(line.strip())
        prompts = json.loads(path.read_text())
        measured = batches(prompts)  # built before the clock, like a ready request
        with cpu_meter(os.getpgid(0)) as cpu:  # this process leads its group
            start = time.perf_counter()
            run(measured)
            seconds = time.perf_counter() - start
        result = {"texts": len(prompts), "seconds": seconds, "cpu": asdict(cpu)}
        Path(f"{path}.tmp").write_text(json.dumps(result))
        Path(f"{path}.tmp").rename(f"{path}.result")  # whole, or not there
        rounds += 1
    return {"rounds": rounds}


def transformers_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One plain forward pass per read, batch size 1, no KV cache kept between reads."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(spec["threads"])
    model = AutoModelForCausalLM.from_pretrained(
        spec["model_path"], dtype=getattr(torch, spec["dtype"])
    ).eval()
    reads = spec_reads(spec)

    def classify(prompt: list[int], reads: Sequence[Read] = reads) -> None:
        for r in reads:
            ids = torch.tensor([[*prompt, *r.prefix]])
            # logits_to_keep=1: the vocabulary projection for the last position only.
            logits = model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
            torch.log_softmax(logits, dim=-1)[list(r.candidates)].tolist()

    latencies = []
    with torch.inference_mode():
        for prompt in spec["warmup"]:
            classify(prompt, reads[:2])  # a few passes warm the kernels
        start = time.perf_counter()
        for prompt in spec["prompts"]:
            t = time.perf_counter()
            classify(prompt)
            latencies.append(time.perf_counter() - t)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "latencies_s": latencies}


WORKERS = {"offline": offline_worker, "transformers": transformers_worker}
