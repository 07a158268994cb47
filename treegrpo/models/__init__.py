"""Adapters around diffusers and peft: loading, building and LoRA."""
