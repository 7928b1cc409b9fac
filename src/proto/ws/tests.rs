//! Unit tests of the WebSocket codec, one file per layer.

mod frame;
mod handshake;
mod message;
