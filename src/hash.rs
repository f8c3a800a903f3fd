//! MurmurHash3 x86_32 (Austin Appleby, public domain), the fixed hash that maps categorical values
//! to weight buckets. It is stable across restarts, machines and releases: a change here would
//! silently re-map every learned weight, so golden values are pinned in the tests.

/// MurmurHash3 x86_32 of `data` with `seed`, identical to the reference `MurmurHash3_x86_32`
/// (and to Python's `mmh3.hash(data, seed, signed=False)`).
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    let mut h = Murmur3::new(seed);
    h.write(data);
    h.finish()
}

/// Incremental MurmurHash3 x86_32: hashing the concatenation of several writes equals hashing
/// the concatenated bytes, without building the concatenation.
#[derive(Debug, Clone)]
pub struct Murmur3 {
    h: u32,
    tail: [u8; 4],
    tail_len: usize,
    len: usize,
}

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline]
fn mix_k(mut k: u32) -> u32 {
    k = k.wrapping_mul(C1);
    k = k.rotate_left(15);
    k.wrapping_mul(C2)
}

impl Murmur3 {
    /// A hasher with `seed`.
    pub fn new(seed: u32) -> Self {
        Self {
            h: seed,
            tail: [0; 4],
            tail_len: 0,
            len: 0,
        }
    }

    #[inline]
    fn block(&mut self, k: u32) {
        self.h ^= mix_k(k);
        self.h = self.h.rotate_left(13);
        self.h = self.h.wrapping_mul(5).wrapping_add(0xe654_6b64);
    }

    /// Appends bytes.
    #[inline]
    pub fn write(&mut self, mut data: &[u8]) {
        self.len += data.len();
        if self.tail_len > 0 {
            while self.tail_len < 4 && !data.is_empty() {
                self.tail[self.tail_len] = data[0];
                self.tail_len += 1;
                data = &data[1..];
            }
            if self.tail_len < 4 {
                return;
            }
            let k = u32::from_le_bytes(self.tail);
            self.block(k);
            self.tail_len = 0;
        }
        let mut chunks = data.chunks_exact(4);
        for c in &mut chunks {
            self.block(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
        let rest = chunks.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    /// Appends one byte.
    #[inline]
    pub fn write_u8(&mut self, b: u8) {
        self.write(&[b]);
    }

    /// The hash of everything written.
    #[inline]
    pub fn finish(&self) -> u32 {
        let mut h = self.h;
        if self.tail_len > 0 {
            let mut k = 0u32;
            for i in (0..self.tail_len).rev() {
                k = (k << 8) | u32::from(self.tail[i]);
            }
            h ^= mix_k(k);
        }
        h ^= self.len as u32;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values from the smhasher test vectors and from Python's mmh3 5.x:
    //   python3 -c "import mmh3; print(mmh3.hash(b'hello', 0, signed=False))"
    #[test]
    fn known_vectors() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514E_28B7);
        assert_eq!(murmur3_32(b"", 0xffff_ffff), 0x81F1_6F39);
        assert_eq!(murmur3_32(b"\0\0\0\0", 0), 0x2362_F9DE);
        assert_eq!(murmur3_32(b"aaaa", 0x9747_b28c), 0x5A97_808A);
        assert_eq!(murmur3_32(b"abc", 0), 0xB3DD_93FA);
        assert_eq!(murmur3_32(b"Hello, world!", 0x9747_b28c), 0x2488_4CBA);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0x9747_b28c),
            0x2FA8_26CD
        );
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data = b"The quick brown fox jumps over the lazy dog";
        for split in 0..data.len() {
            for split2 in split..data.len() {
                let mut h = Murmur3::new(42);
                h.write(&data[..split]);
                h.write(&data[split..split2]);
                h.write(&data[split2..]);
                assert_eq!(h.finish(), murmur3_32(data, 42));
            }
        }
    }
}
