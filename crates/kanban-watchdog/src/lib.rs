//! kanban-watchdog: a sidecar beside the unmodified Hermes kanban
//! dispatcher. See the README for what it does and how to run it.

pub mod alertmanager;
pub mod alerts;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod decide;
pub mod explain;
pub mod gateway;
pub mod generate;
pub mod health;
pub mod heartbeat;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod paths;
pub mod process_start;
pub mod replay;
pub mod requests;
pub mod rescue;
pub mod restart;
pub mod run;
pub mod state;
pub mod status;
pub mod status_cmd;
pub mod wire;
