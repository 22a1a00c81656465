//! Hint events published after a write commits.

use std::collections::HashMap;

use shoal_events::{Event, EventBus};
use shoal_store::Object;

/// Publishes `action` on `obj` (as committed, so its version is the commit revision).
/// A failed publish is logged, never returned: events are hints, and every consumer
/// also resyncs from its cache.
pub async fn announce<T: Object>(bus: &EventBus, action: &str, obj: &T, name: &str) {
    let mut attributes = HashMap::new();
    if !name.is_empty() {
        attributes.insert("name".to_string(), name.to_string());
    }
    let event = Event {
        kind: T::KIND.as_str().to_string(),
        action: action.to_string(),
        id: obj.id().to_string(),
        version: obj.version(),
        time: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        attributes,
    };
    if let Err(e) = bus.publish(&event).await {
        tracing::warn!(kind = %event.kind, id = %event.id, error = %e, "event not published");
    }
}
