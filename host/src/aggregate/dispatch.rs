//! The aggregate of a window operator, built in or a Wasm component, behind one type: it
//! adds rows to accumulators, merges the partials of several tasks, and finishes fired
//! windows into result rows. Each window stays with the Wasm module generation it opened
//! with (see [`super::Generations`]).

use super::{Acc, AccBudget, Aggregator};
use crate::cluster::wire::WireAcc;
use crate::error::PipelineError;
use crate::side_output::SideOutputs;
use crate::spec::OnError;
use crate::stage::isolate;
use crate::window::exchange::{Merged, Partials};
use crate::window::{Firing, Targets, TumblingWindows};
use rivulet_rows::time::iso8601;
use rivulet_rows::{Batch, BatchBuilder, Scalar, WindowAcc};
use std::collections::{BTreeMap, HashMap};

/// Name of the aggregate step in dead letters and logs.
pub const AGGREGATE: &str = "aggregate";

/// Rows produced by fired windows: one part per aggregate module generation (their rows may
/// differ in shape), and what firing set aside.
#[derive(Default)]
pub struct Results {
    pub parts: Vec<Batch>,
    /// Windows that could not be finished (for the dead letters), and records that turned
    /// out too late (ordered file splits).
    pub side: SideOutputs,
    /// Merged windows' offsets stay needed until these results are sent (see
    /// [`crate::window::operator::Windowing::results_sent`]).
    pub ticket: Option<u64>,
}

impl Results {
    /// Result rows in all parts.
    pub fn rows(&self) -> u64 {
        self.parts.iter().map(|rows| u64::from(rows.len)).sum()
    }
}

/// A window operator's aggregate.
pub struct Dispatch {
    aggregator: Aggregator,
    /// Wasm aggregates: the module generation each open window started with.
    window_generation: BTreeMap<i64, u32>,
    policy: OnError,
    /// Where the aggregate's recent input is kept for trying swapped-in modules.
    pub samples: Option<std::sync::Arc<crate::status::JobStatus>>,
    /// The shadow this task last fed (it was told which windows were open then).
    shadow_epoch: u64,
}

impl Dispatch {
    pub fn new(aggregator: Aggregator, policy: OnError) -> Self {
        Dispatch {
            aggregator,
            window_generation: BTreeMap::new(),
            policy,
            samples: None,
            shadow_epoch: 0,
        }
    }

    /// Every window is gone (a restart).
    pub fn clear(&mut self) {
        self.window_generation.clear();
    }

    /// A window was let go of for good.
    pub fn closed(&mut self, start: i64) {
        self.window_generation.remove(&start);
    }

    /// The Wasm aggregate module generation in service (none for built-ins).
    pub fn current_generation(&self) -> Option<u32> {
        match &self.aggregator {
            Aggregator::Wasm(generations) => Some(generations.current.id),
            Aggregator::Builtin(_) => None,
        }
    }

    /// Puts a new aggregate module in service; `Ok((true, _))` when its state version differs
    /// (windows already open finish with the previous module). Also returns the module it
    /// replaced outright (same state version), to be dropped off the hot path.
    #[allow(clippy::type_complexity)]
    pub fn swap(
        &mut self,
        stage: Box<dyn crate::stage::AggregateStage>,
        empty: Vec<u8>,
        state_version: u32,
        swap: u64,
    ) -> Result<(bool, Option<Box<dyn crate::stage::AggregateStage>>), String> {
        match &mut self.aggregator {
            Aggregator::Wasm(generations) => {
                let outcome = generations.install(stage, empty, state_version);
                generations.shape.swapped(swap);
                self.retire_unused();
                Ok(outcome)
            }
            Aggregator::Builtin(_) => {
                Err("this job's aggregate is built in, not a component".to_owned())
            }
        }
    }

    /// Adds the rows `targets` selected to their windows' accumulators. Returns the rows
    /// the aggregate refused (in row order), with why.
    pub fn add(
        &mut self,
        windows: &mut TumblingWindows<Acc>,
        rows: &Batch,
        targets: &Targets<'_>,
    ) -> Result<Vec<(u32, String)>, PipelineError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let mut refused: Vec<(u32, String)> = Vec::new();
        match &mut self.aggregator {
            Aggregator::Builtin(builtins) => {
                let empty = builtins.create();
                for (group, members) in targets.groups().iter().zip(targets.rows_by_group()) {
                    let acc = windows.accumulator(
                        group.start,
                        targets.key(group.key),
                        group.partition,
                        group.min_offset,
                        || Acc::Builtin(empty.clone()),
                    );
                    if let Acc::Builtin(accs) = acc {
                        refused.extend(builtins.add_rows(accs, rows, &members));
                    }
                }
            }
            Aggregator::Wasm(generations) => {
                let shadow = self.samples.as_ref().and_then(|s| s.shadows.tap(AGGREGATE));
                let called = std::time::Instant::now();
                let open = match &shadow {
                    Some(tap) if tap.epoch() != self.shadow_epoch => {
                        self.shadow_epoch = tap.epoch();
                        let mut open = std::collections::BTreeSet::new();
                        windows.for_each_mut(|start, _, _| {
                            open.insert(start);
                        });
                        Some(open.into_iter().collect())
                    }
                    _ => None,
                };
                // Each window stays with the module generation it was opened with.
                let mut by_generation: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
                for (i, group) in targets.groups().iter().enumerate() {
                    let generation = *self
                        .window_generation
                        .entry(group.start)
                        .or_insert(generations.current.id);
                    by_generation.entry(generation).or_default().push(i);
                }
                let cap = generations.limits.accumulator_bytes;
                for (generation_id, members) in by_generation {
                    let Some(generation) = generations.get_mut(generation_id) else {
                        continue;
                    };
                    // One accumulator per (window, key) in the call, from the groups (one
                    // per partition) that share it.
                    let mut call_of: HashMap<(i64, u32), u32> = HashMap::new();
                    let mut call_of_group = vec![u32::MAX; targets.groups().len()];
                    let mut accs: Vec<Vec<u8>> = Vec::new();
                    let mut windows_of_call: Vec<(i64, u32, i32, i64)> = Vec::new();
                    for &i in &members {
                        let group = targets.groups()[i];
                        let empty = &generation.empty;
                        let acc = windows.accumulator(
                            group.start,
                            targets.key(group.key),
                            group.partition,
                            group.min_offset,
                            || Acc::Bytes {
                                generation: generation_id,
                                bytes: empty.clone(),
                            },
                        );
                        let next = accs.len() as u32;
                        let call = *call_of.entry((group.start, group.key)).or_insert_with(|| {
                            accs.push(match acc {
                                Acc::Bytes { bytes, .. } => bytes.clone(),
                                Acc::Builtin(_) => empty.clone(),
                            });
                            windows_of_call.push((
                                group.start,
                                group.key,
                                group.partition,
                                group.min_offset,
                            ));
                            next
                        });
                        call_of_group[i] = call;
                    }
                    let mut rows_of_call: Vec<u32> = Vec::new();
                    let mut groups: Vec<u32> = Vec::new();
                    for &(row, group) in targets.rows() {
                        match call_of_group.get(group as usize) {
                            Some(&call) if call != u32::MAX => {
                                rows_of_call.push(row);
                                groups.push(call);
                            }
                            _ => {}
                        }
                    }
                    let subset = rows.select(&rows_of_call);
                    if let Some(samples) = &self.samples {
                        samples.sample_rows(AGGREGATE, &subset);
                    }
                    // Refuse (per key) growth past the stage's accumulator cap.
                    let mut budget = AccBudget::of(cap, windows);
                    let mut admit = |call: u32, old: usize, new: usize| {
                        budget.admit(old, new).map_err(|total| {
                            let (start, key) = windows_of_call
                                .get(call as usize)
                                .map_or((0, &Scalar::Null), |&(start, key, ..)| {
                                    (start, targets.key(key))
                                });
                            budget.refusal(key, start, new, total)
                        })
                    };
                    match isolate::add(&mut *generation.stage, accs, &subset, &groups, &mut admit) {
                        Ok(out) => {
                            for ((start, key, p, offset), bytes) in
                                windows_of_call.iter().zip(out.accs)
                            {
                                *windows.accumulator(
                                    *start,
                                    targets.key(*key),
                                    *p,
                                    *offset,
                                    || Acc::Builtin(Vec::new()),
                                ) = Acc::Bytes {
                                    generation: generation_id,
                                    bytes,
                                };
                            }
                            refused.extend(out.errors.into_iter().filter_map(|error| {
                                let row = *rows_of_call.get(error.index as usize)?;
                                Some((row, error.message))
                            }));
                        }
                        Err(err) if err.is_stopped() => return Err(err.into()),
                        Err(err) => {
                            let error = err.to_string();
                            tracing::warn!(stage = AGGREGATE, rows = rows_of_call.len(), "{error}");
                            refused.extend(rows_of_call.iter().map(|&row| (row, error.clone())));
                        }
                    }
                }
                if let Some(shadow) = shadow {
                    shadow.send(crate::shadow::Feed::of_add(
                        rows,
                        targets,
                        windows.size_ms(),
                        open,
                        refused.len() as u64,
                        called.elapsed(),
                    ));
                }
            }
        }
        // In row order, as the records came.
        refused.sort_by_key(|(row, _)| *row);
        Ok(refused)
    }

    /// Merges each (window, key)'s partials into one accumulator per key, ready to finish. A
    /// key whose partials cannot be merged is set aside (as its window and key) for the dead
    /// letters, by `stage` with `policy`.
    pub fn merge_windows(
        &mut self,
        windows: Vec<Merged<Acc>>,
        stage: &str,
        policy: OnError,
    ) -> (Vec<Firing<Acc>>, SideOutputs) {
        let mut refused = SideOutputs::default();
        let mut firings = Vec::with_capacity(windows.len());
        for window in windows {
            let mut groups = Vec::with_capacity(window.groups.len());
            for (key, partials) in window.groups {
                match self.merge(partials) {
                    Ok(acc) => groups.push((key, acc)),
                    Err(error) => {
                        let payload = format!(
                            r#"{{"window_start":"{}","window_end":"{}","key":{}}}"#,
                            iso8601(window.start),
                            iso8601(window.end),
                            key.to_json()
                        );
                        tracing::warn!(stage, "{error}");
                        refused.refuse_derived(payload.into_bytes(), stage, &error, policy);
                    }
                }
            }
            firings.push(Firing {
                start: window.start,
                end: window.end,
                groups,
                is_final: window.is_final,
                update: window.update,
                min_offsets: BTreeMap::new(),
            });
        }
        (firings, refused)
    }

    /// One accumulator from every task's partial of a (window, key).
    pub fn merge(&mut self, partials: Partials<Acc>) -> Result<Acc, String> {
        let mut partials = partials.into_values();
        let Some(mut merged) = partials.next() else {
            return Err("a window key with no accumulator".to_owned());
        };
        for next in partials {
            merged = match (&mut self.aggregator, merged, next) {
                (Aggregator::Builtin(builtins), Acc::Builtin(mut a), Acc::Builtin(b)) => {
                    builtins.merge(&mut a, &b);
                    Acc::Builtin(a)
                }
                (
                    Aggregator::Wasm(generations),
                    Acc::Bytes { generation, bytes },
                    Acc::Bytes {
                        generation: other,
                        bytes: more,
                    },
                ) if generation == other => {
                    let stage = generations.get_mut(generation).ok_or_else(|| {
                        format!("aggregate module generation {generation} is gone")
                    })?;
                    let mut out = stage
                        .stage
                        .merge(vec![(bytes, more)])
                        .map_err(|err| format!("merging the tasks' accumulators: {err}"))?;
                    if out.len() != 1 {
                        return Err(format!(
                            "merge returned {} accumulators for 1 pair (contract breach)",
                            out.len()
                        ));
                    }
                    Acc::Bytes {
                        generation,
                        bytes: out.remove(0),
                    }
                }
                (
                    _,
                    Acc::Bytes { generation, .. },
                    Acc::Bytes {
                        generation: other, ..
                    },
                ) => {
                    return Err(format!(
                        "the tasks hold this window in two aggregate module generations ({generation} and {other}: a swap with a new state version landed while it opened); they cannot be merged"
                    ));
                }
                _ => return Err("accumulators of different kinds".to_owned()),
            };
        }
        Ok(merged)
    }

    /// Result rows of fired windows; a window the aggregate cannot finish is set aside
    /// (as its window and key) for the dead letters.
    pub fn finish(
        &mut self,
        firings: Vec<Firing<Acc>>,
        key_name: Option<&str>,
    ) -> Result<Results, PipelineError> {
        let mut results = Results::default();
        for firing in firings.iter().filter(|f| f.is_final) {
            self.window_generation.remove(&firing.start);
        }
        if firings.iter().all(|f| f.groups.is_empty()) {
            self.retire_unused();
            return Ok(results);
        }
        match &mut self.aggregator {
            Aggregator::Builtin(builtins) => {
                let mut builder = BatchBuilder::new();
                for firing in &firings {
                    for (key, acc) in &firing.groups {
                        let Acc::Builtin(accs) = acc else { continue };
                        let mut row = serde_json::Map::new();
                        row.insert("window_start".into(), iso8601(firing.start).into());
                        row.insert("window_end".into(), iso8601(firing.end).into());
                        if let Some(name) = key_name {
                            row.insert(name.to_owned(), key.to_json());
                        }
                        row.extend(builtins.finish(accs));
                        if let Err(err) = builder.push(&row) {
                            let error = format!("window result cannot be stored: {err}");
                            let payload = serde_json::Value::Object(row).to_string();
                            results.side.refuse_derived(
                                payload.into_bytes(),
                                AGGREGATE,
                                &error,
                                self.policy,
                            );
                        }
                    }
                }
                results.parts.push(builder.finish());
            }
            Aggregator::Wasm(generations) => {
                let shadow = self.samples.as_ref().and_then(|s| s.shadows.tap(AGGREGATE));
                let called = std::time::Instant::now();
                let finals: std::collections::BTreeSet<i64> = firings
                    .iter()
                    .filter(|f| f.is_final)
                    .map(|f| f.start)
                    .collect();
                let mut fired: Vec<crate::shadow::Fired> = Vec::new();
                let chunk = isolate::FinishChunk::from(&generations.limits);
                // One finish call per module generation, in window order within each.
                let mut calls: BTreeMap<u32, Vec<WindowAcc>> = BTreeMap::new();
                for firing in &firings {
                    for (key, acc) in &firing.groups {
                        let Acc::Bytes { generation, bytes } = acc else {
                            continue;
                        };
                        calls.entry(*generation).or_default().push(WindowAcc {
                            key: key.clone(),
                            window_start: firing.start,
                            window_end: firing.end,
                            acc: bytes.clone(),
                        });
                    }
                }
                for (generation_id, windows) in calls {
                    let described: Vec<String> = windows
                        .iter()
                        .map(|w| {
                            format!(
                                r#"{{"window_start":"{}","window_end":"{}","key":{}}}"#,
                                iso8601(w.window_start),
                                iso8601(w.window_end),
                                w.key.to_json()
                            )
                        })
                        .collect();
                    let identities: Vec<(i64, i64, Scalar)> = match &shadow {
                        Some(_) => windows
                            .iter()
                            .map(|w| (w.window_start, w.window_end, w.key.clone()))
                            .collect(),
                        None => Vec::new(),
                    };
                    let outcome = match generations.get_mut(generation_id) {
                        Some(generation) => {
                            match isolate::finish(&mut *generation.stage, windows, chunk) {
                                Err(err) if err.is_stopped() => return Err(err.into()),
                                outcome => outcome.map_err(|err| err.to_string()),
                            }
                        }
                        None => Err(format!(
                            "aggregate module generation {generation_id} is gone"
                        )),
                    };
                    if shadow.is_some() {
                        fired.extend(crate::shadow::Fired::of_finish(
                            &identities,
                            &outcome,
                            &finals,
                        ));
                    }
                    match outcome {
                        Ok(out) => {
                            if generation_id == generations.current.id && out.rows.len > 0 {
                                generations.shape.observe(
                                    crate::shape::fingerprint(&out.rows),
                                    || crate::shape::Shape::of(&out.rows),
                                    self.samples.as_deref(),
                                    AGGREGATE,
                                );
                            }
                            for error in &out.errors {
                                let index = error.index as usize;
                                let payload = described.get(index).cloned().unwrap_or_default();
                                results.side.refuse_derived(
                                    payload.into_bytes(),
                                    AGGREGATE,
                                    &error.message,
                                    self.policy,
                                );
                            }
                            results.parts.push(out.rows);
                        }
                        Err(error) => {
                            tracing::warn!(stage = AGGREGATE, windows = described.len(), "{error}");
                            for payload in described {
                                results.side.refuse_derived(
                                    payload.into_bytes(),
                                    AGGREGATE,
                                    &error,
                                    self.policy,
                                );
                            }
                        }
                    }
                }
                if let Some(shadow) = shadow {
                    shadow.send(crate::shadow::Feed::Fired {
                        windows: fired,
                        busy: called.elapsed(),
                    });
                }
            }
        }
        self.retire_unused();
        Ok(results)
    }

    /// An accumulator as it crosses to another process (see [`crate::cluster::wire`]).
    pub fn to_wire(&mut self, acc: &Acc) -> Result<WireAcc, String> {
        match (&mut self.aggregator, acc) {
            (Aggregator::Builtin(_), Acc::Builtin(accs)) => Ok(WireAcc::Builtin(accs.clone())),
            (Aggregator::Wasm(generations), Acc::Bytes { generation, bytes }) => {
                let state_version = generations
                    .get_mut(*generation)
                    .ok_or_else(|| format!("aggregate module generation {generation} is gone"))?
                    .state_version;
                Ok(WireAcc::Bytes {
                    state_version,
                    bytes: bytes.clone(),
                })
            }
            _ => Err("an accumulator of another kind than the aggregate's".to_owned()),
        }
    }

    /// An accumulator another process wrote, for this process's aggregate: built-ins of
    /// the same functions, or bytes of the state version a module in service reads.
    pub fn from_wire(&mut self, acc: WireAcc) -> Result<Acc, String> {
        match (&mut self.aggregator, acc) {
            (Aggregator::Builtin(builtins), WireAcc::Builtin(accs)) => {
                let expected = builtins.create();
                let same = accs.len() == expected.len()
                    && accs
                        .iter()
                        .zip(&expected)
                        .all(|(a, b)| std::mem::discriminant(a) == std::mem::discriminant(b));
                match same {
                    true => Ok(Acc::Builtin(accs)),
                    false => Err(format!(
                        "a partial of other built-in aggregates ({} values) than this job's ({}): the processes run different specs",
                        accs.len(),
                        expected.len()
                    )),
                }
            }
            (
                Aggregator::Wasm(generations),
                WireAcc::Bytes {
                    state_version,
                    bytes,
                },
            ) => {
                let current = &generations.current;
                let generation = std::iter::once(current)
                    .chain(&generations.retiring)
                    .find(|g| g.state_version == state_version)
                    .map(|g| g.id)
                    .ok_or_else(|| {
                        format!(
                            "a partial of aggregate state version {state_version}; this process's aggregate reads state version {}",
                            current.state_version
                        )
                    })?;
                Ok(Acc::Bytes { generation, bytes })
            }
            (Aggregator::Builtin(_), WireAcc::Bytes { .. }) => Err(
                "a partial of a Wasm aggregate; this job's aggregate is built in: the processes run different specs".to_owned(),
            ),
            (Aggregator::Wasm(_), WireAcc::Builtin(_)) => Err(
                "a partial of built-in aggregates; this job's aggregate is a component: the processes run different specs".to_owned(),
            ),
        }
    }

    /// Drops aggregate module generations that no open window uses.
    pub fn retire_unused(&mut self) {
        if let Aggregator::Wasm(generations) = &mut self.aggregator {
            let in_use: std::collections::BTreeSet<u32> =
                self.window_generation.values().copied().collect();
            generations.retire_unused(|id| in_use.contains(&id));
        }
    }
}
