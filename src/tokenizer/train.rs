//! Incremental BPE training over id sequences (used by `char_merges` and `byte_bpe`).
//!
//! Pair counts are kept up to date as merges are applied (no recount per merge): every position sits
//! in a doubly linked list, each pair keeps the list of positions where it (possibly) occurs, and a
//! max-heap with lazy invalidation gives the most frequent pair.
//!
//! Counting: adjacent pairs are counted with overlap (minbpe's `get_stats`: "aaa" has (a,a) twice),
//! and merging replaces occurrences left to right, non-overlapping ("aaa" -> "Xa").
//! Tie-break: among pairs with the highest count, the smallest pair (a, b) (compare a, then b).

use super::{pair_key, unpair, FxHashMap};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const NONE: u32 = u32::MAX;
const DEAD: u32 = u32::MAX;

/// How ties between pairs of equal count are broken.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TieBreak {
    /// The smallest pair (a, b) (minbpe; `byte_bpe`, `char_merges`).
    SmallestPair,
    /// The pair whose first occurrence comes first, scanning the sequences in order, each left to right
    /// (the seed's `Counter.most_common(1)`; `seed_bpe`).
    FirstOccurrence,
}

/// Learns up to `num_merges` merges over `seqs` (each with a weight: how many times it occurs).
/// Merges never cross sequence boundaries. Merge `k` creates id `first_new_id + k`.
/// Stops early when no adjacent pair is left.
pub(crate) fn train_merges(seqs: &[(Vec<u32>, u32)], first_new_id: u32, num_merges: usize) -> Vec<(u32, u32)> {
    let mut next_id = first_new_id;
    train_merges_with(seqs, num_merges, TieBreak::SmallestPair, |_, _| {
        let m = next_id;
        next_id += 1;
        Some(m)
    })
}

/// The general trainer: `merged_id(a, b)` names the token that merging (a, b) makes; it may be an id
/// that already exists (`seed_bpe` interns the merged string), and `None` stops training (a cap was
/// reached). Every merge costs time in proportion to the occurrences it changes (times log), so a
/// whole training run is O(N log N) in the total length N, whatever the number of merges.
pub(crate) fn train_merges_with(
    seqs: &[(Vec<u32>, u32)],
    num_merges: usize,
    tie: TieBreak,
    mut merged_id: impl FnMut(u32, u32) -> Option<u32>,
) -> Vec<(u32, u32)> {
    let total: usize = seqs.iter().map(|(s, _)| s.len()).sum();
    let mut tok: Vec<u32> = Vec::with_capacity(total);
    let mut next: Vec<u32> = Vec::with_capacity(total);
    let mut prev: Vec<u32> = Vec::with_capacity(total);
    let mut weight: Vec<u32> = Vec::with_capacity(total);
    for (s, w) in seqs {
        let base = tok.len() as u32;
        let n = s.len() as u32;
        for (k, &id) in s.iter().enumerate() {
            let k = k as u32;
            tok.push(id);
            prev.push(if k == 0 { NONE } else { base + k - 1 });
            next.push(if k + 1 == n { NONE } else { base + k + 1 });
            weight.push(*w);
        }
    }

    // Per pair: its count, and a min-heap of the positions where it may occur (stale entries are
    // dropped when seen: a position is live when the pair starting there is still this pair).
    let mut counts: FxHashMap<u64, i64> = FxHashMap::default();
    let mut occ: FxHashMap<u64, BinaryHeap<Reverse<u32>>> = FxHashMap::default();
    for i in 0..tok.len() {
        let j = next[i];
        if j != NONE {
            let k = pair_key(tok[i], tok[j as usize]);
            *counts.entry(k).or_insert(0) += weight[i] as i64;
            occ.entry(k).or_default().push(Reverse(i as u32));
        }
    }
    let is_at = |tok: &[u32], next: &[u32], pos: u32, key: u64| {
        let j = next[pos as usize];
        j != NONE && pair_key(tok[pos as usize], tok[j as usize]) == key
    };
    // The tie-break key of a pair: 0 for SmallestPair, else its first live position.
    fn first_pos(occ: &mut FxHashMap<u64, BinaryHeap<Reverse<u32>>>, tok: &[u32], next: &[u32], key: u64) -> u64 {
        let Some(h) = occ.get_mut(&key) else { return u64::MAX };
        while let Some(&Reverse(p)) = h.peek() {
            let j = next[p as usize];
            if j != NONE && pair_key(tok[p as usize], tok[j as usize]) == key {
                return p as u64;
            }
            h.pop();
        }
        u64::MAX
    }
    let order = |occ: &mut FxHashMap<u64, BinaryHeap<Reverse<u32>>>, tok: &[u32], next: &[u32], key: u64| match tie {
        TieBreak::SmallestPair => 0,
        TieBreak::FirstOccurrence => first_pos(occ, tok, next, key),
    };
    // Max-heap of (count, Reverse(tie-break), Reverse(pair)) with lazy invalidation.
    let mut heap: BinaryHeap<(i64, Reverse<u64>, Reverse<u64>)> = BinaryHeap::with_capacity(counts.len());
    let keys: Vec<(u64, i64)> = counts.iter().map(|(&k, &c)| (k, c)).collect();
    for (k, c) in keys {
        let o = order(&mut occ, &tok, &next, k);
        heap.push((c, Reverse(o), Reverse(k)));
    }

    fn add(counts: &mut FxHashMap<u64, i64>, k: u64, d: i64) {
        let e = counts.entry(k).or_insert(0);
        *e += d;
        if *e == 0 {
            counts.remove(&k);
        }
    }

    let mut merges: Vec<(u32, u32)> = Vec::with_capacity(num_merges.min(total));
    let mut touched: Vec<u64> = Vec::new();
    while merges.len() < num_merges {
        let Some((c, Reverse(o), Reverse(key))) = heap.pop() else { break };
        let cur = counts.get(&key).copied().unwrap_or(0);
        if cur <= 0 {
            continue;
        }
        let cur_o = order(&mut occ, &tok, &next, key);
        if cur != c || cur_o != o {
            heap.push((cur, Reverse(cur_o), Reverse(key)));
            continue;
        }
        let (a, b) = unpair(key);
        let Some(m) = merged_id(a, b) else { break };
        merges.push((a, b));
        let positions = occ.remove(&key).unwrap_or_default().into_sorted_vec();
        touched.clear();
        // into_sorted_vec of Reverse is descending Reverse order = ascending positions reversed.
        for &Reverse(pos) in positions.iter().rev() {
            let p = pos as usize;
            if !is_at(&tok, &next, pos, key) {
                continue;
            }
            let ju = next[p] as usize;
            let w = weight[p] as i64;
            let pl = prev[p];
            let nr = next[ju];
            if pl != NONE {
                let x = tok[pl as usize];
                add(&mut counts, pair_key(x, a), -w);
                let nk = pair_key(x, m);
                add(&mut counts, nk, w);
                occ.entry(nk).or_default().push(Reverse(pl));
                touched.push(nk);
            }
            if nr != NONE {
                let y = tok[nr as usize];
                add(&mut counts, pair_key(b, y), -w);
                let nk = pair_key(m, y);
                add(&mut counts, nk, w);
                occ.entry(nk).or_default().push(Reverse(pos));
                touched.push(nk);
            }
            add(&mut counts, key, -w);
            tok[p] = m;
            tok[ju] = DEAD;
            next[p] = nr;
            next[ju] = NONE;
            if nr != NONE {
                prev[nr as usize] = pos;
            }
        }
        // (a, b) may come back later (a merged id can equal an existing one): keep its heap of any
        // occurrences that the loop above created again.
        touched.sort_unstable();
        touched.dedup();
        for &k in &touched {
            if let Some(&c) = counts.get(&k) {
                if c > 0 {
                    let o = order(&mut occ, &tok, &next, k);
                    heap.push((c, Reverse(o), Reverse(k)));
                }
            }
        }
    }
    merges
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference trainer: full recount every merge.
    fn slow(seqs: &[(Vec<u32>, u32)], first: u32, num: usize) -> Vec<(u32, u32)> {
        let mut seqs: Vec<(Vec<u32>, u32)> = seqs.to_vec();
        let mut merges = Vec::new();
        for k in 0..num {
            let mut counts: std::collections::BTreeMap<(u32, u32), i64> = Default::default();
            for (s, w) in &seqs {
                for p in s.windows(2) {
                    *counts.entry((p[0], p[1])).or_default() += *w as i64;
                }
            }
            let Some(best) = counts.iter().map(|(&p, &c)| (c, Reverse(p))).max() else { break };
            let (a, b) = best.1 .0;
            let m = first + k as u32;
            merges.push((a, b));
            for (s, _) in seqs.iter_mut() {
                let mut out = Vec::new();
                let mut i = 0;
                while i < s.len() {
                    if i + 1 < s.len() && s[i] == a && s[i + 1] == b {
                        out.push(m);
                        i += 2;
                    } else {
                        out.push(s[i]);
                        i += 1;
                    }
                }
                *s = out;
            }
        }
        merges
    }

    #[test]
    fn incremental_matches_recount() {
        let mut st = 0x2545F4914F6CDD1Du64;
        let mut rnd = move || {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            st
        };
        for _ in 0..200 {
            let nseq = 1 + (rnd() % 4) as usize;
            let alpha = 2 + (rnd() % 4) as u32;
            let seqs: Vec<(Vec<u32>, u32)> = (0..nseq)
                .map(|_| {
                    let len = (rnd() % 30) as usize;
                    ((0..len).map(|_| (rnd() % alpha as u64) as u32).collect(), 1 + (rnd() % 3) as u32)
                })
                .collect();
            let num = (rnd() % 15) as usize;
            assert_eq!(train_merges(&seqs, alpha, num), slow(&seqs, alpha, num), "{seqs:?}");
        }
    }
}
