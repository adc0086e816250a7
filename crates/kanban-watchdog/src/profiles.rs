//! A worker profile's provider chain: Hermes' config, read by
//! [`hermes_board::profiles`].

pub use hermes_board::profiles::{ChainLink, Profiles, chain_from_yaml};
