"""CPU time per stage of one flow-estimator call (one Euler step: CFG batch 2, T frames), the
port's or chatterbox's, same weights; one thread (run with OPENBLAS_NUM_THREADS=1
OMP_NUM_THREADS=1). Stages: time embedding, the 14 resnet blocks, the 56 transformer blocks, the
down/up convs, the final block; min over repeats after two warm-up calls. Usage:

    python -m ports_parity.s3gen.flow_profile port|original [T=150] [repeats=5]
"""
import sys
import time

import numpy as np
import torch

side = sys.argv[1]
T = int(sys.argv[2]) if len(sys.argv) > 2 else 150
reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
torch.set_num_threads(1)
from ports_parity.s3gen.originals import build_original_flow, port_from_original

flow_t = build_original_flow(False, 0)
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 80, T)).astype(np.float32)
mu = rng.standard_normal((2, 80, T)).astype(np.float32)
spk = rng.standard_normal((2, 80)).astype(np.float32)
cond = rng.standard_normal((2, 80, T)).astype(np.float32)
mu[1] = spk[1] = cond[1] = 0  # the CFG's unconditional half
tt = np.array([0.3, 0.3], np.float32)


def timer(sync):
    """tm(name, fn, *args): fn(*args), its CPU time added to totals[name]."""
    totals = {}

    def tm(name, fn, *args):
        t0 = time.process_time()
        r = fn(*args)
        sync(r)
        totals[name] = totals.get(name, 0.0) + time.process_time() - t0
        return r
    return tm, totals


if side == "original":
    from chatterbox.models.s3gen.decoder import mask_to_bias
    from chatterbox.models.s3gen.utils.mask import add_optional_chunk_mask

    est = flow_t.decoder.estimator
    X, MU, SPK, CO, TT = map(torch.from_numpy, (x, mu, spk, cond, tt))
    mask = torch.ones(2, 1, T)

    def bias_of(h):
        return mask_to_bias(add_optional_chunk_mask(h, mask.bool(), False, False, 0, 0, -1) == 1, h.dtype)

    def run():
        tm, totals = timer(lambda r: None)
        with torch.inference_mode():
            t = tm("time emb", lambda: est.time_mlp(est.time_embeddings(TT).to(TT.dtype)))
            h = tm("concat in", lambda: torch.cat([X, MU, SPK[:, :, None].expand(2, 80, T), CO], 1))
            blocks_all = [est.down_blocks[0]] + list(est.mid_blocks) + [est.up_blocks[0]]
            skip = None
            for i, blocks in enumerate(blocks_all):
                if i == len(blocks_all) - 1:
                    h = tm("glue", lambda a, s: torch.cat([a[:, :, :s.shape[-1]], s], 1), h, skip)
                h = tm("resnet", blocks[0], h, mask, t)
                h = tm("glue", lambda a: a.transpose(1, 2).contiguous(), h)
                am = tm("glue", bias_of, h)
                for tb in blocks[1]:
                    h = tm("transformer", lambda a, m, tb=tb: tb(hidden_states=a, attention_mask=m, timestep=t),
                           h, am)
                h = tm("glue", lambda a: a.transpose(1, 2).contiguous(), h)
                if i == 0:
                    skip = h
                if len(blocks) == 3:
                    h = tm("down/up conv", lambda a, c: c(a * mask), h, blocks[2])
            tm("final block+proj", lambda a: est.final_proj(est.final_block(a, mask) * mask) * mask, h)
        return totals
else:
    from ports.common.blas import import_mlx
    from ports.common.mlx_layers import pad_time

    mx = import_mlx()
    est = port_from_original(flow_t, False).decoder.estimator
    X, MU, CO = (mx.array(a.transpose(0, 2, 1)) for a in (x, mu, cond))
    SPK, TT = mx.array(spk), mx.array(tt)

    def run():
        tm, totals = timer(mx.eval)
        t = tm("time emb", est.time_embedding, TT)
        h = tm("concat in", lambda: mx.concatenate([X, MU, mx.broadcast_to(SPK[:, None, :], (2, T, 80)), CO], -1))
        blocks_all = [est.down_blocks[0]] + list(est.mid_blocks) + [est.up_blocks[0]]
        skip = None
        for i, blocks in enumerate(blocks_all):
            if i == len(blocks_all) - 1:
                h = tm("glue", lambda a, s: mx.concatenate([a[:, :s.shape[1]], s], -1), h, skip)
            h = tm("resnet", blocks[0], h, None, t)
            for tb in blocks[1]:
                h = tm("transformer", tb, h, None)
            if i == 0:
                skip = h
            if len(blocks) == 3:
                h = tm("down/up conv", lambda a, c: c(pad_time(a, 2, 0)), h, blocks[2])
        tm("final block+proj", lambda a: est.final_proj(est.final_block(a, None)), h)
        return totals

for _ in range(2):
    run()
acc = {}
for _ in range(reps):
    t0 = time.process_time()
    totals = run()
    totals["TOTAL"] = time.process_time() - t0
    for k, v in totals.items():
        acc.setdefault(k, []).append(v)
for k, v in acc.items():
    print(f"{side:9s} T={T} {k:18s} {min(v) * 1e3:9.2f} ms")
