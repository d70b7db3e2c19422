//! The dev stack's audit fault switch: `POST /dev/faults/audit` with the body
//! `refuse_writes` or `none`.
//!
//! [`AuditFaultSwitch::wrap`] puts a decorator over the broker's audit store. While writes
//! are refused, every append fails as a failed commit would (nothing is acknowledged),
//! the health check fails, and `mint_withheld` rows wait in the decorator; switched back,
//! the waiting rows go to the store underneath. It exists only in this crate, so the
//! production broker carries no way to switch its audit log off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use agentkeys_broker::audit::{AuditError, AuditReceipt, AuditStore, NewAuditRow};
use agentkeys_broker::http::ApiError;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use futures::future::BoxFuture;

/// Why the decorator refuses, as the broker reports it.
const REFUSED: &str = "writes refused by the dev stack's audit fault switch";

/// The switch shared by the decorator and the route.
#[derive(Clone, Default)]
pub struct AuditFaultSwitch {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    refuse_writes: AtomicBool,
    store: Mutex<Option<Arc<dyn AuditStore>>>,
    withheld: Mutex<Vec<NewAuditRow>>,
}

impl AuditFaultSwitch {
    /// Wraps `store`; pass as the audit layer of
    /// [`agentkeys_broker::broker::build_with_audit_layer`].
    pub fn wrap(&self, store: Arc<dyn AuditStore>) -> Arc<dyn AuditStore> {
        if let Ok(mut s) = self.shared.store.lock() {
            *s = Some(store);
        }
        Arc::new(self.clone())
    }

    /// Refuses writes (`true`) or lets them through again, handing the rows that waited
    /// meanwhile to the store.
    pub fn set_refuse_writes(&self, refuse: bool) {
        self.shared.refuse_writes.store(refuse, Ordering::SeqCst);
        if !refuse {
            let waiting = self
                .shared
                .withheld
                .lock()
                .map(|mut w| std::mem::take(&mut *w))
                .unwrap_or_default();
            if let Some(store) = self.inner() {
                for row in waiting {
                    store.queue_withheld(row);
                }
            }
        }
    }

    /// The `POST /dev/faults/audit` route.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/dev/faults/audit", post(switch_route))
            .with_state(self.clone())
    }

    fn refusing(&self) -> bool {
        self.shared.refuse_writes.load(Ordering::SeqCst)
    }

    fn inner(&self) -> Option<Arc<dyn AuditStore>> {
        self.shared.store.lock().ok().and_then(|s| s.clone())
    }
}

impl AuditStore for AuditFaultSwitch {
    fn append(&self, row: NewAuditRow) -> BoxFuture<'_, Result<AuditReceipt, AuditError>> {
        Box::pin(async move {
            match self.inner() {
                Some(store) if !self.refusing() => store.append(row).await,
                Some(_) => Err(AuditError::Commit {
                    reason: REFUSED.to_string(),
                }),
                None => Err(AuditError::WriterGone),
            }
        })
    }

    fn healthy(&self) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(async move {
            match self.inner() {
                Some(store) if !self.refusing() => store.healthy().await,
                Some(_) => Err(AuditError::Unhealthy {
                    reason: REFUSED.to_string(),
                }),
                None => Err(AuditError::WriterGone),
            }
        })
    }

    fn queue_withheld(&self, row: NewAuditRow) {
        match self.inner() {
            Some(store) if !self.refusing() => store.queue_withheld(row),
            _ => {
                if let Ok(mut w) = self.shared.withheld.lock() {
                    w.push(row);
                }
            }
        }
    }

    fn pending_withheld(&self) -> usize {
        let waiting = self.shared.withheld.lock().map(|w| w.len()).unwrap_or(0);
        waiting + self.inner().map_or(0, |s| s.pending_withheld())
    }
}

async fn switch_route(
    State(switch): State<AuditFaultSwitch>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let refuse = match body.trim_ascii() {
        b"refuse_writes" => true,
        b"none" => false,
        _ => {
            return Err(ApiError::BadRequest(
                "expected refuse_writes or none".into(),
            ))
        }
    };
    switch.set_refuse_writes(refuse);
    let fault = if refuse { "RefuseWrites" } else { "None" };
    tracing::warn!(fault, "audit fault switched (dev stack)");
    Ok(Json(serde_json::json!({ "audit_fault": fault })))
}
