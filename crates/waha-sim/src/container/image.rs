//! The image: a Dockerfile and the static binary, sent to the daemon as an in-memory tar.

use std::path::Path;

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptionsBuilder, RemoveImageOptionsBuilder};
use futures::StreamExt;

use crate::SimError;
use crate::container::StaticBuild;

/// The tag the project's tests use.
pub const DEFAULT_IMAGE_TAG: &str = "chipfleet/waha-sim:dev";

/// The port the image listens on (WAHA's).
pub const IMAGE_PORT: u16 = 3000;

/// The Dockerfile: `FROM scratch`, the binary, a HEALTHCHECK served by the binary itself.
pub fn dockerfile() -> String {
    format!(
        "FROM scratch\n\
         COPY waha-sim /waha-sim\n\
         ENV PORT={IMAGE_PORT}\n\
         EXPOSE {IMAGE_PORT}\n\
         LABEL org.opencontainers.image.title=\"waha-sim\" \
         org.opencontainers.image.description=\"WAHA-compatible simulator (chipfleet)\"\n\
         HEALTHCHECK --interval=1s --timeout=3s --start-period=2s --retries=3 \
         CMD [\"/waha-sim\", \"healthcheck\"]\n\
         ENTRYPOINT [\"/waha-sim\"]\n"
    )
}

fn context(binary: &[u8]) -> Result<Vec<u8>, SimError> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes)
    };
    add("Dockerfile", dockerfile().as_bytes(), 0o644)
        .and_then(|()| add("waha-sim", binary, 0o755))
        .map_err(|e| SimError::ImageBuild(format!("cannot write the build context: {e}")))?;
    tar.into_inner()
        .map_err(|e| SimError::ImageBuild(format!("cannot write the build context: {e}")))
}

/// Builds the image `tag` from a static binary; returns the tag.
///
/// When the build moves `tag` to a new image, the image it pointed to before is removed if
/// nothing uses it any more, so repeated builds do not pile up untagged images. An old image
/// still used by a container is left alone (the daemon refuses, and that is fine).
pub async fn build_image(docker: &Docker, binary: &Path, tag: &str) -> Result<String, SimError> {
    let previous = docker
        .inspect_image(tag)
        .await
        .ok()
        .and_then(|image| image.id);
    let bytes = tokio::fs::read(binary)
        .await
        .map_err(|e| SimError::ImageBuild(format!("cannot read {}: {e}", binary.display())))?;
    let context = context(&bytes)?;
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        let info = item?;
        if let Some(detail) = info.error_detail {
            return Err(SimError::ImageBuild(
                detail.message.unwrap_or_else(|| "unknown error".to_owned()),
            ));
        }
        if let Some(line) = info
            .stream
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
        {
            tracing::debug!(line, "docker build");
        }
    }
    let current = docker.inspect_image(tag).await?.id;
    if let Some(old) = previous.filter(|old| Some(old) != current.as_ref()) {
        // Not forced: an image a container still runs stays.
        let options = RemoveImageOptionsBuilder::default().noprune(false).build();
        if let Err(error) = docker.remove_image(&old, Some(options), None).await {
            tracing::debug!(image = %old, %error, "previous image kept");
        }
    }
    Ok(tag.to_owned())
}

/// Builds the static binary (see [`StaticBuild`]) and the image [`DEFAULT_IMAGE_TAG`].
pub async fn build_default_image(docker: &Docker) -> Result<String, SimError> {
    let binary = tokio::task::spawn_blocking(|| StaticBuild::default().build())
        .await
        .map_err(|e| SimError::StaticBuild(format!("the build task failed: {e}")))??;
    build_image(docker, &binary, DEFAULT_IMAGE_TAG).await
}
