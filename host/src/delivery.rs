//! At-least-once bookkeeping: which source offsets may be committed.
//!
//! Everything downstream of a record that is not yet safe — a window it fed that has not
//! closed, a sink or dead-letter record not yet acknowledged — *holds* the record's offset.
//! A partition may be committed up to the smallest held offset (or, if nothing is held,
//! up to the next offset to read).

use std::collections::BTreeMap;

/// Smallest held offset per partition.
pub type Holds = BTreeMap<i32, i64>;

/// A hold on one record.
pub fn hold(partition: i32, offset: i64) -> Holds {
    BTreeMap::from([(partition, offset)])
}

/// `into[p] = min(into[p], from[p])` for every partition of `from`.
pub fn merge_min(into: &mut Holds, from: &Holds) {
    for (&p, &offset) in from {
        into.entry(p)
            .and_modify(|o| *o = (*o).min(offset))
            .or_insert(offset);
    }
}

/// Offsets safe to commit: each partition's next-to-read position, lowered to any hold.
pub fn committable(positions: &Holds, holds: &[Holds]) -> Holds {
    positions
        .iter()
        .map(|(&p, &position)| {
            let held = holds.iter().filter_map(|h| h.get(&p)).copied().min();
            (p, held.map_or(position, |h| h.min(position)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_held_commits_the_read_position() {
        assert_eq!(committable(&hold(0, 10), &[]), hold(0, 10));
    }

    #[test]
    fn the_smallest_hold_wins_per_partition() {
        let positions = BTreeMap::from([(0, 10), (1, 7)]);
        let mut window = hold(0, 4);
        merge_min(&mut window, &hold(0, 6));
        merge_min(&mut window, &hold(1, 9));
        let sink = hold(0, 5);
        assert_eq!(
            committable(&positions, &[window, sink]),
            BTreeMap::from([(0, 4), (1, 7)])
        );
    }
}
