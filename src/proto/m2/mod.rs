//! The Mongrel2 1.12.2 handler protocol, byte for byte: requests to handlers
//! ([`request`]), the fixed notices Mongrel2 sends on its own ([`notice`]), and handler
//! replies with their extended `X` form ([`reply`]).
//!
//! Sans-IO like the rest of [`crate::proto`]: bytes in, values out; no sockets, no clock.
//! Routing, config and static files live in [`crate::m2config`]; what a connection must keep
//! between messages (its id, its [`HeaderTable`]) is the caller's.
//!
//! Every rule cites the Mongrel2 source file it reproduces (tag `v1.12.2`); deviations are
//! listed in `docs/mongrel2.md`.

pub mod access;
pub mod control;
pub mod hash_order;
pub mod notice;
pub mod reply;
pub mod request;

pub use hash_order::HeaderTable;
pub use reply::{
    parse_extended, parse_reply, Control, Extended, ExtendedError, Reply, ReplyError, ReplyKind,
};
pub use request::{
    encode_request, encode_stream_chunk, host_name, split_target, EncodeError, Message, Protocol,
    Request, Scheme, Target,
};

/// Ids one reply may name: Mongrel2's `limits.handler_targets` default (src/handler.c).
pub const HANDLER_TARGETS_DEFAULT: usize = 128;
/// Most `limits.handler_targets` zring accepts from a config: the id list of one reply is
/// then at most ~11 bytes per id, 64 KiB in all.
pub const HANDLER_TARGETS_MAX: usize = 4096;
/// Replies queued to one connection before Mongrel2 drops it (`DELIVER_OUTSTANDING_MSGS`,
/// src/connection.h), when download flow control is off.
pub const DELIVER_OUTSTANDING_MSGS: usize = 16;
/// Outstanding reply bytes per connection with `download.flow_control` on (`MAX_CREDITS`,
/// src/connection.c); also the `DOWNLOAD_CREDITS` value each request starts with.
pub const DOWNLOAD_CREDITS_DEFAULT: u32 = 100 * 1024;

const _: () = assert!(HANDLER_TARGETS_DEFAULT <= HANDLER_TARGETS_MAX);

#[cfg(test)]
mod tests;
