"""A plain-numpy (float64) decoder forward pass, written from the architecture descriptions, used
as an independent reference for lsc.models.decoder."""

import math

import numpy as np


def rms_norm(x, w, eps, zero_centered):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * ((1.0 + w) if zero_centered else w)


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def silu(x):
    return x / (1 + np.exp(-x))


def rope(x, pos, theta):
    """x: [L, H, D]; pos: [L]. Rotation of pairs (i, i + D/2) by angle pos * theta^(-2i/D)."""
    d = x.shape[-1]
    half = d // 2
    freqs = theta ** (-np.arange(half) * 2.0 / d)
    ang = pos[:, None] * freqs[None, :]  # [L, half]
    c = np.cos(ang)[:, None, :]
    s = np.sin(ang)[:, None, :]
    z = (x[..., :half] + 1j * x[..., half:]) * (c + 1j * s)
    return np.concatenate([z.real, z.imag], axis=-1)


def forward(params, cfg, tokens, mask):
    """Logits float64[B, L, V]. params: the pure-dict state of DecoderLM as numpy arrays."""
    p = {k: v for k, v in params.items()}
    emb = np.asarray(p["embed"]["embedding"], np.float64)
    out = []
    for b in range(tokens.shape[0]):
        m = mask[b].astype(bool)
        pos = np.maximum(np.cumsum(m) - 1, 0).astype(np.float64)
        x = emb[tokens[b]]
        if cfg.embed_scale:
            x = x * math.sqrt(cfg.d_model)
        length = len(tokens[b])
        allowed = np.tril(np.ones((length, length), bool)) & m[None, :]
        for i in range(cfg.num_layers):
            lp = p["layers"][i]
            g = lambda t: np.asarray(t, np.float64)  # noqa: E731
            y = rms_norm(x, g(lp["attn_norm"]["scale"]), cfg.norm_eps, cfg.norm_zero_centered)
            q = np.einsum("le,ehd->lhd", y, g(lp["attn"]["q"]["kernel"]))
            k = np.einsum("le,ekd->lkd", y, g(lp["attn"]["k"]["kernel"]))
            v = np.einsum("le,ekd->lkd", y, g(lp["attn"]["v"]["kernel"]))
            q, k = rope(q, pos, cfg.rope_theta), rope(k, pos, cfg.rope_theta)
            rep = cfg.num_heads // cfg.num_kv_heads
            k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
            s = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(cfg.head_dim)
            s = np.where(allowed[None], s, -1e30)
            s = np.exp(s - s.max(-1, keepdims=True))
            a = s / s.sum(-1, keepdims=True)
            o = np.einsum("hqk,khd->qhd", a, v)
            attn = np.einsum("qhd,hde->qe", o, g(lp["attn"]["o"]["kernel"]))
            act = gelu_tanh if cfg.activation == "gelu_tanh" else silu

            def mlp(z):
                h = act(z @ g(lp["mlp"]["gate"]["kernel"])) * (z @ g(lp["mlp"]["up"]["kernel"]))
                return h @ g(lp["mlp"]["down"]["kernel"])

            if cfg.parallel_block:
                x = x + attn + mlp(y)
            else:
                x = x + attn
                z = rms_norm(x, g(lp["mlp_norm"]["scale"]), cfg.norm_eps, cfg.norm_zero_centered)
                x = x + mlp(z)
        x = rms_norm(x, np.asarray(p["final_norm"]["scale"], np.float64), cfg.norm_eps,
                     cfg.norm_zero_centered)
        head = emb.T if cfg.tie_embeddings else np.asarray(p["lm_head"]["kernel"], np.float64)
        out.append(x @ head)
    return np.stack(out)
