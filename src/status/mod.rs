//! The status page: what the mirror holds, what it saves, how its upstreams are and what it is
//! doing, for a person (`/status`, HTML with inline SVG charts, on the admin listener), for scripts
//! (`/status.json`) and for the terminal (`wharf status`, over the control socket). All three show
//! one [`StatusReport`].

pub mod report;

pub use report::StatusReport;
