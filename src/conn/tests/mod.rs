//! Behaviour of a connection as a client and a handler see it, through a real worker on
//! simulated time (see `harness`). Each file covers one behaviour; each test asserts the
//! exact bytes, packets and socket commands zring produces today.
mod harness;

mod http;
