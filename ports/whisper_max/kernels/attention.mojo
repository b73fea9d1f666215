# The Whisper encoder's self-attention core as one MAX custom op (CPU): softmax(q k^T) v per
# head without writing the (heads, T, T) score matrix to memory. MAX 26.7 has a fused
# attention kernel only for GPUs; as separate ops (q @ k, softmax, p @ v) MAX keeps several
# score-sized buffers (54 MB each for one 30-s window of tiny) and runs 35 ms per layer here,
# this kernel 23 ms.
#
# Per work item: one head, R query rows. Scores for the R rows (R x S floats, in cache) in
# register tiles of R x 32 keys, then the row max, exp and row sums, then p @ v with the R x 64
# outputs in registers, summed over key chunks of at most KCHUNK terms (the accuracy the
# graph's key-chunked p @ v measured at: one fp32 chain over 1500 keys drifts 2-4x further
# from float64), and divided by the row sums.
#
# Inputs: the fused q/k/v projection (B, T, 3D) as the graph computes it (q is read from it in
# place), the keys as (B, H, 64, T), scaled and transposed so that keys are contiguous for the
# vector loads, the values as (B, H, T, 64), one head's rows contiguous (read in place from
# (B, T, 3D), rows 4.6 KB apart, this kernel measured 28 ms instead of 23), and q's scale
# (one float32). Output (B, T, H, 64), which is (B, T, D) for the out projection.
from extensibility import register, InputTensor, OutputTensor
from std.math import exp
from max.algorithm import parallelize
from std.memory.alloc import unsafe_alloc
from std.utils import StaticTuple

comptime W = 16          # float32 lanes of one AVX-512 vector (MAX targets the host's width)
comptime R = 6           # query rows per work item
comptime DV = 4          # value vectors per row: head width 64
comptime KCHUNK = 256    # p @ v summed over key chunks of at most this many terms
comptime F = SIMD[DType.float32, W]


@register("whisper_attention")
struct WhisperAttention:
    @staticmethod
    def execute[
        target: StaticString,
    ](
        output: OutputTensor[dtype=DType.float32, rank=4, static_spec=_],
        qkv: InputTensor[dtype=DType.float32, rank=3, static_spec=_],
        k: InputTensor[dtype=DType.float32, rank=4, static_spec=_],
        v: InputTensor[dtype=DType.float32, rank=4, static_spec=_],
        scale: InputTensor[dtype=DType.float32, rank=1, static_spec=_],
    ) raises:
        var B = k.dim_size(0)
        var H = k.dim_size(1)
        var DH = k.dim_size(2)
        var T = k.dim_size(3)
        var D = H * DH
        if DH != DV * W:
            raise Error("whisper_attention: the head width must be 64")
        if qkv.dim_size(0) != B or qkv.dim_size(1) != T or qkv.dim_size(2) != 3 * D:
            raise Error("whisper_attention: qkv must be (batch, T, 3 * heads * 64) for k's shape")
        if v.dim_size(0) != B or v.dim_size(1) != H or v.dim_size(2) != T or v.dim_size(3) != DH:
            raise Error("whisper_attention: v must be (batch, heads, T, 64) for k's shape")
        var S = T
        var QS = 3 * D  # stride between tokens in qkv
        var qp = qkv.unsafe_ptr()
        var vp = v.unsafe_ptr()
        var kp = k.unsafe_ptr()
        var op = output.unsafe_ptr()
        var qscale = scale.unsafe_ptr()[0]
        var tiles = (T + R - 1) // R
        var ntile = (S + 2 * W - 1) // (2 * W)
        var SP = ntile * 2 * W

        def work(item: Int) {imm}:
            var bh = item // tiles
            var b = bh // H
            var h = bh % H
            var r0 = (item % tiles) * R
            var rows = min(R, T - r0)
            var sc = unsafe_alloc[Float32](R * SP)
            var ktail = unsafe_alloc[Float32](DH * 2 * W)
            var ktail_k = type_of(kp)(unsafe_from_address=Int(ktail))
            var kb = kp + bh * DH * S
            var vb = vp + bh * S * DH
            # the R query rows times the scale, as the MAX-ops graph computes q (once here,
            # not in the inner loop); past the last row, the last row again (computed, not
            # stored)
            var qs = unsafe_alloc[Float32](R * DH)
            for r in range(R):
                var qrow = qp + (b * T + r0 + min(r, rows - 1)) * QS + h * DH
                for d in range(DH):
                    qs[r * DH + d] = qrow[d] * qscale
            # scores, R rows x 32 keys per register tile; the last partial tile reads a
            # zero-padded copy of its keys
            for t in range(ntile):
                var j = t * 2 * W
                var kt = kb + j
                var ks = S
                if j + 2 * W > S:
                    for d in range(DH):
                        for c in range(2 * W):
                            ktail[d * 2 * W + c] = kb[d * S + j + c] if j + c < S else Float32(0)
                    kt = ktail_k
                    ks = 2 * W
                var a0 = StaticTuple[F, R](fill=F(0))
                var a1 = StaticTuple[F, R](fill=F(0))
                for d in range(DH):
                    var k0 = (kt + d * ks).load[width=W]()
                    var k1 = (kt + d * ks + W).load[width=W]()
                    comptime for r in range(R):
                        var x = F(qs[r * DH + d])
                        a0[r] = x.fma(k0, a0[r])
                        a1[r] = x.fma(k1, a1[r])
                comptime for r in range(R):
                    (sc + r * SP + j).store(a0[r])
                    (sc + r * SP + j + W).store(a1[r])
            # softmax numerators exp(s - max) in place, and their sums
            var l = StaticTuple[Float32, R](fill=0)
            comptime for r in range(R):
                var row = sc + r * SP
                var mv = F(-3.4e38)
                var j = 0
                while j + W <= S:
                    mv = max(mv, (row + j).load[width=W]())
                    j += W
                var m = mv.reduce_max()
                while j < S:
                    m = max(m, row[j])
                    j += 1
                var acc = F(0)
                j = 0
                while j + W <= S:
                    var e = exp((row + j).load[width=W]() - m)
                    (row + j).store(e)
                    acc += e
                    j += W
                var tail = Float32(0)
                while j < S:
                    var e = exp(row[j] - m)
                    row[j] = e
                    tail += e
                    j += 1
                l[r] = acc.reduce_add() + tail
            # p @ v: R rows x 64 outputs in registers, summed over key chunks
            var o = StaticTuple[F, R * DV](fill=F(0))
            var j0 = 0
            while j0 < S:
                var j1 = min(S, j0 + KCHUNK)
                var c = StaticTuple[F, R * DV](fill=F(0))
                for j in range(j0, j1):
                    var vr = vb + j * DH
                    var v0 = vr.load[width=W]()
                    var v1 = (vr + W).load[width=W]()
                    var v2 = (vr + 2 * W).load[width=W]()
                    var v3 = (vr + 3 * W).load[width=W]()
                    comptime for r in range(R):
                        var p = F(sc[r * SP + j])
                        c[r * DV] = p.fma(v0, c[r * DV])
                        c[r * DV + 1] = p.fma(v1, c[r * DV + 1])
                        c[r * DV + 2] = p.fma(v2, c[r * DV + 2])
                        c[r * DV + 3] = p.fma(v3, c[r * DV + 3])
                comptime for i in range(R * DV):
                    o[i] = o[i] + c[i]
                j0 = j1
            comptime for r in range(R):
                if r < rows:
                    var orow = op + ((b * T + r0 + r) * H + h) * DH
                    comptime for i in range(DV):
                        (orow + i * W).store(o[r * DV + i] / l[r])
            sc.free()
            qs.free()
            ktail.free()

        parallelize(work, B * H * tiles)
