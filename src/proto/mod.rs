//! Sans-IO protocol codecs. Nothing here touches a socket, a thread or a clock.
#![forbid(unsafe_code)]

pub mod access;
pub mod http1;
pub mod m2;
pub mod tnetstring;
pub mod ws;
pub mod ws_deflate;
pub mod zhttp;
pub mod zhttp_client;
