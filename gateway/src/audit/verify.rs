//! Checking a store's chains: every record's own hash, its link to the
//! previous record, contiguous sequence numbers, signed checkpoints, and
//! (on the gateway's host) the signed head: the last record the gateway
//! wrote, and its hash. Every record must be covered by a signature: a
//! signed checkpoint at or after it, or the signed head. Whoever can write
//! the store without the signing key can delete checkpoints and re-hash
//! the chain, so a chain whose newest records no signature covers is not
//! verified, and the first such record is named. The first problem found,
//! in chain order, is named.
use std::collections::HashMap;

use super::{
    head::SignedHead,
    keys,
    record::GENESIS,
    store::{Reader, StoreError},
};

/// The first thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The chain.
    pub instance: String,
    /// Position of the first bad record.
    pub seq: i64,
    /// Its id in the store, when it is there.
    pub id: Option<i64>,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.id {
            Some(id) => write!(
                f,
                "chain {} record seq {} (id {id}): {}",
                self.instance, self.seq, self.reason
            ),
            None => write!(f, "chain {} at seq {}: {}", self.instance, self.seq, self.reason),
        }
    }
}

/// What verification found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per chain: (instance, records checked, checkpoints checked).
    pub chains: Vec<(String, i64, usize)>,
    /// The first problem, if any.
    pub problem: Option<Problem>,
}

/// Verifies every chain; checkpoints (and the head, the last record this
/// host's gateway wrote) must be signed by one of the trusted `keys`.
pub fn verify(reader: &mut dyn Reader, keys: &[Vec<u8>], head: Option<&SignedHead>) -> Result<Report, StoreError> {
    let trusted: HashMap<String, &[u8]> = keys.iter().map(|k| (keys::key_id(k), k.as_slice())).collect();
    let mut report = Report::default();
    let mut instances = reader.instances()?;
    if let Some(h) = head {
        if !instances.contains(&h.instance) {
            instances.push(h.instance.clone());
        }
    }
    for instance in instances {
        let (checked, cps, problem) = chain(reader, &instance, &trusted, head)?;
        report.chains.push((instance, checked, cps));
        if problem.is_some() {
            report.problem = problem;
            break;
        }
    }
    Ok(report)
}

type ChainResult = (i64, usize, Option<Problem>);

fn chain(
    reader: &mut dyn Reader,
    instance: &str,
    trusted: &HashMap<String, &[u8]>,
    head: Option<&SignedHead>,
) -> Result<ChainResult, StoreError> {
    let cps: HashMap<i64, _> = reader.checkpoints(instance)?.into_iter().map(|c| (c.seq, c)).collect();
    let problem = |seq: i64, id: Option<i64>, reason: String| Problem {
        instance: instance.to_owned(),
        seq,
        id,
        reason,
    };
    let mut sorted: Vec<_> = cps.values().collect();
    sorted.sort_by_key(|c| c.seq);
    for c in sorted {
        let Some(public) = trusted.get(&c.key_id) else {
            let reason = format!(
                "its checkpoint is signed by key {}, which is not trusted (pass it with --key)",
                c.key_id
            );
            return Ok((0, cps.len(), Some(problem(c.seq, None, reason))));
        };
        if !keys::verify(public, &c.instance, c.seq, &c.hash, &c.signature) {
            return Ok((
                0,
                cps.len(),
                Some(problem(c.seq, None, "its checkpoint's signature is not valid".into())),
            ));
        }
    }
    let head = head.filter(|h| h.instance == instance);
    if let Some(h) = head {
        if let Err(why) = h.check(trusted) {
            return Ok((0, cps.len(), Some(problem(h.seq, None, why))));
        }
    }
    let start = reader.pruned_to(instance)?;
    let mut prev = if start == 0 {
        GENESIS.to_owned()
    } else {
        match cps.get(&start) {
            Some(c) => c.hash.clone(),
            None => {
                let reason = format!("records up to {start} were removed without a signed checkpoint there");
                return Ok((0, cps.len(), Some(problem(start, None, reason))));
            }
        }
    };
    let mut expected = start + 1;
    let mut checked = 0;
    loop {
        let page = reader.chain(instance, expected - 1, 1000)?;
        if page.is_empty() {
            break;
        }
        for r in page {
            if r.seq != expected {
                let reason = format!("missing (deleted); the chain goes on at seq {}", r.seq);
                return Ok((checked, cps.len(), Some(problem(expected, None, reason))));
            }
            if let Some(defect) = r.defect() {
                return Ok((checked, cps.len(), Some(problem(r.seq, Some(r.id), defect))));
            }
            if r.prev_hash != prev {
                let reason =
                    "does not link to the record before it: it or its predecessor was rewritten, or they were reordered"
                        .to_owned();
                return Ok((checked, cps.len(), Some(problem(r.seq, Some(r.id), reason))));
            }
            if let Some(c) = cps.get(&r.seq) {
                if c.hash != r.hash {
                    let reason = "differs from what its signed checkpoint vouches for (rewritten)".to_owned();
                    return Ok((checked, cps.len(), Some(problem(r.seq, Some(r.id), reason))));
                }
            }
            if head.is_some_and(|h| h.seq == r.seq && h.hash != r.hash) {
                let reason = "differs from what the gateway's signed head vouches for (rewritten)".to_owned();
                return Ok((checked, cps.len(), Some(problem(r.seq, Some(r.id), reason))));
            }
            prev = r.hash;
            expected += 1;
            checked += 1;
        }
    }
    let last = expected - 1;
    if let Some(max_cp) = cps.keys().copied().filter(|s| *s > last).min() {
        let reason = format!(
            "records from {} to at least {max_cp} were deleted (a signed checkpoint names {max_cp})",
            last + 1
        );
        return Ok((checked, cps.len(), Some(problem(last + 1, None, reason))));
    }
    if let Some(h) = head.filter(|h| h.seq > last) {
        let reason = format!(
            "records from {} to {} were deleted (this gateway wrote up to {})",
            last + 1,
            h.seq,
            h.seq
        );
        return Ok((checked, cps.len(), Some(problem(last + 1, None, reason))));
    }
    // Every record is vouched for by the newest signature at or after it.
    let covered = cps
        .keys()
        .copied()
        .chain(head.map(|h| h.seq))
        .filter(|s| *s <= last)
        .max()
        .unwrap_or(start);
    if last > covered {
        let reason = format!(
            "no signature covers records {} to {last}: no signed checkpoint or signed head vouches for them \
             (a gateway signs at least every `checkpoint_every` records and `checkpoint_interval`, and when it stops, \
             so checkpoints were removed, or a running gateway has not signed them yet: verify on its host, where its \
             signed head covers them)",
            covered + 1
        );
        return Ok((checked, cps.len(), Some(problem(covered + 1, None, reason))));
    }
    Ok((checked, cps.len(), None))
}
