"""Reading and writing files: GGUF headers and data, Hugging Face checkpoints and tokenizers, tensor encodings."""
