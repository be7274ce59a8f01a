//! Votes of workers (teachers) on tasks (items), interned.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::{ConsensusError, Result};

/// A multiply-rotate hasher for short interned names and index pairs: the inputs are not
/// adversarial (they come from the caller's own data), so SipHash's DoS resistance buys
/// nothing here and costs a third of the interning time.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.write_u64(v);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(SEED);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    /// SplitMix64's finaliser: a product's low bits depend only on its inputs' low bits, and
    /// hashbrown picks buckets by the low bits, so names that differ in their later bytes
    /// (`i1234`, `i1235`) would share buckets without it.
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 30;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Interns names to indices in order of first appearance.
#[derive(Default)]
struct Interner {
    names: Vec<String>,
    /// Indices into `names`, hashed by name.
    index: hashbrown::HashTable<usize>,
    /// The index returned last: votes come grouped by task, and a run of one label repeats.
    last: Option<usize>,
}

fn hash_name(name: &str) -> u64 {
    let mut h = FastHasher::default();
    h.write(name.as_bytes());
    h.finish()
}

/// Up to this many names are looked up by comparing them (a few teachers, a few labels)
/// instead of hashing.
const SCAN: usize = 8;

impl Interner {
    fn get(&mut self, name: &str) -> usize {
        if let Some(l) = self.last
            && self.names[l] == name
        {
            return l;
        }
        let found = if self.names.len() <= SCAN {
            self.names.iter().position(|n| n == name)
        } else {
            self.lookup(name)
        };
        let i = match found {
            Some(i) => i,
            None => {
                let h = hash_name(name);
                let i = self.names.len();
                self.names.push(name.to_owned());
                let names = &self.names;
                self.index.insert_unique(h, i, |&j| hash_name(&names[j]));
                i
            }
        };
        self.last = Some(i);
        i
    }

    /// The index of `name`, if interned.
    fn lookup(&self, name: &str) -> Option<usize> {
        self.index
            .find(hash_name(name), |&i| self.names[i] == name)
            .copied()
    }
}

/// Votes `(task, worker, label)`, with names interned to indices. Labels are sorted by name,
/// so label index order is lexicographic (crowd-kit's column order).
#[derive(Debug, Clone, PartialEq)]
pub struct Votes {
    tasks: Vec<String>,
    workers: Vec<String>,
    labels: Vec<String>,
    /// `(task, worker, label)` indices, in input order.
    entries: Vec<(usize, usize, usize)>,
}

impl Votes {
    /// Interns votes; labels are whatever appears.
    ///
    /// # Errors
    /// [`ConsensusError::NoVotes`], [`ConsensusError::EmptyField`],
    /// [`ConsensusError::DuplicateVote`] (rows are 1-based in input order).
    pub fn from_triples<I, S>(triples: I) -> Result<Self>
    where
        I: IntoIterator<Item = (S, S, S)>,
        S: AsRef<str>,
    {
        Self::build(triples, None)
    }

    /// Interns votes whose labels must belong to `declared`.
    ///
    /// # Errors
    /// As [`Votes::from_triples`], and [`ConsensusError::UndeclaredLabel`].
    pub fn with_labels<I, S>(triples: I, declared: &[&str]) -> Result<Self>
    where
        I: IntoIterator<Item = (S, S, S)>,
        S: AsRef<str>,
    {
        Self::build(triples, Some(declared))
    }

    /// Votes already interned by the caller: `entries` are `(task, worker, label)` indices
    /// into the three name lists. Labels are kept in the given order (ties of the aggregators
    /// go to the smaller label index). Unlike the string constructors, tasks without votes
    /// are allowed: they get no consensus from the vote counts alone (majority confidence 0).
    ///
    /// # Errors
    /// [`ConsensusError::NoVotes`], [`ConsensusError::IndexOutOfRange`] (1-based entry),
    /// [`ConsensusError::DuplicateVote`], [`ConsensusError::EmptyField`] for an empty name.
    pub fn from_indices(
        tasks: Vec<String>,
        workers: Vec<String>,
        labels: Vec<String>,
        entries: Vec<(usize, usize, usize)>,
    ) -> Result<Self> {
        if entries.is_empty() {
            return Err(ConsensusError::NoVotes);
        }
        for (field, names) in [("task", &tasks), ("worker", &workers), ("label", &labels)] {
            if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
                return Err(ConsensusError::EmptyField { row: i + 1, field });
            }
        }
        for (i, &(t, w, l)) in entries.iter().enumerate() {
            for (field, v, n) in [
                ("task", t, tasks.len()),
                ("worker", w, workers.len()),
                ("label", l, labels.len()),
            ] {
                if v >= n {
                    return Err(ConsensusError::IndexOutOfRange {
                        row: i + 1,
                        field,
                        index: v,
                        len: n,
                    });
                }
            }
        }
        let votes = Votes {
            tasks,
            workers,
            labels,
            entries,
        };
        votes.check_duplicates()?;
        Ok(votes)
    }

    fn build<I, S>(triples: I, declared: Option<&[&str]>) -> Result<Self>
    where
        I: IntoIterator<Item = (S, S, S)>,
        S: AsRef<str>,
    {
        let (mut tasks, mut workers, mut labels) = (
            Interner::default(),
            Interner::default(),
            Interner::default(),
        );
        if let Some(d) = declared {
            for l in d {
                labels.get(l.trim());
            }
        }
        let triples = triples.into_iter();
        let mut entries = Vec::with_capacity(triples.size_hint().0);
        for (i, (t, w, l)) in triples.into_iter().enumerate() {
            let row = i + 1;
            let (t, w, l) = (t.as_ref().trim(), w.as_ref().trim(), l.as_ref().trim());
            for (field, v) in [("task", t), ("worker", w), ("label", l)] {
                if v.is_empty() {
                    return Err(ConsensusError::EmptyField { row, field });
                }
            }
            let li = match declared {
                Some(d) => match labels.lookup(l) {
                    Some(li) => li,
                    None => {
                        return Err(ConsensusError::UndeclaredLabel {
                            row,
                            label: l.to_owned(),
                            declared: d.join(", "),
                        });
                    }
                },
                None => labels.get(l),
            };
            entries.push((tasks.get(t), workers.get(w), li));
        }
        if entries.is_empty() {
            return Err(ConsensusError::NoVotes);
        }
        // Labels sorted by name; remap the interned indices.
        let mut order: Vec<usize> = (0..labels.names.len()).collect();
        order.sort_by(|&a, &b| labels.names[a].cmp(&labels.names[b]));
        let mut rank = vec![0; order.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        entries.iter_mut().for_each(|e| e.2 = rank[e.2]);
        let sorted: Vec<String> = order.iter().map(|&i| labels.names[i].clone()).collect();
        let votes = Votes {
            tasks: tasks.names,
            workers: workers.names,
            labels: sorted,
            entries,
        };
        votes.check_duplicates()?;
        Ok(votes)
    }

    /// The first (in input order) vote of a worker on a task it already voted on.
    fn check_duplicates(&self) -> Result<()> {
        let groups = self.by_task();
        let mut first: Option<usize> = None;
        let mut seen: Vec<(usize, usize)> = Vec::new();
        for t in 0..self.tasks.len() {
            let g = &groups.order[groups.offsets[t]..groups.offsets[t + 1]];
            seen.clear();
            seen.extend(g.iter().map(|&e| (self.entries[e].1, e)));
            seen.sort_unstable();
            for pair in seen.windows(2) {
                if pair[0].0 == pair[1].0 {
                    let second = pair[0].1.max(pair[1].1);
                    first = Some(first.map_or(second, |f| f.min(second)));
                }
            }
        }
        match first {
            None => Ok(()),
            Some(e) => {
                let (t, w, _) = self.entries[e];
                Err(ConsensusError::DuplicateVote {
                    row: e + 1,
                    task: self.tasks[t].clone(),
                    worker: self.workers[w].clone(),
                })
            }
        }
    }

    /// Entry indices grouped by task (a counting sort; input order within a task).
    pub(crate) fn by_task(&self) -> TaskGroups {
        let mut offsets = vec![0usize; self.tasks.len() + 1];
        for &(t, _, _) in &self.entries {
            offsets[t + 1] += 1;
        }
        for i in 0..self.tasks.len() {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut order = vec![0usize; self.entries.len()];
        for (e, &(t, _, _)) in self.entries.iter().enumerate() {
            order[fill[t]] = e;
            fill[t] += 1;
        }
        TaskGroups { offsets, order }
    }

    /// Task names, in order of first appearance.
    pub fn tasks(&self) -> &[String] {
        &self.tasks
    }

    /// Worker names, in order of first appearance.
    pub fn workers(&self) -> &[String] {
        &self.workers
    }

    /// Label names, sorted.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The name of label `i`.
    pub fn label_name(&self, i: usize) -> &str {
        &self.labels[i]
    }

    /// `(task, worker, label)` indices, in input order.
    pub fn entries(&self) -> &[(usize, usize, usize)] {
        &self.entries
    }
}

/// Entry indices grouped by task: the entries of task `t` are
/// `order[offsets[t]..offsets[t + 1]]`.
pub(crate) struct TaskGroups {
    pub offsets: Vec<usize>,
    pub order: Vec<usize>,
}
