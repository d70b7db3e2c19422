//! The broker's HTTP side: the listener (connection limits, timeouts, TLS, graceful
//! shutdown), the routes and their handlers, the mint path, and the one mapping of API
//! errors to HTTP answers.

pub mod caller;
pub mod error;
pub mod front;
pub mod listener;
pub mod mint;
pub mod routes;
pub mod run_to_completion;

pub use error::ApiError;
pub use listener::{serve_http, serve_http_with_limits, shutdown_signal};
pub use routes::{discovery_document, router, AppState};
