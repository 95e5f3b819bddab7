"""The bundled models, run for real and offline: SmolLM2 through llama.cpp, Gemma 3 270M through TransformerBridge.

The first run on a machine converts the Gemma GGUF into the cache (about a minute on two cores);
later runs boot from the cache in seconds.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from neuron_search.services.model import bundled
from neuron_search.services.model.bundled import embedded_llm_path, embedded_subject_folder
from neuron_search.services.llm.embedded_llm import ChatLlamaCpp, embedded_chat_model


@pytest.fixture(scope="session")
def gemma_bridge():
    """The bundled subject model, booted once for the whole session (conversion + boot is the slow part)."""
    from transformer_lens import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(embedded_subject_folder()), device="cpu", dtype=torch.float32)
    bridge.eval()
    return bridge


def test_embedded_llm_answers_offline() -> None:
    # A shorter max_tokens than the default keeps the test quick if the small model rambles.
    model = embedded_chat_model(temperature=0.7, seed=0).model_copy(update={"max_tokens": 48})
    reply = model.invoke(
        [
            SystemMessage("You are a helpful assistant that writes plain English sentences."),
            HumanMessage("Write 5 short English sentences about numbers, one per line."),
        ]
    )
    assert isinstance(reply, AIMessage)
    assert any(line.strip() for line in reply.text.splitlines())
    assert reply.usage_metadata and reply.usage_metadata["output_tokens"] > 0


def test_embedded_llm_path_is_the_packaged_gguf() -> None:
    path = embedded_llm_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_chat_model_is_cheap_to_build_and_describes_itself() -> None:
    model = ChatLlamaCpp(model_path="/nonexistent/model.gguf", temperature=0.2, seed=7)
    assert model._llm_type == "llama-cpp-embedded"
    assert model._identifying_params["seed"] == 7
    assert model._identifying_params["model_path"] == "/nonexistent/model.gguf"


def test_embedded_subject_boots_in_transformer_bridge(gemma_bridge) -> None:
    assert gemma_bridge.cfg.n_layers == 18
    assert gemma_bridge.cfg.d_mlp == 2048
    with torch.no_grad():
        logits = gemma_bridge(["The capital of France is", "One, two, three, four,"])
    assert logits.shape[0] == 2 and logits.shape[-1] == gemma_bridge.cfg.d_vocab
    assert torch.isfinite(logits).all()


def test_conversion_runs_once_when_two_callers_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two concurrent first uses convert once, and the cache folder only appears complete."""
    monkeypatch.setenv(bundled.CACHE_ENV, str(tmp_path))
    calls: list[Path] = []

    def fake_convert(out: Path) -> None:
        calls.append(out)
        time.sleep(0.3)  # long enough for the second caller to reach the lock
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"")

    monkeypatch.setattr(bundled, "_convert_gemma", fake_convert)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(embedded_subject_folder())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(calls) == 1
    assert results == [tmp_path / "gemma3-270m"] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gemma3-270m.lock", "gemma3-270m"]
