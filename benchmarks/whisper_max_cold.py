"""Cold compile of the whisper_max graphs (run with an empty MAX cache and no artifacts):

    XDG_CACHE_HOME=$(mktemp -d) MODULAR_ENABLE_CACHE_LOGGING=1 AUDIO_PORTS_MAX_ARTIFACTS=0 \\
        /usr/bin/time python benchmarks/whisper_max_cold.py enc,step,cross [tiny.en]

(grep the log for ``kernelCount`` to see how many kernels MAX builds per graph)
"""
import sys, time
from ports.whisper_max import model as M, decoder as D
from ports.whisper_max.config import dims_for
d = dims_for(sys.argv[2] if len(sys.argv) > 2 else "tiny.en")
b = {"enc": (M.encoder_graph, (d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer, M.fused_attention_enabled(d.n_audio_state, d.n_audio_head))),
     "step": (D.step_graph, (d.n_vocab, d.n_text_ctx, d.n_text_state, d.n_text_head, d.n_text_layer, d.n_audio_ctx)),
     "cross": (D.cross_kv_graph, (d.n_audio_ctx, d.n_text_state, d.n_text_head, d.n_text_layer))}
t = time.perf_counter(); p = time.process_time()
for name in sys.argv[1].split(","):
    f, a = b[name]
    t0 = time.perf_counter(); M.session().compile(f(*a)); print(name, "compile wall", round(time.perf_counter() - t0, 1), flush=True)
print("all wall", round(time.perf_counter() - t, 1), "cpu", round(time.process_time() - p, 1))
