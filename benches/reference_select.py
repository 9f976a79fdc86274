"""The reference weight selection, as techmonsterwang/iLLaMA llama2/weight_selection.py does it,
for one student per process (so that peak RSS is per student).

    python benches/reference_select.py TEACHER_DIR tiny|small|base OUT.pth

Same steps as the reference: every key of both shards is loaded into a dict with
safetensors.safe_open(framework="pt").get_tensor, the 7 block tensors of the first 12 layers are
built (q/k/v concatenated with torch.cat), uniform_element_selection is applied in the student's
state-dict order, and the OrderedDict is written with torch.save. The only differences: the student
shapes are computed here instead of instantiating models.illama (same shapes: mlp_ratio=4 gives
int(2 * 4D / 3) rounded up to a multiple of 256), and the shard names come from the index json.
Timings of the three phases go to stderr.
"""

import collections
import json
import os
import sys
import time

t_start = time.perf_counter()
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

t_import = time.perf_counter()

PRESETS = {"tiny": (192, 12), "small": (384, 12), "base": (768, 12)}


def mlp_hidden(dim):
    h = int(2 * (4 * dim) / 3)
    return 256 * ((h + 255) // 256)


def uniform_element_selection(wt, s_shape):
    # Verbatim from the reference.
    assert wt.dim() == len(s_shape), "Tensors have different number of dimensions"
    ws = wt.clone()
    for dim in range(wt.dim()):
        assert wt.shape[dim] >= s_shape[dim], "Teacher's dimension should not be smaller than student's dimension"
        if wt.shape[dim] % s_shape[dim] == 0:
            step = wt.shape[dim] // s_shape[dim]
            indices = torch.arange(s_shape[dim]) * step
        else:
            indices = torch.round(torch.linspace(0, wt.shape[dim] - 1, s_shape[dim])).to(torch.int64)
        ws = torch.index_select(ws, dim, indices)
    assert ws.shape == s_shape
    return ws


def student_shapes(dim, depth):
    """The 7 selected keys of iLLaMA's state dict, in its order."""
    h = mlp_hidden(dim)
    out = collections.OrderedDict()
    for i in range(depth):
        b = f"blocks.{i}."
        out[b + "norm1.weight"] = torch.Size([dim])
        out[b + "attn.qkv.weight"] = torch.Size([3 * dim, dim])
        out[b + "attn.proj.weight"] = torch.Size([dim, dim])
        out[b + "norm2.weight"] = torch.Size([dim])
        out[b + "mlp.fc1.weight"] = torch.Size([h, dim])
        out[b + "mlp.fc2.weight"] = torch.Size([dim, h])
        out[b + "mlp.fc3.weight"] = torch.Size([h, dim])
    return out


def main():
    path, student, output = sys.argv[1], sys.argv[2], sys.argv[3]
    dim, depth = PRESETS[student]

    # load llama2-7b-hf
    with open(os.path.join(path, "model.safetensors.index.json")) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    tensors_llama2 = {}
    for n in shards:
        file_name = os.path.join(path, n)
        with safe_open(file_name, framework="pt", device="cpu") as f:
            for k in f.keys():
                tensors_llama2[k] = f.get_tensor(k)
    t_load = time.perf_counter()

    tensors_llama2_to_illama = collections.OrderedDict()
    for i in range(12):
        L = "model.layers." + str(i)
        tensors_llama2_to_illama["blocks." + str(i) + ".norm1.weight"] = tensors_llama2[L + ".input_layernorm.weight"]
        tensors_llama2_to_illama["blocks." + str(i) + ".norm2.weight"] = tensors_llama2[L + ".post_attention_layernorm.weight"]
        tensors_llama2_to_illama["blocks." + str(i) + ".attn.qkv.weight"] = torch.cat(
            (
                tensors_llama2[L + ".self_attn.q_proj.weight"],
                tensors_llama2[L + ".self_attn.k_proj.weight"],
                tensors_llama2[L + ".self_attn.v_proj.weight"],
            ),
            dim=0,
        )
        tensors_llama2_to_illama["blocks." + str(i) + ".attn.proj.weight"] = tensors_llama2[L + ".self_attn.o_proj.weight"]
        tensors_llama2_to_illama["blocks." + str(i) + ".mlp.fc1.weight"] = tensors_llama2[L + ".mlp.gate_proj.weight"]
        tensors_llama2_to_illama["blocks." + str(i) + ".mlp.fc2.weight"] = tensors_llama2[L + ".mlp.down_proj.weight"]
        tensors_llama2_to_illama["blocks." + str(i) + ".mlp.fc3.weight"] = tensors_llama2[L + ".mlp.up_proj.weight"]
    teacher_weights = tensors_llama2_to_illama
    t_cat = time.perf_counter()

    selected = collections.OrderedDict()
    for key, shape in student_shapes(dim, depth).items():
        selected[key] = uniform_element_selection(teacher_weights[key], shape)
    t_select = time.perf_counter()

    torch.save(selected, output)
    t_save = time.perf_counter()
    print(
        f"reference {student}: import torch {t_import - t_start:.2f} s, load (get_tensor x{len(tensors_llama2)}) "
        f"{t_load - t_import:.2f} s, cat q/k/v {t_cat - t_load:.2f} s, select {t_select - t_cat:.2f} s, "
        f"torch.save {t_save - t_select:.2f} s, total {t_save - t_start:.2f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
