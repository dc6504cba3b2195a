//! The CPU-bound loop of `GET /burn/{n}`, in a file of its own so the
//! `burn-web` benchmark guest runs the very same loop, and the benchmarks
//! compile it natively (`benches/src/compute.rs` includes it) to compare.

/// `millions` million rounds of integer hashing (a linear congruential
/// step each); returns the hash so the loop cannot be optimised away.
pub fn burn(millions: u64) -> u64 {
    let mut x: u64 = 1;
    for i in 0..millions.saturating_mul(1_000_000) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}
