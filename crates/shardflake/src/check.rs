//! Checking a set of ids: exact duplicates and order violations, the one checker every test
//! and `shardflake verify` use.
//!
//! [`check_ids`] sorts a copy of the ids with an LSD radix sort ([`radix_sort`], one byte
//! per pass, skipping bytes that are equal in every id) and counts every id equal to the one
//! before it ([`count_duplicates`], which also merges two sorted runs, so that a caller can
//! sort halves on two threads). Nothing is sampled.
//!
//! ```
//! let report = shardflake::check::check_ids(&[3u64, 1, 3, 2]);
//! assert_eq!(report.count, 4);
//! assert_eq!(report.duplicates, 1);
//! assert_eq!(report.order_violations, 2); // 1 after 3, 2 after 3
//! assert_eq!(report.examples, [(3, 2)]);
//! ```

/// Below this many ids a plain comparison sort beats the radix sort's fixed costs.
pub const RADIX_MIN_LEN: usize = 1 << 16;

/// The most sorted runs [`count_duplicates`] merges (the target machine has two cores).
pub const RUNS_MAX: usize = 2;

/// How many duplicated ids a report lists by value.
pub const DUPLICATES_SHOWN_MAX: usize = 10;

/// What a check of a list of ids found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdReport<K> {
    /// Ids checked.
    pub count: u64,
    /// Ids equal to an id before them in sorted order (`count - duplicates` are distinct).
    pub duplicates: u64,
    /// Ids not greater than the id before them in the list's order.
    pub order_violations: u64,
    /// Up to [`DUPLICATES_SHOWN_MAX`] duplicated ids, each with how often it occurs.
    pub examples: Vec<(K, u64)>,
}

impl<K: std::fmt::Debug> IdReport<K> {
    /// Panics, listing examples, unless every id is distinct.
    #[track_caller]
    pub fn assert_unique(&self) {
        assert_eq!(
            self.duplicates, 0,
            "{} duplicates among {} ids, e.g. (id, times): {:?}",
            self.duplicates, self.count, self.examples
        );
    }
}

/// Checks `ids`: how many there are, how many repeat an earlier one, how many are out of
/// order. Sorts a copy; `ids` is left as it is.
pub fn check_ids<K: RadixKey>(ids: &[K]) -> IdReport<K> {
    let order_violations = ids.windows(2).filter(|w| w[1] <= w[0]).count() as u64;
    let mut sorted = ids.to_vec();
    radix_sort(&mut sorted);
    let (duplicates, examples) = count_duplicates(&[&sorted]);
    IdReport {
        count: ids.len() as u64,
        duplicates,
        order_violations,
        examples,
    }
}

/// An integer the radix sort can order one byte at a time.
pub trait RadixKey: Copy + Ord + Default + Send + Sync {
    /// Size in bytes.
    const BYTES: usize;
    /// Byte `i`, counting from the least significant.
    fn byte(self, i: usize) -> u8;
}

impl RadixKey for u64 {
    const BYTES: usize = 8;
    #[inline(always)]
    fn byte(self, i: usize) -> u8 {
        (self >> (8 * i)) as u8
    }
}

impl RadixKey for u128 {
    const BYTES: usize = 16;
    #[inline(always)]
    fn byte(self, i: usize) -> u8 {
        (self >> (8 * i)) as u8
    }
}

/// Sorts `v` with a least-significant-digit radix sort, one byte per pass.
pub fn radix_sort<K: RadixKey>(v: &mut [K]) {
    let n = v.len();
    if n < RADIX_MIN_LEN {
        v.sort_unstable();
        return;
    }
    // One pass builds the histograms of every byte position.
    let mut counts = vec![[0usize; 256]; K::BYTES];
    for &k in v.iter() {
        for (d, c) in counts.iter_mut().enumerate() {
            c[k.byte(d) as usize] += 1;
        }
    }
    let mut scratch = vec![K::default(); n];
    let mut in_scratch = false;
    for (d, c) in counts.iter().enumerate() {
        // A byte that is the same in every key does not change the order.
        if c.contains(&n) {
            continue;
        }
        let mut offsets = [0usize; 256];
        let mut sum = 0;
        for (o, &x) in offsets.iter_mut().zip(c.iter()) {
            *o = sum;
            sum += x;
        }
        let (src, dst) = if in_scratch {
            (&scratch[..], &mut v[..])
        } else {
            (&v[..], &mut scratch[..])
        };
        for &k in src {
            let b = k.byte(d) as usize;
            dst[offsets[b]] = k;
            offsets[b] += 1;
        }
        in_scratch = !in_scratch;
    }
    if in_scratch {
        v.copy_from_slice(&scratch);
    }
}

/// Counts the ids equal to the id before them in the merged order of at most two sorted runs,
/// and lists up to [`DUPLICATES_SHOWN_MAX`] duplicated ids with their number of occurrences.
pub fn count_duplicates<K: RadixKey>(runs: &[&[K]]) -> (u64, Vec<(K, u64)>) {
    let (a, b): (&[K], &[K]) = match runs {
        [] => (&[], &[]),
        [a] => (a, &[]),
        [a, b] => (a, b),
        _ => panic!("count_duplicates merges at most {RUNS_MAX} runs"),
    };
    let mut duplicates = 0u64;
    let mut shown: Vec<K> = Vec::new();
    let note = |k: K, shown: &mut Vec<K>| {
        if shown.len() < DUPLICATES_SHOWN_MAX && shown.last() != Some(&k) {
            shown.push(k);
        }
    };
    let (mut i, mut j) = (0, 0);
    let mut prev: Option<K> = None;
    // The merge step is written without branches on the data (the compiler emits
    // conditional moves), since with shuffled input the branches would be unpredictable.
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        let take_a = x <= y;
        let v = if take_a { x } else { y };
        if prev == Some(v) {
            duplicates += 1;
            note(v, &mut shown);
        }
        prev = Some(v);
        i += take_a as usize;
        j += !take_a as usize;
    }
    for &v in a[i..].iter().chain(&b[j..]) {
        if prev == Some(v) {
            duplicates += 1;
            note(v, &mut shown);
        }
        prev = Some(v);
    }
    // Occurrences of the listed ids, by binary search in each run.
    let examples = shown
        .into_iter()
        .map(|k| {
            let times: usize = [a, b]
                .iter()
                .map(|run| run.partition_point(|&x| x <= k) - run.partition_point(|&x| x < k))
                .sum();
            (k, times as u64)
        })
        .collect();
    (duplicates, examples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed
    }

    #[test]
    fn radix_sort_matches_sort_unstable() {
        let mut seed = 7;
        for len in [0, 1, 2, 1000, RADIX_MIN_LEN, RADIX_MIN_LEN * 3 + 17] {
            let v: Vec<u64> = (0..len)
                .map(|_| lcg(&mut seed) >> (lcg(&mut seed) % 64))
                .collect();
            let mut a = v.clone();
            let mut b = v;
            radix_sort(&mut a);
            b.sort_unstable();
            assert_eq!(a, b, "len {len}");
        }
        let v: Vec<u128> = (0..RADIX_MIN_LEN * 2)
            .map(|_| ((lcg(&mut seed) as u128) << 64) | lcg(&mut seed) as u128)
            .collect();
        let mut a = v.clone();
        let mut b = v;
        radix_sort(&mut a);
        b.sort_unstable();
        assert_eq!(a, b);
    }

    #[test]
    fn check_ids_counts_duplicates_and_order() {
        let r = check_ids(&[5u64, 1, 5, 2, 5, 3, 1]);
        assert_eq!((r.count, r.duplicates, r.order_violations), (7, 3, 4));
        assert_eq!(r.examples, [(1, 2), (5, 3)]);
        let ok = check_ids(&[1u128, 2, 3]);
        assert_eq!((ok.duplicates, ok.order_violations), (0, 0));
        ok.assert_unique();
        assert!(std::panic::catch_unwind(|| r.assert_unique()).is_err());
    }
}
