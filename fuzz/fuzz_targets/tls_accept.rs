//! Fuzz the TLS server session: arbitrary bytes as the client's stream into `Session::feed`,
//! cut into seed-sized chunks with the unconsumed tail kept and passed again (the contract of
//! the unbuffered API). Must never panic; `consumed` never exceeds the input; errors are
//! sticky and come with nothing but records in `out`; no plaintext before a handshake.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zring::tls::Session;

#[path = "identity.rs"]
mod identity;
use identity::server_config;

fuzz_target!(|input: &[u8]| {
    let Some((&seed, stream)) = input.split_first() else {
        return;
    };
    let chunk = match seed % 4 {
        0 => stream.len().max(1),
        1 => 1,
        _ => usize::from(seed) + 1,
    };
    let mut session = Session::new(server_config());
    let (mut pending, mut plaintext, mut out) = (Vec::new(), Vec::new(), Vec::new());
    let mut failed = false;
    for piece in stream.chunks(chunk) {
        pending.extend_from_slice(piece);
        match session.feed(&mut pending, &mut plaintext, &mut out) {
            Ok(fed) => {
                assert!(fed.consumed <= pending.len());
                pending.drain(..fed.consumed);
            }
            Err(e) => {
                assert_eq!(session.feed(&mut [], &mut plaintext, &mut out), Err(e));
                failed = true;
                break;
            }
        }
        // Without the client's keys no application data can be authentic.
        assert!(plaintext.is_empty());
        assert!(session.is_handshaking());
    }
    // Still handshaking (or failed): writing is refused, and looking at the kept tail (which
    // rustls may point into) must not panic.
    if !failed {
        assert!(session.encrypt(&mut pending, b"data", &mut out).is_err());
        assert!(session.close_notify(&mut pending, &mut out).is_err());
    }
});
