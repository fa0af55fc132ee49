//! Postgres's own hash functions, so a row is routed to the shard where a
//! `PARTITION BY HASH` table with the same modulus would put it.
//!
//! A hash partition is chosen as `combine(0, h(key, SEED)) % modulus`, with
//! `h` the type's extended hash (`hashint8extended`, `hashtextextended`,
//! `uuid_hash_extended`), `SEED` = HASH_PARTITION_SEED and `combine` =
//! `hash_combine64` (src/backend/partitioning/partbounds.c). The hashes are
//! Bob Jenkins' lookup3 as in src/common/hashfn.c (little-endian build).

/// HASH_PARTITION_SEED from src/include/catalog/partition.h.
pub const PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;

#[inline]
fn rot(x: u32, k: u32) -> u32 {
    x.rotate_left(k)
}

#[inline]
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= rot(*c, 4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= rot(*a, 6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= rot(*b, 8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= rot(*c, 16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= rot(*a, 19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= rot(*b, 4);
    *b = b.wrapping_add(*a);
}

#[inline]
fn finalize(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(rot(*b, 14));
    *a ^= *c;
    *a = a.wrapping_sub(rot(*c, 11));
    *b ^= *a;
    *b = b.wrapping_sub(rot(*a, 25));
    *c ^= *b;
    *c = c.wrapping_sub(rot(*b, 16));
    *a ^= *c;
    *a = a.wrapping_sub(rot(*c, 4));
    *b ^= *a;
    *b = b.wrapping_sub(rot(*a, 14));
    *c ^= *b;
    *c = c.wrapping_sub(rot(*b, 24));
}

fn seeded(init: u32, seed: u64) -> (u32, u32, u32) {
    let (mut a, mut b, mut c) = (init, init, init);
    if seed != 0 {
        a = a.wrapping_add((seed >> 32) as u32);
        b = b.wrapping_add(seed as u32);
        mix(&mut a, &mut b, &mut c);
    }
    (a, b, c)
}

/// `hash_uint32_extended`.
pub fn hash_uint32_extended(k: u32, seed: u64) -> u64 {
    let (mut a, mut b, mut c) =
        seeded(0x9e37_79b9u32.wrapping_add(4).wrapping_add(3_923_095), seed);
    a = a.wrapping_add(k);
    finalize(&mut a, &mut b, &mut c);
    ((b as u64) << 32) | c as u64
}

/// `hash_any_extended` (hash_bytes_extended), little-endian.
pub fn hash_bytes_extended(key: &[u8], seed: u64) -> u64 {
    let len = key.len() as u32;
    let (mut a, mut b, mut c) = seeded(
        0x9e37_79b9u32.wrapping_add(len).wrapping_add(3_923_095),
        seed,
    );
    let word = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let mut k = key;
    while k.len() >= 12 {
        a = a.wrapping_add(word(&k[0..4]));
        b = b.wrapping_add(word(&k[4..8]));
        c = c.wrapping_add(word(&k[8..12]));
        mix(&mut a, &mut b, &mut c);
        k = &k[12..];
    }
    // The last 0..11 bytes; the low byte of c is reserved for the length.
    let byte = |i: usize| k.get(i).copied().unwrap_or(0) as u32;
    let n = k.len();
    if n >= 11 {
        c = c.wrapping_add(byte(10) << 24);
    }
    if n >= 10 {
        c = c.wrapping_add(byte(9) << 16);
    }
    if n >= 9 {
        c = c.wrapping_add(byte(8) << 8);
    }
    if n >= 8 {
        b = b.wrapping_add(byte(7) << 24);
    }
    if n >= 7 {
        b = b.wrapping_add(byte(6) << 16);
    }
    if n >= 6 {
        b = b.wrapping_add(byte(5) << 8);
    }
    if n >= 5 {
        b = b.wrapping_add(byte(4));
    }
    if n >= 4 {
        a = a.wrapping_add(byte(3) << 24);
    }
    if n >= 3 {
        a = a.wrapping_add(byte(2) << 16);
    }
    if n >= 2 {
        a = a.wrapping_add(byte(1) << 8);
    }
    if n >= 1 {
        a = a.wrapping_add(byte(0));
    }
    finalize(&mut a, &mut b, &mut c);
    ((b as u64) << 32) | c as u64
}

/// `hashint8extended`: int8 folded to 32 bits the way int4 and int8 hash alike.
pub fn hashint8_extended(v: i64, seed: u64) -> u64 {
    let lo = v as u32;
    let hi = (v >> 32) as u32;
    let folded = if v >= 0 { lo ^ hi } else { lo ^ !hi };
    hash_uint32_extended(folded, seed)
}

/// `hash_combine64`.
pub fn hash_combine64(a: u64, b: u64) -> u64 {
    a ^ b
        .wrapping_add(0x49a0_f4dd_15e5_a8e3)
        .wrapping_add(a << 54)
        .wrapping_add(a >> 7)
}

/// A sharding key value, typed as the column it routes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Bigint(i64),
    Text(String),
    Uuid([u8; 16]),
}

impl Key {
    /// Parses a uuid in Postgres's accepted text forms (with or without
    /// hyphens and braces).
    pub fn uuid(text: &str) -> Option<Key> {
        let hex: String = text
            .trim()
            .trim_start_matches('{')
            .trim_end_matches('}')
            .chars()
            .filter(|c| *c != '-')
            .collect();
        if hex.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Key::Uuid(out))
    }

    /// The partition hash Postgres computes for a one-column hash key.
    pub fn partition_hash(&self) -> u64 {
        let h = match self {
            Key::Bigint(v) => hashint8_extended(*v, PARTITION_SEED),
            Key::Text(s) => hash_bytes_extended(s.as_bytes(), PARTITION_SEED),
            Key::Uuid(b) => hash_bytes_extended(b, PARTITION_SEED),
        };
        hash_combine64(0, h)
    }

    /// The shard a hash-partitioned table with `shards` partitions (modulus)
    /// would hold this key in.
    pub fn shard(&self, shards: usize) -> usize {
        (self.partition_hash() % shards.max(1) as u64) as usize
    }
}

/// pgcat's `sha1` sharding function: the last 8 hex digits of the SHA-1 of
/// the key's text, as an integer, modulo the shard count.
pub fn sha1_shard(text: &str, shards: usize) -> usize {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(text.as_bytes());
    // The last 8 hex digits are the last 4 bytes.
    let tail = u32::from_be_bytes([digest[16], digest[17], digest[18], digest[19]]) as u64;
    (tail % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_forms() {
        let a = Key::uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        let b = Key::uuid("{A0EEBC999C0B4EF8BB6D6BB9BD380A11}").unwrap();
        assert_eq!(a, b);
        assert!(Key::uuid("nope").is_none());
    }

    #[test]
    fn shards_are_in_range() {
        for v in -1000..1000 {
            assert!(Key::Bigint(v).shard(3) < 3);
        }
    }
}
