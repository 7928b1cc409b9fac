//! STUB with the agreed API; replaced by the real codec at merge.
#![allow(unused_variables, missing_docs)]
pub enum Status<T> {
    Partial,
    Complete(T),
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
}
pub struct Request<'h, 'b> {
    pub method: &'b str,
    pub target: &'b str,
    pub version: Version,
    pub headers: &'h [httparse::Header<'b>],
    pub head_len: usize,
    pub body: BodyKind,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub upgrade_websocket: bool,
    pub host: Option<&'b [u8]>,
}
#[derive(Clone, Copy, Debug)]
pub enum Error {
    Bad,
}
impl Error {
    pub fn status(self) -> (u16, &'static str) {
        (400, "Bad Request")
    }
}
pub fn parse_request_limited<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    max: usize,
) -> Result<Status<Request<'h, 'b>>, Error> {
    todo!()
}
#[derive(Default, Debug)]
pub struct ChunkedDecoder {}
pub struct Decoded<'a> {
    pub consumed: usize,
    pub data: Option<&'a [u8]>,
    pub done: bool,
}
impl ChunkedDecoder {
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Decoded<'a>, Error> {
        todo!()
    }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    Length(u64),
    Chunked,
    CloseDelimited,
    None,
}
pub struct ResponseHead<'a> {
    pub version: Version,
    pub code: u16,
    pub reason: &'a [u8],
    pub headers: &'a [(&'a [u8], &'a [u8])],
    pub body: ResponseBody,
    pub keep_alive: bool,
}
pub fn choose_framing(
    v: Version,
    head: bool,
    code: u16,
    headers: &[(&[u8], &[u8])],
    body_len: u64,
    more: bool,
) -> ResponseBody {
    todo!()
}
pub fn encode_response_head(out: &mut Vec<u8>, r: &ResponseHead) {
    todo!()
}
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    todo!()
}
pub fn encode_last_chunk(out: &mut Vec<u8>) {
    todo!()
}
pub fn encode_continue(out: &mut Vec<u8>) {
    todo!()
}
pub fn encode_error_response(out: &mut Vec<u8>, v: Version, code: u16, reason: &[u8], body: &[u8]) {
    todo!()
}
