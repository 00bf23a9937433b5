// Fused multi-head attention for software adapters whose lanes cannot share values (no
// subgroups: SwiftShader, the browser's WebGPU fallback; WARP), with the Params and
// bindings of attention.wgsl and the same results: output, per-query normalised
// entropy, head lists, causal masking, the work probe.
//
// SwiftShader gathers every load whose offset is not a compile-time constant and does
// not unroll loops, so the tiled kernel's rows indexed by a loop counter (the query, the
// accumulator, the staged keys) all became gathers and scatters. Here each invocation
// owns four consecutive queries (64 per workgroup) and walks their keys on its own, with
// no workgroup memory and no barriers; the scaled query rows and the accumulators are
// `Row` values whose vec4 fields are named, so every index is a constant and they stay
// in registers (or plain spill slots). Per block of 4 keys it loads 4 key rows and 4
// value rows (the only gathers) and uses each loaded value for 4 queries: 2 * HEAD_DIM
// FMAs per query and key, one exp per query and key, one running-max rescale per block.
// The running max, sum and entropy sums are vec4s with one component per query. Keys
// past a query's last (the last block, causal masking) are loaded clamped and masked to
// probability 0; queries past N_q are loaded clamped and not stored.
// (One query per invocation measured 1.2 GFLOP/s on SwiftShader, four 3.2.)
//
// Row width: 16 head-dim values, 32 with ROW32 (smaller head dims are zero-padded).
// Wider heads keep the tiled kernel: a 64-wide variant compiled for ~8 s in SwiftShader
// (the default model's text encoder went from 0.35 s to 8 s on first use) for attention
// that is a small part of the models that use it.
//
// Entropy: each query's normalised entropy and its square go to
// entropy_partial[slot][query] (one entry per query, as attention_cpu.wgsl);
// entropy_reduce in attention_heads.wgsl sums them.

// Invocations per workgroup; each owns four consecutive queries.
const LANES: u32 = 16u;
const MASKED: f32 = -3.0e38;

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
    // Entries per head in entropy_partial (n_q here: one per query).
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
// entropy_partial: (B * H, N_q, 2) sums of H and H^2, f32
@group(0) @binding(5) var<storage, read_write> entropy_partial: array<f32>;
// head_list: [n_active, n_inactive, slots...] (B * H + 2); unread when use_head_list is 0
@group(0) @binding(6) var<storage, read> head_list: array<u32>;
#if COUNT_WORK
// work: [query-key scores computed]; a test-only probe that proves skipped heads do no work
@group(0) @binding(7) var<storage, read_write> work: array<atomic<u32>>;
#endif

// A head-dim row: values 4i .. 4i + 3 in field ci.
struct Row {
    c0: vec4<f32>,
    c1: vec4<f32>,
    c2: vec4<f32>,
    c3: vec4<f32>,
#if ROW32
    c4: vec4<f32>,
    c5: vec4<f32>,
    c6: vec4<f32>,
    c7: vec4<f32>,
#endif
}

// Four values of a row from `c` on (0 past head_dim), per tensor: one function each
// (not one with a tensor argument) keeps the code SwiftShader compiles small.
fn q4(base: u32, c: u32) -> vec4<f32> {
    let i = base + min(vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.head_dim - 1u));
    let x = vec4<f32>(f32(q[i.x]), f32(q[i.y]), f32(q[i.z]), f32(q[i.w]));
    return select(vec4<f32>(0.0), x, vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(params.head_dim));
}

fn k4(base: u32, c: u32) -> vec4<f32> {
    let i = base + min(vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.head_dim - 1u));
    let x = vec4<f32>(f32(k[i.x]), f32(k[i.y]), f32(k[i.z]), f32(k[i.w]));
    return select(vec4<f32>(0.0), x, vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(params.head_dim));
}

fn v4(base: u32, c: u32) -> vec4<f32> {
    let i = base + min(vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(params.head_dim - 1u));
    let x = vec4<f32>(f32(v[i.x]), f32(v[i.y]), f32(v[i.z]), f32(v[i.w]));
    return select(vec4<f32>(0.0), x, vec4<u32>(c) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(params.head_dim));
}

// A query row starting at base.
fn q_row_at(base: u32) -> Row {
    var r: Row;
    r.c0 = q4(base, 0u);
    r.c1 = q4(base, 4u);
    r.c2 = q4(base, 8u);
    r.c3 = q4(base, 12u);
#if ROW32
    r.c4 = q4(base, 16u);
    r.c5 = q4(base, 20u);
    r.c6 = q4(base, 24u);
    r.c7 = q4(base, 28u);
#endif
    return r;
}

// A key row starting at base.
fn k_row_at(base: u32) -> Row {
    var r: Row;
    r.c0 = k4(base, 0u);
    r.c1 = k4(base, 4u);
    r.c2 = k4(base, 8u);
    r.c3 = k4(base, 12u);
#if ROW32
    r.c4 = k4(base, 16u);
    r.c5 = k4(base, 20u);
    r.c6 = k4(base, 24u);
    r.c7 = k4(base, 28u);
#endif
    return r;
}

// A value row starting at base.
fn v_row_at(base: u32) -> Row {
    var r: Row;
    r.c0 = v4(base, 0u);
    r.c1 = v4(base, 4u);
    r.c2 = v4(base, 8u);
    r.c3 = v4(base, 12u);
#if ROW32
    r.c4 = v4(base, 16u);
    r.c5 = v4(base, 20u);
    r.c6 = v4(base, 24u);
    r.c7 = v4(base, 28u);
#endif
    return r;
}

fn dot_row(a: Row, b: Row) -> f32 {
    var s = a.c0 * b.c0;
    s = fma(a.c1, b.c1, s);
    s = fma(a.c2, b.c2, s);
    s = fma(a.c3, b.c3, s);
#if ROW32
    s = fma(a.c4, b.c4, s);
    s = fma(a.c5, b.c5, s);
    s = fma(a.c6, b.c6, s);
    s = fma(a.c7, b.c7, s);
#endif
    return (s.x + s.y) + (s.z + s.w);
}

// a * r + p * b
fn axpby_row(a: Row, r: f32, p: f32, b: Row) -> Row {
    let rr = vec4<f32>(r);
    let pp = vec4<f32>(p);
    var o: Row;
    o.c0 = fma(pp, b.c0, a.c0 * rr);
    o.c1 = fma(pp, b.c1, a.c1 * rr);
    o.c2 = fma(pp, b.c2, a.c2 * rr);
    o.c3 = fma(pp, b.c3, a.c3 * rr);
#if ROW32
    o.c4 = fma(pp, b.c4, a.c4 * rr);
    o.c5 = fma(pp, b.c5, a.c5 * rr);
    o.c6 = fma(pp, b.c6, a.c6 * rr);
    o.c7 = fma(pp, b.c7, a.c7 * rr);
#endif
    return o;
}

// Stores values c .. c + 3 of a row (those below head_dim).
fn store4(base: u32, c: u32, x: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        if c + i < params.head_dim {
            out[base + c + i] = elem(x[i]);
        }
    }
}

fn store_row(base: u32, r: Row) {
    store4(base, 0u, r.c0);
    store4(base, 4u, r.c1);
    store4(base, 8u, r.c2);
    store4(base, 12u, r.c3);
#if ROW32
    store4(base, 16u, r.c4);
    store4(base, 20u, r.c5);
    store4(base, 24u, r.c6);
    store4(base, 28u, r.c7);
#endif
}

// a + p * b
fn axpy_row(a: Row, p: f32, b: Row) -> Row {
    return axpby_row(a, 1.0, p, b);
}

// The scores of one key row for the lane's four queries.
fn scores4(q0: Row, q1: Row, q2: Row, q3: Row, key: Row) -> vec4<f32> {
    return vec4<f32>(dot_row(q0, key), dot_row(q1, key), dot_row(q2, key), dot_row(q3, key));
}

// Writes query qi's output row and its entropy entry (queries past N_q are skipped).
fn finish(slot: u32, b: u32, h: u32, qi: u32, acc: Row, m: f32, l: f32, t: f32, keys: u32) {
    if qi >= params.n_q {
        return;
    }
    let ob = params.o_layout.x + b * params.o_layout.y + qi * params.o_layout.z + h * params.o_layout.w;
    let inv_l = 1.0 / l;
    store_row(ob, axpby_row(acc, inv_l, 0.0, acc));
    var entropy = 0.0;
    if keys > 1u {
        entropy = (m + log(l) - t * inv_l) / log(f32(keys));
    }
    let e = (slot * params.n_query_tiles + qi) * 2u;
    entropy_partial[e] = entropy;
    entropy_partial[e + 1u] = entropy * entropy;
#if COUNT_WORK
    atomicAdd(&work[0], keys);
#endif
}

@compute @workgroup_size(16)
fn attention_blocked(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    var slot = wg.y;
    if params.use_head_list == 1u {
        slot = head_list[2u + wg.y];
    }
    let b = slot / params.n_heads;
    let h = slot % params.n_heads;
    // This lane's four consecutive queries (rows past N_q are loaded clamped and not
    // stored).
    let qi0 = (wg.x * LANES + lane) * 4u;
    if qi0 >= params.n_q {
        return;
    }
    let qis = vec4<u32>(qi0) + vec4<u32>(0u, 1u, 2u, 3u);
    let q_rows = min(qis, vec4<u32>(params.n_q - 1u));
    // Keys each query attends to, and how far this lane walks.
    var my_keys = vec4<u32>(params.n_k);
    if params.causal == 1u {
        my_keys = min(vec4<u32>(params.n_k), q_rows + vec4<u32>(1u));
    }
    let keys_needed = max(max(my_keys.x, my_keys.y), max(my_keys.z, my_keys.w));

    let qb = params.q_layout.x + b * params.q_layout.y + h * params.q_layout.w;
    let q_step = params.q_layout.z;
    let raw0 = q_row_at(qb + q_rows.x * q_step);
    let raw1 = q_row_at(qb + q_rows.y * q_step);
    let raw2 = q_row_at(qb + q_rows.z * q_step);
    let raw3 = q_row_at(qb + q_rows.w * q_step);
    let q0 = axpby_row(raw0, params.scale, 0.0, raw0);
    let q1 = axpby_row(raw1, params.scale, 0.0, raw1);
    let q2 = axpby_row(raw2, params.scale, 0.0, raw2);
    let q3 = axpby_row(raw3, params.scale, 0.0, raw3);
    var a0: Row;
    var a1: Row;
    var a2: Row;
    var a3: Row;
    // Running max, sum of exp(s - m) and of exp(s - m) * s, one component per query.
    var m = vec4<f32>(MASKED);
    var l = vec4<f32>(0.0);
    var t = vec4<f32>(0.0);

    let kb = params.k_layout.x + b * params.k_layout.y + h * params.k_layout.w;
    let vb = params.v_layout.x + b * params.v_layout.y + h * params.v_layout.w;
    let k_step = params.k_layout.z;
    let v_step = params.v_layout.z;
    let last = params.n_k - 1u;
    for (var key0 = 0u; key0 < keys_needed; key0 += 4u) {
        let rows = min(vec4<u32>(key0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last));
        // s_j: key key0 + j's scores for the four queries, masked past each query's
        // keys.
        let live0 = vec4<u32>(key0) < my_keys;
        let live1 = vec4<u32>(key0 + 1u) < my_keys;
        let live2 = vec4<u32>(key0 + 2u) < my_keys;
        let live3 = vec4<u32>(key0 + 3u) < my_keys;
        let s0 = select(vec4<f32>(MASKED), scores4(q0, q1, q2, q3, k_row_at(kb + rows.x * k_step)), live0);
        let s1 = select(vec4<f32>(MASKED), scores4(q0, q1, q2, q3, k_row_at(kb + rows.y * k_step)), live1);
        let s2 = select(vec4<f32>(MASKED), scores4(q0, q1, q2, q3, k_row_at(kb + rows.z * k_step)), live2);
        let s3 = select(vec4<f32>(MASKED), scores4(q0, q1, q2, q3, k_row_at(kb + rows.w * k_step)), live3);
        // Every query's first block holds its key 0, so m is a real score from then on
        // and exp(MASKED - m) is 0.
        let m_new = max(m, max(max(s0, s1), max(s2, s3)));
        let r = exp(m - m_new);
        let zero = vec4<f32>(0.0);
        let p0 = select(zero, exp(s0 - m_new), live0);
        let p1 = select(zero, exp(s1 - m_new), live1);
        let p2 = select(zero, exp(s2 - m_new), live2);
        let p3 = select(zero, exp(s3 - m_new), live3);
        l = l * r + (p0 + p1) + (p2 + p3);
        t = t * r + p0 * select(zero, s0, live0) + p1 * select(zero, s1, live1)
            + p2 * select(zero, s2, live2) + p3 * select(zero, s3, live3);
        let v0 = v_row_at(vb + rows.x * v_step);
        a0 = axpby_row(a0, r.x, p0.x, v0);
        a1 = axpby_row(a1, r.y, p0.y, v0);
        a2 = axpby_row(a2, r.z, p0.z, v0);
        a3 = axpby_row(a3, r.w, p0.w, v0);
        let v1 = v_row_at(vb + rows.y * v_step);
        a0 = axpy_row(a0, p1.x, v1);
        a1 = axpy_row(a1, p1.y, v1);
        a2 = axpy_row(a2, p1.z, v1);
        a3 = axpy_row(a3, p1.w, v1);
        let v2 = v_row_at(vb + rows.z * v_step);
        a0 = axpy_row(a0, p2.x, v2);
        a1 = axpy_row(a1, p2.y, v2);
        a2 = axpy_row(a2, p2.z, v2);
        a3 = axpy_row(a3, p2.w, v2);
        let v3 = v_row_at(vb + rows.w * v_step);
        a0 = axpy_row(a0, p3.x, v3);
        a1 = axpy_row(a1, p3.y, v3);
        a2 = axpy_row(a2, p3.z, v3);
        a3 = axpy_row(a3, p3.w, v3);
        m = m_new;
    }

    finish(slot, b, h, qis.x, a0, m.x, l.x, t.x, my_keys.x);
    finish(slot, b, h, qis.y, a1, m.y, l.y, t.y, my_keys.y);
    finish(slot, b, h, qis.z, a2, m.z, l.z, t.z, my_keys.z);
    finish(slot, b, h, qis.w, a3, m.w, l.w, t.w, my_keys.w);
}
