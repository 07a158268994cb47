"""The LoRA file's bytes depend on its weights only (`treegrpo.models.lora`)."""

import torch


def test_a_safetensors_header_with_unsorted_metadata_is_rewritten_sorted_and_the_tensors_kept(tmp_path):
    """safetensors writes its metadata in a per-process hash order: the same LoRA came out as two different files.
    `sort_safetensors_metadata` (which `save_lora` applies) makes one file of them, byte for byte."""
    import json
    import struct

    from safetensors.torch import load_file

    from treegrpo.models.lora import sort_safetensors_metadata

    data = torch.arange(6, dtype=torch.float32).reshape(2, 3)

    def write(path, metadata_items):  # a safetensors file by hand, the metadata keys in the given order
        header = {"__metadata__": dict(metadata_items),
                  "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        path.write_bytes(struct.pack("<Q", len(text)) + text + data.numpy().tobytes())

    items = [("format", "pt"), ("lora_adapter_metadata", '{"r": 8, "note": "x"}')]
    write(tmp_path / "sorted.safetensors", items)
    write(tmp_path / "reversed.safetensors", items[::-1])
    assert (tmp_path / "sorted.safetensors").read_bytes() != (tmp_path / "reversed.safetensors").read_bytes()
    for name in ("sorted", "reversed"):
        sort_safetensors_metadata(tmp_path / f"{name}.safetensors")
    assert (tmp_path / "sorted.safetensors").read_bytes() == (tmp_path / "reversed.safetensors").read_bytes()
    torch.testing.assert_close(load_file(tmp_path / "reversed.safetensors")["w"], data, rtol=0, atol=0)
