// Model weights kept in the browser's Cache API, keyed by URL, so a reload does not
// download them again. Every file is checked against the server's manifest (size and
// SHA-256) both after a download and on a cache hit: a cache entry that was cut short
// or corrupted on disk is dropped and fetched again instead of reaching the engine.
//
// The Cache API (not OPFS) because a cached entry is just the Response we fetched: no
// file naming scheme, no locking, and it is available in every browser with WebGPU.
// Both it and crypto.subtle exist only in secure contexts (https, or http on
// localhost / 127.0.0.1); elsewhere files are fetched every time and only their size
// is checked, which the returned `verified` field says.

/** The cache's name; bump the version to drop every entry of an older layout. */
export const CACHE_NAME = "fovea-models-v1";

/** The SHA-256 of `bytes` as lowercase hex, or null where crypto.subtle is missing. */
export async function sha256Hex(bytes) {
  if (!globalThis.crypto?.subtle) return null;
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The model cache, or null where the Cache API is unavailable (or refused). */
export async function openCache() {
  if (!globalThis.caches) return null;
  try {
    return await caches.open(CACHE_NAME);
  } catch {
    // Some browsers throw in private windows; fetching still works.
    return null;
  }
}

/** Removes every cached weight file. */
export async function clearCache() {
  if (globalThis.caches) await caches.delete(CACHE_NAME);
}

/**
 * Why `bytes` does not match `expected` ({size, sha256}), or null when it does.
 * A missing hash function skips the hash (size only).
 */
async function mismatch(bytes, expected) {
  if (expected.size != null && bytes.byteLength !== expected.size) {
    return `${bytes.byteLength} bytes, expected ${expected.size}`;
  }
  if (expected.sha256) {
    const got = await sha256Hex(bytes);
    if (got !== null && got !== expected.sha256.toLowerCase()) {
      return `SHA-256 ${got.slice(0, 12)}…, expected ${expected.sha256.slice(0, 12)}…`;
    }
  }
  return null;
}

/**
 * Downloads `url`, reporting `onProgress(bytesSoFar)` as chunks arrive. The buffer is
 * allocated once from the expected size, so a large file is not copied again at the end.
 */
async function download(url, expectedSize, onProgress, signal) {
  try {
    return await downloadOnce(url, expectedSize, onProgress, signal);
  } catch (e) {
    if (e.name === "AbortError" || String(e.message).startsWith(url)) throw e;
    // fetch() rejects with a bare "Failed to fetch" when the connection drops: name the
    // file and what to do.
    throw new Error(`${url}: the download failed (${e.message ?? e}); check the connection and try again`);
  }
}

async function downloadOnce(url, expectedSize, onProgress, signal) {
  const res = await fetch(url, { signal, cache: "no-store" });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${res.statusText}`);
  if (!res.body) {
    const bytes = new Uint8Array(await res.arrayBuffer());
    onProgress?.(bytes.byteLength);
    return bytes;
  }
  const reader = res.body.getReader();
  let buffer = new Uint8Array(expectedSize ?? Number(res.headers.get("content-length") ?? 0));
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (received + value.byteLength > buffer.byteLength) {
      // More than announced (the mismatch check will say so): grow instead of failing here.
      const grown = new Uint8Array(Math.max(buffer.byteLength * 2, received + value.byteLength));
      grown.set(buffer.subarray(0, received));
      buffer = grown;
    }
    buffer.set(value, received);
    received += value.byteLength;
    onProgress?.(received);
  }
  return received === buffer.byteLength ? buffer : buffer.slice(0, received);
}

/**
 * The bytes of `url`, checked against `expected` = {size, sha256} (from the manifest).
 * Served from the cache when a valid entry is there; a corrupt entry is deleted and the
 * file fetched again. Resolves to {bytes, source: "cache" | "network", refetched,
 * verified} where `refetched` means a corrupt cache entry was replaced and `verified`
 * whether the hash could be checked. Rejects with an Error naming the URL when the
 * download itself does not match.
 */
export async function fetchVerified(url, expected, { onProgress, signal } = {}) {
  const cache = await openCache();
  const verified = Boolean(globalThis.crypto?.subtle && expected.sha256);
  let refetched = false;
  if (cache) {
    const hit = await cache.match(url);
    if (hit) {
      const bytes = new Uint8Array(await hit.arrayBuffer());
      const bad = await mismatch(bytes, expected);
      if (!bad) {
        onProgress?.(bytes.byteLength);
        return { bytes, source: "cache", refetched, verified };
      }
      console.warn(`fovea cache: ${url} is corrupt (${bad}); fetching it again`);
      await cache.delete(url);
      refetched = true;
    }
  }
  const bytes = await download(url, expected.size, onProgress, signal);
  const bad = await mismatch(bytes, expected);
  if (bad) throw new Error(`${url}: the download does not match the manifest (${bad})`);
  if (cache) {
    try {
      await cache.put(
        url,
        new Response(bytes, {
          headers: {
            "content-type": "application/octet-stream",
            "content-length": String(bytes.byteLength),
          },
        }),
      );
    } catch (e) {
      // Over quota: the model still loads, it just is not kept for the next visit.
      console.warn(`fovea cache: could not keep ${url}: ${e.message ?? e}`);
    }
  }
  return { bytes, source: "network", refetched, verified };
}
