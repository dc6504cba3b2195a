//! Weft's host: everything the `weft` process does besides parsing its
//! command line.
//!
//! Modules: [`manifest`] and [`environment`] (the service model),
//! [`controller`] (deploy, scale, upgrade, heal), [`admin`] (the API),
//! [`http_server`] (web roles' listeners), [`connections`] (what clients
//! may hold of the host), [`lingering`] (slow request bodies),
//! [`supervisor`] (restart policy), [`logbook`] (guest output for
//! `weft logs`), [`metrics`], [`service`] (backends and role specs) and
//! [`builder`] (build commands).

pub mod admin;
pub mod builder;
pub mod connections;
pub mod controller;
pub mod environment;
pub mod http_server;
pub mod lingering;
pub mod logbook;
pub mod manifest;
pub mod metrics;
pub mod service;
pub mod supervisor;
