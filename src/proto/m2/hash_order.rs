//! The order in which Mongrel2 writes request headers: the scan order of its kazlib hash
//! table (src/adt/hash.c) keyed by FNV-1a of the lowercased name (src/bstr/bstraux.c
//! `bstr_hash_fun`). Handlers see this order, so a byte-identical peer must reproduce it.
//!
//! The table starts with 64 chains and doubles when an insert finds it holding twice as many
//! nodes as chains; a doubling splits every chain and reverses the nodes it moves. Inserts go
//! to the head of their chain, and a scan walks chains in index order. The table belongs to
//! the connection, not the request: it is emptied between keep-alive requests but never
//! shrunk, so a request with many headers changes the order of every later request on that
//! connection. [`HeaderTable`] carries that state.
//!
//! The simulation below replays the inserts on index arrays: no allocation, O(keys × chain
//! length) time.

/// Chains in a fresh table (`INIT_SIZE`, src/adt/hash.c).
pub const CHAINS_INITIAL: u16 = 64;
/// Distinct header keys one message may carry (client names plus the keys Mongrel2 adds).
/// Above zring's HTTP header limit with room to spare; bounds the simulation's arrays.
pub const KEYS_MAX: usize = 256;
/// Most chains the table can reach: with at most [`KEYS_MAX`] keys it doubles twice at most
/// (at 128 and 256 nodes), and a [`HeaderTable`] only ever holds what a simulation produced.
pub const CHAINS_MAX: usize = 256;

const _: () = assert!(CHAINS_MAX >= KEYS_MAX / 2);
const _: () = assert!((CHAINS_INITIAL as usize).is_power_of_two());
const _: () = assert!(KEYS_MAX < u16::MAX as usize);

const NIL: u16 = u16::MAX;

/// FNV-1a over the key, as `bstr_hash_fun` computes it. The C loop stops at a NUL byte;
/// header names cannot hold one, and the keys Mongrel2 adds do not.
pub fn fnv1a(key: &[u8]) -> u32 {
    let mut hash: u32 = 2_166_136_261;
    for &byte in key {
        if byte == 0 {
            break;
        }
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(16_777_619);
    }
    hash
}

/// The per-connection part of Mongrel2's header table: how many chains it has.
///
/// Call [`HeaderTable::begin_request`] when a new HTTP request starts on the connection
/// (Mongrel2's `Request_start`); every message of that request (upload start and done, the
/// WebSocket handshake and frames) is then encoded against the same starting size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderTable {
    /// Chains when the current request started. Invariant: a power of two, 64..=CHAINS_MAX.
    request_start_chains: u16,
    /// Chains after the largest message of the current request so far. Invariant: a power
    /// of two, at least `request_start_chains`.
    chains: u16,
}

impl Default for HeaderTable {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderTable {
    /// A new connection's table.
    pub const fn new() -> Self {
        Self {
            request_start_chains: CHAINS_INITIAL,
            chains: CHAINS_INITIAL,
        }
    }

    /// A new request on the same connection: the table is emptied but keeps its size.
    pub fn begin_request(&mut self) {
        self.request_start_chains = self.chains;
    }

    /// Chains the table has now.
    pub fn chains(&self) -> u16 {
        self.chains
    }

    pub(crate) fn start_chains(&self) -> u16 {
        self.request_start_chains
    }

    pub(crate) fn grew_to(&mut self, chains: u16) {
        debug_assert!(chains.is_power_of_two());
        self.chains = self.chains.max(chains);
    }
}

/// The scan order of a table after inserting keys with the given hashes, in insertion
/// order, into a table that had `start_chains` chains.
#[derive(Debug)]
pub struct ScanOrder {
    /// Indexes into the inserted keys, in scan order. Invariant: `order[..count]` is a
    /// permutation of `0..count`.
    order: [u16; KEYS_MAX],
    count: usize,
    /// Chains at the end.
    pub chains: u16,
}

impl ScanOrder {
    /// Simulates the inserts. `hashes.len()` must not exceed [`KEYS_MAX`] and
    /// `start_chains` must be a power of two within [`CHAINS_MAX`] (programming errors).
    pub fn simulate(hashes: &[u32], start_chains: u16) -> Self {
        assert!(hashes.len() <= KEYS_MAX);
        assert!(start_chains.is_power_of_two() && usize::from(start_chains) <= CHAINS_MAX);
        let mut next = [NIL; KEYS_MAX];
        let mut heads = [NIL; CHAINS_MAX];
        let mut chains = usize::from(start_chains);
        for (index, &hash) in hashes.iter().enumerate() {
            // hash_insert grows before inserting once nodecount reaches highmark (2 × chains).
            if index >= 2 * chains {
                grow(&mut heads, &mut next, hashes, chains);
                chains *= 2;
            }
            let chain = hash as usize & (chains - 1);
            next[index] = heads[chain];
            heads[chain] = index as u16;
        }
        let mut order = [0u16; KEYS_MAX];
        let mut count = 0;
        for &head in &heads[..chains] {
            let mut node = head;
            while node != NIL {
                order[count] = node;
                count += 1;
                node = next[usize::from(node)];
            }
        }
        assert_eq!(count, hashes.len());
        Self {
            order,
            count,
            chains: chains as u16,
        }
    }

    /// Key indexes in scan order.
    pub fn as_slice(&self) -> &[u16] {
        &self.order[..self.count]
    }
}

/// kazlib `grow_table`: each chain splits on the newly exposed hash bit; walking a chain and
/// pushing each node onto the head of its new chain reverses the nodes' order.
fn grow(heads: &mut [u16; CHAINS_MAX], next: &mut [u16; KEYS_MAX], hashes: &[u32], chains: usize) {
    assert!(chains * 2 <= CHAINS_MAX);
    let exposed_bit = chains as u32;
    for chain in 0..chains {
        let (mut low, mut high) = (NIL, NIL);
        let mut node = heads[chain];
        while node != NIL {
            let following = next[usize::from(node)];
            if hashes[usize::from(node)] & exposed_bit != 0 {
                next[usize::from(node)] = high;
                high = node;
            } else {
                next[usize::from(node)] = low;
                low = node;
            }
            node = following;
        }
        heads[chain] = low;
        heads[chain + chains] = high;
    }
}
