//! Mongrel2's ternary search tree (src/adt/tst.c), reproduced because its quirks decide
//! routing: which route a path gets, which host a name gets, which MIME type a file gets,
//! and in which order `m2sh` stores a config's dict entries.
//!
//! Bytes compare as C's signed `char`. The lookups keep Mongrel2's behaviour where a key
//! runs out inside the tree: [`Tst::search_prefix`] of `/js` finds a route `/json`, since
//! the C code then follows `equal` links down to the first stored value.
//!
//! Built once at config load; lookups allocate nothing and take O(key length × alphabet).

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Node {
    split: i8,
    low: u32,
    equal: u32,
    high: u32,
    /// Index into `values`.
    value: u32,
}

/// A TST mapping byte strings to values.
#[derive(Debug, Clone)]
pub struct Tst<V> {
    nodes: Vec<Node>,
    values: Vec<V>,
}

impl<V> Default for Tst<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// The key is already present (Mongrel2 asserts on this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate;

impl<V> Tst<V> {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            nodes: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the tree holds no value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn node(&self, index: u32) -> Option<&Node> {
        self.nodes.get(index as usize)
    }

    fn value_of(&self, index: u32) -> Option<&V> {
        let node = self.node(index)?;
        self.values.get(node.value as usize)
    }

    /// `tst_insert`. An empty key is stored on a node for the C string's NUL, as in C.
    pub fn insert(&mut self, key: &[u8], value: V) -> Result<(), Duplicate> {
        let mut link: Option<(u32, u8)> = None; // parent node and which child (0 low 1 eq 2 high)
        let mut at = if self.nodes.is_empty() { NIL } else { 0 };
        let mut position = 0;
        loop {
            let byte = key.get(position).copied().unwrap_or(0) as i8;
            if at == NIL {
                at = self.nodes.len() as u32;
                self.nodes.push(Node {
                    split: byte,
                    low: NIL,
                    equal: NIL,
                    high: NIL,
                    value: NIL,
                });
                if let Some((parent, side)) = link {
                    let parent = &mut self.nodes[parent as usize];
                    match side {
                        0 => parent.low = at,
                        1 => parent.equal = at,
                        _ => parent.high = at,
                    }
                }
            }
            let node = &self.nodes[at as usize];
            if byte < node.split {
                link = Some((at, 0));
                at = node.low;
            } else if byte == node.split {
                if position + 1 < key.len() {
                    link = Some((at, 1));
                    at = node.equal;
                    position += 1;
                } else {
                    if node.value != NIL {
                        return Err(Duplicate);
                    }
                    self.nodes[at as usize].value = self.values.len() as u32;
                    self.values.push(value);
                    return Ok(());
                }
            } else {
                link = Some((at, 2));
                at = node.high;
            }
        }
    }

    /// `tst_search`: the value stored under exactly `key` (the C code returns the value of
    /// the node where the key ends, which is the same thing for non-empty keys).
    pub fn search(&self, key: &[u8]) -> Option<&V> {
        if self.nodes.is_empty() {
            return None;
        }
        let mut at = 0u32;
        let mut position = 0;
        while position < key.len() {
            let node = self.node(at)?;
            let byte = key[position] as i8;
            if byte < node.split {
                at = node.low;
            } else if byte == node.split {
                position += 1;
                if position < key.len() {
                    at = node.equal;
                }
            } else {
                at = node.high;
            }
        }
        self.value_of(at)
    }

    /// `tst_search_prefix` (forward) or `tst_search_suffix` (the key read backwards).
    fn search_longest(&self, key: &[u8], backwards: bool) -> Option<&V> {
        if key.is_empty() || self.nodes.is_empty() {
            return None;
        }
        let byte_at = |step: usize| {
            if backwards {
                key[key.len() - 1 - step]
            } else {
                key[step]
            }
        };
        let mut at = 0u32;
        let mut last = NIL;
        let mut step = 0;
        while step < key.len() {
            let Some(node) = self.node(at) else {
                break;
            };
            let byte = byte_at(step) as i8;
            if byte < node.split {
                at = node.low;
            } else if byte == node.split {
                step += 1;
                if step < key.len() {
                    if node.value != NIL {
                        last = at;
                    }
                    at = node.equal;
                }
            } else {
                at = node.high;
            }
        }
        let mut at = if self.node(at).is_some() { at } else { last };
        // The key ended inside the tree: take the first value down the equal links.
        while let Some(node) = self.node(at) {
            if node.value != NIL {
                return self.values.get(node.value as usize);
            }
            at = node.equal;
        }
        None
    }

    /// `tst_search_prefix`: the value of the longest stored key that prefixes `key`, or,
    /// when `key` ends inside the tree, the first value below it on the equal links.
    pub fn search_prefix(&self, key: &[u8]) -> Option<&V> {
        self.search_longest(key, false)
    }

    /// `tst_search_suffix`: as [`Tst::search_prefix`] with `key` read from its end (the
    /// stored keys are reversed by the caller).
    pub fn search_suffix(&self, key: &[u8]) -> Option<&V> {
        self.search_longest(key, true)
    }

    /// Values in `tst_traverse` order: breadth first over nodes, children low, equal, high.
    pub fn traverse(&self) -> Vec<&V> {
        let mut out = Vec::with_capacity(self.values.len());
        if self.nodes.is_empty() {
            return out;
        }
        let mut queue = std::collections::VecDeque::from([0u32]);
        while let Some(at) = queue.pop_front() {
            let node = &self.nodes[at as usize];
            if let Some(value) = self.values.get(node.value as usize) {
                out.push(value);
            }
            for child in [node.low, node.equal, node.high] {
                if child != NIL {
                    queue.push_back(child);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traverse_is_breadth_first() {
        // m2sh stored {'/z','/a(\d+)','/b','/a'} as /z, /a, /b, /a(\d+) (checked with m2sh).
        let mut tst = Tst::new();
        for key in ["/z", "/a(\\d+)", "/b", "/a"] {
            tst.insert(key.as_bytes(), key).unwrap();
        }
        assert_eq!(tst.traverse(), [&"/z", &"/a", &"/b", &"/a(\\d+)"]);
        let mut settings = Tst::new();
        for key in ["server.daemonize", "x", "n"] {
            settings.insert(key.as_bytes(), key).unwrap();
        }
        assert_eq!(settings.traverse(), [&"n", &"x", &"server.daemonize"]);
    }

    #[test]
    fn prefix_search_quirks() {
        let mut tst = Tst::new();
        tst.insert(b"/json", 1).unwrap();
        tst.insert(b"/", 2).unwrap();
        assert_eq!(tst.search_prefix(b"/json/x"), Some(&1));
        assert_eq!(tst.search_prefix(b"/json"), Some(&1));
        assert_eq!(tst.search_prefix(b"/js"), Some(&1));
        assert_eq!(tst.search_prefix(b"/x"), Some(&2));
        assert_eq!(tst.search_prefix(b"x"), None);
        assert_eq!(tst.search_prefix(b""), None);
        assert_eq!(tst.insert(b"/json", 3), Err(Duplicate));
        assert_eq!(tst.search(b"/json"), Some(&1));
        assert_eq!(tst.search(b"/jso"), None);
    }
}
