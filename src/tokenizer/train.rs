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

/// Learns up to `num_merges` merges over `seqs` (each with a weight: how many times it occurs).
/// Merges never cross sequence boundaries. Merge `k` creates id `first_new_id + k`.
/// Stops early when no adjacent pair is left.
pub(crate) fn train_merges(seqs: &[(Vec<u32>, u32)], first_new_id: u32, num_merges: usize) -> Vec<(u32, u32)> {
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

    let mut counts: FxHashMap<u64, i64> = FxHashMap::default();
    let mut occ: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
    for i in 0..tok.len() {
        let j = next[i];
        if j != NONE {
            let k = pair_key(tok[i], tok[j as usize]);
            *counts.entry(k).or_insert(0) += weight[i] as i64;
            occ.entry(k).or_default().push(i as u32);
        }
    }
    let mut heap: BinaryHeap<(i64, Reverse<u64>)> = counts.iter().map(|(&k, &c)| (c, Reverse(k))).collect();

    fn add(counts: &mut FxHashMap<u64, i64>, k: u64, d: i64) {
        let e = counts.entry(k).or_insert(0);
        *e += d;
        if *e == 0 {
            counts.remove(&k);
        }
    }

    let mut merges: Vec<(u32, u32)> = Vec::with_capacity(num_merges);
    let mut touched: Vec<u64> = Vec::new();
    while merges.len() < num_merges {
        let Some((c, Reverse(key))) = heap.pop() else { break };
        let cur = counts.get(&key).copied().unwrap_or(0);
        if cur != c {
            if cur > 0 {
                heap.push((cur, Reverse(key)));
            }
            continue;
        }
        if c <= 0 {
            continue;
        }
        let (a, b) = unpair(key);
        let m = first_new_id + merges.len() as u32;
        merges.push((a, b));
        let mut positions = occ.remove(&key).unwrap_or_default();
        positions.sort_unstable();
        positions.dedup();
        touched.clear();
        for &pos in &positions {
            let p = pos as usize;
            if tok[p] != a {
                continue;
            }
            let j = next[p];
            if j == NONE || tok[j as usize] != b {
                continue;
            }
            let ju = j as usize;
            let w = weight[p] as i64;
            let pl = prev[p];
            let nr = next[ju];
            if pl != NONE {
                let x = tok[pl as usize];
                add(&mut counts, pair_key(x, a), -w);
                let nk = pair_key(x, m);
                add(&mut counts, nk, w);
                occ.entry(nk).or_default().push(pl);
                touched.push(nk);
            }
            if nr != NONE {
                let y = tok[nr as usize];
                add(&mut counts, pair_key(b, y), -w);
                let nk = pair_key(m, y);
                add(&mut counts, nk, w);
                occ.entry(nk).or_default().push(pos);
                touched.push(nk);
            }
            add(&mut counts, key, -w);
            tok[p] = m;
            tok[ju] = DEAD;
            next[p] = nr;
            if nr != NONE {
                prev[nr as usize] = pos;
            }
        }
        counts.remove(&key);
        touched.sort_unstable();
        touched.dedup();
        for &k in &touched {
            if let Some(&c) = counts.get(&k) {
                if c > 0 {
                    heap.push((c, Reverse(k)));
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
