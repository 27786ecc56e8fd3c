//! Things built once and shared (TLS configs, masking plans, acceptors):
//! a map from what they were built from to the result, bounded so that a
//! stream of distinct keys cannot grow it without end.
use std::{collections::HashMap, hash::Hash, sync::Mutex};

/// Entries kept at most; past that the map starts over.
const MAX_ENTRIES: usize = 256;

/// A bounded map of built values.
pub struct Built<K, V> {
    map: Mutex<HashMap<K, V>>,
}

impl<K, V> Default for Built<K, V> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> Built<K, V> {
    /// The value for `key`, built with `build` the first time (a failed
    /// build is not kept: the next call tries again).
    pub fn get_or_build<E>(&self, key: K, build: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = map.get(&key) {
            return Ok(hit.clone());
        }
        let value = build()?;
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, value.clone());
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_once_keeps_no_failure_and_stays_bounded() {
        let built: Built<u32, String> = Built::default();
        let mut builds = 0;
        for _ in 0..3 {
            let v: Result<_, ()> = built.get_or_build(1, || {
                builds += 1;
                Ok("one".to_owned())
            });
            assert_eq!(v.unwrap(), "one");
        }
        assert_eq!(builds, 1);
        assert_eq!(built.get_or_build(2, || Err::<String, _>("no")), Err("no"));
        assert_eq!(built.get_or_build(2, || Ok::<_, ()>("two".to_owned())).unwrap(), "two");
        for k in 0..(MAX_ENTRIES as u32 * 2) {
            let _ = built.get_or_build(k + 10, || Ok::<_, ()>(k.to_string()));
        }
        assert!(built.map.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
