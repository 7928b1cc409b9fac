//! Behaviour of a connection as a client and a handler see it, through a real worker on
//! simulated time (see `harness`). Each file covers one behaviour; each test asserts the
//! exact bytes, packets and socket commands zring produces today.
//!
//! Mongrel2 mode is not covered: it reads the process-wide `m2serve::SETUP`, and setting
//! it would turn every other test of this process into a Mongrel2 test.
mod harness;

mod credits;
mod fanout;
mod http;
mod req;
mod stream;
mod tls;
mod ws;
