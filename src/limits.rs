//! Every bound in zring, named with its unit last, with the reason for its value.
//! Config may change some of them within checked ranges; the rest are fixed here.

/// Headers per request and per handler response: Condure's limit.
pub const HEADERS_MAX: usize = 64;
/// Request-target bytes: Condure's limit on `uri`.
pub const URI_BYTES_MAX: usize = 4096;
/// ZHTTP `from` and `id` bytes: Condure's limit.
pub const ADDRESS_BYTES_MAX: usize = 64;
/// A client's address as text (`ip` of `ip:port`, at most 45 bytes for IPv6) in packets.
pub const PEER_TEXT_BYTES_MAX: usize = 64;
/// Ids per list-form packet: Condure's batch size for keep-alives and cancels.
pub const PACKET_IDS_MAX: usize = 128;
/// Workers: Condure's limit.
pub const WORKERS_MAX: usize = 1024;
/// req + stream connections per process: Condure's limit.
pub const CONNS_MAX: u64 = 10_000_000;

/// Condure sends each session a keep-alive about this often.
pub const KEEP_ALIVE_INTERVAL_MS: u64 = 45_000;
/// A session with no packet from its handler for this long is dropped (Condure: 60 s).
pub const SESSION_EXPIRY_MS: u64 = 60_000;
/// The keep-alive sweep visits every slot once per interval in this many steps, so one
/// step's work stays small however many connections a worker holds (Condure: 100 ms steps).
pub const KEEP_ALIVE_SWEEP_STEPS: u64 = 450;
/// Time given to a closing connection to drain the client's unread input after the last
/// response byte, so that closing does not reset the response away (lingering close).
pub const LINGER_MS: u64 = 2_000;

/// Packets queued from a worker to the bridge. When full, connections stop reading from
/// clients (backpressure) rather than queueing more.
pub const BRIDGE_OUTBOX_PACKETS_MAX: usize = 4096;
/// Packets queued from the bridge to one worker. When full, the bridge stops reading its
/// SUB socket and ZeroMQ's high-water mark pushes back on handlers.
pub const WORKER_INBOX_PACKETS_MAX: usize = 4096;
/// Inbox packets a worker takes from the bridge's queue at most (its own queue's bound).
pub const INBOX_DRAIN_PACKETS_MAX: usize = 1024;
/// Connections handed a handler packet per runtime turn, at most: a fan-out to 100,000
/// ids goes out in turns of this many sends, each fitting a ring's completion queue (no
/// CQ overflow, which costs the kernel an allocation per completion) and leaving I/O of
/// other connections to run between turns. 4,096 small sends are ~25 ms of kernel work.
pub const DISPATCH_TARGETS_PER_TURN_MAX: usize = 4096;
/// Least ZeroMQ receive high-water mark on the SUB socket handlers publish to: a PUB drops
/// messages past it, so it must hold a burst (a fan-out, thousands of responses at once).
pub const SUB_RCVHWM_MIN: i32 = 100_000;
/// Packets the bridge moves per socket per turn before it polls the others.
pub const BRIDGE_BATCH_PACKETS_MAX: usize = 256;
/// Retry held packets this often where socket readiness can't tell when they can go: first
/// packets waiting for a handler to connect (they may expire), a ROUTER packet whose peer is
/// at its HWM while another peer is writable. A ROUTER peer at its HWM otherwise wakes the
/// bridge with POLLOUT the moment it drains (a timer there paced echo to ~600 msgs/s).
pub const BRIDGE_RETRY_MS: u64 = 50;
/// Least ZeroMQ high-water mark (messages) on the bridge's sockets, which otherwise are 5 %
/// of `--req-maxconn` + `--stream-maxconn` as in Condure 1.9.1: what the default limits give
/// (505), so a smaller limit does not shrink the queues to a few messages (105 at 2,000, 1 at
/// 20) while the connections busy at once, not the limit, set what is in flight. Still a
/// bound: a full handler pushes back after this many packets per pipe.
pub const ZMQ_HWM_MIN: usize = 500;

/// Credits earned by a fan-out's frames (list-form packets) go back to the handler at once
/// only when its budget for the connection is below half of what we offered (TCP's rule for
/// window updates) or below its largest packet so far; otherwise they wait this long,
/// collecting what later frames earn. Returned per frame, a round to 100,000 clients costs
/// 100,000 credit packets (~0.35 s of CPU on 2 cores between bridge and handler, landing
/// on the next round); this way a client costs at most one per interval, and those come
/// in one burst per interval. Frames for one id are credited per write, as Condure does. A
/// handler that waits for a whole message's worth of credits (instead of splitting the
/// message to its credits, as Pushpin does) waits at most this long, and only for a
/// message larger than any before it and than half its budget.
pub const CREDIT_RETURN_DELAY_MS: u64 = 10_000;

/// A worker stops accepting while it holds more than this many connections above the least
/// loaded worker, so connections spread over workers sharing one listener.
pub const ACCEPT_BALANCE_SLACK: usize = 4;
/// Slots a worker keeps beyond its share of the connection limits, for connections accepted
/// at the limit: one that replaces an idle connection whose close is still under way, or one
/// being answered `503`. Also covers the accepts a runtime has armed when the limit is hit
/// (io_uring: 4 per listener). When these are in use too, new connections wait in the
/// listen backlog.
pub const OVERLOAD_SLOTS: usize = 64;
/// `Retry-After` of the `503` a client gets at the connection limit, in seconds.
pub const OVERLOAD_RETRY_AFTER_S: u32 = 1;
/// At most one log line per worker in this period about connections closed or refused at
/// the limit (it gives the counts since the last line).
pub const OVERLOAD_LOG_INTERVAL_MS: u64 = 10_000;

/// After a handler's connection to the ROUTER goes away (`ZMQ_ROUTER_NOTIFY`), its sessions
/// are failed this much later, unless it connects again first. The notice comes from the
/// ROUTER and the handler's last packets come through the SUB, two connections that libzmq
/// reads independently: the wait lets packets the handler sent just before it died arrive
/// and reach the workers first (the bridge also drains the SUB before it announces), so no
/// packet the handler had sent, a response it acknowledged or a body it granted credits for,
/// is cut off by its own death notice. Short enough that clients hear within a second.
pub const HANDLER_GONE_GRACE_MS: u64 = 200;
/// Handlers whose death is being announced at once, per worker and in the bridge: handler
/// identities are few; one more is dropped with a warning (its sessions then end at the
/// 60 s expiry, as before zring noticed deaths).
pub const HANDLERS_GONE_MAX: usize = 64;
/// Handler identities the bridge tracks as connected to its ROUTER (connect/disconnect
/// notices look alike, so it must remember which peers are connected).
pub const HANDLERS_CONNECTED_MAX: usize = 1024;

/// Distinct handler addresses a worker keeps interned (connections point at them).
pub const HANDLERS_INTERNED_MAX: usize = 1024;
/// How often free heap pages go back to the kernel (`malloc_trim`, from worker 0's sweep):
/// rare enough to cost nothing, often enough that a burst's memory does not stay resident.
pub const MALLOC_TRIM_INTERVAL_MS: u64 = 10_000;
/// Default time a request may wait for a handler to take it before zring answers 503.
pub const HANDLER_WAIT_MS_DEFAULT: u64 = 5_000;
/// `--shutdown-timeout`: SIGTERM's drain (pushpin-connmgr's `SHUTDOWN_TIMEOUT`, 10 s).
pub const SHUTDOWN_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// The drain keeps an idle connection (a new one, or a kept-alive one between requests) open
/// this long for a request that may be on its way, and serves it with `Connection: close`:
/// a kept-alive client writes its next request as soon as it has read a response, and a
/// new client right after connecting, so closing at once would reset requests in flight.
/// Long enough for a loaded client to write; short enough that a drain with only idle
/// connections ends in a second. (A takeover depends on it: the old process serves what it
/// has accepted, `docs/operations.md`.)
pub const DRAIN_IDLE_GRACE_MS: u64 = 1_000;
/// Default of `--head-timeout`: a request head must be complete this long after accept (or
/// after its first byte on a kept-alive connection). Trickling bytes do not extend it, so a
/// slowloris holds a slot this long at most.
pub const HEAD_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default of `--keepalive-timeout`: a kept-alive connection with no byte of a next request
/// is closed after this (Condure's 60 s).
pub const KEEPALIVE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Defaults of `--body-timeout` and `--body-min-bytes`: while zring is ready for more of a
/// request body, the client must send at least this many bytes in every such period, or it
/// gets a 408.
pub const BODY_TIMEOUT_MS_DEFAULT: u64 = 10_000;
pub const BODY_MIN_BYTES_DEFAULT: u64 = 1024;
/// Largest single buffer taken from a worker's send-buffer pool is kept for reuse only up to
/// this capacity; larger ones are freed so one big response does not pin memory.
pub const POOL_BUFFER_BYTES_MAX: usize = 64 * 1024;
/// Buffers kept in a worker's pool: enough for the connections active in one turn; what a
/// burst took beyond it is freed rather than kept resident.
pub const POOL_BUFFERS_MAX: usize = 256;

/// Largest buffer kept on the pool's small list (`conn::Pool::take_small`): a sealed fan-out
/// record of a WebSocket message up to ~2 KiB (TLS adds 22 B per record in TLS 1.3, 29 B in
/// TLS 1.2), which covers the small JSON messages broadcasts carry.
pub const POOL_SMALL_BUFFER_BYTES_MAX: usize = 2048;
/// Capacity kept on a worker's small list, in all. A fan-out to TLS targets has one sealed
/// record in flight per target, so a round to N targets per worker takes up to N small
/// buffers at once (a turn dispatches `DISPATCH_TARGETS_PER_TURN_MAX`, and the sends of
/// earlier turns may still be in flight); keeping them makes the next round allocate none.
/// 4 MiB holds 32,768 records of a 64 B message (128 B buffers) or 2,048 of a ~1.5 KiB one;
/// past it a returned buffer is freed (that round's targets beyond the bound allocate and
/// free, as every target did before). The list shrinks back when rounds stop
/// (`POOL_SHRINK_INTERVAL_MS`).
pub const POOL_SMALL_BYTES_MAX: usize = 4 * 1024 * 1024;
/// How often a worker frees the small buffers its pool did not need since the last time
/// (`conn::Pool::shrink`): a fan-out's buffers stay while rounds come at least this often,
/// and are freed within two intervals after the last one.
pub const POOL_SHRINK_INTERVAL_MS: u64 = 10_000;

const _: () = assert!(POOL_SMALL_BUFFER_BYTES_MAX < POOL_BUFFER_BYTES_MAX);
const _: () = assert!(POOL_SMALL_BYTES_MAX >= DISPATCH_TARGETS_PER_TURN_MAX * 128);
const _: () = assert!(PACKET_IDS_MAX <= 128);
const _: () = assert!(SESSION_EXPIRY_MS > KEEP_ALIVE_INTERVAL_MS);
const _: () = assert!(KEEP_ALIVE_INTERVAL_MS % KEEP_ALIVE_SWEEP_STEPS == 0);

/// How long a WebSocket close handshake may take: after our close frame, the client's close
/// (then we close the TCP connection anyway); after the client's close, the handler's answer
/// (then zring answers the client itself). RFC 6455 leaves it to the endpoint.
pub const WS_CLOSE_WAIT_MS: u64 = 5_000;
/// Default most payload bytes in one WebSocket message from a client, fragments counted
/// (1009 past it). Condure sets no such limit: it streams fragments to the handler as they
/// arrive, so memory does not grow with message size. The bound only stops a client from
/// holding a handler's assembly buffer open without end; 64 MiB is well above Autobahn's
/// largest messages (16 MiB, case group 9) and real traffic.
pub const WS_MESSAGE_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;

/// Longest identity name (SNI host or `default-cert`): the most a DNS name can be (RFC 1035
/// §2.3.4 with the dots counted); longer names are refused before any file is touched.
pub const TLS_IDENTITY_NAME_BYTES_MAX: usize = 253;
/// Identities kept loaded per identities directory. Each costs its chain and key (a few KiB);
/// past the bound the least recently checked one is dropped and reloaded from disk on its
/// next use, so a stream of distinct SNI names cannot grow memory.
pub const TLS_IDENTITIES_CACHED_MAX: usize = 1024;
/// A loaded identity's files are checked for a new mtime at most this often, so a busy name
/// costs two `stat`s a second, not two per handshake; rotation shows within this time.
pub const TLS_IDENTITY_RECHECK_MS: u64 = 1_000;
/// Largest identity file read (`.crt` chain or `.key`): far above any real chain, small
/// enough that a wrong path (a log file, a device) is refused instead of read whole.
pub const TLS_IDENTITY_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// TLS 1.2 sessions a listener remembers by id for clients without ticket support (TLS 1.3
/// and ticket-capable 1.2 clients use stateless tickets and cost nothing here). A stored
/// session is about 200 B, so the cache stays under 1 MiB; older entries are evicted.
pub const TLS_SESSIONS_CACHED_MAX: usize = 4096;
/// TLS 1.3 tickets sent after each full handshake: one is enough for a browser's next
/// connection; rustls's default of two only doubles the handshake's output.
pub const TLS13_TICKETS_SENT: usize = 1;
/// Default of `--tls-handshake-timeout`: a TLS client has this long from accept to a finished
/// handshake; bytes that trickle in do not extend it, so a client that stalls mid-handshake
/// is dropped on time.
pub const TLS_HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Most unconsumed ciphertext a connection keeps: one largest record (2^14 plaintext plus
/// 2,048 of expansion, RFC 8446 §5.2 / RFC 5246 §6.2.3) and its header, with room for the
/// start of the next read.
pub const TLS_TAIL_BYTES_MAX: usize = 16_384 + 2_048 + 5 + 4_096;

// Client mode (`--zserver-*`, `conn::out`, `resolver`).

/// Resolver threads shared by all workers (pushpin-connmgr runs 10).
pub const DNS_THREADS: usize = 4;
/// Queries waiting for a resolver thread, at most; past it a request fails at once
/// (`remote-connection-failed`) instead of queueing without bound.
pub const DNS_QUEUE_MAX: usize = 4096;
/// Addresses kept from one resolution (pushpin-connmgr keeps 16).
pub const DNS_ADDRESSES_MAX: usize = 16;
/// A name not resolved within this fails the request (getaddrinfo has no timeout of its
/// own; the late answer is dropped).
pub const DNS_TIMEOUT_MS: u64 = 10_000;
/// An outbound connect not established within this fails with `connection-timeout`
/// (pushpin-connmgr leaves it to the kernel's SYN retries, about two minutes).
pub const CONNECT_TIMEOUT_MS: u64 = 30_000;
/// Redirects followed for one request (pushpin-connmgr and zurl: 8).
pub const REDIRECTS_MAX: u8 = 8;
/// Bytes of an origin's response head, at most (1xx interim heads included, each).
pub const OUT_RESPONSE_HEAD_BYTES_MAX: usize = 32_768;
/// An idle pooled connection to an origin closes after this (`conn::out::pool`): shorter
/// than the keep-alive timeouts origins commonly set (nginx 75 s, Node.js 5 s is the
/// exception), so zring rarely sends on a connection the origin is closing; a stale one is
/// retried once for idempotent requests anyway. pushpin-connmgr keeps them 55 s.
pub const OUT_POOL_IDLE_MS: u64 = 30_000;
/// Idle connections a worker keeps to one origin (one pool key), at most.
pub const OUT_POOL_IDLE_PER_KEY_MAX: usize = 64;
/// Idle connections a worker keeps in all: each holds a runtime slot of its own (beside the
/// exchanges' `--stream-maxconn`/`--req-maxconn` share), a socket and, over TLS, its rustls
/// state; past it a finished exchange's connection is closed instead of parked.
pub const OUT_POOL_IDLE_PER_WORKER_MAX: usize = 256;
const _: () = assert!(OUT_POOL_IDLE_PER_KEY_MAX <= OUT_POOL_IDLE_PER_WORKER_MAX);
/// How long an outbound connection's `close_notify` may take to be written before the
/// socket is closed anyway (an origin that reads nothing must not hold the slot).
pub const OUT_CLOSE_NOTIFY_MS: u64 = 5_000;
/// Client TLS configurations kept for requests with a client certificate or
/// `trust-connect-host` (`tls::client::ClientTls`): one per distinct combination, the least
/// recently used dropped past this (then rebuilt: a PEM parse, no I/O).
pub const OUT_TLS_CONFIGS_CACHED_MAX: usize = 32;

const _: () = assert!(DNS_TIMEOUT_MS < SESSION_EXPIRY_MS);
const _: () = assert!(REDIRECTS_MAX >= 8);
/// Receive HWM of client mode's PULL and send HWM of its req ROUTER (pushpin-connmgr: 128).
pub const ZSERVER_PULL_HWM: i32 = 128;
