//! Containing a failing call. When a batch call (parse, map, format, an aggregate's `add` or
//! `finish`) traps or hits a limit, its input is retried in halves until each failing
//! record (or window) stands alone: one poison input costs exactly one error, and every
//! other input gets its exact result. `finish` is also called in bounded chunks, so one bad
//! window never takes down a whole firing.
//!
//! The extra work is bounded: a batch of `n` with one poison input costs at most about
//! `2·log2(n)` extra calls (a half that succeeds is not retried; a half known to fail is
//! split without being called whole), and a batch stops splitting after
//! [`EXTRA_CALLS`]: what is still unresolved then fails whole with the error it got.
//! The pipeline calls these functions; a stage called directly (a swap candidate's trial,
//! the sandbox tests) still fails whole.

use super::{AggregateStage, FormatStage, MapStage, ParseStage};
use crate::udf::{Limits, UdfError};
use rivulet_rows::{AddOut, Batch, Encoded, Packed, RawBatch, RecordError, RowsOut, WindowAcc};
use std::collections::BTreeMap;

/// Most extra calls one batch (or one `finish` chunk) may spend isolating failures.
pub const EXTRA_CALLS: usize = 64;

/// A batch's outcome, and whether the call on the whole batch failed (its inputs were
/// then isolated: the failing ones have errors, the others their exact outputs).
#[derive(Debug)]
pub struct Contained<T> {
    pub out: T,
    pub isolated: bool,
}

impl<T> Contained<T> {
    fn whole(out: T) -> Self {
        Contained {
            out,
            isolated: false,
        }
    }

    fn isolated(out: T) -> Self {
        Contained {
            out,
            isolated: true,
        }
    }
}

/// Why a call on some inputs failed, and whether splitting them may help.
struct Failure {
    message: String,
    isolatable: bool,
    /// The stage's error, when the failure is one.
    source: Option<UdfError>,
}

impl From<UdfError> for Failure {
    fn from(err: UdfError) -> Self {
        Failure {
            isolatable: isolatable(&err),
            message: err.to_string(),
            source: Some(err),
        }
    }
}

impl Failure {
    fn refused(message: String) -> Self {
        Failure {
            message,
            isolatable: true,
            source: None,
        }
    }

    fn into_error(self) -> UdfError {
        self.source.unwrap_or(UdfError::Runtime(self.message))
    }
}

/// Failures that may be confined to some inputs: traps, limits, contract breaches. A
/// component that cannot even start fails every call the same, so it is not bisected.
fn isolatable(err: &UdfError) -> bool {
    matches!(
        err,
        UdfError::Trap { .. } | UdfError::Limit { .. } | UdfError::Contract { .. }
    )
}

/// The outcome for some of the inputs (indices into the original batch, in order).
enum Piece<T> {
    Done(Vec<u32>, T),
    Failed(Vec<u32>, String),
}

/// One isolation: the call to retry, the extra calls spent, and the pieces so far, in
/// input order.
struct Bisect<'c, T> {
    call: &'c mut dyn FnMut(&[u32]) -> Result<T, Failure>,
    extra: usize,
    pieces: Vec<Piece<T>>,
}

impl<T> Bisect<'_, T> {
    /// Calls `items`; true if they succeeded whole.
    fn attempt(&mut self, items: &[u32]) -> bool {
        self.extra += 1;
        match (self.call)(items) {
            Ok(out) => {
                self.pieces.push(Piece::Done(items.to_vec(), out));
                true
            }
            Err(failure) if failure.isolatable => {
                self.split(items, failure.message, true);
                false
            }
            Err(failure) => {
                self.pieces
                    .push(Piece::Failed(items.to_vec(), failure.message));
                false
            }
        }
    }

    /// Resolves `items`, known to fail with `message` (`exact`: a call on exactly these
    /// items failed; otherwise the failure was inferred from a larger call).
    fn split(&mut self, items: &[u32], message: String, exact: bool) {
        if (items.len() == 1 && exact) || self.extra >= EXTRA_CALLS {
            self.pieces.push(Piece::Failed(items.to_vec(), message));
            return;
        }
        if items.len() == 1 {
            self.attempt(items);
            return;
        }
        let (first, second) = items.split_at(items.len() / 2);
        if self.attempt(first) {
            // The whole failed and its first half did not: the failure is in the second.
            self.split(second, message, false);
        } else {
            self.attempt(second);
        }
    }
}

/// Isolates the failures among `items`, which failed together with `first`.
fn bisect<T>(
    items: &[u32],
    first: Failure,
    exact: bool,
    call: &mut dyn FnMut(&[u32]) -> Result<T, Failure>,
) -> Vec<Piece<T>> {
    let mut run = Bisect {
        call,
        extra: 0,
        pieces: Vec::new(),
    };
    if first.isolatable {
        tracing::warn!(inputs = items.len(), "{}", first.message);
        run.split(items, first.message, exact);
    } else {
        run.pieces
            .push(Piece::Failed(items.to_vec(), first.message));
    }
    if run.extra > 0 {
        let failed: usize = run
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Failed(items, _) => items.len(),
                Piece::Done(..) => 0,
            })
            .sum();
        tracing::warn!(
            inputs = items.len(),
            failed,
            extra_calls = run.extra,
            "a call failed; isolated the inputs that cause it"
        );
    }
    run.pieces
}

fn all(len: u32) -> Vec<u32> {
    (0..len).collect()
}

/// Rows from the pieces of an isolated batch: outputs in input order, and an error for
/// every failed input.
fn merge_rows(pieces: Vec<Piece<RowsOut>>) -> RowsOut {
    let mut rows = Batch::default();
    let mut origins = Vec::new();
    let mut errors = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Done(items, out) => {
                let global = |i: u32| items.get(i as usize).copied().unwrap_or(u32::MAX);
                match rows.append(out.rows) {
                    Ok(()) => {
                        origins.extend(out.origins.iter().map(|&o| global(o)));
                        errors.extend(out.errors.into_iter().map(|e| RecordError {
                            index: global(e.index),
                            message: e.message,
                        }));
                    }
                    Err(err) => {
                        let message = format!(
                            "the rows of this record do not fit those of its batch-mates: {err}"
                        );
                        errors.extend(items.iter().map(|&index| RecordError {
                            index,
                            message: message.clone(),
                        }));
                    }
                }
            }
            Piece::Failed(items, message) => {
                errors.extend(items.into_iter().map(|index| RecordError {
                    index,
                    message: message.clone(),
                }));
            }
        }
    }
    errors.sort_by_key(|e| e.index);
    RowsOut {
        rows,
        origins,
        errors,
    }
}

/// `stage.parse(input)`, with a failure isolated to the records that cause it.
pub fn parse(stage: &mut dyn ParseStage, input: &RawBatch) -> Result<Contained<RowsOut>, UdfError> {
    let first = match stage.parse(input) {
        Err(err) if isolatable(&err) && input.len > 1 => Failure::from(err),
        other => return other.map(Contained::whole),
    };
    let pieces = bisect(&all(input.len), first, true, &mut |items| {
        stage.parse(&input.select(items)).map_err(Failure::from)
    });
    Ok(Contained::isolated(merge_rows(pieces)))
}

/// `stage.map(input)`, with a failure isolated to the rows that cause it.
pub fn map(stage: &mut dyn MapStage, input: &Batch) -> Result<Contained<RowsOut>, UdfError> {
    let first = match stage.map(input) {
        Err(err) if isolatable(&err) && input.len > 1 => Failure::from(err),
        other => return other.map(Contained::whole),
    };
    let pieces = bisect(&all(input.len), first, true, &mut |items| {
        stage.map(&input.select(items)).map_err(Failure::from)
    });
    Ok(Contained::isolated(merge_rows(pieces)))
}

/// `stage.format(input)`, with a failure isolated to the rows that cause it (their
/// payloads are empty and each has an error).
pub fn format(stage: &mut dyn FormatStage, input: &Batch) -> Result<Contained<Encoded>, UdfError> {
    let first = match stage.format(input) {
        Err(err) if isolatable(&err) && input.len > 1 => Failure::from(err),
        other => return other.map(Contained::whole),
    };
    let pieces = bisect(&all(input.len), first, true, &mut |items| {
        stage.format(&input.select(items)).map_err(Failure::from)
    });
    let keyed = pieces
        .iter()
        .any(|p| matches!(p, Piece::Done(_, out) if out.keys.is_some()));
    let mut payloads = Packed::new();
    let mut keys = keyed.then(Packed::new);
    let mut errors = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Done(items, out) => {
                for (i, payload) in out.payloads.iter().enumerate() {
                    payloads.push(payload);
                    if let Some(keys) = &mut keys {
                        keys.push(out.keys.as_ref().and_then(|k| k.get(i)).unwrap_or(&[]));
                    }
                }
                errors.extend(out.errors.into_iter().map(|e| RecordError {
                    index: items.get(e.index as usize).copied().unwrap_or(u32::MAX),
                    message: e.message,
                }));
            }
            Piece::Failed(items, message) => {
                for index in items {
                    payloads.push(&[]);
                    if let Some(keys) = &mut keys {
                        keys.push(&[]);
                    }
                    errors.push(RecordError {
                        index,
                        message: message.clone(),
                    });
                }
            }
        }
    }
    errors.sort_by_key(|e| e.index);
    Ok(Contained::isolated(Encoded {
        payloads,
        keys,
        errors,
    }))
}

/// Decides whether accumulator `group` may grow from `old` to `new` bytes; the error is
/// the message for the rows refused.
pub type Admit<'a> = dyn FnMut(u32, usize, usize) -> Result<(), String> + 'a;

/// `stage.add(accs, rows, groups)`, with a failure isolated to the rows that cause it, and
/// every new accumulator checked by `admit` before it is kept.
///
/// A refused accumulator keeps its previous bytes, and the rows of that group are then
/// added again one part at a time, so only the rows that take it past the cap are refused.
/// Rows are added in order within each group. The returned accumulators are the ones to
/// keep; `errors` names every row that does not count.
pub fn add(
    stage: &mut dyn AggregateStage,
    accs: Vec<Vec<u8>>,
    rows: &Batch,
    groups: &[u32],
    admit: &mut Admit<'_>,
) -> Result<AddOut, UdfError> {
    let mut state = AddState {
        accs,
        errors: Vec::new(),
        refused: BTreeMap::new(),
    };
    let items = all(rows.len);
    // The whole batch first; a failure that is not the component's fault fails it whole.
    let first = match state.step(stage, rows, groups, &items, admit) {
        Ok(()) => None,
        Err(failure) if failure.isolatable && rows.len > 1 => Some(failure),
        Err(failure) => return Err(failure.into_error()),
    };
    if let Some(first) = first {
        let pieces = bisect(&items, first, true, &mut |items| {
            state.step(stage, rows, groups, items, admit)
        });
        state.fail(pieces);
    }
    // Groups refused in the pass above: their rows again, on their own, in order.
    for (group, (members, message)) in std::mem::take(&mut state.refused) {
        let pieces = bisect(&members, Failure::refused(message), false, &mut |items| {
            state.step_group(stage, rows, group, items, admit)
        });
        state.fail(pieces);
    }
    state.errors.sort_by_key(|e| e.index);
    Ok(AddOut {
        accs: state.accs,
        errors: state.errors,
    })
}

struct AddState {
    accs: Vec<Vec<u8>>,
    errors: Vec<RecordError>,
    /// Groups whose new accumulator was refused: their rows not yet added, and why.
    refused: BTreeMap<u32, (Vec<u32>, String)>,
}

impl AddState {
    /// Adds rows `items`; keeps each admitted accumulator. Nothing is kept on a failure.
    fn step(
        &mut self,
        stage: &mut dyn AggregateStage,
        rows: &Batch,
        groups: &[u32],
        items: &[u32],
        admit: &mut Admit<'_>,
    ) -> Result<(), Failure> {
        // The groups these rows touch, numbered locally in order of appearance.
        let mut local_of = vec![u32::MAX; self.accs.len()];
        let mut touched: Vec<u32> = Vec::new();
        let mut local_groups = Vec::with_capacity(items.len());
        for &i in items {
            let group = groups.get(i as usize).copied().unwrap_or(0);
            let Some(local) = local_of.get_mut(group as usize) else {
                return Err(Failure::from(UdfError::Runtime(format!(
                    "row {i} is in group {group} of {}",
                    self.accs.len()
                ))));
            };
            if *local == u32::MAX {
                *local = touched.len() as u32;
                touched.push(group);
            }
            local_groups.push(*local);
        }
        let accs = touched
            .iter()
            .map(|&g| self.accs.get(g as usize).cloned().unwrap_or_default())
            .collect();
        // The whole batch (the usual case) goes as it is; a part is copied out.
        let part;
        let batch = if items.len() == rows.len as usize {
            rows
        } else {
            part = rows.select(items);
            &part
        };
        let out = stage.add(accs, batch, &local_groups)?;
        for (&group, new) in touched.iter().zip(out.accs) {
            let members = || {
                items
                    .iter()
                    .copied()
                    .filter(|&i| groups.get(i as usize) == Some(&group))
            };
            if let Some((waiting, _)) = self.refused.get_mut(&group) {
                // Keep the group's rows in order: once refused, its later rows wait too.
                waiting.extend(members());
                continue;
            }
            let Some(old) = self.accs.get_mut(group as usize) else {
                continue;
            };
            match admit(group, old.len(), new.len()) {
                Ok(()) => *old = new,
                Err(message) => {
                    self.refused.insert(group, (members().collect(), message));
                }
            }
        }
        for error in out.errors {
            let Some(&index) = items.get(error.index as usize) else {
                continue;
            };
            let group = groups.get(index as usize).copied().unwrap_or(0);
            if !self.refused.contains_key(&group) {
                self.errors.push(RecordError {
                    index,
                    message: error.message,
                });
            }
        }
        Ok(())
    }

    /// Adds rows `items`, all of `group`; a refused accumulator is a failure of these rows.
    fn step_group(
        &mut self,
        stage: &mut dyn AggregateStage,
        rows: &Batch,
        group: u32,
        items: &[u32],
        admit: &mut Admit<'_>,
    ) -> Result<(), Failure> {
        let Some(acc) = self.accs.get_mut(group as usize) else {
            return Ok(());
        };
        let out = stage.add(
            vec![acc.clone()],
            &rows.select(items),
            &vec![0; items.len()],
        )?;
        let new = out.accs.into_iter().next().unwrap_or_default();
        admit(group, acc.len(), new.len()).map_err(Failure::refused)?;
        *acc = new;
        self.errors
            .extend(out.errors.into_iter().filter_map(|error| {
                let index = *items.get(error.index as usize)?;
                Some(RecordError {
                    index,
                    message: error.message,
                })
            }));
        Ok(())
    }

    fn fail(&mut self, pieces: Vec<Piece<()>>) {
        for piece in pieces {
            if let Piece::Failed(items, message) = piece {
                self.errors
                    .extend(items.into_iter().map(|index| RecordError {
                        index,
                        message: message.clone(),
                    }));
            }
        }
    }
}

/// The most one `finish` call is handed: windows, and accumulator bytes (a larger
/// accumulator goes alone). From the stage's [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishChunk {
    pub windows: usize,
    pub bytes: usize,
}

impl From<&Limits> for FinishChunk {
    fn from(limits: &Limits) -> Self {
        FinishChunk {
            windows: limits.finish_windows.max(1),
            bytes: limits.finish_bytes,
        }
    }
}

/// `stage.finish(windows)` in chunks bounded by `chunk`, with a failure isolated to the
/// windows that cause it: each failed window gets an error, every other one its result.
pub fn finish(
    stage: &mut dyn AggregateStage,
    windows: Vec<WindowAcc>,
    chunk: FinishChunk,
) -> Result<RowsOut, UdfError> {
    let mut pieces = Vec::new();
    for chunk in chunks(&windows, chunk) {
        let first = match stage.finish(chunk.iter().map(|&i| windows[i as usize].clone()).collect())
        {
            Ok(out) => {
                pieces.push(Piece::Done(chunk, out));
                continue;
            }
            Err(err) => Failure::from(err),
        };
        let isolatable = first.isolatable && chunk.len() > 1;
        if !isolatable {
            pieces.push(Piece::Failed(chunk, first.message));
            continue;
        }
        pieces.extend(bisect(&chunk, first, true, &mut |items| {
            stage
                .finish(items.iter().map(|&i| windows[i as usize].clone()).collect())
                .map_err(Failure::from)
        }));
    }
    Ok(merge_rows(pieces))
}

/// Window indices in consecutive chunks within both bounds (a window larger than the byte
/// bound goes alone).
fn chunks(windows: &[WindowAcc], bound: FinishChunk) -> Vec<Vec<u32>> {
    let mut chunks: Vec<Vec<u32>> = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    let mut bytes = 0usize;
    for (i, window) in (0u32..).zip(windows) {
        let size = window.acc.len();
        if !current.is_empty() && (current.len() >= bound.windows || bytes + size > bound.bytes) {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use rivulet_rows::Scalar;

    fn windows(sizes: &[usize]) -> Vec<WindowAcc> {
        sizes
            .iter()
            .map(|&size| WindowAcc {
                key: Scalar::Null,
                window_start: 0,
                window_end: 1,
                acc: vec![0; size],
            })
            .collect()
    }

    #[test]
    fn finish_chunks_hold_at_most_the_configured_windows_and_bytes() {
        let bound = FinishChunk {
            windows: 3,
            bytes: 100,
        };
        let chunks = chunks(&windows(&[10, 10, 10, 10, 60, 50, 200, 1]), bound);
        // 4 windows of 10 make a chunk of 3 and one more; 10 + 60 fits 100, 50 would not;
        // the 200-byte window goes alone.
        assert_eq!(
            chunks,
            [vec![0, 1, 2], vec![3, 4], vec![5], vec![6], vec![7]]
        );
        let limits = Limits {
            finish_windows: 0,
            finish_bytes: 7,
            ..Limits::default()
        };
        assert_eq!(
            FinishChunk::from(&limits),
            FinishChunk {
                windows: 1,
                bytes: 7
            },
            "at least one window per call"
        );
    }
}
