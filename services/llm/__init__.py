"""The LLM side: the proposers (Ollama, the embedded llama.cpp model, any LangChain chat model), the request and the parser of their answers."""
