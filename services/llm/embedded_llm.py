"""A LangChain chat model that runs a local GGUF in this process with llama.cpp.

It lets the agent propose prompts with no Ollama server and no network: the bundled
SmolLM2-135M-Instruct loads in under a second and writes tens of tokens per second on two CPU
cores. The weights are loaded once per process and per file, so building a chat model (which the
agent does for every temperature or seed it wants) costs nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from services.model.bundled import embedded_llm_path

if TYPE_CHECKING:
    from langchain_core.callbacks import CallbackManagerForLLMRun
    from llama_cpp import Llama

# The model was trained on 8,192 tokens: an explainer request with 20 examples of up to 64 tokens,
# their marked activations and the instructions runs past 2,048.
N_CTX = 8192

# model_path -> (loaded model, lock). A llama.cpp context is not safe to use from two threads at
# once, and LangGraph may run nodes in a thread pool, so each model's calls go one at a time.
_models: dict[str, tuple[Llama, threading.Lock]] = {}
_load_lock = threading.Lock()


def _cpu_count() -> int:
    """Cores this process may use (the container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _loaded(model_path: str) -> tuple[Llama, threading.Lock]:
    """The llama.cpp model for `model_path`, loaded on first use and then shared."""
    with _load_lock:
        if model_path not in _models:
            from llama_cpp import Llama

            llama = Llama(model_path=model_path, n_ctx=N_CTX, n_threads=_cpu_count(), verbose=False)
            _models[model_path] = (llama, threading.Lock())
        return _models[model_path]


def _role(message: BaseMessage) -> str:
    """The chat-template role of a LangChain message."""
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    raise ValueError(f"ChatLlamaCpp takes system, human and AI messages, not {type(message).__name__}.")


class ChatLlamaCpp(BaseChatModel):
    """Chat with a local .gguf through llama-cpp-python, in-process (no server)."""

    model_path: str
    temperature: float = 0.7
    max_tokens: int = 512
    seed: int | None = None
    # llama.cpp's default (1.0) lets a 135M model loop on one line until max_tokens; 1.1 stops most loops.
    repeat_penalty: float = 1.1
    # llama.cpp's structured output, e.g. {"type": "json_object", "schema": {...}}: a grammar built
    # from the schema constrains sampling, so even a 135M model answers parseable JSON.
    response_format: dict[str, Any] | None = None

    @property
    def _llm_type(self) -> str:
        return "llama-cpp-embedded"

    @property
    def _identifying_params(self) -> Mapping[str, Any]:
        return {
            "model_path": self.model_path,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "repeat_penalty": self.repeat_penalty,
            "response_format": self.response_format,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        llama, lock = _loaded(self.model_path)
        chat = [{"role": _role(m), "content": m.text} for m in messages]
        with lock:
            completion = llama.create_chat_completion(
                messages=chat,
                temperature=kwargs.get("temperature", self.temperature),
                max_tokens=kwargs.get("max_tokens", self.max_tokens),
                seed=kwargs.get("seed", self.seed),
                repeat_penalty=kwargs.get("repeat_penalty", self.repeat_penalty),
                response_format=kwargs.get("response_format", self.response_format),
                stop=stop or [],
            )
        choice = completion["choices"][0]
        usage = completion.get("usage") or {}
        message = AIMessage(
            content=choice["message"].get("content") or "",
            response_metadata={"finish_reason": choice.get("finish_reason"), "model_path": self.model_path},
            usage_metadata={
                "input_tokens": usage.get("prompt_tokens", 0),
                "output_tokens": usage.get("completion_tokens", 0),
                "total_tokens": usage.get("total_tokens", 0),
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def embedded_chat_model(temperature: float = 0.7, seed: int | None = None) -> ChatLlamaCpp:
    """The bundled SmolLM2-135M-Instruct as a chat model, for runs with no Ollama server."""
    return ChatLlamaCpp(model_path=str(embedded_llm_path()), temperature=temperature, seed=seed)
