// Head bookkeeping around attention.wgsl: per-head mean entropy, active-head list
// compaction with indirect dispatch arguments, and zeroing of skipped heads.

struct Params {
    // B * H.
    n_slots: u32,
    n_q: u32,
    n_query_tiles: u32,
    head_dim: u32,
    // Output layout (offset, batch stride, token stride, head stride) for zero_heads.
    o_layout: vec4<u32>,
    n_heads: u32,
    // 1: entropy_reduce only visits the active heads of head_list.
    use_head_list: u32,
    // x extent of the zero_heads dispatch (ceil(n_q * head_dim / 256)).
    zero_groups_x: u32,
    // decide_heads: a head is pruned when its normalised entropy is below this...
    threshold: f32,
    // ...unless its entropy spread over the queries exceeds this (the pattern guard).
    guard: f32,
    // decide_heads: a head is also pruned when its entropy is above this (near-uniform
    // attention, whose output is close to the mean of its values); > 1 never.
    threshold_above: f32,
    // value_mean: keys per head.
    n_k: u32,
    _pad0: u32,
    // value_mean: value layout (offset, batch stride, token stride, head stride).
    v_layout: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;

// ---- entropy_reduce ----
// entropy_partial: (B * H, n_query_tiles, 2) sums of normalised entropy and its square
@group(0) @binding(1) var<storage, read> entropy_partial: array<f32>;
// head_list: [n_active, n_inactive, slots...]
@group(0) @binding(2) var<storage, read> head_list: array<u32>;
// entropy: (2, B * H): per head the mean normalised entropy over its queries, in [0, 1],
// then its standard deviation over the queries (the spread), in [0, 0.5]
@group(0) @binding(3) var<storage, read_write> entropy: array<f32>;

@compute @workgroup_size(64)
fn entropy_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
    var slot = gid.x;
    if params.use_head_list == 1u {
        if gid.x >= head_list[0] {
            return;
        }
        slot = head_list[2u + gid.x];
    } else if slot >= params.n_slots {
        return;
    }
    var sum = vec2<f32>(0.0);
    for (var t = 0u; t < params.n_query_tiles; t++) {
        let p = (slot * params.n_query_tiles + t) * 2u;
        sum += vec2<f32>(entropy_partial[p], entropy_partial[p + 1u]);
    }
    let mean = sum / f32(params.n_q);
    entropy[slot] = mean.x;
    entropy[params.n_slots + slot] = sqrt(max(mean.y - mean.x * mean.x, 0.0));
}

// ---- decide_heads ----
// The pruning rule on the GPU: a head stays active unless its measured normalised
// entropy is below the threshold (threshold 0 keeps every head) and its entropy spread
// over the queries is at most the guard (a head that attends sharply in some regions
// and broadly in others, as on stripes and grids, is kept), or its entropy is above
// threshold_above (near-uniform attention). NaN keeps the head.
// decide_entropy: (2, B * H) mean normalised entropy, then spread, per head
@group(0) @binding(9) var<storage, read> decide_entropy: array<f32>;
// decide_mask: (B * H), 1 = compute the head
@group(0) @binding(10) var<storage, read_write> decide_mask: array<u32>;

@compute @workgroup_size(64)
fn decide_heads(@builtin(global_invocation_id) gid: vec3<u32>) {
    let slot = gid.x;
    if slot >= params.n_slots {
        return;
    }
    let mean = decide_entropy[slot];
    let prune = (mean < params.threshold && decide_entropy[params.n_slots + slot] <= params.guard)
        || mean > params.threshold_above;
    decide_mask[slot] = select(1u, 0u, prune);
}

// ---- compact_heads ----
// mask: (B * H), nonzero = head computed
@group(0) @binding(4) var<storage, read> mask: array<u32>;
// list_out: [n_active, n_inactive, active slots in order..., inactive slots in order...]
@group(0) @binding(5) var<storage, read_write> list_out: array<u32>;
// dispatch_args: [n_query_tiles, n_active, 1, zero_groups_x, n_inactive, 1]
@group(0) @binding(6) var<storage, read_write> dispatch_args: array<u32>;

var<workgroup> scan: array<u32, 256>;

// Inclusive prefix sum of `flag` over the workgroup (Hillis-Steele).
fn workgroup_scan(flag: u32, lid: u32) -> u32 {
    scan[lid] = flag;
    workgroupBarrier();
    for (var offset = 1u; offset < 256u; offset <<= 1u) {
        var add = 0u;
        if lid >= offset {
            add = scan[lid - offset];
        }
        workgroupBarrier();
        scan[lid] += add;
        workgroupBarrier();
    }
    let r = scan[lid];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn compact_heads(@builtin(local_invocation_index) lid: u32) {
    let n = params.n_slots;
    // Pass 1: count the active heads so inactive ones can be placed after them.
    var n_active = 0u;
    for (var base = 0u; base < n; base += 256u) {
        let i = base + lid;
        let flag = select(0u, 1u, i < n && mask[min(i, n - 1u)] != 0u);
        n_active += workgroupBroadcastLast(workgroup_scan(flag, lid), lid);
    }
    // Pass 2: scatter.
    var seen_active = 0u;
    for (var base = 0u; base < n; base += 256u) {
        let i = base + lid;
        let in_range = i < n;
        let is_active = in_range && mask[min(i, n - 1u)] != 0u;
        let prefix = workgroup_scan(select(0u, 1u, is_active), lid);
        let chunk_active = workgroupBroadcastLast(prefix, lid);
        if in_range {
            if is_active {
                list_out[2u + seen_active + prefix - 1u] = i;
            } else {
                // Inactive heads before i: i - (active heads up to and including i).
                let inactive_before = i - (seen_active + prefix);
                list_out[2u + n_active + inactive_before] = i;
            }
        }
        seen_active += chunk_active;
    }
    if lid == 0u {
        list_out[0] = n_active;
        list_out[1] = n - n_active;
        dispatch_args[0] = params.n_query_tiles;
        dispatch_args[1] = n_active;
        dispatch_args[2] = 1u;
        dispatch_args[3] = params.zero_groups_x;
        dispatch_args[4] = n - n_active;
        dispatch_args[5] = 1u;
    }
}

// The last lane's inclusive prefix (the chunk total), read by every lane.
fn workgroupBroadcastLast(prefix: u32, lid: u32) -> u32 {
    if lid == 255u {
        scan[0] = prefix;
    }
    workgroupBarrier();
    let total = scan[0];
    workgroupBarrier();
    return total;
}

// ---- zero_heads ----
// zero_list: the same list compact_heads wrote
@group(0) @binding(7) var<storage, read> zero_list: array<u32>;
// zero_out: attention output (B, N_q, H, D) through o_layout
@group(0) @binding(8) var<storage, read_write> zero_out: array<elem>;

// Where element e (query e / head_dim, channel e % head_dim) of head `slot` lives in
// the output.
fn skipped_out_index(slot: u32, e: u32) -> u32 {
    let b = slot / params.n_heads;
    let h = slot % params.n_heads;
    let o = params.o_layout;
    return o.x + b * o.y + (e / params.head_dim) * o.z + h * o.w + e % params.head_dim;
}

@compute @workgroup_size(256)
fn zero_heads(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let slot = zero_list[2u + zero_list[0] + wg.y];
    let e = wg.x * 256u + lid;
    if e >= params.n_q * params.head_dim {
        return;
    }
    zero_out[skipped_out_index(slot, e)] = elem(0.0);
}

// ---- value_mean + mean_heads ----
// A skipped near-uniform head outputs the mean of its values (what uniform attention
// would give): value_mean averages each inactive head's values over the keys, one
// workgroup per head (dispatched over the zero_heads arguments, so only x = 0 works),
// and mean_heads writes that mean to every query row of the head.
// mean_v: values, (B, N_k, H, D) through v_layout
@group(0) @binding(11) var<storage, read> mean_v: array<elem>;
// head_means: (B * H, head_dim) f32
@group(0) @binding(12) var<storage, read_write> head_means: array<f32>;

@compute @workgroup_size(64)
fn value_mean(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    if wg.x != 0u {
        return;
    }
    let slot = zero_list[2u + zero_list[0] + wg.y];
    let b = slot / params.n_heads;
    let h = slot % params.n_heads;
    let v = params.v_layout;
    for (var c = lid; c < params.head_dim; c += 64u) {
        let base = v.x + b * v.y + h * v.w + c;
        // Four partial sums: fewer dependent adds, and a quarter of the loop trips.
        var acc = vec4<f32>(0.0);
        var k = 0u;
        for (; k + 4u <= params.n_k; k += 4u) {
            acc += vec4<f32>(
                f32(mean_v[base + k * v.z]),
                f32(mean_v[base + (k + 1u) * v.z]),
                f32(mean_v[base + (k + 2u) * v.z]),
                f32(mean_v[base + (k + 3u) * v.z]),
            );
        }
        for (; k < params.n_k; k++) {
            acc.x += f32(mean_v[base + k * v.z]);
        }
        head_means[slot * params.head_dim + c] = (acc.x + acc.y + acc.z + acc.w) / f32(params.n_k);
    }
}

@compute @workgroup_size(256)
fn mean_heads(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let slot = zero_list[2u + zero_list[0] + wg.y];
    let e = wg.x * 256u + lid;
    if e >= params.n_q * params.head_dim {
        return;
    }
    zero_out[skipped_out_index(slot, e)] = elem(head_means[slot * params.head_dim + e % params.head_dim]);
}
