// Fused multi-head attention with flash-style online softmax, per-head attention
// entropy, and head skipping driven by a GPU-resident active-head list.
//
//   out[b, i, h, :] = softmax(scale * q[b, i, h, :] . k[b, :, h, :]) @ v[b, :, h, :]
//
// Tensors are addressed through (offset, batch stride, token stride, head stride) with
// head_dim contiguous, so q/k/v straight out of a (B, N, H*D) projection, or slices of
// a fused QKV projection, need no transpose. The N_q x N_k score matrix never exists:
// each thread owns one query row and streams keys/values through workgroup memory in
// tiles of KEY_TILE, keeping the running max m, the running sum l = sum exp(s - m) and
// t = sum exp(s - m) * s. The entropy of a query's attention distribution is then
//   H = m + ln(l) - t / l,
// normalised by ln(number of keys it attends to). Each workgroup writes the sums of its
// queries' normalised entropies and of their squares to `entropy_partial`;
// `entropy_reduce` turns those into per-head means and spreads (standard deviations over
// the queries: how differently the head treats different regions).
//
// Head skipping (the pruning path) uses indirect dispatch: `compact_heads` turns a
// per-(batch, head) mask into a list [n_active, n_inactive, active..., inactive...] and
// indirect dispatch arguments, so inactive heads get no workgroups at all (no QK^T, no
// softmax, no PV). `zero_heads` optionally clears their outputs; otherwise the previous
// contents survive (a cached value).

const QUERY_TILE: u32 = 64u;

struct Params {
    n_q: u32,
    n_k: u32,
    head_dim: u32,
    n_heads: u32,
    // (offset, batch stride, token stride, head stride) in elements, per tensor.
    q_layout: vec4<u32>,
    k_layout: vec4<u32>,
    v_layout: vec4<u32>,
    o_layout: vec4<u32>,
    scale: f32,
    // 1: query i attends to keys 0..=i only (CLIP's text encoder).
    causal: u32,
    // 1: workgroup_id.y indexes the active part of head_list; 0: it is the head slot.
    use_head_list: u32,
    // Query tiles per head (the x extent of the dispatch).
    n_query_tiles: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// q: (B, N_q, H, D) through q_layout
@group(0) @binding(1) var<storage, read> q: array<elem>;
// k: (B, N_k, H, D) through k_layout
@group(0) @binding(2) var<storage, read> k: array<elem>;
// v: (B, N_k, H, D) through v_layout
@group(0) @binding(3) var<storage, read> v: array<elem>;
// out: (B, N_q, H, D) through o_layout
@group(0) @binding(4) var<storage, read_write> out: array<elem>;
// entropy_partial: (B * H, n_query_tiles, 2) sums of H and H^2, f32
@group(0) @binding(5) var<storage, read_write> entropy_partial: array<f32>;
// head_list: [n_active, n_inactive, slots...] (B * H + 2); unread when use_head_list is 0
@group(0) @binding(6) var<storage, read> head_list: array<u32>;
#if COUNT_WORK
// work: [query-key scores computed]; a test-only probe that proves skipped heads do no work
@group(0) @binding(7) var<storage, read_write> work: array<atomic<u32>>;
#endif

// Head dimension in vec4 groups; odd head dims are zero-padded to a multiple of 4.
const D4_MAX: u32 = D_MAX / 4u;

var<workgroup> k_tile: array<array<vec4<f32>, D4_MAX>, KEY_TILE>;
var<workgroup> v_tile: array<array<vec4<f32>, D4_MAX>, KEY_TILE>;
var<workgroup> entropy_scratch: array<vec2<f32>, QUERY_TILE>;

// Loads 4 consecutive head-dim values starting at c (zeros past head_dim).
fn load4_k(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if c + i < params.head_dim {
            r[i] = f32(k[base + c + i]);
        }
    }
    return r;
}

fn load4_v(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if c + i < params.head_dim {
            r[i] = f32(v[base + c + i]);
        }
    }
    return r;
}

// Inner loops run over vec4 groups so that a thread's total loop iterations stay
// small: llvmpipe (lavapipe, GL) ends a shader's loops after 65535 iterations in all.
@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    var slot = wg.y;
    if params.use_head_list == 1u {
        slot = head_list[2u + wg.y];
    }
    let b = slot / params.n_heads;
    let h = slot % params.n_heads;
    let d = params.head_dim;
    let d4 = (d + 3u) / 4u;
    let qi = wg.x * QUERY_TILE + lid;
    let valid = qi < params.n_q;

    // Keys this workgroup needs: all of them, or up to its last query when causal.
    var keys_needed = params.n_k;
    if params.causal == 1u {
        keys_needed = min(params.n_k, (wg.x + 1u) * QUERY_TILE);
    }
    var my_keys = params.n_k;
    if params.causal == 1u {
        my_keys = min(params.n_k, qi + 1u);
    }

    var q_row: array<vec4<f32>, D4_MAX>;
    var acc: array<vec4<f32>, D4_MAX>;
    if valid {
        let qb = params.q_layout.x + b * params.q_layout.y + qi * params.q_layout.z + h * params.q_layout.w;
        for (var c4 = 0u; c4 < d4; c4++) {
            var r = vec4<f32>(0.0);
            for (var i = 0u; i < 4u; i++) {
                if c4 * 4u + i < d {
                    r[i] = f32(q[qb + c4 * 4u + i]);
                }
            }
            q_row[c4] = r * params.scale;
        }
    }
    var m = -3.0e38;
    var l = 0.0;
    var t = 0.0;

    let kb = params.k_layout.x + b * params.k_layout.y + h * params.k_layout.w;
    let vb = params.v_layout.x + b * params.v_layout.y + h * params.v_layout.w;
    for (var key0 = 0u; key0 < keys_needed; key0 += KEY_TILE) {
        for (var e = lid; e < KEY_TILE * d4; e += QUERY_TILE) {
            let j = e / d4;
            let c4 = e % d4;
            let key = key0 + j;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if key < params.n_k {
                kv = load4_k(kb + key * params.k_layout.z, c4 * 4u);
                vv = load4_v(vb + key * params.v_layout.z, c4 * 4u);
            }
            k_tile[j][c4] = kv;
            v_tile[j][c4] = vv;
        }
        workgroupBarrier();
        if valid {
            let tile_keys = min(KEY_TILE, my_keys - min(my_keys, key0));
            var scores: array<f32, KEY_TILE>;
            var tile_max = -3.0e38;
            for (var j = 0u; j < tile_keys; j++) {
                var s4 = vec4<f32>(0.0);
                for (var c4 = 0u; c4 < d4; c4++) {
                    s4 = fma(q_row[c4], k_tile[j][c4], s4);
                }
                let s = (s4.x + s4.y) + (s4.z + s4.w);
                scores[j] = s;
                tile_max = max(tile_max, s);
            }
            if tile_keys > 0u {
                let m_new = max(m, tile_max);
                let rescale = exp(m - m_new);
                l *= rescale;
                t *= rescale;
                for (var c4 = 0u; c4 < d4; c4++) {
                    acc[c4] *= rescale;
                }
                for (var j = 0u; j < tile_keys; j++) {
                    let p = exp(scores[j] - m_new);
                    l += p;
                    t = fma(p, scores[j], t);
                    for (var c4 = 0u; c4 < d4; c4++) {
                        acc[c4] = fma(vec4<f32>(p), v_tile[j][c4], acc[c4]);
                    }
                }
                m = m_new;
            }
        }
        workgroupBarrier();
    }

    var entropy = 0.0;
    if valid {
        let ob = params.o_layout.x + b * params.o_layout.y + qi * params.o_layout.z + h * params.o_layout.w;
        let inv_l = 1.0 / l;
        for (var c4 = 0u; c4 < d4; c4++) {
            let r = acc[c4] * inv_l;
            for (var i = 0u; i < 4u; i++) {
                if c4 * 4u + i < d {
                    out[ob + c4 * 4u + i] = elem(r[i]);
                }
            }
        }
        if my_keys > 1u {
            entropy = (m + log(l) - t * inv_l) / log(f32(my_keys));
        }
#if COUNT_WORK
        atomicAdd(&work[0], my_keys);
#endif
    }
    entropy_scratch[lid] = vec2<f32>(entropy, entropy * entropy);
    workgroupBarrier();
    for (var s = QUERY_TILE / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            entropy_scratch[lid] += entropy_scratch[lid + s];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        let p = (slot * params.n_query_tiles + wg.x) * 2u;
        entropy_partial[p] = entropy_scratch[0].x;
        entropy_partial[p + 1u] = entropy_scratch[0].y;
    }
}
