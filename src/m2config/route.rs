//! Request routing by Mongrel2's rules (src/routing.c, src/host.c, src/server.c), sans-IO:
//! host name and path in, the route (its target and the `PATTERN` handlers see) out.
//!
//! - **Hosts.** Each host's `matching` is stored reversed, so a lookup finds the longest
//!   `matching` that ends the request's host name (`example.com` matches
//!   `www.example.com`). A `matching` with a `)` is a pattern: the text after its last `)`
//!   is the literal suffix, and the part before it must match the pattern up to there,
//!   anchored at both ends. No host header, or no match: the server's `default_host`.
//! - **Paths.** A route key is a literal prefix up to its first `(`, then a pattern. The
//!   longest prefix of the path that is a key wins; Mongrel2's tree also returns a route
//!   whose key *extends* a path that ends inside it (`/js` reaches `/json`), which this
//!   router keeps. If the winning key has a pattern, the rest of the path after the prefix
//!   must match it (anchored at the start only); other routes sharing that exact prefix are
//!   tried in load order, and shorter prefixes never are.
//!
//! Mongrel2 decides all of this with the route tree built in load order; the trees here are
//! built the same way ([`super::tst`]), from routes in the order m2sh stores them.

use super::pattern;
use super::tst::Tst;
use super::{Host, Target};

/// Longest path routed (`limits.url_path`, src/host.c): longer paths get no route.
pub const URL_PATH_BYTES_MAX: usize = 256;

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The key as written: `PATTERN` for handlers.
    pub pattern: String,
    /// The literal prefix, up to the first `(`.
    pub prefix: String,
    /// Offset of the first `(`, if any.
    first_paren: Option<usize>,
    /// The next route with the same prefix, in load order.
    next: Option<usize>,
    /// Index of the route in its host's `routes`.
    pub index: usize,
}

/// The compiled routes of one host.
#[derive(Debug, Clone)]
pub struct HostRoutes {
    /// Index of the host in its server's `hosts`.
    pub host: usize,
    /// The literal part of `matching` (reversed in the tree) and, for a pattern host, the
    /// pattern with `$` appended.
    pattern: Option<String>,
    suffix_len: usize,
    routes: Vec<Route>,
    tree: Tst<usize>,
}

/// A server's router.
#[derive(Debug, Clone)]
pub struct Router {
    hosts: Vec<HostRoutes>,
    tree: Tst<usize>,
    default_host: Option<usize>,
}

/// A routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a> {
    /// Index of the host in the server's `hosts`.
    pub host: usize,
    /// Index of the route in that host's `routes`.
    pub route: usize,
    /// The route key: `PATTERN`.
    pub pattern: &'a str,
    /// The route's literal prefix: what a `Dir` strips from the path.
    pub prefix: &'a str,
}

impl Router {
    /// Compiles a server's hosts. Routes with an identical key are refused at config load,
    /// so every insert here succeeds except identical prefixes, which chain.
    pub fn new(hosts: &[Host], default_host: &str) -> Self {
        let mut router = Router {
            hosts: Vec::new(),
            tree: Tst::new(),
            default_host: None,
        };
        for (host_index, host) in hosts.iter().enumerate() {
            let compiled = compile_host(host_index, host);
            let matching = host.matching.as_bytes();
            let literal = match matching.iter().rposition(|&b| b == b')') {
                Some(paren) => &matching[paren + 1..],
                None => matching,
            };
            let reversed: Vec<u8> = literal.iter().rev().copied().collect();
            // A duplicate matching is kept by the first host, as the first TST value wins.
            let _ = router.tree.insert(&reversed, router.hosts.len());
            router.hosts.push(compiled);
            if host.name == default_host {
                router.default_host = Some(router.hosts.len() - 1);
            }
        }
        router
    }

    /// The host for a request: `host_name` is [`crate::proto::m2::host_name`] of the Host
    /// header, `None` without one.
    pub fn host(&self, host_name: Option<&[u8]>) -> Option<usize> {
        let Some(name) = host_name else {
            return self.default_host;
        };
        let found = self.tree.search_suffix(name).and_then(|&index| {
            let host = &self.hosts[index];
            match &host.pattern {
                None => Some(index),
                Some(pattern) => {
                    let head = name.len().checked_sub(host.suffix_len)?;
                    pattern::match_prefix(&name[..head], pattern.as_bytes()).map(|_| index)
                }
            }
        });
        found
            .or(self.default_host)
            .map(|index| self.hosts[index].host)
    }

    /// Routes `path` within host `host` (an index from [`Router::host`]).
    pub fn route(&self, host: usize, path: &[u8]) -> Option<Match<'_>> {
        if path.len() > URL_PATH_BYTES_MAX {
            return None;
        }
        let compiled = self.hosts.iter().find(|compiled| compiled.host == host)?;
        let head = *compiled.tree.search_prefix(path)?;
        let mut at = Some(head);
        if compiled.routes[head].first_paren.is_none() {
            return Some(compiled.matched(head));
        }
        while let Some(index) = at {
            let route = &compiled.routes[index];
            let Some(paren) = route.first_paren else {
                // Mongrel2 reads before its pattern here (undefined); zring takes the route.
                return Some(compiled.matched(index));
            };
            if let Some(rest) = path.get(route.prefix.len()..) {
                if pattern::match_prefix(rest, &route.pattern.as_bytes()[paren..]).is_some() {
                    return Some(compiled.matched(index));
                }
            }
            at = route.next;
        }
        None
    }

    /// Both steps at once: host then path.
    pub fn resolve(&self, host_name: Option<&[u8]>, path: &[u8]) -> Option<Match<'_>> {
        self.route(self.host(host_name)?, path)
    }

    /// The target a match leads to.
    pub fn target<'h>(&self, hosts: &'h [Host], found: &Match<'_>) -> &'h Target {
        &hosts[found.host].routes[found.route].target
    }
}

impl HostRoutes {
    fn matched(&self, index: usize) -> Match<'_> {
        let route = &self.routes[index];
        Match {
            host: self.host,
            route: route.index,
            pattern: &route.pattern,
            prefix: &route.prefix,
        }
    }
}

fn compile_host(host_index: usize, host: &Host) -> HostRoutes {
    let (pattern, suffix_len) = match host.matching.rfind(')') {
        Some(paren) => (
            Some(format!("{}$", &host.matching[..=paren])),
            host.matching.len() - paren - 1,
        ),
        None => (None, host.matching.len()),
    };
    let mut compiled = HostRoutes {
        host: host_index,
        pattern,
        suffix_len,
        routes: Vec::new(),
        tree: Tst::new(),
    };
    for (index, route) in host.routes.iter().enumerate() {
        let first_paren = route.path.find('(');
        let prefix = first_paren.map_or(route.path.as_str(), |paren| &route.path[..paren]);
        let position = compiled.routes.len();
        compiled.routes.push(Route {
            pattern: route.path.clone(),
            prefix: prefix.to_owned(),
            first_paren,
            next: None,
            index,
        });
        // RouteMap_insert_base: a route whose prefix is already stored goes right after the
        // first one in its chain. Mongrel2 searches before inserting; for an empty prefix
        // (a pattern that starts with `(`) its search answers the root node's value, which
        // may be another route's: that quirk is kept. An empty prefix whose own node holds
        // a value the search cannot see chains to the first route with that prefix.
        let head = compiled
            .tree
            .search(prefix.as_bytes())
            .copied()
            .or_else(|| {
                compiled
                    .tree
                    .insert(prefix.as_bytes(), position)
                    .err()
                    .and_then(|_| compiled.routes.iter().position(|r| r.prefix == prefix))
            });
        if let Some(head) = head {
            compiled.routes[position].next = compiled.routes[head].next;
            compiled.routes[head].next = Some(position);
        }
    }
    compiled
}
