//! Behaviour of a connection as a client and a handler see it, through a real worker on
//! simulated time (see `harness`). Each file covers one behaviour; each test asserts the
//! exact bytes, packets and socket commands zring produces today.
//! Mongrel2 mode runs beside ZHTTP: its setup is passed to the worker, not global.
use super::harness;

mod client;
mod credits;
mod deadlines;
mod deflate_fanout;
mod drain;
mod fanout;
mod handler_gone;
mod http;
mod m2;
mod overload;
mod req;
mod stream;
mod tls;
mod ws;
