//! A buffer pool. Tensors borrow storage buffers from it and give them back when the
//! last handle drops; the pool reports bytes in use and their high-water mark, which is
//! the engine's peak GPU memory figure.
//!
//! Sizes are rounded up to a bucket (a power of two split into eight steps, so at most
//! 12.5% is wasted) so that buffers from one UNet step fit the next step's requests.
//!
//! Reuse is safe without fences: a buffer dropped after being recorded into a batch can
//! only be handed to later-recorded GPU work, which the GPU runs after the earlier
//! reads. Uploads never write into pooled buffers with `Queue::write_buffer` (that
//! would overtake recorded work); they create fresh buffers mapped at creation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Usage of every pooled buffer: kernels read and write them, they are copied for
/// readback, and some hold indirect dispatch arguments.
pub(crate) const POOL_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::INDIRECT);

/// Pool statistics, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes held by live tensors.
    pub in_use: u64,
    /// Highest `in_use` since creation or the last reset: the peak GPU memory of tensors.
    pub peak_in_use: u64,
    /// Bytes of GPU buffers the pool owns (in use + idle).
    pub allocated: u64,
    /// Highest `allocated`.
    pub peak_allocated: u64,
    /// Buffers created so far.
    pub buffers_created: u64,
    /// Requests served by reusing an idle buffer.
    pub reuses: u64,
}

#[derive(Default)]
pub(crate) struct BufferPool {
    idle: HashMap<u64, Vec<wgpu::Buffer>>,
    stats: PoolStats,
}

/// Rounds `bytes` up to the pool's bucket size (min 16 bytes, multiple of 4, at most
/// 12.5% above the request past 32 bytes).
pub(crate) fn bucket_size(bytes: u64) -> u64 {
    let bytes = bytes.max(16);
    let pow = 63 - (bytes - 1).leading_zeros() as u64; // floor(log2(bytes - 1))
    if pow < 4 {
        return 16;
    }
    // Storage bindings must be a multiple of 4 bytes.
    let step = (1u64 << (pow - 3)).max(4);
    bytes.div_ceil(step) * step
}

impl BufferPool {
    pub(crate) fn stats(&self) -> PoolStats {
        self.stats
    }

    pub(crate) fn trim(&mut self) {
        for (size, list) in self.idle.drain() {
            self.stats.allocated -= size * list.len() as u64;
            for b in list {
                b.destroy();
            }
        }
    }

    pub(crate) fn reset_peak(&mut self) {
        self.stats.peak_in_use = self.stats.in_use;
        self.stats.peak_allocated = self.stats.allocated;
    }

    fn take_idle(&mut self, size: u64) -> Option<wgpu::Buffer> {
        let b = self.idle.get_mut(&size)?.pop()?;
        self.stats.reuses += 1;
        Some(b)
    }

    fn note_created(&mut self, size: u64) {
        self.stats.buffers_created += 1;
        self.stats.allocated += size;
        self.stats.peak_allocated = self.stats.peak_allocated.max(self.stats.allocated);
    }

    fn note_in_use(&mut self, size: u64) {
        self.stats.in_use += size;
        self.stats.peak_in_use = self.stats.peak_in_use.max(self.stats.in_use);
    }
}

/// A storage buffer on loan from the pool; returned when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    size: u64,
    pool: Weak<Mutex<BufferPool>>,
    /// Back to the idle pool when dropped (work buffers); uploads are released instead.
    recycle: bool,
}

impl PooledBuffer {
    /// The wgpu buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("present until drop")
    }

    /// Its size in bytes (the bucket size, at least the tensor's byte size).
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let Some(buffer) = self.buffer.take() else {
            return;
        };
        if let Some(pool) = self.pool.upgrade() {
            let mut p = pool.lock().unwrap();
            p.stats.in_use -= self.size;
            if self.recycle {
                p.idle.entry(self.size).or_default().push(buffer);
            } else {
                // An upload's buffer (latents, timesteps, token ids, weights): its sizes
                // rarely match a later request, so pooling it only grew the idle pool,
                // generation after generation (the soak test measured ~42 KB and ~10
                // buffers per generation). Dropping the handle frees it once the GPU
                // work that uses it is done (wgpu keeps it alive until then).
                p.stats.allocated -= self.size;
            }
        }
    }
}

/// Takes a buffer of at least `bytes` from the pool, creating one if none is idle.
pub(crate) fn acquire(
    device: &wgpu::Device,
    pool: &Arc<Mutex<BufferPool>>,
    bytes: u64,
    label: &str,
) -> PooledBuffer {
    let size = bucket_size(bytes);
    let mut p = pool.lock().unwrap();
    let buffer = match p.take_idle(size) {
        Some(b) => b,
        None => {
            p.note_created(size);
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: POOL_USAGE,
                mapped_at_creation: false,
            })
        }
    };
    p.note_in_use(size);
    PooledBuffer {
        buffer: Some(buffer),
        size,
        pool: Arc::downgrade(pool),
        recycle: true,
    }
}

/// Creates a buffer holding `data` (mapped at creation, so it is ordered before any
/// recorded work); released, not pooled, when the tensor drops.
pub(crate) fn create_with_data(
    device: &wgpu::Device,
    pool: &Arc<Mutex<BufferPool>>,
    data: &[u8],
    label: &str,
) -> Result<PooledBuffer, String> {
    let size = bucket_size(data.len() as u64);
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage: POOL_USAGE,
        mapped_at_creation: true,
    });
    {
        // Fails only when the buffer is invalid: a lost device, or out of memory.
        let mut view = buffer
            .slice(..)
            .get_mapped_range_mut()
            .map_err(|e| format!("buffer `{label}` ({size} bytes) could not be mapped: {e}"))?;
        // The tail past `data` is already zero: mapped-at-creation memory starts zeroed.
        view.slice(..data.len()).copy_from_slice(data);
    }
    buffer.unmap();
    let mut p = pool.lock().unwrap();
    p.note_created(size);
    p.note_in_use(size);
    Ok(PooledBuffer {
        buffer: Some(buffer),
        size,
        pool: Arc::downgrade(pool),
        recycle: false,
    })
}

#[cfg(test)]
mod tests {
    use super::bucket_size;

    #[test]
    fn buckets_cover_the_request_and_waste_at_most_an_eighth() {
        for bytes in (1..5000u64).chain([1 << 20, (1 << 20) + 1, 3 << 30]) {
            let b = bucket_size(bytes);
            assert!(b >= bytes && b.is_multiple_of(4), "{bytes} -> {b}");
            assert!(
                bytes <= 16 || (b - bytes) * 8 <= bytes.max(24),
                "{bytes} -> {b} wastes too much"
            );
        }
    }
}
