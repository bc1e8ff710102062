"""An LSTM written independently of cellstate's reference backend: one sequence at a time,
one gate at a time, the concatenation [h_{t-1}, x_t] of the seed's diagram, layer norm by hand.
Slow and obvious, for checking the variants."""

import torch


def _layer_norm(v, gain, bias, eps=1e-5):
    mean = v.mean()
    var = ((v - mean) ** 2).mean()
    out = (v - mean) / torch.sqrt(var + eps) * gain
    return out if bias is None else out + bias


def naive_lstm_layer(x, h0, c0, p, noise, lengths=None):
    """x (T, B, D), h0 (B, P), c0 (B, H); p: LSTMLayerParams; noise: StepNoise (masks given)."""
    T, B, _ = x.shape
    H = c0.shape[1]
    gates = ("i", "f", "g", "o") if p.forget_gate else ("i", "g", "o")
    rows = {name: slice(k * H, (k + 1) * H) for k, name in enumerate(gates)}
    out = torch.zeros(T, B, h0.shape[1], dtype=x.dtype)
    h_n, c_n = [], []
    for b in range(B):
        h, c = h0[b], c0[b]
        steps = T if lengths is None else int(lengths[b])
        for t in range(steps):
            h_in = h if noise.recurrent_mask is None else h * noise.recurrent_mask[b]
            xw = p.w_ih @ x[t, b]
            hw = p.w_hh @ h_in
            if p.ln_ih is not None:
                xw = _layer_norm(xw, p.ln_ih, None)
                hw = _layer_norm(hw, p.ln_hh, None)
            a = xw + hw  # W [x_t, h_{t-1}] split into its two column blocks
            if p.b_ih is not None:
                a = a + p.b_ih + p.b_hh
            pre = {name: a[r] for name, r in rows.items()}
            if p.w_ci is not None:
                pre["i"] = pre["i"] + p.w_ci * c
                if p.forget_gate:
                    pre["f"] = pre["f"] + p.w_cf * c
            i = 1 / (1 + torch.exp(-pre["i"]))
            g = torch.tanh(pre["g"])
            f = 1 / (1 + torch.exp(-pre["f"])) if p.forget_gate else 1.0
            c_new = f * c + i * g
            if p.w_co is not None:
                pre["o"] = pre["o"] + p.w_co * c_new
            o = 1 / (1 + torch.exp(-pre["o"]))
            shown = (
                c_new if p.ln_c_weight is None else _layer_norm(c_new, p.ln_c_weight, p.ln_c_bias)
            )
            h_new = o * torch.tanh(shown)
            if p.w_hr is not None:
                h_new = p.w_hr @ h_new
            if noise.zoneout_c is not None:
                z = noise.zoneout_c[t, b] if noise.zoneout_c.dim() == 3 else noise.zoneout_c
                c_new = z * c + (1 - z) * c_new
            if noise.zoneout_h is not None:
                z = noise.zoneout_h[t, b] if noise.zoneout_h.dim() == 3 else noise.zoneout_h
                h_new = z * h + (1 - z) * h_new
            h, c = h_new, c_new
            out[t, b] = h
        h_n.append(h)
        c_n.append(c)
    return out, torch.stack(h_n), torch.stack(c_n)
