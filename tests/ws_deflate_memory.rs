//! Heap bytes a permessage-deflate connection costs, measured with a counting global
//! allocator: each codec state at each window and memory level, and what one connection
//! holds between messages in each context takeover mode. Prints a table
//! (`cargo test --test ws_deflate_memory -- --nocapture`) and asserts the figures the
//! `ws_deflate` docs quote, so that a zlib-rs upgrade that changes them is noticed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use zring::proto::ws_deflate::{
    negotiate, Compressor, Config, Decompressor, Params, SharedCompressor, TakeoverMemory,
};

/// Counts the live heap bytes of the current thread, so that the test harness's other
/// threads do not disturb the figures.
struct Counting;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn live_bytes() -> isize {
    LIVE_BYTES.with(Cell::get)
}

fn add_live(delta: isize) {
    // `try_with`: the counter may be gone while the thread is being torn down.
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + delta));
}

// SAFETY: every call forwards to `System` with the caller's layout and pointer unchanged;
// the counting only touches a const-initialized thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add_live(layout.size() as isize);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add_live(layout.size() as isize);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        add_live(-(layout.size() as isize));
        // SAFETY: `pointer` came from this allocator (that is, `System`) with `layout`.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add_live(new_size as isize - layout.size() as isize);
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s contract.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn params(context_takeover: bool, server_window_bits: u8) -> Params {
    Params {
        server_no_context_takeover: !context_takeover,
        client_no_context_takeover: !context_takeover,
        server_max_window_bits: (server_window_bits < 15).then_some(server_window_bits),
        client_max_window_bits: None,
    }
}

/// Bytes a compressor holds mid-message.
fn compressor_bytes(window_bits: u8, memory_level: u8) -> isize {
    let config = Config {
        memory_level,
        server_takeover_memory: TakeoverMemory::State,
        ..Config::default()
    };
    let mut out = Vec::with_capacity(4096);
    let before = live_bytes();
    let mut compressor = Compressor::new(&params(true, window_bits), &config);
    compressor.compress(b"{\"hello\":\"world\"}", false, &mut out);
    assert!(compressor.holds_state());
    live_bytes() - before
}

/// Bytes a decompressor holds mid-message.
fn decompressor_bytes() -> isize {
    let mut out = Vec::with_capacity(4096);
    let before = live_bytes();
    let mut decompressor = Decompressor::new(&params(true, 15), 1 << 20);
    let inflated = decompressor
        .decompress(&[0xf2, 0x48, 0xcd], false, &mut out, 4096)
        .unwrap();
    assert!(!inflated.done);
    assert!(decompressor.holds_state());
    live_bytes() - before
}

/// Heap bytes one connection's codecs hold after `messages` messages each way: its
/// compressor sends, and its decompressor receives a client's stream made beforehand.
fn connection_bytes(params: &Params, config: &Config, messages: usize) -> isize {
    let message =
        br#"{"type":"update","id":1234,"items":[{"name":"a","value":1},{"name":"b","value":2}]}"#;
    // The client's side of `params`, as a compressor sees it.
    let client = Params {
        server_no_context_takeover: params.client_no_context_takeover,
        client_no_context_takeover: params.server_no_context_takeover,
        server_max_window_bits: params.client_max_window_bits,
        client_max_window_bits: params.server_max_window_bits,
    };
    let mut client_compressor = Compressor::new(&client, &Config::default());
    let client_payloads: Vec<Vec<u8>> = (0..messages)
        .map(|_| {
            let mut payload = Vec::new();
            client_compressor.compress(message, true, &mut payload);
            payload
        })
        .collect();
    drop(client_compressor);
    let mut payload = Vec::with_capacity(4096);
    let mut plain = Vec::with_capacity(4096);
    let before = live_bytes();
    let mut compressor = Compressor::new(params, config);
    let mut decompressor = Decompressor::new(params, 1 << 20);
    for client_payload in &client_payloads {
        payload.clear();
        plain.clear();
        compressor.compress(message, true, &mut payload);
        let inflated = decompressor
            .decompress(client_payload, true, &mut plain, 4096)
            .unwrap();
        assert!(inflated.done);
        assert_eq!(plain, message);
    }
    let bytes = live_bytes() - before;
    drop((compressor, decompressor));
    bytes
}

fn with_memory(memory: TakeoverMemory) -> Config {
    Config {
        server_takeover_memory: memory,
        ..Config::default()
    }
}

#[test]
fn memory_per_compressed_connection() {
    println!(
        "size_of: Compressor {} B, Decompressor {} B",
        size_of::<Compressor>(),
        size_of::<Decompressor>()
    );
    println!("compressor state, bytes (rows: window bits; columns: memory level 1, 5, 8)");
    let mut table = Vec::new();
    for window_bits in 8..=15 {
        let row: Vec<isize> = [1, 5, 8]
            .iter()
            .map(|&level| compressor_bytes(window_bits, level))
            .collect();
        println!("  {window_bits:2}: {row:?}");
        table.push(row);
    }
    let decompressor = decompressor_bytes();
    println!("decompressor state: {decompressor} bytes (any window)");
    let idle_without = connection_bytes(&params(false, 12), &Config::default(), 3);
    let idle_state = connection_bytes(&params(true, 12), &with_memory(TakeoverMemory::State), 3);
    let idle_window = connection_bytes(&params(true, 12), &with_memory(TakeoverMemory::Window), 3);
    let default_params = negotiate(&Config::default(), [b"permessage-deflate".as_slice()]).unwrap();
    let idle_default = connection_bytes(&default_params, &Config::default(), 3);
    println!("one connection after 3 messages each way, window 12, memory level 5, bytes:");
    println!("  no context takeover either way:              {idle_without}");
    println!("  takeover both ways, compressor keeps state:  {idle_state}");
    println!("  takeover both ways, compressor keeps window: {idle_window}");
    println!(
        "  Config::default() (server takeover keeping the window, client none): {idle_default}"
    );

    // --compression-context shared: every offer answered without server context takeover,
    // the connection's messages compressed by the worker's SharedCompressor.
    let shared_config = Config {
        server_no_context_takeover: true,
        ..Config::default()
    };
    let shared_params = negotiate(&shared_config, [b"permessage-deflate".as_slice()]).unwrap();
    assert!(shared_params.server_no_context_takeover);
    let idle_shared = connection_bytes(&shared_params, &shared_config, 3);
    let mut out = Vec::with_capacity(4096);
    let before = live_bytes();
    let mut shared = SharedCompressor::default();
    for _ in 0..100 {
        out.clear();
        shared.compress(&shared_config, 12, br#"{"hello":"world"}"#, true, &mut out);
    }
    let worker_compressor = live_bytes() - before;
    drop(shared);
    println!("  --compression-context shared (server and client none): {idle_shared}");
    println!("  a worker's SharedCompressor after 100 messages at window 12: {worker_compressor}");

    // The figures the module docs quote.
    assert!(size_of::<Compressor>() <= 48);
    assert!(size_of::<Decompressor>() <= 40);
    let default_compressor = table[12 - 8][1];
    let zlib_default_compressor = table[15 - 8][2];
    assert!(
        (160 << 10..170 << 10).contains(&default_compressor),
        "{default_compressor}"
    );
    assert!(
        (370 << 10..385 << 10).contains(&zlib_default_compressor),
        "{zlib_default_compressor}"
    );
    assert!(
        (45 << 10..50 << 10).contains(&decompressor),
        "{decompressor}"
    );
    assert_eq!(idle_without, 0);
    assert_eq!(idle_state, default_compressor + decompressor);
    assert_eq!(idle_window, 4096 + decompressor);
    assert_eq!(idle_default, 4096);
    assert_eq!(
        idle_shared, 0,
        "an idle shared-mode connection holds nothing"
    );
    assert_eq!(
        worker_compressor, default_compressor,
        "one state, reset not reallocated"
    );
}
