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
    /// The [`Key`] of each name, contiguous: names are told apart by these, and only a long
    /// name's match is confirmed by comparing the strings.
    keys: Vec<Key>,
    /// Indices into `names`, by the key's hash (used once there are more than [`SCAN`] names).
    index: hashbrown::HashTable<usize>,
    /// The index returned last: votes come grouped by task, and a run of one label repeats.
    last: Option<usize>,
    /// For each name, the one asked for right after it last time: within each task, the
    /// workers tend to come in the same order.
    follow: Vec<usize>,
}

/// A name as one 128-bit value: a name of at most 15 bytes is its bytes with its length in the
/// last byte (equal keys are equal names), a longer one its hash with the last byte 0xFF
/// (equal keys then need the strings compared).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key(u128);

impl Key {
    const LONG: u8 = 0xFF;

    /// Built from whole-word loads (a byte-wise copy into a buffer read back as one value
    /// stalls on store forwarding at every call).
    #[inline(always)]
    fn of(name: &str) -> Key {
        let b = name.as_bytes();
        let n = b.len();
        let u32_at = |i: usize| u64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
        let u64_at = |i: usize| {
            u64::from_le_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        // Below 16 bytes, (length, these values) determine the bytes.
        let (lo, hi) = match n {
            0 => (0, 0),
            1..=3 => (
                u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16,
                0,
            ),
            4..=7 => (u32_at(0) | u32_at(n - 4) << 32, 0),
            8 => (u64_at(0), 0),
            9..=15 => (u64_at(0), u64_at(n - 8) >> (8 * (16 - n))),
            _ => {
                let mut h = FastHasher::default();
                h.write(b);
                return Key(u128::from(Key::LONG) << 120 | u128::from(h.finish()));
            }
        };
        Key(u128::from(n as u8) << 120 | u128::from(hi) << 64 | u128::from(lo))
    }

    /// Whether equal keys mean equal names.
    #[inline]
    fn exact(self) -> bool {
        (self.0 >> 120) as u8 != Key::LONG
    }

    #[inline]
    fn hash(self) -> u64 {
        let mut h = FastHasher::default();
        h.write_u64(self.0 as u64);
        h.write_u64((self.0 >> 64) as u64);
        h.finish()
    }
}

/// Up to this many names are looked up by scanning their keys (a few teachers, a few labels)
/// instead of probing the table.
const SCAN: usize = 8;

impl Interner {
    #[inline(always)]
    fn get(&mut self, name: &str) -> usize {
        let k = Key::of(name);
        if let Some(l) = self.last {
            if self.same(l, k, name) {
                return l;
            }
            let next = self.follow[l];
            if next != usize::MAX && self.same(next, k, name) {
                self.last = Some(next);
                return next;
            }
        }
        self.get_slow(k, name)
    }

    /// [`Interner::get`] past the last name and its follower: a scan or a table probe, and an
    /// insertion of a new name.
    #[inline(never)]
    fn get_slow(&mut self, k: Key, name: &str) -> usize {
        let i = match self.find(k, name) {
            Some(i) => i,
            None => {
                let i = self.names.len();
                self.names.push(name.to_owned());
                self.keys.push(k);
                self.follow.push(usize::MAX);
                self.index_new(i);
                i
            }
        };
        if let Some(l) = self.last {
            self.follow[l] = i;
        }
        self.last = Some(i);
        i
    }

    #[inline(always)]
    fn same(&self, i: usize, k: Key, name: &str) -> bool {
        self.keys[i] == k && (k.exact() || self.names[i] == name)
    }

    #[inline]
    fn find(&self, k: Key, name: &str) -> Option<usize> {
        if self.names.len() <= SCAN {
            (0..self.keys.len()).find(|&i| self.same(i, k, name))
        } else {
            self.index
                .find(k.hash(), |&i| self.same(i, k, name))
                .copied()
        }
    }

    /// The index of a name interned elsewhere (its key already computed), moved in if new.
    fn absorb(&mut self, name: String, k: Key) -> usize {
        if let Some(i) = self.find(k, &name) {
            return i;
        }
        let i = self.names.len();
        self.names.push(name);
        self.keys.push(k);
        self.follow.push(usize::MAX);
        self.index_new(i);
        i
    }

    /// Indexes name `i`, just pushed: from the [`SCAN`]-th name on, every name is in the table.
    fn index_new(&mut self, i: usize) {
        let keys = &self.keys;
        if i == SCAN {
            for (j, kj) in keys.iter().enumerate() {
                self.index.insert_unique(kj.hash(), j, |&m| keys[m].hash());
            }
        } else if i > SCAN {
            self.index
                .insert_unique(keys[i].hash(), i, |&m| keys[m].hash());
        }
    }

    /// The index of `name`, if interned.
    fn lookup(&self, name: &str) -> Option<usize> {
        self.find(Key::of(name), name)
    }
}

/// `str::trim`, with the common case (a name that starts and ends with a visible ASCII
/// character) decided from two bytes.
#[inline(always)]
fn trim(name: &str) -> &str {
    let b = name.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) if (0x21..0x7f).contains(&f) && (0x21..0x7f).contains(&l) => name,
        _ => name.trim(),
    }
}

/// Rows of vote columns, interned on their own.
struct Part {
    tasks: Interner,
    workers: Interner,
    labels: Interner,
    entries: Vec<(usize, usize, usize)>,
}

impl Part {
    fn with_capacity(rows: usize) -> Part {
        Part {
            tasks: Interner::default(),
            workers: Interner::default(),
            labels: Interner::default(),
            entries: Vec::with_capacity(rows),
        }
    }

    /// Interns the rows; an empty name is [`ConsensusError::EmptyField`] with its 1-based row
    /// in these rows.
    fn intern<S: AsRef<str>>(tasks: &[S], workers: &[S], labels: &[S]) -> Result<Part> {
        let mut part = Part::with_capacity(tasks.len());
        for (i, ((t, w), l)) in tasks.iter().zip(workers).zip(labels).enumerate() {
            part.push(i + 1, t.as_ref(), w.as_ref(), l.as_ref(), None)?;
        }
        Ok(part)
    }

    /// Interns one vote (1-based `row`); with `declared`, its label must be one of them
    /// (interned beforehand).
    #[inline(always)]
    fn push(
        &mut self,
        row: usize,
        t: &str,
        w: &str,
        l: &str,
        declared: Option<&[&str]>,
    ) -> Result<()> {
        let (t, w, l) = (trim(t), trim(w), trim(l));
        for (field, v) in [("task", t), ("worker", w), ("label", l)] {
            if v.is_empty() {
                return Err(ConsensusError::EmptyField { row, field });
            }
        }
        let li = match declared {
            Some(d) => self
                .labels
                .lookup(l)
                .ok_or_else(|| ConsensusError::UndeclaredLabel {
                    row,
                    label: l.to_owned(),
                    declared: d.join(", "),
                })?,
            None => self.labels.get(l),
        };
        self.entries
            .push((self.tasks.get(t), self.workers.get(w), li));
        Ok(())
    }

    fn finish(self) -> Result<Votes> {
        Votes::finish_build(self.tasks, self.workers, self.labels, self.entries)
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

    /// Interns votes given as three columns of equal length (a data frame's `task`, `worker`
    /// and `label`), as [`Votes::from_triples`] does the same rows, with the same result and
    /// errors. A large table is interned in two halves on two threads, then merged.
    ///
    /// # Errors
    /// [`ConsensusError::ColumnLengths`], and as [`Votes::from_triples`].
    pub fn from_columns<S: AsRef<str> + Sync>(
        tasks: &[S],
        workers: &[S],
        labels: &[S],
    ) -> Result<Self> {
        if tasks.len() != workers.len() || tasks.len() != labels.len() {
            return Err(ConsensusError::ColumnLengths {
                tasks: tasks.len(),
                workers: workers.len(),
                labels: labels.len(),
            });
        }
        /// Below this many votes a second thread costs more than it saves.
        const PARALLEL: usize = 1 << 15;
        let n = tasks.len();
        let parallel =
            n >= PARALLEL && std::thread::available_parallelism().is_ok_and(|c| c.get() > 1);
        if !parallel {
            return Part::intern(tasks, workers, labels)?.finish();
        }
        // Each half of the rows on its own thread, then the second half's names merged into
        // the first's (in their order of first appearance, so indices are as one pass gives).
        let mid = n / 2;
        let (first, second) = std::thread::scope(|scope| {
            let later =
                scope.spawn(|| Part::intern(&tasks[mid..], &workers[mid..], &labels[mid..]));
            let first = Part::intern(&tasks[..mid], &workers[..mid], &labels[..mid]);
            let second = later
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (first, second)
        });
        let mut first = first?;
        let second = second.map_err(|e| match e {
            ConsensusError::EmptyField { row, field } => ConsensusError::EmptyField {
                row: row + mid,
                field,
            },
            other => other,
        })?;
        let remap = |into: &mut Interner, from: Interner| -> Vec<usize> {
            from.names
                .into_iter()
                .zip(from.keys)
                .map(|(name, key)| into.absorb(name, key))
                .collect()
        };
        let t = remap(&mut first.tasks, second.tasks);
        let w = remap(&mut first.workers, second.workers);
        let l = remap(&mut first.labels, second.labels);
        first
            .entries
            .extend(second.entries.iter().map(|&(a, b, c)| (t[a], w[b], l[c])));
        first.finish()
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
        let triples = triples.into_iter();
        let mut part = Part::with_capacity(triples.size_hint().0);
        if let Some(d) = declared {
            for l in d {
                part.labels.get(l.trim());
            }
        }
        for (i, (t, w, l)) in triples.enumerate() {
            part.push(i + 1, t.as_ref(), w.as_ref(), l.as_ref(), declared)?;
        }
        part.finish()
    }

    /// Sorts the labels by name (remapping the entries), then checks for duplicate votes.
    fn finish_build(
        tasks: Interner,
        workers: Interner,
        labels: Interner,
        mut entries: Vec<(usize, usize, usize)>,
    ) -> Result<Self> {
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
        if order.iter().enumerate().any(|(r, &i)| r != i) {
            entries.iter_mut().for_each(|e| e.2 = rank[e.2]);
        }
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
        let first = match self.first_duplicate_grouped() {
            Some(found) => found,
            None => self.first_duplicate_sorted(),
        };
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

    /// When every task's votes are contiguous (the usual layout), the first duplicate vote
    /// (`Some(None)`: none), found in one pass with each worker's last task; `None` when the
    /// votes are not grouped by task.
    fn first_duplicate_grouped(&self) -> Option<Option<usize>> {
        let mut last_task = vec![usize::MAX; self.workers.len()];
        let mut ended = vec![false; self.tasks.len()];
        let mut current = usize::MAX;
        for (e, &(t, w, _)) in self.entries.iter().enumerate() {
            if t != current {
                if current != usize::MAX {
                    ended[current] = true;
                }
                if ended[t] {
                    return None;
                }
                current = t;
            }
            if last_task[w] == t {
                return Some(Some(e));
            }
            last_task[w] = t;
        }
        Some(None)
    }

    /// The first duplicate vote in any order: each task's votes sorted by worker.
    fn first_duplicate_sorted(&self) -> Option<usize> {
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
        first
    }

    /// The workers of each consensus's task, split into those who voted its label and those
    /// who voted another (each in input order): `(agreeing, dissenting)` per element of
    /// `consensus`.
    ///
    /// # Panics
    /// If a consensus names a task these votes do not have.
    pub fn split_workers(&self, consensus: &[crate::Consensus]) -> Vec<(Vec<usize>, Vec<usize>)> {
        let mut at = vec![usize::MAX; self.tasks.len()];
        for (i, c) in consensus.iter().enumerate() {
            at[c.task] = i;
        }
        let mut out: Vec<(Vec<usize>, Vec<usize>)> = consensus
            .iter()
            .map(|c| {
                (
                    Vec::with_capacity(c.agreeing),
                    Vec::with_capacity(c.dissenting),
                )
            })
            .collect();
        for &(t, w, l) in &self.entries {
            let i = at[t];
            if i == usize::MAX {
                continue;
            }
            if consensus[i].label == l {
                out[i].0.push(w);
            } else {
                out[i].1.push(w);
            }
        }
        out
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
