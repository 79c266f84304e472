//! The validated task graph: names, dependencies, token needs, successors; and the
//! critical-path weights.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// A task's index in its [`Graph`], in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub(crate) u32);

impl TaskId {
    /// The index, from 0, in declaration order.
    pub fn index(self) -> usize {
        self.0 as usize
    }

    /// The id of the task declared at `index`. Meaningful only for indices below the graph's
    /// [`Graph::len`].
    pub fn from_index(index: usize) -> Self {
        TaskId(u32::try_from(index).expect("task index fits in u32"))
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One task as declared, before validation: what [`Graph::new`] takes.
///
/// Only what scheduling needs is here; what a task runs is the runner's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The task's name, unique in the graph.
    pub name: String,
    /// Names of the tasks that must succeed before this one starts.
    pub deps: Vec<String>,
    /// Token units the task holds while it runs (at least 1).
    pub tokens: u32,
    /// Whether the task has a lock to take before it starts (the runner tries it; the core
    /// only sequences the attempt before any token is taken).
    pub locked: bool,
    /// A successor that inherits this task's tokens when it succeeds. It depends on this task.
    pub then: Option<String>,
    /// A duration hint, used as the task's cost when the job log has none.
    pub hint: Option<Duration>,
}

impl NodeSpec {
    /// A task named `name` needing one token, with no dependencies.
    pub fn new(name: impl Into<String>) -> Self {
        NodeSpec {
            name: name.into(),
            deps: Vec::new(),
            tokens: 1,
            locked: false,
            then: None,
            hint: None,
        }
    }
}

/// Why a graph was refused. Every variant names the tasks involved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GraphError {
    /// Two tasks have the same name.
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A dependency names no task.
    UnknownDep {
        /// The task that lists it.
        task: String,
        /// The missing name.
        dep: String,
    },
    /// A `then` successor names no task.
    UnknownThen {
        /// The task that names it.
        task: String,
        /// The missing name.
        then: String,
    },
    /// A task lists itself as a dependency or as its own `then`.
    SelfReference {
        /// The task.
        task: String,
    },
    /// Two tasks name the same `then` successor; it can inherit from only one.
    ThenTwice {
        /// The successor.
        then: String,
        /// The first task that names it.
        first: String,
        /// The second.
        second: String,
    },
    /// A task asks for zero tokens.
    ZeroTokens {
        /// The task.
        task: String,
    },
    /// The dependencies form a cycle; the tasks on it, in order (the first depends on the
    /// last).
    Cycle {
        /// Names along the cycle.
        tasks: Vec<String>,
    },
    /// The graph has more tasks than the scheduler can index (2^32 - 1).
    TooLarge,
}

/// What kind of [`GraphError`] this is, for callers that branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GraphErrorKind {
    /// [`GraphError::DuplicateName`].
    DuplicateName,
    /// [`GraphError::UnknownDep`] or [`GraphError::UnknownThen`].
    UnknownTask,
    /// [`GraphError::SelfReference`] or [`GraphError::Cycle`].
    Cycle,
    /// [`GraphError::ThenTwice`].
    ThenTwice,
    /// [`GraphError::ZeroTokens`].
    ZeroTokens,
    /// [`GraphError::TooLarge`].
    TooLarge,
}

impl GraphError {
    /// The kind of error.
    pub fn kind(&self) -> GraphErrorKind {
        match self {
            GraphError::DuplicateName { .. } => GraphErrorKind::DuplicateName,
            GraphError::UnknownDep { .. } | GraphError::UnknownThen { .. } => {
                GraphErrorKind::UnknownTask
            }
            GraphError::SelfReference { .. } | GraphError::Cycle { .. } => GraphErrorKind::Cycle,
            GraphError::ThenTwice { .. } => GraphErrorKind::ThenTwice,
            GraphError::ZeroTokens { .. } => GraphErrorKind::ZeroTokens,
            GraphError::TooLarge => GraphErrorKind::TooLarge,
        }
    }

    /// The name of the task the error is about (the first one, for a cycle).
    pub fn task(&self) -> Option<&str> {
        match self {
            GraphError::DuplicateName { name } => Some(name),
            GraphError::UnknownDep { task, .. }
            | GraphError::UnknownThen { task, .. }
            | GraphError::SelfReference { task }
            | GraphError::ZeroTokens { task } => Some(task),
            GraphError::ThenTwice { second, .. } => Some(second),
            GraphError::Cycle { tasks } => tasks.first().map(String::as_str),
            GraphError::TooLarge => None,
        }
    }

    /// The task key the error is about (`name`, `deps`, `then`, `tokens`), for messages that
    /// point into a file.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            GraphError::DuplicateName { .. } => Some("name"),
            GraphError::UnknownDep { .. } | GraphError::Cycle { .. } => Some("deps"),
            GraphError::SelfReference { .. } => Some("deps"),
            GraphError::UnknownThen { .. } | GraphError::ThenTwice { .. } => Some("then"),
            GraphError::ZeroTokens { .. } => Some("tokens"),
            GraphError::TooLarge => None,
        }
    }
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::DuplicateName { name } => {
                write!(f, "two tasks are named `{name}`; task names must be unique")
            }
            GraphError::UnknownDep { task, dep } => {
                write!(
                    f,
                    "task `{task}` depends on `{dep}`, but no task has that name"
                )
            }
            GraphError::UnknownThen { task, then } => {
                write!(
                    f,
                    "task `{task}` hands its tokens to `{then}` (then), but no task has that name"
                )
            }
            GraphError::SelfReference { task } => {
                write!(f, "task `{task}` depends on itself")
            }
            GraphError::ThenTwice {
                then,
                first,
                second,
            } => write!(
                f,
                "tasks `{first}` and `{second}` both name `{then}` as their `then` successor; \
                 a task can inherit tokens from one task only"
            ),
            GraphError::ZeroTokens { task } => {
                write!(
                    f,
                    "task `{task}` asks for 0 tokens; a task needs at least 1"
                )
            }
            GraphError::Cycle { tasks } => {
                write!(f, "dependency cycle: ")?;
                for (i, t) in tasks.iter().rev().enumerate() {
                    if i > 0 {
                        write!(f, " -> ")?;
                    }
                    write!(f, "`{t}`")?;
                }
                if let Some(last) = tasks.last() {
                    write!(f, " -> `{last}`")?;
                }
                write!(f, " (each task must finish before the next one starts)")
            }
            GraphError::TooLarge => write!(f, "the graph has more than 4294967294 tasks"),
        }
    }
}

impl std::error::Error for GraphError {}

const NONE: u32 = u32::MAX;

/// A validated task graph: no duplicate names, no unknown names, no cycles.
///
/// Stored compactly (adjacency in two flat arrays) so that a graph of 100,000 tasks costs a
/// few dozen bytes per task plus its names.
#[derive(Debug, Clone)]
pub struct Graph {
    names: Vec<Box<str>>,
    tokens: Vec<u32>,
    locked: Vec<bool>,
    then: Vec<u32>,
    hint: Vec<Option<Duration>>,
    dep_start: Vec<u32>,
    deps: Vec<u32>,
    rdep_start: Vec<u32>,
    rdeps: Vec<u32>,
    /// A topological order: every task after all its dependencies.
    topo: Vec<u32>,
}

impl Graph {
    /// Validates `specs` (in declaration order) and builds the graph.
    ///
    /// A `then` successor gets an implicit dependency on the task that names it.
    ///
    /// # Errors
    ///
    /// The first problem found, in this order: too many tasks, zero tokens or a duplicate
    /// name (in declaration order), an unknown dependency or `then`, a self-reference, two
    /// tasks naming one `then`, a cycle.
    pub fn new(specs: impl IntoIterator<Item = NodeSpec>) -> Result<Graph, GraphError> {
        let specs: Vec<NodeSpec> = specs.into_iter().collect();
        if specs.len() >= NONE as usize {
            return Err(GraphError::TooLarge);
        }
        let n = specs.len();
        let mut index: HashMap<&str, u32> = HashMap::with_capacity(n);
        for (i, s) in specs.iter().enumerate() {
            if s.tokens == 0 {
                return Err(GraphError::ZeroTokens {
                    task: s.name.clone(),
                });
            }
            if index.insert(s.name.as_str(), i as u32).is_some() {
                return Err(GraphError::DuplicateName {
                    name: s.name.clone(),
                });
            }
        }
        // Edges, dependency -> dependent, deduplicated per task.
        let mut dep_lists: Vec<Vec<u32>> = Vec::with_capacity(n);
        let mut then = vec![NONE; n];
        let mut inherits_from = vec![NONE; n];
        for (i, s) in specs.iter().enumerate() {
            let mut list = Vec::with_capacity(s.deps.len());
            for d in &s.deps {
                let Some(&j) = index.get(d.as_str()) else {
                    return Err(GraphError::UnknownDep {
                        task: s.name.clone(),
                        dep: d.clone(),
                    });
                };
                if j as usize == i {
                    return Err(GraphError::SelfReference {
                        task: s.name.clone(),
                    });
                }
                list.push(j);
            }
            dep_lists.push(list);
            if let Some(t) = &s.then {
                let Some(&j) = index.get(t.as_str()) else {
                    return Err(GraphError::UnknownThen {
                        task: s.name.clone(),
                        then: t.clone(),
                    });
                };
                if j as usize == i {
                    return Err(GraphError::SelfReference {
                        task: s.name.clone(),
                    });
                }
                if inherits_from[j as usize] != NONE {
                    return Err(GraphError::ThenTwice {
                        then: t.clone(),
                        first: specs[inherits_from[j as usize] as usize].name.clone(),
                        second: s.name.clone(),
                    });
                }
                inherits_from[j as usize] = i as u32;
                then[i] = j;
            }
        }
        for (i, &from) in inherits_from.iter().enumerate() {
            if from != NONE {
                dep_lists[i].push(from);
            }
        }
        for list in &mut dep_lists {
            list.sort_unstable();
            list.dedup();
        }
        let (dep_start, deps) = flatten(&dep_lists);
        let mut rdep_count = vec![0u32; n];
        for &d in &deps {
            rdep_count[d as usize] += 1;
        }
        let mut rdep_start = Vec::with_capacity(n + 1);
        let mut acc = 0u32;
        rdep_start.push(0);
        for c in &rdep_count {
            acc += c;
            rdep_start.push(acc);
        }
        let mut fill = rdep_start[..n].to_vec();
        let mut rdeps = vec![0u32; deps.len()];
        for (i, list) in dep_lists.iter().enumerate() {
            for &d in list {
                rdeps[fill[d as usize] as usize] = i as u32;
                fill[d as usize] += 1;
            }
        }
        drop(dep_lists);

        // Kahn's algorithm, in declaration order among equals.
        let mut unmet: Vec<u32> = (0..n).map(|i| dep_start[i + 1] - dep_start[i]).collect();
        let mut topo: Vec<u32> = (0..n as u32).filter(|&i| unmet[i as usize] == 0).collect();
        let mut head = 0;
        while head < topo.len() {
            let t = topo[head] as usize;
            head += 1;
            for &r in &rdeps[rdep_start[t] as usize..rdep_start[t + 1] as usize] {
                unmet[r as usize] -= 1;
                if unmet[r as usize] == 0 {
                    topo.push(r);
                }
            }
        }
        let graph = Graph {
            names: specs
                .iter()
                .map(|s| s.name.clone().into_boxed_str())
                .collect(),
            tokens: specs.iter().map(|s| s.tokens).collect(),
            locked: specs.iter().map(|s| s.locked).collect(),
            then,
            hint: specs.iter().map(|s| s.hint).collect(),
            dep_start,
            deps,
            rdep_start,
            rdeps,
            topo,
        };
        if graph.topo.len() < n {
            return Err(GraphError::Cycle {
                tasks: graph.find_cycle(&unmet),
            });
        }
        Ok(graph)
    }

    /// Walks dependencies among the tasks Kahn's algorithm could not order, until one
    /// repeats: that stretch is a cycle.
    fn find_cycle(&self, unmet: &[u32]) -> Vec<String> {
        let start = unmet
            .iter()
            .position(|&u| u > 0)
            .expect("a task left unordered");
        let mut seen_at = HashMap::new();
        let mut path = Vec::new();
        let mut t = start;
        loop {
            if let Some(&at) = seen_at.get(&t) {
                return path[at..]
                    .iter()
                    .map(|&i: &usize| self.names[i].to_string())
                    .collect();
            }
            seen_at.insert(t, path.len());
            path.push(t);
            t = self
                .deps_of(TaskId(t as u32))
                .iter()
                .map(|&d| d as usize)
                .find(|&d| unmet[d] > 0)
                .expect("an unordered task has an unordered dependency");
        }
    }

    /// The number of tasks.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the graph has no task.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every task id, in declaration order.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = TaskId> + '_ {
        (0..self.names.len() as u32).map(TaskId)
    }

    /// The task's name.
    pub fn name(&self, t: TaskId) -> &str {
        &self.names[t.index()]
    }

    /// The task named `name`. A linear search: for messages, not for hot paths.
    pub fn find(&self, name: &str) -> Option<TaskId> {
        self.names
            .iter()
            .position(|n| &**n == name)
            .map(TaskId::from_index)
    }

    /// Token units the task asks for.
    pub fn tokens(&self, t: TaskId) -> u32 {
        self.tokens[t.index()]
    }

    /// Whether the task has a lock.
    pub fn is_locked(&self, t: TaskId) -> bool {
        self.locked[t.index()]
    }

    /// The successor that inherits this task's tokens.
    pub fn then(&self, t: TaskId) -> Option<TaskId> {
        let j = self.then[t.index()];
        (j != NONE).then_some(TaskId(j))
    }

    /// The task's duration hint.
    pub fn hint(&self, t: TaskId) -> Option<Duration> {
        self.hint[t.index()]
    }

    fn deps_of(&self, t: TaskId) -> &[u32] {
        &self.deps[self.dep_start[t.index()] as usize..self.dep_start[t.index() + 1] as usize]
    }

    fn rdeps_of(&self, t: TaskId) -> &[u32] {
        &self.rdeps[self.rdep_start[t.index()] as usize..self.rdep_start[t.index() + 1] as usize]
    }

    /// The positions of `t`'s dependents, for [`Graph::dependent_at`].
    pub(crate) fn dependents_span(&self, t: TaskId) -> (usize, usize) {
        (
            self.rdep_start[t.index()] as usize,
            self.rdep_start[t.index() + 1] as usize,
        )
    }

    /// The dependent at position `k` (see [`Graph::dependents_span`]).
    pub(crate) fn dependent_at(&self, k: usize) -> u32 {
        self.rdeps[k]
    }

    /// The tasks `t` depends on (including the task whose `then` it is).
    pub fn deps(&self, t: TaskId) -> impl ExactSizeIterator<Item = TaskId> + '_ {
        self.deps_of(t).iter().map(|&d| TaskId(d))
    }

    /// The tasks that depend on `t`.
    pub fn dependents(&self, t: TaskId) -> impl ExactSizeIterator<Item = TaskId> + '_ {
        self.rdeps_of(t).iter().map(|&d| TaskId(d))
    }

    /// A topological order: each task after all of its dependencies; declaration order
    /// among tasks that become orderable together.
    pub fn topological(&self) -> impl ExactSizeIterator<Item = TaskId> + '_ {
        self.topo.iter().map(|&t| TaskId(t))
    }

    /// Critical-path weights: a task's weight is its cost plus the largest weight among the
    /// tasks that depend on it, computed in one pass over the reverse topological order.
    /// `cost(t)` is in any unit (the scheduler uses microseconds); sums saturate.
    pub fn weights(&self, mut cost: impl FnMut(TaskId) -> u64) -> Vec<u64> {
        let mut w = vec![0u64; self.len()];
        for &t in self.topo.iter().rev() {
            let below = self
                .rdeps_of(TaskId(t))
                .iter()
                .map(|&r| w[r as usize])
                .max();
            w[t as usize] = cost(TaskId(t)).saturating_add(below.unwrap_or(0));
        }
        w
    }

    /// Heap bytes the graph holds (names, arrays), for memory figures.
    pub fn heap_bytes(&self) -> usize {
        self.names.iter().map(|n| n.len()).sum::<usize>()
            + self.names.capacity() * std::mem::size_of::<Box<str>>()
            + self.tokens.capacity() * 4
            + self.locked.capacity()
            + self.then.capacity() * 4
            + self.hint.capacity() * std::mem::size_of::<Option<Duration>>()
            + (self.dep_start.capacity() + self.deps.capacity()) * 4
            + (self.rdep_start.capacity() + self.rdeps.capacity()) * 4
            + self.topo.capacity() * 4
    }
}

fn flatten(lists: &[Vec<u32>]) -> (Vec<u32>, Vec<u32>) {
    let total: usize = lists.iter().map(Vec::len).sum();
    let mut start = Vec::with_capacity(lists.len() + 1);
    let mut flat = Vec::with_capacity(total);
    start.push(0);
    for l in lists {
        flat.extend_from_slice(l);
        start.push(flat.len() as u32);
    }
    (start, flat)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, deps: &[&str]) -> NodeSpec {
        NodeSpec {
            deps: deps.iter().map(|d| d.to_string()).collect(),
            ..NodeSpec::new(name)
        }
    }

    #[test]
    fn cycle_is_named_in_order() {
        let err =
            Graph::new([spec("a", &["c"]), spec("b", &["a"]), spec("c", &["b"])]).unwrap_err();
        let GraphError::Cycle { tasks } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(tasks.len(), 3);
        let msg = err.to_string();
        assert!(
            msg.contains("`a`") && msg.contains("`b`") && msg.contains("`c`"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_dep_and_duplicates_are_named() {
        let err = Graph::new([spec("a", &["zz"])]).unwrap_err();
        assert_eq!(
            err,
            GraphError::UnknownDep {
                task: "a".into(),
                dep: "zz".into()
            }
        );
        let err = Graph::new([spec("a", &[]), spec("a", &[])]).unwrap_err();
        assert_eq!(err.kind(), GraphErrorKind::DuplicateName);
        let err = Graph::new([spec("a", &["a"])]).unwrap_err();
        assert_eq!(err.kind(), GraphErrorKind::Cycle);
    }

    #[test]
    fn then_adds_a_dependency_once() {
        let mut a = spec("a", &[]);
        a.then = Some("b".into());
        let g = Graph::new([a, spec("b", &["a"])]).unwrap();
        assert_eq!(g.deps(TaskId(1)).collect::<Vec<_>>(), vec![TaskId(0)]);
        assert_eq!(g.then(TaskId(0)), Some(TaskId(1)));
        let mut a = spec("a", &[]);
        a.then = Some("c".into());
        let mut b = spec("b", &[]);
        b.then = Some("c".into());
        let err = Graph::new([a, b, spec("c", &[])]).unwrap_err();
        assert_eq!(err.kind(), GraphErrorKind::ThenTwice);
    }

    #[test]
    fn weights_are_cost_plus_heaviest_dependent() {
        // a -> b -> d, a -> c; costs 1, 5, 2, 3.
        let g = Graph::new([
            spec("a", &[]),
            spec("b", &["a"]),
            spec("c", &["a"]),
            spec("d", &["b"]),
        ])
        .unwrap();
        let cost = [1, 5, 2, 3];
        let w = g.weights(|t| cost[t.index()]);
        assert_eq!(w, vec![9, 8, 2, 3]);
    }
}
