//! Topology: which backend is the primary, found by polling and fenced by timeline
//! (design section 1). `probe` asks one node, `health` turns answers into up/down, `decide`
//! applies the fencing rules, `monitor` runs the loops, `routing` is the table sessions read.

pub mod counters;
pub mod decide;
pub mod health;
pub mod monitor;
pub mod node;
pub mod probe;
pub mod routing;

pub use node::{Health, NodeView, ProbeOutcome, Role};
pub use routing::{FailoverRecord, Operator, PrimaryRoute, RoutingTable, Topology};
