//! STUB with the agreed API; replaced by the real codec at merge.
#![allow(unused_variables, missing_docs)]
use arrayvec::ArrayVec;
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}
impl Span {
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Data,
    Error,
    Credit,
    KeepAlive,
    Cancel,
    HandoffStart,
    HandoffProceed,
    Close,
    Ping,
    Pong,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    Text,
    Binary,
}
pub enum Ids {
    One { id: Span, seq: Option<u32> },
    Many(Vec<(Span, Option<u32>)>),
}
impl Ids {
    pub fn iter(&self) -> impl Iterator<Item = (Span, Option<u32>)> + '_ {
        std::iter::empty()
    }
}
pub struct Packet {
    pub from: Option<Span>,
    pub ids: Ids,
    pub kind: Kind,
    pub code: Option<u32>,
    pub reason: Option<Span>,
    pub headers: ArrayVec<(Span, Span), 64>,
    pub body: Span,
    pub more: bool,
    pub credits: Option<u32>,
    pub content_type: Option<ContentType>,
    pub condition: Option<Span>,
}
#[derive(Clone, Copy, Debug)]
pub enum Error {
    Bad,
}
pub struct RequestHead<'a> {
    pub from: &'a [u8],
    pub id: &'a [u8],
    pub seq: u32,
    pub method: &'a [u8],
    pub uri: &'a [u8],
    pub headers: &'a [(&'a [u8], &'a [u8])],
    pub credits: u32,
    pub stream: bool,
    pub more: bool,
    pub body: &'a [u8],
    pub peer: Option<(&'a [u8], u16)>,
}
pub fn encode_request_head(out: &mut Vec<u8>, h: &RequestHead) {
    todo!()
}
pub fn encode_req_request(
    out: &mut Vec<u8>,
    id: &[u8],
    method: &[u8],
    uri: &[u8],
    headers: &[(&[u8], &[u8])],
    body: &[u8],
    peer: Option<(&[u8], u16)>,
) {
    todo!()
}
pub fn encode_body(out: &mut Vec<u8>, from: &[u8], id: &[u8], seq: u32, body: &[u8], more: bool) {
    todo!()
}
pub fn encode_credit(out: &mut Vec<u8>, from: &[u8], id: &[u8], seq: u32, credits: u32) {
    todo!()
}
pub fn encode_control(out: &mut Vec<u8>, from: &[u8], id: &[u8], seq: u32, kind: Kind) {
    todo!()
}
pub fn encode_multi(out: &mut Vec<u8>, from: &[u8], ids: &[(&[u8], u32)], kind: Kind) {
    todo!()
}
pub fn decode(buf: &[u8]) -> Result<Packet, Error> {
    todo!()
}
pub fn split_address(msg: &[u8]) -> Option<(&[u8], &[u8])> {
    todo!()
}
