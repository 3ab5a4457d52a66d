//! Node ids: the one mapping of `--machine-id` / `--datacenter-id` onto a layout's node
//! fields, and of a leased host id onto the same fields.

use std::fmt;

use super::{mask, Field, Layout};
use crate::error::LayoutError;

/// Which node id a command-line flag or environment variable sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeId {
    /// `--machine-id` / `MACHINE_ID`: the least significant node field.
    Machine,
    /// `--datacenter-id` / `DATACENTER_ID`: the node field above the machine field, in
    /// layouts with two node fields.
    Datacenter,
}

impl NodeId {
    /// The command-line flag that gives this id: `--machine-id` or `--datacenter-id`.
    pub fn flag(self) -> &'static str {
        match self {
            NodeId::Machine => "--machine-id",
            NodeId::Datacenter => "--datacenter-id",
        }
    }

    /// The environment variable `shardflake serve` reads this id from: `MACHINE_ID` or
    /// `DATACENTER_ID` (the seed service's names).
    pub fn env_var(self) -> &'static str {
        match self {
            NodeId::Machine => "MACHINE_ID",
            NodeId::Datacenter => "DATACENTER_ID",
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeId::Machine => "machine id",
            NodeId::Datacenter => "datacenter id",
        })
    }
}

impl Layout {
    /// The node field `--machine-id` (`MACHINE_ID`) sets: the least significant node field.
    /// `None` when the layout has no node field.
    pub fn machine_field(&self) -> Option<&Field> {
        self.node_fields().last()
    }

    /// The node field `--datacenter-id` (`DATACENTER_ID`) sets: in layouts with exactly two
    /// node fields, the more significant one.
    pub fn datacenter_field(&self) -> Option<&Field> {
        let nodes: Vec<&Field> = self.node_fields().collect();
        match nodes.as_slice() {
            [dc, _machine] => Some(dc),
            _ => None,
        }
    }

    /// Node field values from a machine id and a datacenter id, the one mapping every
    /// command uses: the machine id sets the least significant node field, the datacenter id
    /// the one above it (twitter: `datacenter`/`worker`; discord: `worker`/`process`). An
    /// absent id is 0; a datacenter id for a layout with one node field must be absent or 0.
    ///
    /// The two ids together are the host id a coordinator leases
    /// ([`Layout::node_values_of_host`]): `host = datacenter << machine_bits | machine`.
    ///
    /// ```
    /// use shardflake::Layout;
    /// let d = Layout::preset("discord").unwrap();
    /// assert_eq!(
    ///     d.node_values_from_ids(Some(4), Some(2)).unwrap(),
    ///     vec![("worker".to_string(), 2), ("process".to_string(), 4)]
    /// );
    /// assert_eq!(d.node_values_from_ids(Some(4), Some(2)).unwrap(),
    ///     d.node_values_of_host((2 << 5) | 4).unwrap());
    /// let e = d.node_values_from_ids(Some(32), None).unwrap_err();
    /// assert_eq!(e.to_string(), "machine id 32 is out of range 0..=31 for layout `discord` (field `process`)");
    /// ```
    pub fn node_values_from_ids(
        &self,
        machine: Option<u64>,
        datacenter: Option<u64>,
    ) -> Result<Vec<(String, u64)>, LayoutError> {
        let nodes: Vec<&Field> = self.node_fields().collect();
        if nodes.is_empty() || nodes.len() > 2 {
            return Err(LayoutError::Structure(format!(
                "node ids map onto layouts with one or two node fields; `{}` has {}",
                self.name,
                nodes.len()
            )));
        }
        let check = |id: NodeId, f: &Field, value: u64| {
            if value > f.max() {
                return Err(LayoutError::NodeIdOutOfRange {
                    id,
                    value,
                    max: f.max(),
                    layout: self.name.clone(),
                    field: f.name.clone(),
                });
            }
            Ok((f.name.clone(), value))
        };
        let machine_field = nodes[nodes.len() - 1];
        let mut values = Vec::with_capacity(2);
        match (nodes.len(), datacenter) {
            (2, dc) => values.push(check(NodeId::Datacenter, nodes[0], dc.unwrap_or(0))?),
            (_, Some(dc)) if dc != 0 => {
                return Err(LayoutError::NodeIdUnused {
                    id: NodeId::Datacenter,
                    value: dc,
                    layout: self.name.clone(),
                    field: machine_field.name.clone(),
                })
            }
            _ => {}
        }
        values.push(check(NodeId::Machine, machine_field, machine.unwrap_or(0))?);
        Ok(values)
    }

    /// Width of a host id: the node fields' widths added up.
    pub fn host_id_bits(&self) -> u32 {
        self.node_fields().map(|f| f.bits()).sum()
    }

    /// Splits a host id over the node fields, most significant field first: the node values
    /// of the node that holds `host_id`.
    ///
    /// ```
    /// use shardflake::Layout;
    /// let twitter = Layout::preset("twitter").unwrap();
    /// assert_eq!(
    ///     twitter.node_values_of_host(37).unwrap(),
    ///     vec![("datacenter".to_string(), 1), ("worker".to_string(), 5)]
    /// );
    /// assert!(twitter.node_values_of_host(1024).is_err());
    /// ```
    pub fn node_values_of_host(&self, host_id: u64) -> Result<Vec<(String, u64)>, LayoutError> {
        let total = self.host_id_bits();
        let max = mask(total);
        if host_id > max {
            return Err(LayoutError::FieldValue {
                field: self
                    .node_fields()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join("+"),
                value: host_id,
                max,
            });
        }
        let mut rest = total;
        Ok(self
            .node_fields()
            .map(|f| {
                rest -= f.bits;
                (f.name.clone(), (host_id >> rest) & f.max())
            })
            .collect())
    }
}
