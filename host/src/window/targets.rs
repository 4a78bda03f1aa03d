//! The rows of one batch bound for windows, grouped by (window, key, source partition): the
//! aggregate looks a window's state up once per group, not once per row, and each distinct
//! key of the batch becomes an owned value once.

use rivulet_rows::{Column, Scalar, Values};
// Few keys per batch, looked up once per row: a fast non-keyed hash (the keys are the
// job's own data, hashed for one batch only).
use rustc_hash::FxHashMap as HashMap;

/// Rows of one batch that go into windows (see the [module documentation](self)).
#[derive(Debug, Default)]
pub struct Targets<'a> {
    /// The batch's distinct keys, numbered in order of first appearance.
    keys: Vec<Scalar>,
    text_keys: HashMap<&'a [u8], u32>,
    other_keys: HashMap<Scalar, u32>,
    groups: Vec<Group>,
    group_of: HashMap<(i64, u32, i32), u32>,
    /// Selected rows in batch order, each with its group.
    rows: Vec<(u32, u32)>,
}

/// Rows of one (window, key, partition) in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// Start of the window.
    pub start: i64,
    /// The key's number in [`Targets::key`].
    pub key: u32,
    pub partition: i32,
    /// The smallest source offset among the group's rows.
    pub min_offset: i64,
}

impl<'a> Targets<'a> {
    pub fn with_capacity(rows: usize) -> Self {
        Targets {
            rows: Vec::with_capacity(rows),
            ..Targets::default()
        }
    }

    /// The number of row `row`'s key in `column`, or `None` when it is null, missing, or
    /// not a valid key (binary, JSON or invalid UTF-8). No column: every row has the key
    /// null (a job without `key`).
    pub fn key_of(&mut self, column: Option<&'a Column>, row: usize) -> Option<u32> {
        let Some(column) = column else {
            return Some(self.intern(Scalar::Null));
        };
        if row >= column.len() || column.is_null(row) {
            return None;
        }
        if let Values::Text(packed) = &column.values {
            let bytes = packed.get(row)?;
            if let Some(&id) = self.text_keys.get(bytes) {
                return Some(id);
            }
            let text = std::str::from_utf8(bytes).ok()?;
            let id = self.push_key(Scalar::Text(text.to_owned()));
            self.text_keys.insert(bytes, id);
            return Some(id);
        }
        match column.scalar(row)? {
            Scalar::Null => None,
            key => Some(self.intern(key)),
        }
    }

    fn intern(&mut self, key: Scalar) -> u32 {
        if let Some(&id) = self.other_keys.get(&key) {
            return id;
        }
        let id = self.push_key(key.clone());
        self.other_keys.insert(key, id);
        id
    }

    fn push_key(&mut self, key: Scalar) -> u32 {
        let id = self.keys.len() as u32;
        self.keys.push(key);
        id
    }

    /// Row `row` goes to window `start` under key number `key`.
    pub fn push(&mut self, row: u32, start: i64, key: u32, partition: i32, offset: i64) {
        let next = self.groups.len() as u32;
        let group = *self.group_of.entry((start, key, partition)).or_insert(next);
        match self.groups.get_mut(group as usize) {
            Some(existing) => existing.min_offset = existing.min_offset.min(offset),
            None => self.groups.push(Group {
                start,
                key,
                partition,
                min_offset: offset,
            }),
        }
        self.rows.push((row, group));
    }

    /// Key number `key`.
    pub fn key(&self, key: u32) -> &Scalar {
        self.keys.get(key as usize).unwrap_or(&Scalar::Null)
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Selected rows in batch order, each with its group's index in [`Targets::groups`].
    pub fn rows(&self) -> &[(u32, u32)] {
        &self.rows
    }

    /// The rows of each group, in batch order.
    pub fn rows_by_group(&self) -> Vec<Vec<u32>> {
        let mut by_group = vec![Vec::new(); self.groups.len()];
        for &(row, group) in &self.rows {
            if let Some(rows) = by_group.get_mut(group as usize) {
                rows.push(row);
            }
        }
        by_group
    }

    /// How many rows were selected.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rivulet_rows::Packed;

    fn text_column(values: &[Option<&str>]) -> Column {
        let mut packed = Packed::new();
        let mut nulls = vec![0u8; values.len().div_ceil(8)];
        for (i, v) in values.iter().enumerate() {
            packed.push(v.unwrap_or("").as_bytes());
            if v.is_none() {
                nulls[i / 8] |= 1 << (i % 8);
            }
        }
        Column {
            name: "status".into(),
            nulls,
            values: Values::Text(packed),
        }
    }

    #[test]
    fn distinct_keys_are_numbered_once_per_batch_and_nulls_have_none() {
        let column = text_column(&[Some("NEW"), Some("PAID"), None, Some("NEW")]);
        let mut targets = Targets::with_capacity(4);
        let ids: Vec<Option<u32>> = (0..5).map(|r| targets.key_of(Some(&column), r)).collect();
        assert_eq!(ids, [Some(0), Some(1), None, Some(0), None]);
        assert_eq!(targets.key(0), &Scalar::from("NEW"));
        assert_eq!(targets.key(1), &Scalar::from("PAID"));
        let ints = Column::new("n", Values::Integer(vec![7, 8, 7]));
        let ids: Vec<Option<u32>> = (0..3).map(|r| targets.key_of(Some(&ints), r)).collect();
        assert_eq!(ids, [Some(2), Some(3), Some(2)]);
        assert_eq!(targets.key_of(None, 0), targets.key_of(None, 1));
    }

    #[test]
    fn rows_are_grouped_by_window_key_and_partition_with_their_smallest_offset() {
        let mut targets = Targets::with_capacity(5);
        targets.push(0, 0, 0, 1, 50);
        targets.push(1, 0, 0, 2, 7);
        targets.push(2, 0, 0, 1, 40);
        targets.push(3, 30, 0, 1, 41);
        targets.push(4, 0, 1, 1, 42);
        let starts: Vec<(i64, u32, i32, i64)> = targets
            .groups()
            .iter()
            .map(|g| (g.start, g.key, g.partition, g.min_offset))
            .collect();
        assert_eq!(
            starts,
            [(0, 0, 1, 40), (0, 0, 2, 7), (30, 0, 1, 41), (0, 1, 1, 42)]
        );
        assert_eq!(
            targets.rows_by_group(),
            [vec![0, 2], vec![1], vec![3], vec![4]]
        );
        assert_eq!(targets.rows(), [(0, 0), (1, 1), (2, 0), (3, 2), (4, 3)]);
        assert_eq!(targets.len(), 5);
    }
}
