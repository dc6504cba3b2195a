//! The CPU-bound loop of `GET /burn/{n}`, in a file of its own so the
//! benchmarks compile the very same loop natively (`benches/src/compute.rs`
//! includes it) and compare it with the guest's.

/// `millions` million rounds of integer hashing (a linear congruential
/// step each); returns the hash so the loop cannot be optimised away.
pub fn burn(millions: u64) -> u64 {
    let mut x: u64 = 1;
    for i in 0..millions.saturating_mul(1_000_000) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}
