"""The plan of a real-scale MARS run, printed before anyone rents GPUs (`mars-eval train stage ... --dry-run`).

From a local Qwen2 directory (config.json only: the model is built on the meta device, no weights are read), a VQ
checkpoint and optionally a data source: parameters per group (text frozen as in the paper, expert, visual
embeddings, vision head), sequence length and tokens per optimizer step, the record count, and DeepSpeed's
ZeRO-3 estimate of model-state memory per GPU and per node (its `estimate_zero3_model_states_mem_needs`, the
function behind `estimate_zero3_model_states_mem_needs_all_live`, for each offload option). DeepSpeed's formula
counts Adam states for every parameter; MARS trains only the vision path, so the estimate is an upper bound.
"""

from __future__ import annotations

from pathlib import Path

GIB = 2**30
OFFLOADS = (("none", False, False), ("optimizer to CPU", True, False), ("optimizer + params to CPU", True, True))


def _group(name: str) -> str:
    if ".attn_vision." in name or ".mlp_vision." in name:
        return "visual expert"
    if name.startswith("embed_visual."):
        return "visual embeddings"
    if name.startswith("vision_head."):
        return "vision head"
    return "text (frozen)"


def training_plan(llm: str | Path, vq: str | Path, *, data: str | None = None, visual_expert: bool = True,
                  image_px: int = 256, caption_tokens: int = 120, global_batch: int = 256, gpus_per_node: int = 1,
                  nodes: int = 1) -> dict:
    import torch
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    from mars_eval.errors import MarsEvalError
    from mars_ref.config import MarsConfig
    from mars_ref.model import MarsModel
    from mars_ref.vq_formats import load_any_vq

    if not Path(vq).exists():
        raise MarsEvalError(f"VQ checkpoint not found: {vq}")
    vq_cfg = load_any_vq(vq).cfg
    f = vq_cfg.downsample_factor
    if image_px % f:
        raise MarsEvalError(f"image_px {image_px} is not a multiple of the VQ's downsampling factor {f}")
    cfg = MarsConfig.from_hf_qwen2(llm, vq_cfg.codebook_size, visual_expert)
    with torch.device("meta"):
        model = MarsModel(cfg)
    groups: dict[str, int] = {}
    trainable = 0
    for name, p in model.named_parameters():
        g = _group(name) if visual_expert else "all (trained: no-expert ablation)"
        groups[g] = groups.get(g, 0) + p.numel()
        trainable += p.numel() if model.is_trainable_name(name) else 0
    n_image = (image_px // f) ** 2
    seq = caption_tokens + 2 + n_image  # caption <boi> codes <eoi>
    # DeepSpeed's model_to_params, which dedups shared weights by data_ptr (0 for every meta tensor): parameters()
    # already yields a shared weight once, and the largest layer is the most parameters one module holds itself
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    memory = []
    for label, cpu_offload, cpu_offload_params in OFFLOADS:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(total, largest, gpus_per_node, nodes, cpu_offload,
                                                             cpu_offload_params, zero_init=True)
        memory.append({"offload": label, "per_gpu_gib": round(gpu / GIB, 2), "per_node_cpu_gib": round(cpu / GIB, 2)})
    plan = {"llm": str(llm), "vq": str(vq), "hidden_size": cfg.hidden_size, "layers": cfg.num_hidden_layers,
            "text_vocab": cfg.text_vocab_size, "codebook": cfg.codebook_size, "params": groups,
            "params_total": total, "params_trainable": trainable, "image_px": image_px, "image_tokens": n_image,
            "sequence_length": seq, "global_batch": global_batch, "tokens_per_step": global_batch * seq,
            "gpus": gpus_per_node * nodes, "zero3_model_states": memory,
            "zero3_note": "DeepSpeed's estimate counts optimizer states for all parameters (an upper bound here)"}
    if seq > cfg.max_position_embeddings:
        raise MarsEvalError(f"a sequence of {seq} tokens (caption {caption_tokens} + image {n_image} + 2) exceeds "
                            f"the LLM's {cfg.max_position_embeddings} positions")
    if data is not None:
        from mars_eval.sources import open_source

        plan["data"] = str(data)
        plan["records"] = open_source(data).count()
    return plan
