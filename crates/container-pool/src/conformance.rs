//! The contract of [`ContainerRuntime`], as executable checks every backend must pass.
//!
//! The crate runs it against the in-memory and Docker runtimes; a host application with
//! its own runtime runs it the same way:
//!
//! ```no_run
//! # async fn demo(target: container_pool::conformance::ConformanceTarget) {
//! container_pool::conformance::run(&target).await; // panics naming the broken rule
//! # }
//! ```
//!
//! Every check labels what it creates with a fresh managed-by value (`<prefix>-<nonce>`) and
//! removes it when the check passes. A failing check stops the run and may leave its container
//! behind: give the target a prefix no production pool uses, and clean up by it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;

use crate::spec::WORKER_ID_VAR;
use crate::{
    ApiKey, ContainerId, ContainerRuntime, ContainerSpec, ContainerState, EnvVar, Error, ImageRef,
    LabelSelector, ReadinessProbe, RuntimeEventKind, VolumeMount, WAHA_SESSIONS_DIR, labels,
};

/// What the suite needs to exercise a runtime.
pub struct ConformanceTarget {
    /// The runtime under test.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// A spec for an image that starts, writes at least one log line and serves HTTP. Its name
    /// and volume are replaced, `WAHA_WORKER_ID` is set to the name (the probe checks it) and
    /// the managed-by, tenant, incarnation, addressing and port labels are set per check;
    /// everything else (image, env, addressing) is used as given. Its env must set
    /// `WAHA_API_KEY` to `api_key`.
    pub spec: ContainerSpec,
    /// The key the probe presents.
    pub api_key: ApiKey,
    /// Checks that a started container answers.
    pub probe: Arc<dyn ReadinessProbe>,
    /// An image that is not on the host.
    pub missing_image: ImageRef,
    /// How long a container may take to run and answer.
    pub timeout: Duration,
    /// A prefix for names and the managed-by label (e.g. one per test run).
    pub prefix: String,
}

impl std::fmt::Debug for ConformanceTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConformanceTarget")
            .field("runtime", &self.runtime.backend())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn nonce() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}", nanos % 0xffff_ffff_ffff)
}

/// Fails the current check loudly, naming the check and the step.
trait OrFail<T> {
    fn or_fail(self, check: &str, step: &str) -> T;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    #[track_caller]
    fn or_fail(self, check: &str, step: &str) -> T {
        self.unwrap_or_else(|e| panic!("[{check}] {step}: {e}"))
    }
}

impl ConformanceTarget {
    fn fresh(&self, check: &str) -> (ContainerSpec, LabelSelector) {
        let n = nonce();
        let mut spec = self.spec.clone();
        spec.name = format!("{}-{check}-{n}", self.prefix);
        let owner = format!("{}-{n}", self.prefix);
        spec.labels
            .insert(labels::MANAGED_BY.to_owned(), owner.clone());
        spec.labels
            .insert(labels::TENANT.to_owned(), format!("conformance-{check}"));
        spec.labels
            .insert(labels::ADDRESSING.to_owned(), spec.addressing.label_value());
        spec.labels
            .insert(labels::PORT.to_owned(), spec.container_port.to_string());
        spec.labels
            .insert(labels::INCARNATION.to_owned(), format!("incarnation-{n}"));
        spec.volume = Some(VolumeMount {
            name: format!("{}-vol", spec.name),
            target: WAHA_SESSIONS_DIR.to_owned(),
        });
        spec.env.retain(|e| e.name != WORKER_ID_VAR);
        spec.env.push(EnvVar::plain(WORKER_ID_VAR, &spec.name));
        (spec, LabelSelector::new(labels::MANAGED_BY, owner))
    }

    async fn wait_running(&self, id: &ContainerId, check: &str) -> url::Url {
        let deadline = Instant::now() + self.timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            let info = self.runtime.inspect(id).await.or_fail(check, "inspect");
            if info.state == ContainerState::Running
                && let Some(url) = &info.url
            {
                // The container's name is its worker id (`fresh` sets `WAHA_WORKER_ID`).
                match self.probe.probe(url, &self.api_key, &info.name).await {
                    Ok(()) => return url.clone(),
                    Err(e) => last = e.to_string(),
                }
            } else {
                last = format!("state {}, url {:?}", info.state, info.url);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "[{check}] container did not run and answer within {:?}: {last}",
            self.timeout
        );
    }

    async fn cleanup(&self, id: &ContainerId, spec: &ContainerSpec) {
        self.runtime
            .remove(id)
            .await
            .unwrap_or_else(|e| panic!("cleanup remove: {e}"));
        if let Some(v) = &spec.volume {
            self.runtime
                .remove_volume(&v.name)
                .await
                .unwrap_or_else(|e| panic!("cleanup volume: {e}"));
        }
    }
}

/// Runs every check, in order, panicking with the name of the first rule broken.
pub async fn run(target: &ConformanceTarget) {
    create_makes_a_created_container(target).await;
    create_rejects_missing_images_and_taken_names(target).await;
    start_runs_and_serves(target).await;
    list_selects_by_labels(target).await;
    stop_and_remove_are_idempotent(target).await;
    unknown_ids_are_not_found(target).await;
    volumes_are_labelled_and_kept(target).await;
    a_volume_with_other_labels_is_never_mounted(target).await;
}

async fn create_makes_a_created_container(t: &ConformanceTarget) {
    let check = "create";
    let (spec, _) = t.fresh(check);
    let id = t.runtime.create(&spec).await.or_fail(check, "create");
    let info = t.runtime.inspect(&id).await.or_fail(check, "inspect");
    assert_eq!(
        info.state,
        ContainerState::Created,
        "[{check}] a new container is created, not started"
    );
    assert_eq!(info.name, spec.name, "[{check}] name");
    for (k, v) in &spec.labels {
        assert_eq!(info.labels.get(k), Some(v), "[{check}] label {k}");
    }
    assert_eq!(info.url, None, "[{check}] no address before it runs");
    t.cleanup(&id, &spec).await;
}

async fn create_rejects_missing_images_and_taken_names(t: &ConformanceTarget) {
    let check = "reject";
    let (mut spec, _) = t.fresh(check);
    let id = t.runtime.create(&spec).await.or_fail(check, "create");
    match t.runtime.create(&spec).await {
        Err(Error::Conflict { .. }) => {}
        other => panic!("[{check}] a taken name must be Conflict, got {other:?}"),
    }
    t.cleanup(&id, &spec).await;
    spec.name.push_str("-img");
    spec.image = t.missing_image.clone();
    match t.runtime.create(&spec).await {
        Err(Error::ImageMissing { image }) => {
            assert_eq!(image, t.missing_image.to_string(), "[{check}]")
        }
        other => panic!("[{check}] a missing image must be ImageMissing, got {other:?}"),
    }
}

async fn start_runs_and_serves(t: &ConformanceTarget) {
    let check = "start";
    let (spec, selector) = t.fresh(check);
    let mut events = t.runtime.events(&selector).await.or_fail(check, "events");
    let id = t.runtime.create(&spec).await.or_fail(check, "create");
    t.runtime.start(&id).await.or_fail(check, "start");
    t.wait_running(&id, check).await;
    t.runtime
        .start(&id)
        .await
        .or_fail(check, "starting a running container");
    let started = tokio::time::timeout(t.timeout, async {
        while let Some(e) = events.next().await {
            let e = e.or_fail(check, "the event stream failed");
            if e.id == id && e.kind == RuntimeEventKind::Started {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        started,
        Ok(true),
        "[{check}] the event stream reports the start"
    );
    let all = t
        .runtime
        .logs_tail(&id, 10_000)
        .await
        .or_fail(check, "logs");
    assert!(
        !all.is_empty(),
        "[{check}] a started container that answered has written at least one log line"
    );
    let last = t.runtime.logs_tail(&id, 1).await.or_fail(check, "logs");
    assert_eq!(
        last.len(),
        1,
        "[{check}] logs_tail returns exactly the lines asked for when there are enough"
    );
    assert!(
        all.contains(&last[0]),
        "[{check}] logs_tail(1) is one of the container's lines: {last:?} not in {all:?}"
    );
    assert!(
        t.runtime
            .logs_tail(&id, 0)
            .await
            .or_fail(check, "logs")
            .is_empty(),
        "[{check}] logs_tail(0) is empty"
    );
    let stats = t.runtime.stats(&id).await.or_fail(check, "stats");
    assert_eq!(
        stats.memory_limit_bytes,
        Some(spec.resources.memory_bytes),
        "[{check}] stats report the spec's memory limit"
    );
    assert!(
        t.runtime
            .has_image(&spec.image)
            .await
            .or_fail(check, "has_image"),
        "[{check}] has_image is true for an image a container was just created from"
    );
    t.cleanup(&id, &spec).await;
}

async fn list_selects_by_labels(t: &ConformanceTarget) {
    let check = "list";
    let (spec, selector) = t.fresh(check);
    let id = t.runtime.create(&spec).await.or_fail(check, "create");
    let found = t.runtime.list(&selector).await.or_fail(check, "list");
    assert_eq!(
        found.iter().map(|c| &c.id).collect::<Vec<_>>(),
        vec![&id],
        "[{check}] exactly the labelled one"
    );
    let narrower = selector.clone().and(labels::TENANT, "someone-else");
    let none = t.runtime.list(&narrower).await.or_fail(check, "list");
    assert!(none.is_empty(), "[{check}] every selector pair must match");
    t.cleanup(&id, &spec).await;
    let gone = t.runtime.list(&selector).await.or_fail(check, "list");
    assert!(
        gone.is_empty(),
        "[{check}] a removed container is not listed"
    );
}

async fn stop_and_remove_are_idempotent(t: &ConformanceTarget) {
    let check = "stop";
    let (spec, _) = t.fresh(check);
    let id = t.runtime.create(&spec).await.or_fail(check, "create");
    t.runtime.start(&id).await.or_fail(check, "start");
    t.wait_running(&id, check).await;
    t.runtime
        .stop(&id, Duration::from_secs(2))
        .await
        .or_fail(check, "stop");
    let info = t.runtime.inspect(&id).await.or_fail(check, "inspect");
    assert!(
        matches!(info.state, ContainerState::Exited { .. }),
        "[{check}] stopped is exited, got {}",
        info.state
    );
    assert_eq!(info.url, None, "[{check}] no address once stopped");
    t.runtime
        .stop(&id, Duration::from_secs(2))
        .await
        .or_fail(check, "second stop");
    t.runtime
        .start(&id)
        .await
        .or_fail(check, "restart after stop");
    t.wait_running(&id, check).await;
    t.runtime.remove(&id).await.or_fail(check, "remove running");
    match t.runtime.inspect(&id).await {
        Err(Error::NotFound { .. }) => {}
        other => panic!("[{check}] a removed container is NotFound, got {other:?}"),
    }
    t.runtime.remove(&id).await.or_fail(check, "second remove");
    t.cleanup(&id, &spec).await;
}

async fn unknown_ids_are_not_found(t: &ConformanceTarget) {
    let check = "unknown";
    let id = ContainerId::new(format!("{}-no-such-{}", t.prefix, nonce()));
    assert!(
        matches!(t.runtime.inspect(&id).await, Err(Error::NotFound { .. })),
        "[{check}] inspect"
    );
    assert!(
        matches!(
            t.runtime.logs_tail(&id, 3).await,
            Err(Error::NotFound { .. })
        ),
        "[{check}] logs"
    );
    assert!(
        matches!(t.runtime.stats(&id).await, Err(Error::NotFound { .. })),
        "[{check}] stats"
    );
    assert!(
        matches!(t.runtime.start(&id).await, Err(Error::NotFound { .. })),
        "[{check}] start"
    );
}

async fn volumes_are_labelled_and_kept(t: &ConformanceTarget) {
    let check = "volume";
    let (spec, selector) = t.fresh(check);
    let volume = spec.volume.clone().map(|v| v.name).unwrap_or_default();
    let id = t.runtime.create(&spec).await.or_fail(check, "create");
    let listed = t
        .runtime
        .list_volumes(&selector)
        .await
        .or_fail(check, "list volumes");
    assert!(
        listed.iter().any(|v| v.name == volume),
        "[{check}] the spec's volume exists with the spec's labels"
    );
    match t.runtime.remove_volume(&volume).await {
        Err(Error::Conflict { .. }) => {}
        other => panic!("[{check}] a volume in use is Conflict, got {other:?}"),
    }
    t.runtime.remove(&id).await.or_fail(check, "remove");
    let kept = t
        .runtime
        .list_volumes(&selector)
        .await
        .or_fail(check, "list volumes");
    assert!(
        kept.iter().any(|v| v.name == volume),
        "[{check}] removing a container keeps its volume"
    );
    t.runtime
        .remove_volume(&volume)
        .await
        .or_fail(check, "remove volume");
    t.runtime
        .remove_volume(&volume)
        .await
        .or_fail(check, "second volume remove");
    let gone = t
        .runtime
        .list_volumes(&selector)
        .await
        .or_fail(check, "list volumes");
    assert!(gone.is_empty(), "[{check}] a removed volume is not listed");
}

/// A volume is created with its container's volume labels; an existing volume is mounted only
/// by a container whose volume labels it carries (the same incarnation gets it back), and a
/// container of another incarnation or another pool is refused with
/// [`Error::VolumeConflict`]: no container is created and the volume keeps its labels.
async fn a_volume_with_other_labels_is_never_mounted(t: &ConformanceTarget) {
    let check = "volume-owner";
    let (first, selector) = t.fresh(check);
    let volume = first.volume.clone().map(|v| v.name).unwrap_or_default();
    let id = t.runtime.create(&first).await.or_fail(check, "create");
    let labelled = |listed: Vec<crate::VolumeInfo>| {
        listed
            .into_iter()
            .find(|v| v.name == volume)
            .map(|v| v.labels)
            .unwrap_or_else(|| panic!("[{check}] the volume {volume} is not listed"))
    };
    let created = labelled(
        t.runtime
            .list_volumes(&selector)
            .await
            .or_fail(check, "list volumes"),
    );
    for (key, value) in first.volume_labels() {
        assert_eq!(
            created.get(&key),
            Some(&value),
            "[{check}] a new volume carries its container's label {key}"
        );
    }
    t.runtime.remove(&id).await.or_fail(check, "remove");

    // The same tenant under a new incarnation, and another pool: refused, nothing created.
    let (mut reincarnated, _) = t.fresh(check);
    reincarnated.volume = first.volume.clone();
    reincarnated.labels = first.labels.clone();
    reincarnated.labels.insert(
        labels::INCARNATION.to_owned(),
        format!("another-{}", nonce()),
    );
    let (mut foreign, foreign_selector) = t.fresh(check);
    foreign.volume = first.volume.clone();
    foreign.labels.insert(
        labels::INCARNATION.to_owned(),
        first.labels[labels::INCARNATION].clone(),
    );
    for (spec, what) in [
        (&reincarnated, "another incarnation"),
        (&foreign, "another pool"),
    ] {
        match t.runtime.create(spec).await {
            Err(Error::VolumeConflict { volume: named, .. }) => assert_eq!(
                named, volume,
                "[{check}] the conflict names the volume ({what})"
            ),
            other => panic!("[{check}] a volume of {what} must be VolumeConflict, got {other:?}"),
        }
    }
    for selector in [&selector, &foreign_selector] {
        let made = t.runtime.list(selector).await.or_fail(check, "list");
        assert!(
            made.is_empty(),
            "[{check}] a refused container was created anyway: {made:?}"
        );
    }
    let kept = labelled(
        t.runtime
            .list_volumes(&selector)
            .await
            .or_fail(check, "list volumes"),
    );
    assert_eq!(kept, created, "[{check}] a refused volume keeps its labels");

    // The same incarnation gets its own volume back.
    let (mut same, _) = t.fresh(check);
    same.volume = first.volume.clone();
    same.labels = first.labels.clone();
    let again = t
        .runtime
        .create(&same)
        .await
        .or_fail(check, "create on its own volume");
    t.cleanup(&again, &same).await;
}
