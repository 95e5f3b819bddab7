"""A LangChain chat model that runs a local GGUF in this process with llama.cpp.

It lets the agent propose prompts with no Ollama server and no network: the bundled
SmolLM2-135M-Instruct loads in under a second and writes tens of tokens per second on two CPU
cores. The weights are loaded once per process and per file, so building a chat model (which the
agent does for every temperature or seed it wants) costs nothing.

The binding is `xllamacpp`, a prebuilt wheel of llama.cpp's own server code. Its `Server` loads
the model and answers OpenAI-style chat requests in-process (`handle_chat_completions`): the
GGUF's chat template, the sampling, `response_format` with a JSON schema (turned into a grammar)
and the prompt-prefix cache are llama.cpp's. A few of its server habits are tamed at load:

- it logs every step to stderr: its verbosity threshold is set below every level;
- it also serves HTTP on a random loopback port: the web UI and slot endpoints are off and every
  other endpoint needs a random key that is never handed out, so only this process can use it;
- it installs its own SIGINT and SIGTERM handlers (to shut the server down): the process's
  handlers are put back right after the load, so Ctrl+C and a run's SIGTERM behave as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import secrets
import signal
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from neuron_search.services.model.bundled import embedded_llm_path

if TYPE_CHECKING:
    from langchain_core.callbacks import CallbackManagerForLLMRun
    from xllamacpp import Server

log = logging.getLogger(__name__)

# The model was trained on 8,192 tokens: an explainer request with 20 examples of up to 64 tokens,
# their marked activations and the instructions runs past 2,048.
N_CTX = 8192

# model_path -> (loaded model, lock). The server has one slot and queues requests itself, but
# calls go one at a time anyway, so that a seed gives the same answer however LangGraph schedules nodes.
_models: dict[str, tuple[Server, threading.Lock]] = {}
_load_lock = threading.Lock()

# llama.cpp's log verbosity threshold: a message is printed when its level (error 1 ... debug 4,
# plain output 0) is at most this, so -1 prints nothing. Failures still reach us as exceptions.
_QUIET = -1


# Threads llama.cpp uses for a model loaded from now on (0: every core this process may use); a
# run's --threads sets it (services/runtime.py use_threads), so the LLM and torch share one count.
_threads = 0


def set_threads(threads: int) -> None:
    """The thread count of models loaded after this call (one already loaded keeps its own)."""
    global _threads
    _threads = max(0, int(threads))


def _thread_count() -> int:
    return _threads or _cpu_count()


def _cpu_count() -> int:
    """Cores this process may use (the container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _KeepSignalHandlers:
    """Restores the C-level SIGINT and SIGTERM handlers the server's start-up replaces.

    Raw sigaction through libc rather than `signal.signal`, which only works on the main thread
    (LangGraph may load the model from a worker thread). Where libc is not at hand (not POSIX),
    it does nothing."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)
    _SIZE = 512  # larger than any platform's struct sigaction; it is only copied back

    def __enter__(self) -> _KeepSignalHandlers:
        self._saved: list[tuple[int, Any]] = []
        try:
            self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            sigaction = self._libc.sigaction
        except (OSError, AttributeError):
            return self
        for signum in self._SIGNALS:
            old = ctypes.create_string_buffer(self._SIZE)
            if sigaction(int(signum), None, old) == 0:
                self._saved.append((int(signum), old))
        return self

    def __exit__(self, *_: object) -> None:
        for signum, old in self._saved:
            self._libc.sigaction(signum, old, None)


def _params(model_path: str) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = model_path
    params.n_ctx = N_CTX
    params.n_parallel = 1  # one slot of N_CTX tokens
    params.fit_params = False  # keep N_CTX as asked (fitting may shrink it to the free memory)
    params.cpuparams.n_threads = _thread_count()
    params.cpuparams_batch.n_threads = _thread_count()
    # Flash attention would be llama.cpp's automatic choice here; off, greedy answers are the same
    # token for token as llama-cpp-python's, so runs stay comparable with earlier results.
    params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.warmup = False
    params.verbosity = _QUIET
    params.cache_ram_mib = 0  # no host-memory prompt cache; the slot still reuses a shared prefix
    params.reasoning_format = xllamacpp.common_reasoning_format.COMMON_REASONING_FORMAT_NONE  # text stays in content
    params.prefill_assistant = False  # a last AI message starts a new turn, as llama-cpp-python did
    # The loopback HTTP server the Server always starts: nothing there for anyone else.
    params.hostnames = ["127.0.0.1"]
    params.ui = False
    params.endpoint_slots = False
    params.endpoint_metrics = False
    params.endpoint_props = False
    params.api_keys = [secrets.token_hex(32)]
    params.n_threads_http = 1
    return params


def _loaded(model_path: str) -> tuple[Server, threading.Lock]:
    """The llama.cpp server for `model_path`, loaded on first use and then shared."""
    with _load_lock:
        if model_path not in _models:
            if not os.path.isfile(model_path):
                raise ValueError(f"Model path does not exist: {model_path}")
            from xllamacpp import Server

            params = _params(model_path)
            with _KeepSignalHandlers():
                server = Server(params)
            _models[model_path] = (server, threading.Lock())
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


def _complete(server: Server, request: dict[str, Any]) -> dict[str, Any]:
    """One chat completion; an error answer becomes an exception, as llama-cpp-python raised one."""
    answer = server.handle_chat_completions(request)
    if not isinstance(answer, dict) or not answer.get("choices"):
        error = answer.get("error", answer) if isinstance(answer, dict) else answer
        message = error.get("message", error) if isinstance(error, dict) else error
        raise RuntimeError(f"llama.cpp answered no completion: {message}")
    return answer


def _fallbacks(response_format: dict[str, Any] | None) -> list[dict[str, Any] | None]:
    """The response formats to try in turn: as asked, then any JSON, then free text. The schema
    goes through llama.cpp's converter, which rejects some ($ref it cannot resolve, a bad pattern...);
    llama-cpp-python fell back to plain JSON then, and so does this."""
    if not response_format:
        return [None]
    tries: list[dict[str, Any] | None] = [response_format]
    if response_format.get("type") == "json_object" and response_format.get("schema") is not None:
        tries.append({"type": "json_object"})
    tries.append(None)
    return tries


class ChatLlamaCpp(BaseChatModel):
    """Chat with a local .gguf through llama.cpp (the xllamacpp wheel), in-process (no server process)."""

    model_path: str
    temperature: float = 0.7
    max_tokens: int = 512
    seed: int | None = None
    # llama.cpp's default (1.0) lets a 135M model loop on one line until max_tokens; 1.1 stops most loops.
    repeat_penalty: float = 1.1
    # llama.cpp's structured output, e.g. {"type": "json_object", "schema": {...}}: a grammar built
    # from the schema constrains sampling, so even a 135M model answers parseable JSON.
    response_format: dict[str, Any] | None = None
    # With a count, each answer token's log-probability and its `top_logprobs` likeliest alternatives
    # (before the grammar) in response_metadata["logprobs"], as Ollama's chat model reports them.
    top_logprobs: int | None = None

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
            "top_logprobs": self.top_logprobs,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        server, lock = _loaded(self.model_path)
        request: dict[str, Any] = {
            "messages": [{"role": _role(m), "content": m.text} for m in messages],
            "temperature": kwargs.get("temperature", self.temperature),
            "repeat_penalty": kwargs.get("repeat_penalty", self.repeat_penalty),
            "cache_prompt": True,
            "stream": False,
        }
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None and max_tokens > 0:  # else up to the context, as llama-cpp-python
            request["max_tokens"] = max_tokens
        seed = kwargs.get("seed", self.seed)
        if seed is not None:  # else llama.cpp draws one
            request["seed"] = seed & 0xFFFFFFFF
        if stop:
            request["stop"] = list(stop)
        top_logprobs = kwargs.get("top_logprobs", self.top_logprobs)
        if top_logprobs:
            request["logprobs"], request["top_logprobs"] = True, top_logprobs

        tries = _fallbacks(kwargs.get("response_format", self.response_format))
        with lock:
            for i, response_format in enumerate(tries):
                if response_format is None:
                    request.pop("response_format", None)
                else:
                    request["response_format"] = response_format
                try:
                    completion = _complete(server, request)
                    break
                except Exception as error:
                    if i + 1 == len(tries):
                        raise
                    log.warning(
                        "llama.cpp could not use the response format %s (%s); trying %s.",
                        "schema" if response_format.get("schema") is not None else "json_object",
                        error,
                        "plain JSON" if tries[i + 1] else "free text",
                    )
        choice = completion["choices"][0]
        usage = completion.get("usage") or {}
        message = AIMessage(
            content=choice.get("message", {}).get("content") or "",
            response_metadata={
                "finish_reason": choice.get("finish_reason"),
                "model_path": self.model_path,
                **({"logprobs": (choice.get("logprobs") or {}).get("content")} if top_logprobs else {}),
            },
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
