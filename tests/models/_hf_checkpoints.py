"""Tiny random Hugging Face models for the import parity tests (needs torch and transformers)."""

import copy

# The config fields every tiny decoder of the parity tests shares.
BASE = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, pad_token_id=0, eos_token_id=1, bos_token_id=2,
            initializer_range=0.1, rms_norm_eps=1e-5)


def tiny_model(cases, base, case, seed=0):
    """``transformers`` model ``case`` of ``cases`` (``{case: (config class, model class, extra
    config fields)}``) with the ``base`` config fields, eager attention, and non-trivial norm
    scales (around 0 for Gemma's ``1 + w`` norms, around 1 otherwise) and biases."""
    import torch
    import transformers

    cfg_cls, model_cls, extra = cases[case]
    torch.manual_seed(seed)
    cfg = getattr(transformers, cfg_cls)(**base, **copy.deepcopy(extra))
    cfg._attn_implementation = "eager"
    model = getattr(transformers, model_cls)(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_((0.0 if case.startswith("gemma") else 1.0) + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def hf_logits(hf, tokens):
    """``float32[B, T, V]`` logits of ``transformers`` model ``hf`` on left-padded ``tokens``
    (pad id 0): attention mask and position ids as our decoders use them."""
    import numpy as np
    import torch

    mask = tokens != 0
    pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                 position_ids=torch.tensor(pos))
    return out.logits.float().numpy()
