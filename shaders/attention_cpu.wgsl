// Fused multi-head attention for software adapters with 8-lane subgroups (lavapipe on
// AVX2), with the Params and bindings of attention.wgsl and the same results: output,
// per-query normalised entropy, head lists, causal masking, the work probe.
//
// There an invocation is one SIMD lane and a workgroup runs on one CPU thread. This
// kernel uses no workgroup memory and no barriers: a workgroup is one subgroup of
// LANES = 8 invocations that owns QUERIES = 8 * QPL consecutive queries of one head,
// QPL (2 or 4, the QUERY_GROUPS define) per lane (queries i, i + 8, ...: their scaled q
// rows and output accumulators in registers, or spilled to the stack), and walks the
// keys in blocks of KEY_BLOCK = 8. Lane i loads key row i of the block (a lane-varying
// load: one scalar load per lane) and subgroupBroadcast hands each loaded vec4 to all 8
// lanes, so a loaded value feeds QUERIES queries; the value rows likewise.
// (One query per lane fed 8: on one lavapipe thread the default UNet's 16-wide
// self-attentions took 93-100 ms per guided step that way, 66 ms with two, as lavapipe
// spends most of this kernel on those loads; for narrow heads the exps and FMAs then
// outweigh the loads, and four queries per lane pay from a head dim of 32 on. Loads at workgroup-uniform addresses inside
// the key loop were measured no faster than the tiled kernel: llvmpipe still issues them
// per lane there.) Per key a lane does 4 * HEAD_DIM FMAs and two exps; each query's
// running-max rescale costs one more exp per block.
//
// HEAD_DIM is fixed at pipeline creation (a multiple of 4) so that the loops over it
// have constant trip counts (llvmpipe unrolls loops of <= 32 iterations and keeps the
// rows in registers instead of indexed scratch memory; it hoists nothing out of loops
// and ends an invocation's loops after 65535 iterations in total); the 8 keys of a
// block are written out. Keys past the end (the last block, causal masking) are loaded
// clamped and masked to probability 0, never branched around: every lane takes part in
// every broadcast.
//
// QUADS=1 (every k and v offset and stride a multiple of 4): key and value rows are
// read as four-element words (`Quad`), a quarter of the loads; on lavapipe a
// lane-varying load is a loop over the lanes whose cost grows far less than its width.
//
// Entropy: each lane writes its queries' normalised entropy and its square to
// entropy_partial[slot][query] (one entry per query, no reduction here);
// entropy_reduce in attention_heads.wgsl sums them.

const LANES: u32 = 8u;
// Queries per lane (QPL, 2 or 4): query p of lane i is the workgroup's query i + 8p.
const QPL: u32 = QUERY_GROUPS;
// Per-query arrays hold MAX_QPL entries (the code for queries 2 and 3 sits under
// `if QPL > 2u`, which must index in bounds); those past QPL are never used.
const MAX_QPL: u32 = 4u;
// Queries per workgroup (attention.rs's cpu_query_tile).
const QUERIES: u32 = QPL * LANES;
const KEY_BLOCK: u32 = 8u;
const D4: u32 = HEAD_DIM / 4u;
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
#if QUADS
// k: (B, N_k, H, D) through k_layout, in quads
@group(0) @binding(2) var<storage, read> k: array<Quad>;
// v: (B, N_k, H, D) through v_layout, in quads
@group(0) @binding(3) var<storage, read> v: array<Quad>;
#else
// k: (B, N_k, H, D) through k_layout
@group(0) @binding(2) var<storage, read> k: array<elem>;
// v: (B, N_k, H, D) through v_layout
@group(0) @binding(3) var<storage, read> v: array<elem>;
#endif
// out: (B, N_q, H, D) through o_layout
@group(0) @binding(4) var<storage, read_write> out: array<elem>;
// entropy_partial: (B * H, N_q, 2) each query's normalised entropy H and H^2, f32
@group(0) @binding(5) var<storage, read_write> entropy_partial: array<f32>;
// head_list: [n_active, n_inactive, slots...] (B * H + 2); unread when use_head_list is 0
@group(0) @binding(6) var<storage, read> head_list: array<u32>;
#if COUNT_WORK
// work: [query-key scores computed]; a test-only probe that proves skipped heads do no work
@group(0) @binding(7) var<storage, read_write> work: array<atomic<u32>>;
#endif

alias Row = array<vec4<f32>, D4>;
alias Rows = array<Row, MAX_QPL>;

// Elements c .. c + 3 of k and of v.
fn k_quad(c: u32) -> vec4<f32> {
#if QUADS
    return quad_values(k[c / 4u]);
#else
    return vec4<f32>(f32(k[c]), f32(k[c + 1u]), f32(k[c + 2u]), f32(k[c + 3u]));
#endif
}

fn v_quad(c: u32) -> vec4<f32> {
#if QUADS
    return quad_values(v[c / 4u]);
#else
    return vec4<f32>(f32(v[c]), f32(v[c + 1u]), f32(v[c + 2u]), f32(v[c + 3u]));
#endif
}

// Lane i's vec4 to every lane, for i = 0..7.
fn broadcast8(mine: vec4<f32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(
        subgroupBroadcast(mine, 0u), subgroupBroadcast(mine, 1u), subgroupBroadcast(mine, 2u),
        subgroupBroadcast(mine, 3u), subgroupBroadcast(mine, 4u), subgroupBroadcast(mine, 5u),
        subgroupBroadcast(mine, 6u), subgroupBroadcast(mine, 7u),
    );
}

// One query's partial scores (its elements `q`) against 8 keys' elements `k`: keys 0-3
// and 4-7.
fn dots8(q: vec4<f32>, k: array<vec4<f32>, 8>) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(
        vec4<f32>(dot(q, k[0]), dot(q, k[1]), dot(q, k[2]), dot(q, k[3])),
        vec4<f32>(dot(q, k[4]), dot(q, k[5]), dot(q, k[6]), dot(q, k[7])),
    );
}

// acc + the 8 keys' probabilities (keys 0-3 in lo, 4-7 in hi) times their value
// elements `v`, in key order.
fn weigh8(acc: vec4<f32>, lo: vec4<f32>, hi: vec4<f32>, v: array<vec4<f32>, 8>) -> vec4<f32> {
    var a = acc;
    a = fma(vec4<f32>(lo.x), v[0], a);
    a = fma(vec4<f32>(lo.y), v[1], a);
    a = fma(vec4<f32>(lo.z), v[2], a);
    a = fma(vec4<f32>(lo.w), v[3], a);
    a = fma(vec4<f32>(hi.x), v[4], a);
    a = fma(vec4<f32>(hi.y), v[5], a);
    a = fma(vec4<f32>(hi.z), v[6], a);
    return fma(vec4<f32>(hi.w), v[7], a);
}

// The 8 scores of a key block for each of this lane's queries: lane i loads key row i's
// values (row_mine is where its row starts) and subgroupBroadcast hands them to every
// lane. Returns keys 0-3 and 4-7 of query 0, then of query 1, ...
fn block_scores(q: ptr<function, Rows>, row_mine: u32) -> array<vec4<f32>, 2 * MAX_QPL> {
    var r: array<vec4<f32>, 2 * MAX_QPL>;
    for (var c4 = 0u; c4 < D4; c4++) {
        let k = broadcast8(k_quad(row_mine + c4 * 4u));
        let s0 = dots8((*q)[0][c4], k);
        r[0] += s0[0];
        r[1] += s0[1];
        let s1 = dots8((*q)[1][c4], k);
        r[2] += s1[0];
        r[3] += s1[1];
        if QPL > 2u {
            let s2 = dots8((*q)[2][c4], k);
            r[4] += s2[0];
            r[5] += s2[1];
            let s3 = dots8((*q)[3][c4], k);
            r[6] += s3[0];
            r[7] += s3[1];
        }
    }
    return r;
}

// Each query's acc += the block's probabilities (as block_scores returns them) times
// its value rows, shared as in block_scores.
fn block_accumulate(acc: ptr<function, Rows>, p: array<vec4<f32>, 2 * MAX_QPL>, row_mine: u32) {
    for (var c4 = 0u; c4 < D4; c4++) {
        let v = broadcast8(v_quad(row_mine + c4 * 4u));
        (*acc)[0][c4] = weigh8((*acc)[0][c4], p[0], p[1], v);
        (*acc)[1][c4] = weigh8((*acc)[1][c4], p[2], p[3], v);
        if QPL > 2u {
            (*acc)[2][c4] = weigh8((*acc)[2][c4], p[4], p[5], v);
            (*acc)[3][c4] = weigh8((*acc)[3][c4], p[6], p[7], v);
        }
    }
}

// One query's running softmax state: the largest score so far, the sum of exp(s - m)
// and of s * exp(s - m) (for the entropy).
struct Run {
    m: f32,
    l: f32,
    t: f32,
}

// Folds a block's scores (keys 0-3, 4-7; live_lo/hi: which attend) into one query's
// state; returns the probabilities and leaves acc rescaled.
fn fold_block(runs: ptr<function, array<Run, MAX_QPL>>, accs: ptr<function, Rows>, qp: u32, s_lo_in: vec4<f32>,
              s_hi_in: vec4<f32>, live_lo: vec4<bool>, live_hi: vec4<bool>) -> array<vec4<f32>, 2> {
    let s_lo = select(vec4<f32>(MASKED), s_lo_in, live_lo);
    let s_hi = select(vec4<f32>(MASKED), s_hi_in, live_hi);
    let s_max = max(s_lo, s_hi);
    let m_new = max((*runs)[qp].m, max(max(s_max.x, s_max.y), max(s_max.z, s_max.w)));
    let rescale = exp((*runs)[qp].m - m_new);
    for (var c4 = 0u; c4 < D4; c4++) {
        (*accs)[qp][c4] *= rescale;
    }
    let p_lo = select(vec4<f32>(0.0), exp(s_lo - vec4<f32>(m_new)), live_lo);
    let p_hi = select(vec4<f32>(0.0), exp(s_hi - vec4<f32>(m_new)), live_hi);
    (*runs)[qp].l = (*runs)[qp].l * rescale + dot(p_lo + p_hi, vec4<f32>(1.0));
    (*runs)[qp].t = (*runs)[qp].t * rescale + dot(p_lo, s_lo) + dot(p_hi, s_hi);
    (*runs)[qp].m = m_new;
    return array<vec4<f32>, 2>(p_lo, p_hi);
}

// Writes one query's output row and entropy.
fn finish(qi: u32, slot: u32, b: u32, h: u32, my_keys: u32, accs: ptr<function, Rows>, qp: u32, run: Run) {
    let ob = params.o_layout.x + b * params.o_layout.y + qi * params.o_layout.z + h * params.o_layout.w;
    let inv_l = 1.0 / run.l;
    for (var c4 = 0u; c4 < D4; c4++) {
        let r = (*accs)[qp][c4] * inv_l;
        let c = ob + c4 * 4u;
        out[c] = elem(r.x);
        out[c + 1u] = elem(r.y);
        out[c + 2u] = elem(r.z);
        out[c + 3u] = elem(r.w);
    }
    var entropy = 0.0;
    if my_keys > 1u {
        entropy = (run.m + log(run.l) - run.t * inv_l) / log(f32(my_keys));
    }
    let p = (slot * params.n_query_tiles + qi) * 2u;
    entropy_partial[p] = entropy;
    entropy_partial[p + 1u] = entropy * entropy;
#if COUNT_WORK
    atomicAdd(&work[0], my_keys);
#endif
}

// A query's row (its elements from qb on), scaled.
fn load_q(qb: u32) -> Row {
    var q_row: Row;
    for (var c4 = 0u; c4 < D4; c4++) {
        let c = qb + c4 * 4u;
        q_row[c4] = vec4<f32>(f32(q[c]), f32(q[c + 1u]), f32(q[c + 2u]), f32(q[c + 3u])) * params.scale;
    }
    return q_row;
}

@compute @workgroup_size(8)
fn attention_cpu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    // The workgroup is one subgroup of 8: local index order is subgroup lane order.
    var slot = wg.y;
    if params.use_head_list == 1u {
        slot = head_list[2u + wg.y];
    }
    let b = slot / params.n_heads;
    let h = slot % params.n_heads;
    // This lane's queries (rows past the end clamped for loading, not stored), and the
    // keys each attends to: all of them, or up to itself when causal; the keys this
    // workgroup visits: up to its last query when causal.
    var qi: array<u32, MAX_QPL>;
    var q_rows: array<u32, MAX_QPL>;
    var keys: array<u32, MAX_QPL>;
    for (var p = 0u; p < QPL; p++) {
        qi[p] = wg.x * QUERIES + lane + LANES * p;
        q_rows[p] = min(qi[p], params.n_q - 1u);
        keys[p] = params.n_k;
        if params.causal == 1u {
            keys[p] = min(params.n_k, q_rows[p] + 1u);
        }
    }
    var keys_needed = params.n_k;
    if params.causal == 1u {
        keys_needed = min(params.n_k, (wg.x + 1u) * QUERIES);
    }
    let q_base = params.q_layout.x + b * params.q_layout.y + h * params.q_layout.w;
    var q: Rows;
    var acc: Rows;
    // Every query's first block holds its key 0, so m is a real score from then on and
    // exp(MASKED - m) is 0.
    var runs: array<Run, MAX_QPL>;
    // Written out per query, as below: an accumulator or query row indexed by a loop
    // that llvmpipe does not unroll would put them all in memory.
    q[0] = load_q(q_base + q_rows[0] * params.q_layout.z);
    q[1] = load_q(q_base + q_rows[1] * params.q_layout.z);
    if QPL > 2u {
        q[2] = load_q(q_base + q_rows[2] * params.q_layout.z);
        q[3] = load_q(q_base + q_rows[3] * params.q_layout.z);
    }
    for (var p = 0u; p < QPL; p++) {
        runs[p] = Run(MASKED, 0.0, 0.0);
    }

    let kb = params.k_layout.x + b * params.k_layout.y + h * params.k_layout.w;
    let vb = params.v_layout.x + b * params.v_layout.y + h * params.v_layout.w;
    let k_step = params.k_layout.z;
    let v_step = params.v_layout.z;
    let last_key = params.n_k - 1u;
    for (var key0 = 0u; key0 < keys_needed; key0 += KEY_BLOCK) {
        let keys_lo = vec4<u32>(key0) + vec4<u32>(0u, 1u, 2u, 3u);
        let keys_hi = keys_lo + vec4<u32>(4u);
        let row_mine = min(key0 + lane, last_key);
        let s = block_scores(&q, kb + row_mine * k_step);
        var p: array<vec4<f32>, 2 * MAX_QPL>;
        let p0 = fold_block(&runs, &acc, 0u, s[0], s[1], keys_lo < vec4<u32>(keys[0]), keys_hi < vec4<u32>(keys[0]));
        p[0] = p0[0];
        p[1] = p0[1];
        let p1 = fold_block(&runs, &acc, 1u, s[2], s[3], keys_lo < vec4<u32>(keys[1]), keys_hi < vec4<u32>(keys[1]));
        p[2] = p1[0];
        p[3] = p1[1];
        if QPL > 2u {
            let p2 = fold_block(&runs, &acc, 2u, s[4], s[5], keys_lo < vec4<u32>(keys[2]), keys_hi < vec4<u32>(keys[2]));
            p[4] = p2[0];
            p[5] = p2[1];
            let p3 = fold_block(&runs, &acc, 3u, s[6], s[7], keys_lo < vec4<u32>(keys[3]), keys_hi < vec4<u32>(keys[3]));
            p[6] = p3[0];
            p[7] = p3[1];
        }
        block_accumulate(&acc, p, vb + row_mine * v_step);
    }
    if qi[0] < params.n_q {
        finish(qi[0], slot, b, h, keys[0], &acc, 0u, runs[0]);
    }
    if qi[1] < params.n_q {
        finish(qi[1], slot, b, h, keys[1], &acc, 1u, runs[1]);
    }
    if QPL > 2u {
        if qi[2] < params.n_q {
            finish(qi[2], slot, b, h, keys[2], &acc, 2u, runs[2]);
        }
        if qi[3] < params.n_q {
            finish(qi[3], slot, b, h, keys[3], &acc, 3u, runs[3]);
        }
    }
}
