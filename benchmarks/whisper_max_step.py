"""One greedy decoder step on tiny.en: the MAX step graph (whole step, execute only, with the
logits read back) against openai's torch decoder with its kv-cache hooks, same weights.

    PYTHONPATH=. python benchmarks/whisper_max_step.py
"""
import time, numpy as np, torch
from ports_parity.real_weights import whisper_tiny_en
from ports.whisper_max.pipeline import WhisperMax
p = WhisperMax.from_pretrained(whisper_tiny_en())
d = p.dims; dec = p.text_decoder
rng = np.random.default_rng(0)
feats = rng.standard_normal((1, 1500, 384)).astype(np.float32)
cross = dec.cross_kv(feats)
toks = np.array([[50257, 50362, 50363]])
logits, cache = dec.step(toks, cross, None)
def bench(f, n=30):
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return min(ts)*1e3
one = np.array([[440]])
print("step (S=1, P=3) ms", bench(lambda: dec.step(one, cross, cache)))
# raw execute with prepared args
P = cache[0].shape[2]
args = [np.ascontiguousarray(one, np.int64), np.arange(P, P+1, dtype=np.int64), np.zeros((1, P+1), np.float32)]
for i in range(d.n_text_layer): args += [cache[2*i], cache[2*i+1], cross[2*i], cross[2*i+1]]
print("execute only ms", bench(lambda: dec._step.execute(*args)))
print("execute+logits to_numpy ms", bench(lambda: dec._step.execute(*args)[0].to_numpy()))
# torch decoder step on same weights
m = p.model
from whisper.model import Whisper
x = torch.from_numpy(feats)
with torch.no_grad():
    kv = {}
    hooks = []
    cache_t, hooks = m.install_kv_cache_hooks()
    m.decoder(torch.from_numpy(toks), x, kv_cache=cache_t)
    t1 = torch.tensor([[440]])
    def tstep():
        with torch.no_grad():
            m.decoder(t1, x, kv_cache=cache_t)
    # note: cache grows each call, like real decoding
    print("torch decoder step ms", bench(tstep))
    for h in hooks: h.remove()
print("threads torch", torch.get_num_threads())
