//! The stage graph: edges from each input stage to the stage that reads it.

use std::collections::BTreeSet;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};

use crate::config::StageSpec;

/// Node `i` is stage `i` of the pipeline (file order).
#[derive(Default, Debug, Clone)]
pub struct Dag {
    graph: DiGraph<usize, ()>,
    order: Vec<usize>,
}

impl Dag {
    /// Build the graph; on a cycle, return it as a path of stage names that ends where
    /// it starts (`a -> b -> a`).
    pub fn build(stages: &[StageSpec]) -> Result<Dag, Vec<String>> {
        let mut graph = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..stages.len()).map(|i| graph.add_node(i)).collect();
        for (i, s) in stages.iter().enumerate() {
            let mut seen = BTreeSet::new();
            for input in &s.inputs {
                if let Some(j) = stages.iter().position(|u| u.name == input.stage)
                    && seen.insert(j)
                {
                    graph.add_edge(nodes[j], nodes[i], ());
                }
            }
        }
        match petgraph::algo::toposort(&graph, None) {
            Ok(order) => Ok(Dag {
                order: order.into_iter().map(|n| graph[n]).collect(),
                graph,
            }),
            Err(cycle) => Err(find_cycle(&graph, cycle.node_id())
                .into_iter()
                .map(|i| stages[i].name.clone())
                .collect()),
        }
    }

    /// Stages in an order where every stage comes after its inputs.
    pub fn topo_order(&self) -> &[usize] {
        &self.order
    }

    /// Stages `i` depends on, transitively (not including `i`).
    pub fn ancestors(&self, i: usize) -> BTreeSet<usize> {
        let rev = Reversed(&self.graph);
        let mut dfs = Dfs::new(rev, NodeIndex::new(i));
        let mut out = BTreeSet::new();
        while let Some(n) = dfs.next(rev) {
            out.insert(self.graph[n]);
        }
        out.remove(&i);
        out
    }

    /// Stages that depend on `i`, transitively (not including `i`).
    pub fn descendants(&self, i: usize) -> BTreeSet<usize> {
        let mut dfs = Dfs::new(&self.graph, NodeIndex::new(i));
        let mut out = BTreeSet::new();
        while let Some(n) = dfs.next(&self.graph) {
            out.insert(self.graph[n]);
        }
        out.remove(&i);
        out
    }

    /// Direct inputs of `i`.
    pub fn parents(&self, i: usize) -> Vec<usize> {
        self.graph
            .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
            .map(|n| self.graph[n])
            .collect()
    }

    pub fn edges(&self) -> Vec<(usize, usize)> {
        let mut e: Vec<_> = self
            .graph
            .edge_indices()
            .filter_map(|e| self.graph.edge_endpoints(e))
            .map(|(a, b)| (self.graph[a], self.graph[b]))
            .collect();
        e.sort();
        e
    }
}

/// A path around a cycle through `start`: start -> ... -> start.
fn find_cycle(graph: &DiGraph<usize, ()>, start: NodeIndex) -> Vec<usize> {
    // Depth-first search for a path from a successor of `start` back to it; toposort
    // reports a node on a cycle, so one exists.
    fn walk(
        g: &DiGraph<usize, ()>,
        at: NodeIndex,
        goal: NodeIndex,
        path: &mut Vec<NodeIndex>,
        seen: &mut BTreeSet<NodeIndex>,
    ) -> bool {
        for next in g.neighbors_directed(at, Direction::Outgoing) {
            if next == goal {
                path.push(next);
                return true;
            }
            if seen.insert(next) {
                path.push(next);
                if walk(g, next, goal, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start];
    let mut seen = BTreeSet::new();
    walk(graph, start, start, &mut path, &mut seen);
    path.into_iter().map(|n| graph[n]).collect()
}
