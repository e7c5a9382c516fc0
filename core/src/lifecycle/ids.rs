//! Request ids the gateway chooses: the records' `request_id`, the upstream's and the
//! client's `x-request-id`. A client-sent `x-request-id` is never used: two clients could
//! send the same one, and an audit trail keyed by it would merge their requests.
//!
//! Ids are UUID version 4 strings (what Envoy's own request-id extension expects). Each
//! worker VM draws two random 64-bit seeds at start; id `n` of a VM is `seed_hi` (less the
//! version bits) beside a bijective mix of `seed_lo ^ n` over the 62 bits the variant
//! leaves, so the first 2^62 ids of one VM never repeat, and two VMs collide only if their
//! random seeds do.

#[derive(Debug, Clone)]
pub struct RequestIds {
    hi: u64,
    lo: u64,
    next: u64,
}

impl RequestIds {
    pub fn new(seed_hi: u64, seed_lo: u64) -> RequestIds {
        RequestIds {
            hi: seed_hi,
            lo: seed_lo,
            next: 0,
        }
    }

    /// The next id, as `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`.
    pub fn next_id(&mut self) -> String {
        let n = self.next;
        self.next = self.next.wrapping_add(1);
        // Version 4 in the high half, variant 10 in the two top bits of the low half.
        let hi = (self.hi & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
        let lo = mix62(self.lo ^ n) | 0x8000_0000_0000_0000;
        // Hand-written hex: `format!` costs several times more Wasm instructions.
        let mut out = [b'-'; 36];
        for k in 0..32u32 {
            let word = if k < 16 { hi } else { lo };
            let nibble = (word >> (4 * (15 - (k % 16)))) & 0xf;
            // Nibble k goes after the dashes before it (at 8, 13, 18 and 23).
            let slot = k
                + u32::from(k >= 8)
                + u32::from(k >= 12)
                + u32::from(k >= 16)
                + u32::from(k >= 20);
            if let (Some(b), Some(h)) = (out.get_mut(slot as usize), HEX.get(nibble as usize)) {
                *b = *h;
            }
        }
        std::str::from_utf8(&out).unwrap_or_default().to_string()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

const LOW_62: u64 = (1 << 62) - 1;

/// A bijection on the low 62 bits that spreads consecutive inputs: xor-shifts and odd
/// multipliers modulo 2^62 (splitmix64's finalizer, narrowed).
fn mix62(z: u64) -> u64 {
    let mut z = z & LOW_62;
    z = ((z ^ (z >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9)) & LOW_62;
    z = ((z ^ (z >> 29)).wrapping_mul(0x94d0_49bb_1331_11eb)) & LOW_62;
    z ^ (z >> 32)
}

#[cfg(test)]
mod tests;
