//! Table-driven tests of the HTTP/1 codec: valid inputs and their fields, each error and
//! its status, inputs broken by one byte, every split point, and Condure's bytes.

mod chunked;
mod request;
mod response;
