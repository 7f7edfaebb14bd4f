//! Lifecycle events of services, from two Docker event streams.
//!
//! Swarm reports a task's life as `container` events of the task's container (`start`, `die`,
//! `health_status`), which carry the container's labels (the spec's, copied into the task's
//! container spec) and `com.docker.swarm.service.id`; they are filtered by label and reported
//! under the service id. A service's own `create` and `remove` come as `service` events,
//! whose attributes carry only the name: a created service is inspected to match its labels,
//! and a removal is reported for services known to match (listed when the stream was asked
//! for, or matched since). Container `create`/`destroy` are task-level (a service outlives its
//! tasks) and are not reported.
//!
//! Why the first draft of this runtime never saw the start it waited for: bollard connects when
//! the stream is first polled, the draft set no `since`, and the conformance check polls only
//! after the container runs, so the start had already happened. `since` alone is not enough
//! either: the daemon replays at most its last 256 events (of every kind, health-check execs
//! included, which come every few seconds per container). So the stream is read eagerly: the
//! connections are opened at the call (with `since` = the call, for the moment before they
//! are up) by a task that forwards into a buffer of [`BUFFER`] events; a reader that falls
//! further behind gets [`Error::EventsLagged`] with the count lost, and the stream goes on. The
//! task ends when the stream is dropped or the connection breaks.
//!
//! Container events come from the node this runtime talks to only; tasks on other nodes
//! report only service `create`/`remove` here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::runtime::docker::{docker_error, event_from_message, label_filters, now_since};
use crate::runtime::{ContainerId, RuntimeEvent, RuntimeEventKind};
use crate::{Error, LabelSelector};

/// Events kept for a slow reader before newer ones are dropped (and counted).
pub(super) const BUFFER: usize = 1024;

/// The label Swarm puts on task containers naming their service.
pub(super) const SERVICE_ID_LABEL: &str = "com.docker.swarm.service.id";

/// Events of services matching `selector`; `known` are the matching services that exist now.
/// Connects at once (a task forwards into a buffer); must be called within a Tokio runtime.
pub(super) fn stream(
    docker: Docker,
    selector: LabelSelector,
    known: HashSet<String>,
) -> BoxStream<'static, Result<RuntimeEvent, Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(BUFFER);
    tokio::spawn(forward(translated(docker, selector, known), tx));
    futures::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    })
    .boxed()
}

async fn forward(
    mut events: BoxStream<'static, Result<RuntimeEvent, Error>>,
    tx: tokio::sync::mpsc::Sender<Result<RuntimeEvent, Error>>,
) {
    use tokio::sync::mpsc::error::TrySendError;
    let mut missed = 0u64;
    loop {
        let item = tokio::select! {
            () = tx.closed() => return,
            item = events.next() => match item {
                Some(item) => item,
                None => return,
            },
        };
        if missed > 0 {
            match tx.try_send(Err(Error::EventsLagged { missed })) {
                Ok(()) => missed = 0,
                Err(TrySendError::Full(_)) => {
                    missed += 1;
                    continue;
                }
                Err(TrySendError::Closed(_)) => return,
            }
        }
        match tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => missed += 1,
            Err(TrySendError::Closed(_)) => return,
        }
    }
}

/// The two Docker event streams, merged and translated (lazy: connects when polled).
fn translated(
    docker: Docker,
    selector: LabelSelector,
    known: HashSet<String>,
) -> BoxStream<'static, Result<RuntimeEvent, Error>> {
    let since = now_since();
    let mut container_filters = label_filters(&selector);
    container_filters.insert("type".to_owned(), vec!["container".to_owned()]);
    let service_filters = HashMap::from([("type".to_owned(), vec!["service".to_owned()])]);
    let containers = docker.events(Some(
        EventsOptionsBuilder::new()
            .since(&since)
            .filters(&container_filters)
            .build(),
    ));
    let services = docker.events(Some(
        EventsOptionsBuilder::new()
            .since(&since)
            .filters(&service_filters)
            .build(),
    ));
    let known = Arc::new(Mutex::new(known));
    futures::stream::select(containers, services)
        // The first error is yielded, then the stream ends (either connection broke).
        .scan(false, |failed, item| {
            let next = if *failed {
                None
            } else {
                *failed = item.is_err();
                Some(item)
            };
            futures::future::ready(next)
        })
        .filter_map(move |item| {
            let docker = docker.clone();
            let selector = selector.clone();
            let known = known.clone();
            async move {
                let message = match item {
                    Ok(message) => message,
                    Err(e) => return Some(Err(docker_error("watch events", e))),
                };
                match message.typ {
                    Some(EventMessageTypeEnum::CONTAINER) => task_event(message, &known).map(Ok),
                    Some(EventMessageTypeEnum::SERVICE) => {
                        service_event(message, &docker, &selector, &known)
                            .await
                            .map(Ok)
                    }
                    _ => None,
                }
            }
        })
        .boxed()
}

fn task_event(mut message: EventMessage, known: &Mutex<HashSet<String>>) -> Option<RuntimeEvent> {
    if matches!(message.action.as_deref(), Some("create" | "destroy")) {
        return None;
    }
    let actor = message.actor.as_mut()?;
    let service = actor.attributes.as_ref()?.get(SERVICE_ID_LABEL)?.clone();
    known
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(service.clone());
    actor.id = Some(service);
    event_from_message(message)
}

async fn service_event(
    message: EventMessage,
    docker: &Docker,
    selector: &LabelSelector,
    known: &Mutex<HashSet<String>>,
) -> Option<RuntimeEvent> {
    let id = message.actor.and_then(|a| a.id)?;
    let kind = match message.action.as_deref()? {
        "create" => {
            let service = docker.inspect_service(&id, None).await.ok()?;
            let labels: BTreeMap<String, String> = service
                .spec
                .and_then(|s| s.labels)
                .unwrap_or_default()
                .into_iter()
                .collect();
            if !selector.matches(&labels) {
                return None;
            }
            known
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(id.clone());
            RuntimeEventKind::Created
        }
        "remove" => {
            let was_known = known
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
            if !was_known {
                return None;
            }
            RuntimeEventKind::Removed
        }
        _ => return None,
    };
    Some(RuntimeEvent {
        id: ContainerId::new(id),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use bollard::models::EventActor;

    use super::*;

    fn container_event(action: &str, service: Option<&str>) -> EventMessage {
        let mut attributes = HashMap::from([("exitCode".to_owned(), "3".to_owned())]);
        if let Some(s) = service {
            attributes.insert(SERVICE_ID_LABEL.to_owned(), s.to_owned());
        }
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some("container-id".into()),
                attributes: Some(attributes),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_slow_reader_gets_a_lag_error_then_newer_events() {
        let started = |n: usize| {
            Ok(RuntimeEvent {
                id: ContainerId::new(format!("svc{n}")),
                kind: RuntimeEventKind::Started,
            })
        };
        let items: Vec<_> = (0..BUFFER + 5).map(started).collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(BUFFER);
        // The source ends after the burst plus one more event, once there is room again.
        let (more_tx, more_rx) = tokio::sync::oneshot::channel::<()>();
        let source = futures::stream::iter(items)
            .chain(futures::stream::once(async move {
                let _ = more_rx.await;
                started(9999)
            }))
            .boxed();
        let forwarder = tokio::spawn(forward(source, tx));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for n in 0..BUFFER {
            let e = rx.recv().await.unwrap().unwrap();
            assert_eq!(e.id.as_str(), format!("svc{n}"));
        }
        more_tx.send(()).unwrap();
        match rx.recv().await.unwrap() {
            Err(Error::EventsLagged { missed }) => assert_eq!(missed, 5),
            other => panic!("expected the lag, got {other:?}"),
        }
        assert_eq!(rx.recv().await.unwrap().unwrap().id.as_str(), "svc9999");
        forwarder.await.unwrap();
        assert!(rx.recv().await.is_none(), "the stream ends with its source");
    }

    #[test]
    fn task_container_events_are_reported_for_their_service() {
        let known = Mutex::new(HashSet::new());
        let started = task_event(container_event("start", Some("svc1")), &known).unwrap();
        assert_eq!(started.id.as_str(), "svc1");
        assert_eq!(started.kind, RuntimeEventKind::Started);
        let died = task_event(container_event("die", Some("svc1")), &known).unwrap();
        assert_eq!(died.kind, RuntimeEventKind::Died { exit_code: Some(3) });
        assert!(known.lock().unwrap().contains("svc1"));
        // Task-level creation and removal, and plain containers, are not service events.
        assert_eq!(
            task_event(container_event("create", Some("svc1")), &known),
            None
        );
        assert_eq!(
            task_event(container_event("destroy", Some("svc1")), &known),
            None
        );
        assert_eq!(task_event(container_event("start", None), &known), None);
    }
}
