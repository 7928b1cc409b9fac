//! Tests of permessage-deflate: negotiation tables (RFC 7692 §7 examples, malformed and
//! repeated parameters, window bounds), codec round trips with and without context
//! takeover, every split of compressed input, RFC 7692 §7.2.3 vectors, limits and bombs.

mod codec;
mod negotiate;
