//! Rank-ordered merging (BPE encoding) in O(n log n): a heap of candidate pairs over a linked list.
//!
//! Semantics are those of applying the merge list *sequentially*: for rank 0, 1, 2, ... replace every
//! occurrence of that rank's pair, left to right and non-overlapping, then move on to the next rank and
//! never look back. (For a well-formed table, where each merge only uses tokens that exist before it,
//! this is the same as minbpe's "repeatedly merge the lowest-ranked pair present".) The heap pops
//! (rank, position) in that order; entries made stale by earlier merges are skipped.

use super::{pair_key, FxHashMap};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const NONE: u32 = u32::MAX;

/// Merge ranks: for each pair the sorted list of its ranks (a `seed_bpe` table can repeat a pair when
/// two merges produce the same string), and for each rank the merged id. Lookups are a hash probe plus a
/// binary search, so a table that repeats one pair a million times costs O(log) per lookup, not a walk.
#[derive(Debug, Clone, Default)]
pub(crate) struct RankTable {
    /// pair -> (start, len) of its ranks in `ranks`
    pairs: FxHashMap<u64, (u32, u32)>,
    /// ranks grouped by pair, ascending within a group
    ranks: Vec<u32>,
    result: Vec<u32>,
}

impl RankTable {
    /// `merges[r] = ((a, b), new_id)` in rank order.
    pub(crate) fn new(merges: impl IntoIterator<Item = ((u32, u32), u32)>) -> Self {
        let mut keys: Vec<u64> = Vec::new();
        let mut result: Vec<u32> = Vec::new();
        for ((a, b), m) in merges {
            keys.push(pair_key(a, b));
            result.push(m);
        }
        // Group ranks by pair: a stable sort by key keeps each group in rank order.
        let mut order: Vec<u32> = (0..keys.len() as u32).collect();
        order.sort_by_key(|&r| keys[r as usize]);
        let mut pairs: FxHashMap<u64, (u32, u32)> = FxHashMap::default();
        pairs.reserve(keys.len());
        let mut start = 0;
        while start < order.len() {
            let k = keys[order[start] as usize];
            let mut end = start + 1;
            while end < order.len() && keys[order[end] as usize] == k {
                end += 1;
            }
            pairs.insert(k, (start as u32, (end - start) as u32));
            start = end;
        }
        RankTable { pairs, ranks: order, result }
    }

    #[inline]
    fn ranks_of(&self, a: u32, b: u32) -> &[u32] {
        match self.pairs.get(&pair_key(a, b)) {
            Some(&(start, len)) => &self.ranks[start as usize..(start + len) as usize],
            None => &[],
        }
    }

    /// The first rank of (a, b) that is >= `min` and < `limit`.
    #[inline]
    fn rank_from(&self, a: u32, b: u32, min: u32, limit: u32) -> Option<u32> {
        let ranks = self.ranks_of(a, b);
        let r = *ranks.get(ranks.partition_point(|&r| r < min))?;
        (r < limit).then_some(r)
    }

    #[inline]
    fn has_rank(&self, a: u32, b: u32, rank: u32) -> bool {
        self.ranks_of(a, b).binary_search(&rank).is_ok()
    }
}

/// A token during merging: its id and the range `[lo, hi)` of input units it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub id: u32,
    pub lo: usize,
    pub hi: usize,
}

/// Applies the merges of ranks `< limit` to `pieces` in place.
pub(crate) fn merge_ranked(pieces: &mut Vec<Piece>, table: &RankTable, limit: usize) {
    let n = pieces.len();
    if n < 2 || table.result.is_empty() || limit == 0 {
        return;
    }
    let limit = limit.min(table.result.len()) as u32;
    let mut next: Vec<u32> = (1..=n as u32).collect();
    next[n - 1] = NONE;
    let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
    prev[0] = NONE;
    let mut alive = vec![true; n];
    let mut heap: BinaryHeap<Reverse<(u32, u32)>> = BinaryHeap::new();
    for i in 0..n - 1 {
        if let Some(r) = table.rank_from(pieces[i].id, pieces[i + 1].id, 0, limit) {
            heap.push(Reverse((r, i as u32)));
        }
    }
    let mut current = 0u32;
    while let Some(Reverse((r, i))) = heap.pop() {
        let iu = i as usize;
        if r < current || !alive[iu] {
            continue;
        }
        let j = next[iu];
        if j == NONE {
            continue;
        }
        let ju = j as usize;
        if !table.has_rank(pieces[iu].id, pieces[ju].id, r) {
            continue;
        }
        current = r;
        pieces[iu].id = table.result[r as usize];
        pieces[iu].hi = pieces[ju].hi;
        alive[ju] = false;
        let nj = next[ju];
        next[iu] = nj;
        if nj != NONE {
            prev[nj as usize] = i;
            if let Some(r2) = table.rank_from(pieces[iu].id, pieces[nj as usize].id, r + 1, limit) {
                heap.push(Reverse((r2, i)));
            }
        }
        let p = prev[iu];
        if p != NONE {
            if let Some(r2) = table.rank_from(pieces[p as usize].id, pieces[iu].id, r + 1, limit) {
                heap.push(Reverse((r2, p)));
            }
        }
    }
    let mut w = 0;
    for k in 0..n {
        if alive[k] {
            pieces[w] = pieces[k];
            w += 1;
        }
    }
    pieces.truncate(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: apply each rank in turn, left to right, non-overlapping.
    fn sequential(ids: &[u32], merges: &[((u32, u32), u32)]) -> Vec<u32> {
        let mut v = ids.to_vec();
        for &((a, b), m) in merges {
            let mut out = Vec::with_capacity(v.len());
            let mut i = 0;
            while i < v.len() {
                if i + 1 < v.len() && v[i] == a && v[i + 1] == b {
                    out.push(m);
                    i += 2;
                } else {
                    out.push(v[i]);
                    i += 1;
                }
            }
            v = out;
        }
        v
    }

    #[test]
    fn heap_matches_sequential() {
        let mut s = 0x9E3779B97F4A7C15u64;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..300 {
            let nb = 3u32;
            let nm = (rnd() % 12) as usize;
            let mut merges = Vec::new();
            for r in 0..nm {
                let top = nb + r as u32;
                let a = (rnd() % top as u64) as u32;
                let b = (rnd() % top as u64) as u32;
                // allow repeated pairs and repeated results, as a seed_bpe table may have
                let m = if rnd() % 5 == 0 && r > 0 { nb + (rnd() % r as u64) as u32 } else { top };
                merges.push(((a, b), m));
            }
            let len = (rnd() % 40) as usize;
            let ids: Vec<u32> = (0..len).map(|_| (rnd() % nb as u64) as u32).collect();
            let table = RankTable::new(merges.iter().copied());
            let mut pieces: Vec<Piece> = ids.iter().enumerate().map(|(k, &id)| Piece { id, lo: k, hi: k + 1 }).collect();
            merge_ranked(&mut pieces, &table, usize::MAX);
            let got: Vec<u32> = pieces.iter().map(|p| p.id).collect();
            assert_eq!(got, sequential(&ids, &merges), "ids {ids:?} merges {merges:?}");
            // spans tile the input
            let mut at = 0;
            for p in &pieces {
                assert_eq!(p.lo, at);
                at = p.hi;
            }
            assert_eq!(at, len);
        }
    }
}
