//! A tiny seeded generator (xorshift64*, Vigna 2016) for the model's
//! deliberate disorder: loss, duplication, reordering, MDL splits, list
//! sizes, stream chunkings and partial sends. Not for anything secret.

/// xorshift64* state; never zero.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator for `seed`; every seed (0 included) gives a usable state.
    pub fn new(seed: u64) -> Self {
        // Spread the seed (splitmix64's finalizer) so small seeds differ at once.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(if z == 0 { 1 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0); the tiny modulo bias is harmless here.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo) as u64 + 1;
        lo + self.below(span) as usize
    }

    /// True with probability `ppm` parts per million.
    pub fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < u64::from(ppm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_bounds_hold() {
        let mut a = XorShift::new(7);
        let mut b = XorShift::new(7);
        for _ in 0..1000 {
            let x = a.between(3, 9);
            assert_eq!(x, b.between(3, 9));
            assert!((3..=9).contains(&x));
        }
        assert_ne!(XorShift::new(0).next_u64(), XorShift::new(1).next_u64());
        assert!(!XorShift::new(1).chance(0));
        assert!(XorShift::new(1).chance(1_000_000));
    }

    #[test]
    fn chance_is_roughly_the_rate() {
        let mut r = XorShift::new(42);
        let hits = (0..100_000).filter(|_| r.chance(100_000)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
    }
}
