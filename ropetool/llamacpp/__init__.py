"""What llama.cpp does with a GGUF: its keys, what each architecture loads, how it resolves rope settings, how a method reaches it, and running it."""
